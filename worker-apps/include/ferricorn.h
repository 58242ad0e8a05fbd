/*
 * ferricorn.h — the ferricorn gateway ABI, version 1, for plugins written in C.
 *
 * A plugin is a shared object (cc -shared -fPIC) that exports one function:
 *
 *     const FcAppDescriptor *ferricorn_app(void);
 *
 * returning a pointer to a static descriptor: ABI version, the descriptor's own size, the
 * app's name, flags, and three functions (init, handle, shutdown). The server dlopen()s the
 * plugin in every worker process, calls init once, handle once per request, shutdown once at
 * graceful exit. See the plugin guide, worker-apps/README.md, for a complete example.
 *
 * This header is the C view of worker-apps/sdk/src/abi.rs and must stay identical to it:
 * ferricorn's test suite compiles a C program against this header and compares the size and
 * the offset of every field of every struct with the Rust definitions.
 *
 * Conventions for the whole ABI:
 *   - Strings are FcStr: a pointer and a length in bytes, NOT NUL-terminated, possibly
 *     containing any byte (PATH_INFO is percent-decoded). An absent value is {NULL, 0}; an
 *     empty one has a non-NULL pointer and length 0. The one exception is the descriptor's
 *     `name`, a static NUL-terminated string.
 *   - Ownership: the server owns everything it passes to the plugin and the plugin owns
 *     everything it passes to the server. Pointers the server passes are borrowed only for
 *     the duration of the call that received them (copy what you keep). Pointers the plugin
 *     passes to a responder function are read during that call only (the server copies what
 *     it keeps), so they may point to the stack.
 *   - Status codes: functions return FC_OK (0) or a negative FC_ERR_* code. New codes may be
 *     added in later minor revisions: treat any unknown negative value as an error.
 *   - A C plugin must not let a C++ exception or a longjmp cross these functions. A crash
 *     (SIGSEGV, abort) kills only the worker process serving the request; the master
 *     replaces it.
 *
 * Compatibility: within ABI version 1, fields are only ever appended to the end of a struct,
 * and every struct that may grow starts with its own size, so both sides can tell which fields
 * the other was compiled with. Reordering, removing or retyping a field, or changing what a
 * function means, requires a new FC_ABI_VERSION, and the server refuses plugins built for
 * another version.
 *
 * Compiles cleanly with: cc -std=c99 -Wall -Wextra -Werror
 */
#ifndef FERRICORN_H
#define FERRICORN_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* ABI version this header describes; must be the descriptor's abi_version. */
#define FC_ABI_VERSION 1

/* Name of the one symbol a plugin exports (type FcEntryFn). */
#define FC_ENTRY_SYMBOL "ferricorn_app"

/* ----- status codes (return values of init, handle and responder functions) ----- */

/* Success. */
#define FC_OK 0
/* The app failed: init failed (the worker does not boot), or handle failed (the server
 * answers 500 if no response byte was sent yet, and closes the connection). */
#define FC_ERR_APP (-1)
/* A call made in the wrong state: start_response after the first body byte was written,
 * write after a refused start_response, trailers before the body was read to its end. */
#define FC_ERR_STATE (-2)
/* An invalid argument, refused without effect: status outside 200..999, a reason or header
 * field containing CR, LF or NUL, a header name that is not an RFC 9110 token, a bad
 * Content-Length value, a NULL buffer. The server logs the refusal in its error log and will
 * answer 500 unless a later start_response call succeeds. */
#define FC_ERR_INVALID (-3)
/* The client connection failed or was closed; stop writing, return from handle. */
#define FC_ERR_IO (-4)
/* The client stalled past the server's `timeout` (seconds) while sending the body or
 * receiving the response. If nothing was sent yet, the server answers 408. */
#define FC_ERR_TIMEOUT (-5)
/* The request body exceeds `limit_request_body`; the server answers 413. */
#define FC_ERR_TOO_LARGE (-6)
/* The request body's chunked framing is malformed; the server answers 400. */
#define FC_ERR_BAD_REQUEST (-7)
/* The server cannot do this here (sendfile on a TLS connection, or a file that is not a
 * regular file); nothing was done: do it another way (write the bytes). */
