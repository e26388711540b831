/* test_dist.c - data-parallel training without MPI (issue 13): trainers in
 * threads, rank r of world 2, whose reduce_grads slot is the rank-order sum of
 * dist.h (what the MPI build does after its all-gather), against one trainer:
 *   - 2 ranks x batch 1 == 1 process x batch 2 with micro-batch 1, byte for byte:
 *     the reduced gradients and the weights after every step, the loss, the
 *     adapter file (the trainer sums its micro-batches' gradients in order in
 *     double, rounded once: the same sum as the ranks' all-reduce);
 *   - the same for 2 ranks x batch 2 == 1 x batch 4 micro-batch 2, and for
 *     2 ranks x batch 1 x grad-accum 2 == 1 x batch 2 micro-batch 1 x grad-accum 2;
 *   - a micro-batched run is the same bytes with 1 and 2 threads;
 *   - with --buckets (images of three aspect ratios) 2 ranks x batch 1 == 1 x batch 2
 *     micro-batch 1, byte for byte: every global batch comes from one bucket;
 *   - without micro-batching, one process with batch 2 is NOT bitwise equal (its
 *     GEMMs sum the two images' weight gradients inside the reduction over the
 *     batch rows): step-1 gradients within SL_DIST_GTOL of each tensor's max,
 *     the adapter after SIM_STEPS AdamW steps within SL_DIST_WTOL;
 *   - the ranks hold the same weight bytes after every step, and two simulated
 *     runs are the same bytes;
 *   - two independent trainers on two pthreads at once, one on the default kernels
 *     and one on the portable ones (SlTrainConfig.kernels), each write the adapter
 *     their configuration writes alone (different ones on an AVX-512 CPU).
 *
 * The same program is the helper of tests/cli_mpi.sh and bench/bench_mpi.sh:
 *   test_dist --fixture DIR         DIR/model (tiny SD with a tokenizer), DIR/data (4 images)
 *   test_dist --compare A B RTOL    per-tensor max|a-b| / max|b| <= RTOL (RTOL 0: same bytes)
 */
#include <math.h>
#include <omp.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "core/rng.h"
#include "core/safetensors.h"
#include "fixture_tiny.h"
#include "pipeline/dist.h"
#include "pipeline/train.h"
#include "test_util.h"

/* Tolerances for the run WITHOUT micro-batching (one GEMM over both images),
 * per tensor, relative to the tensor's max |value| (measured on this fixture:
 * gradients of step 1 1.7e-6, weights after 4 steps 1.6e-4).
 * Gradients: float sums over batch x tokens in another order (bound ~ K eps
 * times the cancellation). Weights: AdamW divides each element by its own
 * sqrt(v), so an element whose gradient is near 0 turns an absolute gradient
 * difference of 1e-6 x max into an update difference of up to lr: the weights
 * cannot agree to 1e-6 of their max, whatever the reduction. */
#define SL_DIST_GTOL 1e-5
#define SL_DIST_WTOL 1e-3
#define SIM_WORLD 2
#define SIM_STEPS 4

static char g_root[2048], g_model[2200], g_data[2200];
static char g_data_bk[2200]; /* images of three aspect ratios, for --buckets */
static int g_buckets;        /* config(): train with buckets on g_data_bk */

static int make_fixture(const char *root) {
    char m[2200], d[2200];
    mkdir(root, 0755);
    snprintf(m, sizeof m, "%s/model", root);
    snprintf(d, sizeof d, "%s/data", root);
    return fixture_tiny_model(m, sl_test_shared()) && fixture_images(d, 4, 40);
}

/* Compares every tensor of a and b (same names, shapes); returns the largest
 * per-tensor max|a-b| / max|b| in *worst, or -1 if the files do not match up. */
