/* test_nn_gemm.c - sl_sgemm (each available kernel: OpenBLAS tiles, AVX-512)
 * against its plain reference twin sl_sgemm_ref, on shapes that hit every
 * edge of the tiling (partial micro-tiles, partial K blocks, odd tile counts),
 * all four transpose combinations, strided sub-matrices, alpha/beta (beta 0
 * must ignore NaN already in C), the bytes-for-bytes independence of the
 * thread count, and two products run at once from two pthreads (each thread
 * packs into its own buffer). Then sl_gemm_op: fp16 A and/or B and a gathered B
 * must give exactly the bytes of sl_sgemm on the widened / materialised fp32
 * matrices, with 1 and 2 threads, on both kernels, also from inside a parallel
 * region (the serial OpenBLAS path, widening into per-thread scratch).
 * The kernel is the caller's SlKernels (nn/kernels.h), per call: the same
 * product under two configurations in one process, in turn and on two pthreads
 * at once, gives each configuration its own bytes (no setting leaks from one call
 * to another), NULL gives the default's bytes, and the environment's names parse
 * (or are refused naming the variable).
 */
#include <math.h>
#include <omp.h>
#include <pthread.h>
#include <stdint.h>
#include <string.h>

#include "nn/gemm.h"
#include "nn_test_common.h"

typedef struct Shape { int64_t M, N, K; } Shape;

/* One product of size s with padding pad on every leading dimension; returns the test's failures so far. */
static void check_one(int kernel, Shape s, int ta, int tb, float alpha, float beta, uint64_t *rng) {
    const SlKernels kc = {kernel, 0, 0};
    const int64_t pad = 3;
    const int64_t ar = ta ? s.K : s.M, ac = ta ? s.M : s.K, br = tb ? s.N : s.K, bc = tb ? s.K : s.N;
    const int64_t lda = ac + pad, ldb = bc + pad, ldc = s.N + pad;
    float *A = nt_randn_new(ar * lda, rng, 0.0, 1.0), *B = nt_randn_new(br * ldb, rng, 0.0, 1.0);
    float *C = nt_randn_new(s.M * ldc, rng, 0.0, 1.0);
    if (beta == 0.0f)
        for (int64_t i = 0; i < s.M * ldc; i++)
            if ((i % ldc) < s.N) C[i] = NAN; /* must not leak into the result */
    float *R = nt_copy(C, s.M * ldc);
    sl_sgemm(ta, tb, s.M, s.N, s.K, alpha, A, lda, B, ldb, beta, C, ldc, &kc);
    sl_sgemm_ref(ta, tb, s.M, s.N, s.K, alpha, A, lda, B, ldb, beta, R, ldc);
    char what[160];
    snprintf(what, sizeof what, "sgemm kernel %d M%lld N%lld K%lld ta%d tb%d alpha %g beta %g", kernel,
             (long long)s.M, (long long)s.N, (long long)s.K, ta, tb, alpha, beta);
    /* float sums of K products of N(0,1) values: error grows like sqrt(K) * eps * |terms| */
    const double atol = 2e-6 * (double)s.K + 1e-6;
    if (beta == 0.0f) /* the padding columns were left NaN in both */
        for (int64_t i = 0; i < s.M; i++)
            for (int64_t j = s.N; j < ldc; j++) C[i * ldc + j] = R[i * ldc + j] = 0.0f;
    sl_test_close(what, C, R, (size_t)(s.M * ldc), atol, 1e-5);
    sl_free(A);
    sl_free(B);
    sl_free(C);
    sl_free(R);
}

/* Same bits with 1 and 2 threads, for a product big enough to be tiled and threaded
 * (skinny: N < 96, the swapped path). */
static void check_threads(int kernel, int ta, int tb, int skinny, uint64_t *rng) {
    const SlKernels kc = {kernel, 0, 0};
    const int64_t M = skinny ? 2000 : 330, N = skinny ? 64 : 1100, K = 700;
    float *A = nt_randn_new(M * K, rng, 0.0, 1.0), *B = nt_randn_new(K * N, rng, 0.0, 1.0);
    float *C1 = nt_zeros(M * N), *C2 = nt_zeros(M * N);
    const int saved = omp_get_max_threads();
    omp_set_num_threads(1);
    sl_sgemm(ta, tb, M, N, K, 1.0f, A, ta ? M : K, B, tb ? K : N, 0.0f, C1, N, &kc);
    omp_set_num_threads(2);
    sl_sgemm(ta, tb, M, N, K, 1.0f, A, ta ? M : K, B, tb ? K : N, 0.0f, C2, N, &kc);
    omp_set_num_threads(saved);
    CHECK(memcmp(C1, C2, sizeof(float) * (size_t)(M * N)) == 0, "kernel %d ta%d tb%d: 1 and 2 threads differ",
          kernel, ta, tb);
    sl_free(A);
    sl_free(B);
    sl_free(C1);
    sl_free(C2);
}

