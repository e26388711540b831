/* sample_jobs.c - options, prompts files and <lora:...> tags of `stylora sample`.
 *
 * Prompts file: one job a line; blank lines and lines starting with '#' are
 * skipped. As in A1111's "prompts from file" script, a line starting with "--"
 * holds options, quoted like a shell command line:
 *   --prompt "a red circle <lora:outline:0.8>" --negative_prompt "blurry"
 *   --seed 7 --steps 20 --cfg_scale 7 --width 64 --height 64
 *   --sampler_name euler_a --batch_size 2
 * and any other line is the prompt exactly as written (quotes and apostrophes
 * included, no word limit: the tokenizer truncates long text as --prompt's).
 * Anything not given on a line comes from the command line's options.
 */
#include "sample_jobs.h"

#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "core/config.h"
#include "core/weights.h"

void sample_args_parse(SampleArgs *a, int argc, char **argv) {
    memset(a, 0, sizeof *a);
    const CliOpt opts[] = {
        {"--model", "DIR", "model: diffusers folder or single-file .safetensors (required)", &a->model, 0},
        {"--config", "DIR", "configs + tokenizer folder for a single-file checkpoint", &a->config, 0},
        {"--model-config", "DIR", "the same as --config (train's name for it)", &a->config, 0},
        {"--prompt", "TEXT", "the prompt (may hold <lora:NAME:WEIGHT> tags)", &a->prompt, 0},
        {"--negative", "TEXT", "negative prompt (default empty)", &a->negative, 0},
        {"--from-png", "FILE", "re-run the generation parameters of a PNG stylora or A1111 wrote (prompt with its <lora:...> tags, "
                               "negative prompt, steps, sampler, CFG scale, seed, size, clip skip); options given here override them",
         &a->from_png, 0},
        {"--prompts", "FILE", "one job a line: the prompt as written, or a line starting with '--' of A1111-style options "
                              "(--prompt \"TEXT\" --negative_prompt \"TEXT\" --seed N --steps N --cfg_scale S --eta E "
                              "--width W --height H --sampler_name NAME --batch_size N); '#' lines are comments", &a->prompts_file, 0},
        {"--lora", "FILE[:WEIGHT]", "apply an adapter with a weight in [-10, 10] (default 1); WEIGHT is what follows the last ':' "
                                   "when it is a number, so a path containing ':' works", a->lora, SAMPLE_MAX_LORA},
        {"--lora-dir", "DIR", "where <lora:NAME:W> tags find NAME.safetensors (default: the prompts file's folder, or .)", &a->lora_dir, 0},
        {"--lora-alpha", "A", "alpha in (0, 10000] for every module, over what the adapter files store", &a->lora_alpha, 0},
        {"--merge", NULL, "merge adapters into the weights (as fast as the base) instead of the runtime path", &a->merge, 0},
        {"--sampler", "NAME", "ddim | euler | euler_a | dpmpp_2m (default euler_a)", &a->sampler, 0},
        {"--schedule", "NAME", "default | karras (default: default)", &a->schedule, 0},
        {"--steps", "N", "sampling steps (default 20)", &a->steps, 0},
        {"--cfg", "S", "classifier-free guidance scale in [0, 100] (default 7; <= 1 disables)", &a->cfg, 0},
        {"--eta", "E", "DDIM eta in [0, 1] (default 0)", &a->eta, 0},
        {"--seed", "N", "seed of the first image (default 42); image i uses seed+i", &a->seed, 0},
        {"--width", "W", "image width (default: the VAE's sample size)", &a->width, 0},
        {"--height", "H", "image height (default: the VAE's sample size)", &a->height, 0},
        {"--batch", "N", "images per prompt (default 1)", &a->batch, 0},
        {"--clip-skip", "K", "1 = last text-encoder layer (default), 2 = penultimate, ... (A1111's convention)", &a->clip_skip, 0},
        {"--out", "DIR", "output folder (default out)", &a->out, 0},
        {"--preview", "N", "write an intermediate decode every N steps", &a->preview, 0},
        {"--grid", NULL, "also write grid.png of all images", &a->grid, 0},
        {"--vae-tile", "N", "decode in tiles of N latent pixels (bounds memory at large sizes)", &a->vae_tile, 0},
        {"--threads", "N", "threads (default: all cores)", &a->threads, 0},
        {"--quiet", NULL, "no progress bars", &a->quiet, 0},
        {"--base", "KIND", "U-Net weights: fp32 | fp16 (linears+convs in binary16) | bf16 (in bfloat16, products on the bf16 kernel) | nf4 (4-bit NormalFloat linears); default: fp16 when the file stores them F16 (exact), else fp32", &a->base, 0}, /* [nf4] */
        {"--nf4-layers", "LIST", "with --base nf4: attn,ff,proj (default), time, all, or patterns", &a->nf4_layers, 0}, /* [nf4] */
        {"--nf4-double-quant", NULL, "with --base nf4: 8-bit double-quantized block scales", &a->nf4_dq, 0}, /* [nf4] */
        {0},
    };
    const char *syn = "--model DIR (--prompt TEXT | --prompts FILE | --from-png FILE) [options]";
    const char *pos[1];
    int npos;
    cli_parse("sample", syn, opts, argc, argv, pos, 0, &npos);
    /* --prompt with --from-png replaces the PNG's prompt; a prompts file has no place there */
    if (!a->model || (a->from_png ? a->prompts_file != NULL : !a->prompt == !a->prompts_file)) {
        fprintf(stderr, "stylora sample: error: give --model and exactly one of --prompt, --prompts and --from-png "
                        "(--prompt may go with --from-png to replace its prompt)\n");
        cli_usage(stderr, "sample", syn, opts);
        exit(2);
    }
    if (!a->out) a->out = "out";
    SampleRun r; /* the run's options, checked now rather than after the model loads */
    sample_run_init(&r, a, NULL, 0);
}

