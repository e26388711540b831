/* test_unet.c - the U-Net against the shared tiny-sd1 golden files.
 *
 * 1. Forward of golden/tiny-sd1/unet on unet.in.* equals unet.out
 *    (max abs err <= 1e-4 * max|ref|).
 * 2. PEFT LoRA (r=4, alpha=8 on to_q/to_k/to_v/to_out.0) through a hook written
 *    in this test (unet_test_lora.h): lora.out (same tolerance), lora.loss (1e-4
 *    relative) and every lora.grad.* (1e-3 of each gradient's max abs).
 * 3. Config refusals: unsupported values name the key.
 *    An inference (no-grad) plan is smaller and gives the same output bits.
 * 4. The SD 1.5 config: 859,520,964 weights and known single-file names (no weights allocated).
 * 5. Kernels per plan: a second U-Net with the same weights planned on the portable kernels
 *    (OpenBLAS, im2col, rows) stamps them on every module; the two forwards, in turn and on
 *    two pthreads at once, each give their own plan's bytes (which differ where the CPU has
 *    AVX-512), so nothing of one plan's choice leaks into the other.
 */
#include <omp.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/safetensors.h"
#include "core/weights.h"
#include "test_util.h"
#include "unet/unet.h"
#include "unet_test_lora.h"

#define FWD_TOL 1e-4  /* relative to max |ref| of the output */
#define GRAD_TOL 1e-3 /* relative to max |ref| of each gradient */

static float *load_f32(const SlStFile *f, const char *name, int64_t *numel, SlCtx *ctx) {
    const SlStEntry *e = sl_st_find(f, name);
    if (!e) {
        fprintf(stderr, "missing %s in %s\n", name, f->path);
        return NULL;
    }
    int64_t n = sl_shape_numel(e->ndim, e->shape);
    float *p = malloc(sizeof(float) * (size_t)(n ? n : 1));
    if (sl_st_read_f32(f, e, p, ctx) != SL_OK) {
        free(p);
        return NULL;
    }
    if (numel) *numel = n;
    return p;
}

static void test_config_refusals(void) {
    SlCtx ctx;
    sl_ctx_init(&ctx);
    SlUNetConfig c;
    /* a config whose file is missing: the load fails and leaves a zeroed config, which
     * init_shapes refuses (it once built from stack garbage and leaked on the way out) */
    memset(&c, 0x5a, sizeof c);
    CHECK(sl_unet_config_load(&c, "/nonexistent/unet/config.json", &ctx) == SL_ERR_IO && strstr(ctx.msg, "/nonexistent"),
          "missing config: %s", ctx.msg);
    SlUNet never;
    CHECK(sl_unet_init_shapes(&never, &c, &ctx) == SL_ERR_ARG && strstr(ctx.msg, "not a loaded"),
          "init_shapes on a failed load: %s", ctx.msg);
    const char *bad1 = "{\"block_out_channels\":[32,64],\"down_block_types\":[\"CrossAttnDownBlock2D\",\"DownBlock2D\"],"
                       "\"up_block_types\":[\"UpBlock2D\",\"CrossAttnUpBlock2D\"],\"norm_num_groups\":16,"
                       "\"class_embed_type\":\"timestep\"}";
    CHECK(sl_unet_config_parse(&c, bad1, "bad1", &ctx) == SL_ERR_UNSUPPORTED && strstr(ctx.msg, "class_embed_type"),
          "class_embed_type refused: %s", ctx.msg);
    const char *bad2 = "{\"block_out_channels\":[32,64],\"down_block_types\":[\"CrossAttnDownBlock2D\",\"SimpleDown\"],"
                       "\"up_block_types\":[\"UpBlock2D\",\"CrossAttnUpBlock2D\"],\"norm_num_groups\":16}";
    CHECK(sl_unet_config_parse(&c, bad2, "bad2", &ctx) == SL_ERR_UNSUPPORTED && strstr(ctx.msg, "SimpleDown"),
          "unknown block refused: %s", ctx.msg);
    const char *bad3 = "{\"block_out_channels\":[32,64],\"down_block_types\":[\"CrossAttnDownBlock2D\",\"DownBlock2D\"],"
                       "\"up_block_types\":[\"UpBlock2D\",\"CrossAttnUpBlock2D\"],\"norm_num_groups\":16,"
                       "\"attention_head_dim\":[8,8,8]}";
    CHECK(sl_unet_config_parse(&c, bad3, "bad3", &ctx) != SL_OK && strstr(ctx.msg, "attention_head_dim"),
          "wrong list length refused: %s", ctx.msg);
    const char *bad4 = "{\"block_out_channels\":[30,64],\"down_block_types\":[\"CrossAttnDownBlock2D\",\"DownBlock2D\"],"
                       "\"up_block_types\":[\"UpBlock2D\",\"CrossAttnUpBlock2D\"],\"norm_num_groups\":16}";
    CHECK(sl_unet_config_parse(&c, bad4, "bad4", &ctx) == SL_ERR_SHAPE, "indivisible channels refused: %s", ctx.msg);
    const char *bad5 = "{\"block_out_channels\":[32,64],\"down_block_types\":[\"CrossAttnDownBlock2D\",\"DownBlock2D\"],"
                       "\"up_block_types\":[\"UpBlock2D\",\"CrossAttnUpBlock2D\"],\"norm_num_groups\":16,"
                       "\"resnet_time_scale_shift\":\"scale_shift\"}";
    CHECK(sl_unet_config_parse(&c, bad5, "bad5", &ctx) == SL_ERR_UNSUPPORTED && strstr(ctx.msg, "scale_shift"),
          "scale_shift refused: %s", ctx.msg);
}