static int compare_files(const char *a, const char *b, double rtol, double *worst, int verbose) {
    SlCtx ctx;
    sl_ctx_init(&ctx);
    SlStFile fa, fb;
    if (sl_st_open(&fa, a, &ctx) != SL_OK) { fprintf(stderr, "%s\n", ctx.msg); return -1; }
    if (sl_st_open(&fb, b, &ctx) != SL_OK) { fprintf(stderr, "%s\n", ctx.msg); sl_st_close(&fa); return -1; }
    int ok = fa.n == fb.n, bitwise = 1;
    *worst = 0;
    const char *worst_name = "";
    for (int i = 0; i < fa.n && ok; i++) {
        const SlStEntry *ea = &fa.entries[i], *eb = sl_st_find(&fb, ea->name);
        if (!eb || eb->nbytes != ea->nbytes || eb->dtype != ea->dtype) { ok = 0; break; }
        if (memcmp(sl_st_data(&fa, ea), sl_st_data(&fb, eb), ea->nbytes) != 0) bitwise = 0;
        const size_t n = (size_t)sl_shape_numel(ea->ndim, ea->shape);
        float *x = malloc(n * sizeof(float) + 1), *y = malloc(n * sizeof(float) + 1);
        ok = x && y && sl_st_read_f32(&fa, ea, x, &ctx) == SL_OK && sl_st_read_f32(&fb, eb, y, &ctx) == SL_OK;
        double dmax = 0, ymax = 0;
        for (size_t k = 0; ok && k < n; k++) {
            double dd = fabs((double)x[k] - y[k]);
            if (!(dd <= dmax)) dmax = dd; /* NaN counts as the worst */
            if (fabs(y[k]) > ymax) ymax = fabs(y[k]);
        }
        const double rel = dmax / (ymax > 0 ? ymax : 1);
        if (!(rel <= *worst)) { *worst = rel; worst_name = ea->name; }
        free(x);
        free(y);
    }
    if (verbose && ok)
        printf("compare: %d tensors, %s; worst per-tensor max|a-b|/max|b| = %.3g (%s)\n", fa.n,
               bitwise ? "bitwise identical" : "not bitwise identical", *worst, worst_name);
    sl_st_close(&fa);
    sl_st_close(&fb);
    if (!ok) return -1;
    return rtol == 0 ? bitwise : *worst <= rtol;
}

/* ---- simulated ranks: threads + a barrier instead of MPI ---- */

/* What a run records, in the fused layout of the trainable parameters. */
typedef struct Rec {
    size_t n;         /* floats per step */
    float *grads;     /* [SIM_STEPS, n] gradients after the reduction slot */
    float *weights;   /* [SIM_STEPS, n] trainable weights after every step */
    double loss[SIM_STEPS];
    int n_grads;
} Rec;

/* the per-tensor layout (sizes in the fused order), from the first trainer */
static int g_np;
static int64_t g_len[4096];

static int rec_alloc(Rec *r, size_t n) {
    memset(r, 0, sizeof *r);
    r->n = n;
    r->grads = calloc(SIM_STEPS * n, sizeof(float));
    r->weights = calloc(SIM_STEPS * n, sizeof(float));
    return r->grads && r->weights;
}
static void rec_free(Rec *r) { free(r->grads); free(r->weights); }

typedef struct Sim {
    pthread_barrier_t bar;
    float *staging;   /* [SIM_WORLD, n] every rank's gradients (what MPI_Allgather gives) */
    size_t n;
} Sim;

typedef struct Rank {
    Sim *sim;
    int rank;
    Rec *rec;         /* rank 0 records */
    SlTrainer tr;
    SlStatus st;
    char msg[SL_MSG_MAX];
    double loss[SIM_STEPS];
} Rank;

static void sim_reduce(void *user, float *buf, size_t n) {
    Rank *r = user;
    Sim *s = r->sim;
    memcpy(s->staging + (size_t)r->rank * n, buf, n * sizeof(float));
    pthread_barrier_wait(&s->bar);
    sl_dist_sum_ranks(buf, s->staging, SIM_WORLD, n, n);
    if (r->rec && r->rec->n_grads < SIM_STEPS) memcpy(r->rec->grads + (size_t)r->rec->n_grads++ * n, buf, n * sizeof(float));
    pthread_barrier_wait(&s->bar); /* nobody overwrites staging before all have summed */
}

