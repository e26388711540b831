/* test_nf4.c - NF4 frozen weights: the format against bitsandbytes' (via a torch
 * re-statement, tests/reference/nf4_ref.py -> tests/data/nf4_golden.bin), the error bound,
 * the fused kernels against dequantize + dense and their _ref twins, SIMD paths against
 * scalar, determinism across thread counts, the NF4 U-Net against fp32, LoRA gradients on
 * an NF4 base against the dense maths with the dequantized weights, and training.
 */
#include <math.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "core/safetensors.h"
#include "core/status.h"
#include "fixture_tiny.h"
#include "nn/gemm.h"
#include "nn/nf4.h"
#include "pipeline/quant.h"
#include "pipeline/train.h"
#include "styles/adapter.h"
#include "test_util.h"

/* bitsandbytes: bitsandbytes/functional.py get_4bit_type("nf4") (the same 16 values appear
 * in csrc/kernels.cu dDequantizeNF4). Typed in here independently of nn/nf4.c. */
static const double published_nf4[16] = {
    -1.0, -0.6961928009986877, -0.5250730514526367, -0.39491748809814453, -0.28444138169288635,
    -0.18477343022823334, -0.09105003625154495, 0.0, 0.07958029955625534, 0.16093020141124725,
    0.24611230194568634, 0.33791524171829224, 0.44070982933044434, 0.5626170039176941,
    0.7229568362236023, 1.0,
};

static uint64_t rng_next(uint64_t *s) {
    *s += 0x9E3779B97F4A7C15ull;
    uint64_t z = *s;
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}
static double rng_unif(uint64_t *s) { return ((double)(rng_next(s) >> 11) + 0.5) / 9007199254740992.0; }
static void fill_gauss(float *x, int64_t n, uint64_t seed, float sd) {
    uint64_t s = seed;
    for (int64_t i = 0; i < n; i++)
        x[i] = (float)(sd * sqrt(-2.0 * log(rng_unif(&s))) * cos(6.283185307179586 * rng_unif(&s)));
}

/* A bound NF4 weight with its own memory (free with free(W->blocks)). */
static void make_w(SlNf4Weight *W, const float *w, int64_t O, int64_t I, int dq) {
    void *mem = sl_alloc(sl_nf4_bytes(O, I, dq));
    sl_nf4_bind(W, mem, O, I, dq);
    float *tmp = malloc(sizeof(float) * (size_t)W->n_blocks);
    sl_nf4_quantize(W, w, tmp);
    free(tmp);
}

static void test_codebook(void) {
    int ok = 1;
    for (int k = 0; k < 16; k++) ok &= sl_nf4_code[k] == (float)published_nf4[k];
    CHECK(ok, "NF4 code book equals bitsandbytes' published values");
    /* nibble order, by hand: absmax 1; 1.0 -> 15, -1.0 -> 0, 0 -> 7, 0.5 -> 12 (0.5 < midpoint
     * 0.5017 of 0.4407/0.5626), -0.3 -> 4 (above the midpoint -0.3397 of -0.3949/-0.2844),
     * then 0.07 -> 8 (above the midpoint 0.0398 of 0/0.0796) and past the end 7 (bitsandbytes
     * pads with 0.0) */
    const float w[7] = {1.0f, -1.0f, 0.0f, 0.5f, -0.3f, 0.0f, 0.07f};
    SlNf4Weight W;
    make_w(&W, w, 1, 7, 0);
    CHECK(W.n_blocks == 1 && W.absmax[0] == 1.0f, "one block, absmax 1 (got %g)", W.absmax[0]);
    CHECK(W.blocks[0].qs[0] == 0xF0 && W.blocks[0].qs[1] == 0x7C && W.blocks[0].qs[2] == 0x47 &&
              W.blocks[0].qs[3] == 0x87,
          "packing: first element in the high nibble (got %02x %02x %02x %02x)", W.blocks[0].qs[0],
          W.blocks[0].qs[1], W.blocks[0].qs[2], W.blocks[0].qs[3]);
    float back[7];
    sl_nf4_dequantize_ref(back, &W);
    CHECK(back[0] == 1.0f && back[1] == -1.0f && back[2] == 0.0f && back[3] == sl_nf4_code[12],
          "dequantize: code x absmax");
    sl_free(W.blocks);
    /* an all-zero block: code 7, absmax 0, dequantizes to 0 */
    float z[64] = {0};
    make_w(&W, z, 1, 64, 0);
    CHECK(W.absmax[0] == 0.0f && W.blocks[0].qs[5] == 0x77, "zero block -> code 7");
    sl_free(W.blocks);
}

/* tests/data/nf4_golden.bin from tests/reference/nf4_ref.py (torch 1.13):
 * O, I (i32), w [O,I] f32, packed [(O*I+1)/2] u8, absmax [nb] f32, offset f32, dynamic map [256] f32. */
