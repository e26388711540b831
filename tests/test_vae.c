/* test_vae.c - AutoencoderKL forward against golden files.
 *
 * 1. The shared golden from the real diffusers (golden/tiny-sd1): encode and
 *    decode, tolerance VAE_GOLDEN_TOL * max|ref|.
 * 2. tests/data/vae_{2blk,3blk,4blk} from tests/reference/vae_ref.py (other
 *    block counts, group counts, layers_per_block, no quant convs / no mid
 *    attention, odd image sizes), loaded both as a diffusers folder and as a
 *    single-file `first_stage_model.*` checkpoint with LDM names.
 * 3. Banded convs (tiny work budget) equal whole-image convs; re-planning when
 *    the size changes; determinism.
 * 4. Tiled decode/encode against the PyTorch version of the same tiling
 *    (golden), and against untiled: that error is printed, only a loose
 *    bound is asserted (per-tile GroupNorm makes them differ by design).
 * 5. Config errors name the offending value.
 * 6. The SD-1.5-size VAE (random weights) decodes a 32x32 latent.
 * 7. A NaN weight in the encoder or decoder is refused at load; a huge weight that
 *    overflows at run time fails the encode or decode, naming the half.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "core/safetensors.h"
#include "core/weights.h"
#include "fixture_tiny.h"
#include "test_util.h"
#include "vae/vae.h"

/* Golden forwards: max abs error <= VAE_GOLDEN_TOL * max|ref| (fp32, different
 * accumulation order; measured ~1e-6). */
#define VAE_GOLDEN_TOL 1e-4
/* Banded vs whole-image conv: only the GEMM shapes differ. */
#define VAE_BAND_TOL 1e-5
/* Tiled vs untiled: per-tile statistics, so only a sanity bound. */
#define VAE_TILE_LOOSE 1.0