/* dst[n_fused] = every trainable weight, in the order of the fused gradient buffer */
static void fuse_weights(float *dst, const SlTrainer *tr) {
    size_t o = 0;
    for (int i = 0; i < tr->n_params; i++) {
        memcpy(dst + o, tr->params[i].w, (size_t)tr->params[i].n * sizeof(float));
        o += (size_t)tr->params[i].n;
    }
}

/* dst[n_fused] = every trainable gradient, in the fused order */
static void fuse_grads(float *dst, const SlTrainer *tr) {
    size_t o = 0;
    for (int i = 0; i < tr->n_params; i++) {
        memcpy(dst + o, tr->params[i].g, (size_t)tr->params[i].n * sizeof(float));
        o += (size_t)tr->params[i].n;
    }
}

/* The worst per-tensor max|a-b| / max|b| over the fused layout. */
static double worst_rel(const float *a, const float *b) {
    double worst = 0;
    size_t o = 0;
    for (int i = 0; i < g_np; i++) {
        double dmax = 0, bmax = 0;
        for (int64_t k = 0; k < g_len[i]; k++) {
            double d = fabs((double)a[o + k] - b[o + k]);
            if (!(d <= dmax)) dmax = d;
            if (fabs(b[o + k]) > bmax) bmax = fabs(b[o + k]);
        }
        double rel = bmax > 0 ? dmax / bmax : dmax;
        if (!(rel <= worst)) worst = rel;
        o += (size_t)g_len[i];
    }
    return worst;
}

/* world-1 slot that only records the gradients (the single-process reference) */
static void capture_grads(void *user, float *buf, size_t n) {
    Rec *c = user;
    if (c->n_grads < SIM_STEPS) memcpy(c->grads + (size_t)c->n_grads++ * n, buf, n * sizeof(float));
}

static void *rank_main(void *arg) {
    Rank *r = arg;
    SlCtx ctx;
    sl_ctx_init(&ctx);
    omp_set_num_threads(1);
    for (int k = 0; k < SIM_STEPS && !r->st; k++) {
        r->st = sl_trainer_step(&r->tr, &ctx);
        r->loss[k] = r->tr.loss_share;
        if (r->rec) fuse_weights(r->rec->weights + (size_t)k * r->tr.n_fused, &r->tr);
    }
    if (!r->st) r->st = sl_trainer_save(&r->tr, &ctx); /* both write their own file */
    if (r->st) snprintf(r->msg, sizeof r->msg, "%s", ctx.msg);
    return NULL;
}

static void config(SlTrainConfig *c, const char *out, int64_t batch, int64_t micro, int64_t accum) {
    sl_train_config_default(c);
    c->model = g_model;
    c->data = g_data;
    c->out = out;
    c->resolution = 32;
    c->rank = 4;
    c->alpha = 8;
    c->batch = batch;
    c->micro_batch = micro;
    c->grad_accum = accum;
    c->steps = SIM_STEPS;
    c->lr = 1e-2f;
    c->seed = 11;
    c->flip = 1;
    c->caption_dropout = 0.25f;
    if (g_buckets) {
        c->buckets = 1;
        c->data = g_data_bk;
        c->resolution = 48; /* buckets 64x32, 32x64, 48x48 for these images */
    }
}

