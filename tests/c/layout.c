/*
 * Prints the layout of every struct in ferricorn.h and the value of every constant, one
 * "name value" pair per line, for tests/gateway.rs to compare with the Rust definitions.
 */
#include "ferricorn.h"

#include <stdio.h>

#define SIZE(type) printf(#type " size %zu\n", sizeof(type))
#define OFFSET(type, field) printf(#type "." #field " offset %zu\n", offsetof(type, field))
#define CONSTANT(name) printf(#name " value %lld\n", (long long)(name))

int main(void) {
    SIZE(FcStr);
    OFFSET(FcStr, ptr);
    OFFSET(FcStr, len);

    SIZE(FcField);
    OFFSET(FcField, name);
    OFFSET(FcField, value);

    SIZE(FcRequest);
    OFFSET(FcRequest, size);
    OFFSET(FcRequest, flags);
    OFFSET(FcRequest, request_method);
    OFFSET(FcRequest, raw_uri);
    OFFSET(FcRequest, script_name);
    OFFSET(FcRequest, path_info);
    OFFSET(FcRequest, query_string);
    OFFSET(FcRequest, server_protocol);
    OFFSET(FcRequest, server_name);
    OFFSET(FcRequest, server_port);
    OFFSET(FcRequest, remote_addr);
    OFFSET(FcRequest, remote_port);
    OFFSET(FcRequest, url_scheme);
    OFFSET(FcRequest, content_type);
    OFFSET(FcRequest, content_length);
    OFFSET(FcRequest, headers);
    OFFSET(FcRequest, header_count);
    OFFSET(FcRequest, peer_addr);
    OFFSET(FcRequest, peer_port);
    OFFSET(FcRequest, tls_version);
    OFFSET(FcRequest, tls_cipher);
    OFFSET(FcRequest, tls_client_subject);
    OFFSET(FcRequest, websocket);

    SIZE(FcResponder);
    OFFSET(FcResponder, size);
    OFFSET(FcResponder, ctx);
    OFFSET(FcResponder, start_response);
    OFFSET(FcResponder, write);
    OFFSET(FcResponder, read_body);
    OFFSET(FcResponder, trailers);
    OFFSET(FcResponder, log);
    OFFSET(FcResponder, flush);
    OFFSET(FcResponder, sendfile);

    SIZE(FcAppDescriptor);
    OFFSET(FcAppDescriptor, abi_version);
    OFFSET(FcAppDescriptor, size);
    OFFSET(FcAppDescriptor, name);
    OFFSET(FcAppDescriptor, flags);
    OFFSET(FcAppDescriptor, init);
    OFFSET(FcAppDescriptor, handle);
    OFFSET(FcAppDescriptor, shutdown);
    OFFSET(FcAppDescriptor, attach);
    OFFSET(FcAppDescriptor, ws_message);
    OFFSET(FcAppDescriptor, ws_close);

    SIZE(FcServer);
    OFFSET(FcServer, size);
    OFFSET(FcServer, ws_send);
    OFFSET(FcServer, ws_close);

    CONSTANT(FC_ABI_VERSION);
    CONSTANT(FC_ERR_UNSUPPORTED);
    CONSTANT(FC_ERR_CLOSED);
    CONSTANT(FC_ERR_WOULD_BLOCK);
    CONSTANT(FC_WS_TEXT);
    CONSTANT(FC_WS_BINARY);
    CONSTANT(FC_OK);
    CONSTANT(FC_ERR_APP);
    CONSTANT(FC_ERR_STATE);
    CONSTANT(FC_ERR_INVALID);
    CONSTANT(FC_ERR_IO);
    CONSTANT(FC_ERR_TIMEOUT);
    CONSTANT(FC_ERR_TOO_LARGE);
    CONSTANT(FC_ERR_BAD_REQUEST);
    CONSTANT(FC_APP_THREAD_SAFE);
    CONSTANT(FC_REQ_MULTITHREAD);
    CONSTANT(FC_REQ_MULTIPROCESS);
    CONSTANT(FC_REQ_RUN_ONCE);
    CONSTANT(FC_LOG_DEBUG);
    CONSTANT(FC_LOG_INFO);
    CONSTANT(FC_LOG_WARNING);
    CONSTANT(FC_LOG_ERROR);
    CONSTANT(FC_LOG_CRITICAL);
    printf("FC_ENTRY_SYMBOL string %s\n", FC_ENTRY_SYMBOL);
    return 0;
}