static void test_golden(void) {
    char p[4096];
    snprintf(p, sizeof p, "%s/tests/data/nf4_golden.bin", sl_test_source());
    FILE *f = fopen(p, "rb");
    CHECK(f != NULL, "open %s", p);
    if (!f) return;
    int32_t dims[2] = {0, 0};
    int ok = fread(dims, 4, 2, f) == 2;
    const int64_t O = dims[0], I = dims[1], n = O * I, nb = (n + 63) / 64, nbytes = (n + 1) / 2;
    float *w = malloc(sizeof(float) * (size_t)n), *am = malloc(sizeof(float) * (size_t)nb), map[256], off = 0;
    uint8_t *packed = malloc((size_t)nbytes);
    ok = ok && fread(w, 4, (size_t)n, f) == (size_t)n && fread(packed, 1, (size_t)nbytes, f) == (size_t)nbytes &&
         fread(am, 4, (size_t)nb, f) == (size_t)nb && fread(&off, 4, 1, f) == 1 && fread(map, 4, 256, f) == 256;
    fclose(f);
    CHECK(ok, "read %s", p);
    if (ok) {
        CHECK(memcmp(map, sl_nf4_dynamic_map, sizeof map) == 0, "dynamic map equals create_dynamic_map()");
        SlNf4Weight W;
        make_w(&W, w, O, I, 0);
        CHECK(memcmp(W.blocks, packed, (size_t)nbytes) == 0, "packed codes equal the torch reference (%lldx%lld)",
              (long long)O, (long long)I);
        CHECK(memcmp(W.absmax, am, sizeof(float) * (size_t)nb) == 0, "absmax equals the torch reference");
        sl_free(W.blocks);
        make_w(&W, w, O, I, 1);
        /* torch's float32 mean vs our double sum: equal to float rounding */
        CHECK(fabsf(W.offset - off) <= 1e-6f * fabsf(off), "double-quant offset = mean(absmax): %.9g vs %.9g", W.offset, off);
        sl_free(W.blocks);
    }
    free(w);
    free(am);
    free(packed);
}

/* Error on Gaussian weights. Bound: w/absmax lies in [-1,1] and is rounded to the nearest
 * code, so |error| <= absmax * (largest gap between adjacent codes)/2 = absmax * 0.15190
 * (the gap -1 .. -0.6962). RMS: with 64 Gaussian samples absmax ~ 2.4 sigma, so w/absmax
 * spreads over the codes' middle, where the gaps are 0.08-0.12 wide: a uniform rounding
 * error of RMS gap/sqrt(12) ~ 0.03 absmax (measured 0.0351). We assert <= 0.04 absmax:
 * margin for the seed, while rounding toward zero instead of to the nearest code (about
 * twice the error) fails. Double quantization adds at most (largest gap of the dynamic
 * map)/2 x absmax2 to each block scale. */
static void test_error_bound(void) {
    const int64_t O = 262, I = 1000, n = O * I;
    float *w = malloc(sizeof(float) * (size_t)n), *back = malloc(sizeof(float) * (size_t)n);
    fill_gauss(w, n, 42, 0.02f);
    double half_gap = 0;
    for (int k = 0; k < 15; k++) half_gap = fmax(half_gap, 0.5 * (published_nf4[k + 1] - published_nf4[k]));
    for (int dq = 0; dq <= 1; dq++) {
        SlNf4Weight W;
        make_w(&W, w, O, I, dq);
        sl_nf4_dequantize_ref(back, &W);
        double se = 0, sa = 0, worst = 0;
        for (int64_t e = 0; e < n; e++) {
            const int64_t b = e / 64;
            double am = 0;
            for (int64_t j = b * 64; j < (b + 1) * 64 && j < n; j++) am = fmax(am, fabs(w[j]));
            const double err = fabs((double)back[e] - w[e]);
            se += err * err;
            sa += am * am;
            double lim = am * half_gap;
            if (dq) {
                double g2 = 0;
                for (int k = 0; k < 255; k++) g2 = fmax(g2, 0.5 * (sl_nf4_dynamic_map[k + 1] - sl_nf4_dynamic_map[k]));
                lim += g2 * W.absmax2[b / SL_NF4_DQ_BLOCK];
            }
            worst = fmax(worst, err / (lim + 1e-12));
        }
        const double rms = sqrt(se / sa);
        printf("nf4%s Gaussian %lldx%lld: RMS error %.4f x absmax; worst error %.3f of the bound\n", dq ? "+dq" : "",
               (long long)O, (long long)I, rms, worst);
        CHECK(worst <= 1.0 + 1e-5, "nf4%s max error within half the largest code gap (%.4f of it)", dq ? "+dq" : "", worst);
        CHECK(rms <= 0.04, "nf4%s RMS error %.4f x absmax <= 0.04", dq ? "+dq" : "", rms);
        sl_free(W.blocks);
    }
    free(w);
    free(back);
}

static void check_bits(const char *what, const float *a, const float *b, size_t n) {
    CHECK(memcmp(a, b, n * sizeof(float)) == 0, "%s: identical bits", what);
    if (memcmp(a, b, n * sizeof(float)) == 0) printf("ok   %s: identical bits (%zu values)\n", what, n);
}

