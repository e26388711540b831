/* fuzz_adapter.c - libFuzzer target: an adapter file from arbitrary bytes.
 * sl_adapter_load takes a path, so the input is written to a scratch file and
 * loaded three ways: without sites (kohya names expanded from the built-in
 * table), strictly against the tiny golden U-Net's sites (shared/golden/
 * tiny-sd1/unet, planned once at B=1, 16x16, T=8), and leniently against them.
 * A module that loads against the sites must fit them (sl_adapter_check).
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fuzz_common.h"
#include "styles/adapter.h"
#include "unet/unet.h"

static SlUNet g_unet;   /* read-only after init */
static SlSites g_sites;

int LLVMFuzzerInitialize(int *argc, char ***argv) {
    (void)argc;
    (void)argv;
    char path[2048];
    snprintf(path, sizeof path, "%s/golden/tiny-sd1/unet/config.json", fuzz_shared_dir());
    SlCtx ctx;
    sl_ctx_init(&ctx);
    SlUNetConfig cfg;
    sl_sites_init(&g_sites);
    if (sl_unet_config_load(&cfg, path, &ctx) || sl_unet_init(&g_unet, &cfg, &ctx) ||
        sl_unet_plan(&g_unet, 1, 16, 16, 8, &ctx) || sl_sites_add_unet(&g_sites, &g_unet, &ctx)) {
        fprintf(stderr, "fuzz_adapter: %s\n", ctx.msg);
        exit(1);
    }
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    char path[1200];
    snprintf(path, sizeof path, "%s/adapter.safetensors", fuzz_tmp_dir());
    if (!fuzz_write(path, data, size)) return 0;
    SlCtx ctx;
    sl_ctx_init(&ctx);
    for (int mode = 0; mode < 3; mode++) {
        SlAdapterLoadOpts o = {0};
        o.lenient = mode == 2;
        o.alpha = (size & 1) ? 4.0f : 0.0f; /* both the "alpha known" and "alpha unknown" paths */
        SlAdapter ad;
        memset(&ad, 0, sizeof ad);
        SlAdapterFormat fmt;
        const SlSites *sites = mode ? &g_sites : NULL;
        if (sl_adapter_load(&ad, path, sites, &o, &fmt, &ctx) == SL_OK) {
            int matched = 0;
            if (sites && sl_adapter_check(&ad, sites, 0, &matched, &ctx) != SL_OK) abort();
            (void)sl_adapter_n_params(&ad);
            for (int i = 0; i < ad.n; i++) (void)sl_lora_scale(&ad, &ad.mods[i]);
        }
        sl_adapter_free(&ad);
    }
    return 0;
}
