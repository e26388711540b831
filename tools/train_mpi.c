/* train_mpi.c - `stylora train` under mpirun: data-parallel training (issue 13).
 * Compiles to nothing without SL_WITH_MPI (-DSL_MPI=ON).
 *
 *   mpirun -np N stylora train --model M --data D --out A.safetensors --batch B ...
 *
 * Every rank loads the base model and the data and runs the trainer with
 * rank/world set: rank r takes slots r*B.. of each global batch of N*B, and the
 * gradients are summed by the all-reduce in the trainer's reduce_grads slot
 * (dist.h: rank-order sum by default, STYLORA_ALLREDUCE=sum for MPI_SUM). All
 * ranks apply the same AdamW step to the same weights, so they stay identical,
 * and the adapter is the same bytes as one process's with --batch N*B
 * --micro-batch B (docs/DISTRIBUTED.md).
 *
 * Caches: with --cache-dir every rank encodes its share of the images and
 * captions into the folder, then all read it (the encoders run once, split N
 * ways). Without a cache folder every rank encodes every image itself.
 * --batch is per rank; the state file records the global batch, so --resume
 * works with any rank count that keeps it (2 x 1 resumes as 1 x 2).
 *
 * Only rank 0 writes: the adapter and <out>.state (atomically), the CSV log,
 * the loss curve, sample images, the progress bar. The loss logged is the
 * global batch's mean (the ranks' shares summed). Stopping (Ctrl-C / SIGTERM
 * on any rank) is agreed after each step, so the checkpoint is taken by all.
 *
 * Errors: an error a rank hits alone (before the all-reduce, e.g. a NaN loss)
 * is printed with the rank and ends the job with MPI_Abort; an error after the
 * all-reduce is the same on every rank and rank 0 reports it; a failed save or
 * sample on rank 0 is agreed and every rank exits 1. The last checkpoint is
 * kept in every case (files are replaced atomically). A rank that dies is seen
 * by mpirun, which stops the job naming the rank ("mpirun noticed that process
 * rank 1 ... exited on signal 9").
 */
#include "train_mpi.h"

#ifdef SL_WITH_MPI
#include <errno.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "core/progress.h"
#include "pipeline/data.h"
#include "pipeline/plot.h"

static volatile sig_atomic_t g_mpi_stop = 0;
static void on_signal(int sig) {
    (void)sig;
    g_mpi_stop = 1;
}

static void rank_error(const SlDist *d, const SlCtx *ctx, const char *tail) {
    fprintf(stderr, "stylora train: rank %d of %d: error: %s%s\n", d->rank, d->world, ctx->msg, tail);
}

/* Collective: each rank gives a flag (0 fine; higher = worse, e.g. 1 "stopped
 * because another rank failed", 2 "failed"); returns the lowest rank with the
 * highest flag, or -1 if every flag is 0. A broken communicator here leaves
 * nothing to agree with: abort the job. */
static int first_failed(SlDist *d, int flag) {
    uint64_t all[4096];
    SlCtx c;
    sl_ctx_init(&c);
    if (d->world > 4096 || sl_dist_gather_u64(d, (uint64_t)flag, all, &c) != SL_OK) {
        if (d->world > 4096) sl_fail(&c, SL_ERR_UNSUPPORTED, "more than 4096 ranks");
        rank_error(d, &c, "; stopping the job");
        sl_dist_abort(d, 1);
    }
    int best = -1;
    uint64_t top = 0;
    for (int r = 0; r < d->world; r++)
        if (all[r] > top) { top = all[r]; best = r; }
    return best;
}

/* The trainer's cache_sync: a barrier that also tells whether a rank failed. */
typedef struct CacheSync { SlDist *d; int calls; } CacheSync;
static int cache_sync(void *user) {
    CacheSync *s = user;
    s->calls++;
    return first_failed(s->d, 0) >= 0;
}

