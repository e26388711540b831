/* lycoris.c - LyCORIS LoHa and LoKr files (kohya / LyCORIS key naming), read as dense deltas.
 *
 * Keys, per module stem ("lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn1_to_q"):
 *   LoHa  .hada_w1_a [O,R] .hada_w1_b [R,I*k*k] .hada_w2_a [O,R2] .hada_w2_b [R2,I*k*k]
 *         Tucker (convs): .hada_t1 [R,R,k,k] .hada_w1_a [R,O] .hada_w1_b [R,I] (same for t2/w2)
 *         dW = (w1_a w1_b) * (w2_a w2_b) * alpha/R   (Hadamard product), R = rows of hada_w1_b;
 *         Tucker factor: m[p,r,y,x] = sum_ij t[i,j,y,x] w_b[j,r] w_a[i,p].
 *   LoKr  .lokr_w1 [a,c] or .lokr_w1_a [a,R1] .lokr_w1_b [R1,c];
 *         .lokr_w2 [b,d(,k,k)] or .lokr_w2_a [b,R] .lokr_w2_b [R,d(,k,k)] (or [R,d*k*k]),
 *         or Tucker .lokr_t2 [R,R,k,k] .lokr_w2_a [R,b] .lokr_w2_b [R,d];
 *         dW = kron(w1, w2) * alpha/r, O = a*b, I*k*k = c*(d*k*k); r = rows of lokr_w2_b when
 *         w2 is factorised, else rows of lokr_w1_b; with both factors full the scale is 1
 *         whatever alpha says (LyCORIS forces alpha = dim there).
 *   .alpha (scalar): absent -> opts->alpha if given, else alpha = r (scale 1, as ComfyUI and
 *         LyCORIS do for a missing or zero alpha).
 * Followed: KohakuBlueleaf/LyCORIS lycoris/functional/loha.py, lokr.py, general.py
 * (rebuild_tucker, make_kron), lycoris/modules/lokr.py (alpha forced when both full);
 * comfyanonymous/ComfyUI comfy/weight_adapter/loha.py, lokr.py (scale = alpha / w1_b rows for
 * LoHa, alpha / w2_b (else w1_b) rows for LoKr, missing alpha = scale 1).
 *
 * Representation (the simplest honest route to the existing hooks and merge): each module's
 * dW [O, I*k*k] is computed once at load, in float64 accumulation, and stored as a rank-r
 * SlLoraMod with scale 1: on a conv A = dW (a k x k conv) and B = identity [Co,Co]; on a
 * linear the identity takes the smaller side (O <= I: A = dW, B = I_O; else A = I_I, B = dW).
 * Memory per module: O*I*k*k + min(O, I*k*k)^2 floats (a full SD 1.5 LoHa on every layer
 * costs about the U-Net's own f32 size); run time: two GEMMs per call, the second against
 * the identity. Merging gives W + dW exactly as LyCORIS / ComfyUI do.
 *
 * Without sites a flat LoHa conv ([O, I*k*k] factors) cannot know k: it loads as a
 * "linear" with I*k*k inputs, which merge accepts on the conv of that layout (mod_fits)
 * and the hooks refuse (load with the model for run-time use).
 *
 * Not here: training LoHa/LoKr, LyCORIS DoRA (dora_scale with LoHa/LoKr is refused), OFT,
 * (IA)^3, GLoRA, rs_lora scaling.
 *
 * Dimension letters: O out, I in, k kernel, K = I*k*k, R ranks, a/b c/d LoKr factor sides.
 */
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "adapter.h"
#include "adapter_internal.h"
#include "core/safetensors.h"

enum {
    R_HW1A = 0, R_HW1B, R_HW2A, R_HW2B, R_HT1, R_HT2,
    R_KW1, R_KW1A, R_KW1B, R_KW2, R_KW2A, R_KW2B, R_KT2,
    R_ALPHA, R_DORA, R_N
};