/* One process (threads: 0 = as set); records into rec (allocated here). */
static int run_one(const char *out, int64_t batch, int64_t micro, int64_t accum, int threads, Rec *rec) {
    SlCtx ctx;
    sl_ctx_init(&ctx);
    SlTrainConfig c;
    config(&c, out, batch, micro, accum);
    SlTrainer tr;
    const int saved = omp_get_max_threads();
    if (threads) omp_set_num_threads(threads);
    SlStatus st = sl_trainer_init(&tr, &c, &ctx);
    if (!st && !rec_alloc(rec, tr.n_fused)) st = sl_fail(&ctx, SL_ERR_NOMEM, "out of memory");
    if (!st && !g_np) {
        g_np = tr.n_params < 4096 ? tr.n_params : 4096;
        for (int i = 0; i < g_np; i++) g_len[i] = tr.params[i].n;
    }
    tr.reduce_grads = capture_grads;
    tr.reduce_user = rec;
    for (int k = 0; k < SIM_STEPS && !st; k++) {
        st = sl_trainer_step(&tr, &ctx);
        rec->loss[k] = tr.loss_share;
        fuse_weights(rec->weights + (size_t)k * rec->n, &tr);
    }
    if (!st) st = sl_trainer_save(&tr, &ctx);
    CHECK(st == SL_OK, "1 process x batch %lld (micro-batch %lld, accum %lld): %s", (long long)batch, (long long)micro,
          (long long)accum, ctx.msg);
    sl_trainer_free(&tr);
    omp_set_num_threads(saved);
    return st == SL_OK;
}

/* SIM_WORLD ranks x batch (x accum); rank 0's adapter goes to out0 and it records into rec. */
static int run_sim(const char *out0, int64_t batch, int64_t accum, Rec *rec) {
    SlCtx ctx;
    sl_ctx_init(&ctx);
    Sim sim;
    Rank rk[SIM_WORLD];
    memset(rk, 0, sizeof rk);
    pthread_barrier_init(&sim.bar, NULL, SIM_WORLD);
    int ok = 1;
    static char outs[SIM_WORLD][4200]; /* the trainer keeps the path pointer: it must outlive it */
    for (int r = 0; r < SIM_WORLD; r++) { /* set up one after the other (the main thread) */
        snprintf(outs[r], sizeof outs[r], "%s%s", out0, r ? ".rank1.safetensors" : "");
        SlTrainConfig c;
        config(&c, outs[r], batch, 0, accum);
        rk[r].sim = &sim;
        rk[r].rank = r;
        SlStatus st = sl_trainer_init(&rk[r].tr, &c, &ctx);
        CHECK(st == SL_OK, "sim init rank %d: %s", r, ctx.msg);
        ok = ok && st == SL_OK;
        rk[r].tr.rank = r;
        rk[r].tr.world = SIM_WORLD;
        rk[r].tr.reduce_grads = sim_reduce;
        rk[r].tr.reduce_user = &rk[r];
    }
    sim.n = rk[0].tr.n_fused;
    sim.staging = malloc(SIM_WORLD * sim.n * sizeof(float));
    ok = ok && sim.staging && rec_alloc(rec, sim.n);
    rk[0].rec = rec;
    if (ok) {
        pthread_t th[SIM_WORLD];
        for (int r = 0; r < SIM_WORLD; r++) pthread_create(&th[r], NULL, rank_main, &rk[r]);
        for (int r = 0; r < SIM_WORLD; r++) pthread_join(th[r], NULL);
        for (int r = 0; r < SIM_WORLD; r++) {
            CHECK(rk[r].st == SL_OK, "sim rank %d: %s", r, rk[r].msg);
            ok = ok && rk[r].st == SL_OK;
        }
        for (int k = 0; k < SIM_STEPS; k++) { /* the rank-order sum of tools/train_mpi.c */
            rec->loss[k] = 0;
            for (int r = 0; r < SIM_WORLD; r++) rec->loss[k] += rk[r].loss[k];
        }
        /* every rank holds the same weights after every step */
        for (int i = 0; ok && i < rk[0].tr.n_params; i++)
            CHECK(memcmp(rk[0].tr.params[i].w, rk[1].tr.params[i].w, (size_t)rk[0].tr.params[i].n * sizeof(float)) == 0,
                  "ranks disagree on the weights of %s", rk[0].tr.params[i].name);
    }
    free(sim.staging);
    for (int r = 0; r < SIM_WORLD; r++) sl_trainer_free(&rk[r].tr);
    pthread_barrier_destroy(&sim.bar);
    return ok;
}

