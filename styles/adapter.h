/* adapter.h - LoRA / LoCon / DoRA style adapters: create, hook, merge, load, save.
 *
 * An adapter (SlAdapter) is a set of low-rank updates keyed by NAMESPACED diffusers
 * module names: "unet.down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q",
 * "text_encoder.text_model.encoder.layers.0.self_attn.q_proj". Each update has a
 * rank r, an alpha and the scale s = alpha / r (rsLoRA: alpha / sqrt(r)):
 *   linear (also a 1x1 conv stored as SlLinear):  A [r,I], B [O,r]
 *       y = W x + s * B (A x)                                  (PEFT lora.Linear, kohya LoRAModule)
 *   conv (LoCon):  A [r,Ci,k,k] (a k x k conv with the base conv's stride/padding),
 *                  B [Co,r,1,1] (a 1x1 conv)
 *       y = conv(x, W) + s * conv1x1(conv(x, A), B)
 *   DoRA (linear only): magnitude m [O]
 *       y = (m / ||W + s B A||_row) * (W x + s B A x),  the norm per OUTPUT row,
 *       detached from the gradient as PEFT 0.12 (lora/dora.py) does; m starts at ||W||_row.
 * The bias of the base layer is added after and is never scaled.
 *
 * Sites. A model exposes its weight-bearing layers as an SlSites list (name, the
 * SlLinear or SlConv2d, and the planned rows): sl_sites_add_unet (after sl_unet_plan)
 * and sl_sites_add_clip (after sl_clip_reserve; forward only: the text model has no
 * backward yet, so text-encoder adapters are for inference / merging).
 *
 * Targets (sl_adapter_create). A comma-separated list of patterns over the
 * namespaced names. A pattern with '*' or '?' is a glob over the whole name ('*'
 * crosses dots); any other pattern matches a name equal to it or ending in
 * "." + pattern ("to_q" hits every ...attn1.to_q / attn2.to_q). Presets:
 *   attn     to_q,to_k,to_v,to_out.0           (the default, PEFT/diffusers training scripts)
 *   proj     proj_in,proj_out
 *   ff       ff.net.0.proj,ff.net.2
 *   resnet   unet.*resnets.*.conv1,unet.*resnets.*.conv2   (conv modules -> LoCon)
 *   te       text_encoder.*q_proj,..k_proj,..v_proj,..out_proj,..fc1,..fc2
 * e.g. "attn,ff,te" or "attn,unet.mid_block.*.proj_in".
 *
 * Hooks (sl_adapter_set_*). An SlAdapterSet installs one hook per touched module
 * (nn/module.h contract) that applies every active adapter with its own weight w
 * (effective scale w * s). Caches (A x per adapter, DoRA buffers, dropout input) are
 * planned once from the sites' rows; forward/backward never allocate, and a call with
 * more rows than planned aborts (a planning bug: plan the model for its largest
 * batch before building the sites; sl_clip_forward beyond the reserved (B, T) too). A hook that
 * was already on a module (an NF4 base) is kept as the base and restored on removal.
 * Weights: the effective scale is w * s; for DoRA, w scales the low-rank part only
 * (the magnitude is not scaled, so w = 0 gives m/||W|| * W x, which is the base only
 * while m = ||W||).
 * Dropout (training, set->training = 1): on the adapter input x for linear updates, on the rank-r
 * output of A for LoCon (kohya's placement: the input of a conv has no planned
 * size); keep element i iff Philox uniform (seed, stream = site index, offset =
 * (step << 32) + i) >= p, kept values scaled by 1/(1-p); the mask is regenerated in
 * backward (nothing stored), so a step is reproducible from (seed, step) alone. DoRA with dropout is refused
 * (PEFT's DoRA dropout form needs W applied to the dropped input).
 *
 * Merge (sl_adapter_merge): W <- W + w s B A (conv: the composed kernel B (x) A); DoRA:
 * W <- m (W + w s B A) / ||W + w s B A||_row. A copy of every touched weight is
 * kept, so sl_adapter_unmerge restores it bit-exactly.
 *
 * Files (adapter_io.c), see sl_adapter_load / sl_adapter_save for the key forms.
 *
 * Dimension letters: N rows, I in-features, O out-features, r rank; conv Ci, Co, k,
 * P = Ho*Wo output pixels.
 *
 * LyCORIS LoHa / LoKr files (lycoris.c) load as dense deltas in this same form
 * (SlLoraMod.lyco; A or B is the delta dW, the other an identity, scale 1).
 *
 * Not here: the optimizer, the trainer loop, training LoHa/LoKr.
 */