const char *sample_model_name(const char *path) {
    static char buf[256];
    const char *s = strrchr(path, '/');
    size_t len = strlen(path);
    while (s && s[1] == '\0' && s > path) { /* trailing slash */
        len = (size_t)(s - path);
        const char *t = s - 1;
        while (t > path && *t != '/') t--;
        s = *t == '/' ? t : NULL;
        if (!s) break;
    }
    const char *start = s ? s + 1 : path;
    size_t n = len - (size_t)(start - path);
    if (n >= sizeof buf) n = sizeof buf - 1;
    memcpy(buf, start, n);
    buf[n] = '\0';
    char *dot = strstr(buf, ".safetensors");
    if (dot) *dot = '\0';
    return buf;
}

static SlStatus add_lora(SampleJob *j, const char *path, const char *name, float weight, SlCtx *ctx) {
    if (j->n_lora == SAMPLE_MAX_LORA) return sl_fail(ctx, SL_ERR_ARG, "%s: more than %d adapters", j->where, SAMPLE_MAX_LORA);
    if (!(weight >= CLI_LORA_WEIGHT_MIN && weight <= CLI_LORA_WEIGHT_MAX))
        return sl_fail(ctx, SL_ERR_ARG, "%s: adapter weight %g is not a finite number in [%g, %g]", j->where, (double)weight,
                       CLI_LORA_WEIGHT_MIN, CLI_LORA_WEIGHT_MAX);
    size_t len = strlen(path);
    if (len >= sizeof j->lora[0].path) return sl_fail(ctx, SL_ERR_ARG, "%s: adapter path is too long", j->where);
    memcpy(j->lora[j->n_lora].path, path, len + 1);
    if (strlen(name) >= sizeof j->lora[0].name) return sl_fail(ctx, SL_ERR_ARG, "%s: adapter name is too long", j->where);
    snprintf(j->lora[j->n_lora].name, sizeof j->lora[0].name, "%s", name);
    j->lora[j->n_lora].weight = weight;
    j->n_lora++;
    return SL_OK;
}