/* Prints the per-step differences of a (ranks) and b (one process); with exact,
 * CHECKs that gradients, weights and losses are the same bytes at every step. */
static void compare_recs(const char *what, const Rec *a, const Rec *b, int exact) {
    for (int k = 0; k < SIM_STEPS; k++) {
        const float *ga = a->grads + (size_t)k * a->n, *gb = b->grads + (size_t)k * b->n;
        const float *wa = a->weights + (size_t)k * a->n, *wb = b->weights + (size_t)k * b->n;
        const int same_g = memcmp(ga, gb, a->n * sizeof(float)) == 0, same_w = memcmp(wa, wb, a->n * sizeof(float)) == 0;
        printf("%s, step %d: gradients %s (worst per-tensor rel. %.3g), weights %s (%.3g); loss %.17g vs %.17g\n", what,
               k + 1, same_g ? "same bytes" : "differ", worst_rel(ga, gb), same_w ? "same bytes" : "differ",
               worst_rel(wa, wb), a->loss[k], b->loss[k]);
        if (exact)
            CHECK(same_g && same_w && a->loss[k] == b->loss[k], "%s, step %d: not byte-identical (gradients %.3g, weights %.3g, "
                  "loss %.17g vs %.17g)", what, k + 1, worst_rel(ga, gb), worst_rel(wa, wb), a->loss[k], b->loss[k]);
    }
}

static void test_sum_ranks(void) {
    /* rank order, in double: 1e8 + 1 - 1e8 is 1 in double (0 in float left to right) */
    float parts[3] = {1e8f, 1.0f, -1e8f}, out[1];
    sl_dist_sum_ranks(out, parts, 3, 1, 1);
    CHECK(out[0] == 1.0f, "rank-order sum in double: got %g", out[0]);
}

static void path(char *buf, size_t n, const char *name) { snprintf(buf, n, "%s/%s.safetensors", g_root, name); }

/* Measurement (printed, not asserted: the trainer's exactness does not rely on
 * it): is one image's U-Net forward the same bytes alone and in a batch of 2,
 * and are the adapter gradients of a batch of 2 the sum of the two images'? */
