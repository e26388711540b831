/* test_textenc.c - the CLIP text transformer (textenc/clip.h) against PyTorch.
 *
 * 1. The shared golden tiny-sd1 (real transformers 4.45): last_hidden_state, hidden state 0, the
 *    penultimate state, pooler_output (eos 999: first EOS position), the empty prompt.
 * 2. tests/data/textenc_{gelu,legacy} from tests/reference/clip_text_ref.py (exact gelu with 3 heads
 *    and pad id 0 / legacy eos 2 pooling with 5 heads, 4 layers, T < positions, F16 weights), each
 *    loaded as a diffusers folder, an SD 1.x single file (with and without "text_model.") and, for
 *    gelu, the SD 2.x OpenCLIP single file the reference wrote (stacked in_proj split on load); also
 *    a 2-layer config over the 3-layer OpenCLIP file (SD 2's "23 of 24 layers").
 * 3. Errors: bad configs, a missing tensor, a misshaped in_proj, bad ids / lengths.
 * 4. CLIP-L size (sd15 config, 123M parameters) with random weights: parameter count, one 77-token
 *    prompt, LayerNorm statistics of the output, pooling, causality, batch independence.
 *
 * Tolerance (golden and reference): max |got - ref| <= TOL_FWD_REL * max |ref| per output.
 */
#include <stdint.h>
#include <sys/stat.h>

#include "core/safetensors.h"
#include "core/weights.h"
#include "test_util.h"
#include "textenc/clip.h"

#define TOL_FWD_REL 1e-4 /* forward outputs: accumulation order differs from PyTorch's */

static SlCtx ctx;

/* Reads an integer tensor as int32 (malloc'd); fills B, T. */
static int32_t *read_ids(const SlStFile *f, const char *name, int *B, int *T) {
    const SlStEntry *e = sl_st_find(f, name);
    CHECK(e && e->ndim == 2, "%s: '%s' missing or not 2-D", f->path, name);
    if (!e || e->ndim != 2) return NULL;
    int64_t n = e->shape[0] * e->shape[1];
    int64_t *tmp = malloc((size_t)n * sizeof *tmp);
    int32_t *ids = malloc((size_t)n * sizeof *ids);
    CHECK_OK(sl_st_read_i64(f, e, tmp, &ctx), &ctx);
    for (int64_t i = 0; i < n; i++) ids[i] = (int32_t)tmp[i];
    free(tmp);
    *B = (int)e->shape[0];
    *T = (int)e->shape[1];
    return ids;
}

/* Reads a float tensor (malloc'd), its element count in *n. */
static float *read_f32(const SlStFile *f, const char *name, size_t *n) {
    const SlStEntry *e = sl_st_find(f, name);
    CHECK(e != NULL, "%s: '%s' missing", f->path, name);
    if (!e) return NULL;
    *n = (size_t)sl_shape_numel(e->ndim, e->shape);
    float *x = malloc(*n * sizeof *x);
    CHECK_OK(sl_st_read_f32(f, e, x, &ctx), &ctx);
    return x;
}

/* max|got-ref| <= TOL_FWD_REL * max|ref|; prints the relative error. */
static void check_rel(const char *what, const float *got, const float *ref, size_t n) {
    double scale = sl_test_scale(ref, n);
    sl_test_close(what, got, ref, n, TOL_FWD_REL * scale, 0.0);
    double m = 0;
    for (size_t i = 0; i < n; i++) {
        double d = fabs((double)got[i] - ref[i]);
        if (d > m || d != d) m = d;
    }
    printf("     %s: max|err|/max|ref| = %.2e\n", what, m / (scale > 0 ? scale : 1));
}

/* ---- 1. golden tiny-sd1 ---- */