#ifndef SL_STYLES_ADAPTER_H
#define SL_STYLES_ADAPTER_H

#include <stdint.h>

#include "core/status.h"
#include "core/tensor.h"
#include "nn/module.h"

#define SL_ADAPTER_NAME_MAX 192
#define SL_ADAPTER_MAX_ACTIVE 8

/* ---- sites: the modules a model offers ---- */

typedef struct SlSite {
    char name[SL_ADAPTER_NAME_MAX]; /* namespaced diffusers module name */
    SlLinear *lin;                  /* exactly one of lin / conv */
    SlConv2d *conv;
    int64_t rows;                   /* linear: max N per call; conv: max B*Ho*Wo per call */
} SlSite;

typedef struct SlSites {
    int n, cap;
    SlSite *v;
} SlSites;

struct SlUNet;
struct SlClip;
void sl_sites_init(SlSites *s);
void sl_sites_free(SlSites *s);
/* Adds one module (name copied). */
SlStatus sl_sites_add(SlSites *s, const char *name, SlLinear *lin, SlConv2d *conv, int64_t rows,
                      SlCtx *ctx);
/* Every module of a PLANNED U-Net as "unet.<name>" (conv rows = B*H*W of the plan). */
SlStatus sl_sites_add_unet(SlSites *s, struct SlUNet *u, SlCtx *ctx);
/* q/k/v/out_proj, fc1, fc2 of every layer as "text_encoder.text_model.encoder.layers.<i>...."
 * (rows = reserved B*T; call sl_clip_reserve first). */
SlStatus sl_sites_add_clip(SlSites *s, struct SlClip *m, const char *ns, SlCtx *ctx);
/* Index of the site with this name, or -1. */
int sl_sites_find(const SlSites *s, const char *name);

/* ---- adapters ---- */

typedef struct SlLoraMod {
    char name[SL_ADAPTER_NAME_MAX]; /* namespaced module name */
    int conv;                       /* 1: LoCon on a conv (A is a k x k conv) */
    int conv1x1;                    /* linear stored as [.,.,1,1] (diffusers conv proj_in/out) */
    int64_t r, I, O, k;             /* conv: I = Ci, O = Co; linear: k = 1 */
    float alpha;
    float *A;                       /* [r,I] or [r,Ci,k,k] */
    float *B;                       /* [O,r] (conv: [Co,r,1,1]) */
    float *mag;                     /* [O] DoRA magnitude, NULL for plain LoRA */
    float *dA, *dB, *dmag;          /* gradients (NULL until sl_adapter_enable_grads) */
    int lyco;                       /* SL_LYCO_LOHA / SL_LYCO_LOKR: a dense delta from lycoris.c, alpha = r */
    int64_t lyco_rank;              /* the file's rank (0: LoKr with both factors full) */
    float lyco_scale;               /* the scale the file's alpha/rank gave (already in the delta) */
} SlLoraMod;

enum { SL_LYCO_NONE = 0, SL_LYCO_LOHA = 1, SL_LYCO_LOKR = 2 };

