/* cmd_train.c - `stylora train`: a style adapter from a folder of images.
 *
 * Options come from the command line and, with --config FILE.json, from a
 * JSON object whose keys are the option names without "--" (command-line
 * options win). Every setting is echoed into the adapter's metadata. The run
 * shows a progress bar (step, smoothed loss, it/s, ETA), writes a CSV log
 * (step, loss, lr, grad norm) and a loss-curve PNG beside the adapter, saves
 * checkpoints every --save-every steps (adapter + <out>.state, atomically), and
 * on Ctrl-C saves a checkpoint and exits; --resume continues bit-exactly.
 */
#include <errno.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>

#include "cli.h"
#include "core/config.h"
#include "core/outpath.h"
#include "core/progress.h"
#include "pipeline/plot.h"
#include "pipeline/train.h"
#include "train_mpi.h" /* issue 13: data-parallel training under mpirun (SL_MPI builds) */

static volatile sig_atomic_t g_stop = 0;
static void on_sigint(int sig) {
    (void)sig;
    g_stop = 1;
}

/* sl_trainer_run hooks: Ctrl-C / SIGTERM, and the progress bar (user = SlProgress *) */
static int stop_requested(void *user) {
    (void)user;
    return g_stop != 0;
}
static void show_progress(void *user, const SlTrainer *tr, double loss_ema) {
    char extra[96];
    snprintf(extra, sizeof extra, "loss %.4f lr %.2e", loss_ema, tr->lr);
    sl_progress_update(user, tr->step, extra);
}

#define MIB (1024.0 * 1024.0)

/* The plan as a table on f (MiB). */
static void print_plan(FILE *f, const SlMemPlan *p) {
    fprintf(f, "memory plan (predicted before loading; MiB):\n");
    for (int i = 0; i < p->n; i++)
        if (p->rows[i].bytes > 0) fprintf(f, "  %-64s %10.1f\n", p->rows[i].label, p->rows[i].bytes / MIB);
    fprintf(f, "  %-64s %10.1f\n", "predicted peak", p->predicted_peak / MIB);
    if (p->available > 0) fprintf(f, "  %-64s %10.1f\n", "available", p->available / MIB);
}

/* Predicts the run's memory before the model loads (pipeline/memplan.h) and compares it
 * with --max-memory (over it: refused) or else MemAvailable (over it: a warning). Returns 0
 * to go on (c->micro_batch may have been picked), nonzero after printing why not
 * (plan->predicted_peak 0: a bad option). */
static int memory_check(SlTrainConfig *c, const char *max_mem, int pick, int quiet, SlMemPlan *plan, SlCtx *ctx) {
    double limit = 0;
    if (max_mem && sl_mem_size_parse(max_mem, "--max-memory", &limit, ctx) != SL_OK) {
        fprintf(stderr, "stylora train: error: %s\n", ctx->msg);
        return 1;
    }
    const int given = limit > 0;
    if (!given) limit = sl_mem_available();
    int fits = 1;
    if (sl_train_fit_memory(c, limit, given && pick, plan, &fits, ctx) != SL_OK) {
        /* no prediction (a single file without configs, a missing config, a pickle): the
         * load that follows reports the same fault in its own words, once */
        if (given) {
            fprintf(stderr, "stylora train: error: --max-memory: cannot predict the memory: %s\n", ctx->msg);
            return 1;
        }
        sl_ctx_clear(ctx);
        memset(plan, 0, sizeof *plan);
        return 0;
    }
    if (!quiet || !fits) print_plan(stderr, plan);
    if (!fits && given) {
        fprintf(stderr, "stylora train: error: the predicted peak of %.0f MiB exceeds --max-memory (%.0f MiB): nothing was "
                "loaded. Settings that fit: %s\n", plan->predicted_peak / MIB, limit / MIB, plan->advice);
        return 1;
    }
    if (!fits) { /* MemAvailable moves (page cache, other programs): say so, as the issue asks; --max-memory refuses */
        fprintf(stderr, "stylora train: warning: the predicted peak of %.0f MiB exceeds the memory available now "
                "(MemAvailable %.0f MiB): the run may swap or be killed. Settings that fit: %s. With --max-memory SIZE "
                "this is a refusal.\n", plan->predicted_peak / MIB, limit / MIB, plan->advice);
        return 0;
    }
    if (plan->advice[0]) fprintf(stderr, "memory: %s\n", plan->advice);
    return 0;
}