/* SD 1.5's real config: the parameter count and the single-file names of real
 * checkpoints (v1-5-pruned.safetensors naming), without allocating weights. */
static void test_sd15_layout(void) {
    SlCtx ctx;
    sl_ctx_init(&ctx);
    char path[1200];
    snprintf(path, sizeof path, "%s/sd15/unet/config.json", sl_test_shared());
    SlUNetConfig cfg;
    SlUNet u;
    CHECK_OK(sl_unet_config_load(&cfg, path, &ctx), &ctx);
    CHECK_OK(sl_unet_init_shapes(&u, &cfg, &ctx), &ctx);
    if (sl_test_failures) return;
    CHECK(sl_unet_n_weights(&u) == 859520964, "SD 1.5 U-Net has 859520964 weights (got %lld)",
          (long long)sl_unet_n_weights(&u));
    CHECK(cfg.heads[0] == 8 && cfg.heads[3] == 8, "SD 1.5: attention_head_dim 8 = 8 heads");
    SlUNetParam *pi = sl_unet_find_param(&u, "down_blocks.0.attentions.0.proj_in.weight");
    CHECK(pi && pi->ndim == 4 && pi->shape[0] == 320 && pi->shape[3] == 1, "SD 1.5 proj_in is a 1x1 conv");
    SlKeyPair *pairs = NULL;
    int n = 0;
    CHECK_OK(sl_unet_ldm_map(&u, &pairs, &n, &ctx), &ctx);
    static const char *const known[][2] = {
        {"conv_in.weight", "input_blocks.0.0.weight"},
        {"time_embedding.linear_2.bias", "time_embed.2.bias"},
        {"down_blocks.0.attentions.0.proj_in.weight", "input_blocks.1.1.proj_in.weight"},
        {"down_blocks.1.resnets.0.conv_shortcut.weight", "input_blocks.4.0.skip_connection.weight"},
        {"down_blocks.2.downsamplers.0.conv.weight", "input_blocks.9.0.op.weight"},
        {"down_blocks.3.resnets.1.time_emb_proj.weight", "input_blocks.11.0.emb_layers.1.weight"},
        {"mid_block.attentions.0.transformer_blocks.0.attn2.to_k.weight",
         "middle_block.1.transformer_blocks.0.attn2.to_k.weight"},
        {"mid_block.resnets.1.norm2.bias", "middle_block.2.out_layers.0.bias"},
        {"up_blocks.0.resnets.2.conv1.weight", "output_blocks.2.0.in_layers.2.weight"},
        {"up_blocks.0.upsamplers.0.conv.weight", "output_blocks.2.1.conv.weight"},
        {"up_blocks.1.upsamplers.0.conv.weight", "output_blocks.5.2.conv.weight"},
        {"up_blocks.2.upsamplers.0.conv.bias", "output_blocks.8.2.conv.bias"},
        {"up_blocks.3.attentions.2.transformer_blocks.0.ff.net.0.proj.weight",
         "output_blocks.11.1.transformer_blocks.0.ff.net.0.proj.weight"},
        {"up_blocks.3.resnets.2.conv2.weight", "output_blocks.11.0.out_layers.3.weight"},
        {"conv_norm_out.weight", "out.0.weight"},
        {"conv_out.bias", "out.2.bias"},
    };
    for (size_t k = 0; k < sizeof known / sizeof known[0]; k++) {
        const char *got = NULL;
        for (int i = 0; i < n; i++)
            if (!strcmp(pairs[i].from, known[k][0])) got = pairs[i].to;
        CHECK(got && !strcmp(got, known[k][1]), "single-file name of %s: %s (want %s)", known[k][0],
              got ? got : "(none)", known[k][1]);
    }
    int dup = 0;
    for (int i = 0; i < n; i++)
        for (int j = i + 1; j < n; j++)
            if (!strcmp(pairs[i].to, pairs[j].to)) dup++;
    CHECK(n == u.n_params && dup == 0, "SD 1.5 map: %d pairs, %d duplicate targets", n, dup);
    sl_unet_free_map(pairs, n);
    sl_unet_free(&u);
}

