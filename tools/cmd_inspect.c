/* cmd_inspect.c - `stylora inspect PATH`: what a file or folder holds.
 *
 * A .safetensors file: its tensors (name, dtype, shape, bytes), metadata, and
 * what it is recognized as (single-file SD checkpoint, diffusers component
 * weights, LoRA adapter in kohya / PEFT / old-diffusers form, LyCORIS LoHa / LoKr). A folder: the
 * diffusers layout, each component's config and weights, the tokenizer.
 */
#include <cJSON.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "core/config.h"
#include "core/safetensors.h"
#include "core/weights.h"
#include "styles/adapter.h"

static int has_prefix(const char *s, const char *p) { return strncmp(s, p, strlen(p)) == 0; }

/* What a safetensors file is, from its tensor names. */
static const char *recognize_file(const SlStFile *f) {
    int unet = 0, vae = 0, te = 0, kohya = 0, peft = 0, olddiff = 0, dora = 0, diff_unet = 0, diff_vae = 0, te_hf = 0;
    int loha = 0, lokr = 0;
    for (int i = 0; i < f->n; i++) {
        const char *n = f->entries[i].name;
        unet += has_prefix(n, SL_CKPT_UNET_PREFIX);
        vae += has_prefix(n, SL_CKPT_VAE_PREFIX);
        te += has_prefix(n, "cond_stage_model.");
        kohya += (has_prefix(n, "lora_unet_") || has_prefix(n, "lora_te")) != 0;
        peft += strstr(n, ".lora_A.") != NULL || strstr(n, ".lora_B.") != NULL;
        olddiff += strstr(n, ".lora.down.") != NULL || strstr(n, ".lora.up.") != NULL;
        dora += strstr(n, "dora_scale") != NULL || strstr(n, "lora_magnitude_vector") != NULL;
        diff_unet += has_prefix(n, "down_blocks.") || has_prefix(n, "mid_block.");
        diff_vae += has_prefix(n, "encoder.") || has_prefix(n, "decoder.");
        te_hf += has_prefix(n, "text_model.");
        loha += strstr(n, ".hada_w") != NULL || strstr(n, ".hada_t") != NULL;
        lokr += strstr(n, ".lokr_") != NULL;
    }
    if (unet) return vae && te ? "single-file Stable Diffusion checkpoint (U-Net, VAE, text encoder)"
                               : "single-file Stable Diffusion checkpoint (partial)";
    if (loha && lokr) return "LyCORIS LoHa + LoKr adapter (hada_* and lokr_* keys)";
    if (loha) return "LyCORIS LoHa adapter (hada_w1_a/hada_w1_b/hada_w2_a/hada_w2_b)";
    if (lokr) return "LyCORIS LoKr adapter (lokr_w1/lokr_w2 Kronecker factors)";
    if (kohya) return dora ? "DoRA adapter, kohya format" : "LoRA adapter, kohya format (lora_unet_*/lora_te_*)";
    if (peft) return dora ? "DoRA adapter, diffusers/PEFT format" : "LoRA adapter, diffusers/PEFT format (lora_A/lora_B)";
    if (olddiff) return "LoRA adapter, older diffusers format (lora.down/lora.up)";
    if (te_hf) return "transformers CLIP text model weights";
    if (diff_unet) return "diffusers U-Net weights";
    if (diff_vae) return "diffusers VAE weights";
    return "safetensors file";
}

static void fmt_bytes(char *buf, size_t n, double b) {
    if (b >= 1 << 30) snprintf(buf, n, "%.2f GiB", b / (1 << 30));
    else if (b >= 1 << 20) snprintf(buf, n, "%.2f MiB", b / (1 << 20));
    else if (b >= 1 << 10) snprintf(buf, n, "%.1f KiB", b / (1 << 10));
    else snprintf(buf, n, "%.0f B", b);
}