static void test_golden(void) {
    char dir[1024], path[1200];
    snprintf(dir, sizeof dir, "%s/golden/tiny-sd1", sl_test_shared());
    SlClipConfig cfg;
    snprintf(path, sizeof path, "%s/text_encoder/config.json", dir);
    CHECK_OK(sl_clip_config_load(&cfg, path, &ctx), &ctx);
    CHECK(cfg.eos_id == 999 && cfg.L == 2 && cfg.act == SL_CLIP_ACT_QUICK_GELU, "golden config read wrong");
    SlWeights w;
    snprintf(path, sizeof path, "%s/text_encoder", dir);
    CHECK_OK(sl_weights_open_dir(&w, path, &ctx), &ctx);
    SlClip *m = NULL;
    CHECK_OK(sl_clip_load(&m, &cfg, &w, SL_CLIP_LAYOUT_AUTO, &ctx), &ctx);
    SlStFile ex;
    snprintf(path, sizeof path, "%s/expected.safetensors", dir);
    CHECK_OK(sl_st_open(&ex, path, &ctx), &ctx);
    if (!m || ctx.status) { sl_weights_close(&w); return; }
    CHECK(m->n_unused == 0, "%d unused tensors in the golden text encoder", m->n_unused);

    int B, T;
    int32_t *ids = read_ids(&ex, "te.in.input_ids", &B, &T);
    const size_t BTD = (size_t)B * T * cfg.D;
    float *last = malloc(BTD * sizeof(float)), *hs = malloc((size_t)(cfg.L + 1) * BTD * sizeof(float));
    float *pooled = malloc((size_t)B * cfg.D * sizeof(float));
    CHECK_OK(sl_clip_forward(m, ids, B, T, last, hs, pooled, &ctx), &ctx);
    size_t n;
    float *ref = read_f32(&ex, "te.last_hidden_state", &n);
    CHECK(n == BTD, "size");
    check_rel("golden te.last_hidden_state", last, ref, BTD);
    free(ref);
    ref = read_f32(&ex, "te.hidden_states.0", &n);
    check_rel("golden te.hidden_states.0", hs, ref, BTD);
    free(ref);
    ref = read_f32(&ex, "te.penultimate_hidden_state", &n);
    check_rel("golden te.penultimate_hidden_state", hs + (size_t)(cfg.L - 1) * BTD, ref, BTD);
    free(ref);
    ref = read_f32(&ex, "te.pooler_output", &n);
    check_rel("golden te.pooler_output", pooled, ref, (size_t)B * cfg.D);
    free(ref);

    /* final_norm of the top hidden state is last_hidden_state */
    float *normed = malloc(BTD * sizeof(float));
    CHECK_OK(sl_clip_final_norm(m, normed, hs + (size_t)cfg.L * BTD, (int64_t)B * T, &ctx), &ctx);
    CHECK(memcmp(normed, last, BTD * sizeof(float)) == 0, "final_norm(hidden_states[L]) != last_hidden_state");
    free(normed);

    /* the same without hidden states (in-place residual path) must agree exactly */
    float *last2 = malloc(BTD * sizeof(float));
    CHECK_OK(sl_clip_forward(m, ids, B, T, last2, NULL, NULL, &ctx), &ctx);
    CHECK(memcmp(last, last2, BTD * sizeof(float)) == 0, "forward with/without hidden states differ");
    free(last2);
    free(ids);

    int Bu, Tu;
    ids = read_ids(&ex, "te.in.uncond_input_ids", &Bu, &Tu);
    CHECK_OK(sl_clip_forward(m, ids, Bu, Tu, last, NULL, NULL, &ctx), &ctx);
    ref = read_f32(&ex, "te.uncond_last_hidden_state", &n);
    check_rel("golden te.uncond_last_hidden_state", last, ref, (size_t)Bu * Tu * cfg.D);
    free(ref);
    free(ids);
    free(last);
    free(hs);
    free(pooled);
    sl_st_close(&ex);
    sl_clip_free(m);
    sl_weights_close(&w);
}

/* ---- 2. reference cases in several layouts ---- */

typedef struct Case {
    const char *name;
    SlClipConfig cfg;
    SlStFile f;          /* tests/data/textenc_<name>.safetensors */
    int32_t *ids;
    int B, T;
    float *last, *hs, *pooled; /* references */
} Case;

