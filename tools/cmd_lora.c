/* cmd_lora.c - `stylora lora convert` and `stylora lora merge` (`lora resize` and
 * `lora merge --to-adapter` live in cmd_lora_svd.c).
 *
 *   stylora lora convert IN --to kohya|peft --out OUT [--alpha A] [--model DIR] [--dtype T] [--lenient]
 *       Rewrites an adapter file (kohya, PEFT/diffusers or older diffusers keys) in kohya
 *       or PEFT form. kohya names flatten '.' to '_': with --model DIR they are resolved
 *       against the module names of that model's weight files (DIR/unet and
 *       DIR/text_encoder, or DIR itself when it is one component folder) and every shape
 *       is checked; without --model the built-in table of SD U-Net / CLIP name parts is
 *       used (styles/adapter.h, sl_kohya_unflatten). --alpha (--lora-alpha) sets every
 *       module's alpha over what the file stores (without either, alpha = rank). PEFT output
 *       carries diffusers' lora_adapter_metadata. Output dtype: --dtype, else the input's.
 *   stylora lora merge --model DIR --lora A.safetensors[:W] [--lora B.safetensors[:W]] --out DIR
 *                      [--to diffusers|single-file] [--dtype fp32|fp16|bf16]
 *       Loads the diffusers U-Net of DIR (DIR/unet or DIR), merges each adapter with its
 *       weight W (default 1; text-encoder modules into the text encoder, loaded only then),
 *       and writes a diffusers pipeline folder (model_index.json and every component named
 *       in it; the other components copied), or a U-Net folder when DIR is one (text-encoder
 *       modules are then dropped with a warning). --to single-file writes one .safetensors
 *       in the original SD 1.x layout through pipeline/export.h. Dtypes: --dtype, else fp16
 *       for a single file and each tensor's source dtype for a folder.
 *       An NF4 model (written by `stylora quantize`, pipeline/quant.h) is dequantized, merged
 *       and its NF4 layers re-quantized (same format); the second rounding's cost is printed
 *       (weight relative error, and how much of the adapter's delta survives: small deltas
 *       mostly fall inside one NF4 step). --dequantize writes them dense fp32 instead.
 */
#include <dirent.h>
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "cli.h"
#include "core/config.h"
#include "core/safetensors.h"
#include "core/weights.h"
#include "lora_svd.h"
#include "pipeline/export.h"
#include "pipeline/quant.h"
#include "sample_jobs.h" /* sample_split_lora: the one FILE[:WEIGHT] parser */
#include "styles/adapter.h"
#include "textenc/clip.h"
#include "unet/unet.h"
#include "vae/vae.h"

#define MAX_LORA SL_ADAPTER_MAX_ACTIVE

static int parse_dtype(const char *s, SlDType *dt) {
    if (!strcmp(s, "f32") || !strcmp(s, "F32")) *dt = SL_F32;
    else if (!strcmp(s, "f16") || !strcmp(s, "F16")) *dt = SL_F16;
    else if (!strcmp(s, "bf16") || !strcmp(s, "BF16")) *dt = SL_BF16;
    else return 0;
    return 1;
}

/* The component folder of a model: DIR/<part> if it holds a config.json, else DIR itself
 * when part is "unet" and DIR has config.json; NULL if neither. */
static const char *component_dir(char *buf, size_t n, const char *dir, const char *part) {
    char cfg[2048];
    sl_path_join(buf, n, dir, part);
    if (sl_path_is_file(sl_path_join(cfg, sizeof cfg, buf, "config.json"))) return buf;
    if (!strcmp(part, "unet") && sl_path_is_file(sl_path_join(cfg, sizeof cfg, dir, "config.json"))) {
        snprintf(buf, n, "%s", dir);
        return buf;
    }
    return NULL;
}

/* Sites named after the weight tensors of one component folder ("<ns>.<module>" for every
 * 2-D or 4-D "<module>.weight"); the layer structs only carry shapes (no data). */
typedef struct NameSites {
    SlSites sites;
    int n_lin, n_conv;
    SlLinear *lin;
    SlConv2d *conv;
} NameSites;

/* First pass: one shape-only layer struct per 2-D / 4-D "<module>.weight" of dir. */
static SlStatus name_sites_add(NameSites *ns, const char *dir, SlCtx *ctx) {
    SlWeights w;
    SL_TRY(sl_weights_open_dir(&w, dir, ctx));
    int total = 0;
    for (int f = 0; f < w.n_files; f++) total += w.files[f].n;
    SlLinear *lin = realloc(ns->lin, sizeof *lin * (size_t)(ns->n_lin + total));
    SlConv2d *conv = realloc(ns->conv, sizeof *conv * (size_t)(ns->n_conv + total));
    if (lin) ns->lin = lin;
    if (conv) ns->conv = conv;
    if (!lin || !conv) {
        sl_weights_close(&w);
        return sl_fail(ctx, SL_ERR_NOMEM, "out of memory");
    }
    SlStatus st = SL_OK;
    for (int f = 0; f < w.n_files && st == SL_OK; f++)
        for (int i = 0; i < w.files[f].n && st == SL_OK; i++) {
            const SlStEntry *e = &w.files[f].entries[i];
            size_t ln = strlen(e->name);
            if (ln < 8 || strcmp(e->name + ln - 7, ".weight") || (e->ndim != 2 && e->ndim != 4)) continue;
            if (e->ndim == 4 && e->shape[2] > 1) {
                SlConv2d *c = &ns->conv[ns->n_conv++];
                memset(c, 0, sizeof *c);
                c->Co = e->shape[0];
                c->Ci = e->shape[1];
                c->k = e->shape[2];
            } else {
                SlLinear *l = &ns->lin[ns->n_lin++];
                memset(l, 0, sizeof *l);
                l->O = e->shape[0];
                l->I = e->shape[1];
                l->conv1x1 = e->ndim == 4;
            }
        }
    sl_weights_close(&w);
    return st;
}