static void test_kernels_case(int64_t N, int64_t O, int64_t I, int dq) {
    char what[160];
    const int64_t nw = O * I;
    float *w = malloc(sizeof(float) * (size_t)nw), *wd = malloc(sizeof(float) * (size_t)nw);
    float *x = malloc(sizeof(float) * (size_t)(N * I)), *g = malloc(sizeof(float) * (size_t)(N * O));
    float *y = malloc(sizeof(float) * (size_t)(N * O)), *yr = malloc(sizeof(float) * (size_t)(N * O));
    float *y2 = malloc(sizeof(float) * (size_t)(N * O));
    float *d = malloc(sizeof(float) * (size_t)(N * I)), *dr = malloc(sizeof(float) * (size_t)(N * I));
    float *d2 = malloc(sizeof(float) * (size_t)(N * I));
    fill_gauss(w, nw, 1 + (uint64_t)O, 0.05f);
    fill_gauss(x, N * I, 2 + (uint64_t)I, 1.0f);
    fill_gauss(g, N * O, 3 + (uint64_t)N, 1.0f);
    SlNf4Weight W;
    make_w(&W, w, O, I, dq);
    float *work = malloc(sizeof(float) * sl_nf4_work_floats(&W));
    sl_nf4_dequantize_ref(wd, &W);
    const char *tag = dq ? "+dq" : "";
    /* forward vs dequantize + dense */
    sl_nf4_linear_forward(y, x, &W, N, work, NULL);
    sl_sgemm(0, 1, N, O, I, 1.0f, x, I, wd, I, 0.0f, yr, O, NULL);
    double sc = sl_test_scale(yr, (size_t)(N * O));
    snprintf(what, sizeof what, "nf4%s forward %lldx%lldx%lld vs dequantize+dense", tag, (long long)N, (long long)O, (long long)I);
    sl_test_close(what, y, yr, (size_t)(N * O), 1e-5 * sc, 1e-5);
    sl_nf4_linear_forward_ref(y2, x, &W, N);
    snprintf(what, sizeof what, "nf4%s forward %lldx%lldx%lld vs _ref", tag, (long long)N, (long long)O, (long long)I);
    sl_test_close(what, y, y2, (size_t)(N * O), 1e-5 * sc, 1e-5);
    /* backward-input (accumulates onto an initial din) */
    fill_gauss(d, N * I, 9, 0.5f);
    memcpy(dr, d, sizeof(float) * (size_t)(N * I));
    memcpy(d2, d, sizeof(float) * (size_t)(N * I));
    sl_nf4_linear_backward_input(d, g, &W, N, work, NULL);
    sl_sgemm(0, 0, N, I, O, 1.0f, g, O, wd, I, 1.0f, dr, I, NULL);
    sc = sl_test_scale(dr, (size_t)(N * I));
    snprintf(what, sizeof what, "nf4%s backward-input %lldx%lldx%lld vs dequantize+dense", tag, (long long)N, (long long)O, (long long)I);
    sl_test_close(what, d, dr, (size_t)(N * I), 1e-5 * sc, 1e-5);
    sl_nf4_linear_backward_input_ref(d2, g, &W, N);
    snprintf(what, sizeof what, "nf4%s backward-input %lldx%lldx%lld vs _ref", tag, (long long)N, (long long)O, (long long)I);
    sl_test_close(what, d, d2, (size_t)(N * I), 1e-5 * sc, 1e-5);
    /* SIMD dequantizers vs scalar: identical bits on misaligned ranges; fused results too */
    const SlNf4Isa isas[3] = {SL_NF4_ISA_REF, SL_NF4_ISA_AVX2, SL_NF4_ISA_AVX512};
    for (int k = 0; k < 3; k++) {
        if (!sl_nf4_isa_supported(isas[k])) {
            printf("skip %s (not supported by this CPU)\n", sl_nf4_isa_name(isas[k]));
            continue;
        }
        const int64_t e0 = nw > 200 ? 37 : 1, len = nw - e0 - (nw > 200 ? 29 : 0);
        sl_nf4_dequantize_range(y2, &W, e0, len < N * O ? len : N * O, isas[k]);
        const int64_t m = len < N * O ? len : N * O;
        snprintf(what, sizeof what, "nf4%s dequantize %s vs scalar [%lld..+%lld)", tag, sl_nf4_isa_name(isas[k]), (long long)e0, (long long)m);
        check_bits(what, y2, wd + e0, (size_t)m);
        sl_nf4_linear_forward_isa(y2, x, &W, N, work, isas[k], NULL);
        snprintf(what, sizeof what, "nf4%s forward %s vs auto", tag, sl_nf4_isa_name(isas[k]));
        check_bits(what, y2, y, (size_t)(N * O));
    }
    /* 1 vs 2 threads */
    const int nt = omp_get_max_threads();
    omp_set_num_threads(1);
    sl_nf4_linear_forward(y2, x, &W, N, work, NULL);
    memcpy(d2, dr, sizeof(float) * (size_t)(N * I));
    sl_nf4_linear_backward_input(d2, g, &W, N, work, NULL);
    omp_set_num_threads(2);
    sl_nf4_linear_forward(yr, x, &W, N, work, NULL);
    memcpy(d, dr, sizeof(float) * (size_t)(N * I));
    sl_nf4_linear_backward_input(d, g, &W, N, work, NULL);
    omp_set_num_threads(nt);
    snprintf(what, sizeof what, "nf4%s forward 1 vs 2 threads", tag);
    check_bits(what, y2, yr, (size_t)(N * O));
    snprintf(what, sizeof what, "nf4%s backward-input 1 vs 2 threads", tag);
    check_bits(what, d2, d, (size_t)(N * I));
    sl_free(W.blocks);
    free(work);
    free(w), free(wd), free(x), free(g), free(y), free(yr), free(y2), free(d), free(dr), free(d2);
}

static void test_kernels(void) {
    test_kernels_case(37, 45, 83, 0);      /* I not a multiple of 64, odd O*I */
    test_kernels_case(300, 130, 320, 1);   /* several GEMM tiles of rows, double quant */
    test_kernels_case(5, 1100, 1000, 0);   /* several NF4 row tiles (tile = 512 rows at I=1000) */
}

/* ---- U-Net ---- */

typedef struct Inputs {
    int64_t B, H, W, T, D, C;
    float *sample, *t, *ehs, *out;
} Inputs;