static const struct {
    const char *suffix;
    int role, kind;   /* kind: SL_LYCO_* or 0 (shared) */
} k_lyco_keys[] = {
    {".hada_w1_a", R_HW1A, SL_LYCO_LOHA}, {".hada_w1_b", R_HW1B, SL_LYCO_LOHA},
    {".hada_w2_a", R_HW2A, SL_LYCO_LOHA}, {".hada_w2_b", R_HW2B, SL_LYCO_LOHA},
    {".hada_t1", R_HT1, SL_LYCO_LOHA},    {".hada_t2", R_HT2, SL_LYCO_LOHA},
    {".lokr_w1", R_KW1, SL_LYCO_LOKR},    {".lokr_w1_a", R_KW1A, SL_LYCO_LOKR},
    {".lokr_w1_b", R_KW1B, SL_LYCO_LOKR}, {".lokr_w2", R_KW2, SL_LYCO_LOKR},
    {".lokr_w2_a", R_KW2A, SL_LYCO_LOKR}, {".lokr_w2_b", R_KW2B, SL_LYCO_LOKR},
    {".lokr_t2", R_KT2, SL_LYCO_LOKR},
    {".alpha", R_ALPHA, 0},               {".dora_scale", R_DORA, 0},
};
#define N_KEYS ((int)(sizeof k_lyco_keys / sizeof k_lyco_keys[0]))

static int key_index(const char *name) {
    size_t ln = strlen(name);
    for (int s = 0; s < N_KEYS; s++) {
        size_t ls = strlen(k_lyco_keys[s].suffix);
        if (ln > ls && !strcmp(name + ln - ls, k_lyco_keys[s].suffix)) return s;
    }
    return -1;
}

int sl_lycoris_detect(const SlStFile *f) {
    for (int i = 0; i < f->n; i++) {
        int s = key_index(f->entries[i].name);
        if (s >= 0 && k_lyco_keys[s].kind) return 1;
    }
    return 0;
}

typedef struct LGroup {
    char name[SL_ADAPTER_NAME_MAX];
    char stem[SL_ADAPTER_NAME_MAX + 64];
    const SlStEntry *e[R_N];
    int site, kind, skip;
    int64_t O, K, k, rank;   /* rank 0: none (LoKr both full) */
    int64_t fa, fc, fb, fq;  /* LoKr: w1 [fa,fc], w2 as [fb,fq] */
} LGroup;


static int64_t dim(const SlStEntry *e, int i) { return e->shape[i]; }
static int64_t cols(const SlStEntry *e) {   /* numel / rows */
    int64_t n = 1;
    for (int i = 1; i < e->ndim; i++) n *= e->shape[i];
    return n;
}
static int tucker_ok(const SlStEntry *t) { return t->ndim == 4 && dim(t, 2) == dim(t, 3); }