/* Both passes: the sites point into ns->lin / ns->conv, so they are named only after
 * every struct is allocated (the arrays no longer move). */
static SlStatus name_sites_build(NameSites *ns, const char *const *dirs, const char *const *prefixes, int n, SlCtx *ctx) {
    for (int d = 0; d < n; d++) SL_TRY(name_sites_add(ns, dirs[d], ctx));
    int li = 0, ci = 0;
    char name[SL_ADAPTER_NAME_MAX + 64];
    for (int d = 0; d < n; d++) {
        SlWeights w;
        SL_TRY(sl_weights_open_dir(&w, dirs[d], ctx));
        SlStatus st = SL_OK;
        for (int f = 0; f < w.n_files && st == SL_OK; f++)
            for (int i = 0; i < w.files[f].n && st == SL_OK; i++) {
                const SlStEntry *e = &w.files[f].entries[i];
                size_t ln = strlen(e->name);
                if (ln < 8 || strcmp(e->name + ln - 7, ".weight") || (e->ndim != 2 && e->ndim != 4)) continue;
                snprintf(name, sizeof name, "%s.%.*s", prefixes[d], (int)(ln - 7), e->name);
                if (strlen(name) >= SL_ADAPTER_NAME_MAX) continue;
                if (e->ndim == 4 && e->shape[2] > 1) st = sl_sites_add(&ns->sites, name, NULL, &ns->conv[ci++], 0, ctx);
                else st = sl_sites_add(&ns->sites, name, &ns->lin[li++], NULL, 0, ctx);
            }
        sl_weights_close(&w);
        SL_TRY(st);
    }
    return SL_OK;
}

static void name_sites_free(NameSites *ns) {
    sl_sites_free(&ns->sites);
    free(ns->lin);
    free(ns->conv);
}

static int lora_convert(int argc, char **argv) {
    const char *to = NULL, *out = NULL, *alpha = NULL, *model = NULL, *dtype = NULL, *lenient = NULL, *quiet = NULL;
    const CliOpt opts[] = {
        {"--to", "kohya|peft", "output key form", &to, 0},
        {"--out", "OUT", "output .safetensors file", &out, 0},
        {"--alpha", "A", "alpha in (0, 10000] for every module, over what the file stores", &alpha, 0},
        {"--lora-alpha", "A", "the same as --alpha (sample's name for it)", &alpha, 0},
        {"--model", "DIR", "resolve kohya names and check shapes against this model's weights", &model, 0},
        {"--dtype", "f32|f16|bf16", "output dtype (default: the input's)", &dtype, 0},
        {"--lenient", NULL, "skip unknown modules / misfit shapes with a warning", &lenient, 0},
        {"--quiet", NULL, "only warnings and errors", &quiet, 0},
        {NULL, NULL, NULL, NULL, 0},
    };
    const char *pos[1];
    int npos;
    cli_parse("lora convert", "IN --to kohya|peft --out OUT [options]", opts, argc, argv, pos, 1, &npos);
    SlCtx ctx;
    cli_ctx_init(&ctx, quiet != NULL);
    if (npos != 1 || !to || !out) {
        fprintf(stderr, "stylora lora convert: error: need IN, --to and --out (see --help)\n");
        return 2;
    }
    cli_check_out_file("lora convert", "--out", out);
    SlAdapterSaveOpts so = {0};
    if (!strcmp(to, "kohya")) so.format = SL_ADAPTER_FMT_KOHYA;
    else if (!strcmp(to, "peft") || !strcmp(to, "diffusers")) so.format = SL_ADAPTER_FMT_PEFT;
    else {
        fprintf(stderr, "stylora lora convert: error: --to must be kohya or peft, got '%s'\n", to);
        return 2;
    }
    if (dtype && !parse_dtype(dtype, &so.dtype)) {
        fprintf(stderr, "stylora lora convert: error: --dtype must be f32, f16 or bf16, got '%s'\n", dtype);
        return 2;
    }
    if (!dtype) {   /* the input's dtype */
        SlStFile f;
        if (sl_st_open(&f, pos[0], &ctx) != SL_OK) return cli_fail("lora convert", &ctx);
        so.dtype = SL_F32;
        for (int i = 0; i < f.n; i++)
            if (f.entries[i].ndim >= 2 && (f.entries[i].dtype == SL_F16 || f.entries[i].dtype == SL_BF16)) so.dtype = f.entries[i].dtype;
        sl_st_close(&f);
    }
    SlAdapterLoadOpts lo = {.lenient = lenient != NULL};
    if (alpha) lo.alpha = (float)cli_num("lora convert", "--alpha", alpha, 0, 10000, CLI_OPEN_LO);
    NameSites ns;
    memset(&ns, 0, sizeof ns);
    sl_sites_init(&ns.sites);
    if (model) {
        char ub[2048], tb[2048];
        const char *dirs[2], *pre[2];
        int nd = 0;
        if (component_dir(ub, sizeof ub, model, "unet")) { dirs[nd] = ub; pre[nd++] = "unet"; }
        if (component_dir(tb, sizeof tb, model, "text_encoder")) { dirs[nd] = tb; pre[nd++] = "text_encoder"; }
        if (!nd) {
            sl_fail(&ctx, SL_ERR_MISSING, "%s: no unet/ or text_encoder/ folder with a config.json (a diffusers model is needed)", model);
            return cli_fail("lora convert", &ctx);
        }
        if (name_sites_build(&ns, dirs, pre, nd, &ctx) != SL_OK) {
            name_sites_free(&ns);
            return cli_fail("lora convert", &ctx);
        }
    }
    SlAdapter ad;
    SlAdapterFormat fin;
    if (sl_adapter_load(&ad, pos[0], model ? &ns.sites : NULL, &lo, &fin, &ctx) != SL_OK) {
        name_sites_free(&ns);
        return cli_fail("lora convert", &ctx);
    }
    int rc = 0;
    if (sl_adapter_save(&ad, out, &so, &ctx) != SL_OK) rc = cli_fail("lora convert", &ctx);
    else
        fprintf(stderr, "%s (%s) -> %s (%s, %s): %d modules, %lld parameters\n", pos[0], sl_adapter_format_name(fin), out,
                sl_adapter_format_name(so.format), sl_dtype_name(so.dtype), ad.n, (long long)sl_adapter_n_params(&ad));
    sl_adapter_free(&ad);
    name_sites_free(&ns);
    return rc;
}

