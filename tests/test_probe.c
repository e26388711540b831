/* test_probe.c - `stylora probe` end to end on the tiny golden model: input
 * files are written from the golden tensors, the real program runs each
 * component, and its outputs are compared with what diffusers/transformers
 * computed (tolerance: 1e-4 of the output's scale, as the model tests). Also
 * the denoise loop (DDIM, 5 steps, guidance 7.5) against the golden loop.
 * With --base bf16 (bfloat16 U-Net weights, products on the bf16 kernel): unet.out within
 * BF16_OUT_TOL of its max, the loss within BF16_LOSS_RTOL and each LoRA gradient at cosine
 * >= BF16_GRAD_COS with PEFT's fp32 one (issue 18's bounds). */
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "core/safetensors.h"
#include "test_util.h"

#define GOLDEN_RTOL_OF_SCALE 1e-4
#define BF16_OUT_TOL 2e-2  /* of max |golden| */
#define BF16_LOSS_RTOL 2e-3
#define BF16_GRAD_COS 0.999

static SlStFile g_gold;
static char g_dir[2048], g_model[2048];

static const SlStEntry *gold(const char *name) {
    const SlStEntry *e = sl_st_find(&g_gold, name);
    CHECK(e != NULL, "golden tensor %s missing", name);
    return e;
}

/* Writes golden tensors (renamed) into dir/name. pairs: golden name, input name, ... NULL. */
static void write_input(const char *file, const char *const *pairs) {
    SlCtx ctx;
    sl_ctx_init(&ctx);
    SlStWriter w;
    sl_st_writer_init(&w);
    for (int i = 0; pairs[i]; i += 2) {
        const SlStEntry *e = gold(pairs[i]);
        if (e) CHECK_OK(sl_st_writer_add(&w, pairs[i + 1], e->dtype, e->ndim, e->shape, sl_st_data(&g_gold, e), &ctx), &ctx);
    }
    char p[4096];
    snprintf(p, sizeof p, "%s/%s", g_dir, file);
    CHECK_OK(sl_st_writer_save(&w, p, &ctx), &ctx);
    sl_st_writer_free(&w);
}

static int run_probe(const char *comp, const char *in, const char *out, const char *extra) {
    char cmd[8192];
    snprintf(cmd, sizeof cmd, "'%s' probe %s --quiet --model '%s' --in '%s/%s' --out '%s/%s' %s", sl_test_env("SL_STYLORA", "./stylora"),
             comp, g_model, g_dir, in, g_dir, out, extra ? extra : "");
    int rc = system(cmd);
    CHECK(rc == 0, "probe %s failed (rc %d): %s", comp, rc, cmd);
    return rc == 0;
}

/* Compares output tensor `name` of dir/file with golden `ref`. */
static void compare(const char *file, const char *name, const char *ref, double rtol_scale) {
    char p[4096];
    snprintf(p, sizeof p, "%s/%s", g_dir, file);
    SlCtx ctx;
    sl_ctx_init(&ctx);
    SlStFile f;
    if (sl_st_open(&f, p, &ctx) != SL_OK) {
        CHECK(0, "cannot open %s: %s", p, ctx.msg);
        return;
    }
    const SlStEntry *e = sl_st_find(&f, name), *g = gold(ref);
    CHECK(e != NULL, "%s: no output %s", file, name);
    if (e && g) {
        size_t n = (size_t)sl_shape_numel(g->ndim, g->shape);
        CHECK(n == (size_t)sl_shape_numel(e->ndim, e->shape), "%s: size differs from %s", name, ref);
        float *a = malloc(n * 4), *b = malloc(n * 4);
        sl_st_read_f32(&f, e, a, &ctx);
        sl_st_read_f32(&g_gold, g, b, &ctx);
        char what[256];
        snprintf(what, sizeof what, "probe %s vs golden %s", name, ref);
        sl_test_close(what, a, b, n, rtol_scale * sl_test_scale(b, n), 0);
        free(a);
        free(b);
    }
    sl_st_close(&f);
}

