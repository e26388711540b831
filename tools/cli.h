/* cli.h - shared plumbing of the `stylora` command: option parsing, the log
 * sink, and fatal errors. Only tools/ prints and exits (STYLE rule 6).
 */
#ifndef SL_CLI_H
#define SL_CLI_H

#include <stdio.h>

#include "core/status.h"
#include "nn/kernels.h"

/* One option of a subcommand. `arg` NULL means a flag. */
typedef struct CliOpt {
    const char *name;   /* "--model" */
    const char *arg;    /* "DIR" or NULL for a flag */
    const char *help;
    const char **value; /* where the string goes (flags get "1") */
    int repeat;         /* if set, value is an array of `repeat` slots, filled in order */
} CliOpt;

typedef struct CliCmd {
    const char *name;
    const char *args;     /* positional synopsis, e.g. "PATH" */
    const char *summary;
    int (*run)(int argc, char **argv);
} CliCmd;

/* Parses argv[1..] against opts; positionals go to pos[0..*npos) (cap max_pos).
 * Prints help and exits 0 on --help; prints an error and exits 2 on a bad option. */
void cli_parse(const char *cmd, const char *synopsis, const CliOpt *opts, int argc, char **argv,
               const char **pos, int max_pos, int *npos);
void cli_usage(FILE *out, const char *cmd, const char *synopsis, const CliOpt *opts);

/* Sets up a context whose log lines go to stderr ("stylora: warning: ..."). */
void cli_ctx_init(SlCtx *ctx, int quiet);
/* Prints "stylora CMD: error: <ctx->msg>" and returns exit code 1. */
int cli_fail(const char *cmd, const SlCtx *ctx);
/* The kernels asked for by SL_GEMM / SL_CONV / SL_ATTENTION (tools/kernels_env.c); all unset: the default. */
SlStatus cli_kernels_from_env(SlKernels *k, SlCtx *ctx);
/* Parses an integer/float option, exiting with a clear message if malformed. */
long long cli_int(const char *cmd, const char *opt, const char *s, long long lo, long long hi);
double cli_num(const char *cmd, const char *opt, const char *s);

/* Sets the thread count (n >= 1). */
void cli_threads(long long n);

int cmd_inspect(int argc, char **argv);
int cmd_train(int argc, char **argv);
int cmd_probe(int argc, char **argv);
int cmd_lora(int argc, char **argv);
int cmd_tokenize(int argc, char **argv);
int cmd_sample(int argc, char **argv);
int cmd_eval(int argc, char **argv);
int cmd_quantize(int argc, char **argv);

#endif
