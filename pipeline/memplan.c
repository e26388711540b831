/* memplan.c - the rows of a memory plan, and its prediction from a training run's
 * settings before the model loads; see memplan.h and train.h. */
#include "pipeline/memplan.h"

#include <ctype.h>
#include <dirent.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "core/outpath.h"
#include "pipeline/half.h"
#include "pipeline/quant.h"
#include "pipeline/train.h"
#include "styles/adapter_internal.h" /* sl_site_hook_cache_floats: the caches sl_adapter_set_apply makes */

void sl_mem_plan_add(SlMemPlan *p, const char *label, double bytes) {
    if (p->n >= SL_MEMPLAN_MAX_ROWS) return;
    if (p->n == SL_MEMPLAN_MAX_ROWS - 1) { /* the last slot says rows were dropped */
        snprintf(p->rows[p->n].label, sizeof p->rows[p->n].label, "(more rows than the plan holds)");
        p->rows[p->n++].bytes = 0;
        return;
    }
    snprintf(p->rows[p->n].label, sizeof p->rows[p->n].label, "%s", label);
    p->rows[p->n++].bytes = bytes;
}

void sl_mem_plan_from_parts(SlMemPlan *plan, const SlMemParts *m) {
    plan->n = 0;
    char l[96];
    const int nf4 = m->unet_nf4 > 0, half = m->unet_fp16 > 0 || m->unet_bf16 > 0;
    if (m->full) {
        sl_mem_plan_add(plan, "U-Net weights, fp32 (trained: --full)", m->unet_fp32);
    } else {
        sl_mem_plan_add(plan, nf4 || half ? "frozen U-Net weights, fp32 (norms, biases, the rest)"
                                          : "frozen U-Net weights, fp32", m->unet_fp32);
        if (m->unet_fp16 > 0) sl_mem_plan_add(plan, "frozen U-Net weights, fp16 (linears+convs)", m->unet_fp16);
        if (m->unet_bf16 > 0) sl_mem_plan_add(plan, "frozen U-Net weights, bf16 (linears+convs)", m->unet_bf16);
        if (nf4) {
            sl_mem_plan_add(plan, "frozen U-Net weights, NF4 packed + absmax (linears)", m->unet_nf4);
            sl_mem_plan_add(plan, "NF4 dequantization tile", m->nf4_tile);
        }
    }
    sl_mem_plan_add(plan, "text encoder weights, fp32", m->text_encoder);
    sl_mem_plan_add(plan, "VAE weights, fp32", m->vae);
    if (m->full) sl_mem_plan_add(plan, "trainable parameters (= the U-Net weights above)", 0);
    else sl_mem_plan_add(plan, "trainable parameters, fp32", m->trainable);
    sl_mem_plan_add(plan, "gradients, fp32", m->grads);
    if (m->grad_sum > 0) sl_mem_plan_add(plan, "gradient sum over micro-batches, double", m->grad_sum);
    sl_mem_plan_add(plan, "optimizer state (AdamW m, v)", m->optimizer);
    snprintf(l, sizeof l, "activations (no checkpointing), U-Net plan for %lld images", (long long)m->plan_batch);
    sl_mem_plan_add(plan, l, m->unet_acts);
    if (!m->full) sl_mem_plan_add(plan, "adapter hook caches", m->adapter_caches);
    snprintf(l, sizeof l, "step buffers, micro-batch %lld", (long long)m->micro);
    sl_mem_plan_add(plan, l, m->step_buffers);
    sl_mem_plan_add(plan, "VAE encoder work buffers (set-up)", m->vae_encode_acts);
    if (m->vae_decode_acts > 0) sl_mem_plan_add(plan, "VAE decoder work buffers (samples)", m->vae_decode_acts);
    sl_mem_plan_add(plan, "text encoder work buffers", m->text_encoder_acts);
    snprintf(l, sizeof l, "latent cache (%lld images)", (long long)m->images);
    sl_mem_plan_add(plan, l, m->latent_cache);
    sl_mem_plan_add(plan, "text cache (captions + the empty one)", m->text_cache);
    sl_mem_plan_add(plan, "program, libraries, threads", SL_MEMPLAN_PROGRAM_BYTES);
    sl_mem_plan_add(plan, "U-Net weight files mapped " SL_MEMPLAN_TRANSIENT, m->mapped_files);
    /* loading: the program, every weight arena and the U-Net's mapped files (it loads last) */
    const double weights = m->unet_fp32 + m->unet_fp16 + m->unet_bf16 + m->unet_nf4 + m->nf4_tile + m->text_encoder + m->vae;
    const double load = SL_MEMPLAN_PROGRAM_BYTES + weights + m->mapped_files;
    const double train = sl_mem_plan_persistent(plan);
    plan->predicted_peak = train > load ? train : load;
}