typedef struct SlAdapter {
    char label[512];        /* file name or "new" (messages) */
    int n;
    SlLoraMod *mods;
    int rslora;             /* scale alpha/sqrt(r) */
    int dora;               /* every module carries a magnitude */
    SlArena params;         /* "adapter weights": A, B, m */
    SlArena grads;          /* "adapter grads": dA, dB, dm (size 0 until enabled) */
    int n_meta;             /* safetensors metadata kept for saving (loaded or set) */
    char **meta_keys, **meta_vals;
} SlAdapter;

typedef enum SlLoraInit { SL_LORA_INIT_KAIMING = 0, SL_LORA_INIT_GAUSSIAN = 1 } SlLoraInit;

typedef struct SlAdapterOpts {
    const char *targets;    /* pattern list (see above); NULL = "attn" */
    int64_t rank;           /* r (LoCon convs use conv_rank if > 0) */
    int64_t conv_rank;
    float alpha;            /* <= 0: alpha = rank */
    int rslora, dora;
    SlLoraInit init;        /* KAIMING: U(-1/sqrt(fan_in), 1/sqrt(fan_in)) as torch Linear; GAUSSIAN: N(0, 1/r^2) */
    uint64_t seed;          /* Philox key; stream = module index */
} SlAdapterOpts;

SlAdapterOpts sl_adapter_opts_default(void);

/* Creates a fresh adapter over every site matching opts->targets: A initialised from
 * the seed, B = 0 (so the model starts exactly at the base), DoRA m = ||W||_row.
 * A pattern list matching nothing is SL_ERR_ARG. */
SlStatus sl_adapter_create(SlAdapter *ad, const SlSites *sites, const SlAdapterOpts *opts, SlCtx *ctx);
void sl_adapter_free(SlAdapter *ad);
/* Allocates dA, dB (dm) in the grads arena, zeroed. */
SlStatus sl_adapter_enable_grads(SlAdapter *ad, SlCtx *ctx);
void sl_adapter_zero_grads(SlAdapter *ad);
/* s = alpha/r or alpha/sqrt(r). */
float sl_lora_scale(const SlAdapter *ad, const SlLoraMod *lm);
/* Sets a metadata string kept with the adapter (written by sl_adapter_save). */
SlStatus sl_adapter_set_meta(SlAdapter *ad, const char *key, const char *val, SlCtx *ctx);
const char *sl_adapter_get_meta(const SlAdapter *ad, const char *key);
/* Checks every adapter module against the sites (name present, kind and shapes fit). */
SlStatus sl_adapter_check(const SlAdapter *ad, const SlSites *sites, int lenient, int *n_matched,
                          SlCtx *ctx);
/* Drops every module outside namespace ns ("unet"); returns how many were dropped. */
int sl_adapter_keep_ns(SlAdapter *ad, const char *ns);
/* Number of parameters (A, B, m). */
int64_t sl_adapter_n_params(const SlAdapter *ad);

/* ---- several adapters on a model at once ---- */

typedef struct SlSiteHook SlSiteHook;   /* one per touched module (lora.c) */

typedef struct SlAdapterSet {
    const SlSites *sites;
    int n_ad;
    SlAdapter *ad[SL_ADAPTER_MAX_ACTIVE];
    float w[SL_ADAPTER_MAX_ACTIVE];       /* per-adapter weight (multiplier) */
    int n_hooks;
    SlSiteHook *hooks;
    SlArena cache;                        /* "adapter caches" */
    float dropout;                        /* p on the adapter input (0: none) */
    uint64_t seed;                        /* dropout stream key */
    uint64_t step;                        /* bumped by the trainer between steps */
    int training;                         /* 1: dropout active */
} SlAdapterSet;

/* Installs hooks for n adapters with weights w[i] on the sites (sites must outlive
 * the set). Every adapter module must match a site (see sl_adapter_check); LoRA and
 * DoRA on the same module, or a DoRA with dropout > 0, are SL_ERR_UNSUPPORTED.
 * Logs per adapter the number of modules it touched. */
SlStatus sl_adapter_set_apply(SlAdapterSet *set, const SlSites *sites, SlAdapter *const *ad,
                              const float *w, int n, float dropout, uint64_t seed, SlCtx *ctx);
