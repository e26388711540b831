/* resize.c - LoRA rank reduction and SVD merge of adapters (see resize.h).
 *
 * Followed: kohya-ss/sd-scripts networks/resize_lora.py (rank_resize, index_sv_*,
 * extract_linear / extract_conv, new_alpha = scale * new_rank, MIN_SV) and
 * networks/svd_merge_lora.py (sum of ratio * scale * up @ down per module, then SVD).
 * The SVD of a product B A of rank r < min(O, K) is that of an r x r matrix after two QRs
 * (exact, and fast on SD-size modules); otherwise of the dense delta.
 * Each module is factored into malloc'd temporaries first (its rank is known only after
 * its SVD), then the output adapter's weights are carved from one arena.
 */
#include "styles/resize.h"

#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "nn/gemm.h"

/* LAPACK (OpenBLAS exports it; Debian ships no lapacke.h with it). The trailing size_t
 * is gfortran's hidden length of the CHARACTER argument. */
extern void dgesdd_(const char *jobz, const int *m, const int *n, double *a, const int *lda, double *s, double *u,
                    const int *ldu, double *vt, const int *ldvt, double *work, const int *lwork, int *iwork,
                    int *info, size_t jobz_len);

extern void dgeqrf_(const int *m, const int *n, double *a, const int *lda, double *tau, double *work, const int *lwork,
                    int *info);
extern void dorgqr_(const int *m, const int *n, const int *k, double *a, const int *lda, const double *tau, double *work,
                    const int *lwork, int *info);

#define MIN_SV 1e-6 /* resize_lora.py: a delta whose top singular value is below this is zero */

SlStatus sl_rank_dynamic_parse(SlRankOpts *o, const char *spec, SlCtx *ctx) {
    static const struct { const char *name; SlRankMethod m; double lo, hi; } methods[] = {
        {"sv_ratio", SL_RANK_SV_RATIO, 1.0, 1e12},
        {"sv_fro", SL_RANK_SV_FRO, 0.0, 1.0},
        {"sv_cumulative", SL_RANK_SV_CUMULATIVE, 0.0, 1.0},
    };
    const char *colon = strchr(spec, ':');
    for (size_t i = 0; colon && i < sizeof methods / sizeof methods[0]; i++) {
        if (strlen(methods[i].name) != (size_t)(colon - spec) || strncmp(spec, methods[i].name, (size_t)(colon - spec)))
            continue;
        char *end = NULL;
        double v = strtod(colon + 1, &end);
        if (!colon[1] || *end || !(v > methods[i].lo && v <= methods[i].hi))
            return sl_fail(ctx, SL_ERR_ARG, "--dynamic %s: the value of %s must be a number in (%g, %g]", spec,
                           methods[i].name, methods[i].lo, methods[i].hi);
        o->method = methods[i].m;
        o->param = v;
        return SL_OK;
    }
    return sl_fail(ctx, SL_ERR_ARG, "--dynamic %s: expected sv_ratio:P, sv_fro:P or sv_cumulative:P", spec);
}

/* First index i with c[i] >= t (torch.searchsorted, left side); n if none. */
static int64_t search_left(const double *c, int64_t n, double t) {
    int64_t i = 0;
    while (i < n && c[i] < t) i++;
    return i;
}

int64_t sl_rank_choose(const double *S, int64_t n, SlRankMethod method, double param, int64_t cap) {
    if (cap < 1) cap = 1;
    if (n < 1 || S[0] <= MIN_SV) return 1;
    int64_t idx = cap - 1;   /* fixed: r' = cap */
    if (method == SL_RANK_SV_RATIO) {
        const double min_sv = S[0] / param;
        idx = -1;
        for (int64_t i = 0; i < n; i++) idx += S[i] > min_sv;
    } else if (method == SL_RANK_SV_FRO || method == SL_RANK_SV_CUMULATIVE) {
        const int fro = method == SL_RANK_SV_FRO;
        double *c = malloc(sizeof(double) * (size_t)n);
        if (!c) return cap;   /* no memory for the scan: keep the cap (the safe side) */
        double sum = 0;
        for (int64_t i = 0; i < n; i++) c[i] = (sum += fro ? S[i] * S[i] : S[i]);
        for (int64_t i = 0; i < n; i++) c[i] /= sum;
        idx = search_left(c, n, fro ? param * param : param);
        free(c);
    }
    if (idx > n - 1) idx = n - 1;
    if (idx < 0) idx = 0;
    return idx + 1 < cap ? idx + 1 : cap;
}

