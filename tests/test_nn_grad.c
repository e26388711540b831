/* test_nn_grad.c - backward kernels of nn/:
 *  1. central finite differences of L = sum(out * R) (R random) for every
 *     backward, fast and _ref, evaluated with the _ref forward (double
 *     accumulation, so L is smooth to ~1e-7);
 *  2. accumulation contract: gradients are added to what the buffers hold,
 *     and NULL gradients are skipped;
 *  3. fast vs _ref backward at larger shapes (multi-block attention, stride 2,
 *     asymmetric padding);
 *  4. PyTorch golden gradients from tests/data/nn_ops_ref.safetensors.
 */
#include <math.h>
#include <omp.h>
#include <string.h>

#include "nn_test_common.h"

/* finite differences: step, and |fd - an| <= FD_ATOL + FD_RTOL*|fd| */
#define FD_H 1e-2
#define FD_ATOL 1e-3
#define FD_RTOL 1e-2
#define FD_MAX_PROBES 48  /* elements probed per tensor (all if fewer) */
#define ACC_BASE 0.5f     /* gradients start at this value to check += */

typedef double (*LossFn)(void *op);

/* Compares analytic gradient `an` (which holds ACC_BASE + dL/dx) of x[0..n)
 * with central differences of loss(op), perturbing x in place. */
static void fd_check(const char *what, LossFn loss, void *op, float *x, const float *an, int64_t n,
                     uint64_t *seed) {
    const int64_t probes = n < FD_MAX_PROBES ? n : FD_MAX_PROBES;
    float *fd = nt_zeros(probes), *got = nt_zeros(probes);
    for (int64_t p = 0; p < probes; p++) {
        const int64_t i = probes == n ? p : (int64_t)(nt_next(seed) % (uint64_t)n);
        const float x0 = x[i];
        const float xp = (float)(x0 + FD_H), xm = (float)(x0 - FD_H);
        x[i] = xp;
        const double lp = loss(op);
        x[i] = xm;
        const double lm = loss(op);
        x[i] = x0;
        fd[p] = (float)((lp - lm) / ((double)xp - (double)xm));
        got[p] = an[i] - ACC_BASE;
    }
    char nm[200];
    snprintf(nm, sizeof nm, "fd %s (%lld probes)", what, (long long)probes);
    sl_test_close(nm, got, fd, (size_t)probes, FD_ATOL, FD_RTOL);
    sl_free(fd);
    sl_free(got);
}

static float *acc_buf(int64_t n) {
    float *p = nt_zeros(n);
    for (int64_t i = 0; i < n; i++) p[i] = ACC_BASE;
    return p;
}

static double dot_r(const float *out, const float *r, int64_t n) {
    double s = 0.0;
    for (int64_t i = 0; i < n; i++) s += (double)out[i] * r[i];
    return s;
}

/* ---------------- linear ---------------- */
typedef struct { float *x, *w, *b, *r, *out; int64_t N, I, O; } LinOp;
static double lin_loss(void *p) {
    LinOp *o = p;
    sl_linear_forward_ref(o->out, o->x, o->w, o->b, o->N, o->I, o->O);
    return dot_r(o->out, o->r, o->N * o->O);
}
static void grad_linear(uint64_t *seed) {
    LinOp o = {0};
    o.N = 5; o.I = 7; o.O = 3;
    o.x = nt_randn_new(o.N * o.I, seed, 0, 1); o.w = nt_randn_new(o.O * o.I, seed, 0, 1);
    o.b = nt_randn_new(o.O, seed, 0, 1); o.r = nt_randn_new(o.N * o.O, seed, 0, 1); o.out = nt_zeros(o.N * o.O);
    for (int fast = 1; fast >= 0; fast--) {
        float *dx = acc_buf(o.N * o.I), *dw = acc_buf(o.O * o.I), *db = acc_buf(o.O);
        if (fast) sl_linear_backward(dx, dw, db, o.r, o.x, o.w, o.N, o.I, o.O, NULL);
        else sl_linear_backward_ref(dx, dw, db, o.r, o.x, o.w, o.N, o.I, o.O);
        fd_check(fast ? "linear dx" : "linear_ref dx", lin_loss, &o, o.x, dx, o.N * o.I, seed);
        fd_check(fast ? "linear dw" : "linear_ref dw", lin_loss, &o, o.w, dw, o.O * o.I, seed);
        fd_check(fast ? "linear db" : "linear_ref db", lin_loss, &o, o.b, db, o.O, seed);
        sl_free(dx); sl_free(dw); sl_free(db);
    }
    /* NULL gradients are skipped; the others are unchanged by their absence */
    float *dw1 = nt_zeros(o.O * o.I), *dw2 = nt_zeros(o.O * o.I), *dx = nt_zeros(o.N * o.I), *db = nt_zeros(o.O);
    sl_linear_backward(dx, dw1, db, o.r, o.x, o.w, o.N, o.I, o.O, NULL);
    sl_linear_backward(NULL, dw2, NULL, o.r, o.x, o.w, o.N, o.I, o.O, NULL);
    sl_test_close("linear dw with NULL din/db", dw2, dw1, o.O * o.I, 0, 0);
    sl_free(dw1); sl_free(dw2); sl_free(dx); sl_free(db);
    sl_free(o.x); sl_free(o.w); sl_free(o.b); sl_free(o.r); sl_free(o.out);
}

