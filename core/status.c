/* status.c - error context and logging; see status.h. */
#include "status.h"

#include <stdio.h>
#include <string.h>

void sl_ctx_init(SlCtx *ctx) {
    memset(ctx, 0, sizeof *ctx);
    ctx->log_level = SL_LOG_INFO;
}

void sl_ctx_clear(SlCtx *ctx) {
    ctx->status = SL_OK;
    ctx->msg[0] = '\0';
}

SlStatus sl_fail(SlCtx *ctx, SlStatus st, const char *fmt, ...) {
    if (!ctx) return st;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(ctx->msg, sizeof ctx->msg, fmt, ap);
    va_end(ap);
    ctx->status = st;
    return st;
}

void sl_fail_prefix(SlCtx *ctx, const char *fmt, ...) {
    if (!ctx) return;
    char prefix[SL_MSG_MAX], old[SL_MSG_MAX];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(prefix, sizeof prefix, fmt, ap);
    va_end(ap);
    memcpy(old, ctx->msg, sizeof old);
    /* prefix + ": " + old, truncated to the buffer */
    size_t o = 0, cap = sizeof ctx->msg - 1;
    for (const char *parts[3] = {prefix, ": ", old}, **p = parts; p < parts + 3; p++)
        for (const char *c = *p; *c && o < cap; c++) ctx->msg[o++] = *c;
    ctx->msg[o] = '\0';
}

void sl_log(SlCtx *ctx, SlLogLevel level, const char *fmt, ...) {
    if (!ctx || !ctx->log || level > ctx->log_level) return;
    char line[2048];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(line, sizeof line, fmt, ap);
    va_end(ap);
    ctx->log(ctx->log_user, level, line);
}

const char *sl_status_name(SlStatus st) {
    switch (st) {
    case SL_OK: return "ok";
    case SL_ERR_IO: return "i/o error";
    case SL_ERR_FORMAT: return "bad format";
    case SL_ERR_SHAPE: return "shape mismatch";
    case SL_ERR_MISSING: return "missing";
    case SL_ERR_NOMEM: return "out of memory";
    case SL_ERR_ARG: return "bad argument";
    case SL_ERR_UNSUPPORTED: return "unsupported";
    case SL_ERR_NUMERIC: return "non-finite value";
    case SL_ERR_INTERRUPTED: return "interrupted";
    }
    return "unknown";
}