SlStatus sample_split_lora(const char *opt, const char *arg, char *path, size_t n, float *weight, SlCtx *ctx) {
    size_t len = strlen(arg);
    if (len >= n) return sl_fail(ctx, SL_ERR_ARG, "%s %.64s...: the path is longer than %zu bytes", opt, arg, n - 1);
    memcpy(path, arg, len + 1);
    *weight = 1.0f;
    char *colon = strrchr(path, ':');
    if (!colon) return SL_OK;
    /* Anything strtod reads whole is meant as a weight, "nan", "inf" and "1e300"
     * included: those are refused, not taken for part of the file name. */
    char *end;
    errno = 0;
    double v = strtod(colon + 1, &end);
    if (end == colon + 1 || *end) return SL_OK; /* not a number: ':' is part of the path */
    if (errno || !(v >= CLI_LORA_WEIGHT_MIN && v <= CLI_LORA_WEIGHT_MAX))
        return sl_fail(ctx, SL_ERR_ARG, "%s %s: bad weight '%s': give a finite number in [%g, %g]", opt, arg, colon + 1,
                       CLI_LORA_WEIGHT_MIN, CLI_LORA_WEIGHT_MAX);
    if (colon == path) return sl_fail(ctx, SL_ERR_ARG, "%s %s: no file name before the weight", opt, arg);
    *weight = (float)v;
    *colon = '\0';
    return SL_OK;
}

static SlStatus parse_lora_arg(SampleJob *j, const char *arg, SlCtx *ctx) {
    char path[sizeof j->lora[0].path];
    float weight;
    SL_TRY(sample_split_lora("--lora", arg, path, sizeof path, &weight, ctx));
    return add_lora(j, path, sample_model_name(path), weight, ctx);
}

SlStatus sample_parse_lora_tags(SampleJob *j, char *prompt, const char *lora_dir, SlCtx *ctx) {
    char *p;
    while ((p = strstr(prompt, "<lora:"))) {
        char *end = strchr(p, '>');
        if (!end) return sl_fail(ctx, SL_ERR_ARG, "%s: unclosed <lora:...> tag", j->where);
        *end = '\0';
        char *name = p + 6, *w = strrchr(name, ':');
        float weight = 1.0f;
        if (w) {
            double v;
            if (!cli_num_ok(w + 1, CLI_LORA_WEIGHT_MIN, CLI_LORA_WEIGHT_MAX, CLI_CLOSED, &v))
                return sl_fail(ctx, SL_ERR_ARG, "%s: bad weight in <lora:%s>: give a finite number in [%g, %g]", j->where, name,
                               CLI_LORA_WEIGHT_MIN, CLI_LORA_WEIGHT_MAX);
            weight = (float)v;
            *w = '\0';
        }
        if (!*name) return sl_fail(ctx, SL_ERR_ARG, "%s: empty name in a <lora:...> tag", j->where);
        /* NAME, NAME.safetensors, DIR/NAME, DIR/NAME.safetensors: the first that exists */
        char path[2048], cand[4][2048];
        const char *dir = lora_dir ? lora_dir : ".";
        snprintf(cand[0], sizeof cand[0], "%s", name);
        snprintf(cand[1], sizeof cand[1], "%s.safetensors", name);
        snprintf(cand[2], sizeof cand[2], "%s/%s", dir, name);
        snprintf(cand[3], sizeof cand[3], "%s/%s.safetensors", dir, name);
        int k = 0;
        while (k < 4 && !sl_path_is_file(cand[k])) k++;
        if (k == 4) return sl_fail(ctx, SL_ERR_IO, "%s: <lora:%s>: no adapter file %s (nor %s)", j->where, name, cand[3], cand[1]);
        snprintf(path, sizeof path, "%s", cand[k]);
        SL_TRY(add_lora(j, path, name, weight, ctx));
        memmove(p, end + 1, strlen(end + 1) + 1);
    }
    /* collapse the spaces a removed tag leaves behind */
    size_t o = 0;
    for (size_t i = 0; prompt[i]; i++) {
        if (prompt[i] == ' ' && (o == 0 || prompt[o - 1] == ' ')) continue;
        prompt[o++] = prompt[i];
    }
    while (o && prompt[o - 1] == ' ') o--;
    prompt[o] = '\0';
    return SL_OK;
}

