/* cmd_probe.c - `stylora probe COMPONENT`: run one model component on tensors
 * read from a safetensors file and write its outputs to another, so numerics
 * can be compared with other implementations tensor by tensor.
 *
 * Each component is a row of k_components (name, inputs, outputs, runner);
 * the model issues add their rows. The output file is written atomically.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "probe.h"
#include "sample_jobs.h"

static const ProbeComponent *const k_components[] = {
    PROBE_COMPONENTS
};
static const int k_ncomponents = (int)(sizeof k_components / sizeof k_components[0]) - 1;

static void list_components(FILE *out) {
    fprintf(out, "components:\n");
    for (int i = 0; i < k_ncomponents; i++)
        fprintf(out, "  %-12s in: %s\n  %-12s out: %s\n", k_components[i]->name, k_components[i]->inputs, "",
                k_components[i]->outputs);
    if (k_ncomponents == 0) fprintf(out, "  (none yet)\n");
}

const SlStEntry *probe_input(const ProbeArgs *a, const char *name, int required, SlCtx *ctx) {
    const SlStEntry *e = sl_st_find(a->in, name);
    if (!e && required) sl_fail(ctx, SL_ERR_MISSING, "%s: input tensor '%s' not found", a->in->path, name);
    return e;
}

float *probe_input_f32(const ProbeArgs *a, const char *name, int ndim, int64_t *shape, SlCtx *ctx) {
    const SlStEntry *e = probe_input(a, name, 1, ctx);
    if (!e) return NULL;
    if (e->ndim != ndim) {
        char s[128];
        sl_fail(ctx, SL_ERR_SHAPE, "%s: input '%s' has shape %s, expected %d dimensions", a->in->path, name,
                sl_shape_str(e->ndim, e->shape, s, sizeof s), ndim);
        return NULL;
    }
    for (int i = 0; i < ndim; i++) shape[i] = e->shape[i];
    float *buf = sl_alloc((size_t)sl_shape_numel(ndim, shape) * sizeof(float));
    if (!buf) { sl_fail(ctx, SL_ERR_NOMEM, "out of memory reading '%s'", name); return NULL; }
    if (sl_st_read_f32(a->in, e, buf, ctx) != SL_OK) { sl_free(buf); return NULL; }
    return buf;
}

int cmd_probe(int argc, char **argv) {
    const char *model = NULL, *in = NULL, *out = NULL, *threads = NULL, *quiet = NULL;
    const char *extra[PROBE_MAX_EXTRA] = {0}, *lora[PROBE_MAX_LORA + 1] = {0}, *merge = NULL, *lora_alpha = NULL;
    const char *base = NULL, *config = NULL; /* [nf4] */
    const CliOpt opts[] = {
        {"--model", "DIR", "model folder (diffusers layout) or single-file checkpoint", &model, 0},
        {"--config", "DIR", "configs + tokenizer folder for a single-file checkpoint (or --set config=DIR)", &config, 0},
        {"--model-config", "DIR", "the same as --config (train's name for it)", &config, 0},
        {"--in", "IN.safetensors", "input tensors", &in, 0},
        {"--out", "OUT.safetensors", "where the outputs go (written atomically)", &out, 0},
        {"--threads", "N", "threads (default: all cores)", &threads, 0},
        {"--set", "KEY=VALUE", "component-specific setting", extra, PROBE_MAX_EXTRA},
        {"--lora", "FILE[:WEIGHT]", "apply an adapter (unet, unet-grad, denoise)", lora, PROBE_MAX_LORA},
        {"--merge", NULL, "merge the adapters into the weights first", &merge, 0},
        {"--lora-alpha", "A", "alpha in (0, 10000] for every module, over what the adapter files store", &lora_alpha, 0},
        {"--quiet", NULL, "no progress or info lines", &quiet, 0},
        {"--base", "KIND", "U-Net weights: fp32 (default) | fp16 (binary16 linears+convs) | bf16 (bfloat16 linears+convs on the bf16 kernel) | nf4 (--set nf4_layers=LIST, --set nf4_dq=1)", &base, 0}, /* [nf4] */
        {0},
    };
    const char *synopsis = "COMPONENT --model DIR --in IN.safetensors --out OUT.safetensors [options]";
    const char *pos[1];
    int npos;
    for (int i = 1; i < argc; i++)
        if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) {
            cli_usage(stdout, "probe", synopsis, opts);
            list_components(stdout);
            return 0;
        }
    cli_parse("probe", synopsis, opts, argc, argv, pos, 1, &npos);
    if (npos != 1 || !model || !in || !out) {
        cli_usage(stderr, "probe", synopsis, opts);
        list_components(stderr);
        return 2;
    }
    const ProbeComponent *comp = NULL;
    for (int i = 0; i < k_ncomponents; i++)
        if (strcmp(k_components[i]->name, pos[0]) == 0) comp = k_components[i];
    if (!comp) {
        fprintf(stderr, "stylora probe: error: unknown component '%s'\n", pos[0]);
        list_components(stderr);
        return 2;
    }
    SlCtx ctx;
    cli_ctx_init(&ctx, quiet != NULL);
    cli_check_out_file("probe", "--out", out);
    for (int i = 0; i < PROBE_MAX_LORA && lora[i]; i++) { /* weights checked before the model loads */
        char path[1024];
        float w;
        if (sample_split_lora("--lora", lora[i], path, sizeof path, &w, &ctx) != SL_OK) return cli_fail("probe", &ctx);
    }
    if (threads) cli_threads(cli_int("probe", "--threads", threads, 1, 1024));
    int saved = 0;
    ProbeArgs a = {.model = model, .out_path = out, .saved = &saved, .extra = extra, .threads = threads ? (int)cli_int("probe", "--threads", threads, 1, 1024) : 0,
                   .lora = lora, .merge = merge != NULL, .lora_alpha = lora_alpha ? (float)cli_num("probe", "--lora-alpha", lora_alpha, 0, 10000, CLI_OPEN_LO) : 0, .base = base,
                   .config = config}; /* [nf4] .base */
    SlStFile fin;
    if (sl_st_open(&fin, in, &ctx) != SL_OK) return cli_fail("probe", &ctx);
    a.in = &fin;
    SlStWriter w;
    sl_st_writer_init(&w);
    a.out = &w;
    ProbeScratch scratch = {0};
    a.scratch = &scratch;
    SlStatus st = sl_st_writer_meta(&w, "stylora.probe", comp->name, &ctx);
    if (st == SL_OK) st = comp->run(&a, &ctx);
    /* components whose outputs die with them save themselves (unet-grad) */
    if (st == SL_OK && !saved) st = sl_st_writer_save(&w, out, &ctx);
    sl_st_writer_free(&w);
    for (int i = 0; i < scratch.n; i++) sl_free(scratch.ptrs[i]);
    sl_st_close(&fin);
    if (st != SL_OK) return cli_fail("probe", &ctx);
    return 0;
}

float *probe_keep(const ProbeArgs *a, float *p) {
    if (p && a->scratch->n < PROBE_MAX_SCRATCH) a->scratch->ptrs[a->scratch->n++] = p;
    return p;
}

const char *probe_setting(const ProbeArgs *a, const char *key) {
    size_t kl = strlen(key);
    for (int i = 0; i < PROBE_MAX_EXTRA && a->extra[i]; i++)
        if (strncmp(a->extra[i], key, kl) == 0 && a->extra[i][kl] == '=') return a->extra[i] + kl + 1;
    return NULL;
}