#define FC_ERR_UNSUPPORTED (-8)
/* ABI 1.4: the WebSocket connection is closed (or closing, or never was); nothing was sent. */
#define FC_ERR_CLOSED (-9)
/* ABI 1.4: the WebSocket connection's send queue is full (websocket_send_buffer bytes wait
 * for a client that reads slowly); nothing was queued: try again later, or drop it. */
#define FC_ERR_WOULD_BLOCK (-10)

/* WebSocket opcodes (RFC 6455 section 5.2) of messages: text (UTF-8) and binary. */
#define FC_WS_TEXT 1
#define FC_WS_BINARY 2

/* ----- flags ----- */

/* FcAppDescriptor.flags: handle may run on several threads of one worker at once. Without
 * it, the server serializes handle calls within a worker (one at a time). */
#define FC_APP_THREAD_SAFE 1u

/* FcRequest.flags (WSGI's wsgi.multithread, wsgi.multiprocess, wsgi.run_once). */
#define FC_REQ_MULTITHREAD 1u
#define FC_REQ_MULTIPROCESS 2u
#define FC_REQ_RUN_ONCE 4u

/* Levels for FcResponder.log, as in the server's `loglevel` setting. */
#define FC_LOG_DEBUG 0
#define FC_LOG_INFO 1
#define FC_LOG_WARNING 2
#define FC_LOG_ERROR 3
#define FC_LOG_CRITICAL 4

/* ----- types ----- */

/* A borrowed byte string: `len` bytes at `ptr`, not NUL-terminated. Absent: {NULL, 0}. */
typedef struct FcStr {
    const uint8_t *ptr;
    size_t len;
} FcStr;

/* A name/value pair: a header or trailer field (RFC 9110 section 5), or one app.config entry.
 * Header names keep the client's case (compare them case-insensitively); values have leading
 * and trailing whitespace removed. */
typedef struct FcField {
    FcStr name;
    FcStr value;
} FcField;

/* One request, in CGI/WSGI terms (RFC 3875 section 4.1, PEP 3333). The struct, every string
 * and the header array are owned by the server and valid only until handle returns. */
typedef struct FcRequest {
    uint32_t size;           /* sizeof(FcRequest) as the server was compiled */
    uint32_t flags;          /* FC_REQ_* bits */
    FcStr request_method;    /* REQUEST_METHOD, e.g. "GET" */
    FcStr raw_uri;           /* RAW_URI: the request-target exactly as sent */
    FcStr script_name;       /* SCRIPT_NAME: always empty in this server */
    FcStr path_info;         /* PATH_INFO: the target's path, percent-decoded (any byte) */
    FcStr query_string;      /* QUERY_STRING: after '?', not decoded; empty if none */
    FcStr server_protocol;   /* SERVER_PROTOCOL: "HTTP/1.0" or "HTTP/1.1" */
    FcStr server_name;       /* SERVER_NAME: the listener's IP address or unix socket path */
    FcStr server_port;       /* SERVER_PORT: decimal; empty for unix sockets */
    FcStr remote_addr;       /* REMOTE_ADDR: the peer's IP address; empty for unix sockets */
    FcStr remote_port;       /* REMOTE_PORT: decimal; empty for unix sockets */
    FcStr url_scheme;        /* wsgi.url_scheme: "http", or "https" on TLS */
    FcStr content_type;      /* CONTENT_TYPE, or absent {NULL, 0} */
    int64_t content_length;  /* CONTENT_LENGTH in bytes, or -1 (chunked body or no body) */
    const FcField *headers;  /* header fields in wire order (names containing '_' dropped) */
    size_t header_count;     /* number of entries at headers */

    /* Appended in ABI 1.1: only present when size >= offsetof(FcRequest, peer_port) +
     * sizeof(FcStr) (FC_REQUEST_HAS_PEER checks); a server built earlier passes a smaller
     * size, and then these fields must not be read. The TCP peer's address and port, as
     * REMOTE_ADDR/REMOTE_PORT would be without `real_ip_header` (REMOTE_ADDR may then name
     * the client a trusted proxy forwarded for). */
    FcStr peer_addr;
    FcStr peer_port;

    /* Appended in ABI 1.2: only present when size >= offsetof(FcRequest, tls_client_subject)
     * + sizeof(FcStr) (FC_REQUEST_HAS_TLS checks). TLS facts of the connection, absent
     * {NULL, 0} on plain HTTP: the version ("TLSv1.3" or "TLSv1.2"), the cipher suite's IANA
     * name ("TLS_AES_128_GCM_SHA256"), and the client certificate's subject in RFC 4514 form
     * ("CN=client,O=Example") when the client sent one (cert_reqs), absent otherwise. */
    FcStr tls_version;
    FcStr tls_cipher;
    FcStr tls_client_subject;
    /* Appended in ABI 1.4 (FC_REQUEST_HAS_WEBSOCKET checks): non-zero when the request is a
     * valid WebSocket upgrade (RFC 6455 section 4.1) and the descriptor has ws_message. The
     * app accepts it by answering status 101 (the server adds Upgrade, Connection and
     * Sec-WebSocket-Accept; the app may add Sec-WebSocket-Protocol) and refuses it with any
     * other response. Once accepted, this id names the connection in FcServer's ws_send and
     * ws_close and in the callbacks; ids are never reused within a worker process. */
    uint64_t websocket;
} FcRequest;