typedef struct FwdJob {
    SlUNet *u;
    float *out;
    const float *sample, *ts, *ehs;
} FwdJob;

static void *fwd_job(void *arg) {
    FwdJob *j = arg;
    for (int rep = 0; rep < 3; rep++) sl_unet_forward(j->u, j->out, j->sample, j->ts, j->ehs);
    return NULL;
}

/* 5. u (planned for B,H,W,T on the default kernels) against a copy planned on the portable ones. */
static void test_kernels_per_plan(SlUNet *u, int64_t B, int64_t H, int64_t W, int64_t T, const float *sample,
                                  const float *ts, const float *ehs, int64_t n_o) {
    SlCtx ctx;
    sl_ctx_init(&ctx);
    const SlKernels port = {SL_GEMM_KERNEL_BLAS, SL_CONV_KERNEL_IM2COL, SL_ATT_KERNEL_ROWS}, def = {0};
    SlUNet v;
    CHECK_OK(sl_unet_init(&v, &u->cfg, &ctx), &ctx);
    if (sl_test_failures) return;
    memcpy(v.weights.base, u->weights.base, u->weights.used);
    sl_unet_set_kernels(&v, &port);
    sl_unet_set_kernels(u, &def);
    CHECK_OK(sl_unet_plan(&v, B, H, W, T, &ctx), &ctx);
    CHECK_OK(sl_unet_plan(u, B, H, W, T, &ctx), &ctx);
    int stamped = 0;
    for (int i = 0; i < v.n_mods; i++) {
        const SlKernels *k = v.mods[i].lin ? &v.mods[i].lin->kern : &v.mods[i].conv->kern;
        stamped += !memcmp(k, &port, sizeof *k);
    }
    CHECK(stamped == v.n_mods, "the plan stamps its kernels on every module (%d of %d)", stamped, v.n_mods);
    float *alone[2], *both[2];
    SlUNet *us[2] = {u, &v};
    for (int i = 0; i < 2; i++) {
        alone[i] = calloc((size_t)n_o, sizeof(float));
        both[i] = calloc((size_t)n_o, sizeof(float));
        sl_unet_forward(us[i], alone[i], sample, ts, ehs);
    }
    const SlKernels avx = {SL_GEMM_KERNEL_AVX512, 0, SL_ATT_KERNEL_LANES};
    if (sl_kernels_available(&avx))
        CHECK(memcmp(alone[0], alone[1], sizeof(float) * (size_t)n_o) != 0,
              "the default (AVX-512) and the portable kernels gave the same bytes: a leak could not show");
    else
        printf("kernels per plan: no AVX-512 here, both plans run the same kernels\n");
    sl_unet_forward(&v, both[1], sample, ts, ehs); /* each after the other plan's forward */
    sl_unet_forward(u, both[0], sample, ts, ehs);
    for (int i = 0; i < 2; i++)
        CHECK(memcmp(both[i], alone[i], sizeof(float) * (size_t)n_o) == 0,
              "%s plan after the other plan's forward: bytes differ from it alone", i ? "portable" : "default");
    FwdJob jobs[2];
    pthread_t th[2];
    for (int i = 0; i < 2; i++) jobs[i] = (FwdJob){us[i], both[i], sample, ts, ehs};
    for (int i = 0; i < 2; i++) pthread_create(&th[i], NULL, fwd_job, &jobs[i]);
    for (int i = 0; i < 2; i++) pthread_join(th[i], NULL);
    for (int i = 0; i < 2; i++)
        CHECK(memcmp(both[i], alone[i], sizeof(float) * (size_t)n_o) == 0,
              "%s plan on a pthread beside the other plan: bytes differ from it alone", i ? "portable" : "default");
    for (int i = 0; i < 2; i++) free(alone[i]), free(both[i]);
    sl_unet_free(&v);
}