double sl_mem_plan_persistent(const SlMemPlan *plan) {
    double s = 0;
    for (int i = 0; i < plan->n; i++)
        if (!strstr(plan->rows[i].label, SL_MEMPLAN_TRANSIENT)) s += plan->rows[i].bytes;
    return s;
}

double sl_mem_available(void) {
    FILE *f = fopen("/proc/meminfo", "r");
    if (!f) return 0;
    char line[256];
    double kb = 0;
    while (fgets(line, sizeof line, f))
        if (sscanf(line, "MemAvailable: %lf kB", &kb) == 1) break;
    fclose(f);
    return kb * 1024.0;
}

SlStatus sl_mem_size_parse(const char *s, const char *opt, double *bytes, SlCtx *ctx) {
    char *end = NULL;
    const double v = s && *s && !isspace((unsigned char)*s) ? strtod(s, &end) : NAN;
    double mul = 1;
    if (end && *end) {
        switch (toupper((unsigned char)*end)) {
        case 'K': mul = 1024.0; break;
        case 'M': mul = 1024.0 * 1024; break;
        case 'G': mul = 1024.0 * 1024 * 1024; break;
        case 'T': mul = 1024.0 * 1024 * 1024 * 1024; break;
        case 'B': mul = 1; end--; break;
        default: end = NULL;
        }
        if (end) {
            end++;
            if (!strcasecmp(end, "iB") || !strcasecmp(end, "B")) end += strlen(end);
            if (*end) end = NULL;
        }
    }
    if (!end || !(v > 0) || !isfinite(v) || v * mul < 1)
        return sl_fail(ctx, SL_ERR_ARG, "%s '%s': a size such as 8G, 3500M or 2GiB (K, M, G, T: powers of 1024)", opt,
                       s ? s : "");
    *bytes = v * mul;
    return SL_OK;
}

/* ---- the prediction ---- */

/* Bytes of the *.safetensors files in dir (what mapping them all reads). */
static double safetensors_bytes(const char *dir) {
    DIR *d = opendir(dir);
    if (!d) return 0;
    double total = 0;
    struct dirent *e;
    while ((e = readdir(d))) {
        const size_t n = strlen(e->d_name);
        if (n < 12 || strcmp(e->d_name + n - 12, ".safetensors")) continue;
        char p[4400];
        struct stat sb;
        snprintf(p, sizeof p, "%s/%s", dir, e->d_name);
        if (stat(p, &sb) == 0) total += (double)sb.st_size;
    }
    closedir(d);
    return total;
}

/* What the U-Net's load maps: its folder's weight files, or the whole single file. */
double sl_mem_mapped_bytes(const char *model) {
    if (!sl_path_is_dir(model)) {
        struct stat sb;
        return stat(model, &sb) == 0 ? (double)sb.st_size : 0;
    }
    char p[4200];
    snprintf(p, sizeof p, "%s/unet", model);
    return safetensors_bytes(p);
}

/* The step buffers of sl_trainer_init: six latent-sized, the text, three per-image
 * scalars and the epoch's order. */
double sl_mem_step_buffer_bytes(int64_t micro, int64_t nl, int64_t nt, int64_t samples) {
    const size_t B = (size_t)micro;
    return (double)(6 * sl_align_up(B * (size_t)nl * sizeof(float)) + sl_align_up(B * (size_t)nt * sizeof(float)) +
                    3 * sl_align_up(B * sizeof(float)) + (size_t)samples * sizeof(int64_t));
}

static double unet_fp32_bytes(const SlUNet *u) {
    size_t b = 0;
    for (int i = 0; i < u->n_params; i++)
        b += sl_align_up((size_t)sl_shape_numel(u->params[i].ndim, u->params[i].shape) * sizeof(float));
    return (double)b;
}

