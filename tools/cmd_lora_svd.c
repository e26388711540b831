/* cmd_lora_svd.c - `stylora lora resize` and `stylora lora merge --to-adapter` (styles/resize.h).
 *
 *   stylora lora resize IN (--rank R | --dynamic sv_fro:P|sv_ratio:P|sv_cumulative:P) --out OUT
 *           [--conv-rank R] [--to kohya|peft] [--dtype T] [--alpha A] [--lenient]
 *       Reduces each module's rank by SVD of its delta (kohya's resize_lora.py): --rank R
 *       the new rank (modules already at or below it keep theirs), --dynamic a per-module
 *       rank from the singular values (with --rank as the cap). The scale alpha/r of each
 *       module is kept. Output form: --to, else the input's; dtype: --dtype, else the input's.
 *   stylora lora merge --lora A[:W] --lora B[:W] ... --to-adapter OUT [--rank R] [--conv-rank R]
 *           [--dynamic M:P] [--to kohya|peft] [--dtype T] [--alpha A]
 *       One adapter from several (svd_merge_lora.py): per module the sum of W s B A, factored
 *       at --rank (default: the sum of the input ranks, which is exact), alpha = rank.
 *       No model is read. `lora merge` hands off here when --to-adapter is given.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "cli.h"
#include "core/safetensors.h"
#include "lora_svd.h"
#include "sample_jobs.h" /* sample_split_lora: the one FILE[:WEIGHT] parser */
#include "styles/adapter.h"
#include "styles/resize.h"

#define MAX_LORA SL_ADAPTER_MAX_ACTIVE

/* --dtype: the names convert takes, the safetensors names and the fp* names of the issue. */
static int parse_dtype(const char *s, SlDType *dt) {
    static const struct { const char *name; SlDType dt; } names[] = {
        {"f32", SL_F32}, {"fp32", SL_F32}, {"float", SL_F32}, {"f16", SL_F16}, {"fp16", SL_F16}, {"bf16", SL_BF16},
    };
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++)
        if (!strcasecmp(s, names[i].name)) {
            *dt = names[i].dt;
            return 1;
        }
    return 0;
}

/* The options both commands share, parsed into the library's terms; exits 2 on a bad value. */
typedef struct SvdArgs {
    const char *rank, *conv_rank, *dynamic, *to, *dtype, *alpha, *quiet;
} SvdArgs;

static void svd_args_parse(const char *cmd, const SvdArgs *a, SlRankOpts *ro, SlAdapterLoadOpts *lo,
                           SlAdapterSaveOpts *so, int *have_to, int *have_dtype, SlCtx *ctx) {
    memset(ro, 0, sizeof *ro);
    if (a->rank) ro->rank = cli_int(cmd, "--rank", a->rank, 1, 100000);
    if (a->conv_rank) ro->conv_rank = cli_int(cmd, "--conv-rank", a->conv_rank, 1, 100000);
    if (a->dynamic && sl_rank_dynamic_parse(ro, a->dynamic, ctx) != SL_OK) {
        fprintf(stderr, "stylora %s: error: %s\n", cmd, ctx->msg);
        exit(2);
    }
    if (a->alpha) lo->alpha = (float)cli_num(cmd, "--alpha", a->alpha, 0, 10000, CLI_OPEN_LO);
    *have_to = a->to != NULL;
    if (a->to) {
        if (!strcmp(a->to, "kohya")) so->format = SL_ADAPTER_FMT_KOHYA;
        else if (!strcmp(a->to, "peft") || !strcmp(a->to, "diffusers")) so->format = SL_ADAPTER_FMT_PEFT;
        else {
            fprintf(stderr, "stylora %s: error: --to must be kohya or peft, got '%s'\n", cmd, a->to);
            exit(2);
        }
    }
    *have_dtype = a->dtype != NULL;
    if (a->dtype && !parse_dtype(a->dtype, &so->dtype)) {
        fprintf(stderr, "stylora %s: error: --dtype must be f32, f16 or bf16, got '%s'\n", cmd, a->dtype);
        exit(2);
    }
}