/* The largest-magnitude entry (the first such) of each left vector U[:, j] ([O,n]) made
 * positive; U and Vt ([n,K]) flip together, so U S Vt is unchanged. */
static void fix_signs(double *U, double *Vt, int64_t O, int64_t K, int64_t n) {
    for (int64_t j = 0; j < n; j++) {
        int64_t best = 0;
        for (int64_t o = 1; o < O; o++)
            if (fabs(U[o * n + j]) > fabs(U[best * n + j])) best = o;
        if (U[best * n + j] >= 0) continue;
        for (int64_t o = 0; o < O; o++) U[o * n + j] = -U[o * n + j];
        for (int64_t c = 0; c < K; c++) Vt[j * K + c] = -Vt[j * K + c];
    }
}

SlStatus sl_svd(double *U, double *S, double *Vt, const double *D, int64_t O, int64_t K, SlCtx *ctx) {
    if (O < 1 || K < 1 || O > INT_MAX / 8 || K > INT_MAX / 8 || O * K > INT_MAX)
        return sl_fail(ctx, SL_ERR_ARG, "svd: matrix [%lld, %lld] out of range", (long long)O, (long long)K);
    const int64_t n = O < K ? O : K;
    sl_gemm_init();   /* OpenBLAS single-threaded: its bits depend on the thread count (README, Numerics) */
    /* Row-major D [O,K] is column-major D^T [K,O] = U' S V'^T, so D = V' S U'^T: LAPACK's
     * u (column-major [K,n]) read row-major is our Vt [n,K], its vt ([n,O]) our U [O,n]. */
    const int m_ = (int)K, n_ = (int)O, ld_u = (int)K, ld_vt = (int)n;
    double *a = malloc(sizeof(double) * (size_t)(O * K));
    int *iwork = malloc(sizeof(int) * (size_t)(8 * n));
    double wq = 0;
    int lwork = -1, info = 0;
    if (!a || !iwork) {
        free(a);
        free(iwork);
        return sl_fail(ctx, SL_ERR_NOMEM, "svd [%lld, %lld]: out of memory", (long long)O, (long long)K);
    }
    memcpy(a, D, sizeof(double) * (size_t)(O * K));
    dgesdd_("S", &m_, &n_, a, &m_, S, Vt, &ld_u, U, &ld_vt, &wq, &lwork, iwork, &info, 1);
    double *work = NULL;
    if (info == 0) {
        lwork = (int)wq + 1;
        work = malloc(sizeof(double) * (size_t)lwork);
        if (work) dgesdd_("S", &m_, &n_, a, &m_, S, Vt, &ld_u, U, &ld_vt, work, &lwork, iwork, &info, 1);
    }
    SlStatus st = SL_OK;
    if (info == 0 && !work) st = sl_fail(ctx, SL_ERR_NOMEM, "svd [%lld, %lld]: out of memory", (long long)O, (long long)K);
    else if (info != 0)
        st = sl_fail(ctx, SL_ERR_NUMERIC, "svd [%lld, %lld]: LAPACK dgesdd failed (info %d)", (long long)O, (long long)K, info);
    free(a);
    free(iwork);
    free(work);
    if (st != SL_OK) return st;
    fix_signs(U, Vt, O, K, n);
    return SL_OK;
}

/* QR of the column-major [m, r] matrix a (m >= r) in place: R [r, r] (row-major) from its
 * upper triangle, then a becomes Q [m, r]. */
