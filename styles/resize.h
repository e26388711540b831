/* resize.h - LoRA rank reduction and several adapters into one, by SVD of the dense delta.
 *
 * Resize (kohya-ss/sd-scripts networks/resize_lora.py): per module the unscaled delta
 * D = B A ([O, K], K = I*k*k: a LoCon conv's A [r,Ci,k,k] is read as [r, Ci*k*k]) is
 * factored D = U S V^T; the new module keeps the first r' triples: A' = V^T[:r'],
 * B' = U[:, :r'] diag(S[:r']) (conv: A' [r',Ci,k,k], B' [Co,r',1,1]), and its alpha
 * is set so the scale s stays the one of the input (kohya: new_alpha = scale * new_rank;
 * rsLoRA: s * sqrt(r')), so s B' A' is the best rank-r' approximation of s B A.
 * A DoRA magnitude is kept as it is.
 *
 * Merge (sd-scripts networks/svd_merge_lora.py): per module name D = sum_i w_i s_i B_i A_i
 * over the adapters that have it, factored as above, alpha = r' (scale 1). Unlike
 * svd_merge_lora.py the factors are not clamped at a quantile (the clamp changes the
 * delta; here full rank reproduces the sum). DoRA adapters cannot be summed: refused.
 *
 * The new rank r' (resize_lora.py's rank_resize), with cap = min(the option's rank,
 * the rank that holds the whole delta, min(O, K)):
 *   fixed          r' = cap (--rank R; conv modules --conv-rank, default R)
 *   sv_ratio p     r' = #{S_i > S_0 / p}
 *   sv_cumulative p  the first i with cumsum(S)_i / sum(S) >= p, plus 1
 *   sv_fro p       the first i with cumsum(S^2)_i / sum(S^2) >= p^2, plus 1
 * each clamped to [1, cap]; S_0 <= 1e-6 (a zero delta) gives r' = 1.
 * "The rank that holds the whole delta": resize, the input rank; merge, the sum of the
 * input ranks (the SVD of B A has no more non-zero values). So `resize --rank R` never grows a module (kohya would pad with
 * directions of singular value 0) and a merge without a rank is exact.
 *
 * SVD: LAPACK dgesdd from OpenBLAS (the Fortran symbol, called with its prototype:
 * Debian ships no lapacke.h with libopenblas-dev), in double, with OpenBLAS kept
 * single-threaded (nn/gemm.h) so the bits do not follow the thread count. Signs are fixed so the
 * output is stable: in each left singular vector the entry of largest magnitude
 * (the first such) is positive.
 *
 * Dimension letters: O out-features, K = I*k*k in-features of the flattened kernel,
 * n = min(O, K), r rank.
 *
 * Not here: kohya's svd_lowrank shortcut for matrices past 2048 (the full SVD is exact),
 * per-block weights (lbw), LyCORIS modules.
 */
#ifndef SL_STYLES_RESIZE_H
#define SL_STYLES_RESIZE_H

#include <stdint.h>

#include "core/status.h"
#include "styles/adapter.h"

typedef enum SlRankMethod {
    SL_RANK_FIXED = 0,
    SL_RANK_SV_RATIO,
    SL_RANK_SV_FRO,
    SL_RANK_SV_CUMULATIVE
} SlRankMethod;

typedef struct SlRankOpts {
    int64_t rank;        /* linear (and 1x1) modules: the rank, or the cap of a dynamic method; <= 0: none */
    int64_t conv_rank;   /* k x k LoCon modules; <= 0: rank */
    SlRankMethod method;
    double param;        /* the dynamic method's target (sv_ratio > 1; sv_fro, sv_cumulative in (0, 1]) */
} SlRankOpts;

/* Parses "sv_fro:0.9", "sv_ratio:8", "sv_cumulative:0.95" into o->method / o->param.
 * A bad name or a value out of range is SL_ERR_ARG naming what was given. */
SlStatus sl_rank_dynamic_parse(SlRankOpts *o, const char *spec, SlCtx *ctx);

/* The new rank for singular values S[0..n) (descending) under method/param, clamped
 * to [1, cap] (see the header comment). */
int64_t sl_rank_choose(const double *S, int64_t n, SlRankMethod method, double param, int64_t cap);

/* Thin SVD of D [O,K] (row-major): U [O,n], S [n] descending, Vt [n,K], n = min(O,K),
 * signs fixed as above. */
SlStatus sl_svd(double *U, double *S, double *Vt, const double *D, int64_t O, int64_t K, SlCtx *ctx);

/* The same for D = B A (B [O,r], A [r,K]) without forming D when r < min(O, K): QR of B
 * and A^T, then the SVD of the r x r middle; n = min(O, K, r) triples. */
SlStatus sl_svd_product(double *U, double *S, double *Vt, const double *B, const double *A, int64_t O, int64_t K,
                        int64_t r, SlCtx *ctx);

typedef struct SlResizeStats {
    int n_mods;
    int64_t old_rank_max, new_rank_min, new_rank_max;
    double fro_retained_mean;  /* mean over modules of ||S[:r']|| / ||S|| (resize_lora.py --verbose) */
} SlResizeStats;

/* Writes into out (fresh; sl_adapter_free it) in's modules at their new ranks (see the
 * header comment). in's metadata is kept (training provenance: ss_*, stylora.train.*),
 * except what no longer holds: the alpha/rank keys the writer recomputes (SL_META_*,
 * ss_network_dim/alpha/args, lora_adapter_metadata) and the sshs_* hashes. stats may be NULL. */
SlStatus sl_adapter_resize(SlAdapter *out, const SlAdapter *in, const SlRankOpts *o, SlResizeStats *stats,
                           SlCtx *ctx);

/* One adapter from n adapters with weights w (NULL: all 1): every module name of any
 * input, D = sum w_i s_i B_i A_i, factored at the rank o gives (o->rank <= 0: the sum
 * of the input ranks, exact). The same name with different shapes or kinds, or a DoRA
 * input, is an error naming the files. */
SlStatus sl_adapter_svd_merge(SlAdapter *out, SlAdapter *const *ad, const float *w, int n, const SlRankOpts *o,
                              SlResizeStats *stats, SlCtx *ctx);

#endif
