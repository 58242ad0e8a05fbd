/*
 * c-wordcount: a C plugin written from ferricorn.h and the README alone.
 *
 *   POST (or PUT) any path with a body  ->  200 {"bytes":N,"lines":N,"words":N,"trailers":N}
 *   GET  <stats_path> (default /stats)  ->  200 {"requests":N,"bytes":N} for this worker
 *   anything else                       ->  405 with Allow
 *
 * app.config: stats_path (must start with '/'; init fails otherwise).
 * The counters are per worker process, shared by its threads behind a mutex.
 *
 * Build: make
 */
#include "ferricorn.h"

#include <ctype.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct State {
    char stats_path[256];
    pthread_mutex_t lock;
    unsigned long long requests;
    unsigned long long bytes;
} State;

static int str_equals(FcStr s, const char *text) {
    size_t n = strlen(text);
    return s.len == n && (n == 0 || memcmp(s.ptr, text, n) == 0);
}

static FcStr str_of(const char *text) {
    FcStr s = { (const uint8_t *)text, strlen(text) };
    return s;
}

static int32_t wc_init(const FcField *config, size_t count, void **state, char *err,
                       size_t err_cap) {
    State *st = calloc(1, sizeof *st);
    if (st == NULL) {
        snprintf(err, err_cap, "c-wordcount: out of memory");
        return FC_ERR_APP;
    }
    strcpy(st->stats_path, "/stats");
    for (size_t i = 0; i < count; i++) {
        if (!str_equals(config[i].name, "stats_path")) {
            continue;
        }
        FcStr v = config[i].value;
        if (v.len == 0 || v.ptr[0] != '/' || v.len >= sizeof st->stats_path) {
            snprintf(err, err_cap, "c-wordcount: stats_path must start with '/' (got \"%.*s\")",
                     (int)(v.len > 100 ? 100 : v.len), (const char *)v.ptr);
            free(st);
            return FC_ERR_APP;
        }
        memcpy(st->stats_path, v.ptr, v.len);
        st->stats_path[v.len] = '\0';
    }
    pthread_mutex_init(&st->lock, NULL);
    *state = st;
    return FC_OK;
}

static int32_t send_json(const FcResponder *res, uint16_t status, const char *body) {
    const FcField fields[] = {
        { str_of("Content-Type"), str_of("application/json") },
    };
    const FcStr no_reason = { NULL, 0 };
    int32_t rc = res->start_response(res->ctx, status, no_reason, fields, 1);
    if (rc != FC_OK) {
        return rc;
    }
    return res->write(res->ctx, (const uint8_t *)body, strlen(body));
}

static int32_t count_body(State *st, const FcResponder *res) {
    unsigned long long bytes = 0, lines = 0, words = 0;
    int in_word = 0;
    uint8_t buf[16384];
    for (;;) {
        int64_t n = res->read_body(res->ctx, buf, sizeof buf);
        if (n < 0) {
            return (int32_t)n; /* the server answers 400/408/413 */
        }
        if (n == 0) {
            break;
        }
        for (int64_t i = 0; i < n; i++) {
            if (buf[i] == '\n') {
                lines++;
            }
            if (isspace(buf[i])) {
                in_word = 0;
            } else if (!in_word) {
                in_word = 1;
                words++;
            }
        }
        bytes += (unsigned long long)n;
    }
    const FcField *trailers = NULL;
    size_t trailer_count = 0;
    if (res->trailers(res->ctx, &trailers, &trailer_count) != FC_OK) {
        trailer_count = 0;
    }
    pthread_mutex_lock(&st->lock);
    st->requests++;
    st->bytes += bytes;
    pthread_mutex_unlock(&st->lock);

    char body[160];
    snprintf(body, sizeof body, "{\"bytes\":%llu,\"lines\":%llu,\"words\":%llu,\"trailers\":%zu}\n",
             bytes, lines, words, trailer_count);
    return send_json(res, 200, body);
}

static int32_t wc_handle(void *state, const FcRequest *req, const FcResponder *res) {
    State *st = state;
    FcStr method = req->request_method;
    if (str_equals(method, "POST") || str_equals(method, "PUT")) {
        return count_body(st, res);
    }
    if ((str_equals(method, "GET") || str_equals(method, "HEAD")) &&
        str_equals(req->path_info, st->stats_path)) {
        char body[128];
        pthread_mutex_lock(&st->lock);
        snprintf(body, sizeof body, "{\"requests\":%llu,\"bytes\":%llu}\n", st->requests,
                 st->bytes);
        pthread_mutex_unlock(&st->lock);
        return send_json(res, 200, body);
    }
    const FcField fields[] = {
        { str_of("Allow"), str_of("POST, PUT") },
    };
    const FcStr no_reason = { NULL, 0 };
    return res->start_response(res->ctx, 405, no_reason, fields, 1);
}

static void wc_shutdown(void *state) {
    State *st = state;
    pthread_mutex_destroy(&st->lock);
    free(st);
}

static const FcAppDescriptor DESCRIPTOR = {
    .abi_version = FC_ABI_VERSION,
    .size = sizeof(FcAppDescriptor),
    .name = "c-wordcount",
    .flags = FC_APP_THREAD_SAFE,
    .init = wc_init,
    .handle = wc_handle,
    .shutdown = wc_shutdown,
};

const FcAppDescriptor *ferricorn_app(void) {
    return &DESCRIPTOR;
}