static void diag_batch_independence(void) {
    SlCtx ctx;
    sl_ctx_init(&ctx);
    char out[2200];
    path(out, sizeof out, "diag");
    SlTrainConfig c;
    config(&c, out, 2, 0, 1);
    SlTrainer tr;
    SlStatus st = sl_trainer_init(&tr, &c, &ctx);
    CHECK(st == SL_OK, "diag init: %s", ctx.msg);
    SlUNet *u = &tr.model.unet;
    const size_t nl = (size_t)(tr.C * tr.h * tr.w), nt = (size_t)(tr.T * tr.D), n = tr.n_fused;
    float *x = malloc(2 * nl * sizeof(float)), *e = malloc(2 * nt * sizeof(float)), *d = malloc(2 * nl * sizeof(float));
    float *y2 = malloc(2 * nl * sizeof(float)), *y1 = malloc(2 * nl * sizeof(float));
    float *g2 = malloc(n * sizeof(float)), *g1 = malloc(2 * n * sizeof(float)), *sum = malloc(n * sizeof(float));
    float t[2] = {100.0f, 700.0f};
    if (!st && x && e && d && y2 && y1 && g2 && g1 && sum) {
        sl_rng_normal(x, (int64_t)(2 * nl), 5, 1, 0);
        sl_rng_normal(e, (int64_t)(2 * nt), 5, 2, 0);
        sl_rng_normal(d, (int64_t)(2 * nl), 5, 3, 0);
        st = sl_unet_plan(u, 2, tr.h, tr.w, tr.T, &ctx);
        sl_adapter_zero_grads(&tr.adapter);
        if (!st) { sl_unet_forward(u, y2, x, t, e); sl_unet_backward(u, NULL, d); }
        fuse_grads(g2, &tr);
        if (!st) st = sl_unet_plan(u, 1, tr.h, tr.w, tr.T, &ctx);
        for (int b = 0; b < 2 && !st; b++) {
            sl_adapter_zero_grads(&tr.adapter);
            sl_unet_forward(u, y1 + b * nl, x + b * nl, t + b, e + b * nt);
            sl_unet_backward(u, NULL, d + b * nl);
            fuse_grads(g1 + b * n, &tr);
        }
        sl_dist_sum_ranks(sum, g1, 2, n, n);
        double dy = 0, ym = 0;
        for (size_t i = 0; i < 2 * nl; i++) {
            if (fabs((double)y1[i] - y2[i]) > dy) dy = fabs((double)y1[i] - y2[i]);
            if (fabs(y2[i]) > ym) ym = fabs(y2[i]);
        }
        printf("measure: U-Net forward of each image alone vs in a batch of 2: %s (max|diff|/max|y| %.3g); "
               "adapter gradients of the batch vs the sum of the two: %s (worst per-tensor rel. %.3g)\n",
               memcmp(y1, y2, 2 * nl * sizeof(float)) ? "differ" : "same bytes", dy / (ym > 0 ? ym : 1),
               memcmp(g2, sum, n * sizeof(float)) ? "differ" : "same bytes", worst_rel(g2, sum));
    }
    CHECK(st == SL_OK, "diag: %s", ctx.msg);
    free(x); free(e); free(d); free(y2); free(y1); free(g2); free(g1); free(sum);
    sl_trainer_free(&tr);
}

/* 2 ranks x batch 1 against 1 process x batch 2, with and without micro-batch 1 */
static void test_two_ranks_batch1(void) {
    char sa[2200], sb[2200], one[2200], mb1[2200], mb1t1[2200];
    path(sa, sizeof sa, "sim_a"); path(sb, sizeof sb, "sim_b");
    path(one, sizeof one, "one_b2"); path(mb1, sizeof mb1, "one_b2_mb1"); path(mb1t1, sizeof mb1t1, "one_b2_mb1_t1");
    Rec ra, rb, r1, rm, rt;
    if (!run_sim(sa, 1, 1, &ra) || !run_one(mb1, 2, 1, 1, 0, &rm) || !run_one(one, 2, 0, 1, 0, &r1) ||
        !run_sim(sb, 1, 1, &rb) || !run_one(mb1t1, 2, 1, 1, 1, &rt))
        goto out;
    double worst = 0;
    /* the micro-batched process is the ranks, byte for byte */
    compare_recs("2 ranks x 1 vs 1 x 2 micro-batch 1", &ra, &rm, 1);
    CHECK(compare_files(sa, mb1, 0, &worst, 1) == 1, "2 ranks x 1 vs 1 x 2 micro-batch 1: adapters differ (%.3g)", worst);
    CHECK(compare_files(mb1t1, mb1, 0, &worst, 1) == 1, "micro-batch 1 with 1 and 2 threads: adapters differ (%.3g)", worst);
    CHECK(compare_files(sa, sb, 0, &worst, 1) == 1, "2 simulated ranks are not bitwise reproducible (worst %.3g)", worst);
    /* one GEMM over both images: close, not the same bytes */
    compare_recs("2 ranks x 1 vs 1 x 2 (no micro-batch)", &ra, &r1, 0);
    const double rg = worst_rel(ra.grads, r1.grads);
    CHECK(rg <= SL_DIST_GTOL, "step 1 gradients differ by %.3g > %g", rg, SL_DIST_GTOL);
    for (int k = 0; k < SIM_STEPS; k++)
        CHECK(fabs(ra.loss[k] - r1.loss[k]) <= 1e-6 * fabs(r1.loss[k]), "step %d loss: ranks %.9g, one process %.9g",
              k + 1, ra.loss[k], r1.loss[k]);
    int r = compare_files(sa, one, SL_DIST_WTOL, &worst, 1);
    CHECK(r == 1, "2 ranks x batch 1 vs 1 process x batch 2 after %d steps: worst per-tensor relative difference "
                  "%.3g > %g", SIM_STEPS, worst, SL_DIST_WTOL);
out:
    rec_free(&ra); rec_free(&rb); rec_free(&r1); rec_free(&rm); rec_free(&rt);
}