/* Cosine of output tensor `name` of dir/file with golden `ref` (-2 when either is missing). */
static double cosine(const char *file, const char *name, const char *ref) {
    char p[4096];
    snprintf(p, sizeof p, "%s/%s", g_dir, file);
    SlCtx ctx;
    sl_ctx_init(&ctx);
    SlStFile f;
    if (sl_st_open(&f, p, &ctx) != SL_OK) return -2;
    const SlStEntry *e = sl_st_find(&f, name), *g = gold(ref);
    double c = -2;
    if (e && g && sl_shape_numel(e->ndim, e->shape) == sl_shape_numel(g->ndim, g->shape)) {
        const size_t n = (size_t)sl_shape_numel(g->ndim, g->shape);
        float *a = malloc(n * 4), *b = malloc(n * 4);
        if (sl_st_read_f32(&f, e, a, &ctx) == SL_OK && sl_st_read_f32(&g_gold, g, b, &ctx) == SL_OK) {
            double ab = 0, aa = 0, bb = 0;
            for (size_t i = 0; i < n; i++) ab += (double)a[i] * b[i], aa += (double)a[i] * a[i], bb += (double)b[i] * b[i];
            c = ab / (sqrt(aa * bb) + 1e-300);
        }
        free(a);
        free(b);
    }
    sl_st_close(&f);
    return c;
}

