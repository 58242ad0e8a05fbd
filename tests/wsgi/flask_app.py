"""A Flask app for tests/wsgi.rs: JSON, a form POST, a streamed response, Flask's 404."""

from flask import Flask, Response, jsonify, request, stream_with_context

app = Flask(__name__)
VERSION = "one"


@app.get("/version")
def version():
    return VERSION


@app.get("/json")
def data():
    return jsonify(framework="flask", args=request.args.to_dict())


@app.post("/form")
def form():
    return "hello %s, %d bytes of file\n" % (request.form["name"], len(request.files["file"].read()))


@app.get("/stream")
def stream():
    def pieces():
        for i in range(int(request.args.get("n", "3"))):
            yield "piece %d for %s\n" % (i, request.args.get("who", "nobody"))
    return Response(stream_with_context(pieces()), mimetype="text/plain")