static int copy_file(const char *from, const char *to, SlCtx *ctx) {
    FILE *a = fopen(from, "rb");
    if (!a) return sl_fail(ctx, SL_ERR_IO, "%s: %s", from, strerror(errno));
    FILE *b = fopen(to, "wb");
    if (!b) {
        fclose(a);
        return sl_fail(ctx, SL_ERR_IO, "%s: %s", to, strerror(errno));
    }
    char buf[65536];
    size_t n;
    int bad = 0;
    while ((n = fread(buf, 1, sizeof buf, a)) > 0) bad |= fwrite(buf, 1, n, b) != n;
    bad |= ferror(a);
    fclose(a);
    if (fclose(b) != 0) bad = 1;
    return bad ? sl_fail(ctx, SL_ERR_IO, "copying %s to %s failed", from, to) : SL_OK;
}

/* An NF4 U-Net folder: loaded as stored, its NF4 formats kept in *fmt, then dequantized. */
static SlStatus nf4_load_dense(SlUNet *u, const SlUNetConfig *cfg, SlWeights *w, int **fmt, SlCtx *ctx) {
    SL_TRY(sl_unet_init_shapes(u, cfg, ctx));
    SlNf4Stats s;
    SL_TRY(sl_unet_load_prequant(u, w, &s, ctx));
    *fmt = malloc(((size_t)u->n_params + 1) * sizeof **fmt);
    if (!*fmt) return sl_fail(ctx, SL_ERR_NOMEM, "out of memory");
    sl_unet_nf4_formats(u, *fmt);
    sl_log(ctx, SL_LOG_INFO, "%s: NF4 model (%d NF4%s linears): dequantized for merging", w->label, s.n_layers,
           s.double_quant ? "+dq" : "");
    return sl_unet_dequantize_nf4(u, ctx);
}

/* Re-quantizes the merged U-Net to its stored NF4 formats and reports the cost. */
static SlStatus nf4_requantize(SlUNet *u, const int *fmt, const SlMergeState *ms, SlCtx *ctx) {
    SlNf4MergeError e;
    SL_TRY(sl_nf4_merge_error(u, fmt, ms, &e, ctx));
    fprintf(stderr,
            "re-quantized %d merged NF4 linears: weight relative error %.4f; adapter delta after re-quantization: "
            "cosine %.4f with the merged delta, relative error %.4f\n",
            e.n_layers, e.weight_rel, e.delta_cos, e.delta_rel);
    if (e.delta_rel > 0.5)
        sl_log(ctx, SL_LOG_WARN, "re-quantization loses much of the adapter (relative error %.2f): use the runtime path "
               "(sample --lora), sample --merge, or --dequantize", e.delta_rel);
    return sl_unet_nf4_convert(u, fmt, NULL, ctx);
}

/* The dtype the file stored its first dense weight in (F32 when none). */
static SlDType dense_dtype(SlUNet *u, SlWeights *w) {
    for (int i = 0; i < u->n_params; i++) {
        if (!u->params[i].init_w) continue;
        const SlStEntry *e = sl_weights_find(w, u->params[i].name, NULL);
        if (e && (e->dtype == SL_F16 || e->dtype == SL_BF16)) return e->dtype;
        if (e) return SL_F32;
    }
    return SL_F32;
}

/* Copies every regular file of folder `from` into `to` (created): tokenizer/, scheduler/
 * and the other components a merge leaves as they are. */
static SlStatus copy_folder(const char *from, const char *to, SlCtx *ctx) {
    if (mkdir(to, 0755) != 0 && errno != EEXIST) return sl_fail(ctx, SL_ERR_IO, "%s: %s", to, strerror(errno));
    DIR *d = opendir(from);
    if (!d) return sl_fail(ctx, SL_ERR_IO, "%s: %s", from, strerror(errno));
    SlStatus st = SL_OK;
    char a[2300], b[2300];
    for (struct dirent *e; st == SL_OK && (e = readdir(d));) {
        if (e->d_name[0] == '.' || !sl_path_is_file(sl_path_join(a, sizeof a, from, e->d_name))) continue;
        st = copy_file(a, sl_path_join(b, sizeof b, to, e->d_name), ctx);
    }
    closedir(d);
    return st;
}

/* What a merge keeps loaded until the output is written. */
typedef struct MergeJob {
    int pipeline;             /* --model is a diffusers pipeline folder (else a U-Net folder) */
    int single_file;          /* --to single-file */
    SlDType dtype;            /* --dtype, or the default of the output */
    int keep_dtype;           /* folder without --dtype: each tensor as the source stored it */
    SlUNet u;
    SlWeights w;              /* the U-Net's files */
    SlClip *clip;             /* loaded only when an adapter touches the text encoder */
    SlWeights tw;             /* the text encoder's files (pipeline only) */
    int have_tw;
    SlSites sites;
    const char *meta;         /* stylora.merged_loras */
} MergeJob;