#define N_OPTS 61 /* [nf4] was 48; buckets +4; memplan +1; report +2 */
typedef struct TrainArgs {
    const char *v[N_OPTS];
    const char *sample_prompt[SL_TRAIN_MAX_SAMPLE_PROMPTS];
} TrainArgs;

enum {
    A_MODEL, A_MCONFIG, A_DATA, A_OUT, A_STEPS, A_BATCH, A_ACCUM, A_MICRO, A_RES, A_RANK, A_CONV_RANK, A_ALPHA, A_TARGETS,
    A_DORA, A_RSLORA, A_INIT, A_DROPOUT, A_FULL, A_LR, A_SCHED, A_WARMUP, A_B1, A_B2, A_EPS, A_WD, A_CLIP, A_SNR,
    A_NOISE_OFF, A_CAP_DROP, A_CLIP_SKIP, A_TRIGGER, A_CAPTION, A_FLIP, A_BAD, A_SEED, A_THREADS, A_SAVE_EVERY,
    A_RESUME, A_FORMAT, A_SAVE_DTYPE, A_CACHE, A_SAMPLE_EVERY, A_SAMPLE_STEPS, A_SAMPLE_CFG, A_CONFIG, A_QUIET,
    A_LOG, A_NAME, A_BASE, A_NF4_LAYERS, A_NF4_DQ, /* [nf4] */ A_RESUME_ANYWAY, A_BUCKETS, A_BUCKET_STEP, A_MIN_BUCKET, A_MAX_BUCKET, A_MAX_MEM, A_REPORT, A_NO_REPORT, A_COUNT
};

_Static_assert(A_COUNT <= N_OPTS, "N_OPTS too small for the option table");

static const char *json_key(const char *opt) { return opt + 2; } /* "--rank" -> "rank" */

/* The option that fills `slot`: the table's order is not the enum's (--sample-prompt
 * sits between --sample-every and --sample-steps), so opts[A_X] may name another one. */
static const char *opt_name(const CliOpt *opts, const char **slot) {
    for (; opts->name; opts++)
        if (opts->value == slot) return opts->name;
    return "option";
}

