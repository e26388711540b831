/* adapter_internal.h - the per-module hook state shared by lora.c and adapter_set.c.
 *
 * One SlSiteHook per touched module. It applies every active adapter update of that
 * module (SlAdapterUse) and owns the caches its backward needs, all carved from the
 * set's "adapter caches" arena when the set is applied.
 *
 * Not public: callers use styles/adapter.h.
 */
#ifndef SL_STYLES_ADAPTER_INTERNAL_H
#define SL_STYLES_ADAPTER_INTERNAL_H

#include "adapter.h"

typedef struct SlAdapterUse {
    SlLoraMod *lm;      /* the adapter's update for this module (grads accumulate into it) */
    const SlAdapter *ad;
    int ai;             /* index into set->ad / set->w */
    float *ax;          /* linear: [rows, r] = x A^T; conv: [B, r, P] = conv(x, A) (after dropout) */
    float *dax;         /* same shape: the gradient of ax */
} SlAdapterUse;

struct SlSiteHook {
    SlHook hook;        /* installed in the module; hook.self = this */
    SlHook *prev;       /* the module's hook before (a base replacement), or NULL */
    SlAdapterSet *set;
    int site;           /* index into set->sites */
    int64_t rows;       /* planned capacity (linear N; conv B*P) */
    int n_use;
    SlAdapterUse use[SL_ADAPTER_MAX_ACTIVE];
    float *xd;          /* linear with dropout: [rows, I] dropped input; backward: sum of dax A */
    int dora;           /* the single use carries a magnitude */
    float *ypre;        /* DoRA [rows, O]: W x + s B A x */
    float *g;           /* DoRA [rows, O]: c * dout, returned to the base */
    float *c;           /* DoRA [O]: m / ||W + s B A||_row */
    float *inv;         /* DoRA [O]: 1 / ||W + s B A||_row */
    float *row;         /* DoRA [I]: one row of W + s B A */
};

/* Hook tables: plain (dense base through m->w) or delegating the base product to
 * the previous hook (`prev`, e.g. NF4). */
const SlHookOps *sl_site_hook_ops(int delegate_base);

/* Floats of cache the hook of this module needs for these uses (for planning). */
size_t sl_site_hook_cache_floats(const SlSite *site, const SlLoraMod *const *lms, int n,
                                 int dora, int dropout);

/* The problems a file load met: counted, joined into one message ("a; b; ..."), and
 * with `lenient` each logged as a warning that the module was skipped.
 * adapter_io.c; lycoris.c uses it too. */
typedef struct SlAdapterErrs {
    char list[700];
    size_t used;
    int n;
} SlAdapterErrs;
void sl_adapter_errs_add(SlAdapterErrs *e, SlCtx *ctx, int lenient, const char *file, const char *fmt, ...)
    __attribute__((format(printf, 5, 6)));

/* Module name of a key stem (kohya flat names resolved against sites when given,
 * else expanded; PEFT / old diffusers names namespaced with dns). 0 if it cannot be
 * resolved (a kohya name that no site has). adapter_io.c; lycoris.c uses it too. */
int sl_adapter_stem_name(char *out, size_t n, const char *stem, const SlSites *sites, const char *dns, SlCtx *ctx);

/* LyCORIS (lycoris.c): 1 if any key of f is a LoHa / LoKr tensor. */
struct SlStFile;
int sl_lycoris_detect(const struct SlStFile *f);
/* Reads every LoHa / LoKr module of f into ad as dense deltas (see lycoris.c). */
SlStatus sl_lycoris_load(SlAdapter *ad, const struct SlStFile *f, const SlSites *sites, const SlAdapterLoadOpts *opts,
                         SlCtx *ctx);

#endif
