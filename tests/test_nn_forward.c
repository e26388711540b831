/* test_nn_forward.c - forward kernels of nn/: PyTorch golden values
 * (tests/data/nn_ops_ref.safetensors), hand-checked values, and fast vs _ref
 * at several shapes (odd sizes, stride 2, asymmetric padding, causal and
 * non-causal attention with Tq != Tk, head dims not a multiple of 8).
 */
#include <math.h>
#include <omp.h>
#include <string.h>

#include "nn_test_common.h"
#include "nn/nn_exp.h" /* internal vector exp, tested directly */

/* Tolerances. Golden values are float64 results of the float32 inputs; fast
 * kernels accumulate in float (sgemm), so their error grows like sqrt(K). */
#define TOL_GOLD_ATOL 2e-5
#define TOL_GOLD_RTOL 2e-5
#define TOL_FAST_ATOL 2e-5
#define TOL_FAST_RTOL 1e-4

static void golden_forward(void) {
    SlCtx ctx;
    sl_ctx_init(&ctx);
    SlStFile f;
    if (!nt_golden_open(&f, &ctx)) return;

    { /* linear x[4,5] w[3,5] */
        float *x = nt_golden(&f, "linear.x", 20, &ctx), *w = nt_golden(&f, "linear.w", 15, &ctx);
        float *b = nt_golden(&f, "linear.b", 3, &ctx), *ref = nt_golden(&f, "linear.out", 12, &ctx);
        if (x && w && b && ref) {
            float out[12];
            sl_linear_forward(out, x, w, b, 4, 5, 3, NULL);
            sl_test_close("golden linear fast", out, ref, 12, TOL_GOLD_ATOL, TOL_GOLD_RTOL);
            sl_linear_forward_ref(out, x, w, b, 4, 5, 3);
            sl_test_close("golden linear ref", out, ref, 12, TOL_GOLD_ATOL, TOL_GOLD_RTOL);
        }
        sl_free(x); sl_free(w); sl_free(b); sl_free(ref);
    }
    { /* conv x[2,3,7,6] w[4,3,3,3] stride 2: pad 1, and pad (t0,l0,b1,r1) */
        float *x = nt_golden(&f, "conv.x", 2 * 3 * 7 * 6, &ctx), *w = nt_golden(&f, "conv.w", 108, &ctx);
        float *b = nt_golden(&f, "conv.b", 4, &ctx);
        SlConvDims d1 = sl_conv_dims(2, 3, 7, 6, 4, 3, 2, 1, 1, 1, 1);
        SlConvDims d2 = sl_conv_dims(2, 3, 7, 6, 4, 3, 2, 0, 0, 1, 1);
        CHECK(d1.Ho == 4 && d1.Wo == 3, "conv dims pad1: %lldx%lld", (long long)d1.Ho, (long long)d1.Wo);
        CHECK(d2.Ho == 3 && d2.Wo == 3, "conv dims asym: %lldx%lld", (long long)d2.Ho, (long long)d2.Wo);
        float *r1 = nt_golden(&f, "conv.out", 2 * 4 * d1.Ho * d1.Wo, &ctx);
        float *r2 = nt_golden(&f, "conv_asym.out", 2 * 4 * d2.Ho * d2.Wo, &ctx);
        if (x && w && b && r1 && r2) {
            float out[2 * 4 * 4 * 3];
            float *work = nt_zeros((int64_t)sl_conv2d_workspace(&d1) + (int64_t)sl_conv2d_workspace(&d2));
            sl_conv2d_forward(out, x, w, b, &d1, work, NULL);
            sl_test_close("golden conv s2 p1 fast", out, r1, 96, TOL_GOLD_ATOL, TOL_GOLD_RTOL);
            sl_conv2d_forward_ref(out, x, w, b, &d1, work);
            sl_test_close("golden conv s2 p1 ref", out, r1, 96, TOL_GOLD_ATOL, TOL_GOLD_RTOL);
            sl_conv2d_forward(out, x, w, b, &d2, work, NULL);
            sl_test_close("golden conv s2 asym fast", out, r2, 72, TOL_GOLD_ATOL, TOL_GOLD_RTOL);
            sl_conv2d_forward_ref(out, x, w, b, &d2, work);
            sl_test_close("golden conv s2 asym ref", out, r2, 72, TOL_GOLD_ATOL, TOL_GOLD_RTOL);
            sl_free(work);
        }
        sl_free(x); sl_free(w); sl_free(b); sl_free(r1); sl_free(r2);
    }
    { /* groupnorm x[2,6,5,3] G3 eps 1e-6, and fused silu */
        const int64_t n = 2 * 6 * 15;
        float *x = nt_golden(&f, "gn.x", n, &ctx), *ga = nt_golden(&f, "gn.gamma", 6, &ctx);
        float *be = nt_golden(&f, "gn.beta", 6, &ctx), *ref = nt_golden(&f, "gn.out", n, &ctx);
        float *refs = nt_golden(&f, "gn_silu.out", n, &ctx);
        if (x && ga && be && ref && refs) {
            float out[180], mean[6], rstd[6];
            sl_groupnorm_forward(out, mean, rstd, x, ga, be, 2, 6, 15, 3, 1e-6f);
            sl_test_close("golden groupnorm fast", out, ref, n, TOL_GOLD_ATOL, TOL_GOLD_RTOL);
            sl_groupnorm_forward_ref(out, mean, rstd, x, ga, be, 2, 6, 15, 3, 1e-6f);
            sl_test_close("golden groupnorm ref", out, ref, n, TOL_GOLD_ATOL, TOL_GOLD_RTOL);
            sl_groupnorm_silu_forward(out, mean, rstd, x, ga, be, 2, 6, 15, 3, 1e-6f);
            sl_test_close("golden groupnorm+silu", out, refs, n, TOL_GOLD_ATOL, TOL_GOLD_RTOL);
        }
        sl_free(x); sl_free(ga); sl_free(be); sl_free(ref); sl_free(refs);
    }
    { /* layernorm x[3,10] eps 1e-5 */
        float *x = nt_golden(&f, "ln.x", 30, &ctx), *ga = nt_golden(&f, "ln.gamma", 10, &ctx);
        float *be = nt_golden(&f, "ln.beta", 10, &ctx), *ref = nt_golden(&f, "ln.out", 30, &ctx);
        if (x && ga && be && ref) {
            float out[30], mean[3], rstd[3];
            sl_layernorm_forward(out, mean, rstd, x, ga, be, 3, 10, 1e-5f);
            sl_test_close("golden layernorm fast", out, ref, 30, TOL_GOLD_ATOL, TOL_GOLD_RTOL);
            sl_layernorm_forward_ref(out, mean, rstd, x, ga, be, 3, 10, 1e-5f);
            sl_test_close("golden layernorm ref", out, ref, 30, TOL_GOLD_ATOL, TOL_GOLD_RTOL);
        }
        sl_free(x); sl_free(ga); sl_free(be); sl_free(ref);
    }
    { /* activations */
        float *x = nt_golden(&f, "act.x", 41, &ctx);
        float *rs = nt_golden(&f, "act.silu", 41, &ctx), *rg = nt_golden(&f, "act.gelu", 41, &ctx);
        float *rq = nt_golden(&f, "act.quick_gelu", 41, &ctx);
        float *gx = nt_golden(&f, "geglu.x", 30, &ctx), *rgg = nt_golden(&f, "geglu.out", 15, &ctx);
        if (x && rs && rg && rq && gx && rgg) {
            float out[41];
            sl_silu_forward(out, x, 41);
            sl_test_close("golden silu", out, rs, 41, 1e-6, 1e-6);
            sl_gelu_forward(out, x, 41);
            sl_test_close("golden gelu (erf)", out, rg, 41, 1e-6, 1e-6);
            sl_quick_gelu_forward(out, x, 41);
            sl_test_close("golden quick_gelu", out, rq, 41, 1e-6, 1e-6);
            sl_geglu_forward(out, gx, 3, 5);
            sl_test_close("golden geglu", out, rgg, 15, 1e-6, 1e-6);
            /* in place */
            float y[41];
            for (int i = 0; i < 41; i++) y[i] = x[i];
            sl_gelu_forward(y, y, 41);
            sl_test_close("gelu in place", y, rg, 41, 1e-6, 1e-6);
        }
        sl_free(x); sl_free(rs); sl_free(rg); sl_free(rq); sl_free(gx); sl_free(rgg);
    }
    { /* attention B2 NH2 HD6 Tq5 Tk7 */
        const int64_t B = 2, NH = 2, HD = 6, Tq = 5, Tk = 7;
        float *q = nt_golden(&f, "att.q", B * Tq * NH * HD, &ctx);
        float *k = nt_golden(&f, "att.k", B * Tk * NH * HD, &ctx);
        float *v = nt_golden(&f, "att.v", B * Tk * NH * HD, &ctx);
        float *work = nt_zeros((int64_t)sl_attention_workspace(B, Tq, Tk, NH, HD));
        for (int causal = 0; causal < 2; causal++) {
            const char *pre = causal ? "att_causal" : "att";
            char nm[64];
            snprintf(nm, sizeof nm, "%s.out", pre);
            float *ro = nt_golden(&f, nm, B * Tq * NH * HD, &ctx);
            snprintf(nm, sizeof nm, "%s.lse", pre);
            float *rl = nt_golden(&f, nm, B * NH * Tq, &ctx);
            if (q && k && v && ro && rl) {
                float out[2 * 5 * 12], lse[2 * 2 * 5];
                const float scale = 1.0f / sqrtf(6.0f);
                sl_attention_forward(out, lse, q, k, v, B, Tq, Tk, NH, HD, scale, causal, work, NULL);
                snprintf(nm, sizeof nm, "golden %s out fast", pre);
                sl_test_close(nm, out, ro, B * Tq * NH * HD, TOL_GOLD_ATOL, TOL_GOLD_RTOL);
                snprintf(nm, sizeof nm, "golden %s lse fast", pre);
                sl_test_close(nm, lse, rl, B * NH * Tq, TOL_GOLD_ATOL, TOL_GOLD_RTOL);
                sl_attention_forward_ref(out, lse, q, k, v, B, Tq, Tk, NH, HD, scale, causal, work);
                snprintf(nm, sizeof nm, "golden %s out ref", pre);
                sl_test_close(nm, out, ro, B * Tq * NH * HD, TOL_GOLD_ATOL, TOL_GOLD_RTOL);
                snprintf(nm, sizeof nm, "golden %s lse ref", pre);
                sl_test_close(nm, lse, rl, B * NH * Tq, TOL_GOLD_ATOL, TOL_GOLD_RTOL);
            }
            sl_free(ro); sl_free(rl);
        }
        sl_free(q); sl_free(k); sl_free(v); sl_free(work);
    }
    { /* timestep embedding: SD (dim 320, flip, shift 0) and odd dim 7 (no flip, shift 1) */
        float *t = nt_golden(&f, "temb.t", 5, &ctx);
        float *rsd = nt_golden(&f, "temb.sd", 5 * 320, &ctx), *rodd = nt_golden(&f, "temb.odd", 5 * 7, &ctx);
        if (t && rsd && rodd) {
            float out[5 * 320];
            sl_timestep_embedding(out, t, 5, 320, 1, 0.0f, 10000.0f);
            /* torch's vectorized expf (Sleef, <= 1 ulp) is not always correctly
             * rounded like ours; one ulp of freq moves the argument t*freq by up
             * to t*6e-8, so the tolerance grows with t (1.5e-4 at t = 999). */
            for (int r = 0; r < 5; r++) {
                char nm[96];
                snprintf(nm, sizeof nm, "golden timestep embedding sd, t=%g", t[r]);
                sl_test_close(nm, out + r * 320, rsd + r * 320, 320, 2e-6 + 1.5e-7 * t[r], 0);
            }
            sl_timestep_embedding(out, t, 5, 7, 0, 1.0f, 10000.0f);
            sl_test_close("golden timestep embedding odd", out, rodd, 5 * 7, 2e-6, 0);
            CHECK(out[6] == 0.0f && out[34] == 0.0f, "odd dim pads a zero column: %g %g", out[6], out[34]);
        }
        sl_free(t); sl_free(rsd); sl_free(rodd);
    }
    sl_st_close(&f);
}

