/* test_gemm_bf16.c - bfloat16 in the GEMM (nn/gemm.h, nn/bf16.h).
 *
 * 1. Conversion: sl_float_to_bf16 against the definition (the two neighbouring bfloat16
 *    compared in double, ties to even) on every upper half with the lower halves that make
 *    ties and near-ties, NaN (quiet or signalling, either sign) staying NaN, Inf, overflow,
 *    denormals; widening exact for all 65536 values; core/tensor.h's array forms give the
 *    same bits.
 * 2. SL_GEMM_BF16 operands on the fp32 kernels (OpenBLAS tiles, AVX-512): the bytes of
 *    sl_sgemm on the widened numbers, all transposes, 1 and 2 threads, nested.
 * 3. The bf16 kernel (SL_GEMM_KERNEL_BF16) on each path this CPU runs (DPBF16 needs
 *    AVX512_BF16, FMA AVX-512F; BLAS runs anywhere; a path that cannot run is skipped and
 *    said so):
 *    - the packers round exactly: with K = 1 and the other operand 1, C is the rounded value;
 *    - against a double reference on bf16-rounded operands. Bound (BF16_SUM_BOUND): the
 *      products of two bfloat16 are exact in fp32, so the only errors are the fp32 additions:
 *      K adds of the sums within the K blocks, then per block of 256 one rounding of alpha*acc
 *      and one of the add into C, each at most u = 2^-24 relative to the running magnitude,
 *      which is at most |alpha| sum|a b| + |beta c|:
 *        |C - ref| <= (K + 2 ceil(K/256) + 2) u (|alpha| sum_k |a_k b_k| + |beta c|)
 *      (+2: OpenBLAS may scale C by beta in a pass of its own). Printed: the largest
 *      error as a fraction of it;
 *    - against sl_sgemm on the unrounded fp32 operands: bfloat16 keeps 8 significant bits, so
 *      each operand moves by at most 2^-8 relative and a product by (1 + 2^-8)^2 - 1 =
 *      2^-7 + 2^-16: |C - C32| <= (2^-7 + 2^-16) |alpha| sum|a b| + both sums' bounds.
 *      Printed: the largest |C - C32| / (|alpha| sum|a b|) (random signs keep it near 2^-8);
 *    - odd M, N, K, K = 1, skinny shapes (swapped and not), alpha/beta (beta 0 ignores NaN in
 *      C), ldc > N (the columns past N untouched);
 *    - 1 and 2 threads, nested calls, and any sub-block of a product (other tile plans, the
 *      skinny swap) give the same bytes; DPBF16 and FMA the same bytes (no denormals here);
 *    - binary16, bfloat16 and gathered operands give the bytes of fp32 operands holding
 *      the same numbers;
 *    - kernel names, AUTO never bf16, sl_kernels_available = the CPU has AVX512_BF16.
 */
#include <math.h>
#include <omp.h>
#include <stdint.h>
#include <string.h>

#include "nn/bf16.h"
#include "nn/gemm.h"
#include "nn_test_common.h"

typedef struct Shape { int64_t M, N, K; } Shape;

static uint32_t f2u(float f) { uint32_t u; memcpy(&u, &f, 4); return u; }
static float u2f(uint32_t u) { float f; memcpy(&f, &u, 4); return f; }

#define BF16_U 0x1p-24                   /* fp32 unit roundoff */
#define BF16_PRODUCT_REL (0x1p-7 + 0x1p-16) /* (1 + 2^-8)^2 - 1: a product of two rounded operands */
/* The fp32 summation bound of the file comment, in units of u * (|alpha| sum|ab| + |beta c|). */
static double bf16_sum_ulps(int64_t K) { return (double)K + 2.0 * (double)((K + 255) / 256) + 2.0; }

static const char *path_name(int p) {
    return p == SL_GEMM_BF16_PATH_DPBF16 ? "dpbf16" : p == SL_GEMM_BF16_PATH_FMA ? "fma" : "blas";
}

/* ---------------------------------------------------------------- 1. conversion -- */

/* The nearest bfloat16 to finite or infinite x by the definition: its two neighbours (the
 * truncation and the next one away from zero, Inf standing for 2^128) compared in double. */
static uint16_t bf16_nearest_ref(float x) {
    const uint32_t u = f2u(x), lo = u & 0xffff0000u, hi = lo + 0x10000u;
    if (lo == u) return (uint16_t)(u >> 16);
    const double dlo = u2f(lo), dhi = (hi & 0x7fffffffu) == 0x7f800000u ? copysign(0x1p128, x) : (double)u2f(hi);
    const double elo = fabs((double)x - dlo), ehi = fabs(dhi - (double)x);
    if (elo != ehi) return (uint16_t)((elo < ehi ? lo : hi) >> 16);
    return (uint16_t)((((lo >> 16) & 1u) ? hi : lo) >> 16);
}