/* C rows a multiple of 1024 floats apart (partial sums kept in the thread's compact buffer
 * between K blocks) must give the same bytes as an odd row stride (sums through C itself). */
static void check_ldc(int kernel, uint64_t *rng) {
    const SlKernels kc = {kernel, 0, 0};
    const int64_t M = 150, N = 700, K = 600, ld1 = 2048, ld2 = 2053;
    float *A = nt_randn_new(M * K, rng, 0.0, 1.0), *B = nt_randn_new(K * N, rng, 0.0, 1.0);
    float *C1 = nt_randn_new(M * ld1, rng, 0.0, 1.0), *C2 = nt_zeros(M * ld2);
    for (int64_t i = 0; i < M; i++) memcpy(C2 + i * ld2, C1 + i * ld1, sizeof(float) * (size_t)N);
    sl_sgemm(0, 0, M, N, K, 0.5f, A, K, B, N, 0.75f, C1, ld1, &kc);
    sl_sgemm(0, 0, M, N, K, 0.5f, A, K, B, N, 0.75f, C2, ld2, &kc);
    int same = 1;
    for (int64_t i = 0; i < M; i++) same &= memcmp(C1 + i * ld1, C2 + i * ld2, sizeof(float) * (size_t)N) == 0;
    CHECK(same, "kernel %d: ldc %lld and ldc %lld give different bytes", kernel, (long long)ld1, (long long)ld2);
    sl_free(A); sl_free(B); sl_free(C1); sl_free(C2);
}

typedef struct Job { int64_t M, N, K; float *A, *B, *C; SlKernels kern; } Job;
static void *run_job(void *arg) {
    Job *j = arg;
    for (int rep = 0; rep < 3; rep++) sl_sgemm(0, 1, j->M, j->N, j->K, 1.0f, j->A, j->K, j->B, j->K, 0.0f, j->C, j->N, &j->kern);
    return NULL;
}

/* Two pthreads (each at OpenMP level 0) multiplying different matrices at the same time. */
static void check_pthreads(int kernel, uint64_t *rng) {
    const SlKernels kc = {kernel, 0, 0};
    const int64_t M = 300, N = 640, K = 300;
    Job jobs[2];
    float *ref[2];
    for (int i = 0; i < 2; i++) {
        jobs[i] = (Job){M, N, K, nt_randn_new(M * K, rng, 0.0, 1.0), nt_randn_new(N * K, rng, 0.0, 1.0), nt_zeros(M * N), kc};
        ref[i] = nt_zeros(M * N);
        sl_sgemm(0, 1, M, N, K, 1.0f, jobs[i].A, K, jobs[i].B, K, 0.0f, ref[i], N, &kc);
    }
    pthread_t th[2];
    for (int i = 0; i < 2; i++) pthread_create(&th[i], NULL, run_job, &jobs[i]);
    for (int i = 0; i < 2; i++) pthread_join(th[i], NULL);
    for (int i = 0; i < 2; i++) {
        CHECK(memcmp(jobs[i].C, ref[i], sizeof(float) * (size_t)(M * N)) == 0,
              "kernel %d: product %d from a second pthread differs from the same product alone", kernel, i);
        sl_free(jobs[i].A); sl_free(jobs[i].B); sl_free(jobs[i].C); sl_free(ref[i]);
    }
}

/* Each kernel configuration's own bytes, whatever ran before or runs beside it: products under
 * cfg[0] and cfg[1] alternated on this thread, then on two pthreads at once (job i on cfg[i]),
 * must equal the product computed under that configuration alone. Where the two configurations
 * are different kernels (a CPU with AVX-512) their bytes differ, so a leaked choice shows. */