static void hand_checked(void) {
    /* GroupNorm, one group of [1,2,3,4]: mean 2.5, var 1.25 */
    const float x[4] = {1, 2, 3, 4};
    float out[4], mean, rstd;
    sl_groupnorm_forward(out, &mean, &rstd, x, NULL, NULL, 1, 2, 2, 1, 0.0f);
    const float want[4] = {(float)(-1.5 / sqrt(1.25)), (float)(-0.5 / sqrt(1.25)), (float)(0.5 / sqrt(1.25)),
                           (float)(1.5 / sqrt(1.25))};
    sl_test_close("groupnorm [1,2,3,4]", out, want, 4, 1e-6, 1e-6);
    CHECK(fabsf(mean - 2.5f) < 1e-7f && fabsf(rstd - (float)(1.0 / sqrt(1.25))) < 1e-6f, "mean %g rstd %g", mean, rstd);
    /* GroupNorm with a large offset: double statistics keep it exact (float
     * single-pass E[x^2]-E[x]^2 would lose everything here). */
    float xo[4], m2, r2;
    for (int i = 0; i < 4; i++) xo[i] = 1000.0f + x[i] * 0.25f; /* exact in float */
    sl_groupnorm_forward(out, &m2, &r2, xo, NULL, NULL, 1, 1, 4, 1, 0.0f);
    sl_test_close("groupnorm offset 1000, std 0.28", out, want, 4, 1e-6, 1e-6);
    /* gelu(1) = 0.8413447460685429, silu(1) = 0.7310585786300049 (closed forms) */
    float one = 1.0f, g, s;
    sl_gelu_forward(&g, &one, 1);
    sl_silu_forward(&s, &one, 1);
    CHECK(fabsf(g - 0.84134474606f) < 1e-7f, "gelu(1) = %.9g", g);
    CHECK(fabsf(s - 0.73105857863f) < 1e-7f, "silu(1) = %.9g", s);
    /* timestep embedding at t = 0: sin 0 = 0, cos 0 = 1; flip puts cos first */
    float t0 = 0.0f, e[6];
    sl_timestep_embedding(e, &t0, 1, 6, 1, 0.0f, 10000.0f);
    CHECK(e[0] == 1.0f && e[2] == 1.0f && e[3] == 0.0f && e[5] == 0.0f, "temb(0) flip: %g %g %g %g", e[0], e[2], e[3], e[5]);
    /* attention with one key: output is that key's value, lse is its score */
    const float q1[2] = {1, 2}, k1[2] = {3, -1}, v1[2] = {5, 7};
    float o1[2], l1, *w1 = nt_zeros((int64_t)sl_attention_workspace(1, 1, 1, 1, 2));
    sl_attention_forward(o1, &l1, q1, k1, v1, 1, 1, 1, 1, 2, 0.5f, 0, w1, NULL);
    sl_free(w1);
    CHECK(fabsf(o1[0] - 5) < 1e-6f && fabsf(o1[1] - 7) < 1e-6f && fabsf(l1 - 0.5f) < 1e-6f,
          "single-key attention: %g %g lse %g", o1[0], o1[1], l1);
}

