/* status.h - status codes and the caller-owned error context.
 *
 * Every library function that can fail returns an SlStatus and, on failure,
 * writes a one-line message into the SlCtx the caller passed: the message
 * names the file, tensor or key that was wrong. There is no global error
 * state. Logging goes through a callback held in the same context, so only
 * tools/ decides where text ends up.
 *
 * Not here: printing or exiting (tools/ does that).
 */
#ifndef SL_STATUS_H
#define SL_STATUS_H

#include <stdarg.h>
#include <stddef.h>

typedef enum SlStatus {
    SL_OK = 0,
    SL_ERR_IO,          /* open/read/write/rename failed */
    SL_ERR_FORMAT,      /* a file's content is malformed */
    SL_ERR_SHAPE,       /* a tensor's shape or dtype does not fit */
    SL_ERR_MISSING,     /* a required tensor / key / file is absent */
    SL_ERR_NOMEM,       /* allocation failed or a size limit was hit */
    SL_ERR_ARG,         /* a caller-supplied argument is invalid */
    SL_ERR_UNSUPPORTED, /* a valid but unsupported configuration */
    SL_ERR_NUMERIC,     /* NaN / Inf where finite values are required */
    SL_ERR_INTERRUPTED  /* stopped on request (Ctrl-C) */
} SlStatus;

typedef enum SlLogLevel { SL_LOG_ERROR = 0, SL_LOG_WARN = 1, SL_LOG_INFO = 2, SL_LOG_DEBUG = 3 } SlLogLevel;

typedef void (*SlLogFn)(void *user, SlLogLevel level, const char *msg);

#define SL_MSG_MAX 1024

typedef struct SlCtx {
    SlStatus status;        /* status of the last failure (SL_OK if none) */
    char msg[SL_MSG_MAX];   /* one-line message of the last failure */
    SlLogFn log;            /* may be NULL: log lines are dropped */
    void *log_user;
    SlLogLevel log_level;   /* lines above this level are dropped */
} SlCtx;

/* Initializes ctx with no error, no log callback and level INFO. */
void sl_ctx_init(SlCtx *ctx);

/* Records a failure: formats the message into ctx->msg, sets ctx->status,
 * and returns st so callers can write `return sl_fail(ctx, SL_ERR_IO, ...)`.
 * ctx may be NULL (the message is dropped). */
SlStatus sl_fail(SlCtx *ctx, SlStatus st, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Prefixes the current message with "prefix: " (adds context on the way up). */
void sl_fail_prefix(SlCtx *ctx, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Sends one log line through ctx->log if level <= ctx->log_level. */
void sl_log(SlCtx *ctx, SlLogLevel level, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Clears the last failure. */
void sl_ctx_clear(SlCtx *ctx);

const char *sl_status_name(SlStatus st);

/* Propagates a failing status: SL_TRY(expr) returns it from the caller. */
#define SL_TRY(expr)                      \
    do {                                  \
        SlStatus sl_try_st_ = (expr);     \
        if (sl_try_st_ != SL_OK) return sl_try_st_; \
    } while (0)

#endif
