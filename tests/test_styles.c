/* test_styles.c - adapters on the tiny-sd1 U-Net against the shared golden files.
 *
 * 1. The golden PEFT LoRA (r=4, alpha 8 given on load) through styles' hooks gives
 *    lora.out (1e-4 of max|ref|), lora.loss (1e-4 relative), every lora.grad.* (1e-3
 *    of each gradient's max|ref|).
 * 2. Merged: the hook-free U-Net gives lora.out too and equals the unmerged output
 *    within 1e-5 of max|out|; unmerge restores every weight bit-exactly.
 * 3. Saved as kohya and as PEFT and loaded back: tensors and alphas bit-exact,
 *    metadata preserved, lora.out reproduced from the kohya copy.
 * 4. Weight 0 equals the base output bit-exactly; two adapters at once equal the sum
 *    of their deltas on a module (1e-5) and the merge of both on the whole net.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/rng.h"
#include "core/safetensors.h"
#include "core/weights.h"
#include "styles/adapter.h"
#include "test_util.h"
#include "unet/unet.h"

#define FWD_TOL 1e-4   /* of max |ref| */
#define GRAD_TOL 1e-3  /* of max |ref| per gradient */
#define MERGE_TOL 1e-5 /* merged vs unmerged, of max |out| */

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

static int same_adapter(const SlAdapter *a, const SlAdapter *b) {
    if (a->n != b->n) return 0;
    for (int i = 0; i < a->n; i++) {
        const SlLoraMod *x = &a->mods[i];
        int j = 0;
        while (j < b->n && strcmp(b->mods[j].name, x->name)) j++;
        if (j == b->n) { fprintf(stderr, "module %s lost\n", x->name); return 0; }
        const SlLoraMod *y = &b->mods[j];
        if (x->r != y->r || x->I != y->I || x->O != y->O || x->k != y->k || x->alpha != y->alpha || x->conv != y->conv)
            { fprintf(stderr, "module %s: dims/alpha differ (%g vs %g)\n", x->name, x->alpha, y->alpha); return 0; }
        if (memcmp(x->A, y->A, sizeof(float) * (size_t)(x->r * x->I * x->k * x->k)) ||
            memcmp(x->B, y->B, sizeof(float) * (size_t)(x->O * x->r)))
            { fprintf(stderr, "module %s: values differ\n", x->name); return 0; }
        if ((x->mag == NULL) != (y->mag == NULL) || (x->mag && memcmp(x->mag, y->mag, sizeof(float) * (size_t)x->O)))
            return 0;
    }
    return 1;
}

static double max_abs_diff(const float *a, const float *b, size_t n) {
    double m = 0;
    for (size_t i = 0; i < n; i++) {
        double d = fabs((double)a[i] - b[i]);
        if (d > m || d != d) m = d != d ? INFINITY : d;
    }
    return m;
}