static void inputs_make(Inputs *in, const SlUNetConfig *c, int64_t B, int64_t H, int64_t T) {
    in->B = B, in->H = in->W = H, in->T = T, in->D = c->cross_dim, in->C = c->in_channels;
    in->sample = malloc(sizeof(float) * (size_t)(B * in->C * H * H));
    in->out = malloc(sizeof(float) * (size_t)(B * c->out_channels * H * H));
    in->ehs = malloc(sizeof(float) * (size_t)(B * T * in->D));
    in->t = malloc(sizeof(float) * (size_t)B);
    fill_gauss(in->sample, B * in->C * H * H, 5, 1.0f);
    fill_gauss(in->ehs, B * T * in->D, 6, 1.0f);
    for (int64_t b = 0; b < B; b++) in->t[b] = (float)(137 + 411 * b);
}

static void inputs_free(Inputs *in) { free(in->sample), free(in->t), free(in->ehs), free(in->out); }

static double cosine(const float *a, const float *b, size_t n) {
    double ab = 0, aa = 0, bb = 0;
    for (size_t i = 0; i < n; i++) ab += (double)a[i] * b[i], aa += (double)a[i] * a[i], bb += (double)b[i] * b[i];
    return ab / sqrt(aa * bb + 1e-300);
}

/* Random-weight (untrained) U-Nets, default layers: tiny golden measured 0.9712, SD-1.5 shape
 * 0.957 (bench_nf4); attention only on the tiny model 0.9913. */
#define NF4_RANDOM_COS_MIN 0.96
#define NF4_RANDOM_ATTN_COS_MIN 0.99

