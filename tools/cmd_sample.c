/* cmd_sample.c - `stylora sample`: images from prompts.
 *
 * One job = prompt, negative prompt, seed, size, steps, sampler, guidance and
 * adapters. Jobs come from --prompt (with --batch images) or from a prompts
 * file, one job a line (see sample_jobs.c). The base model is loaded once;
 * adapters are attached or merged per job and removed after it, leaving the
 * base weights bit-exact. Each image is a PNG with the generation parameters
 * in a "parameters" text chunk in A1111's form, so other tools read them, and
 * --from-png reads them back (sample_infotext.c).
 */
#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <time.h>

#include "cli.h"
#include "core/image.h"
#include "core/progress.h"
#include "core/rng.h"
#include "pipeline/denoise.h"
#include "pipeline/model.h"
#include "pipeline/quant.h" /* [nf4] */
#include "sample_jobs.h"

typedef struct PreviewCtx {
    SlModel *m;
    const SampleJob *job;
    const char *out_dir;
    int every, image_index, b;
    int64_t h, w;
    SlProgress *bar;
    SlCtx *ctx;
} PreviewCtx;

/* latents [B,C,h,w] -> 8-bit images, one per batch item, into imgs[B]. */
static SlStatus decode_images(SlModel *m, const float *latents, int64_t B, int64_t h, int64_t w, SlImage *imgs,
                              int tile, SlCtx *ctx) {
    const SlVaeConfig *vc = &m->vae_cfg;
    int64_t C = vc->latent_channels, f = sl_vae_downscale(vc);
    size_t n = (size_t)(B * C * h * w), ni = (size_t)(B * vc->out_channels * h * f * w * f);
    float *z = sl_alloc(n * sizeof(float)), *img = sl_alloc(ni * sizeof(float));
    SlStatus st = (!z || !img) ? sl_fail(ctx, SL_ERR_NOMEM, "out of memory decoding") : SL_OK;
    for (size_t i = 0; !st && i < n; i++) z[i] = (float)(latents[i] / vc->scaling_factor + vc->shift_factor);
    if (!st) st = tile ? sl_vae_decode_tiled(m->vae, z, B, h, w, tile, tile / 4, img, ctx)
                       : sl_vae_decode(m->vae, z, B, h, w, img, ctx);
    size_t per = ni / (size_t)B;
    for (int64_t b = 0; !st && b < B; b++)
        st = sl_image_from_chw(&imgs[b], img + (size_t)b * per, vc->out_channels, (int)(h * f), (int)(w * f), ctx);
    sl_free(z);
    sl_free(img);
    return st;
}

static void on_step(void *user, int step, int n_steps, const float *latents) {
    PreviewCtx *p = user;
    char extra[64];
    snprintf(extra, sizeof extra, "image %d", p->image_index + 1);
    sl_progress_update(p->bar, step + 1, extra);
    if (p->every <= 0 || (step + 1) % p->every != 0 || step + 1 == n_steps) return;
    SlImage img = {0};
    SlCtx ctx;
    sl_ctx_init(&ctx);
    if (decode_images(p->m, latents, 1, p->h, p->w, &img, 0, &ctx) == SL_OK) {
        char path[4096];
        snprintf(path, sizeof path, "%s/preview-%05d-step%03d.png", p->out_dir, p->image_index, step + 1);
        if (sl_image_write_png(&img, path, NULL, 0, &ctx) != SL_OK) sl_log(p->ctx, SL_LOG_WARN, "%s", ctx.msg);
    } else {
        sl_log(p->ctx, SL_LOG_WARN, "preview: %s", ctx.msg);
    }
    sl_image_free(&img);
}

static void image_path(char *buf, size_t n, const char *dir, int index, uint64_t seed) {
    snprintf(buf, n, "%s/%05d-%llu.png", dir, index, (unsigned long long)seed);
}