static void check_config_isolation(const SlKernels cfg[2], uint64_t *rng) {
    const int64_t M = 330, N = 1100, K = 700; /* threaded, several tiles and K blocks */
    float *A = nt_randn_new(M * K, rng, 0.0, 1.0), *B = nt_randn_new(N * K, rng, 0.0, 1.0);
    float *alone[2], *seq = nt_zeros(M * N);
    for (int i = 0; i < 2; i++) {
        alone[i] = nt_zeros(M * N);
        sl_sgemm(0, 1, M, N, K, 1.0f, A, K, B, K, 0.0f, alone[i], N, &cfg[i]);
    }
    /* from the configurations as written, not from the code under test */
    const int differ = cfg[0].gemm != cfg[1].gemm && sl_kernels_available(&cfg[0]) && sl_kernels_available(&cfg[1]);
    if (differ)
        CHECK(memcmp(alone[0], alone[1], sizeof(float) * (size_t)(M * N)) != 0,
              "gemm kernels %s and %s gave the same bytes: a leaked choice could not show",
              sl_kernels_name("gemm", cfg[0].gemm), sl_kernels_name("gemm", cfg[1].gemm));
    else
        printf("config isolation: one GEMM kernel on this CPU, so the two configurations cannot differ here\n");
    for (int rep = 0; rep < 4; rep++) { /* 1, 0, 1, 0: each call after the other configuration's */
        const int i = (rep + 1) % 2;
        sl_sgemm(0, 1, M, N, K, 1.0f, A, K, B, K, 0.0f, seq, N, &cfg[i]);
        CHECK(memcmp(seq, alone[i], sizeof(float) * (size_t)(M * N)) == 0,
              "gemm %s after a product on %s: bytes differ from the same configuration alone",
              sl_kernels_name("gemm", cfg[i].gemm), sl_kernels_name("gemm", cfg[1 - i].gemm));
    }
    Job jobs[2];
    pthread_t th[2];
    for (int i = 0; i < 2; i++) jobs[i] = (Job){M, N, K, A, B, nt_zeros(M * N), cfg[i]};
    for (int i = 0; i < 2; i++) pthread_create(&th[i], NULL, run_job, &jobs[i]);
    for (int i = 0; i < 2; i++) pthread_join(th[i], NULL);
    for (int i = 0; i < 2; i++) {
        CHECK(memcmp(jobs[i].C, alone[i], sizeof(float) * (size_t)(M * N)) == 0,
              "gemm %s on a pthread beside one on %s: bytes differ from the same configuration alone",
              sl_kernels_name("gemm", cfg[i].gemm), sl_kernels_name("gemm", cfg[1 - i].gemm));
        sl_free(jobs[i].C);
    }
    const SlKernels def = sl_kernels_default();
    const int di = def.gemm == cfg[0].gemm ? 0 : def.gemm == cfg[1].gemm ? 1 : -1;
    sl_sgemm(0, 1, M, N, K, 1.0f, A, K, B, K, 0.0f, seq, N, NULL);
    if (di >= 0)
        CHECK(memcmp(seq, alone[di], sizeof(float) * (size_t)(M * N)) == 0,
              "a NULL configuration must give the default kernel's (%s) bytes", sl_kernels_name("gemm", def.gemm));
    sl_free(A); sl_free(B); sl_free(seq); sl_free(alone[0]); sl_free(alone[1]);
}

/* The names the environment overrides use (tools/kernels_env.c): accepted, or refused naming the variable. */
static void check_kernel_names(void) {
    SlCtx ctx;
    sl_ctx_init(&ctx);
    SlKernels k = {0};
    CHECK(sl_kernels_parse(&k, "gemm", "blas", "SL_GEMM", &ctx) == SL_OK && k.gemm == SL_GEMM_KERNEL_BLAS,
          "SL_GEMM=blas: %s", ctx.msg);
    CHECK(sl_kernels_gemm(&k) == SL_GEMM_KERNEL_BLAS, "a BLAS configuration must run the BLAS kernel");
    CHECK(sl_kernels_parse(&k, "conv", "im2col", "SL_CONV", &ctx) == SL_OK && k.conv == SL_CONV_KERNEL_IM2COL,
          "SL_CONV=im2col: %s", ctx.msg);
    CHECK(sl_kernels_parse(&k, "attention", "rows", "SL_ATTENTION", &ctx) == SL_OK &&
              sl_kernels_attention(&k) == SL_ATT_KERNEL_ROWS,
          "SL_ATTENTION=rows: %s", ctx.msg);
    const SlKernels before = k;
    CHECK(sl_kernels_parse(&k, "gemm", "fast", "SL_GEMM", &ctx) == SL_ERR_ARG && strstr(ctx.msg, "SL_GEMM") &&
              strstr(ctx.msg, "blas") && memcmp(&k, &before, sizeof k) == 0,
          "SL_GEMM=fast must be refused naming the variable and the valid names, changing nothing: '%s'", ctx.msg);
    const SlKernels avx = {SL_GEMM_KERNEL_AVX512, 0, SL_ATT_KERNEL_LANES};
    const SlStatus st = sl_kernels_parse(&k, "gemm", "avx512", "SL_GEMM", &ctx);
    CHECK(sl_kernels_available(&avx) ? st == SL_OK : st == SL_ERR_ARG && strstr(ctx.msg, "AVX-512") != NULL,
          "SL_GEMM=avx512 must be refused exactly when the CPU has no AVX-512 (status %d: '%s')", (int)st, ctx.msg);
    const SlKernels zero = {0}, def = sl_kernels_default();
    CHECK(sl_kernels_gemm(&zero) == def.gemm && sl_kernels_attention(&zero) == def.attention &&
              sl_kernels_gemm(NULL) == def.gemm,
          "a zero (or NULL) configuration is the default");
}

