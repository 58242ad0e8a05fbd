"""WSGI applications for tests/wsgi.rs. Each is wrapped in wsgiref.validate.validator,
which raises (and so turns into a 500) whenever the server or the app breaks PEP 3333."""

import io
import json
import os
import threading
import time
from wsgiref.validate import validator

VERSION = "one"


def _respond(start_response, body, status="200 OK", kind="text/plain"):
    start_response(status, [("Content-Type", kind), ("Content-Length", str(len(body)))])
    return [body]


@validator
def hello(environ, start_response):
    return _respond(start_response, b"Hello, World!\n")


def version(environ, start_response):
    return _respond(start_response, VERSION.encode())


@validator
def environ(environ, start_response):
    """The environ as JSON (values that are str), and the body read with read(n)."""
    body = b""
    while True:
        piece = environ["wsgi.input"].read(7)
        if not piece:
            break
        body += piece
    seen = {k: v for k, v in environ.items() if isinstance(v, str)}
    seen["body"] = body.decode("latin-1")
    seen["wsgi.version"] = list(environ["wsgi.version"])
    for flag in ("wsgi.multithread", "wsgi.multiprocess", "wsgi.run_once", "wsgi.input_terminated"):
        seen[flag] = environ.get(flag)
    seen["path_bytes"] = list(environ["PATH_INFO"].encode("latin-1"))
    return _respond(start_response, json.dumps(seen).encode(), kind="application/json")


@validator
def lines(environ, start_response):
    """The body read as readline(5), readline(), readlines() and iteration, as JSON."""
    stream = environ["wsgi.input"]
    first = stream.readline(5)
    second = stream.readline()
    third = stream.readlines(1)
    rest = [line for line in stream]
    out = {"first": first.decode(), "second": second.decode(),
           "third": [l.decode() for l in third], "rest": [l.decode() for l in rest],
           "end": stream.read(10).decode()}
    return _respond(start_response, json.dumps(out).encode(), kind="application/json")