/* ---------------- conv2d ---------------- */
typedef struct { float *x, *w, *b, *r, *out, *work; SlConvDims d; } ConvOp;
static double conv_loss(void *p) {
    ConvOp *o = p;
    sl_conv2d_forward_ref(o->out, o->x, o->w, o->b, &o->d, o->work);
    return dot_r(o->out, o->r, o->d.B * o->d.Co * o->d.Ho * o->d.Wo);
}
static void grad_conv(uint64_t *seed) {
    /* B Ci H W Co k stride pad t l b r */
    const int64_t cv[][11] = {{2, 3, 6, 5, 4, 3, 1, 1, 1, 1, 1}, {1, 3, 7, 6, 2, 3, 2, 1, 1, 1, 1},
                              {1, 2, 7, 8, 3, 3, 2, 0, 0, 1, 1}, {2, 4, 3, 5, 3, 1, 1, 0, 0, 0, 0}};
    for (int c = 0; c < 4; c++) {
        const int64_t *q = cv[c];
        ConvOp o;
        o.d = sl_conv_dims(q[0], q[1], q[2], q[3], q[4], q[5], q[6], q[7], q[8], q[9], q[10]);
        const SlConvDims *d = &o.d;
        const int64_t nx = d->B * d->Ci * d->H * d->W, nw = d->Co * d->Ci * d->kh * d->kw, ny = d->B * d->Co * d->Ho * d->Wo;
        o.x = nt_randn_new(nx, seed, 0, 1); o.w = nt_randn_new(nw, seed, 0, 0.5); o.b = nt_randn_new(d->Co, seed, 0, 1);
        o.r = nt_randn_new(ny, seed, 0, 1); o.out = nt_zeros(ny); o.work = nt_zeros((int64_t)sl_conv2d_workspace(d));
        for (int fast = 1; fast >= 0; fast--) {
            float *dx = acc_buf(nx), *dw = acc_buf(nw), *db = acc_buf(d->Co);
            if (fast) sl_conv2d_backward(dx, dw, db, o.r, o.x, o.w, d, o.work, NULL);
            else sl_conv2d_backward_ref(dx, dw, db, o.r, o.x, o.w, d, o.work);
            char nm[128];
            snprintf(nm, sizeof nm, "conv%s k%lld s%lld pad %lld,%lld,%lld,%lld d?", fast ? "" : "_ref", (long long)d->kh,
                     (long long)d->stride, (long long)d->pad_t, (long long)d->pad_l, (long long)d->pad_b, (long long)d->pad_r);
            const size_t L = strlen(nm);
            nm[L - 1] = 'x'; fd_check(nm, conv_loss, &o, o.x, dx, nx, seed);
            nm[L - 1] = 'w'; fd_check(nm, conv_loss, &o, o.w, dw, nw, seed);
            nm[L - 1] = 'b'; fd_check(nm, conv_loss, &o, o.b, db, d->Co, seed);
            sl_free(dx); sl_free(dw); sl_free(db);
        }
        sl_free(o.x); sl_free(o.w); sl_free(o.b); sl_free(o.r); sl_free(o.out); sl_free(o.work);
    }
}

/* ---------------- groupnorm / layernorm ---------------- */
typedef struct { float *x, *g, *be, *r, *out, *mean, *rstd; int64_t B, C, HW, G; int layer; } NormOp;
static double norm_loss(void *p) {
    NormOp *o = p;
    if (o->layer)
        sl_layernorm_forward_ref(o->out, o->mean, o->rstd, o->x, o->g, o->be, o->B, o->C, 1e-5f);
    else
        sl_groupnorm_forward_ref(o->out, o->mean, o->rstd, o->x, o->g, o->be, o->B, o->C, o->HW, o->G, 1e-5f);
    return dot_r(o->out, o->r, o->B * o->C * o->HW);
}
static void grad_norm(uint64_t *seed) {
    for (int layer = 0; layer < 2; layer++) {
        NormOp o;
        o.layer = layer;
        o.B = layer ? 4 : 2; o.C = layer ? 9 : 6; o.HW = layer ? 1 : 5; o.G = layer ? 1 : 3;
        const int64_t n = o.B * o.C * o.HW, ns = layer ? o.B : o.B * o.G;
        o.x = nt_randn_new(n, seed, 0.5, 1); o.g = nt_randn_new(o.C, seed, 1, 0.5); o.be = nt_randn_new(o.C, seed, 0, 0.5);
        o.r = nt_randn_new(n, seed, 0, 1); o.out = nt_zeros(n); o.mean = nt_zeros(ns); o.rstd = nt_zeros(ns);
        for (int fast = 1; fast >= 0; fast--) {
            float *dx = acc_buf(n), *dg = acc_buf(o.C), *db = acc_buf(o.C);
            float *mean = nt_zeros(ns), *rstd = nt_zeros(ns);
            if (layer) {
                sl_layernorm_forward(o.out, mean, rstd, o.x, o.g, o.be, o.B, o.C, 1e-5f);
                (fast ? sl_layernorm_backward : sl_layernorm_backward_ref)(dx, dg, db, o.r, o.x, o.g, mean, rstd, o.B, o.C);
            } else {
                sl_groupnorm_forward(o.out, mean, rstd, o.x, o.g, o.be, o.B, o.C, o.HW, o.G, 1e-5f);
                (fast ? sl_groupnorm_backward : sl_groupnorm_backward_ref)(dx, dg, db, o.r, o.x, o.g, mean, rstd,
                                                                          o.B, o.C, o.HW, o.G);
            }
            char nm[64];
            const char *nmn = layer ? "layernorm" : "groupnorm";
            snprintf(nm, sizeof nm, "%s%s dx", nmn, fast ? "" : "_ref");
            fd_check(nm, norm_loss, &o, o.x, dx, n, seed);
            snprintf(nm, sizeof nm, "%s%s dgamma", nmn, fast ? "" : "_ref");
            fd_check(nm, norm_loss, &o, o.g, dg, o.C, seed);
            snprintf(nm, sizeof nm, "%s%s dbeta", nmn, fast ? "" : "_ref");
            fd_check(nm, norm_loss, &o, o.be, db, o.C, seed);
            sl_free(dx); sl_free(dg); sl_free(db); sl_free(mean); sl_free(rstd);
        }
        sl_free(o.x); sl_free(o.g); sl_free(o.be); sl_free(o.r); sl_free(o.out); sl_free(o.mean); sl_free(o.rstd);
    }
}

