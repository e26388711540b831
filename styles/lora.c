/* lora.c - the adapter hooks: LoRA (linear), LoCon (conv), DoRA (linear), composite.
 *
 * Forward and backward of each kind side by side; they follow nn/module.h:
 *   LoRA    forward  y += s (x A^T) B^T                     ax [N,r] kept
 *           backward dB += s dy^T ax;  dax = s dy B;  dA += dax^T x;  din += dax A;  returns NULL
 *   LoCon   forward  h = conv(x, A) [B,r,P] (base stride/pad), y_b += s B h_b
 *           backward dB += s sum_b dy_b h_b^T;  dh_b = s B^T dy_b;  conv backward gives dA, din
 *   DoRA    forward  ypre = W x + s B A x;  y = c ypre,  c = m / ||W + s B A||_row (detached)
 *           backward g = c dy;  dm += sum_n dy ypre / ||.||;  LoRA backward with g;  returns g
 * Several adapters on one module add their LoRA/LoCon terms (each with s = w alpha/r);
 * a DoRA update is always alone on its module (checked when the set is applied).
 * Dropout: see adapter.h (mask from the counter RNG, regenerated in backward).
 *
 * The two thin GEMMs go through cblas. No allocation here: every buffer was
 * planned by adapter_set.c from the module's rows.
 *
 * Dimension letters: N rows, I in, O out, r rank, B batch, P = Ho*Wo, Ci/Co channels.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include <cblas.h>

#include "nn/gemm.h"
#undef I /* OpenBLAS pulls in <complex.h>, whose I clashes with SlLinear's field */

#include "adapter_internal.h"
#include "core/rng.h"

static float use_scale(const SlSiteHook *sh, const SlAdapterUse *u) {
    return sh->set->w[u->ai] * sl_lora_scale(u->ad, u->lm);
}

/* A planning bug (a call larger than the planned rows) cannot be reported from a
 * hook: stop rather than write past the caches. */
static void check_rows(const SlSiteHook *sh, int64_t n) {
    if (n > sh->rows) abort();
}

static int dropout_on(const SlSiteHook *sh) { return sh->set->training && sh->set->dropout > 0.0f; }

/* x[i] *= keep(i) / (1-p) for element offset+i of stream (seed, site): keep = u >= p. */
static void dropout_mask_apply(float *x, int64_t n, const SlSiteHook *sh) {
    const float p = sh->set->dropout, inv = 1.0f / (1.0f - p);
    const uint64_t base = sh->set->step << 32;
    float u[256];
    for (int64_t i0 = 0; i0 < n; i0 += 256) {
        int64_t len = n - i0 < 256 ? n - i0 : 256;
        sl_rng_uniform(u, len, sh->set->seed, (uint64_t)sh->site, base + (uint64_t)i0);
        for (int64_t i = 0; i < len; i++) x[i0 + i] = u[i] >= p ? x[i0 + i] * inv : 0.0f;
    }
}

/* ---- dense delta (merge, DoRA norms) ---- */

void sl_lora_delta(float *out, const SlLoraMod *lm, float s, const SlKernels *kern) {
    const int64_t K = lm->I * lm->k * lm->k;
    sl_sgemm(0, 0, (int)lm->O, (int)K, (int)lm->r, s, lm->B,
                (int)lm->r, lm->A, (int)K, 0.0f, out, (int)K, kern);
}

/* ---- LoRA on a linear ---- */