static void fast_vs_ref(uint64_t *seed) {
    char nm[160];
    /* linear */
    const int64_t lin[][3] = {{7, 13, 5}, {1, 1, 1}, {77, 320, 96}};
    for (int c = 0; c < 3; c++) {
        const int64_t N = lin[c][0], I = lin[c][1], O = lin[c][2];
        float *x = nt_randn_new(N * I, seed, 0, 1), *w = nt_randn_new(O * I, seed, 0, 0.1);
        float *b = nt_randn_new(O, seed, 0, 1), *o1 = nt_zeros(N * O), *o2 = nt_zeros(N * O);
        sl_linear_forward(o1, x, w, b, N, I, O, NULL);
        sl_linear_forward_ref(o2, x, w, b, N, I, O);
        snprintf(nm, sizeof nm, "linear fast/ref N%lld I%lld O%lld", (long long)N, (long long)I, (long long)O);
        sl_test_close(nm, o1, o2, N * O, TOL_FAST_ATOL, TOL_FAST_RTOL);
        sl_linear_forward(o1, x, w, NULL, N, I, O, NULL);
        sl_linear_forward_ref(o2, x, w, NULL, N, I, O);
        sl_test_close("linear fast/ref no bias", o1, o2, N * O, TOL_FAST_ATOL, TOL_FAST_RTOL);
        sl_free(x); sl_free(w); sl_free(b); sl_free(o1); sl_free(o2);
    }
    /* conv2d: B Ci H W Co k stride pad t l b r */
    const int64_t cv[][11] = {
        {2, 5, 9, 7, 6, 3, 1, 1, 1, 1, 1}, {1, 4, 9, 8, 3, 3, 2, 1, 1, 1, 1}, {2, 3, 8, 9, 5, 3, 2, 0, 0, 1, 1},
        {1, 7, 5, 6, 4, 1, 1, 0, 0, 0, 0}, {1, 3, 6, 5, 2, 3, 1, 0, 0, 0, 0}, {1, 32, 16, 16, 24, 3, 1, 1, 1, 1, 1},
        {1, 2, 4, 4, 3, 3, 1, 2, 0, 1, 3},
        /* im2col larger than the 4M-float band cap: 2 bands of output rows */
        {1, 64, 96, 96, 4, 3, 1, 1, 1, 1, 1}, {1, 64, 190, 190, 3, 3, 2, 0, 0, 1, 1}};
    for (int c = 0; c < 9; c++) {
        const int64_t *p = cv[c];
        SlConvDims d = sl_conv_dims(p[0], p[1], p[2], p[3], p[4], p[5], p[6], p[7], p[8], p[9], p[10]);
        const int64_t nin = d.B * d.Ci * d.H * d.W, nout = d.B * d.Co * d.Ho * d.Wo;
        float *x = nt_randn_new(nin, seed, 0, 1), *w = nt_randn_new(d.Co * d.Ci * d.kh * d.kw, seed, 0, 0.2);
        float *b = nt_randn_new(d.Co, seed, 0, 1), *o1 = nt_zeros(nout), *o2 = nt_zeros(nout);
        float *work = nt_zeros((int64_t)sl_conv2d_workspace(&d));
        sl_conv2d_forward(o1, x, w, b, &d, work, NULL);
        sl_conv2d_forward_ref(o2, x, w, b, &d, work);
        snprintf(nm, sizeof nm, "conv fast/ref B%lld Ci%lld %lldx%lld Co%lld k%lld s%lld pad %lld,%lld,%lld,%lld",
                 (long long)p[0], (long long)p[1], (long long)p[2], (long long)p[3], (long long)p[4],
                 (long long)p[5], (long long)p[6], (long long)p[7], (long long)p[8], (long long)p[9],
                 (long long)p[10]);
        sl_test_close(nm, o1, o2, nout, TOL_FAST_ATOL, TOL_FAST_RTOL);
        sl_free(x); sl_free(w); sl_free(b); sl_free(o1); sl_free(o2); sl_free(work);
    }
    /* groupnorm (+silu): B C HW G */
    const int64_t gn[][4] = {{2, 12, 17, 4}, {1, 64, 64, 32}, {3, 6, 1, 6}};
    for (int c = 0; c < 3; c++) {
        const int64_t B = gn[c][0], C = gn[c][1], HW = gn[c][2], G = gn[c][3], n = B * C * HW;
        float *x = nt_randn_new(n, seed, 1.5, 2), *ga = nt_randn_new(C, seed, 1, 0.3), *be = nt_randn_new(C, seed, 0, 0.3);
        float *o1 = nt_zeros(n), *o2 = nt_zeros(n), *m1 = nt_zeros(B * G), *m2 = nt_zeros(B * G);
        float *r1 = nt_zeros(B * G), *r2 = nt_zeros(B * G);
        sl_groupnorm_forward(o1, m1, r1, x, ga, be, B, C, HW, G, 1e-5f);
        sl_groupnorm_forward_ref(o2, m2, r2, x, ga, be, B, C, HW, G, 1e-5f);
        snprintf(nm, sizeof nm, "groupnorm fast/ref B%lld C%lld HW%lld G%lld", (long long)B, (long long)C, (long long)HW, (long long)G);
        sl_test_close(nm, o1, o2, n, 1e-5, 1e-5);
        sl_test_close("groupnorm mean", m1, m2, B * G, 1e-6, 1e-6);
        sl_test_close("groupnorm rstd", r1, r2, B * G, 1e-6, 1e-6);
        sl_silu_forward(o2, o2, n);
        sl_groupnorm_silu_forward(o1, m1, r1, x, ga, be, B, C, HW, G, 1e-5f);
        sl_test_close("groupnorm+silu fused vs ref then silu", o1, o2, n, 1e-5, 1e-5);
        /* fused = fast groupnorm then fast silu, bit for bit (so a caller may swap one for the other) */
        sl_groupnorm_forward(o2, m2, r2, x, ga, be, B, C, HW, G, 1e-5f);
        sl_silu_forward(o2, o2, n);
        sl_test_close("  groupnorm+silu fused vs groupnorm then silu (same bits)", o1, o2, n, 0, 0);
        sl_free(x); sl_free(ga); sl_free(be); sl_free(o1); sl_free(o2); sl_free(m1); sl_free(m2); sl_free(r1); sl_free(r2);
    }
    /* layernorm */
    const int64_t ln[][2] = {{5, 13}, {77, 768}, {1, 1}};
    for (int c = 0; c < 3; c++) {
        const int64_t N = ln[c][0], D = ln[c][1];
        float *x = nt_randn_new(N * D, seed, -1, 3), *ga = nt_randn_new(D, seed, 1, 0.3), *be = nt_randn_new(D, seed, 0, 0.3);
        float *o1 = nt_zeros(N * D), *o2 = nt_zeros(N * D), m1[77], m2[77], r1[77], r2[77];
        sl_layernorm_forward(o1, m1, r1, x, ga, be, N, D, 1e-5f);
        sl_layernorm_forward_ref(o2, m2, r2, x, ga, be, N, D, 1e-5f);
        snprintf(nm, sizeof nm, "layernorm fast/ref N%lld D%lld", (long long)N, (long long)D);
        sl_test_close(nm, o1, o2, N * D, 1e-5, 1e-5);
        sl_test_close("layernorm rstd", r1, r2, N, 1e-6, 1e-6);
        sl_free(x); sl_free(ga); sl_free(be); sl_free(o1); sl_free(o2);
    }
    /* geglu: vectorized erf (fast) vs libm erff (ref), forward and backward, gates over [-9, 9] */
    const int64_t gg[][2] = {{3, 5}, {64, 1280}, {2, 67}};
    for (int c = 0; c < 3; c++) {
        const int64_t N = gg[c][0], F = gg[c][1];
        float *x = nt_randn_new(N * 2 * F, seed, 0, 3), *dy = nt_randn_new(N * F, seed, 0, 1);
        float *o1 = nt_zeros(N * F), *o2 = nt_zeros(N * F), *d1 = nt_zeros(N * 2 * F), *d2 = nt_zeros(N * 2 * F);
        /* |erf error| <= 1.5e-7 moves h*g*Phi(g) by up to 0.5 * 1.5e-7 * |h g| (and dy times that) */
        double hg = 0;
        for (int64_t r = 0; r < N; r++)
            for (int64_t j = 0; j < F; j++) {
                const double v = fabs((double)x[r * 2 * F + j] * x[r * 2 * F + F + j]) * (1.0 + fabs(dy[r * F + j]));
                hg = v > hg ? v : hg;
            }
        const double atol = 1e-6 + 0.75e-7 * hg;
        sl_geglu_forward(o1, x, N, F);
        sl_geglu_forward_ref(o2, x, N, F);
        snprintf(nm, sizeof nm, "geglu fast/ref N%lld F%lld", (long long)N, (long long)F);
        sl_test_close(nm, o1, o2, N * F, atol, 1e-6);
        for (int64_t i = 0; i < N * 2 * F; i++) d1[i] = d2[i] = 0.5f; /* backward accumulates */
        sl_geglu_backward(d1, dy, x, N, F);
        sl_geglu_backward_ref(d2, dy, x, N, F);
        sl_test_close("  geglu backward fast/ref", d1, d2, N * 2 * F, atol, 1e-6);
        sl_free(x); sl_free(dy); sl_free(o1); sl_free(o2); sl_free(d1); sl_free(d2);
    }
    /* attention: B NH Tq Tk HD causal */
    const int64_t at[][6] = {{2, 3, 5, 7, 6, 0},     {2, 3, 5, 7, 6, 1},    {1, 2, 130, 77, 17, 0},
                             {1, 2, 100, 150, 40, 1}, {1, 2, 150, 100, 40, 1}, {2, 1, 64, 64, 8, 1},
                             {1, 8, 200, 200, 40, 0}, {1, 1, 3, 70, 64, 0}, {1, 1, 70, 45, 80, 0},
                             {2, 1, 33, 66, 130, 1}, {2, 8, 96, 77, 40, 0}, {1, 2, 48, 48, 160, 1}};
    /* every case with each forward kernel this CPU has (lanes needs AVX-512) */
    for (int c = 0; c < 2 * 12; c++) {
        const int64_t B = at[c % 12][0], NH = at[c % 12][1], Tq = at[c % 12][2], Tk = at[c % 12][3], HD = at[c % 12][4];
        const int causal = (int)at[c % 12][5], kern = c < 12 ? SL_ATT_KERNEL_ROWS : SL_ATT_KERNEL_LANES;
        const SlKernels kc = {0, 0, kern};
        if (!sl_kernels_available(&kc)) {
            if (c == 12) printf("attention lanes kernel: not available on this CPU (no AVX-512), not tested\n");
            continue;
        }
        const float scale = 1.0f / sqrtf((float)HD);
        float *q = nt_randn_new(B * Tq * NH * HD, seed, 0, 1), *k = nt_randn_new(B * Tk * NH * HD, seed, 0, 1);
        float *v = nt_randn_new(B * Tk * NH * HD, seed, 0, 1);
        float *o1 = nt_zeros(B * Tq * NH * HD), *o2 = nt_zeros(B * Tq * NH * HD);
        float *l1 = nt_zeros(B * NH * Tq), *l2 = nt_zeros(B * NH * Tq);
        float *work = nt_zeros((int64_t)sl_attention_workspace(B, Tq, Tk, NH, HD));
        sl_attention_forward(o1, l1, q, k, v, B, Tq, Tk, NH, HD, scale, causal, work, &kc);
        sl_attention_forward_ref(o2, l2, q, k, v, B, Tq, Tk, NH, HD, scale, causal, work);
        snprintf(nm, sizeof nm, "attention %s/ref B%lld NH%lld Tq%lld Tk%lld HD%lld %s out",
                 kern == SL_ATT_KERNEL_LANES ? "lanes" : "rows", (long long)B, (long long)NH, (long long)Tq,
                 (long long)Tk, (long long)HD, causal ? "causal" : "full");
        sl_test_close(nm, o1, o2, B * Tq * NH * HD, 2e-6, 2e-5);
        sl_test_close("  lse", l1, l2, B * NH * Tq, 2e-6, 2e-6);
        sl_free(q); sl_free(k); sl_free(v); sl_free(o1); sl_free(o2); sl_free(l1); sl_free(l2); sl_free(work);
    }
}