static void check_conversion(void) {
    static const uint32_t fixed[][2] = {
        {0x3f800000u, 0x3f80}, {0x3f808000u, 0x3f80}, /* 1 + 2^-8: a tie, to even (down) */
        {0x3f818000u, 0x3f82},                        /* a tie, to even (up) */
        {0x3f808001u, 0x3f81}, {0x3f807fffu, 0x3f80}, {0xbf808000u, 0xbf80}, {0xbf818000u, 0xbf82},
        {0x7f800000u, 0x7f80}, {0xff800000u, 0xff80}, /* Inf */
        {0x7f7fffffu, 0x7f80}, {0x7f7f8000u, 0x7f80}, /* FLT_MAX and the tie below it: overflow to Inf */
        {0x7f7f7fffu, 0x7f7f}, {0xff7fffffu, 0xff80},
        {0x00000000u, 0x0000}, {0x80000000u, 0x8000}, /* zeros keep their sign */
        {0x00000001u, 0x0000}, {0x00008000u, 0x0000}, /* denormals: the smallest, a tie to even zero */
        {0x00018000u, 0x0002}, {0x00008001u, 0x0001}, {0x007fffffu, 0x0080}, /* ... to the smallest normal */
        {0x807fffffu, 0x8080}, {0x00400000u, 0x0040},
        {0x7fc00000u, 0x7fc0}, {0x7f800001u, 0x7fc0}, /* NaN: a signalling one must not become Inf */
        {0xff800001u, 0xffc0}, {0x7fffffffu, 0x7fff},
    };
    for (size_t i = 0; i < sizeof fixed / sizeof fixed[0]; i++) {
        const uint16_t got = sl_float_to_bf16(u2f(fixed[i][0]));
        CHECK(got == fixed[i][1], "sl_float_to_bf16(0x%08x) = 0x%04x, want 0x%04x", fixed[i][0], got, fixed[i][1]);
    }
    /* every upper half with lower halves at and around the tie, and a few others */
    static const uint32_t lows[] = {0x0000, 0x0001, 0x7ffe, 0x7fff, 0x8000, 0x8001, 0xffff, 0x1234, 0xc001};
    const size_t nl = sizeof lows / sizeof lows[0], n = 65536 * nl;
    float *x = nt_zeros((int64_t)n);
    uint16_t *h = sl_alloc(n * sizeof(uint16_t));
    if (!h) exit(2);
    for (uint32_t hi = 0; hi < 65536; hi++)
        for (size_t l = 0; l < nl; l++) x[hi * nl + l] = u2f(hi << 16 | lows[l]);
    sl_f32_to_bf16(h, x, n);
    long bad = 0, bad_nan = 0, bad_array = 0;
    for (size_t i = 0; i < n; i++) {
        const uint16_t got = sl_float_to_bf16(x[i]);
        if (got != h[i]) bad_array++;
        if (isnan(x[i])) {
            if ((got & 0x7f80) != 0x7f80 || (got & 0x7f) == 0 || (got & 0x8000) != (f2u(x[i]) >> 16 & 0x8000)) bad_nan++;
        } else if (got != bf16_nearest_ref(x[i])) {
            if (bad++ < 5) fprintf(stderr, "  0x%08x -> 0x%04x, nearest 0x%04x\n", f2u(x[i]), got, bf16_nearest_ref(x[i]));
        }
        if (!isnan(x[i]) && f2u(sl_bf16_round(x[i])) != (uint32_t)sl_float_to_bf16(x[i]) << 16) bad++;
    }
    CHECK(bad == 0, "%ld of %zu values not rounded to the nearest bfloat16 (ties to even)", bad, n);
    CHECK(bad_nan == 0, "%ld NaN inputs did not stay NaN with their sign", bad_nan);
    CHECK(bad_array == 0, "core's sl_f32_to_bf16 differs from sl_float_to_bf16 on %ld values", bad_array);
    /* widening: exact, all 65536 values, the array form from an odd offset (its tail loop) */
    uint16_t *all = sl_alloc(65537 * sizeof(uint16_t));
    float *w = nt_zeros(65537);
    if (!all) exit(2);
    for (uint32_t v = 0; v < 65536; v++) all[v + 1] = (uint16_t)v;
    sl_bf16_to_f32(w, all + 1, 65536);
    long bad_w = 0;
    for (uint32_t v = 0; v < 65536; v++) bad_w += f2u(sl_bf16_to_float((uint16_t)v)) != v << 16 || f2u(w[v]) != v << 16;
    CHECK(bad_w == 0, "%ld bfloat16 values not widened exactly", bad_w);
    printf("conversion: %zu roundings and 65536 widenings checked\n", n);
    sl_free(x); sl_free(h); sl_free(all); sl_free(w);
}

/* ------------------------------------------------------ helpers for the products -- */