static SlStatus run_job(SlModel *m, SampleRun *run, const SampleJob *j, SlImage **all, int *n_all, SlCtx *ctx) {
    int64_t f = sl_vae_downscale(&m->vae_cfg), down = 1 << (m->unet_cfg.n_blocks - 1);
    if (j->width % (f * down) || j->height % (f * down))
        return sl_fail(ctx, SL_ERR_ARG, "%s: size %dx%d must be a multiple of %lld", j->where, j->width, j->height,
                       (long long)(f * down));
    int64_t h = j->height / f, w = j->width / f, C = m->unet_cfg.in_channels, T = sl_model_text_len(m),
            D = m->clip_cfg.D;
    if (D != m->unet_cfg.cross_dim)
        return sl_fail(ctx, SL_ERR_SHAPE, "text encoder width %lld does not match the U-Net's cross_attention_dim %lld",
                       (long long)D, (long long)m->unet_cfg.cross_dim);
    SL_TRY(sample_adapters_apply(run, m, j, ctx));
    char lora_hash[SAMPLE_MAX_LORA][13];
    for (int i = 0; i < j->n_lora; i++) SL_TRY(sample_lora_hash(run, j->lora[i].path, lora_hash[i], ctx));
    sample_check_lora_hashes(run, j, (const char(*)[13])lora_hash, ctx);
    size_t nlat = (size_t)(C * h * w), ntxt = (size_t)(T * D);
    float *lat = sl_alloc(nlat * sizeof(float)), *cond = sl_alloc(ntxt * sizeof(float)), *unc = sl_alloc(ntxt * sizeof(float));
    SlStatus st = (!lat || !cond || !unc) ? sl_fail(ctx, SL_ERR_NOMEM, "out of memory") : SL_OK;
    const char *pp[1] = {j->prompt}, *np[1] = {j->negative};
    if (!st) st = sl_model_encode_prompts(m, pp, 1, run->clip_skip, cond, NULL, ctx);
    if (!st && j->cfg > 1) st = sl_model_encode_prompts(m, np, 1, run->clip_skip, unc, NULL, ctx);
    for (int b = 0; !st && b < j->batch; b++) {
        uint64_t seed = j->seed + (uint64_t)b;
        /* each image's noise depends on its own seed only: image b of a batch
         * equals a batch-of-one run with seed + b (as A1111 numbers them) */
        sl_rng_normal(lat, (int64_t)nlat, seed, 0, 0);
        SlProgress bar;
        char label[64];
        snprintf(label, sizeof label, "sampling %d/%d", run->image_index + 1, run->n_images);
        sl_progress_begin(&bar, label, j->steps, stderr, run->quiet);
        PreviewCtx pc = {m, j, run->out_dir, run->preview, run->image_index, b, h, w, &bar, ctx};
        SlDenoiseOpts o = {.steps = j->steps, .guidance = j->cfg, .seed = seed, .on_step = on_step, .user = &pc};
        o.sampler.kind = j->sampler;
        o.sampler.karras = j->karras;
        o.sampler.eta = j->eta;
        st = sl_denoise(&m->unet, &m->sched, lat, cond, j->cfg > 1 ? unc : NULL, 1, h, w, T, &o, ctx);
        sl_progress_end(&bar);
        SlImage img = {0};
        if (!st) st = decode_images(m, lat, 1, h, w, &img, run->vae_tile, ctx);
        if (!st) {
            char path[4096], params[SAMPLE_WRITTEN_MAX + 8192];
            image_path(path, sizeof path, run->out_dir, run->image_index, seed);
            sample_format_parameters(params, sizeof params, run, sample_model_name(m->path), j, seed,
                                     (const char(*)[13])lora_hash);
            SlImageText text[1] = {{(char *)"parameters", params}};
            st = sl_image_write_png(&img, path, text, 1, ctx);
            if (!st && !run->quiet) printf("%s\n", path);
        }
        if (!st && run->grid) {
            SlImage *grown = realloc(*all, (size_t)(*n_all + 1) * sizeof(SlImage));
            if (!grown) st = sl_fail(ctx, SL_ERR_NOMEM, "out of memory");
            else {
                *all = grown;
                (*all)[(*n_all)++] = img;
                img.data = NULL;
            }
        }
        sl_image_free(&img);
        run->image_index++;
    }
    sl_free(lat);
    sl_free(cond);
    sl_free(unc);
    SlStatus st2 = sample_adapters_remove(run, m, ctx);
    return st ? st : st2;
}

/* The image names run_job will write (and grid.png), checked before the model loads:
 * a folder or FIFO in their place would otherwise fail after sampling. */
static void check_outputs(const SampleArgs *a, const SampleJob *jobs, int n_jobs) {
    char path[4096];
    int index = 0;
    if (!sl_path_is_dir(a->out)) return; /* created new: nothing in the way */
    for (int i = 0; i < n_jobs; i++)
        for (int b = 0; b < jobs[i].batch; b++, index++) {
            image_path(path, sizeof path, a->out, index, jobs[i].seed + (uint64_t)b);
            cli_check_out_file("sample", "--out", path);
        }
    snprintf(path, sizeof path, "%s/grid.png", a->out);
    if (a->grid) cli_check_out_file("sample", "--out", path);
}