/* Changes the weight of adapter i without reinstalling (swap between images). */
void sl_adapter_set_weight(SlAdapterSet *set, int i, float w);
/* Training mode (1: dropout on) or evaluation (0: off; samples, validation loss).
 * Returns the previous mode, so a caller can switch for a while and switch back. */
int sl_adapter_set_training(SlAdapterSet *set, int on);
/* The step the dropout masks are keyed by: the trainer sets it before each
 * micro-batch, so a step's masks follow from (seed, step) alone (resume). */
void sl_adapter_set_step(SlAdapterSet *set, uint64_t step);
/* Removes every hook (restores the previous hooks) and frees the caches. */
void sl_adapter_set_remove(SlAdapterSet *set);

/* ---- merge / unmerge ---- */

typedef struct SlMergeState {
    int n;
    float **w;          /* the module weight pointers touched */
    float **orig;       /* malloc'd copies of their original values */
    size_t *numel;
} SlMergeState;

/* W += w_i s B A for each adapter (DoRA: W <- m (W + w s B A)/||.||_row), in order.
 * Keeps a copy of each touched weight in ms (init ms with {0}). Merging into a module
 * whose weight is held by a base hook (NF4: m->w NULL) is SL_ERR_UNSUPPORTED. */
SlStatus sl_adapter_merge(SlMergeState *ms, const SlSites *sites, SlAdapter *const *ad,
                          const float *w, int n, SlCtx *ctx);
/* Restores every touched weight bit-exactly and frees the copies. */
void sl_adapter_unmerge(SlMergeState *ms);
/* Keeps the merged weights and frees the copies (no unmerge possible afterwards). */
void sl_adapter_merge_commit(SlMergeState *ms);

/* ---- the hooks themselves (lora.c), exposed for tests ---- */

/* Dense delta of one module: out [O, I*k*k] = s * B A, on kern (the module's kernels). */
void sl_lora_delta(float *out, const SlLoraMod *lm, float s, const SlKernels *kern);

/* ---- files (adapter_io.c) ---- */

typedef enum SlAdapterFormat {
    SL_ADAPTER_FMT_UNKNOWN = 0,
    SL_ADAPTER_FMT_KOHYA,     /* lora_unet_<a_b_c>.lora_down.weight / .lora_up.weight / .alpha / .dora_scale */
    SL_ADAPTER_FMT_PEFT,      /* unet.<a.b.c>.lora_A.weight / .lora_B.weight / .lora_magnitude_vector */
    SL_ADAPTER_FMT_DIFFUSERS_OLD, /* <a.b.c>.lora.down.weight, <attn>.processor.to_q_lora.down.weight */
    SL_ADAPTER_FMT_LYCORIS    /* lora_unet_<a_b_c>.hada_w1_a ... / .lokr_w1 ... (read only, lycoris.c) */
} SlAdapterFormat;

const char *sl_adapter_format_name(SlAdapterFormat f);

typedef struct SlAdapterLoadOpts {
    float alpha;        /* > 0: alpha of every module, overriding what the file stores (--lora-alpha) */
    int lenient;        /* 1: unknown keys / misfit shapes are warnings (skipped), not errors */
    const char *default_ns; /* namespace of keys without one ("base_model.model.x", old "down_blocks.x"); NULL = "unet" */
} SlAdapterLoadOpts;

/* diffusers' metadata key (loaders/lora_base.py LORA_ADAPTER_METADATA_KEY): JSON of PEFT
 * LoraConfig fields, "<component>.lora_alpha", "<component>.r", "<component>.alpha_pattern", ... */
#define SL_META_PEFT "lora_adapter_metadata"
/* stylora's own keys; the first three are what older stylora PEFT files carried (still read). */
#define SL_META_ALPHA "stylora.lora_alpha"            /* global alpha, "%.9g" */
#define SL_META_ALPHA_PATTERN "stylora.alpha_pattern" /* JSON {module: alpha} for modules that differ */
#define SL_META_RSLORA "stylora.use_rslora"           /* "true" / "false" */
#define SL_META_FORMAT "stylora.format"