int main(void) {
    SlCtx ctx;
    sl_ctx_init(&ctx);
    char dir[1024], path[1200], tmp[1200];
    snprintf(dir, sizeof dir, "%s/golden/tiny-sd1", sl_test_shared());
    SlUNetConfig cfg;
    snprintf(path, sizeof path, "%s/unet/config.json", dir);
    CHECK_OK(sl_unet_config_load(&cfg, path, &ctx), &ctx);
    if (sl_test_failures) return sl_test_finish("test_styles");
    SlUNet u;
    CHECK_OK(sl_unet_init(&u, &cfg, &ctx), &ctx);
    SlWeights w;
    snprintf(path, sizeof path, "%s/unet", dir);
    CHECK_OK(sl_weights_open_dir(&w, path, &ctx), &ctx);
    CHECK_OK(sl_unet_load(&u, &w, &ctx), &ctx);
    SlStFile ex;
    snprintf(path, sizeof path, "%s/expected.safetensors", dir);
    CHECK_OK(sl_st_open(&ex, path, &ctx), &ctx);
    if (sl_test_failures) return sl_test_finish("test_styles");
    int64_t n_o;
    float *sample = load_f32(&ex, "unet.in.sample", NULL, &ctx);
    float *ehs = load_f32(&ex, "unet.in.encoder_hidden_states", NULL, &ctx);
    float *ts = load_f32(&ex, "unet.in.timesteps", NULL, &ctx);
    float *base_ref = load_f32(&ex, "unet.out", &n_o, &ctx);
    float *lref = load_f32(&ex, "lora.out", NULL, &ctx);
    float *target = load_f32(&ex, "lora.in.target", NULL, &ctx);
    float *lloss = load_f32(&ex, "lora.loss", NULL, &ctx);
    CHECK(sample && ehs && ts && base_ref && lref && target && lloss, "golden inputs present");
    if (sl_test_failures) return sl_test_finish("test_styles");
    const SlStEntry *es = sl_st_find(&ex, "unet.in.sample"), *ee = sl_st_find(&ex, "unet.in.encoder_hidden_states");
    CHECK_OK(sl_unet_plan(&u, es->shape[0], es->shape[2], es->shape[3], ee->shape[1], &ctx), &ctx);
    SlSites sites;
    sl_sites_init(&sites);
    CHECK_OK(sl_sites_add_unet(&sites, &u, &ctx), &ctx);
    const size_t no = (size_t)n_o;
    float *out = calloc(no, sizeof(float)), *base = calloc(no, sizeof(float)), *o2 = calloc(no, sizeof(float));
    float *dout = calloc(no, sizeof(float));
    sl_unet_forward(&u, base, sample, ts, ehs);
    const double bscale = sl_test_scale(base_ref, no), lscale = sl_test_scale(lref, no);
    sl_test_close("base unet.out", base, base_ref, no, FWD_TOL * bscale, 0);

    /* ---- 1. golden LoRA through the hooks ---- */
    snprintf(path, sizeof path, "%s/lora/pytorch_lora_weights.safetensors", dir);
    SlAdapter gold;
    SlAdapterLoadOpts lo = {.alpha = 8.0f};
    SlAdapterFormat fmt;
    CHECK_OK(sl_adapter_load(&gold, path, &sites, &lo, &fmt, &ctx), &ctx);
    if (sl_test_failures) return sl_test_finish("test_styles");
    CHECK(fmt == SL_ADAPTER_FMT_PEFT && gold.n == 32 && gold.mods[0].r == 4 && gold.mods[0].alpha == 8.0f,
          "golden: peft, 32 modules, r 4, alpha 8 (%s, %d)", sl_adapter_format_name(fmt), gold.n);
    CHECK_OK(sl_adapter_enable_grads(&gold, &ctx), &ctx);
    SlAdapterSet set;
    SlAdapter *one[1] = {&gold};
    float w1[1] = {1.0f};
    CHECK_OK(sl_adapter_set_apply(&set, &sites, one, w1, 1, 0.0f, 0, &ctx), &ctx);
    sl_unet_forward(&u, out, sample, ts, ehs);
    sl_test_close("lora.out (hooks)", out, lref, no, FWD_TOL * lscale, 0);
    double loss = 0;
    for (size_t i = 0; i < no; i++) {
        double d = (double)out[i] - target[i];
        loss += d * d;
        dout[i] = (float)(2.0 * d / (double)no);
    }
    float lossf = (float)(loss / (double)no);
    sl_test_close("lora.loss", &lossf, lloss, 1, 0, 1e-4);
    sl_adapter_zero_grads(&gold);
    sl_unet_backward(&u, NULL, dout);
    int n_grads = 0;
    for (int i = 0; i < gold.n; i++)
        for (int ab = 0; ab < 2; ab++) {
            char key[300];
            snprintf(key, sizeof key, "lora.grad.%s.lora_%c.weight", gold.mods[i].name, ab ? 'B' : 'A');
            int64_t n;
            float *g = load_f32(&ex, key, &n, &ctx);
            CHECK(g != NULL, "%s present", key);
            if (!g) continue;
            sl_test_close(key, ab ? gold.mods[i].dB : gold.mods[i].dA, g, (size_t)n, GRAD_TOL * sl_test_scale(g, (size_t)n), 0);
            n_grads++;
            free(g);
        }
    CHECK(n_grads == 64, "64 gradients compared (%d)", n_grads);

    /* ---- 4a. weight 0 equals the base exactly ---- */
    sl_adapter_set_weight(&set, 0, 0.0f);
    sl_unet_forward(&u, o2, sample, ts, ehs);
    CHECK(!memcmp(o2, base, no * sizeof(float)), "weight 0 == base bit-exactly (max diff %g)", max_abs_diff(o2, base, no));
    sl_adapter_set_weight(&set, 0, 1.0f);
    sl_adapter_set_remove(&set);
    sl_unet_forward(&u, o2, sample, ts, ehs);
    CHECK(!memcmp(o2, base, no * sizeof(float)), "removed set == base bit-exactly");

    /* ---- 2. merge / unmerge ---- */
    const size_t wbytes = u.weights.used;
    unsigned char *snap = malloc(wbytes);
    memcpy(snap, u.weights.base, wbytes);
    SlMergeState ms = {0};
    CHECK_OK(sl_adapter_merge(&ms, &sites, one, w1, 1, &ctx), &ctx);
    sl_unet_forward(&u, o2, sample, ts, ehs);
    sl_test_close("lora.out (merged)", o2, lref, no, FWD_TOL * lscale, 0);
    double md = max_abs_diff(o2, out, no);
    CHECK(md <= MERGE_TOL * lscale, "merged vs unmerged: max diff %.3g > %.3g", md, MERGE_TOL * lscale);
    printf("ok   merged vs unmerged: max abs diff %.3g (scale %.3g)\n", md, lscale);
    sl_adapter_unmerge(&ms);
    CHECK(!memcmp(snap, u.weights.base, wbytes), "unmerge restores every weight bit-exactly");

    /* ---- 3. round trips ---- */
    SlAdapterSaveOpts so = {.format = SL_ADAPTER_FMT_KOHYA};
    CHECK_OK(sl_adapter_set_meta(&gold, "ss_training_comment", "styles round trip", &ctx), &ctx);
    snprintf(tmp, sizeof tmp, "%s/tmp_styles_kohya.safetensors", sl_test_binary());
    CHECK_OK(sl_adapter_save(&gold, tmp, &so, &ctx), &ctx);
    SlAdapter ko;
    CHECK_OK(sl_adapter_load(&ko, tmp, &sites, NULL, &fmt, &ctx), &ctx);
    CHECK(fmt == SL_ADAPTER_FMT_KOHYA, "kohya detected (%s)", sl_adapter_format_name(fmt));
    CHECK(same_adapter(&gold, &ko), "kohya round trip bit-exact");
    const char *cm = sl_adapter_get_meta(&ko, "ss_training_comment"), *nd = sl_adapter_get_meta(&ko, "ss_network_dim"),
               *na = sl_adapter_get_meta(&ko, "ss_network_alpha"), *nm = sl_adapter_get_meta(&ko, "ss_network_module");
    CHECK(cm && !strcmp(cm, "styles round trip") && nd && !strcmp(nd, "4") && na && !strcmp(na, "8") && nm &&
              !strcmp(nm, "networks.lora"), "kohya metadata (%s, %s, %s, %s)", cm ? cm : "-", nd ? nd : "-", na ? na : "-", nm ? nm : "-");
    /* kohya key spelling */
    SlStFile kf;
    CHECK_OK(sl_st_open(&kf, tmp, &ctx), &ctx);
    CHECK(sl_st_find(&kf, "lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn1_to_q.lora_down.weight") &&
          sl_st_find(&kf, "lora_unet_mid_block_attentions_0_transformer_blocks_0_attn2_to_out_0.alpha") && kf.n == 96,
          "kohya keys spelled as sd-scripts (%d tensors)", kf.n);
    sl_st_close(&kf);
    SlAdapter *kone[1] = {&ko};
    CHECK_OK(sl_adapter_set_apply(&set, &sites, kone, w1, 1, 0.0f, 0, &ctx), &ctx);
    sl_unet_forward(&u, o2, sample, ts, ehs);
    sl_test_close("lora.out (via kohya file)", o2, lref, no, FWD_TOL * lscale, 0);
    sl_adapter_set_remove(&set);
    /* kohya without sites (built-in name table) gives the same module names */
    SlAdapter ko2;
    CHECK_OK(sl_adapter_load(&ko2, tmp, NULL, NULL, NULL, &ctx), &ctx);
    CHECK(same_adapter(&gold, &ko2), "kohya names expanded without a model");
    sl_adapter_free(&ko2);

    so.format = SL_ADAPTER_FMT_PEFT;
    snprintf(tmp, sizeof tmp, "%s/tmp_styles_peft.safetensors", sl_test_binary());
    CHECK_OK(sl_adapter_save(&ko, tmp, &so, &ctx), &ctx);
    SlAdapter pe;
    CHECK_OK(sl_adapter_load(&pe, tmp, &sites, NULL, &fmt, &ctx), &ctx);   /* alpha from lora_adapter_metadata */
    CHECK(fmt == SL_ADAPTER_FMT_PEFT && same_adapter(&gold, &pe), "peft round trip bit-exact");
    cm = sl_adapter_get_meta(&pe, "ss_training_comment");
    CHECK(cm && !strcmp(cm, "styles round trip"), "metadata survives kohya -> peft");
    sl_adapter_free(&pe);

    /* ---- 4b. two adapters at once ---- */
    SlAdapterOpts co = sl_adapter_opts_default();
    co.targets = "attn,proj,ff,resnet";
    co.rank = 3;
    co.alpha = 6;
    co.seed = 7;
    SlAdapter sec;
    CHECK_OK(sl_adapter_create(&sec, &sites, &co, &ctx), &ctx);
    int n_conv = 0;
    for (int i = 0; i < sec.n; i++) {
        SlLoraMod *lm = &sec.mods[i];
        n_conv += lm->conv;
        sl_rng_normal(lm->B, lm->O * lm->r, 99, (uint64_t)i, 0);
        for (int64_t j = 0; j < lm->O * lm->r; j++) lm->B[j] *= 0.05f;
    }
    CHECK(n_conv > 0 && sec.n > 32, "second adapter: %d modules, %d LoCon", sec.n, n_conv);
    /* module level: y(both) - y0 == (y(gold) - y0) + (y(sec) - y0) */
    int si = sl_sites_find(&sites, "unet.down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q");
    CHECK(si >= 0, "site found");
    if (si >= 0) {
        SlLinear *L = sites.v[si].lin;
        const int64_t N = 8;
        float *x = malloc(sizeof(float) * (size_t)(N * L->I)), *y0 = malloc(sizeof(float) * (size_t)(N * L->O));
        float *ya = malloc(sizeof(float) * (size_t)(N * L->O)), *yb = malloc(sizeof(float) * (size_t)(N * L->O));
        float *yab = malloc(sizeof(float) * (size_t)(N * L->O));
        sl_rng_normal(x, N * L->I, 5, 0, 0);
        SlAdapter *two[2] = {&gold, &sec};
        float w2[2] = {0.8f, 0.5f};
        sl_linmod_forward(L, y0, x, N);
        CHECK_OK(sl_adapter_set_apply(&set, &sites, two, w2, 1, 0.0f, 0, &ctx), &ctx);
        sl_linmod_forward(L, ya, x, N);
        sl_adapter_set_remove(&set);
        CHECK_OK(sl_adapter_set_apply(&set, &sites, two + 1, w2 + 1, 1, 0.0f, 0, &ctx), &ctx);
        sl_linmod_forward(L, yb, x, N);
        sl_adapter_set_remove(&set);
        CHECK_OK(sl_adapter_set_apply(&set, &sites, two, w2, 2, 0.0f, 0, &ctx), &ctx);
        sl_linmod_forward(L, yab, x, N);
        for (int64_t i = 0; i < N * L->O; i++) ya[i] = ya[i] + yb[i] - y0[i];
        sl_test_close("two adapters == sum of deltas (module)", yab, ya, (size_t)(N * L->O), 1e-5 * sl_test_scale(ya, (size_t)(N * L->O)), 0);
        sl_unet_forward(&u, out, sample, ts, ehs);
        sl_adapter_set_remove(&set);
        CHECK_OK(sl_adapter_merge(&ms, &sites, two, w2, 2, &ctx), &ctx);
        sl_unet_forward(&u, o2, sample, ts, ehs);
        sl_adapter_unmerge(&ms);
        double sc = sl_test_scale(out, no);
        sl_test_close("two adapters: hooks == merged (net)", o2, out, no, MERGE_TOL * sc, 0);
        CHECK(max_abs_diff(out, lref, no) > 1e-3 * sc, "second adapter changes the output");
        CHECK(!memcmp(snap, u.weights.base, wbytes), "unmerge of two adapters (one LoCon) bit-exact");
        free(x); free(y0); free(ya); free(yb); free(yab);
    }
    /* save / load LoCon in both formats */
    so.format = SL_ADAPTER_FMT_KOHYA;
    snprintf(tmp, sizeof tmp, "%s/tmp_styles_locon.safetensors", sl_test_binary());
    CHECK_OK(sl_adapter_save(&sec, tmp, &so, &ctx), &ctx);
    SlAdapter lc;
    CHECK_OK(sl_adapter_load(&lc, tmp, &sites, NULL, NULL, &ctx), &ctx);
    CHECK(same_adapter(&sec, &lc), "LoCon kohya round trip bit-exact");
    const char *args = sl_adapter_get_meta(&lc, "ss_network_args");
    CHECK(args && strstr(args, "conv_dim"), "ss_network_args has conv_dim: %s", args ? args : "-");
    sl_adapter_free(&lc);
    so.format = SL_ADAPTER_FMT_PEFT;
    CHECK_OK(sl_adapter_save(&sec, tmp, &so, &ctx), &ctx);
    CHECK_OK(sl_adapter_load(&lc, tmp, &sites, NULL, NULL, &ctx), &ctx);
    CHECK(same_adapter(&sec, &lc), "LoCon peft round trip bit-exact");
    sl_adapter_free(&lc);

    free(snap);
    sl_adapter_free(&sec);
    sl_adapter_free(&ko);
    sl_adapter_free(&gold);
    sl_sites_free(&sites);
    free(out); free(base); free(o2); free(dout);
    free(sample); free(ehs); free(ts); free(base_ref); free(lref); free(target); free(lloss);
    sl_st_close(&ex);
    sl_weights_close(&w);
    sl_unet_free(&u);
    return sl_test_finish("test_styles");
}