static void shape_helpers(uint64_t *seed) {
    const int64_t B = 2, C = 3, H = 5, W = 4, S = H * W;
    float *x = nt_randn_new(B * C * S, seed, 0, 1), *up = nt_zeros(4 * B * C * S);
    sl_upsample_nearest2x_forward(up, x, B, C, H, W);
    int bad = 0;
    for (int64_t p = 0; p < B * C; p++)
        for (int64_t y = 0; y < 2 * H; y++)
            for (int64_t xx = 0; xx < 2 * W; xx++)
                bad += up[(p * 2 * H + y) * 2 * W + xx] != x[(p * H + y / 2) * W + xx / 2];
    CHECK(bad == 0, "upsample nearest x2: %d wrong values", bad);
    float *t1 = nt_zeros(B * C * S), *t2 = nt_zeros(B * C * S);
    sl_transpose_cs_sc(t1, x, B, C, S);
    bad = 0;
    for (int64_t b = 0; b < B; b++)
        for (int64_t c = 0; c < C; c++)
            for (int64_t s = 0; s < S; s++) bad += t1[(b * S + s) * C + c] != x[(b * C + c) * S + s];
    CHECK(bad == 0, "transpose cs->sc: %d wrong values", bad);
    sl_transpose_sc_cs(t2, t1, B, C, S);
    bad = 0;
    for (int64_t i = 0; i < B * C * S; i++) bad += t2[i] != x[i];
    CHECK(bad == 0, "transpose round trip: %d wrong values", bad);
    float y[5] = {1, 2, 3, 4, 5};
    const float xa[5] = {1, 1, 1, 1, 2};
    sl_axpy(y, 0.5f, xa, 5);
    CHECK(y[0] == 1.5f && y[4] == 6.0f, "axpy: %g %g", y[0], y[4]);
    sl_free(x); sl_free(up); sl_free(t1); sl_free(t2);
}