/* op(B) materialised row-major [K, N], served by the gather callback; it checks its arguments. */
typedef struct GatherCtx { const float *b; int64_t K, N; } GatherCtx;
static int g_gather_bad;
static void test_gather(const void *ctx, float *dst, int64_t ldd, int64_t k0, int64_t kc, int64_t j0, int64_t nc) {
    const GatherCtx *g = ctx;
    if (k0 < 0 || kc < 1 || k0 + kc > g->K || j0 < 0 || nc < 1 || j0 + nc > g->N || nc > ldd) {
        g_gather_bad++;
        return;
    }
    for (int64_t k = 0; k < kc; k++) memcpy(dst + k * ldd, g->b + (k0 + k) * g->N + j0, (size_t)nc * sizeof(float));
}

static uint16_t *u16_new(int64_t n) {
    uint16_t *p = sl_alloc((size_t)(n > 0 ? n : 1) * sizeof(uint16_t));
    if (!p) exit(2);
    return p;
}
/* x [n] rounded to bfloat16 (returned) and widened back in place. */
static uint16_t *to_bf16(float *x, int64_t n) {
    uint16_t *h = u16_new(n);
    sl_f32_to_bf16(h, x, (size_t)n);
    sl_bf16_to_f32(x, h, (size_t)n);
    return h;
}
/* x [n] rounded to binary16 (returned) and widened back in place. */
static uint16_t *to_f16(float *x, int64_t n) {
    uint16_t *h = u16_new(n);
    sl_f32_to_f16(h, x, (size_t)n);
    sl_f16_to_f32(x, h, (size_t)n);
    return h;
}

/* op(X)(r, c) of a stored row-major matrix with row stride ld. */
static float op_at(const float *x, int64_t ld, int trans, int64_t r, int64_t c) { return trans ? x[c * ld + r] : x[r * ld + c]; }

static int same_bytes(const float *a, const float *b, int64_t n) { return memcmp(a, b, sizeof(float) * (size_t)n) == 0; }

/* C0 for a product: random, or NaN in the product's columns when beta == 0 (they must not leak). */
static float *c_init(int64_t M, int64_t N, int64_t ldc, float beta, uint64_t *rng) {
    float *c = nt_randn_new(M * ldc, rng, 0.0, 1.0);
    if (beta == 0.0f)
        for (int64_t i = 0; i < M * ldc; i++)
            if (i % ldc < N) c[i] = NAN;
    return c;
}

/* ------------------------------- 2. SL_GEMM_BF16 operands on the fp32 kernels -- */

/* sl_gemm_op, or (nested) the same from inside a parallel region of 2 threads. (A region with if(0)
 * would not do: it still counts as a level, so the product would run nested either way.) */
static void op_call(int nested, Shape s, float alpha, const SlGemmOperand *A, const SlGemmOperand *B, float beta,
                    float *C, int64_t ldc, const SlKernels *kc) {
    if (!nested) {
        sl_gemm_op(s.M, s.N, s.K, alpha, A, B, beta, C, ldc, kc);
        return;
    }
#pragma omp parallel num_threads(2)
    {
#pragma omp single
        sl_gemm_op(s.M, s.N, s.K, alpha, A, B, beta, C, ldc, kc);
    }
}

/* Variants: 0 bf16 A, 1 bf16 B, 2 both, 3 bf16 A + gathered B, 4 f16 A + bf16 B: each, with 1 and 2
 * threads (or nested), the bytes of sl_sgemm on the widened fp32 operands (a gathered B: on op(B)
 * stored untransposed, the layout it has; see test_nn_gemm.c). */