/* ---------------- pointwise activations ---------------- */
typedef struct { float *x, *r, *out; int64_t n; int kind; } ActOp;
static void act_fwd(int kind, float *out, const float *x, int64_t n) {
    if (kind == 0) sl_silu_forward(out, x, n);
    else if (kind == 1) sl_gelu_forward(out, x, n);
    else if (kind == 2) sl_quick_gelu_forward(out, x, n);
    else sl_geglu_forward(out, x, n / 6, 3);
}
static double act_loss(void *p) {
    ActOp *o = p;
    act_fwd(o->kind, o->out, o->x, o->n);
    return dot_r(o->out, o->r, o->kind == 3 ? o->n / 2 : o->n);
}
static void grad_act(uint64_t *seed) {
    const char *names[4] = {"silu", "gelu", "quick_gelu", "geglu"};
    for (int kind = 0; kind < 4; kind++) {
        ActOp o;
        o.kind = kind; o.n = 36;
        o.x = nt_randn_new(o.n, seed, 0, 2); o.r = nt_randn_new(o.n, seed, 0, 1); o.out = nt_zeros(o.n);
        float *dx = acc_buf(o.n);
        if (kind == 0) sl_silu_backward(dx, o.r, o.x, o.n);
        else if (kind == 1) sl_gelu_backward(dx, o.r, o.x, o.n);
        else if (kind == 2) sl_quick_gelu_backward(dx, o.r, o.x, o.n);
        else sl_geglu_backward(dx, o.r, o.x, o.n / 6, 3);
        fd_check(names[kind], act_loss, &o, o.x, dx, o.n, seed);
        sl_free(dx); sl_free(o.x); sl_free(o.r); sl_free(o.out);
    }
    /* large inputs: big threaded path equals the small path element-wise */
    const int64_t n = 100000;
    float *x = nt_randn_new(n, seed, 0, 3), *dy = nt_randn_new(n, seed, 0, 1), *a = nt_zeros(n), *b = nt_zeros(n);
    sl_gelu_backward(a, dy, x, n);
    for (int64_t i = 0; i < n; i += 1000) sl_gelu_backward(b + i, dy + i, x + i, 1000);
    sl_test_close("gelu backward threaded == chunked", a, b, n, 0, 0);
    sl_free(x); sl_free(dy); sl_free(a); sl_free(b);
}

/* ---------------- attention ---------------- */
typedef struct { float *q, *k, *v, *r, *out, *lse, *work; int64_t B, Tq, Tk, NH, HD; int causal; float scale; } AttOp;
static double att_loss(void *p) {
    AttOp *o = p;
    sl_attention_forward_ref(o->out, o->lse, o->q, o->k, o->v, o->B, o->Tq, o->Tk, o->NH, o->HD, o->scale, o->causal, o->work);
    return dot_r(o->out, o->r, o->B * o->Tq * o->NH * o->HD);
}
static void att_make(AttOp *o, int64_t B, int64_t Tq, int64_t Tk, int64_t NH, int64_t HD, int causal, uint64_t *seed) {
    o->B = B; o->Tq = Tq; o->Tk = Tk; o->NH = NH; o->HD = HD; o->causal = causal;
    o->scale = 1.0f / sqrtf((float)HD);
    o->q = nt_randn_new(B * Tq * NH * HD, seed, 0, 1); o->k = nt_randn_new(B * Tk * NH * HD, seed, 0, 1);
    o->v = nt_randn_new(B * Tk * NH * HD, seed, 0, 1); o->r = nt_randn_new(B * Tq * NH * HD, seed, 0, 1);
    o->out = nt_zeros(B * Tq * NH * HD); o->lse = nt_zeros(B * NH * Tq);
    o->work = nt_zeros((int64_t)sl_attention_workspace(B, Tq, Tk, NH, HD));
}
static void att_free(AttOp *o) {
    sl_free(o->q); sl_free(o->k); sl_free(o->v); sl_free(o->r); sl_free(o->out); sl_free(o->lse); sl_free(o->work);
}
static void grad_attention(uint64_t *seed) {
    /* B Tq Tk NH HD causal: small (one block) and multi-block (Tq, Tk > 64) */
    const int64_t cfg[][6] = {{2, 5, 7, 2, 6, 0}, {2, 5, 7, 2, 6, 1}, {1, 9, 4, 1, 3, 1}, {1, 70, 90, 2, 5, 1}, {1, 90, 70, 1, 9, 0}};
    for (int c = 0; c < 5; c++) {
        AttOp o;
        att_make(&o, cfg[c][0], cfg[c][1], cfg[c][2], cfg[c][3], cfg[c][4], (int)cfg[c][5], seed);
        const int64_t nq = o.B * o.Tq * o.NH * o.HD, nk = o.B * o.Tk * o.NH * o.HD;
        for (int fast = 1; fast >= 0; fast--) {
            float *dq = acc_buf(nq), *dk = acc_buf(nk), *dv = acc_buf(nk);
            if (fast)
                sl_attention_forward(o.out, o.lse, o.q, o.k, o.v, o.B, o.Tq, o.Tk, o.NH, o.HD, o.scale, o.causal, o.work,
                                     NULL);
            else
                sl_attention_forward_ref(o.out, o.lse, o.q, o.k, o.v, o.B, o.Tq, o.Tk, o.NH, o.HD, o.scale, o.causal,
                                         o.work);
            (fast ? sl_attention_backward : sl_attention_backward_ref)(dq, dk, dv, o.r, o.q, o.k, o.v, o.out, o.lse, o.B,
                                                                        o.Tq, o.Tk, o.NH, o.HD, o.scale, o.causal, o.work);
            char nm[128];
            snprintf(nm, sizeof nm, "attention%s B%lld Tq%lld Tk%lld NH%lld HD%lld %s d?", fast ? "" : "_ref",
                     (long long)o.B, (long long)o.Tq, (long long)o.Tk, (long long)o.NH, (long long)o.HD,
                     o.causal ? "causal" : "full");
            const size_t L = strlen(nm);
            nm[L - 1] = 'q'; fd_check(nm, att_loss, &o, o.q, dq, nq, seed);
            nm[L - 1] = 'k'; fd_check(nm, att_loss, &o, o.k, dk, nk, seed);
            nm[L - 1] = 'v'; fd_check(nm, att_loss, &o, o.v, dv, nk, seed);
            sl_free(dq); sl_free(dk); sl_free(dv);
        }
        att_free(&o);
    }
}

