/* test_module.c - the adapter hook contract of nn/module.h, by finite differences.
 *
 * Three toy hooks written here exercise every path of the contract:
 *   lora:  y = W x + b + s B A x                    (adds to the output; dout unchanged)
 *   dora:  y = c * (W x + s B A x) + b, c [O]        (rewrites dout for the base: c * dout)
 *   quant: y = x Q^T + b with Q held by the hook     (base replacement, m->w = NULL, frozen)
 * and a conv LoRA: y = conv(x) + b + s convB(convA(x)) (A k x k, B 1x1).
 * For L = sum(y * R), every analytic gradient (adapter, dw, db, din) is compared
 * with central differences (double-accumulated loss, eps 1e-2, tolerance
 * 2e-3 * max|numeric| + 1e-4).
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/rng.h"
#include "nn/module.h"
#include "test_util.h"

#define FD_EPS 1e-2f
#define FD_RTOL 2e-3
#define FD_ATOL 1e-4

enum { N = 5, NI = 6, NO = 4, R = 2 };

typedef struct Toy {
    SlHook hook;
    float A[R * NI], B[NO * R], c[NO];
    float dA[R * NI], dB[NO * R], dc[NO];
    float s;
    float ax[N * R], dax[N * R], t[N * NO], g[N * NO];
    float Q[NO * NI];
} Toy;

static void mm(float *c, const float *a, const float *b, int M, int Nn, int K, int ta, int tb, float alpha, int acc) {
    for (int i = 0; i < M; i++)
        for (int j = 0; j < Nn; j++) {
            double s = 0;
            for (int k = 0; k < K; k++) s += (double)(ta ? a[k * M + i] : a[i * K + k]) * (tb ? b[j * K + k] : b[k * Nn + j]);
            c[i * Nn + j] = (acc ? c[i * Nn + j] : 0.0f) + alpha * (float)s;
        }
}

/* ---- lora ---- */
static void lora_fwd(SlHook *h, const SlLinear *m, float *y, const float *x, int64_t n) {
    Toy *T = h->self;
    (void)m;
    mm(T->ax, x, T->A, (int)n, R, NI, 0, 1, 1.0f, 0);
    mm(y, T->ax, T->B, (int)n, NO, R, 0, 1, T->s, 1);
}
static const float *lora_bwd(SlHook *h, const SlLinear *m, float *din, const float *dout, const float *x, int64_t n) {
    Toy *T = h->self;
    (void)m;
    mm(T->dB, dout, T->ax, NO, R, (int)n, 1, 0, T->s, 1);
    mm(T->dax, dout, T->B, (int)n, R, NO, 0, 0, T->s, 0);
    mm(T->dA, T->dax, x, R, NI, (int)n, 1, 0, 1.0f, 1);
    if (din) mm(din, T->dax, T->A, (int)n, NI, R, 0, 0, 1.0f, 1);
    return NULL;
}
static const SlHookOps lora_ops = {.lin_forward = lora_fwd, .lin_backward = lora_bwd};

/* ---- dora-like: y = c * (base + s B A x) ---- */
static void dora_fwd(SlHook *h, const SlLinear *m, float *y, const float *x, int64_t n) {
    Toy *T = h->self;
    lora_fwd(h, m, y, x, n);
    for (int64_t i = 0; i < n; i++)
        for (int o = 0; o < NO; o++) {
            T->t[i * NO + o] = y[i * NO + o];
            y[i * NO + o] *= T->c[o];
        }
}
static const float *dora_bwd(SlHook *h, const SlLinear *m, float *din, const float *dout, const float *x, int64_t n) {
    Toy *T = h->self;
    for (int64_t i = 0; i < n; i++)
        for (int o = 0; o < NO; o++) {
            T->dc[o] += dout[i * NO + o] * T->t[i * NO + o];
            T->g[i * NO + o] = dout[i * NO + o] * T->c[o];
        }
    lora_bwd(h, m, din, T->g, x, n);
    return T->g;
}
static const SlHookOps dora_ops = {.lin_forward = dora_fwd, .lin_backward = dora_bwd};

/* ---- base replacement ---- */
static void q_base_fwd(SlHook *h, const SlLinear *m, float *y, const float *x, int64_t n) {
    Toy *T = h->self;
    (void)m;
    mm(y, x, T->Q, (int)n, NO, NI, 0, 1, 1.0f, 0);
}
static void q_base_bwd(SlHook *h, const SlLinear *m, float *din, const float *g, int64_t n) {
    Toy *T = h->self;
    (void)m;
    mm(din, g, T->Q, (int)n, NI, NO, 0, 0, 1.0f, 1);
}
static const SlHookOps quant_ops = {.lin_forward = lora_fwd, .lin_backward = lora_bwd,
                                    .lin_base_forward = q_base_fwd, .lin_base_backward_input = q_base_bwd};