static double now_s(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

/* Reads a named tensor as f32 into a malloc'd buffer; fills shape. */
static float *read_tensor(const SlStFile *f, const char *name, int64_t *shape, int *ndim, SlCtx *ctx) {
    const SlStEntry *e = sl_st_find(f, name);
    CHECK(e != NULL, "missing %s in %s", name, f->path);
    if (!e) return NULL;
    int64_t n = sl_shape_numel(e->ndim, e->shape);
    float *d = malloc((size_t)n * sizeof(float));
    CHECK_OK(sl_st_read_f32(f, e, d, ctx), ctx);
    if (shape) memcpy(shape, e->shape, (size_t)e->ndim * sizeof(int64_t));
    if (ndim) *ndim = e->ndim;
    return d;
}

static int64_t numel4(const int64_t *s) { return s[0] * s[1] * s[2] * s[3]; }

/* Compares got with ref under tol * max|ref|; returns the relative max error. */
static double cmp_scaled(const char *what, const float *got, const float *ref, int64_t n, double tol) {
    double scale = sl_test_scale(ref, (size_t)n);
    double maxe = 0;
    for (int64_t i = 0; i < n; i++) {
        double d = fabs((double)got[i] - (double)ref[i]);
        if (!(d <= maxe)) maxe = isnan(d) ? INFINITY : d;
    }
    sl_test_close(what, got, ref, (size_t)n, tol * scale, 0.0);
    return scale > 0 ? maxe / scale : maxe;
}

/* Encodes/decodes the io file's inputs and compares. */
static void check_io(SlVae *vae, const SlStFile *io, const char *label, const char *k_img, const char *k_mean,
                     const char *k_logvar, const char *k_lat, const char *k_dec, SlCtx *ctx) {
    int64_t si[4], sm[4], sl[4], sd[4];
    float *img = read_tensor(io, k_img, si, NULL, ctx);
    float *mean_ref = read_tensor(io, k_mean, sm, NULL, ctx);
    float *lv_ref = read_tensor(io, k_logvar, NULL, NULL, ctx);
    float *lat = read_tensor(io, k_lat, sl, NULL, ctx);
    float *dec_ref = read_tensor(io, k_dec, sd, NULL, ctx);
    if (!img || !mean_ref || !lv_ref || !lat || !dec_ref) goto out;
    int64_t h, w;
    sl_vae_latent_size(sl_vae_config(vae), si[2], si[3], &h, &w);
    CHECK(h == sm[2] && w == sm[3], "%s: latent size %lldx%lld, reference %lldx%lld", label, (long long)h,
          (long long)w, (long long)sm[2], (long long)sm[3]);
    float *mean = calloc((size_t)numel4(sm), sizeof(float)), *lv = calloc((size_t)numel4(sm), sizeof(float));
    float *dec = calloc((size_t)numel4(sd), sizeof(float));
    char what[256];
    CHECK_OK(sl_vae_encode(vae, img, si[0], si[2], si[3], mean, lv, ctx), ctx);
    snprintf(what, sizeof what, "%s enc.mean", label);
    double e1 = cmp_scaled(what, mean, mean_ref, numel4(sm), VAE_GOLDEN_TOL);
    snprintf(what, sizeof what, "%s enc.logvar", label);
    double e2 = cmp_scaled(what, lv, lv_ref, numel4(sm), VAE_GOLDEN_TOL);
    CHECK_OK(sl_vae_decode(vae, lat, sl[0], sl[2], sl[3], dec, ctx), ctx);
    snprintf(what, sizeof what, "%s dec.sample", label);
    double e3 = cmp_scaled(what, dec, dec_ref, numel4(sd), VAE_GOLDEN_TOL);
    printf("     %s: max err / max|ref|: mean %.2e logvar %.2e decode %.2e\n", label, e1, e2, e3);
    /* the same with a tiny im2col budget: every 3x3 conv (stride 1 and 2) runs in row bands */
    sl_vae_set_work_budget(vae, 1500);
    CHECK_OK(sl_vae_encode(vae, img, si[0], si[2], si[3], mean, lv, ctx), ctx);
    snprintf(what, sizeof what, "%s enc.mean (banded convs)", label);
    cmp_scaled(what, mean, mean_ref, numel4(sm), VAE_GOLDEN_TOL);
    snprintf(what, sizeof what, "%s enc.logvar (banded convs)", label);
    cmp_scaled(what, lv, lv_ref, numel4(sm), VAE_GOLDEN_TOL);
    CHECK_OK(sl_vae_decode(vae, lat, sl[0], sl[2], sl[3], dec, ctx), ctx);
    snprintf(what, sizeof what, "%s dec.sample (banded convs)", label);
    cmp_scaled(what, dec, dec_ref, numel4(sd), VAE_GOLDEN_TOL);
    sl_vae_set_work_budget(vae, (size_t)1 << 24);
    CHECK_OK(sl_vae_decode(vae, lat, sl[0], sl[2], sl[3], dec, ctx), ctx);
    /* second call at the same size reuses the plan and gives the same bytes */
    float *dec2 = calloc((size_t)numel4(sd), sizeof(float));
    CHECK_OK(sl_vae_decode(vae, lat, sl[0], sl[2], sl[3], dec2, ctx), ctx);
    CHECK(memcmp(dec, dec2, (size_t)numel4(sd) * sizeof(float)) == 0, "%s: decode not deterministic", label);
    free(dec2);
    free(mean);
    free(lv);
    free(dec);
out:
    free(img);
    free(mean_ref);
    free(lv_ref);
    free(lat);
    free(dec_ref);
}

static void test_shared_golden(SlCtx *ctx) {
    char dir[900], path[1024];
    snprintf(dir, sizeof dir, "%s/golden/tiny-sd1", sl_test_shared());
    SlVaeConfig cfg;
    snprintf(path, sizeof path, "%s/vae/config.json", dir);
    CHECK_OK(sl_vae_config_load(&cfg, path, ctx), ctx);
    CHECK(cfg.n_blocks == 2 && cfg.block_out[1] == 32 && cfg.norm_num_groups == 8 && !cfg.has_shift &&
              fabs(cfg.scaling_factor - 0.18215) < 1e-12,
          "tiny-sd1 config parsed wrong");
    SlWeights w;
    snprintf(path, sizeof path, "%s/vae", dir);
    CHECK_OK(sl_weights_open_dir(&w, path, ctx), ctx);
    SlVae *vae = NULL;
    CHECK_OK(sl_vae_load(&vae, &cfg, &w, ctx), ctx);
    CHECK(sl_weights_report_unused(&w, 4, ctx) == 0, "tiny-sd1 vae: unused tensors");
    SlStFile io;
    snprintf(path, sizeof path, "%s/expected.safetensors", dir);
    CHECK_OK(sl_st_open(&io, path, ctx), ctx);
    if (vae) check_io(vae, &io, "tiny-sd1", "vae.in.image", "vae.enc.mean", "vae.enc.logvar", "vae.in.latents",
                      "vae.dec.sample", ctx);
    /* the DDIM image: decode(final_latents / scaling_factor), the pipeline's convention */
    int64_t sl[4], sd[4];
    float *lat = read_tensor(&io, "ddim.final_latents", sl, NULL, ctx);
    float *ref = read_tensor(&io, "ddim.image", sd, NULL, ctx);
    if (vae && lat && ref) {
        for (int64_t i = 0; i < numel4(sl); i++) lat[i] = (float)(lat[i] / cfg.scaling_factor);
        float *img = malloc((size_t)numel4(sd) * sizeof(float));
        CHECK_OK(sl_vae_decode(vae, lat, sl[0], sl[2], sl[3], img, ctx), ctx);
        cmp_scaled("tiny-sd1 ddim.image = decode(final_latents / scaling_factor)", img, ref, numel4(sd),
                   VAE_GOLDEN_TOL);
        free(img);
    }
    free(lat);
    free(ref);
    sl_st_close(&io);
    sl_vae_free(vae);
    sl_weights_close(&w);
}

/* Loads tests/data/vae_<name> as a folder and as an LDM single file. */
static void test_reference_config(const char *name, SlCtx *ctx) {
    char path[1024], label[128];
    const char *src = sl_test_source();
    SlVaeConfig cfg;
    snprintf(path, sizeof path, "%s/tests/data/vae_%s/config.json", src, name);
    CHECK_OK(sl_vae_config_load(&cfg, path, ctx), ctx);
    if (!strcmp(name, "4blk"))
        CHECK(cfg.n_blocks == 4 && cfg.has_shift && fabs(cfg.shift_factor - 0.1159) < 1e-12 &&
                  fabs(cfg.scaling_factor - 0.3611) < 1e-12 && !cfg.use_quant_conv && !cfg.use_post_quant_conv &&
                  !cfg.mid_block_add_attention && cfg.latent_channels == 6 && cfg.norm_num_groups == 2,
              "4blk config parsed wrong");
    SlStFile io;
    snprintf(path, sizeof path, "%s/tests/data/vae_%s_io.safetensors", src, name);
    CHECK_OK(sl_st_open(&io, path, ctx), ctx);

    /* diffusers folder */
    SlWeights w;
    snprintf(path, sizeof path, "%s/tests/data/vae_%s", src, name);
    CHECK_OK(sl_weights_open_dir(&w, path, ctx), ctx);
    SlVae *vae = NULL;
    CHECK_OK(sl_vae_load(&vae, &cfg, &w, ctx), ctx);
    CHECK(w.n_map == 0, "%s: a diffusers folder must not get a key map", name);
    CHECK(sl_weights_report_unused(&w, 4, ctx) == 0, "%s: unused tensors", name);
    snprintf(label, sizeof label, "%s diffusers", name);
    if (vae) check_io(vae, &io, label, "in.image", "enc.mean", "enc.logvar", "in.latents", "dec.sample", ctx);
    sl_vae_free(vae);
    sl_weights_close(&w);

    /* single-file LDM names under first_stage_model. */
    SlWeights file, view;
    snprintf(path, sizeof path, "%s/tests/data/vae_%s_ldm.safetensors", src, name);
    CHECK_OK(sl_weights_open_file(&file, path, ctx), ctx);
    sl_weights_view(&view, &file, SL_CKPT_VAE_PREFIX);
    vae = NULL;
    CHECK_OK(sl_vae_load(&vae, &cfg, &view, ctx), ctx);
    CHECK(view.n_map > 0, "%s: LDM names not detected", name);
    CHECK(sl_weights_report_unused(&view, 4, ctx) == 0, "%s ldm: unused tensors", name);
    snprintf(label, sizeof label, "%s single-file", name);
    if (vae) check_io(vae, &io, label, "in.image", "enc.mean", "enc.logvar", "in.latents", "dec.sample", ctx);
    sl_vae_free(vae);
    sl_weights_close(&view);
    sl_weights_close(&file);
    sl_st_close(&io);
}

/* diffusers < 0.14 attention names: rewrite vae_3blk's file with
 * query/key/value/proj_attn into the build dir, load it, check the outputs. */
static void test_deprecated_names(SlCtx *ctx) {
    char path[1024], out[1024];
    snprintf(path, sizeof path, "%s/tests/data/vae_3blk/diffusion_pytorch_model.safetensors", sl_test_source());
    snprintf(out, sizeof out, "%s/vae_3blk_deprecated.safetensors", sl_test_binary());
    SlStFile src;
    CHECK_OK(sl_st_open(&src, path, ctx), ctx);
    SlStWriter wr;
    sl_st_writer_init(&wr);
    static const char *const rep[4][2] = {
        {".to_q.", ".query."}, {".to_k.", ".key."}, {".to_v.", ".value."}, {".to_out.0.", ".proj_attn."}};
    int renamed = 0;
    for (int i = 0; i < src.n; i++) {
        const SlStEntry *e = &src.entries[i];
        char name[256];
        snprintf(name, sizeof name, "%s", e->name);
        for (int k = 0; k < 4; k++) {
            char *hit = strstr(name, rep[k][0]);
            if (!hit) continue;
            char tail[256];
            snprintf(tail, sizeof tail, "%s", hit + strlen(rep[k][0]));
            snprintf(hit, sizeof name - (size_t)(hit - name), "%s%s", rep[k][1], tail);
            renamed++;
        }
        CHECK_OK(sl_st_writer_add(&wr, name, e->dtype, e->ndim, e->shape, sl_st_data(&src, e), ctx), ctx);
    }
    CHECK(renamed == 16, "renamed %d attention tensors, want 16", renamed);
    CHECK_OK(sl_st_writer_save(&wr, out, ctx), ctx);
    sl_st_writer_free(&wr);
    sl_st_close(&src);

    SlVaeConfig cfg;
    snprintf(path, sizeof path, "%s/tests/data/vae_3blk/config.json", sl_test_source());
    CHECK_OK(sl_vae_config_load(&cfg, path, ctx), ctx);
    SlWeights w;
    CHECK_OK(sl_weights_open_file(&w, out, ctx), ctx);
    SlVae *vae = NULL;
    CHECK_OK(sl_vae_load(&vae, &cfg, &w, ctx), ctx);
    CHECK(w.n_map > 0 && sl_weights_report_unused(&w, 4, ctx) == 0, "deprecated names not mapped");
    SlStFile io;
    snprintf(path, sizeof path, "%s/tests/data/vae_3blk_io.safetensors", sl_test_source());
    CHECK_OK(sl_st_open(&io, path, ctx), ctx);
    if (vae) check_io(vae, &io, "3blk deprecated-names", "in.image", "enc.mean", "enc.logvar", "in.latents",
                      "dec.sample", ctx);
    sl_st_close(&io);
    sl_vae_free(vae);
    sl_weights_close(&w);
}

/* Banding, re-planning and tiling on the 3-block model. */
static void test_band_and_tiles(SlCtx *ctx) {
    char path[1024];
    const char *src = sl_test_source();
    SlVaeConfig cfg;
    snprintf(path, sizeof path, "%s/tests/data/vae_3blk/config.json", src);
    CHECK_OK(sl_vae_config_load(&cfg, path, ctx), ctx);
    SlWeights w;
    snprintf(path, sizeof path, "%s/tests/data/vae_3blk", src);
    CHECK_OK(sl_weights_open_dir(&w, path, ctx), ctx);
    SlVae *vae = NULL;
    CHECK_OK(sl_vae_load(&vae, &cfg, &w, ctx), ctx);
    sl_weights_close(&w);
    if (!vae) return;
    const int f = sl_vae_downscale(&cfg);  /* 4 */
    const int64_t B = 1, lc = cfg.latent_channels, h = 12, wd = 16, H = h * f, W = wd * f;
    const int64_t nl = B * lc * h * wd, ni = B * 3 * H * W;
    float *lat = malloc((size_t)nl * sizeof(float));
    float *img = malloc((size_t)ni * sizeof(float)), *img2 = malloc((size_t)ni * sizeof(float));
    float *mean = malloc((size_t)nl * sizeof(float)), *lv = malloc((size_t)nl * sizeof(float));
    float *mean2 = malloc((size_t)nl * sizeof(float)), *lv2 = malloc((size_t)nl * sizeof(float));
    /* smooth inputs (tiling artefacts are about content, not noise) */
    for (int64_t c = 0; c < lc; c++)
        for (int64_t y = 0; y < h; y++)
            for (int64_t x = 0; x < wd; x++)
                lat[(c * h + y) * wd + x] = sinf(0.4f * (float)x + 0.9f * (float)c) * cosf(0.3f * (float)y);
    for (int64_t c = 0; c < 3; c++)
        for (int64_t y = 0; y < H; y++)
            for (int64_t x = 0; x < W; x++)
                img[(c * H + y) * W + x] = 0.8f * sinf(0.1f * (float)x + (float)c) * cosf(0.07f * (float)y);

    /* whole-image reference, then the same with a tiny im2col budget (banded) */
    CHECK_OK(sl_vae_encode(vae, img, B, H, W, mean, lv, ctx), ctx);
    float *dec = malloc((size_t)ni * sizeof(float));
    CHECK_OK(sl_vae_decode(vae, lat, B, h, wd, dec, ctx), ctx);
    sl_vae_set_work_budget(vae, 3000);
    CHECK_OK(sl_vae_encode(vae, img, B, H, W, mean2, lv2, ctx), ctx);
    CHECK_OK(sl_vae_decode(vae, lat, B, h, wd, img2, ctx), ctx);
    cmp_scaled("banded conv encode mean", mean2, mean, nl, VAE_BAND_TOL);
    cmp_scaled("banded conv encode logvar", lv2, lv, nl, VAE_BAND_TOL);
    cmp_scaled("banded conv decode", img2, dec, ni, VAE_BAND_TOL);
    sl_vae_set_work_budget(vae, (size_t)1 << 24);

    /* re-plan: a smaller size, then back */
    float *small = malloc((size_t)(B * 3 * 8 * f * 8 * f) * sizeof(float));
    CHECK_OK(sl_vae_decode(vae, lat, B, 8, 8, small, ctx), ctx);
    CHECK_OK(sl_vae_decode(vae, lat, B, h, wd, img2, ctx), ctx);
    CHECK(memcmp(img2, dec, (size_t)ni * sizeof(float)) == 0, "decode after a re-plan differs");
    free(small);
    sl_vae_release_activations(vae);
    CHECK(sl_vae_activation_bytes(vae) == 0, "activations not released");
    CHECK_OK(sl_vae_decode(vae, lat, B, h, wd, img2, ctx), ctx);
    CHECK(memcmp(img2, dec, (size_t)ni * sizeof(float)) == 0, "decode after release differs");

    /* tiled decode: one tile covering everything equals untiled exactly */
    CHECK_OK(sl_vae_decode_tiled(vae, lat, B, h, wd, 16, 4, img2, ctx), ctx);
    CHECK(memcmp(img2, dec, (size_t)ni * sizeof(float)) == 0, "single-tile decode differs from decode");
    /* 8x8 latent tiles overlapping by >= 4 */
    CHECK_OK(sl_vae_decode_tiled(vae, lat, B, h, wd, 8, 4, img2, ctx), ctx);
    double scale = sl_test_scale(dec, (size_t)ni), maxe = 0, sume = 0;
    for (int64_t i = 0; i < ni; i++) {
        double d = fabs((double)img2[i] - dec[i]);
        if (!(d <= maxe)) maxe = d;
        sume += d;
    }
    printf("     tiled decode (latent %lldx%lld, tile 8, overlap 4) vs untiled: max abs err %.3g (%.1f%% of max|ref| %.3g), mean abs err %.3g\n",
           (long long)h, (long long)wd, maxe, 100 * maxe / scale, scale, sume / (double)ni);
    CHECK(maxe <= VAE_TILE_LOOSE * scale && sl_count_nonfinite(img2, (size_t)ni) == 0,
          "tiled decode too far from untiled: %.3g (scale %.3g)", maxe, scale);
    /* tiled encode: 32x32 image tiles overlapping by 16 */
    CHECK_OK(sl_vae_encode_tiled(vae, img, B, H, W, 32, 16, mean2, lv2, ctx), ctx);
    double sm = sl_test_scale(mean, (size_t)nl), em = 0, el = 0, sl = sl_test_scale(lv, (size_t)nl);
    for (int64_t i = 0; i < nl; i++) {
        em = fmax(em, fabs((double)mean2[i] - mean[i]));
        el = fmax(el, fabs((double)lv2[i] - lv[i]));
    }
    printf("     tiled encode (image %lldx%lld, tile 32, overlap 16) vs untiled: mean max err %.3g (%.1f%%), logvar max err %.3g (%.1f%%)\n",
           (long long)H, (long long)W, em, 100 * em / sm, el, 100 * el / sl);
    CHECK(em <= VAE_TILE_LOOSE * sm && el <= VAE_TILE_LOOSE * sl, "tiled encode too far from untiled");
    /* bad tile arguments */
    CHECK(sl_vae_decode_tiled(vae, lat, B, h, wd, 4, 4, img2, ctx) == SL_ERR_ARG, "overlap == tile accepted");
    CHECK(sl_vae_encode_tiled(vae, img, B, H, W, 30, 8, mean2, lv2, ctx) == SL_ERR_ARG, "tile not multiple of f");
    CHECK(sl_vae_decode(vae, lat, 0, h, wd, img2, ctx) == SL_ERR_ARG, "batch 0 accepted");

    /* sampling */
    float noise[4] = {1.0f, -1.0f, 0.5f, 0.0f}, m4[4] = {0.1f, 0.2f, 0.3f, 0.4f}, l4[4] = {0.0f, 2.0f, -2.0f, 1.0f}, z[4];
    sl_vae_sample(z, m4, l4, noise, 4);
    for (int i = 0; i < 4; i++)
        CHECK(fabsf(z[i] - (m4[i] + expf(0.5f * l4[i]) * noise[i])) < 1e-6f, "sample[%d] = %g", i, z[i]);

    free(lat); free(img); free(img2); free(mean); free(lv); free(mean2); free(lv2); free(dec);
    sl_vae_free(vae);
}

/* Tiled encode/decode against the independent PyTorch implementation of the
 * same tiling and blending (vae_ref.py: tile_starts, tile_ramp, tiled). */
static void test_tiled_golden(SlCtx *ctx) {
    char path[1024];
    const char *src = sl_test_source();
    SlVaeConfig cfg;
    snprintf(path, sizeof path, "%s/tests/data/vae_3blk/config.json", src);
    CHECK_OK(sl_vae_config_load(&cfg, path, ctx), ctx);
    SlWeights w;
    snprintf(path, sizeof path, "%s/tests/data/vae_3blk", src);
    CHECK_OK(sl_weights_open_dir(&w, path, ctx), ctx);
    SlVae *vae = NULL;
    CHECK_OK(sl_vae_load(&vae, &cfg, &w, ctx), ctx);
    sl_weights_close(&w);
    SlStFile io;
    snprintf(path, sizeof path, "%s/tests/data/vae_3blk_io.safetensors", src);
    CHECK_OK(sl_st_open(&io, path, ctx), ctx);
    int64_t sl[4], sd[4], si[4], sm[4];
    float *lat = read_tensor(&io, "tile.in.latents", sl, NULL, ctx);
    float *dec_ref = read_tensor(&io, "tile.dec", sd, NULL, ctx);
    float *img = read_tensor(&io, "tile.in.image", si, NULL, ctx);
    float *mean_ref = read_tensor(&io, "tile.enc.mean", sm, NULL, ctx);
    float *lv_ref = read_tensor(&io, "tile.enc.logvar", NULL, NULL, ctx);
    if (vae && lat && dec_ref && img && mean_ref && lv_ref) {
        const int64_t f = sl_vae_downscale(&cfg);
        float *dec = malloc((size_t)numel4(sd) * sizeof(float)), *full = malloc((size_t)numel4(sd) * sizeof(float));
        float *mean = malloc((size_t)numel4(sm) * sizeof(float)), *lv = malloc((size_t)numel4(sm) * sizeof(float));
        CHECK_OK(sl_vae_decode_tiled(vae, lat, sl[0], sl[2], sl[3], 8, 4, dec, ctx), ctx);
        cmp_scaled("3blk tiled decode (tile 8, overlap 4) vs torch tiling", dec, dec_ref, numel4(sd), VAE_GOLDEN_TOL);
        CHECK_OK(sl_vae_encode_tiled(vae, img, si[0], si[2], si[3], 8 * f, 4 * f, mean, lv, ctx), ctx);
        cmp_scaled("3blk tiled encode mean vs torch tiling", mean, mean_ref, numel4(sm), VAE_GOLDEN_TOL);
        cmp_scaled("3blk tiled encode logvar vs torch tiling", lv, lv_ref, numel4(sm), VAE_GOLDEN_TOL);
        /* the price of per-tile statistics on random inputs */
        CHECK_OK(sl_vae_decode(vae, lat, sl[0], sl[2], sl[3], full, ctx), ctx);
        double scale = sl_test_scale(full, (size_t)numel4(sd)), maxe = 0, sume = 0;
        for (int64_t i = 0; i < numel4(sd); i++) {
            double d = fabs((double)dec[i] - full[i]);
            maxe = fmax(maxe, d);
            sume += d;
        }
        printf("     tiled vs untiled decode, random latent 12x16, tile 8 overlap 4: max abs err %.3g (%.1f%% of max|ref|), mean abs err %.3g\n",
               maxe, 100 * maxe / scale, sume / (double)numel4(sd));
        CHECK(maxe <= VAE_TILE_LOOSE * scale, "tiled decode too far from untiled");
        free(dec); free(full); free(mean); free(lv);
    }
    free(lat); free(dec_ref); free(img); free(mean_ref); free(lv_ref);
    sl_st_close(&io);
    sl_vae_free(vae);
}

static void expect_config_error(const char *json, SlStatus want, const char *needle, SlCtx *ctx) {
    SlConfig c;
    CHECK_OK(sl_config_parse(&c, json, "inline", ctx), ctx);
    SlVaeConfig cfg;
    SlStatus st = sl_vae_config_from(&cfg, &c, ctx);
    CHECK(st == want && strstr(ctx->msg, needle), "config error: got %s '%s', want %s naming '%s'",
          sl_status_name(st), ctx->msg, sl_status_name(want), needle);
    sl_config_free(&c);
    sl_ctx_clear(ctx);
}

static void test_config_errors(SlCtx *ctx) {
    /* a config whose file is missing leaves a zeroed config: counting or creating from it is
     * refused (it once read block_out[-1]) */
    SlVaeConfig none;
    memset(&none, 0x5a, sizeof none);
    CHECK(sl_vae_config_load(&none, "/nonexistent/vae/config.json", ctx) == SL_ERR_IO, "missing vae config: %s", ctx->msg);
    CHECK(sl_vae_param_count(&none) == -1, "param count of a failed config load: %lld", (long long)sl_vae_param_count(&none));
    SlVae *nv = NULL;
    CHECK(sl_vae_create(&nv, &none, ctx) == SL_ERR_UNSUPPORTED && nv == NULL && strstr(ctx->msg, "0 blocks"),
          "create from a failed config load: %s", ctx->msg);
    expect_config_error("{\"block_out_channels\":[8,16],\"norm_num_groups\":4,"
                        "\"down_block_types\":[\"DownEncoderBlock2D\",\"AttnDownEncoderBlock2D\"],"
                        "\"up_block_types\":[\"UpDecoderBlock2D\",\"UpDecoderBlock2D\"]}",
                        SL_ERR_UNSUPPORTED, "AttnDownEncoderBlock2D", ctx);
    expect_config_error("{\"block_out_channels\":[8],\"norm_num_groups\":4,\"act_fn\":\"gelu\"}", SL_ERR_UNSUPPORTED,
                        "gelu", ctx);
    expect_config_error("{\"block_out_channels\":[8,12],\"norm_num_groups\":8,"
                        "\"down_block_types\":[\"DownEncoderBlock2D\",\"DownEncoderBlock2D\"],"
                        "\"up_block_types\":[\"UpDecoderBlock2D\",\"UpDecoderBlock2D\"]}",
                        SL_ERR_FORMAT, "block_out_channels[1]", ctx);
    expect_config_error("{\"block_out_channels\":[8,16],\"norm_num_groups\":4,"
                        "\"down_block_types\":[\"DownEncoderBlock2D\"],"
                        "\"up_block_types\":[\"UpDecoderBlock2D\",\"UpDecoderBlock2D\"]}",
                        SL_ERR_FORMAT, "down_block_types", ctx);
    expect_config_error("{\"block_out_channels\":[8],\"norm_num_groups\":4,\"layers_per_block\":\"2\"}",
                        SL_ERR_FORMAT, "layers_per_block", ctx);

    /* weights of another config: a missing or mis-shaped tensor is named */
    char path[1024];
    SlVaeConfig cfg;
    snprintf(path, sizeof path, "%s/tests/data/vae_3blk/config.json", sl_test_source());
    CHECK_OK(sl_vae_config_load(&cfg, path, ctx), ctx);
    SlWeights w;
    snprintf(path, sizeof path, "%s/tests/data/vae_4blk", sl_test_source());
    CHECK_OK(sl_weights_open_dir(&w, path, ctx), ctx);
    SlVae *vae = NULL;
    SlStatus st = sl_vae_load(&vae, &cfg, &w, ctx);
    CHECK((st == SL_ERR_SHAPE || st == SL_ERR_MISSING) && vae == NULL && strstr(ctx->msg, "encoder."),
          "wrong weights: got %s '%s'", sl_status_name(st), ctx->msg);
    printf("     wrong weights -> %s: %s\n", sl_status_name(st), ctx->msg);
    sl_ctx_clear(ctx);
    sl_weights_close(&w);

    /* the key map is a table: spot-check the reversed decoder numbering */
    SlKeyPair *kp;
    int n;
    CHECK_OK(sl_vae_ldm_key_map(&cfg, &kp, &n, ctx), ctx);
    int found = 0;
    for (int i = 0; i < n; i++)
        if (!strcmp(kp[i].from, "decoder.up_blocks.0.upsamplers.0.conv.weight"))
            found = !strcmp(kp[i].to, "decoder.up.2.upsample.conv.weight");
    CHECK(found, "decoder.up_blocks.0 must map to LDM decoder.up.2");
    sl_vae_key_map_free(kp, n);
}

/* SD-1.5 sized VAE, random weights: decode a 32x32 latent. */
static void test_sd15_size(SlCtx *ctx) {
    if (getenv("SL_VAE_SKIP_SD")) return; /* local iteration only */
    char path[1024];
    SlVaeConfig cfg;
    snprintf(path, sizeof path, "%s/sd15/vae/config.json", sl_test_shared());
    CHECK_OK(sl_vae_config_load(&cfg, path, ctx), ctx);
    CHECK(sl_vae_param_count(&cfg) == 83653863, "SD VAE param count %lld (torch: 83653863)",
          (long long)sl_vae_param_count(&cfg));
    SlVae *vae = NULL;
    CHECK_OK(sl_vae_create(&vae, &cfg, ctx), ctx);
    if (!vae) return;
    sl_vae_init_random(vae, 1234);
    const int64_t h = 32, w = 32, f = sl_vae_downscale(&cfg), n_img = 3 * h * f * w * f;
    float *lat = malloc((size_t)(4 * h * w) * sizeof(float)), *img = malloc((size_t)n_img * sizeof(float));
    for (int64_t i = 0; i < 4 * h * w; i++) lat[i] = sinf(0.37f * (float)i) * 2.0f;
    double t0 = now_s();
    CHECK_OK(sl_vae_decode(vae, lat, 1, h, w, img, ctx), ctx);
    double dt = now_s() - t0;
    CHECK(sl_count_nonfinite(img, (size_t)n_img) == 0, "SD VAE decode: non-finite output");
    double s = sl_test_scale(img, (size_t)n_img);
    CHECK(s > 1e-4 && s < 1e4, "SD VAE decode output scale %g", s);
    CHECK(sl_vae_activation_plan_bytes(&cfg, 1, 1, h, w, 0) == sl_vae_activation_bytes(vae),
          "planned bytes %zu != arena bytes %zu", sl_vae_activation_plan_bytes(&cfg, 1, 1, h, w, 0),
          sl_vae_activation_bytes(vae));
    printf("     SD-1.5 VAE activation plans: encode 512x512 %.0f MiB, decode 64x64 %.0f MiB\n",
           (double)sl_vae_activation_plan_bytes(&cfg, 0, 1, 512, 512, 0) / 1048576.0,
           (double)sl_vae_activation_plan_bytes(&cfg, 1, 1, 64, 64, 0) / 1048576.0);
    printf("     SD-1.5 VAE decode 1x4x32x32 -> 1x3x256x256: %.2f s, %.1f GFLOP, max|out| %.3g, activations %.1f MiB\n",
           dt, sl_vae_decode_flops(&cfg, 1, h, w) * 1e-9, s, (double)sl_vae_activation_bytes(vae) / 1048576.0);
    free(lat);
    free(img);
    sl_vae_free(vae);
}

static SlStatus load_vae_dir(SlVae **vae, SlWeights *w, SlVaeConfig *cfg, const char *dir, SlCtx *ctx) {
    char path[1200];
    memset(w, 0, sizeof *w);
    snprintf(path, sizeof path, "%s/config.json", dir);
    SL_TRY(sl_vae_config_load(cfg, path, ctx));
    SL_TRY(sl_weights_open_dir(w, dir, ctx));
    return sl_vae_load(vae, cfg, w, ctx);
}

/* 7. Non-finite weights and outputs. A NaN weight in either half is refused at load,
 * naming the half, the tensor, the file and the element (only the U-Net and text
 * encoder were checked). A huge but finite weight that overflows at run time fails
 * the decode ("a wrong image with exit 0" before) or the encode, naming that half
 * (a NaN latent was later reported as "the U-Net output went bad"). */
static void test_nonfinite(SlCtx *ctx) {
    static const struct { const char *key, *part; } nan_cases[] = {
        {"decoder.conv_in.weight", "VAE decoder"},
        {"post_quant_conv.bias", "VAE decoder"},
        {"encoder.down_blocks.0.resnets.0.conv1.weight", "VAE encoder"},
        {"quant_conv.weight", "VAE encoder"},
    };
    char dir[1024], file[1200];
    for (size_t k = 0; k < sizeof nan_cases / sizeof nan_cases[0]; k++) {
        snprintf(dir, sizeof dir, "%s/tmp_vae_nan%zu", sl_test_binary(), k);
        snprintf(file, sizeof file, "%s/diffusion_pytorch_model.safetensors", dir);
        if (!fixture_bad_part(dir, sl_test_shared(), "vae", nan_cases[k].key, NAN, 3)) {
            CHECK(0, "cannot write %s with a NaN in %s", dir, nan_cases[k].key);
            continue;
        }
        SlWeights w;
        SlVae *vae = (SlVae *)1;
        SlVaeConfig cfg;
        SlStatus st = load_vae_dir(&vae, &w, &cfg, dir, ctx);
        char want[1600];
        snprintf(want, sizeof want, "%s: weight '%s' in %s has 1 NaN/Inf value (the first at element 3)",
                 nan_cases[k].part, nan_cases[k].key, file);
        CHECK(st == SL_ERR_NUMERIC && vae == NULL && strstr(ctx->msg, want), "NaN in %s: %s: %s (want \"%s\")",
              nan_cases[k].key, sl_status_name(st), ctx->msg, want);
        if (st == SL_OK) sl_vae_free(vae);
        sl_weights_close(&w);
    }
    /* run-time overflow: every weight of the last conv 3e38 (finite, so loading accepts it) */
    static const struct { const char *key, *part; int enc; } big_cases[] = {
        {"decoder.conv_out.weight", "VAE decoder: its output image has", 0},
        {"encoder.conv_out.weight", "VAE encoder: its output latent has", 1},
    };
    for (size_t k = 0; k < 2; k++) {
        snprintf(dir, sizeof dir, "%s/tmp_vae_big%zu", sl_test_binary(), k);
        if (!fixture_bad_part(dir, sl_test_shared(), "vae", big_cases[k].key, 3e38f, 0)) {
            CHECK(0, "cannot write %s", dir);
            continue;
        }
        SlWeights w;
        SlVae *vae = NULL;
        SlVaeConfig cfg;
        CHECK_OK(load_vae_dir(&vae, &w, &cfg, dir, ctx), ctx);
        if (vae) {
            const int64_t B = 1, H = 16, W = 16, f = sl_vae_downscale(&cfg), lc = cfg.latent_channels;
            float *img = malloc((size_t)(B * 3 * H * W) * sizeof(float));
            float *lat = malloc((size_t)(B * lc * (H / f) * (W / f)) * sizeof(float));
            for (int64_t i = 0; i < B * 3 * H * W; i++) img[i] = (float)((i * 37) % 200) / 100.0f - 1.0f;
            for (int64_t i = 0; i < B * lc * (H / f) * (W / f); i++)
                lat[i] = (float)((i * 13) % 50) / 25.0f - 1.0f;
            SlStatus st = big_cases[k].enc ? sl_vae_encode(vae, img, B, H, W, lat, NULL, ctx)
                                           : sl_vae_decode(vae, lat, B, H / f, W / f, img, ctx);
            CHECK(st == SL_ERR_NUMERIC && strstr(ctx->msg, big_cases[k].part) && strstr(ctx->msg, "overflow"),
                  "3e38 in %s: %s: %s", big_cases[k].key, sl_status_name(st), ctx->msg);
            /* tiled: the same error through the tile driver */
            st = big_cases[k].enc ? sl_vae_encode_tiled(vae, img, B, H, W, 8, 4, lat, NULL, ctx)
                                  : sl_vae_decode_tiled(vae, lat, B, H / f, W / f, 1, 0, img, ctx);
            CHECK(st == SL_ERR_NUMERIC && strstr(ctx->msg, big_cases[k].part), "3e38 in %s, tiled: %s: %s",
                  big_cases[k].key, sl_status_name(st), ctx->msg);
            free(img);
            free(lat);
            sl_vae_free(vae);
        }
        sl_weights_close(&w);
    }
}

int main(void) {
    SlCtx ctx;
    sl_ctx_init(&ctx);
    test_shared_golden(&ctx);
    test_reference_config("2blk", &ctx);
    test_reference_config("3blk", &ctx);
    test_reference_config("4blk", &ctx);
    test_deprecated_names(&ctx);
    test_band_and_tiles(&ctx);
    test_tiled_golden(&ctx);
    test_config_errors(&ctx);
    test_sd15_size(&ctx);
    test_nonfinite(&ctx);
    return sl_test_finish("test_vae");
}