int cmd_train(int argc, char **argv) {
    TrainArgs a;
    memset(&a, 0, sizeof a);
    const CliOpt opts[] = {
        {"--model", "DIR", "base model: diffusers folder or single-file .safetensors (required)", &a.v[A_MODEL], 0},
        {"--model-config", "DIR", "configs + tokenizer folder for a single-file checkpoint", &a.v[A_MCONFIG], 0},
        {"--data", "FOLDER", "training images (+ NAME.txt captions; N_name folders repeat N times) (required)", &a.v[A_DATA], 0},
        {"--out", "FILE", "adapter to write (.safetensors) (required)", &a.v[A_OUT], 0},
        {"--steps", "N", "optimizer steps (default 1000)", &a.v[A_STEPS], 0},
        {"--batch", "N", "images per step (default 1)", &a.v[A_BATCH], 0},
        {"--grad-accum", "N", "micro-batches per step (default 1)", &a.v[A_ACCUM], 0},
        {"--micro-batch", "N", "run the batch N images at a time (divides --batch; less memory; the gradient sum in a fixed order); auto: with --max-memory, the largest that fits", &a.v[A_MICRO], 0},
        {"--max-memory", "SIZE", "refuse before loading if the predicted peak exceeds SIZE (8G, 3500M; without it: a warning over MemAvailable); picks --micro-batch when it is auto or not given", &a.v[A_MAX_MEM], 0},
        {"--resolution", "N", "training image size (default: the VAE's sample size)", &a.v[A_RES], 0},
        {"--rank", "R", "LoRA rank (default 8)", &a.v[A_RANK], 0},
        {"--conv-rank", "R", "rank of LoCon conv adapters (default: --rank)", &a.v[A_CONV_RANK], 0},
        {"--alpha", "A", "LoRA alpha; scale = alpha/rank (default: = rank)", &a.v[A_ALPHA], 0},
        {"--targets", "LIST", "modules: attn (default), proj, ff, resnet, or patterns (see README)", &a.v[A_TARGETS], 0},
        {"--dora", NULL, "train DoRA (magnitude + direction)", &a.v[A_DORA], 0},
        {"--rslora", NULL, "scale alpha/sqrt(rank)", &a.v[A_RSLORA], 0},
        {"--init", "KIND", "kaiming (default) | gaussian", &a.v[A_INIT], 0},
        {"--dropout", "P", "dropout on the adapter input (default 0)", &a.v[A_DROPOUT], 0},
        {"--full", NULL, "train every U-Net weight instead (the full fine-tuning baseline)", &a.v[A_FULL], 0},
        {"--lr", "X", "learning rate (default 1e-3)", &a.v[A_LR], 0},
        {"--lr-scheduler", "NAME", "constant (default) | constant_with_warmup | linear | cosine", &a.v[A_SCHED], 0},
        {"--warmup", "N", "warmup steps (default 0)", &a.v[A_WARMUP], 0},
        {"--adam-beta1", "B", "default 0.9", &a.v[A_B1], 0},
        {"--adam-beta2", "B", "default 0.999", &a.v[A_B2], 0},
        {"--adam-eps", "E", "default 1e-8", &a.v[A_EPS], 0},
        {"--weight-decay", "W", "default 0.01", &a.v[A_WD], 0},
        {"--grad-clip", "N", "clip the global gradient norm (default 1; 0 = off)", &a.v[A_CLIP], 0},
        {"--min-snr-gamma", "G", "min-SNR-gamma loss weighting (default off; 5 is common)", &a.v[A_SNR], 0},
        {"--noise-offset", "X", "noise offset (default 0)", &a.v[A_NOISE_OFF], 0},
        {"--caption-dropout", "P", "train on the empty caption with probability P (default 0)", &a.v[A_CAP_DROP], 0},
        {"--clip-skip", "K", "text-encoder layer, A1111 convention (default 1)", &a.v[A_CLIP_SKIP], 0},
        {"--trigger", "WORD", "trigger word put first in every caption", &a.v[A_TRIGGER], 0},
        {"--caption", "TEXT", "caption for images without a caption file", &a.v[A_CAPTION], 0},
        {"--flip", NULL, "random horizontal flips", &a.v[A_FLIP], 0},
        {"--buckets", NULL, "aspect-ratio buckets (kohya's enable_bucket): each image resized and center-cropped to the size of about --resolution^2 area whose aspect is closest; each batch from one bucket", &a.v[A_BUCKETS], 0},
        {"--bucket-step", "PX", "with --buckets: bucket sides in steps of PX (default: 64, or R/8 below 512, raised to a multiple of the model's size multiple)", &a.v[A_BUCKET_STEP], 0},
        {"--min-bucket", "PX", "with --buckets: smallest bucket side (default R/2, kohya's 256 at 512)", &a.v[A_MIN_BUCKET], 0},
        {"--max-bucket", "PX", "with --buckets: largest bucket side (default 2R, kohya's 1024 at 512)", &a.v[A_MAX_BUCKET], 0},
        {"--stop-on-bad-image", NULL, "stop instead of skipping unreadable images", &a.v[A_BAD], 0},
        {"--seed", "N", "seed (default 42)", &a.v[A_SEED], 0},
        {"--threads", "N", "threads (default: all cores)", &a.v[A_THREADS], 0},
        {"--save-every", "N", "checkpoint every N steps (default: only at the end)", &a.v[A_SAVE_EVERY], 0},
        {"--resume", NULL, "continue from <out>.state", &a.v[A_RESUME], 0},
        {"--resume-anyway", NULL, "--resume even if the data folder or the base model differ from the checkpoint's (a warning)", &a.v[A_RESUME_ANYWAY], 0},
        {"--format", "NAME", "kohya (default) | peft", &a.v[A_FORMAT], 0},
        {"--save-dtype", "T", "fp32 (default) | fp16 | bf16", &a.v[A_SAVE_DTYPE], 0},
        {"--cache-dir", "DIR", "keep latent/text caches on disk here", &a.v[A_CACHE], 0},
        {"--sample-every", "N", "write sample images every N steps", &a.v[A_SAMPLE_EVERY], 0},
        {"--sample-prompt", "TEXT", "prompt for the sample images", a.sample_prompt, SL_TRAIN_MAX_SAMPLE_PROMPTS},
        {"--sample-steps", "N", "sampling steps for samples (default 20)", &a.v[A_SAMPLE_STEPS], 0},
        {"--sample-cfg", "S", "guidance for samples (default 5)", &a.v[A_SAMPLE_CFG], 0},
        {"--config", "FILE.json", "read options from a JSON object", &a.v[A_CONFIG], 0},
        {"--log", "FILE.csv", "CSV log (default: <out>.csv)", &a.v[A_LOG], 0},
        {"--base-name", "NAME", "base model name written into the metadata", &a.v[A_NAME], 0},
        {"--report", NULL, "write <out>.html, the run's report (default; images in <out>.report/)", &a.v[A_REPORT], 0},
        {"--no-report", NULL, "no HTML report", &a.v[A_NO_REPORT], 0},
        {"--quiet", NULL, "no progress bar", &a.v[A_QUIET], 0},
        {"--base", "KIND", "frozen U-Net weights: fp32 | fp16 (linears+convs in binary16: half the memory) | bf16 (linears+convs in bfloat16, their products on the bf16 kernel: faster where the CPU has AVX512_BF16, not exact) | nf4 (QLoRA, 4-bit NormalFloat linears); default: fp16 when the file stores them F16 (exact), else fp32", &a.v[A_BASE], 0}, /* [nf4] */
        {"--nf4-layers", "LIST", "with --base nf4: attn,ff,proj (default), time, all, or patterns", &a.v[A_NF4_LAYERS], 0}, /* [nf4] */
        {"--nf4-double-quant", NULL, "with --base nf4: 8-bit double-quantized block scales", &a.v[A_NF4_DQ], 0}, /* [nf4] */
        {0},
    };
    const char *syn = "--model DIR --data FOLDER --out ADAPTER.safetensors [options]";
    const char *pos[1];
    int npos;
    cli_parse("train", syn, opts, argc, argv, pos, 0, &npos);
    SlCtx ctx;
    cli_ctx_init(&ctx, a.v[A_QUIET] != NULL);
    /* JSON config: fills what the command line left empty */
    SlConfig jc = {0};
    if (a.v[A_CONFIG]) {
        if (sl_config_load(&jc, a.v[A_CONFIG], &ctx) != SL_OK) return cli_fail("train", &ctx);
        const cJSON *it;
        cJSON_ArrayForEach(it, jc.root) {
            int found = 0;
            for (int i = 0; opts[i].name; i++) {
                const char *k = json_key(opts[i].name);
                char norm[64];
                snprintf(norm, sizeof norm, "%s", it->string);
                for (char *p = norm; *p; p++) if (*p == '_') *p = '-';
                if (strcmp(k, norm) != 0) continue;
                found = 1;
                if (opts[i].repeat) {
                    if (!cJSON_IsArray(it)) { fprintf(stderr, "stylora train: error: %s: '%s' must be a list of strings\n", a.v[A_CONFIG], it->string); return 1; }
                    int n = 0;
                    const cJSON *s;
                    cJSON_ArrayForEach(s, it) if (cJSON_IsString(s) && n < opts[i].repeat && !opts[i].value[n]) opts[i].value[n++] = s->valuestring;
                } else if (!*opts[i].value) {
                    if (cJSON_IsString(it)) *opts[i].value = it->valuestring;
                    else if (cJSON_IsBool(it)) { if (cJSON_IsTrue(it)) *opts[i].value = "1"; }
                    else if (cJSON_IsNumber(it)) {
                        static char nums[N_OPTS][32];
                        snprintf(nums[i % N_OPTS], 32, "%.17g", it->valuedouble);
                        *opts[i].value = nums[i % N_OPTS];
                    } else { fprintf(stderr, "stylora train: error: %s: '%s' has the wrong type\n", a.v[A_CONFIG], it->string); return 1; }
                }
            }
            if (!found) { fprintf(stderr, "stylora train: error: %s: unknown option '%s'\n", a.v[A_CONFIG], it->string); return 1; }
        }
    }
    if (!a.v[A_MODEL] || !a.v[A_DATA] || !a.v[A_OUT]) {
        fprintf(stderr, "stylora train: error: --model, --data and --out are required\n");
        cli_usage(stderr, "train", syn, opts);
        return 2;
    }
    SlTrainConfig c;
    sl_train_config_default(&c);
    c.model = a.v[A_MODEL];
    c.config_dir = a.v[A_MCONFIG];
    c.data = a.v[A_DATA];
    c.out = a.v[A_OUT];
    c.cache_dir = a.v[A_CACHE];
#define INT(idx, field, lo, hi) if (a.v[idx]) c.field = cli_int("train", opt_name(opts, &a.v[idx]), a.v[idx], lo, hi)
#define NUM(idx, field, lo, hi, open) if (a.v[idx]) c.field = (float)cli_num("train", opt_name(opts, &a.v[idx]), a.v[idx], lo, hi, open)
    INT(A_STEPS, steps, 1, 100000000);
    INT(A_BATCH, batch, 1, 4096);
    INT(A_ACCUM, grad_accum, 1, 4096);
    const int micro_auto = a.v[A_MICRO] && !strcmp(a.v[A_MICRO], "auto");
    if (!micro_auto) INT(A_MICRO, micro_batch, 1, 4096);
    INT(A_RES, resolution, 8, 8192);
    INT(A_BUCKET_STEP, bucket_step, 1, 8192);
    INT(A_MIN_BUCKET, min_bucket, 1, 16384);
    INT(A_MAX_BUCKET, max_bucket, 1, 16384);
    INT(A_RANK, rank, 1, 4096);
    INT(A_CONV_RANK, conv_rank, 1, 4096);
    NUM(A_ALPHA, alpha, 0, 10000, CLI_CLOSED); /* 0: = rank, as kohya */
    else c.alpha = 0; /* = rank */
    NUM(A_DROPOUT, dropout, 0, 1, CLI_OPEN_HI);
    NUM(A_LR, lr, 0, 1, CLI_OPEN_LO); /* 1 for Prodigy-style settings */
    INT(A_WARMUP, warmup, 0, 100000000);
    NUM(A_B1, adam.beta1, 0, 1, CLI_OPEN_HI);
    NUM(A_B2, adam.beta2, 0, 1, CLI_OPEN_HI); /* 1 would divide by 0 in the bias correction */
    NUM(A_EPS, adam.eps, 0, 1, CLI_OPEN_LO);
    NUM(A_WD, adam.weight_decay, 0, 10, CLI_CLOSED);
    NUM(A_CLIP, grad_clip, 0, 1e6, CLI_CLOSED);
    NUM(A_SNR, min_snr_gamma, 0, 1000, CLI_CLOSED);
    NUM(A_NOISE_OFF, noise_offset, 0, 1, CLI_CLOSED);
    NUM(A_CAP_DROP, caption_dropout, 0, 1, CLI_CLOSED);
    INT(A_CLIP_SKIP, clip_skip, 1, 64);
    INT(A_SEED, seed, 0, (1LL << 62));
    INT(A_SAVE_EVERY, save_every, 0, 100000000);
    INT(A_SAMPLE_EVERY, sample_every, 0, 100000000);
    INT(A_SAMPLE_STEPS, sample_steps, 1, 1000);
    NUM(A_SAMPLE_CFG, sample_cfg, 0, 100, CLI_CLOSED);
#undef INT
#undef NUM
    c.targets = a.v[A_TARGETS];
    c.dora = a.v[A_DORA] != NULL;
    c.rslora = a.v[A_RSLORA] != NULL;
    c.full = a.v[A_FULL] != NULL;
    c.flip = a.v[A_FLIP] != NULL;
    c.buckets = a.v[A_BUCKETS] != NULL;
    if (!c.buckets && (a.v[A_BUCKET_STEP] || a.v[A_MIN_BUCKET] || a.v[A_MAX_BUCKET])) {
        fprintf(stderr, "stylora train: error: --bucket-step, --min-bucket and --max-bucket need --buckets\n");
        return 2;
    }
    if (a.v[A_REPORT] && a.v[A_NO_REPORT]) {
        fprintf(stderr, "stylora train: error: --report and --no-report contradict each other\n");
        return 2;
    }
    c.stop_on_bad_image = a.v[A_BAD] != NULL;
    c.resume = a.v[A_RESUME] != NULL || a.v[A_RESUME_ANYWAY] != NULL;
    c.resume_anyway = a.v[A_RESUME_ANYWAY] != NULL;
    c.trigger = a.v[A_TRIGGER];
    c.caption = a.v[A_CAPTION];
    c.base_model_name = a.v[A_NAME];
    c.log_csv = a.v[A_LOG];
    c.base = a.v[A_BASE], c.nf4_layers = a.v[A_NF4_LAYERS], c.nf4_double_quant = a.v[A_NF4_DQ] != NULL; /* [nf4] */
    if (a.v[A_INIT]) {
        if (strcmp(a.v[A_INIT], "gaussian") == 0) c.gaussian_init = 1;
        else if (strcmp(a.v[A_INIT], "kaiming") != 0) { fprintf(stderr, "stylora train: error: --init is kaiming or gaussian\n"); return 2; }
    }
    if (a.v[A_SCHED] && !sl_lr_schedule_from_name(a.v[A_SCHED], &c.lr_schedule)) {
        fprintf(stderr, "stylora train: error: unknown --lr-scheduler '%s'\n", a.v[A_SCHED]);
        return 2;
    }
    if (a.v[A_FORMAT]) {
        if (strcmp(a.v[A_FORMAT], "peft") == 0) c.format = SL_ADAPTER_FMT_PEFT;
        else if (strcmp(a.v[A_FORMAT], "kohya") != 0) { fprintf(stderr, "stylora train: error: --format is kohya or peft\n"); return 2; }
    }
    if (a.v[A_SAVE_DTYPE]) {
        if (strcmp(a.v[A_SAVE_DTYPE], "fp16") == 0) c.save_dtype = SL_F16;
        else if (strcmp(a.v[A_SAVE_DTYPE], "bf16") == 0) c.save_dtype = SL_BF16;
        else if (strcmp(a.v[A_SAVE_DTYPE], "fp32") != 0) { fprintf(stderr, "stylora train: error: --save-dtype is fp32, fp16 or bf16\n"); return 2; }
    }
    for (int i = 0; i < SL_TRAIN_MAX_SAMPLE_PROMPTS && a.sample_prompt[i]; i++) c.sample_prompts[c.n_sample_prompts++] = a.sample_prompt[i];
    if (a.v[A_THREADS]) cli_threads(cli_int("train", "--threads", a.v[A_THREADS], 1, 1024));
    c.progress = a.v[A_QUIET] ? NULL : stderr;
    if (cli_kernels_from_env(&c.kernels, &ctx) != SL_OK) {
        sl_config_free(&jc);
        return cli_fail("train", &ctx);
    }

    /* the report: <out>.html, showing the command line as given (quoted where a shell would need it) */
    char report[4200], cmdline[8192];
    snprintf(report, sizeof report, "%s.html", c.out);
    size_t k = (size_t)snprintf(cmdline, sizeof cmdline, "stylora train");
    for (int i = 1; i < argc && k < sizeof cmdline; i++) {
        const int q = argv[i][strcspn(argv[i], " \t'\"\\$`*?;&|<>()")] != '\0' || !argv[i][0];
        k += (size_t)snprintf(cmdline + k, sizeof cmdline - k, q ? " '%s'" : " %s", argv[i]);
    }
    const int want_report = !a.v[A_NO_REPORT];

#ifdef SL_WITH_MPI /* issue 13: under mpirun, the data-parallel loop of tools/train_mpi.c */
    if (train_mpi_launched()) {
        int mpi_rc = train_mpi_run(&c, a.v[A_QUIET] != NULL, want_report ? report : NULL, cmdline);
        sl_config_free(&jc);
        return mpi_rc;
    }
#endif
    /* before the model loads: fail in ms, not after training. Under mpirun the trainer's own
     * check of --out (before the model loads too) reports through the rank-named error path. */
    cli_check_train_outputs(c.out, a.v[A_LOG], c.cache_dir);
    if (micro_auto && !a.v[A_MAX_MEM]) {
        fprintf(stderr, "stylora train: error: --micro-batch auto needs --max-memory SIZE\n");
        sl_config_free(&jc);
        return 2;
    }
    SlMemPlan plan;
    memset(&plan, 0, sizeof plan);
    if (memory_check(&c, a.v[A_MAX_MEM], micro_auto || !a.v[A_MICRO], a.v[A_QUIET] != NULL, &plan, &ctx) != 0) {
        sl_config_free(&jc);
        return plan.predicted_peak > 0 ? 1 : 2;
    }
    if (want_report && sl_path_check_writable("--out (its report)", report, &ctx) != SL_OK) {
        sl_config_free(&jc);
        return cli_fail("train", &ctx);
    }
    SlTrainer tr;
    if (sl_trainer_init(&tr, &c, &ctx) != SL_OK) {
        int rc = cli_fail("train", &ctx);
        sl_trainer_free(&tr);
        sl_config_free(&jc);
        return rc;
    }
    size_t pb, gb, ob;
    sl_trainer_memory(&tr, &pb, &gb, &ob);
    sl_log(&ctx, SL_LOG_INFO, "training %s: %d tensors, %.2f MB trainable, %.2f MB optimizer state; %lld steps of batch %lld at %lldx%lld",
           c.full ? "every U-Net weight" : "a LoRA adapter", tr.n_params, pb / 1e6, ob / 1e6, (long long)c.steps,
           (long long)c.batch, (long long)tr.R, (long long)tr.R);
    signal(SIGINT, on_sigint);
    signal(SIGTERM, on_sigint);
    SlProgress bar;
    sl_progress_begin(&bar, "train", c.steps, stderr, a.v[A_QUIET] != NULL);
    SlTrainHooks hooks = {.user = &bar, .stop_requested = stop_requested, .progress = show_progress,
                          .report_path = want_report ? report : NULL, .cmdline = cmdline};
    SlTrainRunResult res;
    SlStatus st = sl_trainer_run(&tr, &hooks, &res, &ctx);
    sl_progress_end(&bar);
    if (!st && res.stopped) {
        fprintf(stderr, "stylora train: interrupted at step %lld; checkpoint saved (%s), continue with --resume\n",
                (long long)tr.step, c.out);
        sl_trainer_free(&tr);
        sl_config_free(&jc);
        return 130;
    }
    int rc = 0;
    if (st) rc = cli_fail("train", &ctx);
    else if (!a.v[A_QUIET]) {
        struct rusage ru;
        getrusage(RUSAGE_SELF, &ru);
        const double peak = (double)ru.ru_maxrss * 1024.0; /* (KiB on Linux) */
        SlMemPlan after;
        sl_trainer_mem_plan(&tr, &after);
        if (plan.predicted_peak > 0)
            fprintf(stderr, "memory: measured peak RSS %.0f MiB; predicted %.0f MiB before loading (%.2fx), %.0f MiB "
                    "from the loaded arenas\n", peak / MIB, plan.predicted_peak / MIB, plan.predicted_peak / peak,
                    after.predicted_peak / MIB);
        else
            fprintf(stderr, "memory: measured peak RSS %.0f MiB; predicted %.0f MiB from the loaded arenas\n", peak / MIB,
                    after.predicted_peak / MIB);
        printf("%s\n", c.out);
        if (want_report) fprintf(stderr, "stylora train: report: %s\n", report);
    }
    sl_trainer_free(&tr);
    sl_config_free(&jc);
    return rc;
}