static SlStatus qr(double *a, int64_t m, int64_t r, double *R, SlCtx *ctx) {
    const int m_ = (int)m, r_ = (int)r;
    int lwork = -1, info = 0;
    double q1 = 0, q2 = 0;
    dgeqrf_(&m_, &r_, a, &m_, NULL, &q1, &lwork, &info);
    if (info == 0) dorgqr_(&m_, &r_, &r_, a, &m_, NULL, &q2, &lwork, &info);
    if (info != 0) return sl_fail(ctx, SL_ERR_NUMERIC, "qr [%lld, %lld]: LAPACK workspace query failed (info %d)", (long long)m, (long long)r, info);
    lwork = (int)(q1 > q2 ? q1 : q2) + 1;
    double *tau = malloc(sizeof(double) * (size_t)r), *work = malloc(sizeof(double) * (size_t)lwork);
    SlStatus st = tau && work ? SL_OK : sl_fail(ctx, SL_ERR_NOMEM, "qr [%lld, %lld]: out of memory", (long long)m, (long long)r);
    if (st == SL_OK) dgeqrf_(&m_, &r_, a, &m_, tau, work, &lwork, &info);
    if (st == SL_OK && info == 0) {
        for (int64_t i = 0; i < r; i++)
            for (int64_t l = 0; l < r; l++) R[i * r + l] = l >= i ? a[i + l * m] : 0.0;
        dorgqr_(&m_, &r_, &r_, a, &m_, tau, work, &lwork, &info);
    }
    if (st == SL_OK && info != 0)
        st = sl_fail(ctx, SL_ERR_NUMERIC, "qr [%lld, %lld]: LAPACK failed (info %d)", (long long)m, (long long)r, info);
    free(tau);
    free(work);
    return st;
}

SlStatus sl_svd_product(double *U, double *S, double *Vt, const double *B, const double *A, int64_t O, int64_t K,
                        int64_t r, SlCtx *ctx) {
    if (O < 1 || K < 1 || r < 1 || O > INT_MAX / 8 || K > INT_MAX / 8 || r > INT_MAX / 8 || O * r > INT_MAX ||
        K * r > INT_MAX)
        return sl_fail(ctx, SL_ERR_ARG, "svd: product [%lld, %lld] x [%lld, %lld] out of range", (long long)O,
                       (long long)r, (long long)r, (long long)K);
    sl_gemm_init();
    SlStatus st = SL_OK;
    if (r >= O || r >= K) {   /* no rank to save: the dense delta */
        double *D = calloc((size_t)(O * K), sizeof(double));   /* [O, K] */
        if (!D) return sl_fail(ctx, SL_ERR_NOMEM, "svd [%lld, %lld]: out of memory", (long long)O, (long long)K);
        for (int64_t o = 0; o < O; o++)
            for (int64_t j = 0; j < r; j++) {
                const double b = B[o * r + j];
                for (int64_t x = 0; x < K; x++) D[o * K + x] += b * A[j * K + x];
            }
        st = sl_svd(U, S, Vt, D, O, K, ctx);
        free(D);
        return st;
    }
    /* B = Qb Rb, A^T = Qa Ra, so B A = Qb (Rb Ra^T) Qa^T: the SVD of the r x r middle. Row-major
     * A [r,K] is column-major A^T [K,r] as it lies; B is transposed into column-major. */
    double *Bc = malloc(sizeof(double) * (size_t)(O * r)), *Ac = malloc(sizeof(double) * (size_t)(K * r));
    double *Rb = malloc(sizeof(double) * (size_t)(r * r)), *Ra = malloc(sizeof(double) * (size_t)(r * r));
    double *M = calloc((size_t)(r * r), sizeof(double)), *Um = malloc(sizeof(double) * (size_t)(r * r));
    double *Vm = malloc(sizeof(double) * (size_t)(r * r));
    if (!Bc || !Ac || !Rb || !Ra || !M || !Um || !Vm) st = sl_fail(ctx, SL_ERR_NOMEM, "svd: out of memory");
    if (st == SL_OK) {
        for (int64_t o = 0; o < O; o++)
            for (int64_t j = 0; j < r; j++) Bc[o + j * O] = B[o * r + j];
        memcpy(Ac, A, sizeof(double) * (size_t)(K * r));
        st = qr(Bc, O, r, Rb, ctx);
    }
    if (st == SL_OK) st = qr(Ac, K, r, Ra, ctx);
    if (st == SL_OK) {
        for (int64_t i = 0; i < r; i++)
            for (int64_t j = 0; j < r; j++)
                for (int64_t l = i > j ? i : j; l < r; l++) M[i * r + j] += Rb[i * r + l] * Ra[j * r + l];
        st = sl_svd(Um, S, Vm, M, r, r, ctx);
    }
    if (st == SL_OK) {
        for (int64_t o = 0; o < O; o++)   /* U = Qb Um */
            for (int64_t c = 0; c < r; c++) {
                double acc = 0;
                for (int64_t i = 0; i < r; i++) acc += Bc[o + i * O] * Um[i * r + c];
                U[o * r + c] = acc;
            }
        for (int64_t c = 0; c < r; c++)   /* Vt = Vm Qa^T (Vm: the middle's Vt) */
            for (int64_t x = 0; x < K; x++) {
                double acc = 0;
                for (int64_t j = 0; j < r; j++) acc += Vm[c * r + j] * Ac[x + j * K];
                Vt[c * K + x] = acc;
            }
        fix_signs(U, Vt, O, K, r);
    }
    free(Bc), free(Ac), free(Rb), free(Ra), free(M), free(Um), free(Vm);
    return st;
}