/* 2 ranks x batch 2 == 1 x batch 4 micro-batch 2; 2 ranks x 1 x accum 2 == 1 x 2 micro 1 x accum 2 */
static void test_two_ranks_more(void) {
    char sa[2200], one[2200], sc[2200], onec[2200];
    path(sa, sizeof sa, "sim_b2"); path(one, sizeof one, "one_b4_mb2");
    path(sc, sizeof sc, "sim_b1_acc2"); path(onec, sizeof onec, "one_b2_mb1_acc2");
    Rec ra, r1, rc, r2;
    double worst = 0;
    if (run_sim(sa, 2, 1, &ra) && run_one(one, 4, 2, 1, 0, &r1)) {
        compare_recs("2 ranks x 2 vs 1 x 4 micro-batch 2", &ra, &r1, 1);
        CHECK(compare_files(sa, one, 0, &worst, 1) == 1, "2 ranks x 2 vs 1 x 4 micro-batch 2: adapters differ (%.3g)", worst);
    }
    if (run_sim(sc, 1, 2, &rc) && run_one(onec, 2, 1, 2, 0, &r2)) {
        compare_recs("2 ranks x 1 x accum 2 vs 1 x 2 micro-batch 1 x accum 2", &rc, &r2, 1);
        CHECK(compare_files(sc, onec, 0, &worst, 1) == 1, "grad-accum 2: adapters differ (%.3g)", worst);
    }
    rec_free(&ra); rec_free(&r1); rec_free(&rc); rec_free(&r2);
}

/* --buckets: 2 ranks x 1 == 1 x 2 micro-batch 1; the 1-image bucket's batch wraps to its start */
static void test_two_ranks_buckets(void) {
    char sa[2200], mb1[2200];
    path(sa, sizeof sa, "sim_buckets"); path(mb1, sizeof mb1, "one_b2_mb1_buckets");
    Rec ra, rm;
    double worst = 0;
    g_buckets = 1;
    if (run_sim(sa, 1, 1, &ra) && run_one(mb1, 2, 1, 1, 0, &rm)) {
        compare_recs("buckets: 2 ranks x 1 vs 1 x 2 micro-batch 1", &ra, &rm, 1);
        CHECK(compare_files(sa, mb1, 0, &worst, 1) == 1, "buckets: 2 ranks x 1 vs 1 x 2 micro-batch 1: adapters differ (%.3g)",
              worst);
    }
    g_buckets = 0;
    rec_free(&ra); rec_free(&rm);
}

/* Two trainers (world 1 each) at once on two pthreads with different kernel configurations:
 * neither's choice reaches the other (nn/kernels.h: no global kernel setting). */