/* Shell-like split of a line into argv (double/single quotes, backslash escapes). */
static int split_line(char *line, char **argv, int cap) {
    int n = 0;
    char *r = line, *w = line;
    while (*r) {
        while (*r == ' ' || *r == '\t') r++;
        if (!*r) break;
        if (n == cap) return -1;
        argv[n++] = w;
        char quote = 0;
        while (*r && (quote || (*r != ' ' && *r != '\t'))) {
            if (quote && *r == quote) { quote = 0; r++; continue; }
            if (!quote && (*r == '"' || *r == '\'')) { quote = *r++; continue; }
            if (*r == '\\' && r[1] && quote != '\'') r++;
            *w++ = *r++;
        }
        if (quote) return -2;
        if (*r) r++;
        *w++ = '\0';
    }
    return n;
}

static SlStatus job_defaults(SampleJob *j, const SampleArgs *a, SlCtx *ctx) {
    memset(j, 0, sizeof *j);
    j->steps = a->steps ? (int)cli_int("sample", "--steps", a->steps, 1, 1000) : 20;
    j->cfg = a->cfg ? (float)cli_num("sample", "--cfg", a->cfg, SAMPLE_CFG_MIN, SAMPLE_CFG_MAX, CLI_CLOSED) : 7.0f;
    j->eta = a->eta ? (float)cli_num("sample", "--eta", a->eta, 0, 1, CLI_CLOSED) : 0.0f;
    j->seed = a->seed ? (uint64_t)cli_int("sample", "--seed", a->seed, 0, (1LL << 62)) : 42;
    j->width = a->width ? (int)cli_int("sample", "--width", a->width, 8, 8192) : 0;
    j->height = a->height ? (int)cli_int("sample", "--height", a->height, 8, 8192) : 0;
    j->batch = a->batch ? (int)cli_int("sample", "--batch", a->batch, 1, 1000) : 1;
    j->sampler = SL_SAMPLER_EULER_A;
    if (a->sampler && !sl_sampler_kind_from_name(a->sampler, &j->sampler))
        return sl_fail(ctx, SL_ERR_ARG, "unknown sampler '%s' (ddim, euler, euler_a, dpmpp_2m)", a->sampler);
    j->karras = -1;
    if (a->schedule) {
        if (strcmp(a->schedule, "karras") == 0) j->karras = 1;
        else if (strcmp(a->schedule, "default") == 0) j->karras = 0;
        else return sl_fail(ctx, SL_ERR_ARG, "unknown schedule '%s' (default, karras)", a->schedule);
    }
    snprintf(j->negative, sizeof j->negative, "%s", a->negative ? a->negative : "");
    snprintf(j->where, sizeof j->where, "--lora");
    for (int i = 0; i < SAMPLE_MAX_LORA && a->lora[i]; i++) SL_TRY(parse_lora_arg(j, a->lora[i], ctx));
    return SL_OK;
}

/* One integer option of a prompts-file line: its names and range. */
typedef struct LineInt {
    const char *name, *alias;
    long long lo, hi;
} LineInt;

/* Applies one prompts-file line to j and points *prompt at its prompt text (inside line,
 * which it may rewrite): a line starting with "--" holds options (as A1111's script
 * reads it), any other line is the prompt itself. */
