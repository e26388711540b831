/* bench_nn.c - speed of the nn/ kernels, fast next to _ref in the same run.
 *
 * Shapes are Stable-Diffusion-like: sl_sgemm at 1024^3 and two U-Net product
 * shapes with each GEMM kernel, conv2d 3x3 at B1 C320 32x32 (SD 1.5
 * U-Net, 256 px latents), attention B1 NH8 T1024 HD40 (its first
 * self-attention; the lanes kernel next to the row kernel when the CPU has
 * AVX-512), GroupNorm over the same activation. Figures: milliseconds
 * per call (best of a few runs) and GFLOP/s. Usage: bench_nn [reps]
 */
#include <math.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#include "core/tensor.h"
#include "nn/gemm.h"
#include "nn/nn.h"

static float *randbuf(int64_t n, unsigned seed) {
    float *p = sl_alloc((size_t)n * sizeof(float));
    if (!p) { fprintf(stderr, "out of memory\n"); exit(1); }
    for (int64_t i = 0; i < n; i++) {
        seed = seed * 1664525u + 1013904223u;
        p[i] = ((float)(seed >> 8) / 16777216.0f - 0.5f) * 2.0f;
    }
    return p;
}
static float *zerobuf(int64_t n) {
    float *p = sl_calloc((size_t)(n > 0 ? n : 1) * sizeof(float));
    if (!p) { fprintf(stderr, "out of memory\n"); exit(1); }
    return p;
}

/* Process CPU seconds (all threads): on a shared, loaded machine wall time
 * says little, CPU time per core says how much work the kernel costs. */