static void check_operands(int kernel, Shape s, int ta, int tb, float alpha, float beta, int nested, uint64_t *rng) {
    const SlKernels kc = {kernel, 0, 0};
    const int64_t pad = 3, ar = ta ? s.K : s.M, ac = ta ? s.M : s.K, br = tb ? s.N : s.K, bc = tb ? s.K : s.N;
    const int64_t lda = ac + pad, ldb = bc + pad, ldc = s.N + pad;
    float *A = nt_randn_new(ar * lda, rng, 0.0, 1.0), *A16 = nt_copy(A, ar * lda), *B = nt_randn_new(br * ldb, rng, 0.0, 1.0);
    uint16_t *Ab = to_bf16(A, ar * lda), *Bb = to_bf16(B, br * ldb), *Ah = to_f16(A16, ar * lda);
    float *Bop = nt_zeros(s.K * s.N);
    for (int64_t k = 0; k < s.K; k++)
        for (int64_t j = 0; j < s.N; j++) Bop[k * s.N + j] = op_at(B, ldb, tb, k, j);
    GatherCtx gc = {Bop, s.K, s.N};
    float *C0 = c_init(s.M, s.N, ldc, beta, rng), *R = nt_copy(C0, s.M * ldc), *Rg = nt_copy(C0, s.M * ldc);
    float *Rh = nt_copy(C0, s.M * ldc), *C = nt_zeros(s.M * ldc);
    const SlGemmOperand fa = sl_gemm_f32(A, lda, ta), ba = sl_gemm_bf16(Ab, lda, ta), ha = sl_gemm_f16(Ah, lda, ta);
    const SlGemmOperand fb = sl_gemm_f32(B, ldb, tb), bb = sl_gemm_bf16(Bb, ldb, tb);
    const SlGemmOperand gb = {SL_GEMM_GATHER, 0, NULL, 0, test_gather, &gc};
    const SlGemmOperand *va[5] = {&ba, &fa, &ba, &ba, &ha}, *vb[5] = {&fb, &bb, &bb, &gb, &bb};
    const SlGemmOperand fbop = sl_gemm_f32(Bop, s.N, 0), fah = sl_gemm_f32(A16, lda, ta);
    op_call(nested, s, alpha, &fa, &fb, beta, R, ldc, &kc);
    op_call(nested, s, alpha, &fa, &fbop, beta, Rg, ldc, &kc);
    op_call(nested, s, alpha, &fah, &fb, beta, Rh, ldc, &kc);
    const int saved = omp_get_max_threads();
    for (int v = 0; v < 5; v++)
        for (int th = 1; th <= (nested ? 1 : 2); th++) {
            memcpy(C, C0, sizeof(float) * (size_t)(s.M * ldc));
            g_gather_bad = 0;
            omp_set_num_threads(th);
            op_call(nested, s, alpha, va[v], vb[v], beta, C, ldc, &kc);
            omp_set_num_threads(saved);
            const float *want = v == 3 ? Rg : v == 4 ? Rh : R;
            CHECK(same_bytes(C, want, s.M * ldc) && g_gather_bad == 0,
                  "bf16 operands, kernel %s variant %d%s M%lld N%lld K%lld ta%d tb%d beta %g threads %d: bytes differ "
                  "from sl_sgemm on the widened numbers (or %d gathers out of contract)",
                  sl_kernels_name("gemm", kernel), v, nested ? " nested" : "", (long long)s.M, (long long)s.N,
                  (long long)s.K, ta, tb, beta, th, g_gather_bad);
        }
    sl_free(A); sl_free(A16); sl_free(B); sl_free(Ab); sl_free(Bb); sl_free(Ah); sl_free(Bop);
    sl_free(C0); sl_free(R); sl_free(Rg); sl_free(Rh); sl_free(C);
}

/* ------------------------------------------------------------ 3. the bf16 kernel -- */

typedef struct Worst { double vs_ref, vs_f32; } Worst; /* largest error / bound; largest |C - C32| / (|alpha| sum|ab|) */
static Worst g_worst[4];

/* One product on `path` with fp32 operands, against the double reference on rounded operands and
 * against sl_sgemm (fp32, AVX-512 kernel where the CPU has it). */
static void check_kernel(int path, Shape s, int ta, int tb, float alpha, float beta, uint64_t *rng) {
    const int64_t pad = 5, ar = ta ? s.K : s.M, ac = ta ? s.M : s.K, br = tb ? s.N : s.K, bc = tb ? s.K : s.N;
    const int64_t lda = ac + pad, ldb = bc + pad, ldc = s.N + pad;
    float *A = nt_randn_new(ar * lda, rng, 0.0, 1.0), *B = nt_randn_new(br * ldb, rng, 0.0, 1.0);
    float *C0 = c_init(s.M, s.N, ldc, beta, rng), *C = nt_copy(C0, s.M * ldc), *C32 = nt_copy(C0, s.M * ldc);
    const SlGemmOperand fa = sl_gemm_f32(A, lda, ta), fb = sl_gemm_f32(B, ldb, tb);
    const int ran = sl_gemm_op_bf16_path(path, s.M, s.N, s.K, alpha, &fa, &fb, beta, C, ldc);
    sl_sgemm(ta, tb, s.M, s.N, s.K, alpha, A, lda, B, ldb, beta, C32, ldc, NULL);
    CHECK(ran == path, "asked for path %s, ran %s", path_name(path), path_name(ran));
    const double ulps = bf16_sum_ulps(s.K);
    long bad_ref = 0, bad_f32 = 0, bad_pad = 0;
    Worst *w = &g_worst[path];
    for (int64_t i = 0; i < s.M; i++) {
        for (int64_t j = 0; j < s.N; j++) {
            double ref = 0, sabs = 0, sabs32 = 0;
            for (int64_t k = 0; k < s.K; k++) {
                const float a = op_at(A, lda, ta, i, k), b = op_at(B, ldb, tb, k, j);
                const double p = (double)sl_bf16_round(a) * (double)sl_bf16_round(b);
                ref += p, sabs += fabs(p), sabs32 += fabs((double)a * (double)b);
            }
            const double cb = beta == 0.0f ? 0.0 : (double)beta * C0[i * ldc + j];
            ref = (double)alpha * ref + cb;
            const double got = C[i * ldc + j], mag = fabs((double)alpha) * sabs + fabs(cb);
            const double bound = ulps * BF16_U * mag, e = fabs(got - ref);
            if (!(e <= bound)) {
                if (bad_ref++ < 3)
                    fprintf(stderr, "  %s (%lld,%lld): got %.9g ref %.9g err %.3g bound %.3g\n", path_name(path),
                            (long long)i, (long long)j, got, ref, e, bound);
            }
            if (bound > 0 && e / bound > w->vs_ref) w->vs_ref = e / bound;
            /* against fp32: the operands' rounding plus both summations */
            const double e32 = fabs(got - (double)C32[i * ldc + j]);
            const double mag32 = fabs((double)alpha) * sabs32 + fabs(cb);
            const double b32 = BF16_PRODUCT_REL * fabs((double)alpha) * sabs32 + bound + ulps * BF16_U * mag32;
            if (!(e32 <= b32)) bad_f32++;
            if (sabs32 > 0 && alpha != 0.0f && e32 / (fabs((double)alpha) * sabs32) > w->vs_f32)
                w->vs_f32 = e32 / (fabs((double)alpha) * sabs32);
        }
        for (int64_t j = s.N; j < ldc; j++) bad_pad += f2u(C[i * ldc + j]) != f2u(C0[i * ldc + j]);
    }
    CHECK(bad_ref == 0 && bad_f32 == 0 && bad_pad == 0,
          "bf16 %s M%lld N%lld K%lld ta%d tb%d alpha %g beta %g: %ld values outside the summation bound, %ld too far "
          "from fp32, %ld columns past N written",
          path_name(path), (long long)s.M, (long long)s.N, (long long)s.K, ta, tb, alpha, beta, bad_ref, bad_f32,
          bad_pad);
    sl_free(A); sl_free(B); sl_free(C0); sl_free(C); sl_free(C32);
}

