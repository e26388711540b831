/* bench_nn_step.c - the non-GEMM kernels of one SD-1.5 guided sampling step,
 * at their real shapes and call counts, fast next to the previous (or _ref) kernel.
 *
 * The step runs the U-Net on B = 2 (uncond, cond) at a 32x32 latent (256 px):
 * 16 transformer blocks (5 at 32x32 C320, 5 at 16x16 C640, 5 at 8x8 C1280,
 * 1 at 4x4 C1280; 8 heads, 77 text tokens), 22 resnets, GroupNorm/SiLU pairs.
 * For each kernel and shape: milliseconds per call (best of reps) and the
 * milliseconds it adds to one step (x calls per step): process CPU time, so
 * run it with OMP_NUM_THREADS=1 (SL_BENCH_WALL=1 for wall time). Usage: bench_nn_step [reps]
 */
#include <math.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#include "core/tensor.h"
#include "nn/nn.h"

static float *randbuf(int64_t n, unsigned seed) {
    float *p = sl_alloc((size_t)(n > 0 ? n : 1) * sizeof(float));
    if (!p) { fprintf(stderr, "out of memory\n"); exit(1); }
    for (int64_t i = 0; i < n; i++) {
        seed = seed * 1664525u + 1013904223u;
        p[i] = ((float)(seed >> 8) / 16777216.0f - 0.5f) * 2.0f;
    }
    return p;
}

/* Process CPU seconds (all threads): on a shared, loaded machine wall time says
 * little; with one thread the CPU time is the kernel's cost. */