/* The dtype of an adapter file's weight tensors (F16/BF16 if any, else F32). */
static SlStatus file_dtype(const char *path, SlDType *dt, SlCtx *ctx) {
    SlStFile f;
    SL_TRY(sl_st_open(&f, path, ctx));
    *dt = SL_F32;
    for (int i = 0; i < f.n; i++)
        if (f.entries[i].ndim >= 2 && (f.entries[i].dtype == SL_F16 || f.entries[i].dtype == SL_BF16)) *dt = f.entries[i].dtype;
    sl_st_close(&f);
    return SL_OK;
}

static SlAdapterFormat out_format(SlAdapterFormat in) {
    return in == SL_ADAPTER_FMT_KOHYA ? SL_ADAPTER_FMT_KOHYA : SL_ADAPTER_FMT_PEFT;
}

static void print_stats(const char *what, const char *out, const SlAdapterSaveOpts *so, const SlResizeStats *s) {
    fprintf(stderr, "%s -> %s (%s, %s): %d modules, input ranks <= %lld, output ranks %lld..%lld, "
            "Frobenius norm retained %.2f%% (mean)\n",
            what, out, sl_adapter_format_name(so->format), sl_dtype_name(so->dtype), s->n_mods,
            (long long)s->old_rank_max, (long long)s->new_rank_min, (long long)s->new_rank_max,
            100.0 * s->fro_retained_mean);
}

#define SVD_OPTS(a)                                                                                                  \
    {"--rank", "R", "new rank of linear (and 1x1) modules in [1, 100000]; with --dynamic, the cap", &(a).rank, 0},   \
    {"--conv-rank", "R", "new rank of k x k LoCon modules (default: --rank)", &(a).conv_rank, 0},                    \
    {"--dynamic", "M:P", "rank per module from the singular values: sv_fro:P (keep P of the Frobenius norm), "      \
                         "sv_cumulative:P (P of the sum), sv_ratio:P (down to max/P)", &(a).dynamic, 0},            \
    {"--to", "kohya|peft", "output key form", &(a).to, 0},                                                          \
    {"--dtype", "f32|f16|bf16", "output dtype (default: the input's)", &(a).dtype, 0},                              \
    {"--alpha", "A", "alpha in (0, 10000] for adapter files that store none (PEFT)", &(a).alpha, 0},               \
    {"--lora-alpha", "A", "the same as --alpha (sample's name for it)", &(a).alpha, 0},                            \
    {"--quiet", NULL, "only warnings and errors", &(a).quiet, 0}

int lora_resize_main(int argc, char **argv) {
    SvdArgs a = {0};
    const char *out = NULL, *lenient = NULL;
    const CliOpt opts[] = {
        {"--out", "OUT", "output .safetensors file", &out, 0},
        SVD_OPTS(a),
        {"--lenient", NULL, "skip unknown modules / misfit shapes with a warning", &lenient, 0},
        {NULL, NULL, NULL, NULL, 0},
    };
    const char *pos[1];
    int npos;
    cli_parse("lora resize", "IN (--rank R | --dynamic M:P) --out OUT [options]", opts, argc, argv, pos, 1, &npos);
    SlCtx ctx;
    cli_ctx_init(&ctx, a.quiet != NULL);
    if (npos != 1 || !out || (!a.rank && !a.dynamic)) {
        fprintf(stderr, "stylora lora resize: error: need IN, --out and --rank or --dynamic (see --help)\n");
        return 2;
    }
    SlRankOpts ro;
    SlAdapterLoadOpts lo = {.lenient = lenient != NULL};
    SlAdapterSaveOpts so = {0};
    int have_to, have_dtype;
    svd_args_parse("lora resize", &a, &ro, &lo, &so, &have_to, &have_dtype, &ctx);
    cli_check_out_file("lora resize", "--out", out);
    SlAdapter in, res;
    SlAdapterFormat fin;
    if (!have_dtype && file_dtype(pos[0], &so.dtype, &ctx) != SL_OK) return cli_fail("lora resize", &ctx);
    if (sl_adapter_load(&in, pos[0], NULL, &lo, &fin, &ctx) != SL_OK) return cli_fail("lora resize", &ctx);
    if (!have_to) so.format = out_format(fin);
    SlResizeStats s;
    int rc = 0;
    if (sl_adapter_resize(&res, &in, &ro, &s, &ctx) != SL_OK) rc = cli_fail("lora resize", &ctx);
    else {
        if (sl_adapter_save(&res, out, &so, &ctx) != SL_OK) rc = cli_fail("lora resize", &ctx);
        else print_stats(pos[0], out, &so, &s);
        sl_adapter_free(&res);
    }
    sl_adapter_free(&in);
    return rc;
}

