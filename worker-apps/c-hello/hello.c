/*
 * c-hello: ferricorn's hello app in C: any GET or HEAD answers
 * "200 Hello, World!\n"; other methods get 405 with Allow.
 *
 * Build: make            (or: cc -std=c99 -Wall -Wextra -Werror -O2 -fPIC -shared
 *                              -I../include -o libc_hello.so hello.c)
 * Serve: ferricorn ./libc_hello.so
 */
#include "ferricorn.h"

#include <string.h>

#define LITERAL(s) { (const uint8_t *)(s), sizeof(s) - 1 }

static const FcStr NO_REASON = { NULL, 0 };

static int32_t hello_init(const FcField *config, size_t config_count, void **state,
                          char *err, size_t err_cap) {
    (void)config;
    (void)config_count;
    (void)err;
    (void)err_cap;
    *state = NULL; /* stateless */
    return FC_OK;
}

static int is_method(const FcStr *method, const char *name) {
    size_t n = strlen(name);
    return method->len == n && memcmp(method->ptr, name, n) == 0;
}

static int32_t hello_handle(void *state, const FcRequest *req, const FcResponder *res) {
    (void)state;
    if (!is_method(&req->request_method, "GET") && !is_method(&req->request_method, "HEAD")) {
        static const char body[] = "method not allowed\n";
        const FcField fields[] = {
            { LITERAL("Allow"), LITERAL("GET, HEAD") },
            { LITERAL("Content-Type"), LITERAL("text/plain") },
        };
        int32_t rc = res->start_response(res->ctx, 405, NO_REASON, fields, 2);
        if (rc != FC_OK) {
            return rc;
        }
        return res->write(res->ctx, (const uint8_t *)body, sizeof(body) - 1);
    }
    static const char body[] = "Hello, World!\n";
    const FcField fields[] = {
        { LITERAL("Content-Type"), LITERAL("text/plain") },
    };
    int32_t rc = res->start_response(res->ctx, 200, NO_REASON, fields, 1);
    if (rc != FC_OK) {
        return rc;
    }
    return res->write(res->ctx, (const uint8_t *)body, sizeof(body) - 1);
}

static void hello_shutdown(void *state) {
    (void)state;
}

/* Designated initializers: fields a later ABI appends (NULL when unused) need no change. */
static const FcAppDescriptor DESCRIPTOR = {
    .abi_version = FC_ABI_VERSION,
    .size = sizeof(FcAppDescriptor),
    .name = "c-hello",
    .flags = FC_APP_THREAD_SAFE,
    .init = hello_init,
    .handle = hello_handle,
    .shutdown = hello_shutdown,
};

const FcAppDescriptor *ferricorn_app(void) {
    return &DESCRIPTOR;
}