/* Shapes of one group: fills O, K, k, rank (and the LoKr sides); 0 with why on a misfit. */
static int group_shapes(LGroup *q, char *why, size_t n) {
    char s1[64], s2[64], s3[64], s4[64];   /* one per shape printed in a message */
    const SlStEntry *const *e = q->e;
    if (q->kind == SL_LYCO_LOHA) {
        static const char *const need[4] = {"hada_w1_a", "hada_w1_b", "hada_w2_a", "hada_w2_b"};
        for (int r = R_HW1A; r <= R_HW2B; r++)
            if (!e[r]) { snprintf(why, n, "%s: LoHa module without %s.%s", q->name, q->stem, need[r]); return 0; }
        if (!e[R_HT1] != !e[R_HT2]) {
            snprintf(why, n, "%s: LoHa Tucker core %s.%s without %s", q->name, q->stem, e[R_HT1] ? "hada_t1" : "hada_t2",
                     e[R_HT1] ? "hada_t2" : "hada_t1");
            return 0;
        }
        if (e[R_HT1]) {
            int64_t kk = 0, O = 0, I = 0;
            for (int h = 0; h < 2; h++) {
                const SlStEntry *t = e[h ? R_HT2 : R_HT1], *a = e[h ? R_HW2A : R_HW1A], *b = e[h ? R_HW2B : R_HW1B];
                if (!tucker_ok(t) || a->ndim != 2 || b->ndim != 2 || dim(a, 0) != dim(t, 0) || dim(b, 0) != dim(t, 1) ||
                    (h && (dim(a, 1) != O || dim(b, 1) != I || dim(t, 2) != kk))) {
                    snprintf(why, n, "%s %s / %s %s / %s %s: not a LoHa Tucker triple (t [R,R,k,k], a [R,O], b [R,I]) "
                             "matching the other half", t->name, sl_shape_str(t->ndim, t->shape, s1, sizeof s1), a->name,
                             sl_shape_str(a->ndim, a->shape, s2, sizeof s2), b->name, sl_shape_str(b->ndim, b->shape, s3, sizeof s3));
                    return 0;
                }
                O = dim(a, 1); I = dim(b, 1); kk = dim(t, 2);
            }
            q->O = O; q->k = kk; q->K = I * kk * kk; q->rank = dim(e[R_HW1B], 0);
            return 1;
        }
        const SlStEntry *a1 = e[R_HW1A], *b1 = e[R_HW1B], *a2 = e[R_HW2A], *b2 = e[R_HW2B];
        int ok = a1->ndim == 2 && a2->ndim == 2 && (b1->ndim == 2 || b1->ndim == 4) && b2->ndim == b1->ndim &&
                 dim(a1, 1) == dim(b1, 0) && dim(a2, 1) == dim(b2, 0) && dim(a1, 0) == dim(a2, 0) && cols(b1) == cols(b2) &&
                 (b1->ndim == 2 || (dim(b1, 2) == dim(b1, 3) && dim(b2, 2) == dim(b1, 2)));
        if (!ok) {
            snprintf(why, n, "%s %s x %s %s and %s %s x %s %s do not form a LoHa pair of [O,R] x [R,K] products", a1->name,
                     sl_shape_str(a1->ndim, a1->shape, s1, sizeof s1), b1->name, sl_shape_str(b1->ndim, b1->shape, s2, sizeof s2),
                     a2->name, sl_shape_str(a2->ndim, a2->shape, s3, sizeof s3), b2->name,
                     sl_shape_str(b2->ndim, b2->shape, s4, sizeof s4));
            return 0;
        }
        q->O = dim(a1, 0); q->K = cols(b1); q->k = b1->ndim == 4 ? dim(b1, 2) : 1; q->rank = dim(b1, 0);
        return 1;
    }
    /* LoKr */
    const SlStEntry *w1 = e[R_KW1], *w1a = e[R_KW1A], *w1b = e[R_KW1B];
    const SlStEntry *w2 = e[R_KW2], *w2a = e[R_KW2A], *w2b = e[R_KW2B], *t2 = e[R_KT2];
    int64_t r1 = 0, r2 = 0;
    if (w1 && (w1a || w1b)) { snprintf(why, n, "%s: both %s and %s.lokr_w1_a/_b", q->name, w1->name, q->stem); return 0; }
    if (w1) {
        if (w1->ndim != 2) { snprintf(why, n, "%s %s: lokr_w1 must be 2-D", w1->name, sl_shape_str(w1->ndim, w1->shape, s1, sizeof s1)); return 0; }
        q->fa = dim(w1, 0); q->fc = dim(w1, 1);
    } else if (w1a && w1b) {
        if (w1a->ndim != 2 || w1b->ndim != 2 || dim(w1a, 1) != dim(w1b, 0)) {
            snprintf(why, n, "%s %s x %s %s: not an [a,R] x [R,c] product", w1a->name, sl_shape_str(w1a->ndim, w1a->shape, s1, sizeof s1),
                     w1b->name, sl_shape_str(w1b->ndim, w1b->shape, s2, sizeof s2));
            return 0;
        }
        q->fa = dim(w1a, 0); q->fc = dim(w1b, 1); r1 = dim(w1b, 0);
    } else {
        snprintf(why, n, "%s: LoKr module without %s.lokr_w1 (or lokr_w1_a and lokr_w1_b)", q->name, q->stem);
        return 0;
    }
    q->k = 1;
    if (w2 && (w2a || w2b || t2)) { snprintf(why, n, "%s: both %s and %s.lokr_w2_a/_b", q->name, w2->name, q->stem); return 0; }
    if (w2) {
        if (!(w2->ndim == 2 || (w2->ndim == 4 && dim(w2, 2) == dim(w2, 3)))) {
            snprintf(why, n, "%s %s: lokr_w2 must be [b,d] or [b,d,k,k]", w2->name, sl_shape_str(w2->ndim, w2->shape, s1, sizeof s1));
            return 0;
        }
        q->fb = dim(w2, 0); q->fq = cols(w2);
        if (w2->ndim == 4) q->k = dim(w2, 2);
    } else if (w2a && w2b) {
        if (t2) {
            if (!tucker_ok(t2) || w2a->ndim != 2 || w2b->ndim != 2 || dim(w2a, 0) != dim(t2, 0) || dim(w2b, 0) != dim(t2, 1)) {
                snprintf(why, n, "%s %s / %s %s / %s %s: not a LoKr Tucker triple (t2 [R,R,k,k], w2_a [R,b], w2_b [R,d])",
                         t2->name, sl_shape_str(t2->ndim, t2->shape, s1, sizeof s1), w2a->name,
                         sl_shape_str(w2a->ndim, w2a->shape, s2, sizeof s2), w2b->name,
                         sl_shape_str(w2b->ndim, w2b->shape, s3, sizeof s3));
                return 0;
            }
            q->k = dim(t2, 2); q->fb = dim(w2a, 1); q->fq = dim(w2b, 1) * q->k * q->k;
        } else {
            if (w2a->ndim != 2 || !(w2b->ndim == 2 || (w2b->ndim == 4 && dim(w2b, 2) == dim(w2b, 3))) || dim(w2a, 1) != dim(w2b, 0)) {
                snprintf(why, n, "%s %s x %s %s: not a [b,R] x [R,d(,k,k)] product", w2a->name,
                         sl_shape_str(w2a->ndim, w2a->shape, s1, sizeof s1), w2b->name, sl_shape_str(w2b->ndim, w2b->shape, s2, sizeof s2));
                return 0;
            }
            q->fb = dim(w2a, 0); q->fq = cols(w2b);
            if (w2b->ndim == 4) q->k = dim(w2b, 2);
        }
        r2 = dim(w2b, 0);
    } else {
        snprintf(why, n, "%s: LoKr module without %s.lokr_w2 (or lokr_w2_a and lokr_w2_b)", q->name, q->stem);
        return 0;
    }
    if ((q->fq % (q->k * q->k)) != 0) {
        snprintf(why, n, "%s: LoKr w2 columns %lld are not a multiple of k*k = %lld", q->name, (long long)q->fq, (long long)(q->k * q->k));
        return 0;
    }
    q->O = q->fa * q->fb; q->K = q->fc * q->fq;
    q->rank = r2 ? r2 : r1;   /* ComfyUI lokr.py: w2_b rows win, then w1_b rows; none: scale 1 */
    return 1;
}