int lora_merge_to_adapter(int argc, char **argv) {
    SvdArgs a = {0};
    const char *out = NULL;
    const char *loras[MAX_LORA + 1] = {0};
    const CliOpt opts[] = {
        {"--lora", "FILE[:W]", "adapter and its weight in [-10, 10] (default 1)", loras, MAX_LORA},
        {"--to-adapter", "OUT", "output adapter .safetensors file", &out, 0},
        SVD_OPTS(a),
        {NULL, NULL, NULL, NULL, 0},
    };
    const char *pos[1];
    int npos;
    cli_parse("lora merge", "--lora FILE[:W] [--lora ...] --to-adapter OUT [--rank R | --dynamic M:P]", opts, argc, argv,
              pos, 0, &npos);
    SlCtx ctx;
    cli_ctx_init(&ctx, a.quiet != NULL);
    if (!out || !loras[0]) {
        fprintf(stderr, "stylora lora merge: error: --to-adapter needs --lora (see --help)\n");
        return 2;
    }
    SlRankOpts ro;
    SlAdapterLoadOpts lo = {0};
    SlAdapterSaveOpts so = {0};
    int have_to, have_dtype;
    svd_args_parse("lora merge", &a, &ro, &lo, &so, &have_to, &have_dtype, &ctx);
    char files[MAX_LORA][1024];
    float wts[MAX_LORA];
    int n = 0;
    for (; n < MAX_LORA && loras[n]; n++)
        if (sample_split_lora("--lora", loras[n], files[n], sizeof files[n], &wts[n], &ctx) != SL_OK)
            return cli_fail("lora merge", &ctx);
    cli_check_out_file("lora merge", "--to-adapter", out);
    SlAdapter ads[MAX_LORA], merged;
    SlAdapter *adp[MAX_LORA];
    SlStatus st = SL_OK;
    int loaded = 0;
    for (; st == SL_OK && loaded < n; loaded++) {
        SlAdapterFormat f;
        SlDType dt = SL_F32;
        st = file_dtype(files[loaded], &dt, &ctx);
        if (st == SL_OK) st = sl_adapter_load(&ads[loaded], files[loaded], NULL, &lo, &f, &ctx);
        if (st != SL_OK) break;
        adp[loaded] = &ads[loaded];
        if (!loaded && !have_to) so.format = out_format(f);
        if (!loaded && !have_dtype) so.dtype = dt;
    }
    SlResizeStats s;
    if (st == SL_OK) st = sl_adapter_svd_merge(&merged, adp, wts, n, &ro, &s, &ctx);
    if (st == SL_OK) {
        char meta[4096] = "";
        size_t used = 0;
        for (int i = 0; i < n && used < sizeof meta; i++)
            used += (size_t)snprintf(meta + used, sizeof meta - used, "%s%s:%g", i ? "," : "", files[i], (double)wts[i]);
        st = sl_adapter_set_meta(&merged, "stylora.merged_loras", meta, &ctx);
        if (st == SL_OK) st = sl_adapter_save(&merged, out, &so, &ctx);
        sl_adapter_free(&merged);
    }
    int rc = 0;
    if (st != SL_OK) rc = cli_fail("lora merge", &ctx);
    else {
        char what[64];
        snprintf(what, sizeof what, "SVD merge of %d adapter(s)", n);
        print_stats(what, out, &so, &s);
    }
    for (int i = 0; i < loaded; i++) sl_adapter_free(&ads[i]);
    return rc;
}