/* One output module while its rank is being found: factors in malloc'd memory. */
typedef struct Factored {
    SlLoraMod m;        /* name, kind, shapes, r, alpha; A, B, mag point at the malloc'd copies */
    double fro;         /* ||S[:r']|| / ||S|| (1 for a zero delta) */
} Factored;

static void factored_free(Factored *f, int n) {
    for (int i = 0; f && i < n; i++) {
        free(f[i].m.A);
        free(f[i].m.B);
        free(f[i].m.mag);
    }
    free(f);
}

/* Factors B A (B [O,R], A [R,K], double) of module f->m (shapes set) at the rank o chooses,
 * R being the rank that holds the whole delta: fills f->m.r, A, B and f->fro. */
static SlStatus factor(Factored *f, const double *B, const double *A, int64_t R, const SlRankOpts *o, SlCtx *ctx) {
    SlLoraMod *m = &f->m;
    const int64_t O = m->O, K = m->I * m->k * m->k;
    const int64_t n = R < O && R < K ? R : O < K ? O : K;   /* the triples sl_svd_product returns */
    const int64_t opt = m->conv && o->conv_rank > 0 ? o->conv_rank : o->rank;
    const int64_t cap = opt > 0 && opt < n ? opt : n;
    double *U = malloc(sizeof(double) * (size_t)(O * n)), *S = malloc(sizeof(double) * (size_t)n);
    double *Vt = malloc(sizeof(double) * (size_t)(n * K));
    SlStatus st = U && S && Vt ? SL_OK : sl_fail(ctx, SL_ERR_NOMEM, "%s: out of memory", m->name);
    if (st == SL_OK) st = sl_svd_product(U, S, Vt, B, A, O, K, R, ctx);
    if (st == SL_OK) {
        const int64_t r = sl_rank_choose(S, n, o->method, o->param, cap);
        double all = 0, kept = 0;
        for (int64_t j = 0; j < n; j++) all += S[j] * S[j];
        for (int64_t j = 0; j < r; j++) kept += S[j] * S[j];
        f->fro = all > 0 ? sqrt(kept / all) : 1.0;
        m->r = r;
        m->A = malloc(sizeof(float) * (size_t)(r * K));   /* [r, K] = Vt[:r] */
        m->B = malloc(sizeof(float) * (size_t)(O * r));   /* [O, r] = U[:, :r] diag(S[:r]) */
        if (!m->A || !m->B) st = sl_fail(ctx, SL_ERR_NOMEM, "%s: out of memory", m->name);
        for (int64_t j = 0; st == SL_OK && j < r; j++)
            for (int64_t x = 0; x < K; x++) m->A[j * K + x] = (float)Vt[j * K + x];
        for (int64_t i = 0; st == SL_OK && i < O; i++)
            for (int64_t j = 0; j < r; j++) m->B[i * r + j] = (float)(U[i * n + j] * S[j]);
    }
    if (st != SL_OK) sl_fail_prefix(ctx, "%s", m->name);
    free(U);
    free(S);
    free(Vt);
    return st;
}

