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
 *       Loads the diffusers U-Net of DIR (DIR/unet or DIR), merges each adapter with its
 *       weight W (default 1), and writes a U-Net folder: config.json copied, weights
 *       written atomically in their original dtypes. Text-encoder modules of an adapter
 *       are not merged (a warning says how many).
 *       An NF4 model (written by `stylora quantize`, pipeline/quant.h) is dequantized, merged
 *       and its NF4 layers re-quantized (same format); the second rounding's cost is printed
 *       (weight relative error, and how much of the adapter's delta survives: small deltas
 *       mostly fall inside one NF4 step). --dequantize writes them dense fp32 instead.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "cli.h"
#include "core/safetensors.h"
#include "core/weights.h"
#include "lora_svd.h"
#include "pipeline/quant.h"
#include "sample_jobs.h" /* sample_split_lora: the one FILE[:WEIGHT] parser */
#include "styles/adapter.h"
#include "unet/unet.h"

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

static int lora_merge(int argc, char **argv) {
    /* several adapters into one adapter (no model): cmd_lora_svd.c */
    for (int i = 1; i < argc; i++)
        if (!strcmp(argv[i], "--to-adapter") || !strncmp(argv[i], "--to-adapter=", 13)) return lora_merge_to_adapter(argc, argv);
    const char *model = NULL, *out = NULL, *alpha = NULL, *lenient = NULL, *quiet = NULL, *dequant = NULL;
    const char *to_adapter = NULL; /* listed for --help; handled above */
    const char *loras[MAX_LORA + 1] = {0};
    const CliOpt opts[] = {
        {"--model", "DIR", "diffusers model (or U-Net folder) to merge into", &model, 0},
        {"--lora", "FILE[:W]", "adapter and its weight in [-10, 10] (default 1; W is what follows the last ':' when it is a number)", loras, MAX_LORA},
        {"--out", "DIR", "output U-Net folder (config.json + diffusion_pytorch_model.safetensors)", &out, 0},
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
    cli_parse("lora merge", "--model DIR --lora FILE[:W] [--lora ...] --out DIR", opts, argc, argv, pos, 0, &npos);
    SlCtx ctx;
    cli_ctx_init(&ctx, quiet != NULL);
    if (!model || !out || !loras[0]) {
        fprintf(stderr, "stylora lora merge: error: need --model, --lora and --out (see --help)\n");
        return 2;
    }
    /* the adapters' weights and the output paths, before the U-Net loads */
    char files[MAX_LORA][1024];
    float wts[MAX_LORA];
    for (int i = 0; i < MAX_LORA && loras[i]; i++)
        if (sample_split_lora("--lora", loras[i], files[i], sizeof files[i], &wts[i], &ctx) != SL_OK)
            return cli_fail("lora merge", &ctx);
    char dst[2300];
    cli_check_out_dir("lora merge", "--out", out);
    if (sl_path_is_dir(out)) {
        cli_check_out_file("lora merge", "--out", sl_path_join(dst, sizeof dst, out, "config.json"));
        cli_check_out_file("lora merge", "--out", sl_path_join(dst, sizeof dst, out, "diffusion_pytorch_model.safetensors"));
    }
    char udir[2048], path[2300];
    if (!component_dir(udir, sizeof udir, model, "unet")) {
        sl_fail(&ctx, SL_ERR_MISSING, "%s: no unet/config.json or config.json (a diffusers model or U-Net folder is needed)", model);
        return cli_fail("lora merge", &ctx);
    }
    SlAdapterLoadOpts lo = {.lenient = lenient != NULL};
    if (alpha) lo.alpha = (float)cli_num("lora merge", "--alpha", alpha, 0, 10000, CLI_OPEN_LO);
    int n = 0, rc = 0;
    SlAdapter ads[MAX_LORA];
    SlAdapter *adp[MAX_LORA];
    SlUNetConfig cfg;
    SlUNet u;
    SlWeights w;
    SlSites sites;
    memset(&u, 0, sizeof u);
    memset(&w, 0, sizeof w);
    sl_sites_init(&sites);
    int nf4 = 0, *fmt = NULL;
    const char *nf4_layers = NULL;
    SlStatus st = sl_unet_config_load(&cfg, sl_path_join(path, sizeof path, udir, "config.json"), &ctx);
    if (st == SL_OK) st = sl_weights_open_dir(&w, udir, &ctx);
    if (st == SL_OK) st = sl_weights_nf4_probe(&w, &nf4, &nf4_layers, &ctx);
    if (st == SL_OK && !nf4) st = sl_unet_init(&u, &cfg, &ctx);
    if (st == SL_OK && !nf4) st = sl_unet_load(&u, &w, &ctx);
    if (st == SL_OK && nf4) st = nf4_load_dense(&u, &cfg, &w, &fmt, &ctx);
    char name[SL_ADAPTER_NAME_MAX];
    for (int i = 0; st == SL_OK && i < u.n_mods; i++) {
        snprintf(name, sizeof name, "unet.%s", u.mods[i].name);
        st = sl_sites_add(&sites, name, u.mods[i].lin, u.mods[i].conv, 0, &ctx);
    }
    for (; st == SL_OK && n < MAX_LORA && loras[n]; n++) {
        const char *file = files[n];
        st = sl_adapter_load(&ads[n], file, NULL, &lo, NULL, &ctx);
        if (st != SL_OK) break;
        adp[n] = &ads[n];
        int dropped = sl_adapter_keep_ns(&ads[n], "unet");
        if (dropped) sl_log(&ctx, SL_LOG_WARN, "%s: %d text-encoder module(s) not merged (the output is a U-Net)", file, dropped);
        int matched = 0;
        st = sl_adapter_check(&ads[n], &sites, lenient != NULL, &matched, &ctx);
        if (st == SL_OK && matched < ads[n].n) {   /* lenient: keep only what fits */
            int j = 0;
            for (int k = 0; k < ads[n].n; k++)
                if (sl_sites_find(&sites, ads[n].mods[k].name) >= 0) ads[n].mods[j++] = ads[n].mods[k];
            ads[n].n = j;
            st = sl_adapter_check(&ads[n], &sites, 0, NULL, &ctx);
        }
        if (st == SL_OK) sl_log(&ctx, SL_LOG_INFO, "%s: merging %d modules with weight %g", file, ads[n].n, (double)wts[n]);
    }
    SlMergeState ms = {0};
    if (st == SL_OK) st = sl_adapter_merge(&ms, &sites, adp, wts, n, &ctx);
    if (st == SL_OK && nf4 && !dequant) st = nf4_requantize(&u, fmt, &ms, &ctx);
    if (st == SL_OK && mkdir(out, 0755) != 0 && errno != EEXIST) st = sl_fail(&ctx, SL_ERR_IO, "%s: %s", out, strerror(errno));
    if (st == SL_OK)
        st = copy_file(sl_path_join(path, sizeof path, udir, "config.json"), sl_path_join(dst, sizeof dst, out, "config.json"), &ctx);
    if (st == SL_OK) {
        SlStWriter wr;
        sl_st_writer_init(&wr);
        if (nf4 && !dequant) st = sl_unet_nf4_write(&u, &wr, dense_dtype(&u, &w), nf4_layers, &ctx);
        for (int i = 0; st == SL_OK && i < u.n_params && !(nf4 && !dequant); i++) {
            const SlUNetParam *p = &u.params[i];
            const SlStFile *sf = NULL;
            const SlStEntry *e = sl_weights_find(&w, p->name, &sf);
            SlDType dt = e && (e->dtype == SL_F16 || e->dtype == SL_BF16) ? e->dtype : SL_F32;
            st = sl_st_writer_add_f32_as(&wr, p->name, dt, p->ndim, p->shape, *p->w, &ctx);
        }
        char meta[4096] = "";
        size_t used = 0;
        for (int i = 0; i < n && used < sizeof meta; i++)
            used += (size_t)snprintf(meta + used, sizeof meta - used, "%s%s:%g", i ? "," : "", ads[i].label, (double)wts[i]);
        if (st == SL_OK) st = sl_st_writer_meta(&wr, "stylora.merged_loras", meta, &ctx);
        if (st == SL_OK) st = sl_st_writer_save(&wr, sl_path_join(dst, sizeof dst, out, "diffusion_pytorch_model.safetensors"), &ctx);
        sl_st_writer_free(&wr);
    }
    if (st != SL_OK) rc = cli_fail("lora merge", &ctx);
    else fprintf(stderr, "merged %d adapter(s) into %s -> %s\n", n, udir, out);
    /* the merged model is written: free the copies without restoring */
    sl_adapter_merge_commit(&ms);
    for (int i = 0; i < n && i < MAX_LORA; i++) sl_adapter_free(&ads[i]);
    sl_sites_free(&sites);
    sl_weights_close(&w);
    sl_unet_free(&u);
    free(fmt);
    return rc;
}

int cmd_lora(int argc, char **argv) {
    if (argc < 2 || !strcmp(argv[1], "--help") || !strcmp(argv[1], "-h")) {
        FILE *o = argc < 2 ? stderr : stdout;
        fprintf(o, "usage: stylora lora convert IN --to kohya|peft --out OUT [--alpha A] [--model DIR]\n"
                   "       stylora lora merge --model DIR --lora FILE[:W] [--lora ...] --out DIR\n"
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