static void print_file(const SlStFile *f, int list_tensors, int max_list) {
    size_t total = 0, by_dtype[SL_DTYPE_COUNT] = {0};
    int64_t params = 0;
    for (int i = 0; i < f->n; i++) {
        total += f->entries[i].nbytes;
        by_dtype[f->entries[i].dtype] += f->entries[i].nbytes;
        params += sl_shape_numel(f->entries[i].ndim, f->entries[i].shape);
    }
    char b[64];
    fmt_bytes(b, sizeof b, (double)total);
    printf("%s\n  recognized as: %s\n  tensors: %d, parameters: %lld, data: %s (", f->path, recognize_file(f), f->n,
           (long long)params, b);
    int first = 1;
    for (int d = 0; d < SL_DTYPE_COUNT; d++)
        if (by_dtype[d]) {
            fmt_bytes(b, sizeof b, (double)by_dtype[d]);
            printf("%s%s %s", first ? "" : ", ", sl_dtype_name((SlDType)d), b);
            first = 0;
        }
    printf(")\n");
    if (f->n_meta) {
        printf("  metadata:\n");
        for (int i = 0; i < f->n_meta; i++) {
            const char *v = f->meta_vals[i];
            int len = (int)strlen(v);
            printf("    %s = %.*s%s\n", f->meta_keys[i], len > 200 ? 200 : len, v, len > 200 ? " ..." : "");
        }
    }
    if (list_tensors) {
        int shown = 0;
        for (int i = 0; i < f->n && shown < max_list; i++, shown++) {
            const SlStEntry *e = &f->entries[i];
            char s[128];
            printf("    %-72s %-5s %-22s %zu\n", e->name, sl_dtype_name(e->dtype), sl_shape_str(e->ndim, e->shape, s, sizeof s),
                   e->nbytes);
        }
        if (f->n > max_list) printf("    ... %d more (use --all)\n", f->n - max_list);
    }
}

static void print_config_summary(const char *path) {
    SlConfig cfg;
    SlCtx ctx;
    sl_ctx_init(&ctx);
    if (sl_config_load(&cfg, path, &ctx) != SL_OK) {
        printf("    config: error: %s\n", ctx.msg);
        return;
    }
    const char *keys[] = {"_class_name", "architectures", "model_type", "block_out_channels", "layers_per_block",
                          "attention_head_dim", "cross_attention_dim", "hidden_size", "num_hidden_layers",
                          "num_attention_heads", "hidden_act", "latent_channels", "scaling_factor", "sample_size",
                          "prediction_type", "beta_schedule", "timestep_spacing", "vocab_size"};
    for (size_t i = 0; i < sizeof keys / sizeof keys[0]; i++) {
        const cJSON *v = cJSON_GetObjectItemCaseSensitive(cfg.root, keys[i]);
        if (!v) continue;
        char *s = cJSON_PrintUnformatted(v);
        printf("    %s: %s\n", keys[i], s ? s : "?");
        free(s);
    }
    sl_config_free(&cfg);
}

static int inspect_tokenizer(const char *dir) {
    char p[4096];
    SlCtx ctx;
    sl_ctx_init(&ctx);
    SlConfig vocab;
    if (sl_config_load(&vocab, sl_path_join(p, sizeof p, dir, "vocab.json"), &ctx) != SL_OK) {
        printf("    tokenizer: error: %s\n", ctx.msg);
        return 1;
    }
    int nv = cJSON_GetArraySize(vocab.root);
    sl_config_free(&vocab);
    char *text;
    size_t len;
    int nm = 0;
    if (sl_read_file(sl_path_join(p, sizeof p, dir, "merges.txt"), 64u << 20, &text, &len, &ctx) == SL_OK) {
        /* count non-empty lines, skipping the "#version" header */
        for (char *line = text; line && *line;) {
            char *nl = strchr(line, '\n');
            if (*line != '\n' && !(line == text && strncmp(line, "#version", 8) == 0)) nm++;
            line = nl ? nl + 1 : NULL;
        }
        free(text);
    }
    printf("    tokenizer: vocab.json %d tokens, merges.txt %d merges\n", nv, nm);
    return 0;
}