/* The packers round exactly: K = 1 and the other operand all ones, so C(i, j) is the rounded value
 * (through A's packer and through B's, in both layouts). The DPBF16 path reads a denormal bfloat16
 * as zero (DAZ). Values: ties, near-ties, NaN, Inf, overflow, denormals, random. */
static void check_pack_rounding(int path, uint64_t *rng) {
    const int64_t n = 200; /* >= 96: no skinny swap; several panels */
    float x[200], ones[200];
    static const uint32_t special[] = {0x3f808000u, 0x3f818000u, 0x3f808001u, 0xbf818000u, 0x7f7fffffu, 0x7f800000u,
                                       0xff800000u, 0x7fc00000u, 0x7f800001u, 0x00008000u, 0x00018000u, 0x007fffffu,
                                       0x80000001u, 0x00000000u, 0x80000000u, 0x7f7f8000u};
    const size_t ns = sizeof special / sizeof special[0];
    for (int64_t i = 0; i < n; i++) {
        ones[i] = 1.0f;
        x[i] = (size_t)i < ns ? u2f(special[i]) : u2f((uint32_t)nt_next(rng));
    }
    long bad = 0;
    for (int side = 0; side < 2; side++) /* 0: x in A (a column), 1: x in B (a row) */
        for (int tr = 0; tr < 2; tr++) {
            const int64_t M = side ? 16 : n, N = side ? n : 16;
            float *C = nt_zeros(M * N);
            /* a [M,1] or [1,N] matrix is the same memory stored either way: ld 1 or the length */
            const SlGemmOperand xa = sl_gemm_f32(x, tr ? M : 1, tr), oa = sl_gemm_f32(ones, tr ? M : 1, tr);
            const SlGemmOperand xb = sl_gemm_f32(x, tr ? 1 : N, tr), ob = sl_gemm_f32(ones, tr ? 1 : N, tr);
            sl_gemm_op_bf16_path(path, M, N, 1, 1.0f, side ? &oa : &xa, side ? &xb : &ob, 0.0f, C, N);
            for (int64_t i = 0; i < M; i++)
                for (int64_t j = 0; j < N; j++) {
                    const float v = x[side ? j : i], got = C[i * N + j];
                    const uint16_t h = sl_float_to_bf16(v);
                    float want = sl_bf16_to_float(h);
                    if (path == SL_GEMM_BF16_PATH_DPBF16 && (h & 0x7f80) == 0) want = 0.0f; /* DAZ */
                    const int ok = isnan(v) ? isnan(got) : f2u(got) == f2u(want) || (want == 0.0f && got == 0.0f);
                    if (!ok && bad++ < 3)
                        fprintf(stderr, "  %s side %d trans %d: x 0x%08x -> C 0x%08x, want 0x%08x\n", path_name(path),
                                side, tr, f2u(v), f2u(got), f2u(want));
                }
            sl_free(C);
        }
    CHECK(bad == 0, "bf16 %s: %ld packed values not rounded to the nearest bfloat16", path_name(path), bad);
}

/* Same bytes: 1 and 2 threads; nested in a parallel region; a sub-block of the product computed alone
 * (another tile plan; skinny: swapped when A is transposed, partial panels when not). */
