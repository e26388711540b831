/* probe.h - the component table of `stylora probe` (see cmd_probe.c).
 * A component reads named inputs from a->in and adds named outputs to a->out;
 * buffers it allocates for outputs are handed to probe_keep (freed after save).
 */
#ifndef SL_PROBE_H
#define SL_PROBE_H

#include "core/safetensors.h"

#define PROBE_MAX_EXTRA 16
#define PROBE_MAX_SCRATCH 256
#define PROBE_MAX_LORA 8

typedef struct ProbeScratch { int n; void *ptrs[PROBE_MAX_SCRATCH]; } ProbeScratch;

typedef struct ProbeArgs {
    const char *model;
    const char *out_path;  /* where the writer saves */
    int *saved;            /* set to 1 by a component that saved the writer itself */
    const SlStFile *in;
    SlStWriter *out;
    const char **extra;  /* "--set KEY=VALUE" strings */
    int threads;         /* 0 = default */
    const char **lora;   /* PROBE_MAX_LORA "FILE[:WEIGHT]" strings (NULL-terminated early) */
    int merge;           /* merge the adapters instead of hooking them */
    float lora_alpha;    /* alpha for files that store none (0: none) */
    const char *base;    /* [nf4] NULL/"fp32" or "nf4" (--set nf4_layers=LIST, nf4_dq=1) */
    const char *config;  /* --config / --model-config DIR (or --set config=DIR): a single file's configs */
    ProbeScratch *scratch;
} ProbeArgs;

typedef struct ProbeComponent {
    const char *name;
    const char *inputs;   /* for --help */
    const char *outputs;
    SlStatus (*run)(const ProbeArgs *a, SlCtx *ctx);
} ProbeComponent;

const SlStEntry *probe_input(const ProbeArgs *a, const char *name, int required, SlCtx *ctx);
/* Reads input `name` as F32 (any numeric dtype), checks its rank, fills shape;
 * the buffer is owned by the caller (or probe_keep). */
float *probe_input_f32(const ProbeArgs *a, const char *name, int ndim, int64_t *shape, SlCtx *ctx);
float *probe_keep(const ProbeArgs *a, float *p);
const char *probe_setting(const ProbeArgs *a, const char *key);

/* The registered components (tools/probe_models.c); NULL ends the list. */
extern const ProbeComponent probe_textenc, probe_vae_encode, probe_vae_decode, probe_unet, probe_unet_grad, probe_denoise;
#define PROBE_COMPONENTS &probe_textenc, &probe_vae_encode, &probe_vae_decode, &probe_unet, &probe_unet_grad, &probe_denoise, NULL
#endif