static int inspect_component(const char *dir, const char *name, int list, int max_list) {
    char p[4096];
    printf("  %s/\n", name);
    if (strcmp(name, "tokenizer") == 0) return inspect_tokenizer(dir);
    const char *cfgname = strcmp(name, "scheduler") == 0 ? "scheduler_config.json" : "config.json";
    if (sl_path_is_file(sl_path_join(p, sizeof p, dir, cfgname))) print_config_summary(p);
    if (strcmp(name, "scheduler") == 0) return 0;
    SlWeights w;
    SlCtx ctx;
    sl_ctx_init(&ctx);
    SlStatus st = sl_weights_open_dir(&w, dir, &ctx);
    if (st == SL_ERR_MISSING) {
        printf("    weights: none (config only)\n");
        return 0;
    }
    if (st != SL_OK) {
        printf("    weights: error: %s\n", ctx.msg);
        return 1;
    }
    for (int i = 0; i < w.n_files; i++) {
        printf("    weights: ");
        print_file(&w.files[i], list, max_list);
    }
    sl_weights_close(&w);
    return 0;
}

/* For an adapter file: modules, ranks, alphas and which kinds of module it targets. */
static void print_adapter_summary(const char *path) {
    SlAdapter ad;
    memset(&ad, 0, sizeof ad);
    SlCtx ctx;
    sl_ctx_init(&ctx);
    SlAdapterLoadOpts lo = {0, 1, NULL};
    SlAdapterFormat fmt;
    /* a file that stores no alpha loads at alpha = rank (styles/adapter_io.c), as diffusers reads it */
    if (sl_adapter_load(&ad, path, NULL, &lo, &fmt, &ctx) != SL_OK) {
        printf("  adapter: cannot be read as an adapter: %s\n", ctx.msg);
        return;
    }
    int64_t rmin = INT64_MAX, rmax = 0;
    float amin = INFINITY, amax = -INFINITY;
    int n_unet = 0, n_te = 0, n_conv = 0, n_dora = 0;
    const char *kinds[] = {"to_q", "to_k", "to_v", "to_out.0", "proj_in", "proj_out", "ff.net.0.proj", "ff.net.2",
                           "conv1", "conv2", "q_proj", "k_proj", "v_proj", "out_proj", "fc1", "fc2"};
    int counts[16] = {0};
    int n_loha = 0, n_lokr = 0;
    for (int i = 0; i < ad.n; i++) {
        const SlLoraMod *m = &ad.mods[i];
        /* LyCORIS: the file's rank, not the dense delta's (0: LoKr with both factors full) */
        const int64_t r = m->lyco ? m->lyco_rank : m->r;
        n_loha += m->lyco == SL_LYCO_LOHA;
        n_lokr += m->lyco == SL_LYCO_LOKR;
        if (r < rmin) rmin = r;
        if (r > rmax) rmax = r;
        if (m->alpha < amin) amin = m->alpha;
        if (m->alpha > amax) amax = m->alpha;
        n_unet += strncmp(m->name, "unet.", 5) == 0;
        n_te += strncmp(m->name, "text_encoder", 12) == 0;
        n_conv += m->conv;
        n_dora += m->mag != NULL;
        size_t ln = strlen(m->name);
        for (int k = 0; k < 16; k++) {
            size_t lk = strlen(kinds[k]);
            if (ln > lk && strcmp(m->name + ln - lk, kinds[k]) == 0 && m->name[ln - lk - 1] == '.') counts[k]++;
        }
    }
    printf("  adapter: %s, %d modules (%d U-Net, %d text encoder, %d conv/LoCon, %d DoRA), %lld parameters\n",
           sl_adapter_format_name(fmt), ad.n, n_unet, n_te, n_conv, n_dora, (long long)sl_adapter_n_params(&ad));
    if (n_loha || n_lokr) {   /* scales differ per module and are inside the deltas */
        float smin = INFINITY, smax = -INFINITY;
        for (int i = 0; i < ad.n; i++) {
            if (ad.mods[i].lyco_scale < smin) smin = ad.mods[i].lyco_scale;
            if (ad.mods[i].lyco_scale > smax) smax = ad.mods[i].lyco_scale;
        }
        printf("  LyCORIS: %d LoHa, %d LoKr modules (read as dense deltas: the parameter count above is theirs)\n  rank: %lld",
               n_loha, n_lokr, (long long)rmin);
        if (rmax != rmin) printf("..%lld", (long long)rmax);
        if (rmin == 0) printf(" (0: a LoKr with both Kronecker factors full)");
        printf(", scale (alpha/rank): %g", smin);
        if (smax != smin) printf("..%g", smax);
        printf("\n  targets:");
        for (int k = 0; k < 16; k++)
            if (counts[k]) printf(" %s x%d", kinds[k], counts[k]);
        printf("\n");
    } else if (ad.n) {
        printf("  rank: %lld", (long long)rmin);
        if (rmax != rmin) printf("..%lld", (long long)rmax);
        printf(", alpha: %g", amin);
        if (amax != amin) printf("..%g", amax);
        printf("%s\n  targets:", ad.rslora ? " (rsLoRA: scale alpha/sqrt(rank))" : " (scale alpha/rank)");
        for (int k = 0; k < 16; k++)
            if (counts[k]) printf(" %s x%d", kinds[k], counts[k]);
        printf("\n");
    }
    sl_adapter_free(&ad);
}

