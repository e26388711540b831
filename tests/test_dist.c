/* test_dist.c - data-parallel training without MPI (issue 13): two trainers
 * in two threads, rank 0 and 1 of world 2 with batch 1, whose reduce_grads slot
 * is the rank-order sum of dist.h (what the MPI build does after its
 * all-gather), against one trainer with batch 2:
 *   - the step-1 gradients agree per tensor within SL_DIST_GTOL of the
 *     tensor's max |value|, the losses within 1e-6, the adapters after
 *     SIM_STEPS AdamW steps within SL_DIST_WTOL (not bitwise: see below);
 *   - the ranks hold the same weight bytes after every step;
 *   - two simulated runs are the same bytes (the rank-order sum is fixed).
 * Why not bitwise: one process with batch 2 sums the two samples' weight
 * gradients inside sl_sgemm (the batch rows are part of the GEMM's K, summed in
 * float in OpenBLAS's order), while the ranks each sum their own rows and the
 * all-reduce adds the two partial sums afterwards (in double, rounded once):
 * float addition is not associative, so the last bits differ.
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

#include "core/safetensors.h"
#include "fixture_tiny.h"
#include "pipeline/dist.h"
#include "pipeline/train.h"
#include "test_util.h"

/* Tolerances, per tensor, relative to the tensor's max |value| (measured on
 * this fixture: gradients of step 1 1.7e-6, weights after 4 steps 1.6e-4).
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

typedef struct Sim {
    pthread_barrier_t bar;
    float *staging;   /* [SIM_WORLD, n] every rank's gradients (what MPI_Allgather gives) */
    size_t n;
} Sim;