/* Every U-Net parameter, as replacements of the U-Net's file tensors. */
static SlExportTensor *unet_tensors(SlUNet *u, SlCtx *ctx) {
    SlExportTensor *t = calloc((size_t)u->n_params + 1, sizeof *t);
    if (!t) { sl_fail(ctx, SL_ERR_NOMEM, "out of memory"); return NULL; }
    for (int i = 0; i < u->n_params; i++)
        t[i] = (SlExportTensor){u->params[i].name, u->params[i].ndim, u->params[i].shape, *u->params[i].w};
    return t;
}

/* The merged text-encoder linears ("text_model.encoder.layers.0.self_attn.q_proj.weight"). */
static SlExportTensor *clip_tensors(const SlSites *s, char (*names)[SL_ADAPTER_NAME_MAX + 8], int64_t (*shapes)[2],
                                    int *n) {
    SlExportTensor *t = calloc((size_t)s->n + 1, sizeof *t);
    *n = 0;
    if (!t) return NULL;
    const char *ns = "text_encoder.";
    for (int i = 0; i < s->n; i++) {
        if (strncmp(s->v[i].name, ns, strlen(ns)) || !s->v[i].lin) continue;
        snprintf(names[*n], sizeof names[*n], "%s.weight", s->v[i].name + strlen(ns));
        shapes[*n][0] = s->v[i].lin->O;
        shapes[*n][1] = s->v[i].lin->I;
        t[*n] = (SlExportTensor){names[*n], 2, shapes[*n], s->v[i].lin->w};
        (*n)++;
    }
    return t;
}

/* Adds the text encoder (merged linears replaced) to x. */
static SlStatus export_text(MergeJob *j, SlExport *x, const char *prefix, SlCtx *ctx) {
    int n = 0;
    char (*names)[SL_ADAPTER_NAME_MAX + 8] = calloc((size_t)j->sites.n + 1, sizeof *names);
    int64_t (*shapes)[2] = calloc((size_t)j->sites.n + 1, sizeof *shapes);
    SlExportTensor *t = names && shapes ? clip_tensors(&j->sites, names, shapes, &n) : NULL;
    SlStatus st = t ? SL_OK : sl_fail(ctx, SL_ERR_NOMEM, "out of memory");
    SlExportPart p = {.what = "text_encoder", .src = &j->tw, .tensors = t, .n_tensors = j->clip ? n : 0,
                      .prefix = prefix, .dtype = j->dtype, .keep_dtype = j->keep_dtype};
    if (st == SL_OK) st = sl_export_add(x, &p, ctx);
    /* the writer references names only while adding: the shapes and names are copied */
    free(t);
    free(names);
    free(shapes);
    return st;
}

static SlStatus export_vae(MergeJob *j, SlExport *x, SlWeights *vw, const char *model, SlCtx *ctx) {
    char p[2300];
    SL_TRY(sl_weights_open_dir(vw, sl_path_join(p, sizeof p, model, "vae"), ctx));
    SlExportPart part = {.what = "vae", .src = vw, .dtype = j->dtype, .keep_dtype = j->keep_dtype};
    if (!j->single_file) return sl_export_add(x, &part, ctx);
    SlVaeConfig vc;
    SlKeyPair *kp = NULL;
    int nk = 0;
    SL_TRY(sl_vae_config_load(&vc, sl_path_join(p, sizeof p, model, "vae/config.json"), ctx));
    SL_TRY(sl_vae_ldm_key_map(&vc, &kp, &nk, ctx));
    part.map = kp;
    part.n_map = nk;
    part.prefix = SL_CKPT_VAE_PREFIX;
    part.linear_as_conv = 1; /* LDM keeps the attention projections as 1x1 convs */
    SlStatus st = sl_export_add(x, &part, ctx);
    sl_vae_key_map_free(kp, nk);
    return st;
}

/* --to single-file: one FILE.safetensors in the original LDM layout (SD 1.x), the names from the
 * reader's own tables (sl_unet_ldm_map, sl_vae_ldm_key_map; CLIP under cond_stage_model.transformer.). */
static SlStatus write_single_file(MergeJob *j, const char *model, const char *out, SlCtx *ctx) {
    SlExport x;
    SlWeights vw = {0};
    int have_vw = 0;
    SlKeyPair *kp = NULL;
    int nk = 0;
    sl_export_init(&x);
    SlExportTensor *ut = unet_tensors(&j->u, ctx);
    SlStatus st = ut ? sl_unet_ldm_map(&j->u, &kp, &nk, ctx) : SL_ERR_NOMEM;
    if (st == SL_OK) {
        SlExportPart p = {.what = "unet", .src = &j->w, .tensors = ut, .n_tensors = j->u.n_params, .map = kp,
                          .n_map = nk, .prefix = SL_CKPT_UNET_PREFIX, .dtype = j->dtype};
        st = sl_export_add(&x, &p, ctx);
    }
    if (st == SL_OK) st = export_vae(j, &x, &vw, model, ctx);
    have_vw = vw.n_files > 0;   /* also when the VAE's config failed after its files opened */
    if (st == SL_OK) st = export_text(j, &x, SL_CKPT_TE1_PREFIX, ctx);
    if (st == SL_OK) st = sl_st_writer_meta(&x.wr, "stylora.merged_loras", j->meta, ctx);
    if (st == SL_OK) st = sl_export_save(&x, out, ctx);
    sl_export_free(&x);
    sl_unet_free_map(kp, nk);
    free(ut);
    if (have_vw) sl_weights_close(&vw);
    return st;
}