int cmd_inspect(int argc, char **argv) {
    const char *all = NULL, *tensors = NULL;
    const CliOpt opts[] = {
        {"--tensors", NULL, "list tensors (the first 50 of each file)", &tensors, 0},
        {"--all", NULL, "list every tensor", &all, 0},
        {0},
    };
    const char *pos[1];
    int npos;
    cli_parse("inspect", "PATH [--tensors] [--all]", opts, argc, argv, pos, 1, &npos);
    if (npos != 1) {
        cli_usage(stderr, "inspect", "PATH [--tensors] [--all]", opts);
        return 2;
    }
    const char *path = pos[0];
    int list = tensors || all, max_list = all ? 1 << 30 : 50;
    SlCtx ctx;
    cli_ctx_init(&ctx, 0);
    if (sl_path_is_dir(path)) {
        SlModelLayout l = sl_model_layout(path);
        printf("%s\n  recognized as: %s\n", path, sl_model_layout_name(l));
        int bad = 0;
        if (l == SL_LAYOUT_DIFFUSERS) {
            const char *parts[] = {"text_encoder", "tokenizer", "unet", "vae", "scheduler"};
            char p[4096];
            for (size_t i = 0; i < sizeof parts / sizeof parts[0]; i++)
                if (sl_path_is_dir(sl_path_join(p, sizeof p, path, parts[i]))) bad |= inspect_component(p, parts[i], list, max_list);
                else printf("  %s/: missing\n", parts[i]);
        } else if (l == SL_LAYOUT_COMPONENT) {
            bad = inspect_component(path, ".", list, max_list);
        } else {
            char p[4096];
            if (sl_path_is_file(sl_path_join(p, sizeof p, path, "vocab.json"))) bad = inspect_tokenizer(path);
            else {
                fprintf(stderr, "stylora inspect: error: %s: not a model folder (no model_index.json, config.json or vocab.json)\n", path);
                return 1;
            }
        }
        return bad;
    }
    size_t len = strlen(path);
    if (len > 5 && strcmp(path + len - 5, ".json") == 0) {
        printf("%s\n", path);
        SlConfig cfg;
        if (sl_config_load(&cfg, path, &ctx) != SL_OK) return cli_fail("inspect", &ctx);
        sl_config_free(&cfg);
        print_config_summary(path);
        return 0;
    }
    SlWeights w;
    if (sl_weights_open_file(&w, path, &ctx) != SL_OK) return cli_fail("inspect", &ctx);
    print_file(&w.files[0], list, max_list);
    int is_adapter = strstr(recognize_file(&w.files[0]), "adapter") != NULL;
    sl_weights_close(&w);
    if (is_adapter) print_adapter_summary(path);
    return 0;
}