@validator
def stream(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain")])
    for i in range(3):
        yield b"part %d\n" % i
        yield b""


@validator
def write(environ, start_response):
    out = start_response("200 OK", [("Content-Type", "text/plain")])
    out(b"written, ")
    return [b"then returned\n"]


@validator
def file(environ, start_response):
    path = os.path.join(os.path.dirname(__file__), "apps.py")
    start_response("200 OK", [("Content-Type", "text/x-python")])
    return environ["wsgi.file_wrapper"](open(path, "rb"), 4096)


@validator
def exc_info(environ, start_response):
    """An error page after start_response: the second call, with exc_info, wins."""
    start_response("200 OK", [("Content-Type", "text/plain")])
    try:
        raise ValueError("caught")
    except ValueError:
        import sys
        start_response("503 Service Unavailable", [("Content-Type", "text/plain"),
                                                   ("Retry-After", "1")], sys.exc_info())
    return [b"sorry\n"]


@validator
def reason(environ, start_response):
    return _respond(start_response, b"teapot\n", status="418 I'm a teapot \xe9")


def latin1_header(environ, start_response):
    start_response("200 OK", [("X-Name", "caf\xe9")])
    return [b"ok"]


def boom(environ, start_response):
    raise RuntimeError("boom before the response")


def late_boom(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain")])
    yield b"first part\n"
    raise RuntimeError("boom after the first byte")


def str_body(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain")])
    return ["not bytes"]


def bad_header(environ, start_response):
    start_response("200 OK", [("X-Bad", "snow \u2603")])
    return [b"never sent"]


def bad_status(environ, start_response):
    start_response("OK", [])
    return [b"never sent"]


def errors(environ, start_response):
    print("from wsgi.errors", file=environ["wsgi.errors"])
    return _respond(start_response, b"logged\n")


class _Closing:
    """An iterable that records close() in the file named by the query string."""

    def __init__(self, marker, chunks):
        self.marker, self.chunks = marker, chunks

    def __iter__(self):
        for _ in range(self.chunks):
            yield b"x" * 65536

    def close(self):
        with open(self.marker, "w") as f:
            f.write("closed")


def closing(environ, start_response):
    """64 KiB pieces (count: the `chunks` query) as a chunked response; close() writes the file
    named by `marker`."""
    query = dict(p.split("=", 1) for p in environ["QUERY_STRING"].split("&") if "=" in p)
    start_response("200 OK", [("Content-Type", "application/octet-stream")])
    return _Closing(query["marker"], int(query.get("chunks", "1")))


class _Recording(io.FileIO):
    """A file that writes its position, when closed, to the file named `marker`."""

    marker = None

    def close(self):
        if not self.closed and self.marker:
            with open(self.marker, "w") as f:
                f.write(str(self.tell()))
        super().close()


def sendfile(environ, start_response):
    """This module's source from byte 10, through wsgi.file_wrapper; close() records where
    the file's position is then: still 10 when the server used sendfile(2)."""
    query = dict(p.split("=", 1) for p in environ["QUERY_STRING"].split("&") if "=" in p)
    f = _Recording(os.path.join(os.path.dirname(__file__), "apps.py"), "rb")
    f.marker = query["marker"]
    f.seek(10)
    start_response("200 OK", [("Content-Type", "text/x-python")])
    return environ["wsgi.file_wrapper"](f, 1024)


def upload(environ, start_response):
    """Counts the body read in 64 KiB pieces; answers the count and the worker's peak RSS."""
    total = 0
    stream = environ["wsgi.input"]
    while True:
        piece = stream.read(65536)
        if not piece:
            break
        total += len(piece)
    return _respond(start_response, json.dumps({"bytes": total, "pid": os.getpid()}).encode())


def pid(environ, start_response):
    return _respond(start_response, str(os.getpid()).encode())


_barrier = threading.Barrier(int(os.environ.get("BARRIER_PARTIES", "4")), timeout=20)


def together(environ, start_response):
    """Answers only once BARRIER_PARTIES requests are in the app at the same time."""
    _barrier.wait()
    return _respond(start_response, b"together\n")


def sleepy(environ, start_response):
    time.sleep(0.05)
    return _respond(start_response, b"slept\n")


def factory(greeting, punctuation="!"):
    """A factory, as `apps:factory('hi', punctuation='?')` names it."""
    def app(environ, start_response):
        return _respond(start_response, (greeting + punctuation).encode())
    return app


def route(environ, start_response):
    """Dispatches on the first path segment: /NAME/... is served by the app NAME above."""
    name = environ["PATH_INFO"].split("/")[1] or "hello"
    app = globals().get(name)
    if name.startswith("_") or name in ("route", "factory") or not callable(app):
        return _respond(start_response, b"no such app\n", status="404 Not Found")
    return app(environ, start_response)


def spin(environ, start_response):
    """Never returns: a busy loop in Python (for request_timeout)."""
    while True:
        pass


def slow(environ, start_response):
    """Answers after 300 ms (for a graceful stop); creates the file named by the query string
    first, so that the test knows the request is in the app."""
    if environ["QUERY_STRING"]:
        open(environ["QUERY_STRING"], "w").close()
    time.sleep(0.3)
    return _respond(start_response, b"finished\n")


def signals(environ, start_response):
    """Python's handlers for SIGINT and SIGTERM: None when not installed from Python."""
    import signal
    names = [str(signal.getsignal(s)) for s in (signal.SIGINT, signal.SIGTERM)]
    return _respond(start_response, " ".join(names).encode())


def big_list(environ, start_response):
    """One 100,000-byte item and no Content-Length: the server gives it one."""
    start_response("200 OK", [("Content-Type", "application/octet-stream")])
    return [b"x" * 100000]


_in_flight = 0
_peak = 0
_lock = threading.Lock()


def sleepy_peak(environ, start_response):
    """Sleeps 50 ms; answers the most requests this process has had in the app at once."""
    global _in_flight, _peak
    with _lock:
        _in_flight += 1
        _peak = max(_peak, _in_flight)
    time.sleep(0.05)
    with _lock:
        _in_flight -= 1
        peak = _peak
    return _respond(start_response, str(peak).encode())


def late_exc_info(environ, start_response):
    """An error after the first body byte, handed to start_response with exc_info: PEP 3333
    says start_response re-raises it (the head is out)."""
    import sys
    start_response("200 OK", [("Content-Type", "text/plain")])
    yield b"first part\n"
    try:
        raise KeyError("late trouble")
    except KeyError:
        start_response("500 Internal Server Error", [("Content-Type", "text/plain")], sys.exc_info())
    yield b"never sent\n"


_kept = {}


def keep_input(environ, start_response):
    """Keeps this request's wsgi.input past its response (an app bug ferricorn must survive)."""
    _kept["input"] = environ["wsgi.input"]
    return _respond(start_response, b"kept\n")


def use_kept_input(environ, start_response):
    """Reads the kept wsgi.input of an earlier request, and this one's from another thread:
    both must raise, never touch a responder that is not theirs."""
    errors = []
    try:
        _kept["input"].read(1)
        errors.append("no error")
    except ValueError as error:
        errors.append(type(error).__name__)

    def other():
        try:
            environ["wsgi.input"].read(1)
            errors.append("no error")
        except ValueError as error:
            errors.append(type(error).__name__)

    thread = threading.Thread(target=other)
    thread.start()
    thread.join()
    return _respond(start_response, " ".join(errors).encode())


def burn(environ, start_response):
    """About 2 ms of pure-Python computation (CPU-bound: holds the GIL all along)."""
    n = 0
    for i in range(60000):
        n += i * i
    return _respond(start_response, b"%d\n" % n)


def prints(environ, start_response):
    """print() and logging's default handler (stderr), as apps use them."""
    import logging
    import sys
    print("printed by the app", flush=True)
    logging.getLogger("app").warning("logged by the app")
    sys.stderr.flush()
    return _respond(start_response, b"printed\n")


def mixed_peak(environ, start_response):
    """About 3 ms of Python, then a 2 ms wait (a database call), like many real views;
    answers the most requests this process has had in the app at once."""
    global _in_flight, _peak
    with _lock:
        _in_flight += 1
        _peak = max(_peak, _in_flight)
    n = 0
    for i in range(80000):
        n += i * i
    time.sleep(0.002)
    with _lock:
        _in_flight -= 1
        peak = _peak
    return _respond(start_response, str(peak).encode())


_hoard = []


def grow(environ, start_response):
    """Keeps 16 MiB more on every call (a leak, for max_worker_rss)."""
    _hoard.append(bytearray(16 << 20))
    return _respond(start_response, str(os.getpid()).encode())