static int case_open(Case *c, const char *name) {
    char path[1200];
    memset(c, 0, sizeof *c);
    c->name = name;
    snprintf(path, sizeof path, "%s/tests/data/textenc_%s.json", sl_test_source(), name);
    CHECK_OK(sl_clip_config_load(&c->cfg, path, &ctx), &ctx);
    snprintf(path, sizeof path, "%s/tests/data/textenc_%s.safetensors", sl_test_source(), name);
    CHECK_OK(sl_st_open(&c->f, path, &ctx), &ctx);
    if (ctx.status) return 0;
    size_t n;
    c->ids = read_ids(&c->f, "in.input_ids", &c->B, &c->T);
    c->last = read_f32(&c->f, "out.last_hidden_state", &n);
    c->hs = read_f32(&c->f, "out.hidden_states", &n);
    c->pooled = read_f32(&c->f, "out.pooler_output", &n);
    return c->ids && c->last && c->hs && c->pooled;
}

static void case_close(Case *c) {
    free(c->ids); free(c->last); free(c->hs); free(c->pooled);
    sl_st_close(&c->f);
}

/* Runs m on the case and compares its hidden states 0..L (m may have fewer layers than the
 * reference); the final outputs too when the layer counts agree. */
static void case_compare(const Case *c, SlClip *m, const char *label) {
    const int64_t L = m->cfg.L, D = m->cfg.D;
    const size_t BTD = (size_t)c->B * c->T * D;
    float *last = malloc(BTD * sizeof(float)), *hs = malloc((size_t)(L + 1) * BTD * sizeof(float));
    float *pooled = malloc((size_t)c->B * D * sizeof(float));
    CHECK_OK(sl_clip_forward(m, c->ids, c->B, c->T, last, hs, pooled, &ctx), &ctx);
    char what[256];
    snprintf(what, sizeof what, "%s %s hidden_states[0..%lld]", c->name, label, (long long)L);
    check_rel(what, hs, c->hs, (size_t)(L + 1) * BTD);
    if (L == c->cfg.L) {
        snprintf(what, sizeof what, "%s %s last_hidden_state", c->name, label);
        check_rel(what, last, c->last, BTD);
        snprintf(what, sizeof what, "%s %s pooler_output", c->name, label);
        check_rel(what, pooled, c->pooled, (size_t)c->B * D);
    }
    free(last); free(hs); free(pooled);
}

/* Writes the case's weights (file dtype kept) to path, each name as prefix + name[strip:]. */
static void write_weights(const Case *c, const char *path, const char *prefix, size_t strip, const char *skip) {
    SlStWriter wr;
    sl_st_writer_init(&wr);
    char name[512];
    for (int i = 0; i < c->f.n; i++) {
        const SlStEntry *e = &c->f.entries[i];
        if (strncmp(e->name, "text_model.", 11) != 0) continue;
        if (skip && strcmp(e->name, skip) == 0) continue;
        snprintf(name, sizeof name, "%s%s", prefix, e->name + strip);
        CHECK_OK(sl_st_writer_add(&wr, name, e->dtype, e->ndim, e->shape, sl_st_data(&c->f, e), &ctx), &ctx);
    }
    if (prefix[0]) { /* a U-Net tensor beside the text encoder, as in a real single file */
        static const float one = 1.f;
        const int64_t s1[1] = {1};
        CHECK_OK(sl_st_writer_add(&wr, "model.diffusion_model.out.2.bias", SL_F32, 1, s1, &one, &ctx), &ctx);
    }
    CHECK_OK(sl_st_writer_save(&wr, path, &ctx), &ctx);
    sl_st_writer_free(&wr);
}

