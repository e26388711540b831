/* test_styles_te.c - adapters on the tiny-sd1 CLIP text encoder (forward only).
 *
 * Targets "te" (q/k/v/out_proj, fc1, fc2 of every layer) with random B: weight 0
 * equals the base bit-exactly, the hooks change the output, the merge equals the
 * hooks within 1e-5 of max|out| and unmerges bit-exactly; a kohya file uses
 * lora_te_ names and loads back (through the model's names and through the
 * built-in table) to the same modules.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/rng.h"
#include "core/weights.h"
#include "styles/adapter.h"
#include "test_util.h"
#include "textenc/clip.h"

int main(void) {
    SlCtx ctx;
    sl_ctx_init(&ctx);
    char path[1200], dir[1100];
    snprintf(dir, sizeof dir, "%s/golden/tiny-sd1/text_encoder", sl_test_shared());
    SlClipConfig cfg;
    snprintf(path, sizeof path, "%s/config.json", dir);
    CHECK_OK(sl_clip_config_load(&cfg, path, &ctx), &ctx);
    SlWeights w;
    CHECK_OK(sl_weights_open_dir(&w, dir, &ctx), &ctx);
    SlClip *m = NULL;
    CHECK_OK(sl_clip_load(&m, &cfg, &w, SL_CLIP_LAYOUT_AUTO, &ctx), &ctx);
    if (sl_test_failures) return sl_test_finish("test_styles_te");
    const int B = 2, T = 16;
    CHECK_OK(sl_clip_reserve(m, B, T, &ctx), &ctx);
    SlSites sites;
    sl_sites_init(&sites);
    CHECK_OK(sl_sites_add_clip(&sites, m, NULL, &ctx), &ctx);
    CHECK(sites.n == 6 * cfg.L, "6 sites per layer (%d)", sites.n);
    int32_t ids[32];
    for (int i = 0; i < B * T; i++) ids[i] = (int32_t)((i * 37 + 11) % (int)cfg.V);
    const size_t n = (size_t)B * T * (size_t)cfg.D;
    float *base = malloc(sizeof(float) * n), *y = malloc(sizeof(float) * n), *ym = malloc(sizeof(float) * n);
    CHECK_OK(sl_clip_forward(m, ids, B, T, base, NULL, NULL, &ctx), &ctx);

    SlAdapterOpts o = sl_adapter_opts_default();
    o.targets = "te";
    o.rank = 4;
    o.alpha = 4;
    o.seed = 21;
    SlAdapter ad;
    CHECK_OK(sl_adapter_create(&ad, &sites, &o, &ctx), &ctx);
    if (sl_test_failures) return sl_test_finish("test_styles_te");
    CHECK(ad.n == 6 * cfg.L, "te preset hits %d modules", ad.n);
    for (int i = 0; i < ad.n; i++) {
        sl_rng_normal(ad.mods[i].B, ad.mods[i].O * ad.mods[i].r, 3, (uint64_t)i, 0);
        for (int64_t j = 0; j < ad.mods[i].O * ad.mods[i].r; j++) ad.mods[i].B[j] *= 0.2f;
    }
    SlAdapter *one[1] = {&ad};
    float w0[1] = {0.0f}, w1[1] = {0.9f};
    SlAdapterSet set;
    CHECK_OK(sl_adapter_set_apply(&set, &sites, one, w0, 1, 0.0f, 0, &ctx), &ctx);
    CHECK_OK(sl_clip_forward(m, ids, B, T, y, NULL, NULL, &ctx), &ctx);
    CHECK(!memcmp(y, base, sizeof(float) * n), "te: weight 0 == base bit-exactly");
    sl_adapter_set_weight(&set, 0, w1[0]);
    CHECK_OK(sl_clip_forward(m, ids, B, T, y, NULL, NULL, &ctx), &ctx);
    double d = 0;
    for (size_t i = 0; i < n; i++) d = fmax(d, fabs((double)y[i] - base[i]));
    CHECK(d > 1e-3, "te: the adapter changes the output (max diff %g)", d);
    sl_adapter_set_remove(&set);
    SlMergeState ms = {0};
    const size_t wb = m->weights.used;
    unsigned char *snap = malloc(wb);
    memcpy(snap, m->weights.base, wb);
    CHECK_OK(sl_adapter_merge(&ms, &sites, one, w1, 1, &ctx), &ctx);
    CHECK_OK(sl_clip_forward(m, ids, B, T, ym, NULL, NULL, &ctx), &ctx);
    sl_test_close("te: merged == hooks", ym, y, n, 1e-5 * sl_test_scale(y, n), 0);
    sl_adapter_unmerge(&ms);
    CHECK(!memcmp(snap, m->weights.base, wb), "te: unmerge bit-exact");

    SlAdapterSaveOpts so = {.format = SL_ADAPTER_FMT_KOHYA};
    snprintf(path, sizeof path, "%s/tmp_styles_te.safetensors", sl_test_binary());
    CHECK_OK(sl_adapter_save(&ad, path, &so, &ctx), &ctx);
    SlStFile f;
    CHECK_OK(sl_st_open(&f, path, &ctx), &ctx);
    CHECK(sl_st_find(&f, "lora_te_text_model_encoder_layers_1_mlp_fc2.lora_up.weight") != NULL, "lora_te_ key spelling");
    sl_st_close(&f);
    for (int pass = 0; pass < 2; pass++) {
        SlAdapter back;
        CHECK_OK(sl_adapter_load(&back, path, pass ? NULL : &sites, NULL, NULL, &ctx), &ctx);
        int same = back.n == ad.n;
        for (int i = 0; same && i < ad.n; i++) {   /* files are sorted by key: find by name */
            int j = 0;
            while (j < back.n && strcmp(back.mods[j].name, ad.mods[i].name)) j++;
            same = j < back.n && back.mods[j].alpha == 4.0f &&
                   !memcmp(back.mods[j].B, ad.mods[i].B, sizeof(float) * (size_t)(ad.mods[i].O * ad.mods[i].r));
            if (!same) fprintf(stderr, "module %s not found or differs\n", ad.mods[i].name);
        }
        CHECK(same, "te kohya round trip (%s)", pass ? "built-in names" : "model names");
        sl_adapter_free(&back);
    }
    free(snap);
    free(base); free(y); free(ym);
    sl_adapter_free(&ad);
    sl_sites_free(&sites);
    sl_clip_free(m);
    sl_weights_close(&w);
    return sl_test_finish("test_styles_te");
}