/* ---------------- upsample ---------------- */
typedef struct { float *x, *r, *out; int64_t B, C, H, W; } UpOp;
static double up_loss(void *p) {
    UpOp *o = p;
    sl_upsample_nearest2x_forward(o->out, o->x, o->B, o->C, o->H, o->W);
    return dot_r(o->out, o->r, 4 * o->B * o->C * o->H * o->W);
}
static void grad_upsample(uint64_t *seed) {
    UpOp o = {0};
    o.B = 2; o.C = 2; o.H = 3; o.W = 5;
    const int64_t n = o.B * o.C * o.H * o.W;
    o.x = nt_randn_new(n, seed, 0, 1); o.r = nt_randn_new(4 * n, seed, 0, 1); o.out = nt_zeros(4 * n);
    float *dx = acc_buf(n);
    sl_upsample_nearest2x_backward(dx, o.r, o.B, o.C, o.H, o.W);
    fd_check("upsample nearest x2", up_loss, &o, o.x, dx, n, seed);
    sl_free(dx); sl_free(o.x); sl_free(o.r); sl_free(o.out);
}

/* ---------------- fast vs ref backward at larger shapes ---------------- */
static void backward_fast_vs_ref(uint64_t *seed) {
    char nm[200];
    { /* conv */
        const int64_t cv[][11] = {{2, 16, 13, 11, 8, 3, 1, 1, 1, 1, 1}, {1, 8, 16, 16, 12, 3, 2, 0, 0, 1, 1},
                                  {1, 12, 9, 9, 10, 1, 1, 0, 0, 0, 0}, {1, 6, 10, 7, 5, 3, 2, 1, 1, 1, 1},
                                  /* im2col over the band cap: 2 bands of output rows */
                                  {1, 64, 96, 96, 4, 3, 1, 1, 1, 1, 1}, {1, 64, 190, 190, 3, 3, 2, 0, 0, 1, 1}};
        for (int c = 0; c < 6; c++) {
            const int64_t *q = cv[c];
            SlConvDims d = sl_conv_dims(q[0], q[1], q[2], q[3], q[4], q[5], q[6], q[7], q[8], q[9], q[10]);
            const int64_t nx = d.B * d.Ci * d.H * d.W, nw = d.Co * d.Ci * d.kh * d.kw, ny = d.B * d.Co * d.Ho * d.Wo;
            float *x = nt_randn_new(nx, seed, 0, 1), *w = nt_randn_new(nw, seed, 0, 0.2), *dy = nt_randn_new(ny, seed, 0, 1);
            float *work = nt_zeros((int64_t)sl_conv2d_workspace(&d));
            float *dx1 = acc_buf(nx), *dx2 = acc_buf(nx), *dw1 = acc_buf(nw), *dw2 = acc_buf(nw), *db1 = acc_buf(d.Co), *db2 = acc_buf(d.Co);
            sl_conv2d_backward(dx1, dw1, db1, dy, x, w, &d, work, NULL);
            sl_conv2d_backward_ref(dx2, dw2, db2, dy, x, w, &d, work);
            snprintf(nm, sizeof nm, "conv backward fast/ref Ci%lld %lldx%lld Co%lld k%lld s%lld pad %lld,%lld,%lld,%lld",
                     (long long)d.Ci, (long long)d.H, (long long)d.W, (long long)d.Co, (long long)d.kh, (long long)d.stride,
                     (long long)d.pad_t, (long long)d.pad_l, (long long)d.pad_b, (long long)d.pad_r);
            printf("%s\n", nm);
            /* sgemm sums P = B*Ho*Wo products in float for dw/db: allow an error
             * proportional to the output scale (max |ref|), not to each value */
            sl_test_close("  dx", dx1, dx2, nx, 2e-5, 1e-4);
            sl_test_close("  dw", dw1, dw2, nw, 5e-5 + 5e-6 * sl_test_scale(dw2, nw), 1e-4);
            sl_test_close("  db", db1, db2, d.Co, 5e-5 + 5e-6 * sl_test_scale(db2, d.Co), 1e-4);
            sl_free(x); sl_free(w); sl_free(dy); sl_free(work);
            sl_free(dx1); sl_free(dx2); sl_free(dw1); sl_free(dw2); sl_free(db1); sl_free(db2);
        }
    }
    { /* linear */
        const int64_t N = 77, I = 96, O = 130;
        float *x = nt_randn_new(N * I, seed, 0, 1), *w = nt_randn_new(O * I, seed, 0, 0.1), *dy = nt_randn_new(N * O, seed, 0, 1);
        float *dx1 = acc_buf(N * I), *dx2 = acc_buf(N * I), *dw1 = acc_buf(O * I), *dw2 = acc_buf(O * I), *db1 = acc_buf(O), *db2 = acc_buf(O);
        sl_linear_backward(dx1, dw1, db1, dy, x, w, N, I, O, NULL);
        sl_linear_backward_ref(dx2, dw2, db2, dy, x, w, N, I, O);
        printf("linear backward fast/ref N77 I96 O130\n");
        sl_test_close("  dx", dx1, dx2, N * I, 2e-5, 1e-4);
        sl_test_close("  dw", dw1, dw2, O * I, 5e-5, 1e-4);
        sl_test_close("  db", db1, db2, O, 5e-5, 1e-4);
        sl_free(x); sl_free(w); sl_free(dy); sl_free(dx1); sl_free(dx2); sl_free(dw1); sl_free(dw2); sl_free(db1); sl_free(db2);
    }
    { /* norms */
        const int64_t B = 2, C = 64, HW = 50, G = 32, n = B * C * HW;
        float *x = nt_randn_new(n, seed, 2, 3), *g = nt_randn_new(C, seed, 1, 0.3), *be = nt_randn_new(C, seed, 0, 1);
        float *dy = nt_randn_new(n, seed, 0, 1), *y = nt_zeros(n), *mean = nt_zeros(B * G), *rstd = nt_zeros(B * G);
        float *dx1 = acc_buf(n), *dx2 = acc_buf(n), *dg1 = acc_buf(C), *dg2 = acc_buf(C), *db1 = acc_buf(C), *db2 = acc_buf(C);
        sl_groupnorm_forward(y, mean, rstd, x, g, be, B, C, HW, G, 1e-6f);
        sl_groupnorm_backward(dx1, dg1, db1, dy, x, g, mean, rstd, B, C, HW, G);
        sl_groupnorm_backward_ref(dx2, dg2, db2, dy, x, g, mean, rstd, B, C, HW, G);
        printf("groupnorm backward fast/ref B2 C64 HW50 G32\n");
        sl_test_close("  dx", dx1, dx2, n, 1e-5, 1e-4);
        sl_test_close("  dgamma", dg1, dg2, C, 1e-4, 1e-4);
        sl_test_close("  dbeta", db1, db2, C, 1e-4, 1e-4);
        /* layernorm on the same data seen as [N=B*C, D=HW] with its own gamma */
        float *g2 = nt_randn_new(HW, seed, 1, 0.3), *m2 = nt_zeros(B * C), *r2 = nt_zeros(B * C);
        float *dg3 = acc_buf(HW), *dg4 = acc_buf(HW), *db3 = acc_buf(HW), *db4 = acc_buf(HW);
        for (int64_t i = 0; i < n; i++) dx1[i] = dx2[i] = ACC_BASE;
        sl_layernorm_forward(y, m2, r2, x, g2, NULL, B * C, HW, 1e-5f);
        sl_layernorm_backward(dx1, dg3, db3, dy, x, g2, m2, r2, B * C, HW);
        sl_layernorm_backward_ref(dx2, dg4, db4, dy, x, g2, m2, r2, B * C, HW);
        printf("layernorm backward fast/ref N128 D50\n");
        sl_test_close("  dx", dx1, dx2, n, 1e-5, 1e-4);
        sl_test_close("  dgamma", dg3, dg4, HW, 1e-4, 1e-4);
        sl_test_close("  dbeta", db3, db4, HW, 1e-4, 1e-4);
        sl_free(x); sl_free(g); sl_free(be); sl_free(dy); sl_free(y); sl_free(mean); sl_free(rstd);
        sl_free(dx1); sl_free(dx2); sl_free(dg1); sl_free(dg2); sl_free(db1); sl_free(db2);
        sl_free(g2); sl_free(m2); sl_free(r2); sl_free(dg3); sl_free(dg4); sl_free(db3); sl_free(db4);
    }
    { /* attention */
        const int64_t cfg[][6] = {{1, 130, 77, 2, 17, 0}, {1, 100, 150, 2, 40, 1}, {2, 150, 100, 1, 40, 1}, {1, 64, 64, 8, 8, 0},
                                  {1, 67, 70, 2, 80, 1}, {1, 45, 33, 3, 130, 0}};
        for (int c = 0; c < 6; c++) {
            AttOp o;
            att_make(&o, cfg[c][0], cfg[c][1], cfg[c][2], cfg[c][3], cfg[c][4], (int)cfg[c][5], seed);
            const int64_t nq = o.B * o.Tq * o.NH * o.HD, nk = o.B * o.Tk * o.NH * o.HD;
            float *dq1 = acc_buf(nq), *dq2 = acc_buf(nq), *dk1 = acc_buf(nk), *dk2 = acc_buf(nk), *dv1 = acc_buf(nk), *dv2 = acc_buf(nk);
            sl_attention_forward(o.out, o.lse, o.q, o.k, o.v, o.B, o.Tq, o.Tk, o.NH, o.HD, o.scale, o.causal, o.work, NULL);
            sl_attention_backward(dq1, dk1, dv1, o.r, o.q, o.k, o.v, o.out, o.lse, o.B, o.Tq, o.Tk, o.NH, o.HD, o.scale, o.causal, o.work);
            sl_attention_backward_ref(dq2, dk2, dv2, o.r, o.q, o.k, o.v, o.out, o.lse, o.B, o.Tq, o.Tk, o.NH, o.HD, o.scale, o.causal, o.work);
            printf("attention backward fast/ref B%lld Tq%lld Tk%lld NH%lld HD%lld %s\n", (long long)o.B, (long long)o.Tq,
                   (long long)o.Tk, (long long)o.NH, (long long)o.HD, o.causal ? "causal" : "full");
            sl_test_close("  dq", dq1, dq2, nq, 1e-5, 1e-4);
            sl_test_close("  dk", dk1, dk2, nk, 1e-5, 1e-4);
            sl_test_close("  dv", dv1, dv2, nk, 1e-5, 1e-4);
            /* only dv wanted: same dv, nothing else touched */
            float *dv3 = acc_buf(nk);
            sl_attention_backward(NULL, NULL, dv3, o.r, o.q, o.k, o.v, o.out, o.lse, o.B, o.Tq, o.Tk, o.NH, o.HD, o.scale, o.causal, o.work);
            sl_test_close("  dv alone", dv3, dv1, nk, 0, 0);
            sl_free(dv3);
            sl_free(dq1); sl_free(dq2); sl_free(dk1); sl_free(dk2); sl_free(dv1); sl_free(dv2);
            att_free(&o);
        }
    }
}

