/* cli.c - option parsing and error printing for the stylora command. */
#include "cli.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include <omp.h>

void cli_usage(FILE *out, const char *cmd, const char *synopsis, const CliOpt *opts) {
    fprintf(out, "usage: stylora %s %s\n", cmd, synopsis ? synopsis : "");
    if (opts && opts[0].name) fprintf(out, "\noptions:\n");
    for (const CliOpt *o = opts; o && o->name; o++) {
        char left[64];
        snprintf(left, sizeof left, "%s%s%s", o->name, o->arg ? " " : "", o->arg ? o->arg : "");
        fprintf(out, "  %-24s %s%s\n", left, o->help, o->repeat ? " (repeatable)" : "");
    }
    fprintf(out, "  %-24s %s\n", "--help", "show this help");
}

void cli_parse(const char *cmd, const char *synopsis, const CliOpt *opts, int argc, char **argv, const char **pos,
               int max_pos, int *npos) {
    *npos = 0;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0) {
            cli_usage(stdout, cmd, synopsis, opts);
            exit(0);
        }
        if (a[0] == '-' && a[1] == '-') {
            const char *eq = strchr(a, '=');
            size_t len = eq ? (size_t)(eq - a) : strlen(a);
            const CliOpt *o = opts;
            for (; o && o->name; o++)
                if (strlen(o->name) == len && strncmp(o->name, a, len) == 0) break;
            if (!o || !o->name) {
                fprintf(stderr, "stylora %s: error: unknown option '%.*s' (see 'stylora %s --help')\n", cmd, (int)len, a,
                        cmd);
                exit(2);
            }
            const char *val = "1";
            if (o->arg) {
                if (eq) val = eq + 1;
                else if (i + 1 < argc) val = argv[++i];
                else {
                    fprintf(stderr, "stylora %s: error: option %s needs a value %s\n", cmd, o->name, o->arg);
                    exit(2);
                }
            } else if (eq) {
                fprintf(stderr, "stylora %s: error: option %s takes no value\n", cmd, o->name);
                exit(2);
            }
            if (o->repeat) {
                int k = 0;
                while (k < o->repeat && o->value[k]) k++;
                if (k == o->repeat) {
                    fprintf(stderr, "stylora %s: error: option %s given more than %d times\n", cmd, o->name, o->repeat);
                    exit(2);
                }
                o->value[k] = val;
            } else {
                *o->value = val;
            }
            continue;
        }
        if (*npos >= max_pos) {
            fprintf(stderr, "stylora %s: error: unexpected argument '%s' (see 'stylora %s --help')\n", cmd, a, cmd);
            exit(2);
        }
        pos[(*npos)++] = a;
    }
}

static void log_stderr(void *user, SlLogLevel level, const char *msg) {
    (void)user;
    static const char *names[] = {"error", "warning", "info", "debug"};
    if (level == SL_LOG_INFO) fprintf(stderr, "%s\n", msg);
    else fprintf(stderr, "stylora: %s: %s\n", names[level], msg);
}

void cli_ctx_init(SlCtx *ctx, int quiet) {
    sl_ctx_init(ctx);
    ctx->log = log_stderr;
    ctx->log_level = quiet ? SL_LOG_WARN : SL_LOG_INFO;
}

int cli_fail(const char *cmd, const SlCtx *ctx) {
    fprintf(stderr, "stylora %s: error: %s\n", cmd, ctx->msg[0] ? ctx->msg : sl_status_name(ctx->status));
    return 1;
}

long long cli_int(const char *cmd, const char *opt, const char *s, long long lo, long long hi) {
    char *end;
    errno = 0;
    long long v = strtoll(s, &end, 10);
    if (errno || end == s || *end || v < lo || v > hi) {
        fprintf(stderr, "stylora %s: error: %s expects an integer in [%lld, %lld], got '%s'\n", cmd, opt, lo, hi, s);
        exit(2);
    }
    return v;
}

double cli_num(const char *cmd, const char *opt, const char *s) {
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    if (errno || end == s || *end || v != v) {
        fprintf(stderr, "stylora %s: error: %s expects a number, got '%s'\n", cmd, opt, s);
        exit(2);
    }
    return v;
}

void cli_threads(long long n) {
    /* OpenBLAS stays single-threaded (nn/gemm.h): threads are stylora's own */
    omp_set_num_threads((int)n);
}