static void lora_lin_forward(SlSiteHook *sh, const SlLinear *m, float *y, const float *x, int64_t N) {
    const float *xe = x;
    if (dropout_on(sh)) {
        memcpy(sh->xd, x, sizeof(float) * (size_t)(N * m->I));
        dropout_mask_apply(sh->xd, N * m->I, sh);
        xe = sh->xd;
    }
    for (int k = 0; k < sh->n_use; k++) {
        SlAdapterUse *u = &sh->use[k];
        const SlLoraMod *lm = u->lm;
        const int r = (int)lm->r;
        /* ax [N,r] = xe A^T */
        sl_sgemm(0, 1, (int)N, r, (int)m->I, 1.0f, xe, (int)m->I,
                    lm->A, (int)m->I, 0.0f, u->ax, r, &m->kern);
        /* y [N,O] += s ax B^T */
        sl_sgemm(0, 1, (int)N, (int)m->O, r, use_scale(sh, u), u->ax,
                    r, lm->B, r, 1.0f, y, (int)m->O, &m->kern);
    }
}

/* LoRA part of the backward from dy [N,O] (dout, or c*dout for DoRA). */
static void lora_lin_backward(SlSiteHook *sh, const SlLinear *m, float *din, const float *dy,
                              const float *x, int64_t N) {
    const int drop = dropout_on(sh);
    const float *xe = drop ? sh->xd : x;
    for (int k = 0; k < sh->n_use; k++) {
        SlAdapterUse *u = &sh->use[k];
        SlLoraMod *lm = u->lm;
        const int r = (int)lm->r;
        const float s = use_scale(sh, u);
        /* dB [O,r] += s dy^T ax */
        if (lm->dB)
            sl_sgemm(1, 0, (int)m->O, r, (int)N, s, dy, (int)m->O,
                        u->ax, r, 1.0f, lm->dB, r, &m->kern);
        /* dax [N,r] = s dy B */
        sl_sgemm(0, 0, (int)N, r, (int)m->O, s, dy, (int)m->O,
                    lm->B, r, 0.0f, u->dax, r, &m->kern);
        /* dA [r,I] += dax^T xe */
        if (lm->dA)
            sl_sgemm(1, 0, r, (int)m->I, (int)N, 1.0f, u->dax, r, xe,
                        (int)m->I, 1.0f, lm->dA, (int)m->I, &m->kern);
    }
    if (!din) return;
    /* din [N,I] += sum_u dax_u A_u (through the dropout mask when on) */
    float *acc = drop ? sh->xd : din;
    for (int k = 0; k < sh->n_use; k++) {
        SlAdapterUse *u = &sh->use[k];
        const int r = (int)u->lm->r;
        sl_sgemm(0, 0, (int)N, (int)m->I, r, 1.0f, u->dax, r,
                    u->lm->A, (int)m->I, (drop && k == 0) ? 0.0f : 1.0f, acc, (int)m->I, &m->kern);
    }
    if (drop) {
        dropout_mask_apply(acc, N * m->I, sh);
        for (int64_t i = 0; i < N * m->I; i++) din[i] += acc[i];
    }
}

/* ---- DoRA on a linear ---- */

static void dora_lin_forward(SlSiteHook *sh, const SlLinear *m, float *y, const float *x, int64_t N) {
    SlAdapterUse *u = &sh->use[0];
    const SlLoraMod *lm = u->lm;
    const float s = use_scale(sh, u);
    const int64_t I = m->I, O = m->O, r = lm->r;
    /* c = m / ||W + s B A||_row, treated as a constant (PEFT: weight_norm.detach()) */
    for (int64_t o = 0; o < O; o++) {
        memcpy(sh->row, m->w + o * I, sizeof(float) * (size_t)I);
        /* row [I] += s A^T B[o,:] */
        cblas_sgemv(CblasRowMajor, CblasTrans, (int)r, (int)I, s, lm->A, (int)I, lm->B + o * r, 1, 1.0f,
                    sh->row, 1);
        double ss = 0;
        for (int64_t i = 0; i < I; i++) ss += (double)sh->row[i] * sh->row[i];
        float nrm = (float)sqrt(ss);
        sh->inv[o] = 1.0f / nrm;
        sh->c[o] = lm->mag[o] / nrm;
    }
    lora_lin_forward(sh, m, y, x, N);   /* y = W x + s B A x */
    memcpy(sh->ypre, y, sizeof(float) * (size_t)(N * O));
    for (int64_t n = 0; n < N; n++)
        for (int64_t o = 0; o < O; o++) y[n * O + o] *= sh->c[o];
}