static void test_unet_golden(void) {
    SlCtx ctx;
    sl_ctx_init(&ctx);
    char path[4096];
    snprintf(path, sizeof path, "%s/golden/tiny-sd1", sl_test_shared());
    SlModelOpts mo = {.skip_text = 1, .skip_vae = 1};
    SlModel ref, mem, str;
    if (sl_model_load(&ref, path, &mo, &ctx) != SL_OK) {
        CHECK(0, "load %s: %s", path, ctx.msg);
        return;
    }
    Inputs in;
    inputs_make(&in, &ref.unet_cfg, 2, 16, 7);
    const size_t no = (size_t)(in.B * ref.unet_cfg.out_channels * in.H * in.W);
    float *o_ref = malloc(sizeof(float) * no), *o_mem = malloc(sizeof(float) * no), *o_str = malloc(sizeof(float) * no);
    CHECK_OK(sl_unet_plan(&ref.unet, in.B, in.H, in.W, in.T, &ctx), &ctx);
    sl_unet_forward(&ref.unet, o_ref, in.sample, in.t, in.ehs);
    /* conv-only patterns are refused, unknown ones too */
    CHECK_OK(sl_model_load(&mem, path, &mo, &ctx), &ctx);
    CHECK(sl_unet_quantize_nf4(&mem.unet, "conv1", 0, NULL, &ctx) == SL_ERR_UNSUPPORTED, "convs refused: %s", ctx.msg);
    CHECK(sl_unet_quantize_nf4(&mem.unet, "attn,nope", 0, NULL, &ctx) == SL_ERR_ARG, "unknown pattern refused: %s", ctx.msg);
    for (int dq = 0; dq <= 1; dq++) {
        if (dq) CHECK_OK(sl_model_load(&mem, path, &mo, &ctx), &ctx);
        SlNf4Stats s;
        CHECK_OK(sl_unet_quantize_nf4(&mem.unet, NULL, dq, &s, &ctx), &ctx);
        if (sl_model_load_nf4(&str, path, &mo, NULL, dq, &ctx) != SL_OK) {
            CHECK(0, "nf4 load: %s", ctx.msg);
            return;
        }
        CHECK(s.n_layers > 0 && sl_unet_count_nf4(&mem.unet) == s.n_layers && sl_unet_count_nf4(&str.unet) == s.n_layers,
              "%d linears quantized", s.n_layers);
        CHECK(mem.unet.weights.size < s.arena_before, "arena shrank: %zu -> %zu bytes", s.arena_before, mem.unet.weights.size);
        CHECK(str.unet.weights.size == mem.unet.weights.size, "streamed load has the same arena size");
        CHECK_OK(sl_unet_plan(&mem.unet, in.B, in.H, in.W, in.T, &ctx), &ctx);
        CHECK_OK(sl_unet_plan(&str.unet, in.B, in.H, in.W, in.T, &ctx), &ctx);
        sl_unet_forward(&mem.unet, o_mem, in.sample, in.t, in.ehs);
        sl_unet_forward(&str.unet, o_str, in.sample, in.t, in.ehs);
        check_bits(dq ? "tiny U-Net nf4+dq: streamed load == in-memory quantization" : "tiny U-Net nf4: streamed load == in-memory quantization",
                   o_str, o_mem, no);
        {   /* the same bits with 1 and 2 threads */
            const int nt = omp_get_max_threads();
            omp_set_num_threads(1);
            sl_unet_forward(&str.unet, o_str, in.sample, in.t, in.ehs);
            omp_set_num_threads(2);
            sl_unet_forward(&str.unet, o_ref + 0, in.sample, in.t, in.ehs);
            omp_set_num_threads(nt);
            check_bits("tiny NF4 U-Net forward, 1 vs 2 threads", o_str, o_ref, no);
            sl_unet_forward(&ref.unet, o_ref, in.sample, in.t, in.ehs);
        }
        const double cs = cosine(o_mem, o_ref, no);
        printf("tiny U-Net nf4%s vs fp32: cosine %.6f (%d linears, %.3fx of their fp32 bytes)\n", dq ? "+dq" : "", cs,
               s.n_layers, (double)s.nf4_bytes / (double)s.fp32_bytes);
        /* The issue asks for 0.99. The tiny golden model has random (untrained) weights: its
         * 48 quantized linears, each at the NF4 figure of test_layer_cosine, compound to 0.971
         * (torch with the bitsandbytes algorithm gives the same, test_unet_torch); the trained
         * shipped model keeps 0.9997 (test_unet_trained). */
        CHECK(cs >= NF4_RANDOM_COS_MIN, "tiny U-Net nf4%s vs fp32 cosine %.5f >= %.2f", dq ? "+dq" : "", cs, NF4_RANDOM_COS_MIN);
        /* back to dense: the dequantized U-Net gives the same output up to GEMM rounding */
        CHECK_OK(sl_unet_dequantize_nf4(&mem.unet, &ctx), &ctx);
        CHECK(sl_unet_count_nf4(&mem.unet) == 0, "no NF4 layer left");
        sl_unet_forward(&mem.unet, o_ref + 0, in.sample, in.t, in.ehs);
        sl_test_close("dequantized dense U-Net vs NF4 U-Net", o_ref, o_str, no, 1e-5 * sl_test_scale(o_str, no), 1e-5);
        sl_unet_forward(&ref.unet, o_ref, in.sample, in.t, in.ehs);
        sl_model_free(&mem);
        sl_model_free(&str);
    }
    {   /* attention projections only */
        SlModel qa;
        CHECK_OK(sl_model_load_nf4(&qa, path, &mo, "attn", 0, &ctx), &ctx);
        CHECK_OK(sl_unet_plan(&qa.unet, in.B, in.H, in.W, in.T, &ctx), &ctx);
        sl_unet_forward(&qa.unet, o_mem, in.sample, in.t, in.ehs);
        const double cs = cosine(o_mem, o_ref, no);
        printf("tiny U-Net nf4 (attn only) vs fp32: cosine %.6f\n", cs);
        CHECK(cs >= NF4_RANDOM_ATTN_COS_MIN, "tiny U-Net nf4 attn-only vs fp32 cosine %.5f >= %.2f", cs, NF4_RANDOM_ATTN_COS_MIN);
        sl_model_free(&qa);
    }
    /* a pre-quantized file: write, load, same output */
    {
        SlModel q, back;
        CHECK_OK(sl_model_load_nf4(&q, path, &mo, "attn,ff,proj,time", 1, &ctx), &ctx);
        char dir[4096], f[4200];
        snprintf(dir, sizeof dir, "%s/test_nf4_prequant", sl_test_binary());
        mkdir(dir, 0755);
        char sub[4200];
        snprintf(sub, sizeof sub, "%s/unet", dir);
        mkdir(sub, 0755);
        snprintf(f, sizeof f, "%s/unet/diffusion_pytorch_model.safetensors", dir);
        SlStWriter wr;
        sl_st_writer_init(&wr);
        CHECK_OK(sl_unet_nf4_write(&q.unet, &wr, SL_F32, "attn,ff,proj,time", &ctx), &ctx);
        CHECK_OK(sl_st_writer_save(&wr, f, &ctx), &ctx);
        sl_st_writer_free(&wr);
        /* the folder: config + the quantized weights, other parts linked */
        const char *parts[] = {"vae", "text_encoder", "scheduler", "model_index.json", "unet/config.json"};
        for (int i = 0; i < 5; i++) {
            char s1[4200], s2[4200];
            snprintf(s1, sizeof s1, "%s/%s", path, parts[i]);
            snprintf(s2, sizeof s2, "%s/%s", dir, parts[i]);
            unlink(s2);
            CHECK(symlink(s1, s2) == 0, "link %s", s2);
        }
        SlStatus lst = sl_model_load_nf4(&back, dir, &mo, "attn", 0, &ctx); /* the file's format wins */
        CHECK_OK(lst, &ctx);
        if (lst == SL_OK) {
            CHECK(sl_unet_count_nf4(&back.unet) == sl_unet_count_nf4(&q.unet), "pre-quantized: %d NF4 linears",
                  sl_unet_count_nf4(&back.unet));
            CHECK_OK(sl_unet_plan(&q.unet, in.B, in.H, in.W, in.T, &ctx), &ctx);
            CHECK_OK(sl_unet_plan(&back.unet, in.B, in.H, in.W, in.T, &ctx), &ctx);
            sl_unet_forward(&q.unet, o_mem, in.sample, in.t, in.ehs);
            sl_unet_forward(&back.unet, o_str, in.sample, in.t, in.ehs);
            check_bits("pre-quantized file round trip", o_str, o_mem, no);
            sl_model_free(&back);
        }
        sl_model_free(&q);
    }
    sl_model_free(&ref);
    free(o_ref), free(o_mem), free(o_str);
    inputs_free(&in);
}

/* Named tolerances of the NF4 U-Net against fp32 (measured figures in README, NF4 section).
 * NF4 rounds each Gaussian weight with a relative error of ~0.092 (blocks of 64, absmax
 * scaling, as bitsandbytes), so ONE layer's output keeps a cosine of ~0.996 with its fp32
 * output; a U-Net compounds that over its quantized layers. How much survives depends on
 * the weights: the shipped trained model keeps >= 0.9997, random-weight models with the
 * same layers lose ~0.02-0.04 (its per-layer figures are the same: the attenuation is the
 * trained network's, not a property of the quantizer). */