/* ---- sl_gemm_op: fp16 and gathered operands give exactly sl_sgemm's bytes on the same layout ---- */

/* op(B) materialised row-major [K, N], served by the gather callback; it checks its arguments. */
typedef struct GatherCtx { const float *b; int64_t K, N; } GatherCtx;
static int g_gather_bad; /* calls outside the contract (racy increments are fine: any non-zero fails) */
static void test_gather(const void *ctx, float *dst, int64_t ldd, int64_t k0, int64_t kc, int64_t j0, int64_t nc) {
    const GatherCtx *g = ctx;
    if (k0 < 0 || kc < 1 || k0 + kc > g->K || j0 < 0 || nc < 1 || j0 + nc > g->N || nc > ldd) {
        g_gather_bad++;
        return;
    }
    for (int64_t k = 0; k < kc; k++) memcpy(dst + k * ldd, g->b + (k0 + k) * g->N + j0, (size_t)nc * sizeof(float));
}

/* x [n] rounded to binary16 (h) and widened back (x now holds exactly representable values). */
static uint16_t *to_half(float *x, int64_t n) {
    uint16_t *h = sl_alloc((size_t)(n > 0 ? n : 1) * sizeof(uint16_t));
    if (!h) exit(2);
    sl_f32_to_f16(h, x, (size_t)n);
    sl_f16_to_f32(x, h, (size_t)n);
    return h;
}

/* Variants: 0 f16 A, 1 f16 B, 2 both f16, 3 gather B, 4 f16 A + gather B. Each with 1 and 2 threads must
 * equal sl_sgemm on the widened / materialised fp32 operands byte for byte; variant 0 also vs sl_sgemm_ref.
 * nested: run inside a parallel region (the serial OpenBLAS path), against sl_sgemm there. */
