/* probe_adapters.c - adapters in `stylora probe` (unet, unet-grad, denoise):
 * --lora FILE[:WEIGHT] hooks them (or --merge merges them) on a U-Net planned
 * for the probe's size, and unet-grad reports the gradient of every adapter
 * tensor under the file's own key with ".grad" appended. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "probe.h"
#include "probe_adapters.h"
#include "sample_jobs.h"

SlStatus probe_adapters_attach(ProbeAdapters *pa, const ProbeArgs *a, SlUNet *u, int want_grads, SlCtx *ctx) {
    memset(pa, 0, sizeof *pa);
    sl_sites_init(&pa->sites);
    SL_TRY(sl_sites_add_unet(&pa->sites, u, ctx));
    for (int i = 0; i < PROBE_MAX_LORA && a->lora[i]; i++) {
        char path[1024];
        SL_TRY(sample_split_lora("--lora", a->lora[i], path, sizeof path, &pa->w[i], ctx));
        SlAdapterLoadOpts lo = {a->lora_alpha, 0, NULL};
        SL_TRY(sl_adapter_load(&pa->ad[i], path, &pa->sites, &lo, &pa->fmt[i], ctx));
        pa->n++;
        if (want_grads) SL_TRY(sl_adapter_enable_grads(&pa->ad[i], ctx));
    }
    if (!pa->n) return SL_OK;
    SlAdapter *ads[PROBE_MAX_LORA];
    for (int i = 0; i < pa->n; i++) ads[i] = &pa->ad[i];
    if (a->merge) {
        if (want_grads) return sl_fail(ctx, SL_ERR_ARG, "unet-grad needs the adapters unmerged (drop --merge)");
        SL_TRY(sl_adapter_merge(&pa->ms, &pa->sites, ads, pa->w, pa->n, ctx));
        pa->merged = 1;
    } else {
        SL_TRY(sl_adapter_set_apply(&pa->set, &pa->sites, ads, pa->w, pa->n, 0.0f, 0, ctx));
        pa->applied = 1;
    }
    return SL_OK;
}

void probe_adapters_detach(ProbeAdapters *pa) {
    if (pa->merged) sl_adapter_unmerge(&pa->ms);
    if (pa->applied) sl_adapter_set_remove(&pa->set);
    for (int i = 0; i < pa->n; i++) sl_adapter_free(&pa->ad[i]);
    sl_sites_free(&pa->sites);
    memset(pa, 0, sizeof *pa);
}

/* The file key of a module tensor ("A", "B", "m") in the adapter's own format. */
static void file_key(char *out, size_t n, const char *mod, SlAdapterFormat fmt, char which, SlCtx *ctx) {
    if (fmt == SL_ADAPTER_FMT_KOHYA) {
        char flat[512];
        if (sl_kohya_flatten(flat, sizeof flat, mod, ctx) != SL_OK) snprintf(flat, sizeof flat, "%s", mod);
        snprintf(out, n, "%s.%s", flat, which == 'A' ? "lora_down.weight" : which == 'B' ? "lora_up.weight" : "dora_scale");
    } else if (fmt == SL_ADAPTER_FMT_DIFFUSERS_OLD) {
        const char *dot = strchr(mod, '.');
        snprintf(out, n, "%s.%s", dot ? dot + 1 : mod, which == 'A' ? "lora.down.weight" : which == 'B' ? "lora.up.weight" : "magnitude");
    } else {
        snprintf(out, n, "%s.%s", mod, which == 'A' ? "lora_A.weight" : which == 'B' ? "lora_B.weight" : "lora_magnitude_vector");
    }
}

SlStatus probe_adapters_write_grads(const ProbeAdapters *pa, const ProbeArgs *a, SlCtx *ctx) {
    for (int i = 0; i < pa->n; i++) {
        const SlAdapter *ad = &pa->ad[i];
        for (int k = 0; k < ad->n; k++) {
            const SlLoraMod *m = &ad->mods[k];
            char key[640], name[700];
            int64_t sa[4] = {m->r, m->I, m->k, m->k}, sb[4] = {m->O, m->r, 1, 1}, sm[1] = {m->O};
            int conv = m->conv || m->conv1x1;
            file_key(key, sizeof key, m->name, pa->fmt[i], 'A', ctx);
            snprintf(name, sizeof name, "%s.grad", key);
            SL_TRY(sl_st_writer_add(a->out, name, SL_F32, conv ? 4 : 2, sa, m->dA, ctx));
            file_key(key, sizeof key, m->name, pa->fmt[i], 'B', ctx);
            snprintf(name, sizeof name, "%s.grad", key);
            SL_TRY(sl_st_writer_add(a->out, name, SL_F32, conv ? 4 : 2, sb, m->dB, ctx));
            if (m->mag) {
                file_key(key, sizeof key, m->name, pa->fmt[i], 'm', ctx);
                snprintf(name, sizeof name, "%s.grad", key);
                SL_TRY(sl_st_writer_add(a->out, name, SL_F32, 1, sm, m->dmag, ctx));
            }
        }
    }
    return SL_OK;
}