static double cpu_seconds(void) {
    struct timespec ts;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* best (lowest) CPU time of `reps` runs of stmt into `best` (wall time when SL_BENCH_WALL is set) */
#define TIME_BEST(reps, best, stmt)                                            \
    do {                                                                       \
        best = 1e30;                                                           \
        for (int r_ = 0; r_ < (reps); r_++) {                                  \
            double t0_ = g_wall ? omp_get_wtime() : cpu_seconds();             \
            stmt;                                                              \
            double t_ = (g_wall ? omp_get_wtime() : cpu_seconds()) - t0_;      \
            if (t_ < best) best = t_;                                          \
        }                                                                      \
    } while (0)

static int g_wall;
static double g_total;

static void row(const char *what, double sec, int calls, double flops) {
    g_total += sec * calls;
    printf("%-46s %8.3f ms/call x%2d = %7.2f ms/step", what, sec * 1e3, calls, sec * calls * 1e3);
    if (flops > 0) printf("  %6.1f GFLOP/s", flops / sec * 1e-9);
    printf("\n");
}

/* One attention shape: B=2, NH=8, Tq x Tk, HD. */
static void bench_att(int reps, int64_t Tq, int64_t Tk, int64_t HD, int calls, const char *what) {
    const int64_t B = 2, NH = 8, C = NH * HD;
    float *q = randbuf(B * Tq * C, 1), *k = randbuf(B * Tk * C, 2), *v = randbuf(B * Tk * C, 3);
    float *o = randbuf(B * Tq * C, 4), *lse = randbuf(B * NH * Tq, 5);
    float *work = randbuf((int64_t)sl_attention_workspace(B, Tq, Tk, NH, HD), 6);
    const float scale = 1.0f / sqrtf((float)HD);
    double t;
    TIME_BEST(reps, t, sl_attention_forward(o, lse, q, k, v, B, Tq, Tk, NH, HD, scale, 0, work, NULL));
    row(what, t, calls, 4.0 * B * NH * Tq * Tk * HD);
    const SlKernels rows = {0, 0, SL_ATT_KERNEL_ROWS}; /* the previous (row) kernel, not in the total */
    if (sl_kernels_attention(NULL) == SL_ATT_KERNEL_LANES) {
        double tr;
        TIME_BEST(reps, tr, sl_attention_forward(o, lse, q, k, v, B, Tq, Tk, NH, HD, scale, 0, work, &rows));
        printf("%-46s %8.3f ms/call (rows kernel) lanes/rows %.2fx faster\n", "", tr * 1e3, tr / t);
    }
    sl_free(q); sl_free(k); sl_free(v); sl_free(o); sl_free(lse); sl_free(work);
}

static void bench_ln(int reps, int64_t N, int64_t D, int calls, const char *what) {
    float *x = randbuf(N * D, 7), *y = randbuf(N * D, 8), *g = randbuf(D, 9), *b = randbuf(D, 10);
    float *m = randbuf(N, 11), *r = randbuf(N, 12);
    double t;
    TIME_BEST(reps, t, sl_layernorm_forward(y, m, r, x, g, b, N, D, 1e-5f));
    row(what, t, calls, 0);
    sl_free(x); sl_free(y); sl_free(g); sl_free(b); sl_free(m); sl_free(r);
}

/* GroupNorm then SiLU as the U-Net calls them (two passes) and fused. */
static void bench_gn(int reps, int64_t C, int64_t HW, int calls, const char *what) {
    const int64_t B = 2, n = B * C * HW;
    float *x = randbuf(n, 13), *y = randbuf(n, 14), *a = randbuf(n, 15), *g = randbuf(C, 16), *b = randbuf(C, 17);
    float *m = randbuf(B * 32, 18), *r = randbuf(B * 32, 19);
    double t;
    char name[96];
    TIME_BEST(reps, t, sl_groupnorm_forward(y, m, r, x, g, b, B, C, HW, 32, 1e-5f));
    snprintf(name, sizeof name, "%s groupnorm", what);
    row(name, t, calls, 0);
    TIME_BEST(reps, t, sl_silu_forward(a, y, n));
    snprintf(name, sizeof name, "%s silu", what);
    row(name, t, calls, 0);
    double tf; /* the fused kernel (same bits), not in the total: the U-Net calls the pair */
    TIME_BEST(reps, tf, sl_groupnorm_silu_forward(a, m, r, x, g, b, B, C, HW, 32, 1e-5f));
    printf("%-46s %8.3f ms/call (fused groupnorm+silu)\n", "", tf * 1e3);
    sl_free(x); sl_free(y); sl_free(a); sl_free(g); sl_free(b); sl_free(m); sl_free(r);
}

static void bench_geglu(int reps, int64_t N, int64_t F, int calls, const char *what) {
    float *x = randbuf(N * 2 * F, 20), *y = randbuf(N * F, 21);
    double t;
    TIME_BEST(reps, t, sl_geglu_forward(y, x, N, F));
    row(what, t, calls, 0);
    sl_free(x); sl_free(y);
}

static void bench_tr(int reps, int64_t C, int64_t S, int calls, const char *what) {
    const int64_t B = 2, n = B * C * S;
    float *x = randbuf(n, 22), *y = randbuf(n, 23);
    double t;
    char name[96];
    TIME_BEST(reps, t, sl_transpose_cs_sc(y, x, B, C, S));
    snprintf(name, sizeof name, "%s transpose cs->sc", what);
    row(name, t, calls, 0);
    TIME_BEST(reps, t, sl_transpose_sc_cs(x, y, B, C, S));
    snprintf(name, sizeof name, "%s transpose sc->cs", what);
    row(name, t, calls, 0);
    sl_free(x); sl_free(y);
}

int main(int argc, char **argv) {
    const int reps = argc > 1 ? atoi(argv[1]) : 5;
    g_wall = getenv("SL_BENCH_WALL") != NULL;
    printf("threads: %d (OMP_NUM_THREADS), reps: %d (best of), %s time\n", omp_get_max_threads(), reps,
           g_wall ? "wall" : "process CPU");
    g_total = 0;
    bench_att(reps, 1024, 1024, 40, 5, "self-attn  32x32 T1024 HD40");
    bench_att(reps, 1024, 77, 40, 5, "cross-attn 32x32 T1024 Tk77 HD40");
    bench_att(reps, 256, 256, 80, 5, "self-attn  16x16 T256 HD80");
    bench_att(reps, 256, 77, 80, 5, "cross-attn 16x16 T256 Tk77 HD80");
    bench_att(reps, 64, 64, 160, 5, "self-attn  8x8 T64 HD160");
    bench_att(reps, 64, 77, 160, 5, "cross-attn 8x8 T64 Tk77 HD160");
    bench_att(reps, 16, 16, 160, 1, "self-attn  4x4 T16 HD160");
    bench_att(reps, 16, 77, 160, 1, "cross-attn 4x4 T16 Tk77 HD160");
    printf("attention total %.2f ms/step\n", g_total * 1e3);
    double mark = g_total;
    bench_ln(reps, 2048, 320, 15, "layernorm N2048 D320");
    bench_ln(reps, 512, 640, 15, "layernorm N512 D640");
    bench_ln(reps, 128, 1280, 15, "layernorm N128 D1280");
    printf("layernorm total %.2f ms/step\n", (g_total - mark) * 1e3);
    mark = g_total;
    /* resnets: two GroupNorm+SiLU each; transformers one GroupNorm; counts at 256 px */
    bench_gn(reps, 320, 1024, 13, "C320 32x32");
    bench_gn(reps, 640, 1024, 3, "C640 32x32");
    bench_gn(reps, 960, 1024, 2, "C960 32x32");
    bench_gn(reps, 640, 256, 13, "C640 16x16");
    bench_gn(reps, 1280, 256, 3, "C1280 16x16");
    bench_gn(reps, 1280, 64, 13, "C1280 8x8");
    bench_gn(reps, 1280, 16, 16, "C1280 4x4");
    printf("groupnorm+silu total %.2f ms/step (upper bound: counts rounded up)\n", (g_total - mark) * 1e3);
    mark = g_total;
    bench_geglu(reps, 2048, 1280, 5, "geglu N2048 F1280");
    bench_geglu(reps, 512, 2560, 5, "geglu N512 F2560");
    bench_geglu(reps, 128, 5120, 5, "geglu N128 F5120");
    printf("geglu total %.2f ms/step\n", (g_total - mark) * 1e3);
    mark = g_total;
    bench_tr(reps, 320, 1024, 5, "C320 S1024");
    bench_tr(reps, 640, 256, 5, "C640 S256");
    bench_tr(reps, 1280, 64, 5, "C1280 S64");
    printf("transpose total %.2f ms/step\n", (g_total - mark) * 1e3);
    printf("all total %.2f ms/step\n", g_total * 1e3);
    return 0;
}