/* Reads a tensor as f32 (malloc'd), refusing NaN / Inf. */
static SlStatus read_t(const SlStFile *f, const SlStEntry *e, double **out, SlCtx *ctx) {
    size_t n = (size_t)sl_shape_numel(e->ndim, e->shape);
    float *t = malloc(sizeof(float) * (n ? n : 1));
    double *d = malloc(sizeof(double) * (n ? n : 1));
    SlStatus st = t && d ? SL_OK : sl_fail(ctx, SL_ERR_NOMEM, "%s: out of memory", f->path);
    if (st == SL_OK) st = sl_st_read_f32(f, e, t, ctx);
    if (st == SL_OK && sl_count_nonfinite(t, n))
        st = sl_fail(ctx, SL_ERR_NUMERIC, "%s: tensor %s has %zu NaN/Inf values", f->path, e->name, sl_count_nonfinite(t, n));
    for (size_t i = 0; st == SL_OK && i < n; i++) d[i] = t[i];
    free(t);
    if (st != SL_OK) { free(d); d = NULL; }
    *out = d;
    return st;
}

/* m [M, N] = a [M, R] b [R, N] (a transposed: a [R, M]). */
static void matmul(double *m, const double *a, int a_t, const double *b, int64_t M, int64_t R, int64_t N) {
    for (int64_t i = 0; i < M; i++)
        for (int64_t j = 0; j < N; j++) m[i * N + j] = 0;
    for (int64_t i = 0; i < M; i++)
        for (int64_t r = 0; r < R; r++) {
            const double av = a_t ? a[r * M + i] : a[i * R + r];
            for (int64_t j = 0; j < N; j++) m[i * N + j] += av * b[r * N + j];
        }
}