static double lin_loss(const SlLinear *m, const float *x, const float *Rw) {
    float y[N * NO];
    sl_linmod_forward(m, y, x, N);
    double s = 0;
    for (int i = 0; i < N * NO; i++) s += (double)y[i] * Rw[i];
    return s;
}

/* Compares analytic g[0..n) with central differences of f over p[0..n). */
typedef double (*LossFn)(void *);
static void fd_check(const char *what, float *p, const float *g, int n, LossFn f, void *arg) {
    float *num = malloc(sizeof(float) * (size_t)n);
    for (int i = 0; i < n; i++) {
        float keep = p[i];
        p[i] = keep + FD_EPS;
        double lp = f(arg);
        p[i] = keep - FD_EPS;
        double lm = f(arg);
        p[i] = keep;
        num[i] = (float)((lp - lm) / (2.0 * FD_EPS));
    }
    sl_test_close(what, g, num, (size_t)n, FD_ATOL + FD_RTOL * sl_test_scale(num, (size_t)n), 0);
    free(num);
}

typedef struct LinCase { SlLinear *m; float *x, *Rw; } LinCase;
static double lin_case_loss(void *a) {
    LinCase *c = a;
    return lin_loss(c->m, c->x, c->Rw);
}

static void fill(float *p, int n, uint64_t stream, float scale) {
    sl_rng_normal(p, n, 1234, stream, 0);
    for (int i = 0; i < n; i++) p[i] *= scale;
}

static void test_linear(const char *name, const SlHookOps *ops, int frozen_base) {
    static float w[NO * NI], b[NO], dw[NO * NI], db[NO], x[N * NI], dx[N * NI], Rw[N * NO];
    Toy *T = calloc(1, sizeof *T);
    fill(w, NO * NI, 1, 0.5f);
    fill(b, NO, 2, 0.5f);
    fill(x, N * NI, 3, 1.0f);
    fill(Rw, N * NO, 4, 1.0f);
    fill(T->A, R * NI, 5, 0.5f);
    fill(T->B, NO * R, 6, 0.5f);
    fill(T->c, NO, 7, 0.3f);
    for (int o = 0; o < NO; o++) T->c[o] += 1.0f;
    fill(T->Q, NO * NI, 8, 0.5f);
    T->s = 1.5f;
    T->hook.ops = ops;
    T->hook.self = T;
    memset(dw, 0, sizeof dw);
    memset(db, 0, sizeof db);
    memset(dx, 0, sizeof dx);
    SlLinear m = {.I = NI, .O = NO, .w = frozen_base ? NULL : w, .b = b, .dw = frozen_base ? NULL : dw, .db = db,
                  .hook = &T->hook};
    /* backward of L = sum(y * R): dout = R */
    float y[N * NO];
    sl_linmod_forward(&m, y, x, N);
    sl_linmod_backward(&m, dx, Rw, x, N);
    LinCase c = {&m, x, Rw};
    char what[128];
    snprintf(what, sizeof what, "%s: dA", name);
    fd_check(what, T->A, T->dA, R * NI, lin_case_loss, &c);
    snprintf(what, sizeof what, "%s: dB", name);
    fd_check(what, T->B, T->dB, NO * R, lin_case_loss, &c);
    snprintf(what, sizeof what, "%s: din", name);
    fd_check(what, x, dx, N * NI, lin_case_loss, &c);
    snprintf(what, sizeof what, "%s: db", name);
    fd_check(what, b, db, NO, lin_case_loss, &c);
    if (!frozen_base) {
        snprintf(what, sizeof what, "%s: dw", name);
        fd_check(what, w, dw, NO * NI, lin_case_loss, &c);
    }
    if (ops == &dora_ops) {
        snprintf(what, sizeof what, "%s: dc", name);
        fd_check(what, T->c, T->dc, NO, lin_case_loss, &c);
    }
    free(T);
}

/* ---- conv LoRA: y = conv(x) + b + s * B1x1(Akxk(x)) ---- */
enum { CB = 2, CI = 3, CO = 4, CH = 5, CW = 4, CK = 3, CR = 2 };
typedef struct ConvToy {
    SlHook hook;
    SlConv2d A, Bm;  /* A: CI->CR k x k (same geometry as the base), B: CR->CO 1x1 */
    float a[CR * CI * CK * CK], bw[CO * CR], da[CR * CI * CK * CK], dbw[CO * CR];
    float mid[CB * CR * CH * CW], dmid[CB * CR * CH * CW], t[CB * CO * CH * CW];
    float s;
} ConvToy;