static const float *dora_lin_backward(SlSiteHook *sh, const SlLinear *m, float *din, const float *dout,
                                      const float *x, int64_t N) {
    SlLoraMod *lm = sh->use[0].lm;
    const int64_t O = m->O;
    for (int64_t n = 0; n < N; n++)
        for (int64_t o = 0; o < O; o++) sh->g[n * O + o] = sh->c[o] * dout[n * O + o];
    if (lm->dmag) {
        for (int64_t n = 0; n < N; n++) {
            const float *d = dout + n * O, *yp = sh->ypre + n * O;
            for (int64_t o = 0; o < O; o++) lm->dmag[o] += d[o] * yp[o] * sh->inv[o];
        }
    }
    lora_lin_backward(sh, m, din, sh->g, x, N);
    return sh->g;
}

/* ---- linear entry points ---- */

static void site_lin_forward(SlHook *h, const SlLinear *m, float *y, const float *x, int64_t N) {
    SlSiteHook *sh = (SlSiteHook *)h->self;
    check_rows(sh, N);
    if (sh->dora)
        dora_lin_forward(sh, m, y, x, N);
    else
        lora_lin_forward(sh, m, y, x, N);
}

static const float *site_lin_backward(SlHook *h, const SlLinear *m, float *din, const float *dout,
                                      const float *x, int64_t N) {
    SlSiteHook *sh = (SlSiteHook *)h->self;
    check_rows(sh, N);
    if (sh->dora) return dora_lin_backward(sh, m, din, dout, x, N);
    lora_lin_backward(sh, m, din, dout, x, N);
    return NULL;
}

/* ---- LoCon on a conv ---- */

static SlConvDims down_dims(const SlConvDims *d, int64_t r) {
    SlConvDims dd = *d;
    dd.Co = r;
    return dd;
}

static void locon_forward(SlHook *h, const SlConv2d *m, float *y, const float *x, const SlConvDims *d,
                          float *work) {
    SlSiteHook *sh = (SlSiteHook *)h->self;
    const int64_t P = d->Ho * d->Wo;
    check_rows(sh, d->B * P);
    for (int k = 0; k < sh->n_use; k++) {
        SlAdapterUse *u = &sh->use[k];
        const SlLoraMod *lm = u->lm;
        const int64_t r = lm->r;
        SlConvDims dd = down_dims(d, r);
        sl_conv2d_forward(u->ax, x, lm->A, NULL, &dd, work, &m->kern);  /* ax [B,r,P] */
        if (dropout_on(sh)) dropout_mask_apply(u->ax, d->B * r * P, sh);
        const float s = use_scale(sh, u);
        for (int64_t b = 0; b < d->B; b++)  /* y_b [Co,P] += s B [Co,r] ax_b [r,P] */
            sl_sgemm(0, 0, (int)m->Co, (int)P, (int)r, s, lm->B,
                        (int)r, u->ax + b * r * P, (int)P, 1.0f, y + b * m->Co * P, (int)P, &m->kern);
    }
}