/* The U-Net folder (config.json + diffusion_pytorch_model.safetensors) into dir. */
static SlStatus write_unet_folder(MergeJob *j, const char *udir, const char *dir, int nf4, int dequant,
                                  const char *nf4_layers, SlCtx *ctx) {
    char a[2300], b[2300];
    if (mkdir(dir, 0755) != 0 && errno != EEXIST) return sl_fail(ctx, SL_ERR_IO, "%s: %s", dir, strerror(errno));
    SL_TRY(copy_file(sl_path_join(a, sizeof a, udir, "config.json"), sl_path_join(b, sizeof b, dir, "config.json"), ctx));
    SlExport x;
    sl_export_init(&x);
    SlStatus st = SL_OK;
    SlExportTensor *ut = NULL;
    if (nf4 && !dequant) {
        st = sl_unet_nf4_write(&j->u, &x.wr, j->keep_dtype ? dense_dtype(&j->u, &j->w) : j->dtype, nf4_layers, ctx);
    } else if (nf4) { /* --dequantize: the NF4 tensors' names are not the dense ones */
        for (int i = 0; st == SL_OK && i < j->u.n_params; i++) {
            const SlUNetParam *p = &j->u.params[i];
            const SlStEntry *e = sl_weights_find(&j->w, p->name, NULL);
            SlDType dt = e && (e->dtype == SL_F16 || e->dtype == SL_BF16) ? e->dtype : SL_F32;
            st = sl_st_writer_add_f32_as(&x.wr, p->name, j->keep_dtype ? dt : j->dtype, p->ndim, p->shape, *p->w, ctx);
        }
    } else {
        ut = unet_tensors(&j->u, ctx);
        SlExportPart p = {.what = "unet", .src = &j->w, .tensors = ut, .n_tensors = j->u.n_params,
                          .dtype = j->dtype, .keep_dtype = j->keep_dtype};
        st = ut ? sl_export_add(&x, &p, ctx) : SL_ERR_NOMEM;
    }
    if (st == SL_OK) st = sl_st_writer_meta(&x.wr, "stylora.merged_loras", j->meta, ctx);
    if (st == SL_OK) st = sl_export_save(&x, sl_path_join(b, sizeof b, dir, "diffusion_pytorch_model.safetensors"), ctx);
    sl_export_free(&x);
    free(ut);
    return st;
}

/* model_index.json for a source that has none (a folder recognized by its components):
 * StableDiffusionPipeline's component table, as diffusers' save_pretrained writes it
 * ("name": [library, class]); the scheduler class from scheduler_config.json. */
static SlStatus write_model_index(const char *model, const char *path, SlCtx *ctx) {
    char p[2300], tmp[2400];
    const char *cls = "PNDMScheduler";
    SlConfig c;
    int have = sl_path_is_file(sl_path_join(p, sizeof p, model, "scheduler/scheduler_config.json")) &&
               sl_config_load(&c, p, ctx) == SL_OK;
    if (have) sl_config_str(&c, "_class_name", cls, &cls, ctx);
    snprintf(tmp, sizeof tmp, "%s.tmp", path);
    FILE *f = fopen(tmp, "wb");
    SlStatus st = f ? SL_OK : sl_fail(ctx, SL_ERR_IO, "%s: %s", tmp, strerror(errno));
    if (f) {
        fprintf(f, "{\n  \"_class_name\": \"StableDiffusionPipeline\",\n  \"feature_extractor\": [null, null],\n"
                   "  \"requires_safety_checker\": false,\n  \"safety_checker\": [null, null],\n"
                   "  \"scheduler\": [\"diffusers\", \"%s\"],\n  \"text_encoder\": [\"transformers\", \"CLIPTextModel\"],\n"
                   "  \"tokenizer\": [\"transformers\", \"CLIPTokenizer\"],\n  \"unet\": [\"diffusers\", \"UNet2DConditionModel\"],\n"
                   "  \"vae\": [\"diffusers\", \"AutoencoderKL\"]\n}\n", cls);
        if (fclose(f) != 0 || rename(tmp, path) != 0) st = sl_fail(ctx, SL_ERR_IO, "%s: cannot write", path);
    }
    if (have) sl_config_free(&c);
    return st;
}

/* A diffusers pipeline folder as save_pretrained lays it out (diffusers pipeline_utils.py):
 * model_index.json, and one folder per component with its config and weights under the
 * standard names (unet/ and vae/ diffusion_pytorch_model.safetensors, text_encoder/
 * model.safetensors). The other folders (tokenizer/, scheduler/, ...) are copied. */