/* A fingerprint of what must be equal on every rank: weights, step, samples. */
static uint64_t trainer_fingerprint(const SlTrainer *tr) {
    uint64_t h = SL_FNV1A64_OFFSET;
    for (int i = 0; i < tr->n_params; i++) h = sl_hash_bytes(tr->params[i].w, (size_t)tr->params[i].n * sizeof(float), h);
    h = sl_hash_bytes(&tr->step, sizeof tr->step, h);
    h = sl_hash_bytes(&tr->n_samples, sizeof tr->n_samples, h);
    return h;
}

/* ---- sl_trainer_run hooks (user = MpiRun) ---- */

typedef struct MpiRun {
    SlDist *d;
    SlProgress *bar;          /* rank 0's */
    int64_t n_reduce;         /* all-reduces done before the current step */
} MpiRun;

static void mpi_reduce_grads(void *user, float *buf, size_t n) { sl_dist_reduce_grads(((MpiRun *)user)->d, buf, n); }

static int mpi_stop_requested(void *user) {
    (void)user;
    return g_mpi_stop != 0;
}

/* Every rank: the global batch's loss for the log, and whether any rank asked to stop. */
static int mpi_step_done(void *user, SlTrainer *tr, int stop) {
    MpiRun *r = user;
    SlCtx ctx;
    sl_ctx_init(&ctx);
    double v[2] = {tr->loss_share, stop ? 1.0 : 0.0};
    if (sl_dist_sum_f64(r->d, v, 2, &ctx) != SL_OK) {
        rank_error(r->d, &ctx, "");
        sl_dist_abort(r->d, 1);
    }
    tr->loss = (float)v[0];
    r->n_reduce = r->d->n_reduce;
    return v[1] > 0;
}

/* A step failed. Before (or inside) the all-reduce this rank is alone and the
 * others wait in it: end the job. After it every rank has the same error. */
static void mpi_step_failed(void *user, SlTrainer *tr, SlCtx *ctx) {
    MpiRun *r = user;
    (void)tr;
    if (r->d->failed || r->d->n_reduce == r->n_reduce) {
        if (r->d->failed) sl_dist_check(r->d, ctx);
        rank_error(r->d, ctx, "; stopping every rank (the last checkpoint is kept)");
        sl_dist_abort(r->d, 1);
    }
}

static int mpi_agree(void *user, int failed) { return first_failed(((MpiRun *)user)->d, failed) >= 0; }

static void mpi_progress(void *user, const SlTrainer *tr, double loss_ema) {
    char extra[96];
    snprintf(extra, sizeof extra, "loss %.4f lr %.2e", loss_ema, tr->lr);
    sl_progress_update(((MpiRun *)user)->bar, tr->step, extra);
}