static void test_trainers_own_kernels(void) {
    const SlKernels kc[2] = {{0}, {SL_GEMM_KERNEL_BLAS, SL_CONV_KERNEL_IM2COL, SL_ATT_KERNEL_ROWS}};
    static char alone[2][2200], both[2][2200]; /* the trainer keeps the path pointer */
    SlCtx ctx;
    sl_ctx_init(&ctx);
    for (int i = 0; i < 2; i++) {
        char nm[32];
        snprintf(nm, sizeof nm, "kern%d_alone", i);
        path(alone[i], sizeof alone[i], nm);
        snprintf(nm, sizeof nm, "kern%d_both", i);
        path(both[i], sizeof both[i], nm);
        SlTrainConfig c;
        config(&c, alone[i], 1, 0, 1);
        c.kernels = kc[i];
        Rank one;
        memset(&one, 0, sizeof one);
        one.st = sl_trainer_init(&one.tr, &c, &ctx);
        if (one.st) snprintf(one.msg, sizeof one.msg, "%s", ctx.msg);
        else rank_main(&one);
        CHECK(one.st == SL_OK, "kernels %d alone: %s", i, one.msg);
        sl_trainer_free(&one.tr);
        if (one.st) return;
    }
    Rank rk[2];
    memset(rk, 0, sizeof rk);
    int ok = 1;
    for (int i = 0; i < 2; i++) {
        SlTrainConfig c;
        config(&c, both[i], 1, 0, 1);
        c.kernels = kc[i];
        const SlStatus st = sl_trainer_init(&rk[i].tr, &c, &ctx);
        CHECK(st == SL_OK, "kernels %d beside the other: %s", i, ctx.msg);
        ok = ok && st == SL_OK;
    }
    if (ok) {
        pthread_t th[2];
        for (int i = 0; i < 2; i++) pthread_create(&th[i], NULL, rank_main, &rk[i]);
        for (int i = 0; i < 2; i++) pthread_join(th[i], NULL);
        double worst = 0;
        for (int i = 0; i < 2; i++) {
            CHECK(rk[i].st == SL_OK, "kernels %d beside the other: %s", i, rk[i].msg);
            CHECK(rk[i].st || compare_files(both[i], alone[i], 0, &worst, 1) == 1,
                  "%s kernels: the trainer beside one on the other kernels wrote another adapter (%.3g)",
                  i ? "portable" : "default", worst);
        }
        const SlKernels avx = {SL_GEMM_KERNEL_AVX512, 0, SL_ATT_KERNEL_LANES};
        if (sl_kernels_available(&avx))
            CHECK(compare_files(alone[0], alone[1], 0, &worst, 0) == 0,
                  "default (AVX-512) and portable kernels wrote the same adapter bytes: a leak could not show");
    }
    for (int i = 0; i < 2; i++) sl_trainer_free(&rk[i].tr);
}

int main(int argc, char **argv) {
    if (argc == 3 && strcmp(argv[1], "--fixture") == 0) return make_fixture(argv[2]) ? 0 : 1;
    if (argc == 5 && strcmp(argv[1], "--compare") == 0) {
        double worst;
        int r = compare_files(argv[2], argv[3], atof(argv[4]), &worst, 1);
        return r == 1 ? 0 : 1;
    }
    if (argc != 1) {
        fprintf(stderr, "usage: test_dist [--fixture DIR | --compare A B RTOL]\n");
        return 2;
    }
    snprintf(g_root, sizeof g_root, "%s/tmp_test_dist", sl_test_binary());
    snprintf(g_model, sizeof g_model, "%s/model", g_root);
    snprintf(g_data, sizeof g_data, "%s/data", g_root);
    snprintf(g_data_bk, sizeof g_data_bk, "%s/data_buckets", g_root);
    if (!make_fixture(g_root) || !fixture_image_wh(g_data_bk, "w0", 64, 32, 0) || !fixture_image_wh(g_data_bk, "w1", 100, 50, 1) ||
        !fixture_image_wh(g_data_bk, "t0", 30, 60, 2) || !fixture_image_wh(g_data_bk, "s0", 40, 40, 3) ||
        !fixture_image_wh(g_data_bk, "s1", 56, 52, 4)) {
        fprintf(stderr, "cannot build fixtures in %s\n", g_root);
        return 1;
    }
    test_sum_ranks();
    test_two_ranks_batch1();
    test_two_ranks_more();
    test_two_ranks_buckets();
    test_trainers_own_kernels();
    diag_batch_independence();
    return sl_test_finish("test_dist");
}