/* ---------------- PyTorch golden gradients ---------------- */
static void golden_grads(void) {
    SlCtx ctx;
    sl_ctx_init(&ctx);
    SlStFile f;
    if (!nt_golden_open(&f, &ctx)) return;
    const double atol = 2e-5, rtol = 2e-5;
    { /* conv, both paddings */
        float *x = nt_golden(&f, "conv.x", 252, &ctx), *w = nt_golden(&f, "conv.w", 108, &ctx);
        for (int asym = 0; asym < 2 && x && w; asym++) {
            SlConvDims d = asym ? sl_conv_dims(2, 3, 7, 6, 4, 3, 2, 0, 0, 1, 1) : sl_conv_dims(2, 3, 7, 6, 4, 3, 2, 1, 1, 1, 1);
            const char *pre = asym ? "conv_asym" : "conv";
            char nm[64];
            snprintf(nm, sizeof nm, "%s.r", pre);
            float *r = nt_golden(&f, nm, 2 * 4 * d.Ho * d.Wo, &ctx);
            snprintf(nm, sizeof nm, "%s.dx", pre);
            float *gx = nt_golden(&f, nm, 252, &ctx);
            snprintf(nm, sizeof nm, "%s.dw", pre);
            float *gw = nt_golden(&f, nm, 108, &ctx);
            snprintf(nm, sizeof nm, "%s.db", pre);
            float *gb = nt_golden(&f, nm, 4, &ctx);
            if (r && gx && gw && gb) {
                float dx[252] = {0}, dw[108] = {0}, db[4] = {0};
                float *work = nt_zeros((int64_t)sl_conv2d_workspace(&d));
                sl_conv2d_backward(dx, dw, db, r, x, w, &d, work, NULL);
                snprintf(nm, sizeof nm, "golden %s dx", pre); sl_test_close(nm, dx, gx, 252, atol, rtol);
                snprintf(nm, sizeof nm, "golden %s dw", pre); sl_test_close(nm, dw, gw, 108, atol, rtol);
                snprintf(nm, sizeof nm, "golden %s db", pre); sl_test_close(nm, db, gb, 4, atol, rtol);
                sl_free(work);
            }
            sl_free(r); sl_free(gx); sl_free(gw); sl_free(gb);
        }
        sl_free(x); sl_free(w);
    }
    { /* linear */
        float *x = nt_golden(&f, "linear.x", 20, &ctx), *w = nt_golden(&f, "linear.w", 15, &ctx), *r = nt_golden(&f, "linear.r", 12, &ctx);
        float *gx = nt_golden(&f, "linear.dx", 20, &ctx), *gw = nt_golden(&f, "linear.dw", 15, &ctx), *gb = nt_golden(&f, "linear.db", 3, &ctx);
        if (x && w && r && gx && gw && gb) {
            float dx[20] = {0}, dw[15] = {0}, db[3] = {0};
            sl_linear_backward(dx, dw, db, r, x, w, 4, 5, 3, NULL);
            sl_test_close("golden linear dx", dx, gx, 20, atol, rtol);
            sl_test_close("golden linear dw", dw, gw, 15, atol, rtol);
            sl_test_close("golden linear db", db, gb, 3, atol, rtol);
        }
        sl_free(x); sl_free(w); sl_free(r); sl_free(gx); sl_free(gw); sl_free(gb);
    }
    for (int layer = 0; layer < 2; layer++) { /* groupnorm [2,6,15] G3 eps 1e-6; layernorm [3,10] eps 1e-5 */
        const char *pre = layer ? "ln" : "gn";
        const int64_t n = layer ? 30 : 180, C = layer ? 10 : 6;
        char nm[64];
#define GOLD(var, suffix, cnt) snprintf(nm, sizeof nm, "%s." suffix, pre); float *var = nt_golden(&f, nm, cnt, &ctx)
        GOLD(x, "x", n); GOLD(g, "gamma", C); GOLD(be, "beta", C); GOLD(r, "r", n);
        GOLD(gx, "dx", n); GOLD(gg, "dgamma", C); GOLD(gb, "dbeta", C);
#undef GOLD
        if (x && g && be && r && gx && gg && gb) {
            float y[180], mean[6], rstd[6], dx[180] = {0}, dg[10] = {0}, db[10] = {0};
            if (layer) {
                sl_layernorm_forward(y, mean, rstd, x, g, be, 3, 10, 1e-5f);
                sl_layernorm_backward(dx, dg, db, r, x, g, mean, rstd, 3, 10);
            } else {
                sl_groupnorm_forward(y, mean, rstd, x, g, be, 2, 6, 15, 3, 1e-6f);
                sl_groupnorm_backward(dx, dg, db, r, x, g, mean, rstd, 2, 6, 15, 3);
            }
            snprintf(nm, sizeof nm, "golden %s dx", pre); sl_test_close(nm, dx, gx, n, atol, rtol);
            snprintf(nm, sizeof nm, "golden %s dgamma", pre); sl_test_close(nm, dg, gg, C, atol, rtol);
            snprintf(nm, sizeof nm, "golden %s dbeta", pre); sl_test_close(nm, db, gb, C, atol, rtol);
        }
        sl_free(x); sl_free(g); sl_free(be); sl_free(r); sl_free(gx); sl_free(gg); sl_free(gb);
    }
    { /* geglu */
        float *x = nt_golden(&f, "geglu.x", 30, &ctx), *r = nt_golden(&f, "geglu.r", 15, &ctx), *gx = nt_golden(&f, "geglu.dx", 30, &ctx);
        if (x && r && gx) {
            float dx[30] = {0};
            sl_geglu_backward(dx, r, x, 3, 5);
            sl_test_close("golden geglu dx", dx, gx, 30, 1e-6, 1e-6);
        }
        sl_free(x); sl_free(r); sl_free(gx);
    }
    { /* attention B2 NH2 HD6 Tq5 Tk7 */
        const int64_t nq = 2 * 5 * 12, nk = 2 * 7 * 12;
        float *q = nt_golden(&f, "att.q", nq, &ctx), *k = nt_golden(&f, "att.k", nk, &ctx), *v = nt_golden(&f, "att.v", nk, &ctx);
        float *work = nt_zeros((int64_t)sl_attention_workspace(2, 5, 7, 2, 6));
        for (int causal = 0; causal < 2 && q && k && v; causal++) {
            const char *pre = causal ? "att_causal" : "att";
            char nm[64];
            snprintf(nm, sizeof nm, "%s.r", pre); float *r = nt_golden(&f, nm, nq, &ctx);
            snprintf(nm, sizeof nm, "%s.dq", pre); float *gq = nt_golden(&f, nm, nq, &ctx);
            snprintf(nm, sizeof nm, "%s.dk", pre); float *gk = nt_golden(&f, nm, nk, &ctx);
            snprintf(nm, sizeof nm, "%s.dv", pre); float *gv = nt_golden(&f, nm, nk, &ctx);
            if (r && gq && gk && gv) {
                float out[120], lse[20], dq[120] = {0}, dk[168] = {0}, dv[168] = {0};
                const float scale = 1.0f / sqrtf(6.0f);
                sl_attention_forward(out, lse, q, k, v, 2, 5, 7, 2, 6, scale, causal, work, NULL);
                sl_attention_backward(dq, dk, dv, r, q, k, v, out, lse, 2, 5, 7, 2, 6, scale, causal, work);
                snprintf(nm, sizeof nm, "golden %s dq", pre); sl_test_close(nm, dq, gq, nq, atol, rtol);
                snprintf(nm, sizeof nm, "golden %s dk", pre); sl_test_close(nm, dk, gk, nk, atol, rtol);
                snprintf(nm, sizeof nm, "golden %s dv", pre); sl_test_close(nm, dv, gv, nk, atol, rtol);
            }
            sl_free(r); sl_free(gq); sl_free(gk); sl_free(gv);
        }
        sl_free(q); sl_free(k); sl_free(v); sl_free(work);
    }
    sl_st_close(&f);
}