static void test_case_layouts(const char *name) {
    Case c;
    if (!case_open(&c, name)) { case_close(&c); return; }
    char dir[1200], path[1400];
    snprintf(dir, sizeof dir, "%s/textenc_test_%s", sl_test_binary(), name);
    mkdir(dir, 0755);
    SlClip *m;
    SlWeights w, view;

    /* diffusers text_encoder/ folder */
    snprintf(path, sizeof path, "%s/text_encoder", dir);
    mkdir(path, 0755);
    snprintf(path, sizeof path, "%s/text_encoder/model.safetensors", dir);
    write_weights(&c, path, "", 0, NULL);
    snprintf(path, sizeof path, "%s/text_encoder", dir);
    CHECK_OK(sl_weights_open_dir(&w, path, &ctx), &ctx);
    m = NULL;
    CHECK_OK(sl_clip_load(&m, &c.cfg, &w, SL_CLIP_LAYOUT_AUTO, &ctx), &ctx);
    if (m) { CHECK(m->n_unused == 0, "%d unused", m->n_unused); case_compare(&c, m, "diffusers"); }
    sl_clip_free(m);
    sl_weights_close(&w);

    /* SD 1.x single file, with and without "text_model." */
    for (int bare = 0; bare <= 1; bare++) {
        snprintf(path, sizeof path, "%s/sd1%s.safetensors", dir, bare ? "_bare" : "");
        write_weights(&c, path, SL_CKPT_TE1_PREFIX, bare ? 11 : 0, NULL);
        CHECK_OK(sl_weights_open_file(&w, path, &ctx), &ctx);
        sl_weights_view(&view, &w, SL_CKPT_TE1_PREFIX);
        m = NULL;
        CHECK_OK(sl_clip_load(&m, &c.cfg, &view, SL_CLIP_LAYOUT_AUTO, &ctx), &ctx);
        if (m) {
            CHECK(m->n_unused == 0, "%d unused", m->n_unused);
            case_compare(&c, m, bare ? "sd1-single-file(bare)" : "sd1-single-file");
        }
        sl_clip_free(m);
        sl_weights_close(&view);
        sl_weights_close(&w);
    }

    /* a missing tensor is named */
    snprintf(path, sizeof path, "%s/missing.safetensors", dir);
    write_weights(&c, path, "", 0, "text_model.encoder.layers.1.mlp.fc2.bias");
    CHECK_OK(sl_weights_open_file(&w, path, &ctx), &ctx);
    m = NULL;
    SlStatus st = sl_clip_load(&m, &c.cfg, &w, SL_CLIP_LAYOUT_HF, &ctx);
    CHECK(st == SL_ERR_MISSING && strstr(ctx.msg, "layers.1.mlp.fc2.bias"), "missing tensor: %s %s",
          sl_status_name(st), ctx.msg);
    CHECK(m == NULL, "model returned on failure");
    sl_ctx_clear(&ctx);
    sl_weights_close(&w);

    /* a wrong config is a shape error naming the tensor */
    SlClipConfig bad = c.cfg;
    bad.F += 1;
    snprintf(path, sizeof path, "%s/text_encoder", dir);
    CHECK_OK(sl_weights_open_dir(&w, path, &ctx), &ctx);
    st = sl_clip_load(&m, &bad, &w, SL_CLIP_LAYOUT_AUTO, &ctx);
    CHECK(st == SL_ERR_SHAPE && strstr(ctx.msg, "fc1.weight"), "shape: %s %s", sl_status_name(st), ctx.msg);
    sl_ctx_clear(&ctx);
    sl_weights_close(&w);
    case_close(&c);
}

