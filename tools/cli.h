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
/* Parses an integer/float option, exiting 2 with a message naming the option and its
 * range if malformed or out of range. A float must be finite and inside [lo, hi];
 * `open` (CLI_OPEN_LO | CLI_OPEN_HI) excludes an end: cli_num(.., 0, 1, CLI_OPEN_LO) is (0, 1]. */
long long cli_int(const char *cmd, const char *opt, const char *s, long long lo, long long hi);
enum { CLI_CLOSED = 0, CLI_OPEN_LO = 1, CLI_OPEN_HI = 2 };
double cli_num(const char *cmd, const char *opt, const char *s, double lo, double hi, int open);
/* The same without exiting (prompts-file lines, <lora:...> tags): 1 and *out if s is a
 * finite number in the range, else 0. cli_range_str writes "(0, 1]" for messages. */
int cli_num_ok(const char *s, double lo, double hi, int open, double *out);
const char *cli_range_str(char *buf, size_t n, double lo, double hi, int open);

/* Adapter weights (--lora FILE:W, <lora:NAME:W>): kohya/A1111 users go past 1, rarely past 2. */
#define CLI_LORA_WEIGHT_MIN (-10.0)
#define CLI_LORA_WEIGHT_MAX 10.0

/* Output paths, checked before any work (core/outpath.h): a file may only replace a
 * regular file or be new; a folder must be a folder or new. Exits 1 with a message
 * naming `what` (the option) and the path. */
void cli_check_out_file(const char *cmd, const char *what, const char *path);
void cli_check_out_dir(const char *cmd, const char *what, const char *path);
/* Every file `stylora train` writes: the adapter (--out), <out>.state, <out>.loss.png, the
 * CSV log (--log, or <out>.csv when log is NULL), and --cache-dir when given. */
void cli_check_train_outputs(const char *out, const char *log, const char *cache_dir);

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