/* Whether request `r` (a const FcRequest *) has peer_addr and peer_port. */
#define FC_REQUEST_HAS_PEER(r) ((r)->size >= offsetof(FcRequest, peer_port) + sizeof(FcStr))
/* Whether request `r` has the tls_* fields (absent on plain HTTP even then). */
#define FC_REQUEST_HAS_TLS(r) \
    ((r)->size >= offsetof(FcRequest, tls_client_subject) + sizeof(FcStr))
/* Whether request `r` has the websocket field. */
#define FC_REQUEST_HAS_WEBSOCKET(r) \
    ((r)->size >= offsetof(FcRequest, websocket) + sizeof(uint64_t))

/* What handle gets to read the request body and send the response (WSGI's start_response,
 * write and wsgi.input). Owned by the server; valid only until handle returns, and only on
 * the thread that called handle: never call these functions from another thread or after
 * handle has returned. Every function takes `ctx` as its first argument, unchanged. */
typedef struct FcResponder {
    uint32_t size; /* sizeof(FcResponder) as the server was compiled */
    void *ctx;     /* opaque server state; pass it back unchanged */

    /* Sets the status (200..999), reason phrase (absent {NULL, 0}: the standard one) and
     * header fields (`headers`: `header_count` entries, may be NULL when the count is 0).
     * May be called again until the first body byte is written: the last call wins (as with
     * WSGI's exc_info). The server drops Connection, Transfer-Encoding, Keep-Alive, Date and
     * Server from the app's fields and adds its own, and frames the body itself: a
     * Content-Length the app gives is honoured, otherwise the server sends Content-Length
     * for a small response or chunked transfer coding (HTTP/1.1) for a streamed one.
     * Returns FC_OK; FC_ERR_INVALID (refused and logged: the response becomes a 500 unless
     * a later call succeeds); FC_ERR_STATE (the body has started: the head is already fixed). */
    int32_t (*start_response)(void *ctx, uint16_t status, FcStr reason,
                              const FcField *headers, size_t header_count);

    /* Appends `len` body bytes. The server coalesces writes: it sends when 16 KiB are
     * buffered, when flush is called, or when handle returns (a response that ends within
     * 16 KiB gets a Content-Length). Bytes past a Content-Length the app gave are dropped
     * (logged; the connection closes after the response). Without an earlier start_response the response is "200 OK". For HEAD
     * requests the bytes are counted but not sent.
     * Returns FC_OK; FC_ERR_IO (client gone); FC_ERR_TIMEOUT (client not reading);
     * FC_ERR_STATE (after a refused start_response). */
    int32_t (*write)(void *ctx, const uint8_t *data, size_t len);

    /* Reads up to `cap` bytes of the request body, already de-chunked, into `buf`. Blocks
     * until at least one byte is there. The first call on a request that sent
     * "Expect: 100-continue" makes the server send "100 Continue".
     * Returns the number of bytes (> 0); 0 at the end of the body (and for requests without
     * one); or a negative FC_ERR_IO, FC_ERR_TIMEOUT, FC_ERR_TOO_LARGE or FC_ERR_BAD_REQUEST
     * (the server then answers 400/408/413/431 itself if nothing was sent yet), or FC_ERR_INVALID
     * for a NULL `buf` or a `cap` of 0. */
    int64_t (*read_body)(void *ctx, uint8_t *buf, size_t cap);

    /* After read_body returned 0: stores in *out and *count the trailer fields of a chunked
     * body (count 0 otherwise). The array is the server's, valid until handle returns.
     * Returns FC_OK, or FC_ERR_STATE if the body was not read to its end. */
    int32_t (*trailers)(void *ctx, const FcField **out, size_t *count);

    /* Writes `message` (not NUL-terminated) to the server's error log at `level` (FC_LOG_*),
     * if the server's loglevel lets it through. */
    void (*log)(void *ctx, int32_t level, FcStr message);

    /* Appended in ABI 1.1: only present when `size` covers it, i.e.
     * size >= offsetof(FcResponder, flush) + sizeof(void *); a server built earlier passes a
     * smaller size, and then this field must not be read (FC_RESPONDER_HAS_FLUSH checks).
     * Sends what the app has written so far (the head, and the buffered body as one chunk
     * when chunked) instead of waiting for 16 KiB or the end of handle.
     * Returns FC_OK; FC_ERR_IO; FC_ERR_TIMEOUT; FC_ERR_STATE (after a refused start_response). */
    int32_t (*flush)(void *ctx);

    /* Appended in ABI 1.3: only present when size >= offsetof(FcResponder, sendfile) +
     * sizeof(void *) (FC_RESPONDER_HAS_SENDFILE checks). Sends `count` bytes of the open
     * regular file `fd` from byte `offset` as body bytes with sendfile(2), after what was
     * written before, framed like write's bytes (the file's own offset is not changed).
     * Returns the bytes taken (fewer than `count` only at the end of the file), or
     * FC_ERR_UNSUPPORTED (a TLS connection, or `fd` is not a regular file: nothing was done,
     * write the bytes instead), FC_ERR_IO, FC_ERR_TIMEOUT or FC_ERR_STATE. */
    int64_t (*sendfile)(void *ctx, int32_t fd, uint64_t offset, uint64_t count);
} FcResponder;