static void check_op(int kernel, Shape s, int ta, int tb, float alpha, float beta, int nested, uint64_t *rng) {
    const SlKernels kc = {kernel, 0, 0};
    const int64_t pad = 5;
    const int64_t ar = ta ? s.K : s.M, ac = ta ? s.M : s.K, br = tb ? s.N : s.K, bc = tb ? s.K : s.N;
    const int64_t lda = ac + pad, ldb = bc + pad, ldc = s.N + pad;
    float *A = nt_randn_new(ar * lda, rng, 0.0, 1.0), *B = nt_randn_new(br * ldb, rng, 0.0, 1.0);
    uint16_t *Ah = to_half(A, ar * lda), *Bh = to_half(B, br * ldb);
    float *Bop = nt_zeros(s.K * s.N); /* op(B) row-major for the gather */
    for (int64_t k = 0; k < s.K; k++)
        for (int64_t j = 0; j < s.N; j++) Bop[k * s.N + j] = tb ? B[j * ldb + k] : B[k * ldb + j];
    GatherCtx gc = {Bop, s.K, s.N};
    float *C0 = nt_randn_new(s.M * ldc, rng, 0.0, 1.0);
    if (beta == 0.0f)
        for (int64_t i = 0; i < s.M * ldc; i++) C0[i] = NAN; /* must not leak into the result */
    /* R: sl_sgemm on B as stored; Rg: on op(B) materialised untransposed, the matrix the gather serves.
     * OpenBLAS may sum a transposed and an untransposed B in different orders (its SkylakeX small-matrix
     * kernels do), so a gathered B is held to the bytes of the layout it really has. */
    float *R = nt_copy(C0, s.M * ldc), *Rg = nt_copy(C0, s.M * ldc), *C = nt_zeros(s.M * ldc);
    const SlGemmOperand fa = sl_gemm_f32(A, lda, ta), ha = sl_gemm_f16(Ah, lda, ta);
    const SlGemmOperand fb = sl_gemm_f32(B, ldb, tb), hb = sl_gemm_f16(Bh, ldb, tb);
    const SlGemmOperand gb = {SL_GEMM_GATHER, 0, NULL, 0, test_gather, &gc};
    const SlGemmOperand *va[5] = {&ha, &fa, &ha, &fa, &ha}, *vb[5] = {&fb, &hb, &hb, &gb, &gb};
    const int saved = omp_get_max_threads();
    if (nested) {
#pragma omp parallel num_threads(2)
        {
#pragma omp single
            {
                sl_sgemm(ta, tb, s.M, s.N, s.K, alpha, A, lda, B, ldb, beta, R, ldc, &kc);
                sl_sgemm(ta, 0, s.M, s.N, s.K, alpha, A, lda, Bop, s.N, beta, Rg, ldc, &kc);
            }
        }
    } else {
        sl_sgemm(ta, tb, s.M, s.N, s.K, alpha, A, lda, B, ldb, beta, R, ldc, &kc);
        sl_sgemm(ta, 0, s.M, s.N, s.K, alpha, A, lda, Bop, s.N, beta, Rg, ldc, &kc);
    }
    for (int v = 0; v < 5; v++)
        for (int th = 1; th <= (nested ? 1 : 2); th++) {
            memcpy(C, C0, sizeof(float) * (size_t)(s.M * ldc));
            g_gather_bad = 0;
            if (nested) {
#pragma omp parallel num_threads(2)
                {
#pragma omp single
                    sl_gemm_op(s.M, s.N, s.K, alpha, va[v], vb[v], beta, C, ldc, &kc);
                }
            } else {
                omp_set_num_threads(th);
                sl_gemm_op(s.M, s.N, s.K, alpha, va[v], vb[v], beta, C, ldc, &kc);
                omp_set_num_threads(saved);
            }
            const float *want = vb[v]->fmt == SL_GEMM_GATHER ? Rg : R;
            CHECK(memcmp(C, want, sizeof(float) * (size_t)(s.M * ldc)) == 0 && g_gather_bad == 0,
                  "gemm_op kernel %d variant %d %s M%lld N%lld K%lld ta%d tb%d beta %g threads %d: bytes differ from "
                  "sl_sgemm (or %d gather calls out of contract)",
                  kernel, v, nested ? "nested" : "", (long long)s.M, (long long)s.N, (long long)s.K, ta, tb, beta, th,
                  g_gather_bad);
        }
    if (!nested) { /* accuracy: f16 A against the double-accumulating reference on the widened numbers */
        float *Q = nt_copy(C0, s.M * ldc);
        memcpy(C, C0, sizeof(float) * (size_t)(s.M * ldc));
        sl_gemm_op(s.M, s.N, s.K, alpha, &ha, &gb, beta, C, ldc, &kc);
        sl_sgemm_ref(ta, tb, s.M, s.N, s.K, alpha, A, lda, B, ldb, beta, Q, ldc);
        for (int64_t i = 0; i < s.M; i++) /* padding columns: NaN in both when beta == 0 */
            for (int64_t j = s.N; j < ldc; j++) C[i * ldc + j] = Q[i * ldc + j] = 0.0f;
        char what[160];
        snprintf(what, sizeof what, "gemm_op f16 A, gathered B vs ref: kernel %d M%lld N%lld K%lld ta%d tb%d", kernel,
                 (long long)s.M, (long long)s.N, (long long)s.K, ta, tb);
        sl_test_close(what, C, Q, (size_t)(s.M * ldc), 2e-6 * (double)s.K + 1e-6, 1e-5);
        sl_free(Q);
    }
    sl_free(A); sl_free(B); sl_free(Ah); sl_free(Bh); sl_free(Bop); sl_free(C0); sl_free(R); sl_free(Rg); sl_free(C);
}