/* Loads a LoRA file in any of the forms above. With sites, kohya names are resolved
 * against the sites' names and every module is checked (name present, shapes fit);
 * without sites, kohya names are expanded with a built-in table of SD U-Net / CLIP
 * name parts (sl_kohya_unflatten). Alpha, per module, in this order: opts->alpha (logged as an
 * override), the SL_META_PEFT JSON (alpha_pattern, then lora_alpha, of the module's component;
 * its r / rank_pattern must agree with the tensors), the older SL_META_ALPHA_PATTERN /
 * SL_META_ALPHA, the `.alpha` tensor, ss_network_alpha (conv: ss_network_args' conv_alpha);
 * with none of them alpha = rank (scale 1, one info line), as diffusers and sd-scripts assume.
 * rsLoRA from "<component>.use_rslora" or SL_META_RSLORA.
 * Errors name the file and the tensor: unknown module keys and misfit shapes (listed),
 * a lora_down without lora_up, NaN/Inf values (SL_ERR_NUMERIC), a file without any
 * adapter tensor (SL_ERR_FORMAT). *fmt (may be NULL) receives the detected format.
 * The file's metadata is kept in ad. Logs "<file>: N modules (U unet, T text encoder)". */
SlStatus sl_adapter_load(SlAdapter *ad, const char *path, const SlSites *sites,
                         const SlAdapterLoadOpts *opts, SlAdapterFormat *fmt, SlCtx *ctx);

typedef struct SlAdapterSaveOpts {
    SlAdapterFormat format;   /* KOHYA or PEFT */
    SlDType dtype;            /* F32 (default 0), F16 or BF16 */
} SlAdapterSaveOpts;

/* Writes ad atomically. KOHYA: lora_unet_/lora_te_ names, `.alpha` scalars (an rsLoRA
 * adapter writes alpha*sqrt(r), so that kohya's alpha/r keeps its scale), `.dora_scale`
 * [O,1], metadata ss_network_module="networks.lora", ss_network_dim, ss_network_alpha
 * (+ ss_network_args with conv_dim/conv_alpha when LoCon modules exist) and every
 * other ss_* key set on the adapter. PEFT: "<ns>.<module>.lora_A.weight" etc.,
 * `.lora_magnitude_vector` [O] ([1,O,1,1] on a 1x1-conv module as PEFT's DoraConv2dLayer), and
 * SL_META_PEFT as diffusers' save_lora_weights writes it (per component r, lora_alpha,
 * rank_pattern, alpha_pattern, target_modules, use_dora, use_rslora), so diffusers loads the
 * file at stylora's scale. Other metadata of the adapter is written as it is, except what is
 * derived from the modules (the alpha keys above; in PEFT also ss_network_alpha / _dim). */
SlStatus sl_adapter_save(const SlAdapter *ad, const char *path, const SlAdapterSaveOpts *opts,
                         SlCtx *ctx);

/* kohya flat name <-> namespaced module name.
 * "unet.down_blocks.0.attentions.0.proj_in" <-> "lora_unet_down_blocks_0_attentions_0_proj_in";
 * namespaces: unet <-> lora_unet_, text_encoder <-> lora_te_ (lora_te1_), text_encoder_2 <-> lora_te2_. */
SlStatus sl_kohya_flatten(char *out, size_t n, const char *name, SlCtx *ctx);
/* Expands a kohya name without a model, with the table of compound name parts
 * (down_blocks, to_q, proj_in, self_attn, ...). */
SlStatus sl_kohya_unflatten(char *out, size_t n, const char *flat, SlCtx *ctx);

/* Glob / suffix match of one target pattern (see the header comment). */
int sl_adapter_pattern_match(const char *pattern, const char *name);

#endif