int main(void) {
    snprintf(g_dir, sizeof g_dir, "%s/tmp_test_probe", sl_test_binary());
    mkdir(g_dir, 0755);
    snprintf(g_model, sizeof g_model, "%s/golden/tiny-sd1", sl_test_shared());
    char p[4096];
    snprintf(p, sizeof p, "%s/expected.safetensors", g_model);
    SlCtx ctx;
    sl_ctx_init(&ctx);
    if (sl_st_open(&g_gold, p, &ctx) != SL_OK) {
        fprintf(stderr, "cannot open golden: %s\n", ctx.msg);
        return 1;
    }
    write_input("te_in.safetensors", (const char *const[]){"te.in.input_ids", "input_ids", NULL});
    if (run_probe("textenc", "te_in.safetensors", "te_out.safetensors", NULL)) {
        compare("te_out.safetensors", "last_hidden_state", "te.last_hidden_state", GOLDEN_RTOL_OF_SCALE);
        compare("te_out.safetensors", "hidden_state.0", "te.hidden_states.0", GOLDEN_RTOL_OF_SCALE);
        compare("te_out.safetensors", "hidden_state.1", "te.penultimate_hidden_state", GOLDEN_RTOL_OF_SCALE);
    }
    write_input("vae_in.safetensors", (const char *const[]){"vae.in.image", "image", "vae.in.latents", "latent", NULL});
    if (run_probe("vae-encode", "vae_in.safetensors", "vae_enc.safetensors", NULL)) {
        compare("vae_enc.safetensors", "mean", "vae.enc.mean", GOLDEN_RTOL_OF_SCALE);
        compare("vae_enc.safetensors", "logvar", "vae.enc.logvar", GOLDEN_RTOL_OF_SCALE);
    }
    if (run_probe("vae-decode", "vae_in.safetensors", "vae_dec.safetensors", NULL))
        compare("vae_dec.safetensors", "image", "vae.dec.sample", GOLDEN_RTOL_OF_SCALE);
    write_input("unet_in.safetensors", (const char *const[]){"unet.in.sample", "sample", "unet.in.timesteps", "timestep",
                                                              "unet.in.encoder_hidden_states", "encoder_hidden_states", NULL});
    if (run_probe("unet", "unet_in.safetensors", "unet_out.safetensors", NULL))
        compare("unet_out.safetensors", "out", "unet.out", GOLDEN_RTOL_OF_SCALE);
    /* the golden PEFT adapter (alpha 8 given, PEFT files carry none): lora.out unmerged and merged,
     * lora.loss and every lora.grad.* (PEFT's autograd) */
    char lora_opt[4200];
    snprintf(lora_opt, sizeof lora_opt, "--lora '%s/lora/pytorch_lora_weights.safetensors' --lora-alpha 8", g_model);
    if (run_probe("unet", "unet_in.safetensors", "lora_out.safetensors", lora_opt))
        compare("lora_out.safetensors", "out", "lora.out", GOLDEN_RTOL_OF_SCALE);
    char merged_opt[4300];
    snprintf(merged_opt, sizeof merged_opt, "%s --merge", lora_opt);
    if (run_probe("unet", "unet_in.safetensors", "lora_merged.safetensors", merged_opt))
        compare("lora_merged.safetensors", "out", "lora.out", GOLDEN_RTOL_OF_SCALE);
    write_input("grad_in.safetensors", (const char *const[]){"unet.in.sample", "sample", "unet.in.timesteps", "timestep",
                                                              "unet.in.encoder_hidden_states", "encoder_hidden_states",
                                                              "lora.in.target", "target", NULL});
    if (run_probe("unet-grad", "grad_in.safetensors", "grad_out.safetensors", lora_opt)) {
        compare("grad_out.safetensors", "loss", "lora.loss", 1e-5);
        int n_grads = 0;
        for (int i = 0; i < g_gold.n; i++) {
            const char *gn = g_gold.entries[i].name;
            if (strncmp(gn, "lora.grad.", 10) != 0) continue;
            char out_name[1024];
            snprintf(out_name, sizeof out_name, "%s.grad", gn + 10); /* the adapter's own key + .grad */
            compare("grad_out.safetensors", out_name, gn, 1e-3);
            n_grads++;
        }
        CHECK(n_grads == 64, "expected 64 golden LoRA gradients, found %d", n_grads);
    }
    /* --base bf16 */
    if (run_probe("unet", "unet_in.safetensors", "unet_bf16.safetensors", "--base bf16"))
        compare("unet_bf16.safetensors", "out", "unet.out", BF16_OUT_TOL);
    char bf16_opt[4300];
    snprintf(bf16_opt, sizeof bf16_opt, "%s --base bf16", lora_opt);
    if (run_probe("unet-grad", "grad_in.safetensors", "grad_bf16.safetensors", bf16_opt)) {
        compare("grad_bf16.safetensors", "loss", "lora.loss", BF16_LOSS_RTOL);
        double worst = 2;
        int n_grads = 0;
        for (int i = 0; i < g_gold.n; i++) {
            const char *gn = g_gold.entries[i].name;
            if (strncmp(gn, "lora.grad.", 10) != 0) continue;
            char out_name[1024];
            snprintf(out_name, sizeof out_name, "%s.grad", gn + 10);
            const double c = cosine("grad_bf16.safetensors", out_name, gn);
            CHECK(c >= BF16_GRAD_COS, "--base bf16: %s cosine %.6f with PEFT's (want >= %.3f)", out_name, c, BF16_GRAD_COS);
            if (c < worst) worst = c;
            n_grads++;
        }
        CHECK(n_grads == 64, "--base bf16: expected 64 golden LoRA gradients, found %d", n_grads);
        printf("ok   --base bf16: %d LoRA gradients, smallest cosine with PEFT's %.6f\n", n_grads, worst);
    }
    write_input("ddim_in.safetensors", (const char *const[]){"ddim.in.latents", "latents", "ddim.in.cond", "cond",
                                                              "ddim.in.uncond", "uncond", NULL});
    if (run_probe("denoise", "ddim_in.safetensors", "ddim_out.safetensors", "--set sampler=ddim --set steps=5 --set cfg=7.5"))
        compare("ddim_out.safetensors", "latents", "ddim.final_latents", GOLDEN_RTOL_OF_SCALE);
    /* a wrongly shaped input is refused with a message, not a crash */
    write_input("bad_in.safetensors", (const char *const[]){"vae.in.image", "latent", NULL}); /* 3 channels, the VAE wants 4 */
    char cmd[8192];
    snprintf(cmd, sizeof cmd, "'%s' probe vae-decode --quiet --model '%s' --in '%s/bad_in.safetensors' --out '%s/bad_out.safetensors' 2>/dev/null",
             sl_test_env("SL_STYLORA", "./stylora"), g_model, g_dir, g_dir);
    CHECK(system(cmd) != 0, "probe accepted a 3-channel latent");
    sl_st_close(&g_gold);
    return sl_test_finish("test_probe");
}