static void check_ops(int kernel, uint64_t *rng) {
    const Shape edge[] = {
        {1, 1, 1},      {13, 33, 257},  {11, 100, 5},   {25, 128, 15},  /* K < 16, partial micro-tiles */
        {50, 200, 300}, {72, 1000, 520}, {73, 130, 33}, /* <= 72 rows: B packed, not read in place */
        {200, 16, 300}, {130, 64, 257}, {2000, 70, 300}, {97, 33, 70}, /* N < 96: swapped when A^T */
        {300, 700, 100}, {269, 1100, 530}, {530, 97, 1000}, /* threaded, several tiles, odd tile counts */
    };
    for (size_t si = 0; si < sizeof edge / sizeof edge[0]; si++)
        for (int t = 0; t < 4; t++) check_op(kernel, edge[si], t & 1, t >> 1, t == 3 ? -1.5f : 1.0f,
                                             t == 1 ? 0.0f : t == 2 ? 1.0f : -0.75f, 0, rng);
    for (int r = 0; r < 12; r++) { /* random shapes */
        const Shape s = {1 + (int64_t)(nt_next(rng) % 400), 1 + (int64_t)(nt_next(rng) % 700),
                         1 + (int64_t)(nt_next(rng) % 600)};
        check_op(kernel, s, (int)(nt_next(rng) & 1), (int)(nt_next(rng) & 1), 1.0f, r & 1 ? 0.0f : 1.0f, 0, rng);
    }
    const Shape nest[] = {{130, 300, 200}, {40, 70, 33}};
    for (size_t si = 0; si < 2; si++)
        for (int t = 0; t < 4; t++) check_op(kernel, nest[si], t & 1, t >> 1, 1.0f, 1.0f, 1, rng);
}

int main(void) {
    const Shape shapes[] = {
        {1, 1, 1},     {12, 32, 256},  {13, 33, 257},  {11, 31, 5},     {37, 70, 300},  {5, 1000, 3},
        {1000, 5, 40}, {64, 16, 1200}, {330, 530, 97}, {150, 600, 300}, {77, 320, 768}, {24, 64, 0},
        {13, 97, 257}, {11, 100, 5}, {25, 128, 16}, /* >= 96 columns: the AVX-512 micro-kernel with edges */
        {200, 16, 300}, {130, 64, 257}, {97, 33, 70}, {1100, 7, 600}, /* skinny: swapped (C^T) when A^T */
        {50, 200, 300}, {72, 1000, 520}, {73, 130, 33}, /* <= 72 rows: op(B) read in place */
    };
    const int kernels[] = {SL_GEMM_KERNEL_BLAS, SL_GEMM_KERNEL_AVX512};
    printf("default kernel: %s\n", sl_kernels_name("gemm", sl_kernels_default().gemm));
    uint64_t rng = 12345;
    int tested = 0;
    for (size_t ki = 0; ki < sizeof kernels / sizeof kernels[0]; ki++) {
        const SlKernels k = {kernels[ki], 0, 0};
        if (!sl_kernels_available(&k)) {
            printf("kernel %s not available on this CPU: skipped\n", sl_kernels_name("gemm", kernels[ki]));
            continue;
        }
        tested++;
        for (size_t si = 0; si < sizeof shapes / sizeof shapes[0]; si++)
            for (int t = 0; t < 4; t++) {
                check_one(kernels[ki], shapes[si], t & 1, t >> 1, 1.0f, 1.0f, &rng);
                check_one(kernels[ki], shapes[si], t & 1, t >> 1, 0.5f, 0.0f, &rng);
                check_one(kernels[ki], shapes[si], t & 1, t >> 1, -1.5f, -0.75f, &rng);
            }
        for (int t = 0; t < 8; t++) check_threads(kernels[ki], t & 1, (t >> 1) & 1, t >> 2, &rng);
        check_pthreads(kernels[ki], &rng);
        check_ops(kernels[ki], &rng);
        check_ldc(kernels[ki], &rng);
    }
    CHECK(tested >= 1, "no kernel could be tested");
    const SlKernels pairs[2][2] = {{{SL_GEMM_KERNEL_BLAS, 0, 0}, {SL_GEMM_KERNEL_AVX512, 0, 0}},
                                   {{SL_GEMM_KERNEL_AVX512, 0, 0}, {SL_GEMM_KERNEL_BLAS, 0, 0}}};
    for (int p = 0; p < 2; p++) check_config_isolation(pairs[p], &rng);
    check_kernel_names();
    printf("%d checks, %d failures\n", sl_test_checks, sl_test_failures);
    return sl_test_failures ? 1 : 0;
}