static int sample_main(SampleArgs *ap) {
    SampleArgs a = *ap;
    SlCtx ctx;
    cli_ctx_init(&ctx, a.quiet != NULL);
    if (a.from_png) {
        SlStatus fst = sample_args_from_png(&a, &ctx);
        ap->png = a.png; /* the caller frees it */
        if (fst != SL_OK) return cli_fail("sample", &ctx);
    }
    cli_check_out_dir("sample", "--out", a.out);
    SampleJob *jobs = NULL;
    int n_jobs = 0;
    if (sample_jobs_build(&a, &jobs, &n_jobs, &ctx) != SL_OK) return cli_fail("sample", &ctx);
    check_outputs(&a, jobs, n_jobs);
    if (mkdir(a.out, 0755) != 0 && errno != EEXIST) {
        fprintf(stderr, "stylora sample: error: %s: cannot create output folder: %s\n", a.out, strerror(errno));
        free(jobs);
        return 1;
    }
    SlModel m;
    /* by default an F16 checkpoint's U-Net stays binary16 (exact, half the memory; pipeline/half.h) */
    SlModelOpts mo = {.config_dir = a.config, .unet_dense = a.base && !strcmp(a.base, "fp32"), .unet_half = a.base && !strcmp(a.base, "fp16"),
                      .unet_half_if_f16 = !a.base, .unet_bf16 = a.base && !strcmp(a.base, "bf16")}; /* [nf4] */
    if (cli_kernels_from_env(&mo.kernels, &ctx) != SL_OK) {
        free(jobs);
        return cli_fail("sample", &ctx);
    }
    const int nf4 = a.base && !strcmp(a.base, "nf4"); /* [nf4] */
    if (a.base && !nf4 && !mo.unet_half && !mo.unet_bf16 && strcmp(a.base, "fp32")) { fprintf(stderr, "stylora sample: error: --base is fp32, fp16, bf16 or nf4\n"); free(jobs); return 2; } /* [nf4] */
    if ((nf4 ? sl_model_load_nf4(&m, a.model, &mo, a.nf4_layers, a.nf4_dq != NULL, &ctx) : sl_model_load(&m, a.model, &mo, &ctx)) != SL_OK) { /* [nf4] */
        free(jobs);
        return cli_fail("sample", &ctx);
    }
    for (int i = 0; i < n_jobs; i++) { /* default size: what the VAE was trained at */
        if (!jobs[i].width) jobs[i].width = m.vae_cfg.sample_size;
        if (!jobs[i].height) jobs[i].height = m.vae_cfg.sample_size;
    }
    SampleRun run;
    sample_run_init(&run, &a, jobs, n_jobs);
    SlStatus st = sample_model_hash(m.path, run.model_hash, &ctx);
    const char *png_hash = sample_args_png_model_hash(&a);
    if (!st && run.model_hash[0] && strlen(png_hash) == 10 && strncasecmp(png_hash, run.model_hash, 10))
        sl_log(&ctx, SL_LOG_WARN, "%s was made with model hash %s; --model %s has %s", a.from_png, png_hash, a.model,
               run.model_hash);
    SlImage *all = NULL;
    int n_all = 0;
    for (int i = 0; i < n_jobs && !st; i++) st = run_job(&m, &run, &jobs[i], &all, &n_all, &ctx);
    if (!st && a.grid && n_all) {
        SlImage grid;
        char path[4096];
        snprintf(path, sizeof path, "%s/grid.png", a.out);
        st = sample_grid(&grid, all, n_all, &ctx);
        if (!st) st = sl_image_write_png(&grid, path, NULL, 0, &ctx);
        if (!st && !run.quiet) printf("%s\n", path);
        sl_image_free(&grid);
    }
    for (int i = 0; i < n_all; i++) sl_image_free(&all[i]);
    free(all);
    sample_run_free(&run, &m);
    sl_model_free(&m);
    free(jobs);
    if (st) return cli_fail("sample", &ctx);
    return 0;
}

int cmd_sample(int argc, char **argv) {
    SampleArgs a;
    sample_args_parse(&a, argc, argv);
    int rc = sample_main(&a);
    sample_args_free(&a);
    return rc;
}
