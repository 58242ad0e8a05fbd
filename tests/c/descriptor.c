/*
 * A minimal plugin whose descriptor the tests bend to check the server's ABI checks:
 *   -DDESCRIPTOR_VERSION=N   abi_version N instead of FC_ABI_VERSION
 *   -DDESCRIPTOR_SIZE=N      size N instead of sizeof(FcAppDescriptor)
 *   -DNO_ENTRY               export no ferricorn_app symbol at all
 */
#include "ferricorn.h"

#ifndef DESCRIPTOR_VERSION
#define DESCRIPTOR_VERSION FC_ABI_VERSION
#endif
#ifndef DESCRIPTOR_SIZE
#define DESCRIPTOR_SIZE sizeof(FcAppDescriptor)
#endif

static int32_t bent_init(const FcField *config, size_t count, void **state, char *err,
                         size_t cap) {
    (void)config;
    (void)count;
    (void)err;
    (void)cap;
    *state = NULL;
    return FC_OK;
}

static int32_t bent_handle(void *state, const FcRequest *req, const FcResponder *res) {
    (void)state;
    (void)req;
    return res->write(res->ctx, (const uint8_t *)"bent\n", 5);
}

static void bent_shutdown(void *state) {
    (void)state;
}

static const FcAppDescriptor DESCRIPTOR = {
    .abi_version = DESCRIPTOR_VERSION,
    .size = DESCRIPTOR_SIZE,
    .name = "bent",
    .flags = FC_APP_THREAD_SAFE,
    .init = bent_init,
    .handle = bent_handle,
    .shutdown = bent_shutdown,
};

#ifdef NO_ENTRY
const FcAppDescriptor *not_the_entry(void) {
    return &DESCRIPTOR;
}
#else
const FcAppDescriptor *ferricorn_app(void) {
    return &DESCRIPTOR;
}
#endif