static void check_bits(int path, uint64_t *rng) {
    const int dense = path != SL_GEMM_BF16_PATH_BLAS; /* the micro-kernel paths: bits depend on K alone */
    for (int t = 0; t < 8; t++) {
        const int ta = t & 1, tb = (t >> 1) & 1, skinny = t >> 2;
        const int64_t M = skinny ? 2000 : 330, N = skinny ? 64 : 1100, K = 700;
        const int64_t lda = ta ? M : K, ldb = tb ? K : N;
        float *A = nt_randn_new(M * K, rng, 0.0, 1.0), *B = nt_randn_new(K * N, rng, 0.0, 1.0);
        float *C1 = nt_zeros(M * N), *C2 = nt_zeros(M * N), *C3 = nt_zeros(M * N);
        const SlGemmOperand fa = sl_gemm_f32(A, lda, ta), fb = sl_gemm_f32(B, ldb, tb);
        const int saved = omp_get_max_threads();
        omp_set_num_threads(1);
        sl_gemm_op_bf16_path(path, M, N, K, 1.0f, &fa, &fb, 0.0f, C1, N);
        omp_set_num_threads(2);
        sl_gemm_op_bf16_path(path, M, N, K, 1.0f, &fa, &fb, 0.0f, C2, N);
        omp_set_num_threads(saved);
        CHECK(same_bytes(C1, C2, M * N), "bf16 %s ta%d tb%d %s: 1 and 2 threads differ", path_name(path), ta, tb,
              skinny ? "skinny" : "");
        if (dense) {
#pragma omp parallel num_threads(2)
            {
#pragma omp single
                sl_gemm_op_bf16_path(path, M, N, K, 1.0f, &fa, &fb, 0.0f, C3, N);
            }
            CHECK(same_bytes(C1, C3, M * N), "bf16 %s ta%d tb%d: a nested call differs", path_name(path), ta, tb);
            /* rows [r0, r0+m) x columns [c0, c0+n) alone, n < 96 (skinny) and wide */
            const int64_t r0 = 7, c0 = 5, m = skinny ? 1500 : 130, n = skinny ? 40 : 700;
            const SlGemmOperand sa = sl_gemm_f32(A + (ta ? r0 : r0 * lda), lda, ta);
            const SlGemmOperand sb = sl_gemm_f32(B + (tb ? c0 * ldb : c0), ldb, tb);
            float *S = nt_zeros(m * n);
            sl_gemm_op_bf16_path(path, m, n, K, 1.0f, &sa, &sb, 0.0f, S, n);
            int same = 1;
            for (int64_t i = 0; i < m; i++) same &= memcmp(S + i * n, C1 + (r0 + i) * N + c0, sizeof(float) * (size_t)n) == 0;
            CHECK(same, "bf16 %s ta%d tb%d: a [%lld x %lld] sub-block computed alone differs from the whole product",
                  path_name(path), ta, tb, (long long)m, (long long)n);
            sl_free(S);
        }
        sl_free(A); sl_free(B); sl_free(C1); sl_free(C2); sl_free(C3);
    }
}

/* binary16, bfloat16 and gathered operands on the bf16 kernel: the bytes of fp32 operands holding the
 * same numbers (a bfloat16 operand: the fp32 one it was rounded from). The BLAS path holds a gathered B
 * to op(B) stored untransposed (OpenBLAS's own order may depend on the layout). */
static void check_kernel_formats(int path, Shape s, int ta, int tb, uint64_t *rng) {
    const int64_t pad = 3, ar = ta ? s.K : s.M, ac = ta ? s.M : s.K, br = tb ? s.N : s.K, bc = tb ? s.K : s.N;
    const int64_t lda = ac + pad, ldb = bc + pad, ldc = s.N + pad;
    float *A = nt_randn_new(ar * lda, rng, 0.0, 1.0), *B = nt_randn_new(br * ldb, rng, 0.0, 1.0);
    float *Ah = nt_copy(A, ar * lda);
    uint16_t *Ab = u16_new(ar * lda), *Bb = u16_new(br * ldb), *Ahh = to_f16(Ah, ar * lda);
    sl_f32_to_bf16(Ab, A, (size_t)(ar * lda));
    sl_f32_to_bf16(Bb, B, (size_t)(br * ldb));
    float *Bop = nt_zeros(s.K * s.N);
    for (int64_t k = 0; k < s.K; k++)
        for (int64_t j = 0; j < s.N; j++) Bop[k * s.N + j] = op_at(B, ldb, tb, k, j);
    GatherCtx gc = {Bop, s.K, s.N};
    const SlGemmOperand fa = sl_gemm_f32(A, lda, ta), fb = sl_gemm_f32(B, ldb, tb), fbop = sl_gemm_f32(Bop, s.N, 0);
    const SlGemmOperand ba = sl_gemm_bf16(Ab, lda, ta), bb = sl_gemm_bf16(Bb, ldb, tb), fah = sl_gemm_f32(Ah, lda, ta);
    const SlGemmOperand ha = sl_gemm_f16(Ahh, lda, ta), gb = {SL_GEMM_GATHER, 0, NULL, 0, test_gather, &gc};
    float *R = nt_zeros(s.M * ldc), *Rg = nt_zeros(s.M * ldc), *Rh = nt_zeros(s.M * ldc), *C = nt_zeros(s.M * ldc);
    sl_gemm_op_bf16_path(path, s.M, s.N, s.K, 0.5f, &fa, &fb, 0.0f, R, ldc);
    sl_gemm_op_bf16_path(path, s.M, s.N, s.K, 0.5f, &fa, &fbop, 0.0f, Rg, ldc);
    sl_gemm_op_bf16_path(path, s.M, s.N, s.K, 0.5f, &fah, &fb, 0.0f, Rh, ldc);
    const SlGemmOperand *va[4] = {&ba, &fa, &ha, &ba}, *vb[4] = {&bb, &gb, &bb, &gb};
    const float *want[4] = {R, path == SL_GEMM_BF16_PATH_BLAS ? Rg : R, Rh, path == SL_GEMM_BF16_PATH_BLAS ? Rg : R};
    for (int v = 0; v < 4; v++) {
        memset(C, 0, sizeof(float) * (size_t)(s.M * ldc));
        g_gather_bad = 0;
        sl_gemm_op_bf16_path(path, s.M, s.N, s.K, 0.5f, va[v], vb[v], 0.0f, C, ldc);
        CHECK(same_bytes(C, want[v], s.M * ldc) && g_gather_bad == 0,
              "bf16 %s formats variant %d M%lld N%lld K%lld ta%d tb%d: bytes differ from fp32 operands (%d bad gathers)",
              path_name(path), v, (long long)s.M, (long long)s.N, (long long)s.K, ta, tb, g_gather_bad);
    }
    sl_free(A); sl_free(B); sl_free(Ah); sl_free(Ab); sl_free(Bb); sl_free(Ahh); sl_free(Bop);
    sl_free(R); sl_free(Rg); sl_free(Rh); sl_free(C);
}