/* Tucker rebuild: m [P, Q, kk] = sum_ij t [R1, R2, kk][i,j] wb [R2, Q][j,.] wa [R1, P][i,.]. */
static SlStatus tucker(double *m, const double *t, const double *wa, const double *wb, int64_t R1, int64_t R2, int64_t P,
                       int64_t Q, int64_t kk, SlCtx *ctx) {
    double *tmp = malloc(sizeof(double) * (size_t)(R1 * Q * kk));   /* [R1, Q, kk] */
    if (!tmp) return sl_fail(ctx, SL_ERR_NOMEM, "LyCORIS Tucker rebuild: out of memory");
    for (int64_t i = 0; i < R1; i++)
        for (int64_t q = 0; q < Q; q++)
            for (int64_t s = 0; s < kk; s++) {
                double acc = 0;
                for (int64_t j = 0; j < R2; j++) acc += t[(i * R2 + j) * kk + s] * wb[j * Q + q];
                tmp[(i * Q + q) * kk + s] = acc;
            }
    matmul(m, wa, 1, tmp, P, R1, Q * kk);
    free(tmp);
    return SL_OK;
}

/* dW [O, K] of one group, times scale, into out (float). */
static SlStatus group_delta(float *out, const LGroup *q, double scale, const SlStFile *f, SlCtx *ctx) {
    double *v[R_N] = {0};
    double *m1 = NULL, *m2 = NULL;
    SlStatus st = SL_OK;
    for (int r = 0; r < R_N && st == SL_OK; r++)
        if (q->e[r] && r != R_ALPHA && r != R_DORA) st = read_t(f, q->e[r], &v[r], ctx);
    const int64_t O = q->O, K = q->K;
    if (st == SL_OK && q->kind == SL_LYCO_LOHA) {
        m1 = malloc(sizeof(double) * (size_t)(O * K));
        m2 = malloc(sizeof(double) * (size_t)(O * K));
        if (!m1 || !m2) st = sl_fail(ctx, SL_ERR_NOMEM, "%s: out of memory", f->path);
        for (int h = 0; h < 2 && st == SL_OK; h++) {
            double *m = h ? m2 : m1;
            const SlStEntry *a = q->e[h ? R_HW2A : R_HW1A], *b = q->e[h ? R_HW2B : R_HW1B], *t = q->e[h ? R_HT2 : R_HT1];
            if (t) st = tucker(m, v[h ? R_HT2 : R_HT1], v[h ? R_HW2A : R_HW1A], v[h ? R_HW2B : R_HW1B], dim(t, 0), dim(t, 1), O,
                               dim(b, 1), q->k * q->k, ctx);
            else matmul(m, v[h ? R_HW2A : R_HW1A], 0, v[h ? R_HW2B : R_HW1B], O, dim(a, 1), K);
        }
        for (int64_t i = 0; st == SL_OK && i < O * K; i++) out[i] = (float)(m1[i] * m2[i] * scale);
    } else if (st == SL_OK) {
        const int64_t fa = q->fa, fb = q->fb, fc = q->fc, fq = q->fq;
        m1 = malloc(sizeof(double) * (size_t)(fa * fc));   /* w1 [a, c] */
        m2 = malloc(sizeof(double) * (size_t)(fb * fq));   /* w2 [b, q] */
        if (!m1 || !m2) st = sl_fail(ctx, SL_ERR_NOMEM, "%s: out of memory", f->path);
        if (st == SL_OK) {
            if (v[R_KW1]) memcpy(m1, v[R_KW1], sizeof(double) * (size_t)(fa * fc));
            else matmul(m1, v[R_KW1A], 0, v[R_KW1B], fa, dim(q->e[R_KW1A], 1), fc);
            if (v[R_KW2]) memcpy(m2, v[R_KW2], sizeof(double) * (size_t)(fb * fq));
            else if (v[R_KT2]) {
                const SlStEntry *t = q->e[R_KT2];
                st = tucker(m2, v[R_KT2], v[R_KW2A], v[R_KW2B], dim(t, 0), dim(t, 1), fb, dim(q->e[R_KW2B], 1), q->k * q->k, ctx);
            } else matmul(m2, v[R_KW2A], 0, v[R_KW2B], fb, dim(q->e[R_KW2A], 1), fq);
        }
        /* kron: dW[o1*b + o2, i1*q + j] = w1[o1, i1] w2[o2, j]; the [b, d*k*k] form of w2 gives the
         * same [O, I, k, k] layout as LyCORIS' 4-D kron with w1 unsqueezed (make_kron). */
        for (int64_t o1 = 0; st == SL_OK && o1 < fa; o1++)
            for (int64_t o2 = 0; o2 < fb; o2++)
                for (int64_t i1 = 0; i1 < fc; i1++) {
                    const double w = m1[o1 * fc + i1] * scale;
                    float *row = out + (o1 * fb + o2) * K + i1 * fq;
                    for (int64_t j = 0; j < fq; j++) row[j] = (float)(w * m2[o2 * fq + j]);
                }
    }
    free(m1);
    free(m2);
    for (int r = 0; r < R_N; r++) free(v[r]);
    return st;
}