static SlStatus write_pipeline(MergeJob *j, const char *model, const char *udir, const char *out, int nf4,
                               int dequant, const char *nf4_layers, SlCtx *ctx) {
    char a[2300], b[2300];
    if (mkdir(out, 0755) != 0 && errno != EEXIST) return sl_fail(ctx, SL_ERR_IO, "%s: %s", out, strerror(errno));
    SL_TRY(write_unet_folder(j, udir, sl_path_join(b, sizeof b, out, "unet"), nf4, dequant, nf4_layers, ctx));
    /* the components are the folders model_index.json names (without one: SD's) */
    SlConfig idx;
    const int have_idx = sl_path_is_file(sl_path_join(a, sizeof a, model, "model_index.json"));
    if (have_idx) SL_TRY(sl_config_load(&idx, a, ctx));
    DIR *d = opendir(model);
    if (!d) {
        if (have_idx) sl_config_free(&idx);
        return sl_fail(ctx, SL_ERR_IO, "%s: %s", model, strerror(errno));
    }
    SlStatus st = SL_OK;
    for (struct dirent *e; st == SL_OK && (e = readdir(d));) {
        const char *c = e->d_name;
        if (c[0] == '.' || !strcmp(c, "unet") || !sl_path_is_dir(sl_path_join(a, sizeof a, model, c))) continue;
        if (have_idx ? !sl_config_has(&idx, c)
                     : strcmp(c, "vae") && strcmp(c, "text_encoder") && strcmp(c, "tokenizer") && strcmp(c, "scheduler"))
            continue;   /* not a component (e.g. a lora/ folder beside them) */
        if (!strcmp(c, "vae") || !strcmp(c, "text_encoder")) {
            char src[2300], dst[2300];
            sl_path_join(b, sizeof b, out, c);
            if (mkdir(b, 0755) != 0 && errno != EEXIST) { st = sl_fail(ctx, SL_ERR_IO, "%s: %s", b, strerror(errno)); break; }
            st = copy_file(sl_path_join(src, sizeof src, a, "config.json"), sl_path_join(dst, sizeof dst, b, "config.json"), ctx);
            SlExport x;
            SlWeights vw = {0};
            sl_export_init(&x);
            if (st == SL_OK && c[0] == 'v') st = export_vae(j, &x, &vw, model, ctx);
            if (st == SL_OK && c[0] == 't') st = export_text(j, &x, NULL, ctx);
            if (st == SL_OK)
                st = sl_export_save(&x, sl_path_join(dst, sizeof dst, b, c[0] == 'v' ? "diffusion_pytorch_model.safetensors"
                                                                                      : "model.safetensors"), ctx);
            sl_export_free(&x);
            if (vw.n_files) sl_weights_close(&vw);
        } else {
            st = copy_folder(a, sl_path_join(b, sizeof b, out, c), ctx);
        }
    }
    closedir(d);
    if (have_idx) sl_config_free(&idx);
    if (st == SL_OK && have_idx)
        st = copy_file(sl_path_join(a, sizeof a, model, "model_index.json"), sl_path_join(b, sizeof b, out, "model_index.json"), ctx);
    else if (st == SL_OK) /* a folder recognized by its components alone: write diffusers' index */
        st = write_model_index(model, sl_path_join(b, sizeof b, out, "model_index.json"), ctx);
    return st;
}

