/* fuzz_config.c - libFuzzer target: config.json text through sl_config_parse and
 * every getter on every key it holds, then through each model's config parser
 * (U-Net, VAE, CLIP text encoder, scheduler). A parser may refuse anything; it
 * must not crash, leak or read out of bounds.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "core/config.h"
#include "pipeline/schedule.h"
#include "textenc/clip.h"
#include "unet/unet.h"
#include "vae/vae.h"

static void getters(const SlConfig *cfg, const char *key, SlCtx *ctx) {
    int64_t iv, list[16];
    double dv;
    int bv, n;
    const char *sv, *slist[16];
    (void)sl_config_has(cfg, key);
    (void)sl_config_int(cfg, key, 1, -1000000, 1000000, &iv, ctx);
    (void)sl_config_int(cfg, key, 0, INT64_MIN, INT64_MAX, &iv, ctx);
    (void)sl_config_num(cfg, key, 0.5, &dv, ctx);
    (void)sl_config_bool(cfg, key, 0, &bv, ctx);
    (void)sl_config_str(cfg, key, NULL, &sv, ctx);
    if (sl_config_int_list(cfg, key, -1000, 1000, list, 16, &n, ctx) == SL_OK && (n < 0 || n > 16)) abort();
    if (sl_config_str_list(cfg, key, slist, 16, &n, ctx) == SL_OK) {
        if (n < 0 || n > 16) abort();
        for (int i = 0; i < n; i++) (void)strlen(slist[i]);
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    char *text = malloc(size + 1);
    if (!text) return 0;
    memcpy(text, data, size);
    text[size] = 0;
    SlCtx ctx;
    sl_ctx_init(&ctx);
    SlConfig cfg;
    if (sl_config_parse(&cfg, text, "fuzz/config.json", &ctx) == SL_OK) {
        const cJSON *it;
        cJSON_ArrayForEach(it, cfg.root) if (it->string) getters(&cfg, it->string, &ctx);
        getters(&cfg, "absent_key", &ctx);
        SlVaeConfig vc;
        (void)sl_vae_config_from(&vc, &cfg, &ctx);
        SlClipConfig cc;
        (void)sl_clip_config_read(&cc, &cfg, &ctx);
        sl_config_free(&cfg);
    }
    SlUNetConfig uc;
    if (sl_unet_config_parse(&uc, text, "fuzz/unet/config.json", &ctx) == SL_OK) {
        /* an accepted config must also build its module tree (shapes only, no weights) */
        SlUNet u;
        memset(&u, 0, sizeof u);
        (void)sl_unet_init_shapes(&u, &uc, &ctx);
        sl_unet_free(&u);
    }
    SlSchedConfig sc;
    if (sl_sched_config_parse(&sc, text, "fuzz/scheduler/scheduler_config.json", &ctx) == SL_OK)
        sl_sched_config_free(&sc);
    free(text);
    return 0;
}