/* DPBF16 and FMA: the same bytes where no denormal occurs (N(0,1) data; see gemm.h). */
static void check_dp_vs_fma(uint64_t *rng) {
    const Shape shapes[] = {{330, 1100, 700}, {13, 97, 257}, {2000, 64, 301}, {37, 70, 1}};
    for (size_t si = 0; si < sizeof shapes / sizeof shapes[0]; si++)
        for (int t = 0; t < 4; t++) {
            const Shape s = shapes[si];
            const int ta = t & 1, tb = t >> 1;
            float *A = nt_randn_new(s.M * s.K, rng, 0.0, 1.0), *B = nt_randn_new(s.K * s.N, rng, 0.0, 1.0);
            float *C1 = nt_randn_new(s.M * s.N, rng, 0.0, 1.0), *C2 = nt_copy(C1, s.M * s.N);
            const SlGemmOperand fa = sl_gemm_f32(A, ta ? s.M : s.K, ta), fb = sl_gemm_f32(B, tb ? s.K : s.N, tb);
            sl_gemm_op_bf16_path(SL_GEMM_BF16_PATH_DPBF16, s.M, s.N, s.K, 1.5f, &fa, &fb, -0.5f, C1, s.N);
            sl_gemm_op_bf16_path(SL_GEMM_BF16_PATH_FMA, s.M, s.N, s.K, 1.5f, &fa, &fb, -0.5f, C2, s.N);
            CHECK(same_bytes(C1, C2, s.M * s.N), "bf16 M%lld N%lld K%lld ta%d tb%d: DPBF16 and FMA paths differ",
                  (long long)s.M, (long long)s.N, (long long)s.K, ta, tb);
            sl_free(A); sl_free(B); sl_free(C1); sl_free(C2);
        }
}

static void check_names(void) {
    SlCtx ctx;
    sl_ctx_init(&ctx);
    SlKernels k = {0};
    CHECK(sl_kernels_parse(&k, "gemm", "bf16", "SL_GEMM", &ctx) == SL_OK && k.gemm == SL_GEMM_KERNEL_BF16,
          "SL_GEMM=bf16 must parse on every CPU: %s", ctx.msg);
    CHECK(!strcmp(sl_kernels_name("gemm", SL_GEMM_KERNEL_BF16), "bf16"), "the bf16 kernel's name");
    CHECK(sl_kernels_gemm(&k) == SL_GEMM_KERNEL_BF16, "a bf16 configuration runs the bf16 kernel");
    const SlKernels def = sl_kernels_default(), zero = {0};
    CHECK(def.gemm != SL_GEMM_KERNEL_BF16 && sl_kernels_gemm(&zero) != SL_GEMM_KERNEL_BF16 &&
              sl_kernels_gemm(NULL) != SL_GEMM_KERNEL_BF16,
          "AUTO must never select the bf16 kernel");
    const int cpu = __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bf16");
    CHECK(sl_kernels_available(&k) == cpu, "sl_kernels_available(bf16) %d, the CPU's AVX512_BF16 %d",
          sl_kernels_available(&k), cpu);
    const int p = sl_gemm_bf16_path();
    CHECK(p == (cpu ? SL_GEMM_BF16_PATH_DPBF16 : __builtin_cpu_supports("avx512f") ? SL_GEMM_BF16_PATH_FMA
                                                                                    : SL_GEMM_BF16_PATH_BLAS),
          "sl_gemm_bf16_path %d does not match the CPU", p);
    printf("bf16 kernel on this CPU: %s path (sl_kernels_available %d)\n", path_name(p), sl_kernels_available(&k));
}

