/*
 * c-ws-echo: a WebSocket echo plugin in C, built from worker-apps/include/ferricorn.h alone.
 *
 * A request that asks for a WebSocket (FcRequest.websocket != 0) is accepted with a 101;
 * every message the client sends comes back through the server's ws_send; any other
 * request gets a short text answer. Build:
 *
 *     cc -std=c99 -Wall -Wextra -Werror -O2 -fPIC -shared -I worker-apps/include \
 *        -o libc_ws_echo.so worker-apps/c-ws-echo/ws_echo.c
 */
#include <string.h>

#include "ferricorn.h"

/* The server's functions, given once to attach before init. */
static const FcServer *server;

static void ws_attach(const FcServer *s) { server = s; }

static int32_t ws_init(const FcField *config, size_t count, void **state, char *err,
                       size_t cap) {
    (void)config;
    (void)count;
    (void)err;
    (void)cap;
    *state = NULL;
    return FC_OK;
}

static int32_t ws_handle(void *state, const FcRequest *req, const FcResponder *res) {
    (void)state;
    if (FC_REQUEST_HAS_WEBSOCKET(req) && req->websocket != 0) {
        /* Accept: the server adds Upgrade, Connection and Sec-WebSocket-Accept. */
        return res->start_response(res->ctx, 101, (FcStr){NULL, 0}, NULL, 0);
    }
    static const char body[] = "connect with a WebSocket\n";
    FcField type = {{(const uint8_t *)"Content-Type", 12}, {(const uint8_t *)"text/plain", 10}};
    int32_t status = res->start_response(res->ctx, 200, (FcStr){NULL, 0}, &type, 1);
    if (status != FC_OK) {
        return status;
    }
    return res->write(res->ctx, (const uint8_t *)body, sizeof body - 1);
}

static int32_t ws_message(void *state, uint64_t conn, int32_t opcode, const uint8_t *data,
                          size_t len) {
    (void)state;
    int32_t status = server->ws_send(conn, opcode, data, len);
    /* A full queue drops the echo; any other failure closes the connection (1011). */
    return status == FC_ERR_WOULD_BLOCK || status == FC_ERR_CLOSED ? FC_OK : status;
}

static void ws_close(void *state, uint64_t conn, int32_t code, FcStr reason) {
    (void)state;
    (void)conn;
    (void)code;
    (void)reason;
}

static void ws_shutdown(void *state) { (void)state; }

static const FcAppDescriptor DESCRIPTOR = {
    .abi_version = FC_ABI_VERSION,
    .size = sizeof(FcAppDescriptor),
    .name = "c-ws-echo",
    .flags = FC_APP_THREAD_SAFE,
    .init = ws_init,
    .handle = ws_handle,
    .shutdown = ws_shutdown,
    .attach = ws_attach,
    .ws_message = ws_message,
    .ws_close = ws_close,
};

const FcAppDescriptor *ferricorn_app(void) { return &DESCRIPTOR; }