/* Appends c * B [O,r] as columns [off, off+r) of Bd [O,R] and A [r,K] as rows of Ad [R,K]. */
static void stack_add(double *Bd, double *Ad, int64_t R, int64_t off, const SlLoraMod *lm, double c) {
    const int64_t K = lm->I * lm->k * lm->k;
    for (int64_t o = 0; o < lm->O; o++)
        for (int64_t j = 0; j < lm->r; j++) Bd[o * R + off + j] = c * lm->B[o * lm->r + j];
    for (int64_t j = 0; j < lm->r; j++)
        for (int64_t x = 0; x < K; x++) Ad[(off + j) * K + x] = lm->A[j * K + x];
}

/* Moves the factored modules into out (one arena) and fills the stats. */
static SlStatus adopt(SlAdapter *out, Factored *f, int n, int64_t old_rank_max, SlResizeStats *stats, SlCtx *ctx) {
    size_t bytes = 0;
    for (int i = 0; i < n; i++) {
        const SlLoraMod *m = &f[i].m;
        bytes += sl_align_up(sizeof(float) * (size_t)(m->r * m->I * m->k * m->k));
        bytes += sl_align_up(sizeof(float) * (size_t)(m->O * m->r));
        if (m->mag) bytes += sl_align_up(sizeof(float) * (size_t)m->O);
    }
    out->mods = calloc((size_t)n, sizeof *out->mods);
    if (!out->mods) return sl_fail(ctx, SL_ERR_NOMEM, "adapter: out of memory");
    SL_TRY(sl_arena_init(&out->params, bytes, "adapter weights", ctx));
    out->n = n;
    SlResizeStats s = {.n_mods = n, .old_rank_max = old_rank_max, .new_rank_min = INT64_MAX};
    for (int i = 0; i < n; i++) {
        const SlLoraMod *m = &f[i].m;
        SlLoraMod *d = &out->mods[i];
        *d = *m;
        const int64_t na = m->r * m->I * m->k * m->k;
        d->A = sl_arena_take_f32(&out->params, na);
        d->B = sl_arena_take_f32(&out->params, m->O * m->r);
        memcpy(d->A, m->A, sizeof(float) * (size_t)na);
        memcpy(d->B, m->B, sizeof(float) * (size_t)(m->O * m->r));
        if (m->mag) {
            d->mag = sl_arena_take_f32(&out->params, m->O);
            memcpy(d->mag, m->mag, sizeof(float) * (size_t)m->O);
        }
        d->dA = d->dB = d->dmag = NULL;
        if (m->r < s.new_rank_min) s.new_rank_min = m->r;
        if (m->r > s.new_rank_max) s.new_rank_max = m->r;
        s.fro_retained_mean += f[i].fro / n;
    }
    if (stats) *stats = s;
    return SL_OK;
}

/* Metadata that still holds after the weights change (see resize.h). */
static int meta_stale(const char *k) {
    static const char *const stale[] = {SL_META_ALPHA, SL_META_ALPHA_PATTERN, SL_META_RSLORA, SL_META_FORMAT,
                                        "ss_network_dim", "ss_network_alpha", "ss_network_args", "lora_adapter_metadata"};
    for (size_t i = 0; i < sizeof stale / sizeof stale[0]; i++)
        if (!strcmp(k, stale[i])) return 1;
    return !strncmp(k, "sshs_", 5);   /* hashes of the old bytes */
}