/* Splits the U-Net arena by dtype (the split of a U-Net from sl_unet_init_shapes). */
SlStatus sl_mem_unet_split(SlUNet *shapes, int nf4, int half, const char *which, int dq, double total, SlMemParts *m,
                           SlCtx *ctx) {
    if (nf4) {
        size_t t, q, tile;
        SL_TRY(sl_unet_nf4_bytes(shapes, which, dq, &t, &q, &tile, ctx));
        m->unet_nf4 = (double)q;
        m->nf4_tile = (double)tile;
        m->unet_fp32 = (total > 0 ? total : (double)t) - m->unet_nf4 - m->nf4_tile;
    } else if (half) {
        size_t t, h;
        SL_TRY(sl_unet_half_bytes(shapes, &t, &h, ctx));
        if (half == SL_HALF_BF16) m->unet_bf16 = (double)h;
        else m->unet_fp16 = (double)h;
        m->unet_fp32 = (total > 0 ? total : (double)t) - (double)h;
    } else {
        m->unet_fp32 = total > 0 ? total : unet_fp32_bytes(shapes);
    }
    return SL_OK;
}

/* Trainable parameters, gradients, optimizer state and adapter caches of c's adapter on
 * a U-Net whose rows are planned (sl_unet_plan_bytes): the adapter (kilobytes to a few MB)
 * is really made, as sl_trainer_init makes it, then freed. */
static SlStatus adapter_parts(SlUNet *u, const SlTrainConfig *c, SlMemParts *m, SlCtx *ctx) {
    double n = 0, opt = 0;
    if (c->full) {
        for (int i = 0; i < u->n_params; i++) {
            const size_t k = (size_t)sl_shape_numel(u->params[i].ndim, u->params[i].shape);
            n += (double)k;
            opt += 2.0 * (double)sl_align_up(k * sizeof(float));
        }
        m->trainable = 0; /* the weights themselves (unet_fp32) */
        m->grads = unet_fp32_bytes(u);
    } else {
        SlSites sites;
        SlAdapter ad;
        memset(&ad, 0, sizeof ad);
        sl_sites_init(&sites);
        SlStatus st = sl_sites_add_unet(&sites, u, ctx);
        SlAdapterOpts ao = sl_adapter_opts_default();
        ao.targets = c->targets;
        ao.rank = c->rank;
        ao.conv_rank = c->conv_rank;
        ao.alpha = c->alpha > 0 ? c->alpha : (float)c->rank;
        ao.rslora = c->rslora;
        ao.dora = 0; /* DoRA's magnitudes are read from the base weights, which are not here: counted below */
        if (!st) st = sl_adapter_create(&ad, &sites, &ao, ctx);
        double caches = 0;
        for (int k = 0; !st && k < ad.n; k++) {
            const SlLoraMod *lm = &ad.mods[k];
            const int64_t na = lm->r * lm->I * lm->k * lm->k, nb = lm->O * lm->r, nm = c->dora ? lm->O : 0;
            n += (double)(na + nb + nm);
            opt += 2.0 * (double)(sl_align_up((size_t)na * 4) + sl_align_up((size_t)nb * 4) + (nm ? sl_align_up((size_t)nm * 4) : 0));
            const SlSite *site = &sites.v[sl_sites_find(&sites, lm->name)];
            caches += (double)sl_site_hook_cache_floats(site, &lm, 1, c->dora, c->dropout > 0) * sizeof(float);
        }
        sl_adapter_free(&ad);
        sl_sites_free(&sites);
        SL_TRY(st);
        m->trainable = n * sizeof(float);
        m->grads = n * sizeof(float);
        m->adapter_caches = caches;
    }
    const int64_t micro = c->micro_batch > 0 ? c->micro_batch : c->batch;
    m->grad_sum = micro < c->batch ? n * sizeof(double) : 0;
    m->optimizer = opt;
    return SL_OK;
}