#define NF4_LAYER_COS_MIN 0.994     /* one [320,640] Gaussian layer (measured 0.9959) */
#define NF4_TORCH_ATOL 1e-5         /* x output scale: stylora NF4 U-Net vs torch re-statement (measured 1.2e-6) */
#define NF4_TRAINED_COS_MIN 0.999   /* shipped shapes64, default layers, per timestep (measured 0.99972..0.99997) */

static void test_layer_cosine(void) {
    const int64_t O = 320, I = 640, N = 64;
    float *w = malloc(sizeof(float) * (size_t)(O * I)), *x = malloc(sizeof(float) * (size_t)(N * I));
    float *y = malloc(sizeof(float) * (size_t)(N * O)), *yq = malloc(sizeof(float) * (size_t)(N * O));
    fill_gauss(w, O * I, 31, 0.02f);
    fill_gauss(x, N * I, 32, 1.0f);
    SlNf4Weight W;
    make_w(&W, w, O, I, 0);
    for (int64_t n = 0; n < N; n++)
        for (int64_t o = 0; o < O; o++) {
            double acc = 0;
            for (int64_t i = 0; i < I; i++) acc += (double)x[n * I + i] * w[o * I + i];
            y[n * O + o] = (float)acc;
        }
    sl_nf4_linear_forward_ref(yq, x, &W, N);
    const double cs = cosine(yq, y, (size_t)(N * O));
    printf("one Gaussian layer [%lld,%lld], nf4 vs fp32 output cosine %.5f\n", (long long)O, (long long)I, cs);
    CHECK(cs >= NF4_LAYER_COS_MIN, "one NF4 layer: output cosine %.5f >= %.3f", cs, NF4_LAYER_COS_MIN);
    sl_free(W.blocks);
    free(w), free(x), free(y), free(yq);
}

/* The tiny golden U-Net against tests/reference/nf4_unet_ref.py, which quantizes the same
 * layers with bitsandbytes' algorithm in torch: the same output, fp32 and NF4. */
static void test_unet_torch(void) {
    SlCtx ctx;
    sl_ctx_init(&ctx);
    char path[4096], gold[4096];
    snprintf(path, sizeof path, "%s/golden/tiny-sd1", sl_test_shared());
    snprintf(gold, sizeof gold, "%s/tests/data/nf4_unet_tiny.safetensors", sl_test_source());
    SlStFile f;
    if (sl_st_open(&f, gold, &ctx) != SL_OK) {
        CHECK(0, "%s: %s", gold, ctx.msg);
        return;
    }
    const char *keys[5] = {"sample", "timestep", "encoder_hidden_states", "out_fp32", "out_nf4"};
    const SlStEntry *e[5];
    for (int k = 0; k < 5; k++) e[k] = sl_st_find(&f, keys[k]);
    if (!e[0] || !e[1] || !e[2] || !e[3] || !e[4] || e[0]->ndim != 4 || e[2]->ndim != 3) {
        CHECK(0, "%s: tensors missing", gold);
        sl_st_close(&f);
        return;
    }
    float *t[5];
    for (int k = 0; k < 5; k++) {
        t[k] = malloc(e[k]->nbytes);
        memcpy(t[k], sl_st_data(&f, e[k]), e[k]->nbytes);
    }
    const int64_t B = e[0]->shape[0], H = e[0]->shape[2], T = e[2]->shape[1];
    const size_t no = e[3]->nbytes / sizeof(float);
    float *o = malloc(e[3]->nbytes);
    SlModelOpts mo = {.skip_text = 1, .skip_vae = 1};
    SlModel m;
    for (int q = 0; q <= 1; q++) {
        SlStatus st = q ? sl_model_load_nf4(&m, path, &mo, NULL, 0, &ctx) : sl_model_load(&m, path, &mo, &ctx);
        CHECK_OK(st, &ctx);
        if (st) break;
        CHECK_OK(sl_unet_plan(&m.unet, B, H, H, T, &ctx), &ctx);
        sl_unet_forward(&m.unet, o, t[0], t[1], t[2]);
        const float *ref = t[3 + q];
        sl_test_close(q ? "tiny NF4 U-Net vs torch NF4 (bitsandbytes algorithm)" : "tiny fp32 U-Net vs torch", o, ref, no,
                      NF4_TORCH_ATOL * sl_test_scale(ref, no), 0);
        sl_model_free(&m);
    }
    for (int k = 0; k < 5; k++) free(t[k]);
    free(o);
    sl_st_close(&f);
}

/* The shipped trained model: NF4 (default layers) vs fp32 at three timesteps. */
static void test_unet_trained(void) {
    SlCtx ctx;
    sl_ctx_init(&ctx);
    char path[4096];
    snprintf(path, sizeof path, "%s/models/shapes64", sl_test_source());
    SlModelOpts mo = {.skip_text = 1, .skip_vae = 1};
    SlModel f32, q;
    if (sl_model_load(&f32, path, &mo, &ctx) != SL_OK) {
        CHECK(0, "load %s: %s", path, ctx.msg);
        return;
    }
    CHECK_OK(sl_model_load_nf4(&q, path, &mo, NULL, 0, &ctx), &ctx);
    Inputs in;
    inputs_make(&in, &f32.unet_cfg, 3, 16, 77);
    const float ts[3] = {20.0f, 500.0f, 980.0f};
    memcpy(in.t, ts, sizeof ts);
    const size_t no = (size_t)(in.B * f32.unet_cfg.out_channels * in.H * in.W), per = no / (size_t)in.B;
    float *oq = malloc(sizeof(float) * no);
    CHECK_OK(sl_unet_plan(&f32.unet, in.B, in.H, in.W, in.T, &ctx), &ctx);
    CHECK_OK(sl_unet_plan(&q.unet, in.B, in.H, in.W, in.T, &ctx), &ctx);
    sl_unet_forward(&f32.unet, in.out, in.sample, in.t, in.ehs);
    sl_unet_forward(&q.unet, oq, in.sample, in.t, in.ehs);
    for (int b = 0; b < 3; b++) {
        const double cs = cosine(oq + b * per, in.out + b * per, per);
        printf("shipped shapes64 (trained) nf4 vs fp32, t=%g: cosine %.5f\n", (double)ts[b], cs);
        CHECK(cs >= NF4_TRAINED_COS_MIN, "shapes64 nf4 vs fp32 at t=%g: cosine %.5f >= %.3f", (double)ts[b], cs, NF4_TRAINED_COS_MIN);
    }
    free(oq);
    inputs_free(&in);
    sl_model_free(&q);
    sl_model_free(&f32);
}