SlStatus sl_lycoris_load(SlAdapter *ad, const SlStFile *f, const SlSites *sites, const SlAdapterLoadOpts *opts, SlCtx *ctx) {
    const int lenient = opts && opts->lenient;
    const char *dns = opts && opts->default_ns ? opts->default_ns : "unet";
    LGroup *g = calloc((size_t)(f->n ? f->n : 1), sizeof *g);
    if (!g) return sl_fail(ctx, SL_ERR_NOMEM, "%s: out of memory", f->path);
    SlAdapterErrs er = {{0}, 0, 0};
    char why[600];
    int ng = 0;
    SlStatus st = SL_OK;
    /* group the keys by module */
    for (int i = 0; i < f->n; i++) {
        const SlStEntry *e = &f->entries[i];
        int s = key_index(e->name);
        if (s < 0) {
            sl_adapter_errs_add(&er, ctx, lenient, f->path, "%s: not a LoHa/LoKr key (a file mixing LyCORIS with other adapter "
                 "types is not supported)", e->name);
            continue;
        }
        char stem[SL_ADAPTER_NAME_MAX + 64], name[SL_ADAPTER_NAME_MAX];
        size_t ls = strlen(e->name) - strlen(k_lyco_keys[s].suffix);
        if (ls >= sizeof stem) { sl_adapter_errs_add(&er, ctx, lenient, f->path, "%s: name too long", e->name); continue; }
        memcpy(stem, e->name, ls);
        stem[ls] = 0;
        int resolved = sl_adapter_stem_name(name, sizeof name, stem, sites, dns, ctx);
        int gi = -1;
        for (int j = 0; j < ng && gi < 0; j++)
            if (!strcmp(g[j].name, name)) gi = j;
        if (gi < 0) {
            gi = ng++;
            snprintf(g[gi].name, sizeof g[gi].name, "%s", name);
            snprintf(g[gi].stem, sizeof g[gi].stem, "%s", stem);
            g[gi].site = sites && resolved ? sl_sites_find(sites, name) : -1;
        }
        const int kind = k_lyco_keys[s].kind;
        if (kind && g[gi].kind && kind != g[gi].kind) {
            sl_adapter_errs_add(&er, ctx, lenient, f->path, "%s: %s mixes LoHa and LoKr keys", name, e->name);
            g[gi].skip = 1;
            continue;
        }
        if (kind) g[gi].kind = kind;
        g[gi].e[k_lyco_keys[s].role] = e;
    }
    /* shapes */
    int keep = 0;
    size_t floats = 0;
    for (int i = 0; i < ng; i++) {
        LGroup *q = &g[i];
        if (q->skip) continue;
        q->skip = 1;
        const SlStEntry *any = NULL;
        for (int r = 0; r < R_N && !any; r++) any = q->e[r];
        if (!q->kind) { sl_adapter_errs_add(&er, ctx, lenient, f->path, "%s: %s without any LoHa/LoKr tensor", q->name, any->name); continue; }
        if (q->e[R_DORA]) {
            sl_adapter_errs_add(&er, ctx, lenient, f->path, "%s: LyCORIS DoRA (dora_scale with %s) is not supported", q->e[R_DORA]->name,
                 q->kind == SL_LYCO_LOHA ? "LoHa" : "LoKr");
            continue;
        }
        if (q->e[R_ALPHA] && sl_shape_numel(q->e[R_ALPHA]->ndim, q->e[R_ALPHA]->shape) != 1) {
            sl_adapter_errs_add(&er, ctx, lenient, f->path, "%s: alpha must hold one value", q->e[R_ALPHA]->name);
            continue;
        }
        int dims_ok = 1;   /* products of dims below stay far from int64 overflow */
        for (int r = 0; r < R_N && dims_ok; r++)
            for (int d = 0; q->e[r] && r != R_ALPHA && d < q->e[r]->ndim && dims_ok; d++)
                if (q->e[r]->shape[d] < 1 || q->e[r]->shape[d] > (1 << 24)) {
                    sl_adapter_errs_add(&er, ctx, lenient, f->path, "%s: dimension %d is %lld (1..2^24 expected)", q->e[r]->name, d,
                         (long long)q->e[r]->shape[d]);
                    dims_ok = 0;
                }
        if (!dims_ok) continue;
        if (!group_shapes(q, why, sizeof why)) { sl_adapter_errs_add(&er, ctx, lenient, f->path, "%s", why); continue; }
        /* a kron of two small tensors can be enormous: cap the dense delta (the largest SDXL
         * weight has 14.7M values) so a hostile file fails here, not in the allocator */
        if (q->O <= 0 || q->K <= 0 || q->O > (1 << 24) || q->K > (1 << 24) || q->O * q->K > ((int64_t)1 << 28)) {
            sl_adapter_errs_add(&er, ctx, lenient, f->path, "%s: LyCORIS delta [%lld, %lld] is empty or too large (limit 2^28 values)", q->stem,
                 (long long)q->O, (long long)q->K);
            continue;
        }
        if (sites && q->site < 0) { sl_adapter_errs_add(&er, ctx, lenient, f->path, "%s: no module %s in the model", any->name, q->name); continue; }
        if (sites) {
            const SlSite *s = &sites->v[q->site];
            int64_t so = s->conv ? s->conv->Co : s->lin->O, si = s->conv ? s->conv->Ci : s->lin->I, sk = s->conv ? s->conv->k : 1;
            if (so != q->O || si * sk * sk != q->K || (q->k > 1 && q->k != sk)) {
                char kr[96] = "";
                if (q->kind == SL_LYCO_LOKR)
                    snprintf(kr, sizeof kr, " (kron of w1 [%lld,%lld] and w2 [%lld,%lld])", (long long)q->fa, (long long)q->fc,
                             (long long)q->fb, (long long)q->fq);
                sl_adapter_errs_add(&er, ctx, lenient, f->path, "%s: %s delta [out %lld, in*k*k %lld, k %lld]%s does not fit %s [out %lld, in %lld, k %lld]",
                     q->stem, q->kind == SL_LYCO_LOHA ? "LoHa" : "LoKr", (long long)q->O, (long long)q->K, (long long)q->k, kr,
                     q->name, (long long)so, (long long)si, (long long)sk);
                continue;
            }
            q->k = sk;
        }
        q->skip = 0;
        keep++;
        const int64_t side = (q->k > 1 || q->O <= q->K) ? q->O : q->K;
        floats += sl_align_up(sizeof(float) * (size_t)(q->O * q->K)) / sizeof(float) +
                  sl_align_up(sizeof(float) * (size_t)(side * side)) / sizeof(float);
    }
    if (er.n && !lenient) st = sl_fail(ctx, SL_ERR_SHAPE, "%s: %d LyCORIS key problem(s): %s", f->path, er.n, er.list);
    else if (!keep) st = sl_fail(ctx, SL_ERR_FORMAT, "%s: no usable LoHa/LoKr module", f->path);
    if (st == SL_OK && !(ad->mods = calloc((size_t)keep, sizeof *ad->mods))) st = sl_fail(ctx, SL_ERR_NOMEM, "%s: out of memory", f->path);
    if (st == SL_OK) st = sl_arena_init(&ad->params, floats * sizeof(float), "adapter weights", ctx);
    int n_loha = 0, n_lokr = 0, n_default = 0;
    for (int i = 0; i < ng && st == SL_OK; i++) {
        const LGroup *q = &g[i];
        if (q->skip) continue;
        float alpha = 0;
        if (q->e[R_ALPHA]) st = sl_st_read_f32(f, q->e[R_ALPHA], &alpha, ctx);
        if (st != SL_OK) break;
        if (!isfinite(alpha)) { st = sl_fail(ctx, SL_ERR_NUMERIC, "%s: %s is not finite", f->path, q->e[R_ALPHA]->name); break; }
        if (!q->e[R_ALPHA]) {
            if (opts && opts->alpha > 0) alpha = opts->alpha;
            else n_default += q->rank > 0;
        }
        /* alpha missing or 0 means alpha = rank (LyCORIS modules, ComfyUI); both LoKr factors full: scale 1 */
        const double scale = (q->rank > 0 && alpha != 0) ? (double)alpha / (double)q->rank : 1.0;
        SlLoraMod *lm = &ad->mods[ad->n++];
        snprintf(lm->name, sizeof lm->name, "%s", q->name);
        lm->lyco = q->kind;
        lm->lyco_rank = q->rank;
        lm->lyco_scale = (float)scale;
        lm->O = q->O;
        lm->k = q->k;
        lm->I = q->K / (q->k * q->k);
        lm->conv = sites ? sites->v[q->site].conv != NULL : q->k > 1;
        lm->conv1x1 = sites && sites->v[q->site].lin ? sites->v[q->site].lin->conv1x1 : 0;
        const int delta_in_a = lm->conv || q->O <= q->K;
        lm->r = delta_in_a ? q->O : q->K;
        lm->alpha = (float)lm->r;   /* scale 1: the file's scale is inside the delta */
        float *dw = sl_arena_take_f32(&ad->params, q->O * q->K);
        float *id = sl_arena_take_f32(&ad->params, lm->r * lm->r);
        memset(id, 0, sizeof(float) * (size_t)(lm->r * lm->r));
        for (int64_t j = 0; j < lm->r; j++) id[j * lm->r + j] = 1.0f;
        lm->A = delta_in_a ? dw : id;   /* [r, K] */
        lm->B = delta_in_a ? id : dw;   /* [O, r] */
        st = group_delta(dw, q, scale, f, ctx);
        if (q->kind == SL_LYCO_LOHA) n_loha++;
        else n_lokr++;
    }
    free(g);
    if (st != SL_OK) return st;
    if (n_default)
        sl_log(ctx, SL_LOG_INFO, "%s: %d LyCORIS module(s) without alpha: alpha = rank (scale 1), as LyCORIS and ComfyUI do",
               f->path, n_default);
    sl_log(ctx, SL_LOG_INFO, "%s: LyCORIS, %d modules (%d LoHa, %d LoKr), read as dense deltas", f->path, ad->n, n_loha, n_lokr);
    return SL_OK;
}