SlStatus sl_adapter_resize(SlAdapter *out, const SlAdapter *in, const SlRankOpts *o, SlResizeStats *stats,
                           SlCtx *ctx) {
    memset(out, 0, sizeof *out);
    snprintf(out->label, sizeof out->label, "%.480s (resized)", in->label);
    out->rslora = in->rslora;
    out->dora = in->dora;
    if (in->n < 1) return sl_fail(ctx, SL_ERR_ARG, "%s: empty adapter", in->label);
    Factored *f = calloc((size_t)in->n, sizeof *f);
    if (!f) return sl_fail(ctx, SL_ERR_NOMEM, "%s: out of memory", in->label);
    SlStatus st = SL_OK;
    int64_t old_max = 0;
    for (int i = 0; i < in->n && st == SL_OK; i++) {
        const SlLoraMod *lm = &in->mods[i];
        const int64_t K = lm->I * lm->k * lm->k;
        if (lm->r < 1 || lm->O < 1 || K < 1) {
            st = sl_fail(ctx, SL_ERR_FORMAT, "%s: module %s is empty (rank %lld, [%lld, %lld])", in->label, lm->name,
                         (long long)lm->r, (long long)lm->O, (long long)K);
            break;
        }
        if (lm->r > old_max) old_max = lm->r;
        f[i].m = *lm;
        f[i].m.A = f[i].m.B = f[i].m.mag = NULL;
        /* B A unscaled, as kohya's */
        double *Bd = malloc(sizeof(double) * (size_t)(lm->O * lm->r)), *Ad = malloc(sizeof(double) * (size_t)(lm->r * K));
        if (!Bd || !Ad) st = sl_fail(ctx, SL_ERR_NOMEM, "%s: out of memory", lm->name);
        if (st == SL_OK) {
            stack_add(Bd, Ad, lm->r, 0, lm, 1.0);
            st = factor(&f[i], Bd, Ad, lm->r, o, ctx);
        }
        free(Bd);
        free(Ad);
        if (st != SL_OK) break;
        /* the scale s stays: kohya's new_alpha = scale * new_rank (rsLoRA: s sqrt(r')) */
        const double s = sl_lora_scale(in, lm), r2 = (double)f[i].m.r;
        f[i].m.alpha = (float)(in->rslora ? s * sqrt(r2) : s * r2);
        if (lm->mag) {
            f[i].m.mag = malloc(sizeof(float) * (size_t)lm->O);
            if (!f[i].m.mag) st = sl_fail(ctx, SL_ERR_NOMEM, "%s: out of memory", lm->name);
            else memcpy(f[i].m.mag, lm->mag, sizeof(float) * (size_t)lm->O);
        }
    }
    if (st == SL_OK) st = adopt(out, f, in->n, old_max, stats, ctx);
    for (int i = 0; st == SL_OK && i < in->n_meta; i++)
        if (!meta_stale(in->meta_keys[i])) st = sl_adapter_set_meta(out, in->meta_keys[i], in->meta_vals[i], ctx);
    if (st == SL_OK) {   /* resize_lora.py's ss_training_comment, prefixed to the old one */
        const char *old = sl_adapter_get_meta(in, "ss_training_comment");
        char c[1024], conv[48] = "";
        if (o->conv_rank > 0 && o->conv_rank != o->rank) snprintf(conv, sizeof conv, " (conv: %lld)", (long long)o->conv_rank);
        if (o->method == SL_RANK_FIXED)
            snprintf(c, sizeof c, "dimension is resized from %lld to %lld%s; %s", (long long)old_max, (long long)o->rank,
                     conv, old ? old : "");
        else
            snprintf(c, sizeof c, "Dynamic resize with %s: %g from %lld; %s",
                     o->method == SL_RANK_SV_RATIO ? "sv_ratio" : o->method == SL_RANK_SV_FRO ? "sv_fro" : "sv_cumulative",
                     o->param, (long long)old_max, old ? old : "");
        st = sl_adapter_set_meta(out, "ss_training_comment", c, ctx);
    }
    factored_free(f, in->n);
    if (st != SL_OK) sl_adapter_free(out);
    return st;
}