static int lora_merge(int argc, char **argv) {
    /* several adapters into one adapter (no model): cmd_lora_svd.c */
    for (int i = 1; i < argc; i++)
        if (!strcmp(argv[i], "--to-adapter") || !strncmp(argv[i], "--to-adapter=", 13)) return lora_merge_to_adapter(argc, argv);
    const char *model = NULL, *out = NULL, *alpha = NULL, *lenient = NULL, *quiet = NULL, *dequant = NULL;
    const char *to_adapter = NULL; /* listed for --help; handled above */
    const char *to = NULL, *dtype = NULL;
    const char *loras[MAX_LORA + 1] = {0};
    const CliOpt opts[] = {
        {"--model", "DIR", "diffusers model (or U-Net folder) to merge into", &model, 0},
        {"--lora", "FILE[:W]", "adapter and its weight in [-10, 10] (default 1; W is what follows the last ':' when it is a number)", loras, MAX_LORA},
        {"--out", "DIR|FILE", "output: a diffusers pipeline folder (a U-Net folder when --model is one), or with "
                              "--to single-file one .safetensors", &out, 0},
        {"--to", "diffusers|single-file", "output layout (default diffusers; single-file = the original SD 1.x "
                                          "checkpoint keys A1111 and ComfyUI load)", &to, 0},
        {"--dtype", "fp32|fp16|bf16", "stored dtype (default: single-file fp16, folder as the source stores each tensor)", &dtype, 0},
        {"--alpha", "A", "alpha in (0, 10000] for every module, over what the adapter files store", &alpha, 0},
        {"--lora-alpha", "A", "the same as --alpha (sample's name for it)", &alpha, 0},
        {"--lenient", NULL, "skip unknown modules / misfit shapes with a warning", &lenient, 0},
        {"--to-adapter", "OUT", "instead: the adapters into one adapter file, by SVD (no --model; 'lora merge --to-adapter OUT --help')", &to_adapter, 0},
        {"--dequantize", NULL, "NF4 model: write the merged NF4 layers as dense fp32 (no re-quantization)", &dequant, 0},
        {"--quiet", NULL, "only warnings and errors", &quiet, 0},
        {NULL, NULL, NULL, NULL, 0},
    };
    const char *pos[1];
    int npos;
    cli_parse("lora merge", "--model DIR --lora FILE[:W] [--lora ...] --out DIR [--to single-file]", opts, argc, argv,
              pos, 0, &npos);
    SlCtx ctx;
    cli_ctx_init(&ctx, quiet != NULL);
    if (!model || !out || !loras[0]) {
        fprintf(stderr, "stylora lora merge: error: need --model, --lora and --out (see --help)\n");
        return 2;
    }
    MergeJob j;
    memset(&j, 0, sizeof j);
    if (to && strcmp(to, "diffusers") && strcmp(to, "single-file")) {
        fprintf(stderr, "stylora lora merge: error: --to must be diffusers or single-file, got '%s'\n", to);
        return 2;
    }
    j.single_file = to && !strcmp(to, "single-file");
    j.dtype = j.single_file ? SL_F16 : SL_F32;
    j.keep_dtype = !dtype && !j.single_file;
    if (dtype) {
        if (!strcmp(dtype, "fp32")) j.dtype = SL_F32;
        else if (!strcmp(dtype, "fp16")) j.dtype = SL_F16;
        else if (!strcmp(dtype, "bf16")) j.dtype = SL_BF16;
        else {
            fprintf(stderr, "stylora lora merge: error: --dtype must be fp32, fp16 or bf16, got '%s'\n", dtype);
            return 2;
        }
    }
    /* the adapters' weights and the output paths, before the U-Net loads */
    char files[MAX_LORA][1024];
    float wts[MAX_LORA];
    for (int i = 0; i < MAX_LORA && loras[i]; i++)
        if (sample_split_lora("--lora", loras[i], files[i], sizeof files[i], &wts[i], &ctx) != SL_OK)
            return cli_fail("lora merge", &ctx);
    char dst[2300];
    char udir[2048], path[2300];
    if (!component_dir(udir, sizeof udir, model, "unet")) {
        sl_fail(&ctx, SL_ERR_MISSING, "%s: no unet/config.json or config.json (a diffusers model or U-Net folder is needed)", model);
        return cli_fail("lora merge", &ctx);
    }
    j.pipeline = strcmp(udir, model) != 0 && sl_model_layout(model) == SL_LAYOUT_DIFFUSERS;
    if (j.single_file && !j.pipeline) {
        sl_fail(&ctx, SL_ERR_ARG, "%s: --to single-file needs a whole diffusers model (unet/, vae/, text_encoder/), "
                "not a U-Net folder", model);
        return cli_fail("lora merge", &ctx);
    }
    if (j.single_file) {
        cli_check_out_file("lora merge", "--out", out);
    } else {
        cli_check_out_dir("lora merge", "--out", out);
        /* copying config.json onto itself would truncate it before it is read */
        char ra[PATH_MAX], rb[PATH_MAX];
        if (realpath(out, ra) && realpath(model, rb) && !strcmp(ra, rb)) {
            sl_fail(&ctx, SL_ERR_ARG, "--out %s is the model folder itself: write the merged model elsewhere", out);
            return cli_fail("lora merge", &ctx);
        }
        /* the files it replaces: each must be a regular file (a FIFO or folder there is refused) */
        static const char *const outs[] = {"unet/config.json", "unet/diffusion_pytorch_model.safetensors",
                                           "vae/diffusion_pytorch_model.safetensors", "text_encoder/model.safetensors",
                                           "model_index.json"};
        for (size_t i = 0; i < (j.pipeline ? sizeof outs / sizeof outs[0] : 2); i++) {
            const char *rel = j.pipeline ? outs[i] : outs[i] + strlen("unet/");
            struct stat sb;
            if (lstat(sl_path_join(dst, sizeof dst, out, rel), &sb) == 0) cli_check_out_file("lora merge", "--out", dst);
        }
    }
    SlAdapterLoadOpts lo = {.lenient = lenient != NULL};
    if (alpha) lo.alpha = (float)cli_num("lora merge", "--alpha", alpha, 0, 10000, CLI_OPEN_LO);
    int n = 0, rc = 0;
    SlAdapter ads[MAX_LORA];
    SlAdapter *adp[MAX_LORA];
    SlUNetConfig cfg;
    sl_sites_init(&j.sites);
    int nf4 = 0, *fmt = NULL;
    const char *nf4_layers = NULL;
    SlStatus st = sl_unet_config_load(&cfg, sl_path_join(path, sizeof path, udir, "config.json"), &ctx);
    if (st == SL_OK) st = sl_weights_open_dir(&j.w, udir, &ctx);
    if (st == SL_OK) st = sl_weights_nf4_probe(&j.w, &nf4, &nf4_layers, &ctx);
    if (st == SL_OK && nf4 && j.single_file)
        st = sl_fail(&ctx, SL_ERR_UNSUPPORTED, "%s: the U-Net is pre-quantized to NF4, which a single-file checkpoint "
                     "cannot hold: merge into the fp32/fp16 model it came from, or write a folder (--to diffusers)", udir);
    if (st == SL_OK && !nf4) st = sl_unet_init(&j.u, &cfg, &ctx);
    if (st == SL_OK && !nf4) st = sl_unet_load(&j.u, &j.w, &ctx);
    if (st == SL_OK && nf4) st = nf4_load_dense(&j.u, &cfg, &j.w, &fmt, &ctx);
    char name[SL_ADAPTER_NAME_MAX];
    for (int i = 0; st == SL_OK && i < j.u.n_mods; i++) {
        snprintf(name, sizeof name, "unet.%s", j.u.mods[i].name);
        st = sl_sites_add(&j.sites, name, j.u.mods[i].lin, j.u.mods[i].conv, 0, &ctx);
    }
    int te_mods = 0;
    for (; st == SL_OK && n < MAX_LORA && loras[n]; n++) {
        st = sl_adapter_load(&ads[n], files[n], NULL, &lo, NULL, &ctx);
        if (st != SL_OK) break;
        adp[n] = &ads[n];
        for (int k = 0; k < ads[n].n; k++) te_mods += !strncmp(ads[n].mods[k].name, "text_encoder.", 13);
    }
    if (st == SL_OK && j.pipeline) {   /* the text encoder's files, and its model when an adapter touches it */
        SlClipConfig cc;
        st = sl_weights_open_dir(&j.tw, sl_path_join(path, sizeof path, model, "text_encoder"), &ctx);
        j.have_tw = st == SL_OK;
        if (st == SL_OK && (te_mods || j.single_file))
            st = sl_clip_config_load(&cc, sl_path_join(path, sizeof path, model, "text_encoder/config.json"), &ctx);
        /* SD 2.x (OpenCLIP, gelu) lives under cond_stage_model.model.* with fused in_proj: not written */
        if (st == SL_OK && j.single_file && cc.act != SL_CLIP_ACT_QUICK_GELU)
            st = sl_fail(&ctx, SL_ERR_UNSUPPORTED, "%s: --to single-file writes the SD 1.x layout; this text encoder "
                         "(hidden_act gelu: SD 2.x's OpenCLIP) needs cond_stage_model.model.* names, not written yet",
                         model);
        if (st == SL_OK && te_mods) st = sl_clip_load(&j.clip, &cc, &j.tw, SL_CLIP_LAYOUT_HF, &ctx);
        if (st == SL_OK && te_mods) st = sl_clip_reserve(j.clip, 1, 1, &ctx);
        if (st == SL_OK && te_mods) st = sl_sites_add_clip(&j.sites, j.clip, "text_encoder", &ctx);
        if (st == SL_OK && j.single_file && sl_weights_find(&j.tw, "text_model.embeddings.token_embedding.weight", NULL) == NULL)
            st = sl_fail(&ctx, SL_ERR_UNSUPPORTED, "%s: --to single-file writes the SD 1.x layout, whose text encoder "
                         "has transformers' text_model.* names; this one has not", j.tw.label);
    }
    for (int i = 0; st == SL_OK && i < n; i++) {
        const char *file = files[i];
        if (!j.pipeline) {
            int dropped = sl_adapter_keep_ns(&ads[i], "unet");
            if (dropped) sl_log(&ctx, SL_LOG_WARN, "%s: %d text-encoder module(s) not merged (the output is a U-Net)", file, dropped);
        }
        int matched = 0;
        st = sl_adapter_check(&ads[i], &j.sites, lenient != NULL, &matched, &ctx);
        if (st == SL_OK && matched < ads[i].n) {   /* lenient: keep only what fits */
            int k2 = 0;
            for (int k = 0; k < ads[i].n; k++)
                if (sl_sites_find(&j.sites, ads[i].mods[k].name) >= 0) ads[i].mods[k2++] = ads[i].mods[k];
            ads[i].n = k2;
            st = sl_adapter_check(&ads[i], &j.sites, 0, NULL, &ctx);
        }
        if (st == SL_OK) sl_log(&ctx, SL_LOG_INFO, "%s: merging %d modules with weight %g", file, ads[i].n, (double)wts[i]);
    }
    SlMergeState ms = {0};
    if (st == SL_OK) st = sl_adapter_merge(&ms, &j.sites, adp, wts, n, &ctx);
    if (st == SL_OK && nf4 && !dequant) st = nf4_requantize(&j.u, fmt, &ms, &ctx);
    char meta[4096] = "";
    size_t used = 0;
    for (int i = 0; i < n && used < sizeof meta; i++)
        used += (size_t)snprintf(meta + used, sizeof meta - used, "%s%s:%g", i ? "," : "", ads[i].label, (double)wts[i]);
    j.meta = meta;
    if (st == SL_OK && j.single_file) st = write_single_file(&j, model, out, &ctx);
    else if (st == SL_OK && j.pipeline) st = write_pipeline(&j, model, udir, out, nf4, dequant != NULL, nf4_layers, &ctx);
    else if (st == SL_OK) st = write_unet_folder(&j, udir, out, nf4, dequant != NULL, nf4_layers, &ctx);
    if (st != SL_OK) rc = cli_fail("lora merge", &ctx);
    else fprintf(stderr, "merged %d adapter(s) into %s -> %s (%s, %s)\n", n, j.pipeline ? model : udir, out,
                 j.single_file ? "single-file checkpoint" : j.pipeline ? "diffusers pipeline" : "U-Net folder",
                 j.keep_dtype ? "source dtypes" : sl_dtype_name(j.dtype));
    /* the merged model is written: free the copies without restoring */
    sl_adapter_merge_commit(&ms);
    for (int i = 0; i < n && i < MAX_LORA; i++) sl_adapter_free(&ads[i]);
    sl_sites_free(&j.sites);
    sl_weights_close(&j.w);
    if (j.have_tw) sl_weights_close(&j.tw);
    sl_clip_free(j.clip);
    sl_unet_free(&j.u);
    free(fmt);
    return rc;
}

