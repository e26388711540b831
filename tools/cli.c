/* cli.c - option parsing and error printing for the stylora command. */
#include "cli.h"

#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include <omp.h>

#include "core/outpath.h"

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

const char *cli_range_str(char *buf, size_t n, double lo, double hi, int open) {
    snprintf(buf, n, "%c%g, %g%c", open & CLI_OPEN_LO ? '(' : '[', lo, hi, open & CLI_OPEN_HI ? ')' : ']');
    return buf;
}

int cli_num_ok(const char *s, double lo, double hi, int open, double *out) {
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    /* strtod takes "inf", "nan" and overflows to HUGE_VAL with ERANGE: all refused here */
    if (errno || end == s || *end || !isfinite(v)) return 0;
    if (v < lo || v > hi || ((open & CLI_OPEN_LO) && v == lo) || ((open & CLI_OPEN_HI) && v == hi)) return 0;
    *out = v;
    return 1;
}

double cli_num(const char *cmd, const char *opt, const char *s, double lo, double hi, int open) {
    double v;
    if (!cli_num_ok(s, lo, hi, open, &v)) {
        char r[64];
        fprintf(stderr, "stylora %s: error: %s expects a finite number in %s, got '%s'\n", cmd, opt,
                cli_range_str(r, sizeof r, lo, hi, open), s);
        exit(2);
    }
    return v;
}

void cli_check_out_file(const char *cmd, const char *what, const char *path) {
    SlCtx ctx;
    sl_ctx_init(&ctx);
    if (sl_path_check_writable(what, path, &ctx) != SL_OK) exit(cli_fail(cmd, &ctx));
}

void cli_check_out_dir(const char *cmd, const char *what, const char *path) {
    SlCtx ctx;
    sl_ctx_init(&ctx);
    if (sl_path_check_writable_dir(what, path, &ctx) != SL_OK) exit(cli_fail(cmd, &ctx));
}

/* As cli_check_out_file/dir, saying that nothing was trained (the user may fear lost work). */
static void train_check(const char *what, const char *path, int dir) {
    SlCtx ctx;
    sl_ctx_init(&ctx);
    SlStatus st = dir ? sl_path_check_writable_dir(what, path, &ctx) : sl_path_check_writable(what, path, &ctx);
    if (st == SL_OK) return;
    size_t n = strlen(ctx.msg);
    snprintf(ctx.msg + n, sizeof ctx.msg - n, " (checked before training)");
    exit(cli_fail("train", &ctx));
}

void cli_check_train_outputs(const char *out, const char *log, const char *cache_dir) {
    train_check("--out", out, 0); /* first: refuses "" before "<out>.csv" means "./.csv" */
    char p[4200];
    snprintf(p, sizeof p, "%s.state", out);
    train_check("checkpoint of --out", p, 0);
    snprintf(p, sizeof p, "%s.loss.png", out);
    train_check("loss curve of --out", p, 0);
    if (log) train_check("--log", log, 0);
    else {
        snprintf(p, sizeof p, "%s.csv", out);
        train_check("CSV log of --out", p, 0);
    }
    if (cache_dir) train_check("--cache-dir", cache_dir, 1);
}

void cli_threads(long long n) {
    /* OpenBLAS stays single-threaded (nn/gemm.h): threads are stylora's own */
    omp_set_num_threads((int)n);
}