/* LoRA (targets attn,ff) on the NF4 base vs the same LoRA on the dense U-Net holding the
 * dequantized weights: outputs, dA, dB and d(sample) agree to 1e-4 of their scale. */
static void lora_grads(SlUNet *u, Inputs *in, const float *dout, float *out, float *dsample, SlAdapter *ad,
                       int64_t na, float *dA, float *dB, SlCtx *ctx) {
    SlSites sites;
    sl_sites_init(&sites);
    CHECK_OK(sl_sites_add_unet(&sites, u, ctx), ctx);
    SlAdapter *one[1] = {ad};
    SlAdapterSet set;
    CHECK_OK(sl_adapter_set_apply(&set, &sites, one, NULL, 1, 0.0f, 0, ctx), ctx);
    sl_adapter_zero_grads(ad);
    memset(dsample, 0, sizeof(float) * (size_t)(in->B * in->C * in->H * in->W));
    sl_unet_forward(u, out, in->sample, in->t, in->ehs);
    sl_unet_backward(u, dsample, dout);
    int64_t ka = 0, kb = 0;
    for (int i = 0; i < ad->n; i++) {
        const SlLoraMod *lm = &ad->mods[i];
        memcpy(dA + ka, lm->dA, sizeof(float) * (size_t)(lm->r * lm->I));
        memcpy(dB + kb, lm->dB, sizeof(float) * (size_t)(lm->O * lm->r));
        ka += lm->r * lm->I, kb += lm->O * lm->r;
    }
    (void)na;
    sl_adapter_set_remove(&set);
    sl_sites_free(&sites);
}

static void test_lora_grads(void) {
    SlCtx ctx;
    sl_ctx_init(&ctx);
    char path[4096];
    snprintf(path, sizeof path, "%s/golden/tiny-sd1", sl_test_shared());
    SlModelOpts mo = {.skip_text = 1, .skip_vae = 1};
    SlModel m;
    if (sl_model_load_nf4(&m, path, &mo, NULL, 1, &ctx) != SL_OK) {
        CHECK(0, "nf4 load: %s", ctx.msg);
        return;
    }
    SlUNet *u = &m.unet;
    Inputs in;
    inputs_make(&in, &m.unet_cfg, 2, 16, 7);
    CHECK_OK(sl_unet_plan(u, in.B, in.H, in.W, in.T, &ctx), &ctx);
    SlSites sites;
    sl_sites_init(&sites);
    CHECK_OK(sl_sites_add_unet(&sites, u, &ctx), &ctx);
    SlAdapterOpts o = sl_adapter_opts_default();
    o.targets = "attn,ff";
    o.rank = 4;
    SlAdapter ad;
    CHECK_OK(sl_adapter_create(&ad, &sites, &o, &ctx), &ctx);
    sl_sites_free(&sites);
    o.dora = 1;
    sl_sites_init(&sites);
    CHECK_OK(sl_sites_add_unet(&sites, u, &ctx), &ctx);
    SlAdapter bad;
    CHECK(sl_adapter_create(&bad, &sites, &o, &ctx) == SL_ERR_UNSUPPORTED, "DoRA on an NF4 base refused: %s", ctx.msg);
    sl_sites_free(&sites);
    CHECK_OK(sl_adapter_enable_grads(&ad, &ctx), &ctx);
    int64_t na = 0, nbb = 0;
    for (int i = 0; i < ad.n; i++) {
        fill_gauss(ad.mods[i].B, ad.mods[i].O * ad.mods[i].r, 100 + (uint64_t)i, 0.05f);
        na += ad.mods[i].r * ad.mods[i].I, nbb += ad.mods[i].O * ad.mods[i].r;
    }
    const size_t no = (size_t)(in.B * m.unet_cfg.out_channels * in.H * in.W), ns = (size_t)(in.B * in.C * in.H * in.W);
    float *dout = malloc(sizeof(float) * no), *o1 = malloc(sizeof(float) * no), *o2 = malloc(sizeof(float) * no);
    float *ds1 = malloc(sizeof(float) * ns), *ds2 = malloc(sizeof(float) * ns);
    float *dA1 = malloc(sizeof(float) * (size_t)na), *dA2 = malloc(sizeof(float) * (size_t)na);
    float *dB1 = malloc(sizeof(float) * (size_t)nbb), *dB2 = malloc(sizeof(float) * (size_t)nbb);
    fill_gauss(dout, (int64_t)no, 77, 1.0f);
    lora_grads(u, &in, dout, o1, ds1, &ad, na, dA1, dB1, &ctx);
    CHECK_OK(sl_unet_dequantize_nf4(u, &ctx), &ctx);
    lora_grads(u, &in, dout, o2, ds2, &ad, na, dA2, dB2, &ctx);
    sl_test_close("LoRA on NF4 vs dense(dequantized): output", o1, o2, no, 1e-4 * sl_test_scale(o2, no), 1e-4);
    sl_test_close("LoRA on NF4 vs dense(dequantized): dA", dA1, dA2, (size_t)na, 1e-4 * sl_test_scale(dA2, (size_t)na), 1e-4);
    sl_test_close("LoRA on NF4 vs dense(dequantized): dB", dB1, dB2, (size_t)nbb, 1e-4 * sl_test_scale(dB2, (size_t)nbb), 1e-4);
    sl_test_close("LoRA on NF4 vs dense(dequantized): d sample", ds1, ds2, ns, 1e-4 * sl_test_scale(ds2, ns), 1e-4);
    CHECK(sl_test_scale(dA2, (size_t)na) > 0, "dA is not zero");
    free(dout), free(o1), free(o2), free(ds1), free(ds2), free(dA1), free(dA2), free(dB1), free(dB2);
    sl_adapter_free(&ad);
    inputs_free(&in);
    sl_model_free(&m);
}