SlStatus sl_adapter_svd_merge(SlAdapter *out, SlAdapter *const *ad, const float *w, int n, const SlRankOpts *o,
                              SlResizeStats *stats, SlCtx *ctx) {
    memset(out, 0, sizeof *out);
    snprintf(out->label, sizeof out->label, "svd merge");
    int total = 0;
    for (int a = 0; a < n; a++) {
        if (ad[a]->dora)
            return sl_fail(ctx, SL_ERR_UNSUPPORTED, "%s: a DoRA adapter cannot be summed into one LoRA (its magnitude "
                           "normalises each module's whole weight)", ad[a]->label);
        total += ad[a]->n;
    }
    if (total < 1) return sl_fail(ctx, SL_ERR_ARG, "svd merge: no adapter modules");
    /* [nm] module names in order of first appearance, with the first module seen (its shapes) */
    const SlLoraMod **first = malloc(sizeof *first * (size_t)total);
    int *first_ad = malloc(sizeof(int) * (size_t)total);
    Factored *f = calloc((size_t)total, sizeof *f);
    SlStatus st = first && first_ad && f ? SL_OK : sl_fail(ctx, SL_ERR_NOMEM, "svd merge: out of memory");
    int nm = 0;
    for (int a = 0; a < n && st == SL_OK; a++)
        for (int i = 0; i < ad[a]->n && st == SL_OK; i++) {
            const SlLoraMod *lm = &ad[a]->mods[i];
            if (lm->r < 1 || lm->O < 1 || lm->I < 1 || lm->k < 1) {
                st = sl_fail(ctx, SL_ERR_FORMAT, "%s: module %s is empty (rank %lld)", ad[a]->label, lm->name, (long long)lm->r);
                break;
            }
            int j = 0;
            while (j < nm && strcmp(first[j]->name, lm->name)) j++;
            if (j == nm) {
                first[nm] = lm;
                first_ad[nm++] = a;
            } else if (first[j]->O != lm->O || first[j]->I != lm->I || first[j]->k != lm->k ||
                       first[j]->conv != lm->conv || first[j]->conv1x1 != lm->conv1x1) {
                st = sl_fail(ctx, SL_ERR_FORMAT, "svd merge: %s is [%lld, %lld, k %lld] in %s but [%lld, %lld, k %lld] in %s",
                             lm->name, (long long)first[j]->O, (long long)first[j]->I, (long long)first[j]->k,
                             ad[first_ad[j]]->label, (long long)lm->O, (long long)lm->I, (long long)lm->k, ad[a]->label);
            }
        }
    int64_t old_max = 0;
    for (int j = 0; j < nm && st == SL_OK; j++) {
        const SlLoraMod *m0 = first[j];
        const int64_t K = m0->I * m0->k * m0->k;
        int64_t R = 0;   /* the summed ranks: sum w s B A = [w1 s1 B1 | w2 s2 B2 ..] [A1; A2; ..] */
        for (int a = 0; a < n; a++)
            for (int i = 0; i < ad[a]->n; i++)
                if (!strcmp(ad[a]->mods[i].name, m0->name)) R += ad[a]->mods[i].r;
        double *Bd = malloc(sizeof(double) * (size_t)(m0->O * R)), *Ad = malloc(sizeof(double) * (size_t)(R * K));
        if (!Bd || !Ad) st = sl_fail(ctx, SL_ERR_NOMEM, "%s: out of memory", m0->name);
        int64_t off = 0;
        for (int a = 0; a < n && st == SL_OK; a++)
            for (int i = 0; i < ad[a]->n; i++)
                if (!strcmp(ad[a]->mods[i].name, m0->name)) {
                    const SlLoraMod *lm = &ad[a]->mods[i];
                    stack_add(Bd, Ad, R, off, lm, (double)(w ? w[a] : 1.0f) * sl_lora_scale(ad[a], lm));
                    off += lm->r;
                    if (lm->r > old_max) old_max = lm->r;
                }
        f[j].m = *m0;
        f[j].m.A = f[j].m.B = f[j].m.mag = NULL;
        if (st == SL_OK) st = factor(&f[j], Bd, Ad, R, o, ctx);
        free(Bd);
        free(Ad);
        f[j].m.alpha = (float)f[j].m.r;   /* svd_merge_lora.py: alpha = rank, scale 1 */
    }
    if (st == SL_OK) st = adopt(out, f, nm, old_max, stats, ctx);
    factored_free(f, nm);
    free(first);
    free(first_ad);
    if (st != SL_OK) sl_adapter_free(out);
    return st;
}