/* A workspace sized under one thread count must stay valid under another
 * (models plan once; tests and tools change omp_set_num_threads later). */
static void workspace_thread_change(uint64_t *seed) {
    const int saved = omp_get_max_threads();
    omp_set_num_threads(1);
    AttOp o;
    att_make(&o, 1, 130, 140, 4, 24, 0, seed); /* workspace sized with 1 thread */
    omp_set_num_threads(4);
    const int64_t nq = o.Tq * o.NH * o.HD, nk = o.Tk * o.NH * o.HD;
    float *o2 = nt_zeros(nq), *l2 = nt_zeros(o.NH * o.Tq);
    float *dq1 = nt_zeros(nq), *dk1 = nt_zeros(nk), *dv1 = nt_zeros(nk), *dq2 = nt_zeros(nq), *dk2 = nt_zeros(nk), *dv2 = nt_zeros(nk);
    sl_attention_forward(o.out, o.lse, o.q, o.k, o.v, 1, o.Tq, o.Tk, o.NH, o.HD, o.scale, 0, o.work, NULL);
    sl_attention_backward(dq1, dk1, dv1, o.r, o.q, o.k, o.v, o.out, o.lse, 1, o.Tq, o.Tk, o.NH, o.HD, o.scale, 0, o.work);
    omp_set_num_threads(saved);
    sl_attention_forward_ref(o2, l2, o.q, o.k, o.v, 1, o.Tq, o.Tk, o.NH, o.HD, o.scale, 0, o.work);
    sl_attention_backward_ref(dq2, dk2, dv2, o.r, o.q, o.k, o.v, o2, l2, 1, o.Tq, o.Tk, o.NH, o.HD, o.scale, 0, o.work);
    sl_test_close("attention, workspace planned at 1 thread, run at 4: out", o.out, o2, nq, 2e-6, 2e-5);
    sl_test_close("  dq", dq1, dq2, nq, 1e-5, 1e-4);
    sl_test_close("  dk", dk1, dk2, nk, 1e-5, 1e-4);
    sl_test_close("  dv", dv1, dv2, nk, 1e-5, 1e-4);
    sl_free(o2); sl_free(l2); sl_free(dq1); sl_free(dk1); sl_free(dv1); sl_free(dq2); sl_free(dk2); sl_free(dv2);
    att_free(&o);
}