SlStatus sl_train_predict_memory(const SlTrainConfig *c, SlMemPlan *plan, SlCtx *ctx) {
    memset(plan, 0, sizeof *plan);
    if (!c->model || !c->data) return sl_fail(ctx, SL_ERR_ARG, "memory plan: needs the model and the data folder");
    const int folder = sl_path_is_dir(c->model);
    const char *cfg_dir = folder ? c->model : c->config_dir;
    if (!cfg_dir)
        return sl_fail(ctx, SL_ERR_ARG, "%s: a single-file checkpoint carries no configs; give --model-config DIR", c->model);
    char p[4400];
    SlUNetConfig ucfg;
    SlVaeConfig vcfg;
    SlClipConfig ccfg;
    snprintf(p, sizeof p, "%s/unet/config.json", cfg_dir);
    SL_TRY(sl_unet_config_load(&ucfg, p, ctx));
    snprintf(p, sizeof p, "%s/vae/config.json", cfg_dir);
    SL_TRY(sl_vae_config_load(&vcfg, p, ctx));
    snprintf(p, sizeof p, "%s/text_encoder/config.json", cfg_dir);
    SL_TRY(sl_clip_config_load(&ccfg, p, ctx));
    const int64_t f = sl_vae_downscale(&vcfg), R = c->resolution ? c->resolution : vcfg.sample_size;
    const int64_t down = f << (ucfg.n_blocks - 1);
    if (R < down || R % down)
        return sl_fail(ctx, SL_ERR_ARG, "resolution %lld must be a multiple of %lld for this model", (long long)R, (long long)down);
    const int64_t h = R / f, C = vcfg.latent_channels, T = ccfg.P, D = ccfg.D, nl = C * h * h, nt = T * D;
    const int nflip = c->flip ? 2 : 1;
    /* the data folder: how many images the caches hold, with repeats for the epoch order */
    SlDataset ds;
    SlDataOpts dopts = {c->caption, c->trigger, 0};
    SL_TRY(sl_dataset_scan(&ds, c->data, &dopts, ctx));
    int64_t samples = 0;
    for (int i = 0; i < ds.n; i++) samples += ds.items[i].repeats;
    SlMemParts m;
    memset(&m, 0, sizeof m);
    m.full = c->full;
    m.images = ds.n;
    sl_dataset_free(&ds);
    m.micro = c->micro_batch > 0 ? c->micro_batch : c->batch;
    /* set-up plans the U-Net for max(micro, 2) (guided samples) and its arena is zeroed,
     * so resident, until step 1 re-plans it for the micro-batch; the adapter caches are
     * sized (and zeroed) from that plan */
    m.plan_batch = m.micro > 2 ? m.micro : 2;
    SlUNet u;
    SL_TRY(sl_unet_init_shapes(&u, &ucfg, ctx));
    /* the base as sl_trainer_init / sl_model_load choose it: --base, else a pre-quantized
     * folder stays NF4 and an all-F16 file is held as fp16 (LoRA without DoRA) */
    int nf4 = c->base && !strcmp(c->base, "nf4");
    int half = c->base && !strcmp(c->base, "fp16") ? SL_HALF_FP16 : c->base && !strcmp(c->base, "bf16") ? SL_HALF_BF16 : 0;
    char which[256];
    snprintf(which, sizeof which, "%s", c->nf4_layers ? c->nf4_layers : SL_NF4_DEFAULT_LAYERS);
    int dq = c->nf4_double_quant;
    SlStatus st = SL_OK;
    if (folder && !c->base) {
        SlWeights w;
        snprintf(p, sizeof p, "%s/unet", c->model);
        st = sl_weights_open_dir(&w, p, ctx); /* (headers only: the data pages are not read) */
        int pre = 0;
        const char *layers = NULL;
        if (!st) st = sl_weights_nf4_probe(&w, &pre, &layers, ctx);
        if (!st && pre && !c->base) {
            nf4 = 1;
            dq = 0;
            snprintf(which, sizeof which, "%s", layers ? layers : SL_NF4_DEFAULT_LAYERS);
        } else if (!st && !c->base && !c->full && !c->dora && sl_unet_weights_all_f16(&u, &w)) {
            half = SL_HALF_FP16;
        }
        if (!st) sl_weights_close(&w);
    }
    if (!st) st = sl_mem_unet_split(&u, nf4, half, which, dq, 0, &m, ctx);
    size_t acts = 0;
    if (!st) st = sl_unet_plan_bytes(&u, m.plan_batch, h, h, T, &acts, ctx);
    if (!st) st = adapter_parts(&u, c, &m, ctx);
    sl_unet_free(&u);
    SL_TRY(st);
    m.unet_acts = (double)acts;
    m.text_encoder = (double)sl_clip_param_count(&ccfg) * sizeof(float);
    m.vae = (double)sl_vae_param_count(&vcfg) * sizeof(float);
    m.step_buffers = sl_mem_step_buffer_bytes(m.micro, nl, nt, samples);
    m.vae_encode_acts = (double)sl_vae_activation_plan_bytes(&vcfg, 0, 1, R, R, 0);
    if (c->sample_every > 0 && c->n_sample_prompts > 0)
        m.vae_decode_acts = (double)sl_vae_activation_plan_bytes(&vcfg, 1, 1, h, h, 0);
    m.text_encoder_acts = (double)sl_clip_acts_bytes(&ccfg, 1, T);
    m.latent_cache = 2.0 * (double)sl_align_up((size_t)(m.images * nflip * nl) * sizeof(float));
    m.text_cache = (double)(m.images + 1) * (double)nt * sizeof(float);
    m.mapped_files = sl_mem_mapped_bytes(c->model);
    sl_mem_plan_from_parts(plan, &m);
    return SL_OK;
}