static const float *locon_backward(SlHook *h, const SlConv2d *m, float *din, const float *dout,
                                   const float *x, const SlConvDims *d, float *work) {
    SlSiteHook *sh = (SlSiteHook *)h->self;
    const int64_t P = d->Ho * d->Wo;
    check_rows(sh, d->B * P);
    for (int k = 0; k < sh->n_use; k++) {
        SlAdapterUse *u = &sh->use[k];
        SlLoraMod *lm = u->lm;
        const int64_t r = lm->r;
        const float s = use_scale(sh, u);
        for (int64_t b = 0; b < d->B; b++) {
            const float *dy = dout + b * m->Co * P;
            if (lm->dB)  /* dB [Co,r] += s dy_b [Co,P] ax_b^T */
                sl_sgemm(0, 1, (int)m->Co, (int)r, (int)P, s, dy,
                            (int)P, u->ax + b * r * P, (int)P, 1.0f, lm->dB, (int)r, &m->kern);
            /* dax_b [r,P] = s B^T dy_b */
            sl_sgemm(1, 0, (int)r, (int)P, (int)m->Co, s, lm->B,
                        (int)r, dy, (int)P, 0.0f, u->dax + b * r * P, (int)P, &m->kern);
        }
        if (dropout_on(sh)) dropout_mask_apply(u->dax, d->B * r * P, sh);
        SlConvDims dd = down_dims(d, r);
        if (lm->dA || din) {
            if (lm->dA)
                sl_conv2d_backward(din, lm->dA, NULL, u->dax, x, lm->A, &dd, work, &m->kern);
            else
                sl_conv2d_backward(din, NULL, NULL, u->dax, x, lm->A, &dd, work, &m->kern);
        }
    }
    return NULL;
}

/* ---- base delegation (the previous hook keeps the frozen weight, e.g. NF4) ---- */

static void deleg_lin_base_forward(SlHook *h, const SlLinear *m, float *y, const float *x, int64_t N) {
    SlHook *p = ((SlSiteHook *)h->self)->prev;
    p->ops->lin_base_forward(p, m, y, x, N);
}
static void deleg_lin_base_backward_input(SlHook *h, const SlLinear *m, float *din, const float *g,
                                          int64_t N) {
    SlHook *p = ((SlSiteHook *)h->self)->prev;
    if (p->ops->lin_base_backward_input) p->ops->lin_base_backward_input(p, m, din, g, N);
}
static void deleg_conv_base_forward(SlHook *h, const SlConv2d *m, float *y, const float *x,
                                    const SlConvDims *d, float *work) {
    SlHook *p = ((SlSiteHook *)h->self)->prev;
    p->ops->conv_base_forward(p, m, y, x, d, work);
}
static void deleg_conv_base_backward_input(SlHook *h, const SlConv2d *m, float *din, const float *g,
                                           const SlConvDims *d, float *work) {
    SlHook *p = ((SlSiteHook *)h->self)->prev;
    if (p->ops->conv_base_backward_input) p->ops->conv_base_backward_input(p, m, din, g, d, work);
}

static const SlHookOps site_ops_plain = {
    .lin_forward = site_lin_forward,
    .lin_backward = site_lin_backward,
    .conv_forward = locon_forward,
    .conv_backward = locon_backward,
};

static const SlHookOps site_ops_delegate = {
    .lin_forward = site_lin_forward,
    .lin_backward = site_lin_backward,
    .lin_base_forward = deleg_lin_base_forward,
    .lin_base_backward_input = deleg_lin_base_backward_input,
    .conv_forward = locon_forward,
    .conv_backward = locon_backward,
    .conv_base_forward = deleg_conv_base_forward,
    .conv_base_backward_input = deleg_conv_base_backward_input,
};

const SlHookOps *sl_site_hook_ops(int delegate_base) {
    return delegate_base ? &site_ops_delegate : &site_ops_plain;
}

size_t sl_site_hook_cache_floats(const SlSite *site, const SlLoraMod *const *lms, int n, int dora,
                                 int dropout) {
    size_t f = 0;
    for (int k = 0; k < n; k++) f += 2 * sl_align_up(sizeof(float) * (size_t)(site->rows * lms[k]->r));
    if (site->lin) {
        if (dropout) f += sl_align_up(sizeof(float) * (size_t)(site->rows * site->lin->I));
        if (dora) {
            f += 2 * sl_align_up(sizeof(float) * (size_t)(site->rows * site->lin->O));
            f += 2 * sl_align_up(sizeof(float) * (size_t)site->lin->O);
            f += sl_align_up(sizeof(float) * (size_t)site->lin->I);
        }
    }
    return f / sizeof(float);
}