int train_mpi_run(SlTrainConfig *c, int quiet, const char *report, const char *cmdline) {
    SlCtx ctx;
    cli_ctx_init(&ctx, quiet);
    SlDistReduce mode = SL_DIST_ORDERED;
    const char *ms = getenv("STYLORA_ALLREDUCE");
    if (ms && strcmp(ms, "sum") == 0) mode = SL_DIST_MPI_SUM;
    else if (ms && strcmp(ms, "ordered") != 0) {
        fprintf(stderr, "stylora train: error: STYLORA_ALLREDUCE is 'ordered' (default) or 'sum', got '%s'\n", ms);
        return 2;
    }
    SlDist d;
    if (sl_dist_init(&d, mode, &ctx) != SL_OK) return cli_fail("train", &ctx);
    if (d.rank != 0) ctx.log_level = SL_LOG_ERROR; /* rank 0 tells the story once */
    c->progress = d.rank == 0 && !quiet ? stderr : NULL;

    /* set-up on every rank at once; with a cache folder the encoding is split across the ranks */
    SlTrainer tr;
    memset(&tr, 0, sizeof tr);
    int rc = 0, failed = 0, bad;
    CacheSync sync = {&d, 0};
    c->dp_rank = d.rank;
    c->dp_world = d.world;
    if (c->cache_dir && d.world > 1) {
        c->cache_sync = cache_sync;
        c->cache_user = &sync;
    }
    SlStatus ist = sl_trainer_init(&tr, c, &ctx);
    const int flag = ist == SL_OK ? 0 : ist == SL_ERR_INTERRUPTED ? 1 : 2;
    /* a rank that failed before a cache_sync still joins it, so the collectives pair up */
    while (c->cache_sync && sync.calls < 2) {
        sync.calls++;
        first_failed(&d, flag);
    }
    if ((bad = first_failed(&d, flag)) >= 0) { /* the same error on every rank is printed once */
        if (d.rank == bad) rank_error(&d, &ctx, "");
        rc = 1;
        goto done;
    }
    { /* every rank must start from the same weights, step and samples */
        uint64_t all[4096];
        const uint64_t mine = trainer_fingerprint(&tr);
        if (d.world > 4096 || sl_dist_gather_u64(&d, mine, all, &ctx) != SL_OK) {
            rank_error(&d, &ctx, "");
            sl_dist_abort(&d, 1);
        }
        failed = mine != all[0];
        if (failed)
            sl_fail(&ctx, SL_ERR_ARG, "this rank starts from other weights, step or images than rank 0 (the base model, "
                                      "data folder or %s.state differ between the machines)", c->out);
        if ((bad = first_failed(&d, failed)) >= 0) {
            if (d.rank == bad) rank_error(&d, &ctx, "");
            rc = 1;
            goto done;
        }
    }
    size_t pb, gb, ob;
    sl_trainer_memory(&tr, &pb, &gb, &ob);
    sl_log(&ctx, SL_LOG_INFO, "data-parallel: %d ranks x batch %lld = global batch %lld; gradient all-reduce of %.2f MB per step (%s)",
           d.world, (long long)c->batch, (long long)c->batch * d.world, tr.n_fused * 4 / 1e6,
           mode == SL_DIST_ORDERED ? "all-gather + rank-order sum" : "MPI_Allreduce SUM");

    signal(SIGINT, on_signal);
    signal(SIGTERM, on_signal);
    SlProgress bar;
    sl_progress_begin(&bar, "train", c->steps, stderr, quiet || d.rank != 0);
    MpiRun run = {&d, &bar, d.n_reduce};
    SlTrainHooks hooks = {.user = &run, .silent = d.rank != 0, .reduce_grads = mpi_reduce_grads,
                          .stop_requested = mpi_stop_requested, .step_done = mpi_step_done,
                          .step_failed = mpi_step_failed, .agree = mpi_agree, .progress = mpi_progress,
                          .report_path = report, .cmdline = cmdline};
    const double r0 = d.reduce_seconds;
    SlTrainRunResult res;
    SlStatus st = sl_trainer_run(&tr, &hooks, &res, &ctx);
    sl_progress_end(&bar);
    if (st) { /* the same error on every rank (or the writer's alone): rank 0 reports it */
        if (d.rank == 0) cli_fail("train", &ctx);
        rc = 1;
    } else if (res.stopped) {
        if (d.rank == 0)
            fprintf(stderr, "stylora train: interrupted at step %lld; checkpoint saved (%s), continue with --resume\n",
                    (long long)tr.step, c->out);
        rc = 130;
    } else if (tr.step > res.first_step) {
        const double n = (double)(tr.step - res.first_step), red = (d.reduce_seconds - r0) / n, per = res.step_seconds / n;
        sl_log(&ctx, SL_LOG_INFO, "data-parallel: %d ranks, %.1f ms per step, all-reduce %.2f ms per step (%.1f%%), "
                                  "%.2f images/s",
               d.world, 1e3 * per, 1e3 * red, per > 0 ? 100 * red / per : 0, (double)c->batch * d.world / per);
        if (d.rank == 0 && !quiet) {
            printf("%s\n", c->out);
            if (report) fprintf(stderr, "stylora train: report: %s\n", report);
        }
    }
done:
    sl_trainer_free(&tr);
    sl_dist_finalize(&d);
    return rc;
}
#endif /* SL_WITH_MPI */