static double cpu_seconds(void) {
    struct timespec ts;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* best wall time of `reps` runs of stmt into `best`, the CPU time of that run into `cpu` */
#define TIME_BEST(reps, best, stmt)                          \
    do {                                                     \
        best = 1e30;                                         \
        for (int r_ = 0; r_ < (reps); r_++) {                \
            double c0_ = cpu_seconds();                      \
            double t0_ = omp_get_wtime();                    \
            stmt;                                            \
            double t_ = omp_get_wtime() - t0_;               \
            if (t_ < best) { best = t_; cpu = cpu_seconds() - c0_; } \
        }                                                    \
    } while (0)

static void row(const char *what, double sec, double cpu, double flops) {
    printf("%-44s %9.2f ms wall %8.2f GFLOP/s | %9.2f ms cpu %8.2f GFLOP/s/core\n", what, sec * 1e3,
           flops / sec * 1e-9, cpu * 1e3, flops / cpu * 1e-9);
}

int main(int argc, char **argv) {
    const int reps = argc > 1 ? atoi(argv[1]) : 3;
    double t, cpu = 0;
    printf("threads: %d (OMP_NUM_THREADS), reps: %d (best of)\n", omp_get_max_threads(), reps);

    { /* sl_sgemm 1024^3 and an SD conv-shaped product with each kernel (OpenBLAS tiles, AVX-512) */
        const int64_t n = 1024;
        float *a = randbuf(n * n * 3, 21), *b = randbuf(n * n * 3, 22), *c = zerobuf(n * n * 3);
        const int kernels[2] = {SL_GEMM_KERNEL_BLAS, SL_GEMM_KERNEL_AVX512};
        const char *names[2] = {"openblas tiles", "avx512"};
        for (int k = 0; k < 2; k++) {
            char what[96];
            const SlKernels kc = {kernels[k], 0, 0};
            if (!sl_kernels_available(&kc)) {
                printf("sgemm kernel %s: not available on this CPU\n", names[k]);
                continue;
            }
            TIME_BEST(reps, t, sl_sgemm(0, 0, n, n, n, 1.0f, a, n, b, n, 0.0f, c, n, &kc));
            snprintf(what, sizeof what, "sgemm 1024^3 %s", names[k]);
            row(what, t, cpu, 2.0 * n * n * n);
            TIME_BEST(reps, t, sl_sgemm(0, 0, 320, 1024, 2880, 1.0f, a, 2880, b, 1024, 0.0f, c, 1024, &kc));
            snprintf(what, sizeof what, "sgemm 320x1024x2880 (conv) %s", names[k]);
            row(what, t, cpu, 2.0 * 320 * 1024 * 2880);
            TIME_BEST(reps, t, sl_sgemm(0, 1, 1024, 2560, 320, 1.0f, a, 320, b, 320, 0.0f, c, 2560, &kc));
            snprintf(what, sizeof what, "sgemm 1024x2560x320 B^T (ff1) %s", names[k]);
            row(what, t, cpu, 2.0 * 1024 * 2560 * 320);
        }
        sl_free(a); sl_free(b); sl_free(c);
    }
    { /* conv2d 3x3, B1 C320 32x32 -> 320, pad 1 */
        SlConvDims d = sl_conv_dims(1, 320, 32, 32, 320, 3, 1, 1, 1, 1, 1);
        const int64_t nx = 320 * 32 * 32, nw = 320 * 320 * 9;
        float *x = randbuf(nx, 1), *w = randbuf(nw, 2), *b = randbuf(320, 3), *y = zerobuf(nx);
        float *dy = randbuf(nx, 4), *dx = zerobuf(nx), *dw = zerobuf(nw), *db = zerobuf(320);
        float *work = zerobuf((int64_t)sl_conv2d_workspace(&d));
        const double fl = 2.0 * 320 * 320 * 9 * 32 * 32;
        TIME_BEST(reps, t, sl_conv2d_forward(y, x, w, b, &d, work, NULL));
        row("conv2d 3x3 C320 32x32 forward fast", t, cpu, fl);
        TIME_BEST(1, t, sl_conv2d_forward_ref(y, x, w, b, &d, work));
        row("conv2d 3x3 C320 32x32 forward ref", t, cpu, fl);
        TIME_BEST(reps, t, sl_conv2d_backward(dx, dw, db, dy, x, w, &d, work, NULL));
        row("conv2d 3x3 C320 32x32 backward fast (dx,dw)", t, cpu, 2 * fl);
        TIME_BEST(reps, t, sl_conv2d_backward(dx, NULL, NULL, dy, x, w, &d, work, NULL));
        row("conv2d 3x3 C320 32x32 backward fast (dx)", t, cpu, fl);
        sl_free(x); sl_free(w); sl_free(b); sl_free(y); sl_free(dy); sl_free(dx); sl_free(dw); sl_free(db); sl_free(work);
    }
    { /* attention B1 NH8 T1024 HD40 */
        const int64_t B = 1, NH = 8, T = 1024, HD = 40, n = B * T * NH * HD;
        float *q = randbuf(n, 5), *k = randbuf(n, 6), *v = randbuf(n, 7), *o = zerobuf(n), *lse = zerobuf(B * NH * T);
        float *dout = randbuf(n, 8), *dq = zerobuf(n), *dk = zerobuf(n), *dv = zerobuf(n);
        float *work = zerobuf((int64_t)sl_attention_workspace(B, T, T, NH, HD));
        const float scale = 1.0f / sqrtf((float)HD);
        const double fl = 4.0 * B * NH * T * T * HD; /* QK^T and PV */
        TIME_BEST(reps, t, sl_attention_forward(o, lse, q, k, v, B, T, T, NH, HD, scale, 0, work, NULL));
        row("attention NH8 T1024 HD40 forward fast", t, cpu, fl);
        const SlKernels rows = {0, 0, SL_ATT_KERNEL_ROWS}; /* the AVX2 row kernel, when lanes is the default */
        if (sl_kernels_attention(NULL) == SL_ATT_KERNEL_LANES) {
            TIME_BEST(reps, t, sl_attention_forward(o, lse, q, k, v, B, T, T, NH, HD, scale, 0, work, &rows));
            row("attention NH8 T1024 HD40 forward rows kernel", t, cpu, fl);
            TIME_BEST(reps, t, sl_attention_forward(o, lse, q, k, v, B, T, 77, NH, HD, scale, 0, work, &rows));
            row("attention NH8 Tq1024 Tk77 HD40 forward rows", t, cpu, 4.0 * NH * T * 77 * HD);
        }
        TIME_BEST(1, t, sl_attention_forward_ref(o, lse, q, k, v, B, T, T, NH, HD, scale, 0, work));
        row("attention NH8 T1024 HD40 forward ref", t, cpu, fl);
        TIME_BEST(reps, t, sl_attention_backward(dq, dk, dv, dout, q, k, v, o, lse, B, T, T, NH, HD, scale, 0, work));
        row("attention NH8 T1024 HD40 backward fast", t, cpu, 2 * fl); /* nominal 4 matmuls */
        TIME_BEST(1, t, sl_attention_backward_ref(dq, dk, dv, dout, q, k, v, o, lse, B, T, T, NH, HD, scale, 0, work));
        row("attention NH8 T1024 HD40 backward ref", t, cpu, 2 * fl);
        /* cross-attention shape: T1024 x 77 text tokens */
        TIME_BEST(reps, t, sl_attention_forward(o, lse, q, k, v, B, T, 77, NH, HD, scale, 0, work, NULL));
        row("attention NH8 Tq1024 Tk77 HD40 forward fast", t, cpu, 4.0 * NH * T * 77 * HD);
        sl_free(q); sl_free(k); sl_free(v); sl_free(o); sl_free(lse); sl_free(dout); sl_free(dq); sl_free(dk); sl_free(dv); sl_free(work);
    }
    { /* VAE mid-block attention at 256 px: one head of width 512 over 32x32 tokens */
        const int64_t T = 1024, HD = 512, n = T * HD;
        float *q = randbuf(n, 12), *k = randbuf(n, 13), *v = randbuf(n, 14), *o = zerobuf(n), *lse = zerobuf(T);
        float *work = zerobuf((int64_t)sl_attention_workspace(1, T, T, 1, HD));
        TIME_BEST(reps, t, sl_attention_forward(o, lse, q, k, v, 1, T, T, 1, HD, 1.0f / sqrtf((float)HD), 0, work, NULL));
        row("attention NH1 T1024 HD512 (VAE) forward fast", t, cpu, 4.0 * T * T * HD);
        sl_free(q); sl_free(k); sl_free(v); sl_free(o); sl_free(lse); sl_free(work);
    }
    { /* groupnorm B1 C320 32x32 G32 */
        const int64_t C = 320, HW = 1024, n = C * HW;
        float *x = randbuf(n, 9), *y = zerobuf(n), *g = randbuf(C, 10), *b = randbuf(C, 11), *m = zerobuf(32), *r = zerobuf(32);
        float *dx = zerobuf(n), *dg = zerobuf(C), *db = zerobuf(C);
        TIME_BEST(reps, t, sl_groupnorm_forward(y, m, r, x, g, b, 1, C, HW, 32, 1e-5f));
        printf("%-44s %9.3f ms wall %9.3f ms cpu\n", "groupnorm C320 32x32 forward fast", t * 1e3, cpu * 1e3);
        TIME_BEST(reps, t, sl_groupnorm_forward_ref(y, m, r, x, g, b, 1, C, HW, 32, 1e-5f));
        printf("%-44s %9.3f ms wall %9.3f ms cpu\n", "groupnorm C320 32x32 forward ref", t * 1e3, cpu * 1e3);
        TIME_BEST(reps, t, sl_groupnorm_silu_forward(y, m, r, x, g, b, 1, C, HW, 32, 1e-5f));
        printf("%-44s %9.3f ms wall %9.3f ms cpu\n", "groupnorm+silu C320 32x32 fused", t * 1e3, cpu * 1e3);
        TIME_BEST(reps, t, sl_groupnorm_backward(dx, dg, db, y, x, g, m, r, 1, C, HW, 32));
        printf("%-44s %9.3f ms wall %9.3f ms cpu\n", "groupnorm C320 32x32 backward fast", t * 1e3, cpu * 1e3);
        TIME_BEST(reps, t, sl_groupnorm_backward_ref(dx, dg, db, y, x, g, m, r, 1, C, HW, 32));
        printf("%-44s %9.3f ms wall %9.3f ms cpu\n", "groupnorm C320 32x32 backward ref", t * 1e3, cpu * 1e3);
        sl_free(x); sl_free(y); sl_free(g); sl_free(b); sl_free(m); sl_free(r); sl_free(dx); sl_free(dg); sl_free(db);
    }
    return 0;
}