/* ---- fitting a limit ---- */

static SlStatus predict_with(const SlTrainConfig *c, double *peak, SlCtx *ctx) {
    SlMemPlan p;
    SL_TRY(sl_train_predict_memory(c, &p, ctx));
    *peak = p.predicted_peak;
    return SL_OK;
}

static void advice_add(SlMemPlan *plan, const char *setting, double peak) {
    const size_t n = strlen(plan->advice);
    snprintf(plan->advice + n, sizeof plan->advice - n, "%s%s (predicted %.0f MiB)", n ? "; " : "", setting,
             peak / (1024.0 * 1024));
}

SlStatus sl_train_fit_memory(SlTrainConfig *c, double limit, int pick_micro, SlMemPlan *plan, int *fits, SlCtx *ctx) {
    SL_TRY(sl_train_predict_memory(c, plan, ctx));
    plan->available = limit;
    *fits = !(limit > 0) || plan->predicted_peak <= limit;
    if (*fits) return SL_OK;
    const double over = plan->predicted_peak;
    SlTrainConfig t = *c;
    double peak;
    /* the micro-batch: the largest divisor of the batch below the current one that fits */
    const int64_t cur = c->micro_batch > 0 ? c->micro_batch : c->batch;
    int64_t best = 0;
    double best_peak = 0;
    for (int64_t mb = cur - 1; mb >= 1 && !best; mb--) {
        if (c->batch % mb) continue;
        t.micro_batch = mb;
        SL_TRY(predict_with(&t, &peak, ctx));
        if (peak <= limit) best = mb, best_peak = peak;
    }
    if (best && pick_micro) {
        c->micro_batch = best;
        SL_TRY(sl_train_predict_memory(c, plan, ctx));
        plan->available = limit;
        snprintf(plan->advice, sizeof plan->advice, "picked --micro-batch %lld: predicted %.0f MiB of %.0f MiB (the "
                 "whole batch needed %.0f MiB)", (long long)best, plan->predicted_peak / (1024.0 * 1024),
                 limit / (1024.0 * 1024), over / (1024.0 * 1024));
        *fits = 1;
        return SL_OK;
    }
    plan->advice[0] = '\0';
    char set[64];
    snprintf(set, sizeof set, "--micro-batch %lld", (long long)best);
    if (best) advice_add(plan, set, best_peak);
    const char *bases[2] = {"fp16", "nf4"};
    for (int b = 0; b < 2 && !c->full && !c->dora; b++) {
        if (c->base && !strcmp(c->base, bases[b])) continue;
        t = *c;
        t.base = bases[b];
        if (predict_with(&t, &peak, ctx) == SL_OK && peak <= limit) {
            snprintf(set, sizeof set, "--base %s", bases[b]);
            advice_add(plan, set, peak);
        }
        sl_ctx_clear(ctx);
    }
    /* a smaller resolution: the largest multiple of the model's size step that fits */
    char p[4400];
    SlVaeConfig vcfg;
    SlUNetConfig ucfg;
    const char *cfg_dir = sl_path_is_dir(c->model) ? c->model : c->config_dir;
    snprintf(p, sizeof p, "%s/vae/config.json", cfg_dir);
    SlStatus st = sl_vae_config_load(&vcfg, p, ctx);
    snprintf(p, sizeof p, "%s/unet/config.json", cfg_dir);
    if (!st) st = sl_unet_config_load(&ucfg, p, ctx);
    if (!st) {
        const int64_t step = (int64_t)sl_vae_downscale(&vcfg) << (ucfg.n_blocks - 1);
        const int64_t R = c->resolution ? c->resolution : vcfg.sample_size;
        t = *c;
        for (int64_t r = (R - 1) / step * step; r >= step; r -= step) {
            t.resolution = r;
            if (predict_with(&t, &peak, ctx) != SL_OK) break;
            if (peak <= limit) {
                snprintf(set, sizeof set, "--resolution %lld", (long long)r);
                advice_add(plan, set, peak);
                break;
            }
        }
    }
    sl_ctx_clear(ctx);
    if (!plan->advice[0])
        snprintf(plan->advice, sizeof plan->advice, "no --micro-batch, --base fp16|nf4 or smaller --resolution fits "
                 "alone; try a smaller --rank or fewer --targets, or free memory");
    return SL_OK;
}