/* nn_exp.h against double exp over [-100, 100]: relative error, and exact 0
 * below -87 (softmax masks rely on it). */
static void vector_exp(void) {
    enum { N = 4001 };
    float *x = nt_zeros(N), *want = nt_zeros(N), *got = nt_zeros(N);
    for (int i = 0; i < N; i++) {
        x[i] = -100.0f + 0.05f * (float)i + 0.0123f;
        const double xc = x[i] > 88.0f ? 88.0 : x[i];
        want[i] = x[i] < -87.0f ? 0.0f : (float)exp(xc);
        got[i] = x[i];
    }
    /* odd offsets and lengths to cover the masked / scalar tails */
    sl_nn_exp_row(got, 13, 0.0f);
    sl_nn_exp_row(got + 13, N - 13, 0.0f);
    double worst = 0;
    int zero_bad = 0;
    for (int i = 0; i < N; i++) {
        if (want[i] == 0.0f) { zero_bad += got[i] != 0.0f; continue; }
        const double rel = fabs((double)got[i] - want[i]) / want[i];
        if (rel > worst) worst = rel;
    }
    printf("vector exp: max rel err %.3g\n", worst);
    CHECK(worst < 5e-7, "vector exp rel err %.3g", worst);
    CHECK(zero_bad == 0, "vector exp: %d values below -87 not exactly 0", zero_bad);
    float m[3] = {-INFINITY, 0.0f, -INFINITY};
    const float sum = sl_nn_exp_row(m, 3, 0.0f);
    CHECK(m[0] == 0.0f && m[1] == 1.0f && sum == 1.0f, "exp(-inf) row: %g %g sum %g", m[0], m[1], sum);
#if defined(__AVX512F__)
    /* the one-vector form (SiLU's) gives the row form's bits */
    int differ = 0;
    for (int i = 0; i + 16 <= N; i += 16) {
        float e[16];
        _mm512_storeu_ps(e, sl_nn_exp16(_mm512_loadu_ps(x + i)));
        for (int j = 0; j < 16; j++) differ += memcmp(&e[j], &got[i + j], sizeof(float)) != 0;
    }
    CHECK(differ == 0, "sl_nn_exp16: %d values differ from sl_nn_exp_row", differ);
#endif
    sl_free(x); sl_free(want); sl_free(got);
}

int main(void) {
    uint64_t seed = 42;
    printf("threads: %d\n", omp_get_max_threads());
    golden_forward();
    hand_checked();
    vector_exp();
    fast_vs_ref(&seed);
    shape_helpers(&seed);
    return sl_test_finish("test_nn_forward");
}