static SlStatus job_from_line(SampleJob *j, char *line, const char *where, char **prompt, SlCtx *ctx) {
    *prompt = line;
    if (strncmp(line, "--", 2) != 0) return SL_OK;
    char *argv[128];
    int n = split_line(line, argv, 128);
    if (n == -2) return sl_fail(ctx, SL_ERR_ARG, "%s: unbalanced quote", where);
    if (n < 0) return sl_fail(ctx, SL_ERR_ARG, "%s: more than 128 words of options (quote the --prompt text)", where);
    static const LineInt ints[] = {{"--seed", NULL, 0, 1LL << 62},   {"--steps", NULL, 1, 1000},
                                   {"--width", NULL, 8, 8192},       {"--height", NULL, 8, 8192},
                                   {"--batch_size", "--batch", 1, 1000}};
    *prompt = NULL;
    for (int i = 0; i < n; i++) {
        const char *k = argv[i];
        if (i + 1 >= n) return sl_fail(ctx, SL_ERR_ARG, "%s: option %s has no value", where, k);
        char *v = argv[++i];
        double d;
        char r[64];
        if (strcmp(k, "--prompt") == 0) *prompt = v;
        else if (strcmp(k, "--negative_prompt") == 0 || strcmp(k, "--negative") == 0) snprintf(j->negative, sizeof j->negative, "%s", v);
        else if (strcmp(k, "--sampler_name") == 0 || strcmp(k, "--sampler") == 0) {
            if (!sl_sampler_kind_from_name(v, &j->sampler)) return sl_fail(ctx, SL_ERR_ARG, "%s: unknown sampler '%s'", where, v);
        } else if (strcmp(k, "--cfg_scale") == 0 || strcmp(k, "--cfg") == 0) {
            if (!cli_num_ok(v, SAMPLE_CFG_MIN, SAMPLE_CFG_MAX, CLI_CLOSED, &d))
                return sl_fail(ctx, SL_ERR_ARG, "%s: %s expects a finite number in %s, got '%s'", where, k,
                               cli_range_str(r, sizeof r, SAMPLE_CFG_MIN, SAMPLE_CFG_MAX, CLI_CLOSED), v);
            j->cfg = (float)d;
        } else if (strcmp(k, "--eta") == 0) {
            if (!cli_num_ok(v, 0, 1, CLI_CLOSED, &d))
                return sl_fail(ctx, SL_ERR_ARG, "%s: %s expects a finite number in [0, 1], got '%s'", where, k, v);
            j->eta = (float)d;
        } else {
            const LineInt *o = NULL;
            for (size_t q = 0; q < sizeof ints / sizeof ints[0]; q++)
                if (strcmp(k, ints[q].name) == 0 || (ints[q].alias && strcmp(k, ints[q].alias) == 0)) o = &ints[q];
            if (!o)
                return sl_fail(ctx, SL_ERR_ARG, "%s: unknown option %s (--prompt, --negative_prompt, --seed, --steps, --cfg_scale, "
                               "--eta, --width, --height, --sampler_name, --batch_size)", where, k);
            char *end;
            errno = 0;
            long long x = strtoll(v, &end, 10);
            if (end == v || *end || errno || x < o->lo || x > o->hi)
                return sl_fail(ctx, SL_ERR_ARG, "%s: %s expects an integer in [%lld, %lld], got '%s'", where, k, o->lo, o->hi, v);
            if (o == &ints[0]) j->seed = (uint64_t)x;
            else if (o == &ints[1]) j->steps = (int)x;
            else if (o == &ints[2]) j->width = (int)x;
            else if (o == &ints[3]) j->height = (int)x;
            else j->batch = (int)x;
        }
    }
    if (!*prompt || !**prompt) return sl_fail(ctx, SL_ERR_ARG, "%s: no --prompt on this line", where);
    return SL_OK;
}