typedef struct Rank {
    Sim *sim;
    int rank;
    float *grads;     /* [SIM_STEPS, n] reduced gradients of every step (rank 0) */
    float *weights;   /* [SIM_STEPS, n] trainable weights after every step (rank 0) */
    int n_grads;
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
    if (r->grads && r->n_grads < SIM_STEPS) memcpy(r->grads + (size_t)r->n_grads++ * n, buf, n * sizeof(float));
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

/* The worst per-tensor max|a-b| / max|b| over the fused layout of tr's parameters. */
static double worst_rel(const float *a, const float *b, const SlTrainer *tr) {
    double worst = 0;
    size_t o = 0;
    for (int i = 0; i < tr->n_params; i++) {
        double dmax = 0, bmax = 0;
        for (int64_t k = 0; k < tr->params[i].n; k++) {
            double d = fabs((double)a[o + k] - b[o + k]);
            if (!(d <= dmax)) dmax = d;
            if (fabs(b[o + k]) > bmax) bmax = fabs(b[o + k]);
        }
        double rel = bmax > 0 ? dmax / bmax : dmax;
        if (!(rel <= worst)) worst = rel;
        o += (size_t)tr->params[i].n;
    }
    return worst;
}

/* world-1 slot that only records the gradients (the single-process reference) */
typedef struct Capture { float *grads; int n; } Capture;
static void capture_grads(void *user, float *buf, size_t n) {
    Capture *c = user;
    if (c->n < SIM_STEPS) memcpy(c->grads + (size_t)c->n++ * n, buf, n * sizeof(float));
}

static void *rank_main(void *arg) {
    Rank *r = arg;
    SlCtx ctx;
    sl_ctx_init(&ctx);
    omp_set_num_threads(1);
    for (int k = 0; k < SIM_STEPS && !r->st; k++) {
        r->st = sl_trainer_step(&r->tr, &ctx);
        r->loss[k] = r->tr.loss;
        if (r->weights) fuse_weights(r->weights + (size_t)k * r->tr.n_fused, &r->tr);
    }
    if (!r->st) r->st = sl_trainer_save(&r->tr, &ctx); /* both write their own file */
    if (r->st) snprintf(r->msg, sizeof r->msg, "%s", ctx.msg);
    return NULL;
}

static void config(SlTrainConfig *c, const char *out, int64_t batch) {
    sl_train_config_default(c);
    c->model = g_model;
    c->data = g_data;
    c->out = out;
    c->resolution = 32;
    c->rank = 4;
    c->alpha = 8;
    c->batch = batch;
    c->steps = SIM_STEPS;
    c->lr = 1e-2f;
    c->seed = 11;
    c->flip = 1;
    c->caption_dropout = 0.25f;
}

/* SIM_WORLD ranks x batch 1; rank 0's adapter goes to out0. Losses summed into loss[]. */
static int run_sim(const char *out0, double *loss, float *grads, float *weights) {
    SlCtx ctx;
    sl_ctx_init(&ctx);
    Sim sim;
    Rank rk[SIM_WORLD];
    memset(rk, 0, sizeof rk);
    pthread_barrier_init(&sim.bar, NULL, SIM_WORLD);
    int ok = 1;
    static char outs[SIM_WORLD][4200]; /* the trainer keeps the path pointer: it must outlive it */
    for (int r = 0; r < SIM_WORLD; r++) { /* set up one after the other (the main thread) */
        char *out = outs[r];
        snprintf(out, sizeof outs[r], "%s%s", out0, r ? ".rank1.safetensors" : "");
        SlTrainConfig c;
        config(&c, r ? out : out0, 1);
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
    rk[0].grads = grads;
    rk[0].weights = weights;
    sim.n = rk[0].tr.n_fused;
    sim.staging = malloc(SIM_WORLD * sim.n * sizeof(float));
    if (ok && sim.staging) {
        pthread_t th[SIM_WORLD];
        for (int r = 0; r < SIM_WORLD; r++) pthread_create(&th[r], NULL, rank_main, &rk[r]);
        for (int r = 0; r < SIM_WORLD; r++) pthread_join(th[r], NULL);
        for (int r = 0; r < SIM_WORLD; r++) {
            CHECK(rk[r].st == SL_OK, "sim rank %d: %s", r, rk[r].msg);
            ok = ok && rk[r].st == SL_OK;
        }
        for (int k = 0; k < SIM_STEPS; k++) {
            loss[k] = 0;
            for (int r = 0; r < SIM_WORLD; r++) loss[k] += rk[r].loss[k];
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

static void test_sum_ranks(void) {
    /* rank order, in double: 1e8 + 1 - 1e8 is 1 in double (0 in float left to right) */
    float parts[3] = {1e8f, 1.0f, -1e8f}, out[1];
    sl_dist_sum_ranks(out, parts, 3, 1, 1);
    CHECK(out[0] == 1.0f, "rank-order sum in double: got %g", out[0]);
}

static void test_simulated_ranks(void) {
    SlCtx ctx;
    sl_ctx_init(&ctx);
    char one[2200], simA[2200], simB[2200];
    snprintf(one, sizeof one, "%s/one_b2.safetensors", g_root);
    snprintf(simA, sizeof simA, "%s/sim_a.safetensors", g_root);
    snprintf(simB, sizeof simB, "%s/sim_b.safetensors", g_root);
    /* one process, batch 2; its gradients recorded through a world-1 slot */
    SlTrainConfig c;
    config(&c, one, 2);
    SlTrainer tr;
    double loss1[SIM_STEPS] = {0};
    SlStatus st = sl_trainer_init(&tr, &c, &ctx);
    CHECK(st == SL_OK, "batch-2 init: %s", ctx.msg);
    if (st) { sl_trainer_free(&tr); return; }
    const size_t n = tr.n_fused;
    float *g1 = calloc(SIM_STEPS * n, sizeof(float)), *w1 = calloc(SIM_STEPS * n, sizeof(float));
    float *gA = calloc(SIM_STEPS * n, sizeof(float)), *wA = calloc(SIM_STEPS * n, sizeof(float));
    Capture cap = {g1, 0};
    tr.reduce_grads = capture_grads;
    tr.reduce_user = &cap;
    for (int k = 0; k < SIM_STEPS && !st; k++) {
        st = sl_trainer_step(&tr, &ctx);
        loss1[k] = tr.loss;
        fuse_weights(w1 + (size_t)k * n, &tr);
    }
    if (!st) st = sl_trainer_save(&tr, &ctx);
    CHECK(st == SL_OK, "batch-2 run: %s", ctx.msg);
    double lossA[SIM_STEPS], lossB[SIM_STEPS];
    if (!st && run_sim(simA, lossA, gA, wA) && run_sim(simB, lossB, NULL, NULL)) {
        /* the gradients of step 1 (same weights in both) and the weights after each step */
        for (int k = 0; k < SIM_STEPS; k++) {
            const double rg = worst_rel(gA + (size_t)k * n, g1 + (size_t)k * n, &tr);
            const double rw = worst_rel(wA + (size_t)k * n, w1 + (size_t)k * n, &tr);
            printf("step %d: worst per-tensor relative difference, 2 ranks x 1 vs 1 x 2: gradients %.3g, weights %.3g; "
                   "loss %.9g vs %.9g\n", k + 1, rg, rw, lossA[k], loss1[k]);
            if (k == 0) CHECK(rg <= SL_DIST_GTOL, "step 1 gradients differ by %.3g > %g", rg, SL_DIST_GTOL);
            CHECK(fabs(lossA[k] - loss1[k]) <= 1e-6 * fabs(loss1[k]) && lossA[k] == lossB[k],
                  "step %d loss: ranks %.9g / %.9g, one process %.9g", k + 1, lossA[k], lossB[k], loss1[k]);
        }
        double worst = 0;
        int r = compare_files(simA, one, SL_DIST_WTOL, &worst, 1);
        CHECK(r == 1, "2 ranks x batch 1 vs 1 process x batch 2 after %d steps: worst per-tensor relative difference "
                      "%.3g > %g", SIM_STEPS, worst, SL_DIST_WTOL);
        r = compare_files(simA, simB, 0, &worst, 1);
        CHECK(r == 1, "2 simulated ranks are not bitwise reproducible (worst %.3g)", worst);
    }
    sl_trainer_free(&tr);
    free(g1); free(w1); free(gA); free(wA);
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
    if (!make_fixture(g_root)) {
        fprintf(stderr, "cannot build fixtures in %s\n", g_root);
        return 1;
    }
    test_sum_ranks();
    test_simulated_ranks();
    return sl_test_finish("test_dist");
}