int main(void) {
    __builtin_cpu_init();
    uint64_t rng = 20240611;
    check_conversion();
    check_names();

    /* 2. bfloat16 operands on the fp32 kernels */
    const Shape op_shapes[] = {
        {1, 1, 1},       {13, 33, 257},   {11, 100, 5},  {25, 128, 15}, {50, 200, 300}, {72, 1000, 520},
        {73, 130, 33},   {200, 16, 300},  {130, 64, 257}, {97, 33, 70}, {300, 700, 100}, {269, 1100, 530},
    };
    const int fp32_kernels[2] = {SL_GEMM_KERNEL_BLAS, SL_GEMM_KERNEL_AVX512};
    for (int ki = 0; ki < 2; ki++) {
        const SlKernels k = {fp32_kernels[ki], 0, 0};
        if (!sl_kernels_available(&k)) {
            printf("fp32 kernel %s not available on this CPU: its bfloat16-operand checks skipped\n",
                   sl_kernels_name("gemm", fp32_kernels[ki]));
            continue;
        }
        for (size_t si = 0; si < sizeof op_shapes / sizeof op_shapes[0]; si++)
            for (int t = 0; t < 4; t++)
                check_operands(fp32_kernels[ki], op_shapes[si], t & 1, t >> 1, t == 3 ? -1.5f : 1.0f,
                               t == 1 ? 0.0f : t == 2 ? 1.0f : -0.75f, 0, &rng);
        for (int t = 0; t < 4; t++) check_operands(fp32_kernels[ki], (Shape){130, 300, 200}, t & 1, t >> 1, 1.0f, 1.0f, 1, &rng);
    }

    /* 3. the bf16 kernel, each path this CPU runs */
    const Shape shapes[] = {
        {1, 1, 1},     {1, 1, 2},      {3, 2, 1},      {12, 32, 256},  {13, 33, 257}, {11, 100, 5},
        {25, 128, 16}, {37, 70, 300},  {5, 1000, 3},   {1000, 5, 40},  {64, 16, 1200}, {97, 33, 70},
        {200, 16, 300}, {130, 64, 257}, {73, 130, 33}, {330, 530, 97}, {13, 97, 511}, {150, 600, 513},
    };
    const int want_dp = __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bf16");
    const int paths[3] = {SL_GEMM_BF16_PATH_DPBF16, SL_GEMM_BF16_PATH_FMA, SL_GEMM_BF16_PATH_BLAS};
    const int runs[3] = {want_dp, __builtin_cpu_supports("avx512f"), 1};
    for (int pi = 0; pi < 3; pi++) {
        const int path = paths[pi];
        if (!runs[pi]) {
            printf("bf16 %s path: this CPU cannot run it, skipped\n", path_name(path));
            continue;
        }
        check_pack_rounding(path, &rng);
        for (size_t si = 0; si < sizeof shapes / sizeof shapes[0]; si++)
            for (int t = 0; t < 4; t++) {
                check_kernel(path, shapes[si], t & 1, t >> 1, 1.0f, 1.0f, &rng);
                check_kernel(path, shapes[si], t & 1, t >> 1, 0.5f, 0.0f, &rng);
                check_kernel(path, shapes[si], t & 1, t >> 1, -1.5f, -0.75f, &rng);
            }
        for (int r = 0; r < 8; r++) { /* random shapes */
            const Shape s = {1 + (int64_t)(nt_next(&rng) % 300), 1 + (int64_t)(nt_next(&rng) % 500),
                             1 + (int64_t)(nt_next(&rng) % 600)};
            check_kernel(path, s, (int)(nt_next(&rng) & 1), (int)(nt_next(&rng) & 1), 1.0f, r & 1 ? 0.0f : 1.0f, &rng);
        }
        check_bits(path, &rng);
        const Shape fshapes[] = {{13, 33, 257}, {73, 130, 33}, {200, 16, 300}, {269, 1100, 530}};
        for (size_t si = 0; si < sizeof fshapes / sizeof fshapes[0]; si++)
            for (int t = 0; t < 4; t++) check_kernel_formats(path, fshapes[si], t & 1, t >> 1, &rng);
        printf("bf16 %s path: largest error %.3f of the summation bound (K + 2 ceil(K/256) + 2) u (|alpha| sum|ab| "
               "+ |beta c|); largest |C - C_fp32| %.5f of |alpha| sum|ab| (bound 2^-7 + 2^-16 = %.5f)\n",
               path_name(path), g_worst[path].vs_ref, g_worst[path].vs_f32, BF16_PRODUCT_REL);
    }
    if (runs[0] && runs[1]) check_dp_vs_fma(&rng);
    else printf("DPBF16 vs FMA bytes: needs both paths, skipped\n");
    printf("%d checks, %d failures\n", sl_test_checks, sl_test_failures);
    return sl_test_failures ? 1 : 0;
}