static void cl_fwd(SlHook *h, const SlConv2d *m, float *y, const float *x, const SlConvDims *d, float *work) {
    ConvToy *T = h->self;
    (void)m;
    sl_convmod_forward(&T->A, T->mid, x, d->B, d->H, d->W, work);
    sl_convmod_forward(&T->Bm, T->t, T->mid, d->B, d->Ho, d->Wo, work);
    sl_axpy(y, T->s, T->t, d->B * d->Co * d->Ho * d->Wo);
}
static const float *cl_bwd(SlHook *h, const SlConv2d *m, float *din, const float *dout, const float *x,
                           const SlConvDims *d, float *work) {
    ConvToy *T = h->self;
    (void)m;
    const int64_t n = d->B * d->Co * d->Ho * d->Wo;
    for (int64_t i = 0; i < n; i++) T->t[i] = T->s * dout[i];
    memset(T->dmid, 0, sizeof T->dmid);
    sl_convmod_backward(&T->Bm, T->dmid, T->t, T->mid, d->B, d->Ho, d->Wo, work);
    sl_convmod_backward(&T->A, din, T->dmid, x, d->B, d->H, d->W, work);
    return NULL;
}
static const SlHookOps conv_lora_ops = {.conv_forward = cl_fwd, .conv_backward = cl_bwd};

typedef struct ConvCase { SlConv2d *m; float *x, *Rw, *work; } ConvCase;
static double conv_case_loss(void *a) {
    ConvCase *c = a;
    float y[CB * CO * CH * CW];
    sl_convmod_forward(c->m, y, c->x, CB, CH, CW, c->work);
    double s = 0;
    for (int i = 0; i < CB * CO * CH * CW; i++) s += (double)y[i] * c->Rw[i];
    return s;
}

static void test_conv(void) {
    static float w[CO * CI * CK * CK], b[CO], dw[CO * CI * CK * CK], db[CO], x[CB * CI * CH * CW],
        dx[CB * CI * CH * CW], Rw[CB * CO * CH * CW], y[CB * CO * CH * CW];
    ConvToy *T = calloc(1, sizeof *T);
    fill(w, CO * CI * CK * CK, 11, 0.3f);
    fill(b, CO, 12, 0.3f);
    fill(x, CB * CI * CH * CW, 13, 1.0f);
    fill(Rw, CB * CO * CH * CW, 14, 1.0f);
    fill(T->a, CR * CI * CK * CK, 15, 0.3f);
    fill(T->bw, CO * CR, 16, 0.5f);
    T->s = 0.7f;
    T->A = (SlConv2d){.Ci = CI, .Co = CR, .k = CK, .stride = 1, .pad = 1, .w = T->a, .dw = T->da};
    T->Bm = (SlConv2d){.Ci = CR, .Co = CO, .k = 1, .stride = 1, .pad = 0, .w = T->bw, .dw = T->dbw};
    T->hook.ops = &conv_lora_ops;
    T->hook.self = T;
    SlConv2d m = {.Ci = CI, .Co = CO, .k = CK, .stride = 1, .pad = 1, .w = w, .b = b, .dw = dw, .db = db,
                  .hook = &T->hook};
    size_t ws = sl_convmod_workspace(&m, CB, CH, CW);
    size_t ws2 = sl_convmod_workspace(&T->Bm, CB, CH, CW);
    float *work = calloc((ws > ws2 ? ws : ws2) + 16, sizeof(float));
    memset(dw, 0, sizeof dw);
    memset(db, 0, sizeof db);
    memset(dx, 0, sizeof dx);
    sl_convmod_forward(&m, y, x, CB, CH, CW, work);
    sl_convmod_backward(&m, dx, Rw, x, CB, CH, CW, work);
    ConvCase c = {&m, x, Rw, work};
    fd_check("conv lora: dA", T->a, T->da, CR * CI * CK * CK, conv_case_loss, &c);
    fd_check("conv lora: dB", T->bw, T->dbw, CO * CR, conv_case_loss, &c);
    fd_check("conv lora: dw", w, dw, CO * CI * CK * CK, conv_case_loss, &c);
    fd_check("conv lora: db", b, db, CO, conv_case_loss, &c);
    fd_check("conv lora: din", x, dx, CB * CI * CH * CW, conv_case_loss, &c);
    free(work);
    free(T);
}

/* Without a hook, a module is exactly the nn.h kernel. */
static void test_plain(void) {
    float w[NO * NI], b[NO], x[N * NI], y1[N * NO], y2[N * NO];
    fill(w, NO * NI, 21, 1.0f);
    fill(b, NO, 22, 1.0f);
    fill(x, N * NI, 23, 1.0f);
    SlLinear m = {.I = NI, .O = NO, .w = w, .b = b};
    sl_linmod_forward(&m, y1, x, N);
    sl_linear_forward(y2, x, w, b, N, NI, NO, NULL);
    sl_test_close("plain linear module == sl_linear_forward", y1, y2, N * NO, 0, 0);
}

int main(void) {
    test_plain();
    test_linear("lora hook", &lora_ops, 0);
    test_linear("dora-like hook (dout rewrite)", &dora_ops, 0);
    test_linear("base-replacing hook (frozen, w = NULL)", &quant_ops, 1);
    test_conv();
    return sl_test_finish("test_module");
}