/* Whether responder `r` (a const FcResponder *) has the flush function. */
#define FC_RESPONDER_HAS_FLUSH(r) \
    ((r)->size >= offsetof(FcResponder, flush) + sizeof(void *))
/* Whether responder `r` has the sendfile function. */
#define FC_RESPONDER_HAS_SENDFILE(r) \
    ((r)->size >= offsetof(FcResponder, sendfile) + sizeof(void *))

/* init: called once per worker process, after fork, before any handle call, with the
 * `app.config` entries of the server's configuration as fields, names and values as text,
 * in the order of the configuration file (valid during the call only: copy what you keep).
 * Stores the app's state pointer (anything; NULL is fine) in *state: the server passes it to
 * every handle call and to shutdown. On failure, writes a NUL-terminated one-line message of
 * at most `err_cap` bytes (err_cap >= 1) into `err` and returns a non-zero status; the worker
 * then fails to boot and the server logs the message (and at startup or reload, refuses the
 * configuration with it). */
typedef int32_t (*FcInitFn)(const FcField *config, size_t config_count, void **state,
                            char *err, size_t err_cap);

/* handle: serves one request. Called from any of the worker's threads, concurrently unless
 * FC_APP_THREAD_SAFE is absent from the descriptor's flags. Returns FC_OK, or an FC_ERR_*
 * status: then the server answers 500 if nothing was sent yet and closes the connection.
 * Returning FC_OK without any write sends the status set by start_response (200 if none)
 * with an empty body. A body the app did not read is discarded by the server. */
typedef int32_t (*FcHandleFn)(void *state, const FcRequest *request,
                              const FcResponder *responder);