int cmd_lora(int argc, char **argv) {
    if (argc < 2 || !strcmp(argv[1], "--help") || !strcmp(argv[1], "-h")) {
        FILE *o = argc < 2 ? stderr : stdout;
        fprintf(o, "usage: stylora lora convert IN --to kohya|peft --out OUT [--alpha A] [--model DIR]\n"
                   "       stylora lora merge --model DIR --lora FILE[:W] [--lora ...] --out DIR|FILE [--to single-file] [--dtype T]\n"
                   "       stylora lora merge --lora FILE[:W] [--lora ...] --to-adapter OUT [--rank R | --dynamic M:P]\n"
                   "       stylora lora resize IN (--rank R | --dynamic sv_fro:P|sv_ratio:P|sv_cumulative:P) --out OUT\n"
                   "'stylora lora convert|merge|resize --help' list the options.\n");
        return argc < 2 ? 2 : 0;
    }
    if (!strcmp(argv[1], "convert")) return lora_convert(argc - 1, argv + 1);
    if (!strcmp(argv[1], "merge")) return lora_merge(argc - 1, argv + 1);
    if (!strcmp(argv[1], "resize")) return lora_resize_main(argc - 1, argv + 1);
    fprintf(stderr, "stylora lora: error: unknown subcommand '%s' (convert, merge or resize)\n", argv[1]);
    return 2;
}
