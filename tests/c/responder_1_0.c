/*
 * A plugin built against FcRequest, FcResponder and FcAppDescriptor as ABI 1.0 had them
 * (before `peer_addr`, `peer_port`, `flush`, ..., and the descriptor's WebSocket fields were
 * appended): it sees them through its own copies of the older structs, exports the
 * smaller descriptor, checks `size` the way the header tells plugins to, and streams a 20000-byte
 * response in 100-byte writes. The server's structs are larger; the plugin must keep
 * working unchanged.
 * `/has-flush` instead answers whether the responder has `flush` and the request has the
 * peer fields (FC_RESPONDER_HAS_FLUSH, FC_REQUEST_HAS_PEER: the checks a newer plugin makes).
 */
#include <string.h>

#include "ferricorn.h"

/* FcRequest of ABI 1.0, as a plugin compiled then saw it. */
typedef struct OldRequest {
    uint32_t size;
    uint32_t flags;
    FcStr request_method, raw_uri, script_name, path_info, query_string, server_protocol,
        server_name, server_port, remote_addr, remote_port, url_scheme, content_type;
    int64_t content_length;
    const FcField *headers;
    size_t header_count;
} OldRequest;

/* FcResponder of ABI 1.0, as a plugin compiled then saw it. */
typedef struct OldResponder {
    uint32_t size;
    void *ctx;
    int32_t (*start_response)(void *ctx, uint16_t status, FcStr reason, const FcField *headers,
                              size_t header_count);
    int32_t (*write)(void *ctx, const uint8_t *data, size_t len);
    int64_t (*read_body)(void *ctx, uint8_t *buf, size_t cap);
    int32_t (*trailers)(void *ctx, const FcField **out, size_t *count);
    void (*log)(void *ctx, int32_t level, FcStr message);
} OldResponder;

static int32_t old_init(const FcField *config, size_t count, void **state, char *err,
                        size_t cap) {
    (void)config;
    (void)count;
    (void)err;
    (void)cap;
    *state = NULL;
    return FC_OK;
}

static int32_t old_handle(void *state, const FcRequest *req, const FcResponder *res) {
    (void)state;
    const OldRequest *request = (const OldRequest *)(const void *)req;
    if (request->size < sizeof(OldRequest)) {
        return FC_ERR_APP;
    }
    if (request->path_info.len == 10 && memcmp(request->path_info.ptr, "/has-flush", 10) == 0) {
        int has = FC_RESPONDER_HAS_FLUSH(res) && FC_REQUEST_HAS_PEER(req);
        const char *text = has ? "flush: yes\n" : "flush: no\n";
        int32_t status = res->write(res->ctx, (const uint8_t *)text, strlen(text));
        return has && status == FC_OK ? res->flush(res->ctx) : status;
    }
    const OldResponder *old = (const OldResponder *)(const void *)res;
    if (old->size < sizeof(OldResponder)) {
        return FC_ERR_APP;
    }
    FcField type = {{(const uint8_t *)"Content-Type", 12}, {(const uint8_t *)"text/plain", 10}};
    int32_t status = old->start_response(old->ctx, 200, (FcStr){NULL, 0}, &type, 1);
    uint8_t block[100];
    memset(block, 'o', sizeof block);
    for (int i = 0; i < 200 && status == FC_OK; i++) {
        status = old->write(old->ctx, block, sizeof block);
    }
    return status;
}

static void old_shutdown(void *state) {
    (void)state;
}

/* FcAppDescriptor of ABI 1.0: through `shutdown`, and its size says so. */
typedef struct OldDescriptor {
    uint32_t abi_version;
    uint32_t size;
    const char *name;
    uint32_t flags;
    FcInitFn init;
    FcHandleFn handle;
    FcShutdownFn shutdown;
} OldDescriptor;

static const OldDescriptor DESCRIPTOR = {
    FC_ABI_VERSION, sizeof(OldDescriptor), "responder-1.0", FC_APP_THREAD_SAFE,
    old_init,       old_handle,            old_shutdown,
};

const FcAppDescriptor *ferricorn_app(void) {
    return (const FcAppDescriptor *)&DESCRIPTOR;
}