/* shutdown: called once at graceful worker exit, after the last handle call returned; frees
 * the state. Not called when the worker is killed or crashes. */
typedef void (*FcShutdownFn)(void *state);

/* ABI 1.4: the server's functions a plugin may call from any thread at any time (inside or
 * outside a callback, from threads of its own), given once to the descriptor's attach before
 * init; the pointer stays valid for the life of the process. Functions are only appended. */
typedef struct FcServer {
    uint32_t size; /* sizeof(FcServer) as the server was compiled */
    /* Sends one message on WebSocket `conn`: opcode FC_WS_TEXT (UTF-8) or FC_WS_BINARY,
     * `len` bytes at `data` (copied before it returns). Returns FC_OK (queued: the worker's
     * event loop sends it), FC_ERR_CLOSED (the connection is gone: safe with any id),
     * FC_ERR_WOULD_BLOCK (websocket_send_buffer bytes wait already), FC_ERR_TOO_LARGE (larger
     * than websocket_send_buffer) or FC_ERR_INVALID (unknown opcode, text not UTF-8). */
    int32_t (*ws_send)(uint64_t conn, int32_t opcode, const uint8_t *data, size_t len);
    /* Starts the closing handshake of `conn` with `code` (1000, 1001, 1008, 1011 or
     * 3000..4999) and `reason` (UTF-8, cut beyond 123 bytes), after the messages queued
     * before it. Returns FC_OK, FC_ERR_CLOSED or FC_ERR_INVALID. */
    int32_t (*ws_close)(uint64_t conn, int32_t code, FcStr reason);
} FcServer;

/* attach (ABI 1.4, optional): called once per worker process before init. */
typedef void (*FcAttachFn)(const FcServer *server);

/* ws_message (ABI 1.4, optional): one whole message from the client of WebSocket `conn`
 * (FC_WS_TEXT: valid UTF-8; FC_WS_BINARY), valid during the call. Calls for one connection
 * come one at a time and in order, on the worker's serving threads (concurrently for
 * different connections when FC_APP_THREAD_SAFE is set). Returns FC_OK, or an error status:
 * the server then closes the connection with 1011. */
typedef int32_t (*FcWsMessageFn)(void *state, uint64_t conn, int32_t opcode,
                                 const uint8_t *data, size_t len);

/* ws_close (ABI 1.4, optional): WebSocket `conn` has ended, once per accepted connection,
 * after its last ws_message: `code` is the client's close code (1005 when its close frame
 * had none), the server's (1001 at a stop; 1002, 1007 or 1009 for a client that broke the
 * protocol), or 1006 when the connection was lost without a close frame; `reason` is the
 * close frame's reason. Sends to `conn` fail with FC_ERR_CLOSED from now on. */
typedef void (*FcWsCloseFn)(void *state, uint64_t conn, int32_t code, FcStr reason);

/* The static descriptor the entry symbol returns. init, handle and shutdown are required;
 * name and the ABI 1.4 fields may be NULL. The server checks abi_version == FC_ABI_VERSION and
 * that size covers at least the ABI 1.0 fields (through shutdown), and reads the later fields
 * only when size covers them: a plugin built against an older header keeps working. */
typedef struct FcAppDescriptor {
    uint32_t abi_version;  /* FC_ABI_VERSION */
    uint32_t size;         /* sizeof(FcAppDescriptor) */
    const char *name;      /* the app's name, static, NUL-terminated (for logs) */
    uint32_t flags;        /* FC_APP_* bits */
    FcInitFn init;
    FcHandleFn handle;
    FcShutdownFn shutdown;
    /* Appended in ABI 1.4; NULL when unused. With ws_message NULL the app takes no
     * WebSocket: an upgrade request is an ordinary request to it. */
    FcAttachFn attach;
    FcWsMessageFn ws_message;
    FcWsCloseFn ws_close;
} FcAppDescriptor;

/* Type of the entry symbol FC_ENTRY_SYMBOL. The returned pointer must stay valid as long as
 * the plugin is loaded (point to a static). */
typedef const FcAppDescriptor *(*FcEntryFn)(void);

#ifdef __cplusplus
}
#endif

#endif /* FERRICORN_H */