static void test_openclip(void) {
    Case c;
    if (!case_open(&c, "gelu")) { case_close(&c); return; }
    char path[1200];
    snprintf(path, sizeof path, "%s/tests/data/textenc_gelu_openclip.safetensors", sl_test_source());
    SlWeights w, view;
    CHECK_OK(sl_weights_open_file(&w, path, &ctx), &ctx);
    sl_weights_view(&view, &w, SL_CKPT_TE2_PREFIX);
    SlClip *m = NULL;
    CHECK_OK(sl_clip_load(&m, &c.cfg, &view, SL_CLIP_LAYOUT_AUTO, &ctx), &ctx);
    if (m) {
        CHECK(m->n_unused == 0, "%d unused (text_projection, logit_scale are known extras)", m->n_unused);
        case_compare(&c, m, "sd2-openclip");
    }
    sl_clip_free(m);
    sl_weights_close(&view);
    sl_weights_close(&w);

    /* SD 2.x style: a config with fewer layers than the file reads the first ones */
    SlClipConfig cfg2 = c.cfg;
    cfg2.L = c.cfg.L - 1;
    CHECK_OK(sl_weights_open_file(&w, path, &ctx), &ctx);
    sl_weights_view(&view, &w, SL_CKPT_TE2_PREFIX);
    m = NULL;
    CHECK_OK(sl_clip_load(&m, &cfg2, &view, SL_CLIP_LAYOUT_OPENCLIP, &ctx), &ctx);
    if (m) {
        CHECK(m->n_unused == 12, "%d unused, expected the 12 tensors of the last resblock", m->n_unused);
        case_compare(&c, m, "sd2-openclip(L-1)");
    }
    sl_clip_free(m);
    sl_weights_close(&view);

    /* a misshaped stacked in_proj is refused, naming the file's tensor */
    SlStWriter wr;
    sl_st_writer_init(&wr);
    const char *target = "cond_stage_model.model.transformer.resblocks.1.attn.in_proj_weight";
    for (int i = 0; i < w.files[0].n; i++) {
        const SlStEntry *e = &w.files[0].entries[i];
        int64_t shape[SL_MAX_DIMS];
        memcpy(shape, e->shape, sizeof shape);
        if (strcmp(e->name, target) == 0) shape[0] = 2 * c.cfg.D;
        CHECK_OK(sl_st_writer_add(&wr, e->name, e->dtype, e->ndim, shape, sl_st_data(&w.files[0], e), &ctx), &ctx);
    }
    char bad[1400];
    snprintf(bad, sizeof bad, "%s/textenc_bad_inproj.safetensors", sl_test_binary());
    CHECK_OK(sl_st_writer_save(&wr, bad, &ctx), &ctx);
    sl_st_writer_free(&wr);
    sl_weights_close(&w);
    CHECK_OK(sl_weights_open_file(&w, bad, &ctx), &ctx);
    sl_weights_view(&view, &w, SL_CKPT_TE2_PREFIX);
    SlStatus st = sl_clip_load(&m, &c.cfg, &view, SL_CLIP_LAYOUT_AUTO, &ctx);
    CHECK(st == SL_ERR_SHAPE && strstr(ctx.msg, "resblocks.1.attn.in_proj_weight") && strstr(ctx.msg, "[96,48]"),
          "bad in_proj: %s %s", sl_status_name(st), ctx.msg);
    sl_ctx_clear(&ctx);
    sl_weights_close(&view);
    sl_weights_close(&w);

    /* nothing CLIP-like under the prefix */
    CHECK_OK(sl_weights_open_file(&w, path, &ctx), &ctx);
    sl_weights_view(&view, &w, SL_CKPT_TE1_PREFIX);
    st = sl_clip_load(&m, &c.cfg, &view, SL_CLIP_LAYOUT_AUTO, &ctx);
    CHECK(st == SL_ERR_MISSING && strstr(ctx.msg, "cond_stage_model.transformer."), "no TE: %s %s",
          sl_status_name(st), ctx.msg);
    sl_ctx_clear(&ctx);
    sl_weights_close(&view);
    sl_weights_close(&w);
    case_close(&c);
}

/* ---- 3. configs and arguments ---- */

static void expect_config_error(const char *json, SlStatus want, const char *needle) {
    SlConfig j;
    CHECK_OK(sl_config_parse(&j, json, "bad.json", &ctx), &ctx);
    SlClipConfig cfg;
    SlStatus st = sl_clip_config_read(&cfg, &j, &ctx);
    CHECK(st == want && strstr(ctx.msg, needle), "config %s: got %s '%s', wanted %s with '%s'", json,
          sl_status_name(st), ctx.msg, sl_status_name(want), needle);
    sl_ctx_clear(&ctx);
    sl_config_free(&j);
}

static void test_config_errors(void) {
    expect_config_error("{\"hidden_act\": \"gelu_new\"}", SL_ERR_UNSUPPORTED, "gelu_new");
    expect_config_error("{\"hidden_act\": 3}", SL_ERR_FORMAT, "hidden_act");
    expect_config_error("{\"hidden_size\": 48, \"num_attention_heads\": 5}", SL_ERR_FORMAT, "num_attention_heads");
    expect_config_error("{\"hidden_size\": -4}", SL_ERR_FORMAT, "hidden_size");
    expect_config_error("{\"num_hidden_layers\": 100000}", SL_ERR_FORMAT, "num_hidden_layers");
    expect_config_error("{\"vocab_size\": 1.5}", SL_ERR_FORMAT, "vocab_size");
    expect_config_error("{\"layer_norm_eps\": 0}", SL_ERR_FORMAT, "layer_norm_eps");
    expect_config_error("{\"hidden_size\": 16384, \"intermediate_size\": 262144, \"num_hidden_layers\": 512}",
                        SL_ERR_NOMEM, "parameters");
    SlConfig j;
    SlClipConfig cfg;
    CHECK_OK(sl_config_parse(&j, "{}", "defaults.json", &ctx), &ctx);
    CHECK_OK(sl_clip_config_read(&cfg, &j, &ctx), &ctx);
    CHECK(cfg.D == 512 && cfg.L == 12 && cfg.NH == 8 && cfg.P == 77 && cfg.V == 49408 && cfg.eos_id == 49407 &&
              cfg.act == SL_CLIP_ACT_QUICK_GELU, "CLIPTextConfig defaults");
    sl_config_free(&j);
}