/* j->written: the prompt as written (its tags included), then each --lora adapter as a
 * <lora:NAME:W> tag, as A1111 appends its default LoRA to the prompt. The n_cli --lora
 * adapters (first in j->lora) move after the prompt's, so the adapters are in the tags'
 * order and a re-run from the PNG sums them in the same order (the same bits). */
static void job_finish(SampleJob *j, const char *as_written, int n_cli) {
    char tags[SAMPLE_MAX_LORA * 300];
    size_t o = 0;
    tags[0] = '\0';
    for (int i = 0; i < n_cli; i++)
        o += (size_t)snprintf(tags + o, sizeof tags - o, "%s<lora:%s:%g>", o || *as_written ? " " : "", j->lora[i].name,
                              (double)j->lora[i].weight);
    if (strlen(as_written) + o < sizeof j->written) {
        snprintf(j->written, sizeof j->written, "%s%s", as_written, tags);
    } else { /* too long to keep whole: the (already cut) prompt, then every adapter as a tag */
        size_t w = (size_t)snprintf(j->written, sizeof j->written, "%s", j->prompt);
        for (int i = n_cli; i < j->n_lora + n_cli; i++) {
            const SampleLora *l = &j->lora[i % j->n_lora];
            if (w < sizeof j->written)
                w += (size_t)snprintf(j->written + w, sizeof j->written - w, "%s<lora:%s:%g>", w ? " " : "", l->name,
                                      (double)l->weight);
        }
    }
    SampleLora cli[SAMPLE_MAX_LORA];
    memcpy(cli, j->lora, (size_t)n_cli * sizeof *cli);
    memmove(j->lora, j->lora + n_cli, (size_t)(j->n_lora - n_cli) * sizeof *cli);
    memcpy(j->lora + (j->n_lora - n_cli), cli, (size_t)n_cli * sizeof *cli);
}

SlStatus sample_jobs_build(const SampleArgs *a, SampleJob **jobs, int *n, SlCtx *ctx) {
    *jobs = NULL;
    *n = 0;
    if (a->prompt) {
        SampleJob *j = calloc(1, sizeof *j);
        if (!j) return sl_fail(ctx, SL_ERR_NOMEM, "out of memory");
        SlStatus st = job_defaults(j, a, ctx);
        snprintf(j->where, sizeof j->where, "--prompt");
        /* tags come out of the whole text before it is cut to the job's buffer: a
         * <lora:...> at the end of a long prompt must not vanish with the cut */
        char *text = st ? NULL : strdup(a->prompt);
        if (!st && !text) st = sl_fail(ctx, SL_ERR_NOMEM, "out of memory");
        const int n_cli = j->n_lora;
        if (!st) st = sample_parse_lora_tags(j, text, a->lora_dir, ctx);
        if (!st) snprintf(j->prompt, sizeof j->prompt, "%s", text);
        if (!st) job_finish(j, a->prompt, n_cli);
        free(text);
        if (st) { free(j); return st; }
        *jobs = j;
        *n = 1;
        return SL_OK;
    }
    char *text;
    SL_TRY(sl_read_file(a->prompts_file, 16u << 20, &text, NULL, ctx));
    char dir[2048];
    snprintf(dir, sizeof dir, "%s", a->prompts_file);
    char *slash = strrchr(dir, '/');
    if (slash) *slash = '\0';
    else snprintf(dir, sizeof dir, ".");
    const char *lora_dir = a->lora_dir ? a->lora_dir : dir;
    SlStatus st = SL_OK;
    int line_no = 0;
    for (char *line = text, *next; line && !st; line = next) {
        next = strchr(line, '\n');
        if (next) *next++ = '\0';
        line_no++;
        size_t len = strlen(line);
        while (len && (line[len - 1] == '\r' || isspace((unsigned char)line[len - 1]))) line[--len] = '\0';
        while (*line == ' ' || *line == '\t') line++;
        if (!*line || *line == '#') continue;
        SampleJob *grown = realloc(*jobs, (size_t)(*n + 1) * sizeof(SampleJob));
        if (!grown) { st = sl_fail(ctx, SL_ERR_NOMEM, "out of memory"); break; }
        *jobs = grown;
        SampleJob *j = &grown[*n];
        st = job_defaults(j, a, ctx);
        snprintf(j->where, sizeof j->where, "%.50s:%d", sample_model_name(a->prompts_file), line_no);
        char where[2200], *prompt = NULL, *as_written = NULL;
        snprintf(where, sizeof where, "%s:%d", a->prompts_file, line_no);
        const int n_cli = j->n_lora;
        if (!st) st = job_from_line(j, line, where, &prompt, ctx);
        if (!st && !(as_written = strdup(prompt))) st = sl_fail(ctx, SL_ERR_NOMEM, "out of memory");
        if (!st) { /* tags out of the whole text first, as for --prompt */
            snprintf(j->where, sizeof j->where, "line %d", line_no);
            st = sample_parse_lora_tags(j, prompt, lora_dir, ctx);
            if (st) sl_fail_prefix(ctx, "%s", a->prompts_file);
        }
        if (!st) snprintf(j->prompt, sizeof j->prompt, "%s", prompt);
        if (!st) job_finish(j, as_written, n_cli);
        free(as_written);
        if (!st) (*n)++;
    }
    free(text);
    if (!st && *n == 0) st = sl_fail(ctx, SL_ERR_ARG, "%s: no prompts in the file", a->prompts_file);
    if (st) { free(*jobs); *jobs = NULL; *n = 0; }
    return st;
}