/* Same bits for 1, 2 and 3 threads (stylora promises identical adapters for
 * any thread count). Attention has B*NH = 3: backward runs fused (one pass)
 * at 1 and 3 threads and in two passes at 2 threads; both must agree. */
static void determinism(uint64_t *seed) {
    const int saved = omp_get_max_threads();
    const int counts[3] = {1, 2, 3};
    /* conv 3x3 forward+backward, big enough for several gemm tiles */
    SlConvDims d = sl_conv_dims(2, 24, 20, 23, 300, 3, 1, 1, 1, 1, 1);
    const int64_t nx = d.B * d.Ci * d.H * d.W, nw = d.Co * d.Ci * 9, ny = d.B * d.Co * d.Ho * d.Wo;
    float *x = nt_randn_new(nx, seed, 0, 1), *w = nt_randn_new(nw, seed, 0, 0.1), *dy = nt_randn_new(ny, seed, 0, 1);
    float *work = nt_zeros((int64_t)sl_conv2d_workspace(&d));
    AttOp o;
    att_make(&o, 1, 150, 130, 3, 40, 1, seed);
    const int64_t nq = o.Tq * o.NH * o.HD, nk = o.Tk * o.NH * o.HD;
    const int64_t C = 64, HW = 300, G = 32, ng = C * HW;
    float *gx = nt_randn_new(ng, seed, 1, 2), *gg = nt_randn_new(C, seed, 1, 0.2), *gdy = nt_randn_new(ng, seed, 0, 1);
    float *res[3][10];
    for (int r = 0; r < 3; r++) {
        omp_set_num_threads(counts[r]);
        float **R = res[r];
        R[0] = nt_zeros(ny); R[1] = nt_zeros(nx); R[2] = nt_zeros(nw);
        sl_conv2d_forward(R[0], x, w, NULL, &d, work, NULL);
        sl_conv2d_backward(R[1], R[2], NULL, dy, x, w, &d, work, NULL);
        R[3] = nt_zeros(nq); R[4] = nt_zeros(nq); R[5] = nt_zeros(nk); R[6] = nt_zeros(nk);
        sl_attention_forward(R[3], o.lse, o.q, o.k, o.v, 1, o.Tq, o.Tk, o.NH, o.HD, o.scale, 1, o.work, NULL);
        sl_attention_backward(R[4], R[5], R[6], o.r, o.q, o.k, o.v, R[3], o.lse, 1, o.Tq, o.Tk, o.NH, o.HD, o.scale, 1, o.work);
        R[7] = nt_zeros(ng); R[8] = nt_zeros(ng); R[9] = nt_zeros(C);
        float mean[32], rstd[32];
        sl_groupnorm_silu_forward(R[7], mean, rstd, gx, gg, NULL, 1, C, HW, G, 1e-6f);
        sl_groupnorm_backward(R[8], R[9], NULL, gdy, gx, gg, mean, rstd, 1, C, HW, G);
    }
    omp_set_num_threads(saved);
    const char *names[10] = {"conv out", "conv dx", "conv dw", "attention out", "attention dq", "attention dk",
                             "attention dv", "groupnorm+silu out", "groupnorm dx", "groupnorm dgamma"};
    const int64_t sizes[10] = {ny, nx, nw, nq, nq, nk, nk, ng, ng, C};
    for (int r = 1; r < 3; r++)
        for (int i = 0; i < 10; i++) {
            char nm[96];
            snprintf(nm, sizeof nm, "same bits, 1 vs %d threads: %s", counts[r], names[i]);
            sl_test_close(nm, res[r][i], res[0][i], sizes[i], 0, 0);
        }
    for (int r = 0; r < 3; r++)
        for (int i = 0; i < 10; i++) sl_free(res[r][i]);
    sl_free(x); sl_free(w); sl_free(dy); sl_free(work); sl_free(gx); sl_free(gg); sl_free(gdy);
    att_free(&o);
}