static void test_forward_args(void) {
    SlClipConfig cfg = {.D = 8, .F = 12, .L = 1, .NH = 2, .P = 6, .V = 10, .act = SL_CLIP_ACT_GELU, .eps = 1e-5f,
                        .bos_id = 8, .eos_id = 9, .pad_id = 9};
    SlClip *m = NULL;
    CHECK_OK(sl_clip_init_random(&m, &cfg, 1, &ctx), &ctx);
    if (!m) return;
    int32_t ids[7] = {8, 1, 2, 9, 9, 9, 9};
    float out[7 * 8];
    SlStatus st = sl_clip_forward(m, ids, 1, 7, out, NULL, NULL, &ctx);
    CHECK(st == SL_ERR_ARG && strstr(ctx.msg, "positions"), "T > P: %s", ctx.msg);
    sl_ctx_clear(&ctx);
    ids[2] = 10;
    st = sl_clip_forward(m, ids, 1, 6, out, NULL, NULL, &ctx);
    CHECK(st == SL_ERR_ARG && strstr(ctx.msg, "[0,2]"), "bad id: %s", ctx.msg);
    sl_ctx_clear(&ctx);
    ids[2] = -1;
    st = sl_clip_forward(m, ids, 1, 6, out, NULL, NULL, &ctx);
    CHECK(st == SL_ERR_ARG, "negative id: %s", ctx.msg);
    sl_ctx_clear(&ctx);
    sl_clip_free(m);

    /* determinism: same seed, same weights; the activation arena grows (1x3 -> 2x6) and a
     * repeated call gives the same bytes */
    SlClip *m2 = NULL;
    CHECK_OK(sl_clip_init_random(&m, &cfg, 1, &ctx), &ctx);
    CHECK_OK(sl_clip_init_random(&m2, &cfg, 1, &ctx), &ctx);
    if (m && m2) {
        CHECK(m->weights.used == m2->weights.used && memcmp(m->weights.base, m2->weights.base, m->weights.used) == 0,
              "same seed, different weights");
        const int32_t ids2[12] = {8, 1, 9, 9, 9, 9, 8, 3, 4, 5, 9, 9};
        float o1[3 * 8], o2[12 * 8], o3[3 * 8], h1[2 * 3 * 8], p1[8];
        CHECK_OK(sl_clip_forward(m, ids2, 1, 3, o1, h1, p1, &ctx), &ctx);
        CHECK_OK(sl_clip_forward(m, ids2, 2, 6, o2, NULL, NULL, &ctx), &ctx);
        CHECK(m->cap_B == 2 && m->cap_T == 6, "activations did not grow: %dx%d", m->cap_B, m->cap_T);
        CHECK_OK(sl_clip_forward(m, ids2, 1, 3, o3, NULL, NULL, &ctx), &ctx);
        CHECK(memcmp(o1, o3, sizeof o1) == 0, "repeated forward differs");
        check_rel("tiny: 3-token prefix vs 6-token run (causal)", o2, o1, 3 * 8);
        CHECK(memcmp(p1, o1 + 2 * 8, sizeof p1) == 0, "pooled at the first eos (position 2)");
    }
    sl_clip_free(m);
    sl_clip_free(m2);

    const int32_t a[5] = {5, 7, 9, 9, 1}, b[4] = {3, 4, 5, 6};
    CHECK(sl_clip_pool_index(a, 5, 9) == 2, "first eos");
    CHECK(sl_clip_pool_index(b, 4, 9) == 0, "no eos -> 0");
    CHECK(sl_clip_pool_index(a, 5, 2) == 2, "legacy: first argmax");
}