int main(void) {
    omp_set_num_threads(1); /* small tensors: threads only add overhead on a shared machine */
    SlCtx ctx;
    sl_ctx_init(&ctx);
    test_config_refusals();
    test_sd15_layout();

    char dir[1024], path[1200];
    snprintf(dir, sizeof dir, "%s/golden/tiny-sd1", sl_test_shared());
    SlUNetConfig cfg;
    snprintf(path, sizeof path, "%s/unet/config.json", dir);
    CHECK_OK(sl_unet_config_load(&cfg, path, &ctx), &ctx);
    if (sl_test_failures) return sl_test_finish("test_unet");
    CHECK(cfg.heads[0] == 8 && cfg.n_blocks == 2 && cfg.has_mid, "config resolved (heads %lld)", (long long)cfg.heads[0]);

    SlUNet u;
    CHECK_OK(sl_unet_init(&u, &cfg, &ctx), &ctx);
    SlWeights w;
    snprintf(path, sizeof path, "%s/unet", dir);
    CHECK_OK(sl_weights_open_dir(&w, path, &ctx), &ctx);
    CHECK_OK(sl_unet_load(&u, &w, &ctx), &ctx);
    CHECK(sl_weights_report_unused(&w, 10, &ctx) == 0, "every unet tensor is used");
    if (sl_test_failures) return sl_test_finish("test_unet");

    SlStFile ex;
    snprintf(path, sizeof path, "%s/expected.safetensors", dir);
    CHECK_OK(sl_st_open(&ex, path, &ctx), &ctx);
    if (sl_test_failures) return sl_test_finish("test_unet");
    int64_t n_s, n_e, n_o;
    float *sample = load_f32(&ex, "unet.in.sample", &n_s, &ctx);
    float *ehs = load_f32(&ex, "unet.in.encoder_hidden_states", &n_e, &ctx);
    float *ref = load_f32(&ex, "unet.out", &n_o, &ctx);
    float *ts = load_f32(&ex, "unet.in.timesteps", NULL, &ctx); /* I64 converted */
    const SlStEntry *es = sl_st_find(&ex, "unet.in.sample");
    const SlStEntry *ee = sl_st_find(&ex, "unet.in.encoder_hidden_states");
    CHECK(sample && ehs && ref && ts && es && ee, "golden inputs present");
    if (sl_test_failures) return sl_test_finish("test_unet");
    const int64_t B = es->shape[0], H = es->shape[2], W = es->shape[3], T = ee->shape[1];
    CHECK_OK(sl_unet_plan(&u, B, H, W, T, &ctx), &ctx);
    float *out = calloc((size_t)n_o, sizeof(float));
    sl_unet_forward(&u, out, sample, ts, ehs);
    double scale = sl_test_scale(ref, (size_t)n_o);
    sl_test_close("unet.out (tiny-sd1)", out, ref, (size_t)n_o, FWD_TOL * scale, 0);
    { /* an inference (no-grad) plan: smaller, and the same output bits */
        const size_t train_bytes = u.acts.size;
        float *out2 = calloc((size_t)n_o, sizeof(float));
        CHECK(sl_unet_set_inference(&u, 1) == 0, "inference is off by default");
        CHECK_OK(sl_unet_plan(&u, B, H, W, T, &ctx), &ctx);
        CHECK(u.acts.size < train_bytes, "inference plan %zu bytes < training plan %zu", u.acts.size, train_bytes);
        sl_unet_forward(&u, out2, sample, ts, ehs);
        CHECK(memcmp(out, out2, sizeof(float) * (size_t)n_o) == 0, "inference plan gives the same output bits");
        CHECK(sl_unet_set_inference(&u, 0) == 1, "set_inference returns the previous setting");
        CHECK_OK(sl_unet_plan(&u, B, H, W, T, &ctx), &ctx);
        free(out2);
    }
    test_kernels_per_plan(&u, B, H, W, T, sample, ts, ehs, n_o);

    /* ---- LoRA through hooks ---- */
    SlStFile lf;
    snprintf(path, sizeof path, "%s/lora/pytorch_lora_weights.safetensors", dir);
    CHECK_OK(sl_st_open(&lf, path, &ctx), &ctx);
    if (sl_test_failures) return sl_test_finish("test_unet");
    TestLora **loras = calloc((size_t)u.n_mods, sizeof *loras);
    const char *targets[] = {".to_q", ".to_k", ".to_v", ".to_out.0"};
    int n_lora = 0;
    for (int i = 0; i < u.n_mods; i++) {
        SlUNetModRef *m = &u.mods[i];
        if (!m->lin) continue;
        int hit = 0;
        for (int k = 0; k < 4; k++) {
            size_t ln = strlen(m->name), lt = strlen(targets[k]);
            if (ln > lt && !strcmp(m->name + ln - lt, targets[k])) hit = 1;
        }
        if (!hit) continue;
        char ka[256], kb[256];
        snprintf(ka, sizeof ka, "unet.%s.lora_A.weight", m->name);
        snprintf(kb, sizeof kb, "unet.%s.lora_B.weight", m->name);
        TestLora *L = test_lora_new(4, m->lin->I, m->lin->O, m->rows, 8.0f / 4.0f);
        int64_t sa[2] = {4, m->lin->I}, sb[2] = {m->lin->O, 4};
        CHECK_OK(sl_st_load_f32(&lf, ka, 2, sa, L->A, &ctx), &ctx);
        CHECK_OK(sl_st_load_f32(&lf, kb, 2, sb, L->B, &ctx), &ctx);
        m->lin->hook = &L->hook;
        loras[i] = L;
        n_lora++;
    }
    CHECK(n_lora == 32 && lf.n == 64, "32 LoRA modules (64 tensors) installed: %d / %d", n_lora, lf.n);
    float *lref = load_f32(&ex, "lora.out", NULL, &ctx);
    float *target = load_f32(&ex, "lora.in.target", NULL, &ctx);
    float *lloss = load_f32(&ex, "lora.loss", NULL, &ctx);
    CHECK(lref && target && lloss, "lora golden present");
    if (sl_test_failures) return sl_test_finish("test_unet");
    sl_unet_forward(&u, out, sample, ts, ehs);
    scale = sl_test_scale(lref, (size_t)n_o);
    sl_test_close("lora.out", out, lref, (size_t)n_o, FWD_TOL * scale, 0);
    double loss = 0;
    float *dout = calloc((size_t)n_o, sizeof(float));
    for (int64_t i = 0; i < n_o; i++) {
        double d = (double)out[i] - target[i];
        loss += d * d;
        dout[i] = (float)(2.0 * d / (double)n_o);
    }
    loss /= (double)n_o;
    float lossf = (float)loss;
    sl_test_close("lora.loss", &lossf, lloss, 1, 0, 1e-4);
    sl_unet_backward(&u, NULL, dout);
    int n_grads = 0;
    for (int i = 0; i < u.n_mods; i++) {
        if (!loras[i]) continue;
        for (int ab = 0; ab < 2; ab++) {
            char key[300];
            snprintf(key, sizeof key, "lora.grad.unet.%s.lora_%c.weight", u.mods[i].name, ab ? 'B' : 'A');
            int64_t n;
            float *g = load_f32(&ex, key, &n, &ctx);
            CHECK(g != NULL, "%s present", key);
            if (!g) continue;
            const float *mine = ab ? loras[i]->dB : loras[i]->dA;
            double gs = sl_test_scale(g, (size_t)n);
            sl_test_close(key, mine, g, (size_t)n, GRAD_TOL * gs, 0);
            n_grads++;
            free(g);
        }
    }
    CHECK(n_grads == 64, "64 LoRA gradients compared (%d)", n_grads);
    for (int i = 0; i < u.n_mods; i++) test_lora_free(loras[i]);
    free(loras);
    free(lref);
    free(target);
    free(lloss);
    free(dout);
    free(out);
    free(sample);
    free(ehs);
    free(ref);
    free(ts);
    sl_st_close(&lf);
    sl_st_close(&ex);
    sl_weights_close(&w);
    sl_unet_free(&u);
    return sl_test_finish("test_unet");
}