SlStatus sample_grid(SlImage *out, const SlImage *imgs, int n, SlCtx *ctx) {
    int cols = (int)ceil(sqrt((double)n)), rows = (n + cols - 1) / cols;
    int w = imgs[0].w, h = imgs[0].h, c = imgs[0].c;
    for (int i = 1; i < n; i++)
        if (imgs[i].w != w || imgs[i].h != h || imgs[i].c != c)
            return sl_fail(ctx, SL_ERR_ARG, "grid: images differ in size (%dx%d vs %dx%d)", imgs[i].w, imgs[i].h, w, h);
    SL_TRY(sl_image_alloc(out, w * cols, h * rows, c, ctx));
    memset(out->data, 255, (size_t)out->w * out->h * c);
    for (int i = 0; i < n; i++) {
        int gx = (i % cols) * w, gy = (i / cols) * h;
        for (int y = 0; y < h; y++)
            memcpy(out->data + ((size_t)(gy + y) * out->w + gx) * c, imgs[i].data + (size_t)y * w * c, (size_t)w * c);
    }
    return SL_OK;
}

void sample_run_init(SampleRun *r, const SampleArgs *a, const SampleJob *jobs, int n_jobs) {
    memset(r, 0, sizeof *r);
    r->out_dir = a->out;
    r->png_lora_hashes = sample_args_png_lora_hashes(a);
    r->png_path = a->from_png;
    r->merge = a->merge != NULL;
    r->clip_skip = a->clip_skip ? (int)cli_int("sample", "--clip-skip", a->clip_skip, 1, 64) : 1;
    r->preview = a->preview ? (int)cli_int("sample", "--preview", a->preview, 1, 1000) : 0;
    r->grid = a->grid != NULL;
    r->quiet = a->quiet != NULL;
    r->vae_tile = a->vae_tile ? (int)cli_int("sample", "--vae-tile", a->vae_tile, 8, 4096) : 0;
    r->lora_alpha = a->lora_alpha ? (float)cli_num("sample", "--lora-alpha", a->lora_alpha, 0, 10000, CLI_OPEN_LO) : 0.0f;
    if (a->threads) cli_threads(cli_int("sample", "--threads", a->threads, 1, 1024));
    for (int i = 0; jobs && i < n_jobs; i++) r->n_images += jobs[i].batch;
}