/* ---- 4. CLIP-L size with random weights ---- */

static void test_clip_l(void) {
    char path[1200];
    snprintf(path, sizeof path, "%s/sd15/text_encoder/config.json", sl_test_shared());
    SlClipConfig cfg;
    CHECK_OK(sl_clip_config_load(&cfg, path, &ctx), &ctx);
    if (ctx.status) return;
    CHECK(sl_clip_param_count(&cfg) == 123060480, "CLIP-L parameters: %lld", (long long)sl_clip_param_count(&cfg));
    SlClipConfig preset;
    sl_clip_config_preset(&preset, SL_CLIP_PRESET_SD1);
    CHECK(memcmp(&preset, &cfg, sizeof cfg) == 0, "SD1 preset differs from sd15/text_encoder/config.json");
    sl_clip_config_preset(&preset, SL_CLIP_PRESET_SD2);
    CHECK(sl_clip_param_count(&preset) == 340387840, "SD2 (23-layer OpenCLIP-H) parameters: %lld",
          (long long)sl_clip_param_count(&preset));
    SlClip *m = NULL;
    CHECK_OK(sl_clip_init_random(&m, &cfg, 1234, &ctx), &ctx);
    if (!m) return;
    enum { B = 2, T = 77 };
    int32_t ids[B * T];
    for (int t = 0; t < T; t++) ids[t] = 49407;
    ids[0] = 49406;
    for (int t = 1; t < 12; t++) ids[t] = 320 + 97 * t;
    ids[12] = 49407;
    memcpy(ids + T, ids, sizeof(int32_t) * T);
    ids[T + 10] = 1000; /* row 1 differs from row 0 at position 10 only */
    const int64_t D = cfg.D;
    float *last = malloc((size_t)B * T * D * sizeof(float)), *pooled = malloc((size_t)B * D * sizeof(float));
    float *hs = malloc((size_t)(cfg.L + 1) * B * T * D * sizeof(float));
    CHECK_OK(sl_clip_forward(m, ids, B, T, last, hs, pooled, &ctx), &ctx);
    CHECK(sl_count_nonfinite(last, (size_t)B * T * D) == 0, "non-finite CLIP-L output");
    /* final LN with gamma 1, beta 0: every row has mean 0 and variance 1 - eps-ish */
    double worst = 0;
    for (int n = 0; n < B * T; n++) {
        double s = 0, s2 = 0;
        for (int64_t d = 0; d < D; d++) { s += last[n * D + d]; s2 += (double)last[n * D + d] * last[n * D + d]; }
        double mean = s / D, var = s2 / D - mean * mean;
        if (fabs(mean) > worst) worst = fabs(mean);
        if (fabs(var - 1) > worst) worst = fabs(var - 1);
    }
    CHECK(worst < 1e-3, "final LayerNorm statistics off by %g", worst);
    /* eos_token_id 2: legacy pooling at the first 49407 (position 12) */
    CHECK(memcmp(pooled, last + 12 * D, (size_t)D * sizeof(float)) == 0, "pooled row 0 is not position 12");
    /* causal: positions < 10 of both rows agree, position 10 differs */
    check_rel("clip-l causal prefix (rows 0,1 positions 0..9)", last + (size_t)T * D, last, (size_t)10 * D);
    double diff = 0;
    for (int64_t d = 0; d < D; d++) diff += fabs(last[(T + 10) * D + d] - last[10 * D + d]);
    CHECK(diff > 1e-3, "position 10 does not depend on its token");
    /* batch independence: row 0 alone gives the same result */
    float *last1 = malloc((size_t)T * D * sizeof(float));
    CHECK_OK(sl_clip_forward(m, ids, 1, T, last1, NULL, NULL, &ctx), &ctx);
    check_rel("clip-l batch of 1 vs batch of 2", last1, last, (size_t)T * D);
    free(last1);
    free(last); free(pooled); free(hs);
    sl_clip_free(m);
}

int main(void) {
    sl_ctx_init(&ctx);
    test_golden();
    test_case_layouts("gelu");
    test_case_layouts("legacy");
    test_openclip();
    test_config_errors();
    test_forward_args();
    test_clip_l();
    return sl_test_finish("test_textenc");
}