static void test_train(const char *root) {
    SlCtx ctx;
    sl_ctx_init(&ctx);
    char model[2048], data[2048], out[2100];
    snprintf(model, sizeof model, "%s/model", root);
    snprintf(data, sizeof data, "%s/data", root);
    snprintf(out, sizeof out, "%s/nf4.safetensors", root);
    CHECK(fixture_tiny_model(model, sl_test_shared()) && fixture_images(data, 4, 40), "fixtures in %s", root);
    SlTrainConfig c;
    sl_train_config_default(&c);
    c.model = model, c.data = data, c.out = out;
    c.resolution = 32, c.rank = 4, c.alpha = 8, c.batch = 2, c.steps = 80, c.lr = 3e-3f, c.seed = 7;
    c.flip = 0, c.caption_dropout = 0;
    c.base = "nf4";
    c.nf4_double_quant = 1;
    SlTrainer tr;
    if (sl_trainer_init(&tr, &c, &ctx) != SL_OK) {
        CHECK(0, "trainer on nf4: %s", ctx.msg);
        return;
    }
    double before = 0, after = 0;
    CHECK_OK(sl_trainer_eval_loss(&tr, 8, 1234, &before, &ctx), &ctx);
    SlStatus st = SL_OK;
    while (!st && tr.step < c.steps) st = sl_trainer_step(&tr, &ctx);
    CHECK_OK(st, &ctx);
    CHECK_OK(sl_trainer_eval_loss(&tr, 8, 1234, &after, &ctx), &ctx);
    printf("nf4 base: validation loss %.5f -> %.5f after %lld steps\n", before, after, (long long)c.steps);
    CHECK(after < 0.8 * before, "loss on an NF4 base did not fall by 20%%: %g -> %g", before, after);
    sl_trainer_free(&tr);
    c.full = 1;
    CHECK(sl_trainer_init(&tr, &c, &ctx) == SL_ERR_UNSUPPORTED, "--full on nf4 refused: %s", ctx.msg);
    sl_trainer_free(&tr);
}

/* sl_model_load_nf4 loads the U-Net itself, after sl_model_load: it must get the options' kernels
 * too, and its plan stamp them on every module (the NF4 hooks run their GEMMs on them). */
static void test_nf4_kernels(void) {
    SlCtx ctx;
    sl_ctx_init(&ctx);
    char path[4096];
    snprintf(path, sizeof path, "%s/golden/tiny-sd1", sl_test_shared());
    const SlKernels port = {SL_GEMM_KERNEL_BLAS, SL_CONV_KERNEL_IM2COL, SL_ATT_KERNEL_ROWS};
    SlModelOpts mo = {.skip_vae = 1, .kernels = port};
    SlModel m;
    if (sl_model_load_nf4(&m, path, &mo, NULL, 0, &ctx) != SL_OK) {
        CHECK(0, "nf4 load: %s", ctx.msg);
        return;
    }
    CHECK(!memcmp(&m.unet.kern, &port, sizeof port), "the NF4 U-Net takes the model options' kernels");
    CHECK(m.clip && !memcmp(&m.clip->kern, &port, sizeof port), "the text encoder takes the model options' kernels");
    Inputs in;
    inputs_make(&in, &m.unet_cfg, 1, 16, 7);
    CHECK_OK(sl_unet_plan(&m.unet, in.B, in.H, in.W, in.T, &ctx), &ctx);
    int stamped = 0;
    for (int i = 0; i < m.unet.n_mods; i++) {
        const SlKernels *k = m.unet.mods[i].lin ? &m.unet.mods[i].lin->kern : &m.unet.mods[i].conv->kern;
        stamped += !memcmp(k, &port, sizeof port);
    }
    CHECK(stamped == m.unet.n_mods, "every module of the NF4 U-Net runs on the plan's kernels (%d of %d)", stamped,
          m.unet.n_mods);
    inputs_free(&in);
    sl_model_free(&m);
}

int main(void) {
    test_nf4_kernels();
    test_codebook();
    test_golden();
    test_error_bound();
    test_kernels();
    test_unet_golden();
    test_layer_cosine();
    test_unet_torch();
    test_unet_trained();
    test_lora_grads();
    char root[1900];
    snprintf(root, sizeof root, "%s/test_nf4_train", sl_test_binary());
    mkdir(root, 0755);
    test_train(root);
    return sl_test_finish("test_nf4");
}
