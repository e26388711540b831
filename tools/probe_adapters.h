/* probe_adapters.h - adapters for `stylora probe` (see probe_adapters.c). */
#ifndef SL_PROBE_ADAPTERS_H
#define SL_PROBE_ADAPTERS_H

#include "probe.h"
#include "styles/adapter.h"
#include "unet/unet.h"

typedef struct ProbeAdapters {
    SlSites sites;
    int n;
    SlAdapter ad[PROBE_MAX_LORA];
    SlAdapterFormat fmt[PROBE_MAX_LORA];
    float w[PROBE_MAX_LORA];
    SlAdapterSet set;
    SlMergeState ms;
    int applied, merged;
} ProbeAdapters;

/* u must be planned. With no --lora this only builds the sites. */
SlStatus probe_adapters_attach(ProbeAdapters *pa, const ProbeArgs *a, SlUNet *u, int want_grads, SlCtx *ctx);
void probe_adapters_detach(ProbeAdapters *pa);
/* Adds "<file key>.grad" outputs for every adapter tensor (the buffers stay owned by pa:
 * save before detaching). */
SlStatus probe_adapters_write_grads(const ProbeAdapters *pa, const ProbeArgs *a, SlCtx *ctx);

#endif