/* Each attention forward kernel (rows; lanes when the CPU has AVX-512): the
 * same bits for 1, 2 and 3 threads, at a cross-attention-like shape (Tk = 77)
 * and a causal one; and the two kernels agree within the fast/ref tolerance. */
static void attention_kernels(uint64_t *seed) {
    const int saved = omp_get_max_threads();
    const int kernels[2] = {SL_ATT_KERNEL_ROWS, SL_ATT_KERNEL_LANES};
    const int64_t cfg[2][6] = {{2, 130, 77, 4, 40, 0}, {1, 150, 150, 3, 24, 1}}; /* B Tq Tk NH HD causal */
    for (int c = 0; c < 2; c++) {
        AttOp o;
        att_make(&o, cfg[c][0], cfg[c][1], cfg[c][2], cfg[c][3], cfg[c][4], (int)cfg[c][5], seed);
        const int64_t nq = o.B * o.Tq * o.NH * o.HD;
        float *out[2][3];
        for (int kern = 0; kern < 2; kern++) {
            const SlKernels kc = {0, 0, kernels[kern]};
            if (!sl_kernels_available(&kc)) {
                printf("attention kernel %s: not available on this CPU, not tested\n", sl_kernels_name("attention", kernels[kern]));
                for (int r = 0; r < 3; r++) out[kern][r] = NULL;
                continue;
            }
            for (int r = 0; r < 3; r++) {
                omp_set_num_threads(r + 1);
                out[kern][r] = nt_zeros(nq);
                sl_attention_forward(out[kern][r], o.lse, o.q, o.k, o.v, o.B, o.Tq, o.Tk, o.NH, o.HD, o.scale,
                                     o.causal, o.work, &kc);
            }
            omp_set_num_threads(saved);
            for (int r = 1; r < 3; r++) {
                char nm[128];
                snprintf(nm, sizeof nm, "attention %s Tq%lld Tk%lld %s: same bits, 1 vs %d threads",
                         sl_kernels_name("attention", kernels[kern]), (long long)o.Tq, (long long)o.Tk,
                         o.causal ? "causal" : "full", r + 1);
                sl_test_close(nm, out[kern][r], out[kern][0], nq, 0, 0);
            }
        }
        if (out[1][0]) sl_test_close("  lanes vs rows kernel", out[1][0], out[0][0], nq, 4e-6, 4e-5);
        for (int kern = 0; kern < 2; kern++)
            for (int r = 0; r < 3; r++) sl_free(out[kern][r]);
        att_free(&o);
    }
    omp_set_num_threads(saved);
}

int main(void) {
    uint64_t seed = 7;
    printf("threads: %d\n", omp_get_max_threads());
    grad_linear(&seed);
    grad_conv(&seed);
    grad_norm(&seed);
    grad_act(&seed);
    grad_attention(&seed);
    grad_upsample(&seed);
    backward_fast_vs_ref(&seed);
    golden_grads();
    workspace_thread_change(&seed);
    determinism(&seed);
    attention_kernels(&seed);
    return sl_test_finish("test_nn_grad");
}
