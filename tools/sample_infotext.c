/* sample_infotext.c - A1111's "parameters" text in the PNGs of `stylora sample`:
 * writing it (prompt as written with <lora:...> tags, Negative prompt, Model hash,
 * Lora hashes) and reading it back for `sample --from-png`.
 *
 * Followed: AUTOMATIC1111/stable-diffusion-webui
 *   modules/processing.py create_infotext and modules/infotext_utils.py quote: the
 *     layout "PROMPT\nNegative prompt: NEG\nKey: value, Key: value", values holding ',',
 *     ':' or a newline JSON-quoted;
 *   modules/infotext_utils.py parse_generation_parameters / re_param_code: how it is read
 *     back (the last line is the parameters when the regex finds 3 or more in it);
 *   modules/sd_models.py CheckpointInfo.calculate_shorthash: "Model hash" is the whole
 *     file's SHA-256, first 10 hex digits;
 *   extensions-builtin/Lora/network.py NetworkOnDisk (sshs_model_hash metadata, else
 *     modules/hashes.py addnet_hash_safetensors; shorthash = first 12 hex digits) and
 *     extensions-builtin/Lora/extra_networks_lora.py (the "Lora hashes" field: "alias: hash"
 *     joined by ", ", alias = the name the prompt used, ':' and ',' removed).
 * Not here: A1111's hires-fix, img2img or ADetailer fields (ignored on reading).
 */
#include <ctype.h>
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>

#include "cli.h"
#include "core/safetensors.h"
#include "core/sha256.h"
#include "core/weights.h"
#include "sample_jobs.h"

/* ------------------------------------------------------------------ writing */

static void put(char *buf, size_t n, size_t *o, const char *fmt, ...) __attribute__((format(printf, 4, 5)));
static void put(char *buf, size_t n, size_t *o, const char *fmt, ...) {
    if (*o >= n) return;
    va_list ap;
    va_start(ap, fmt);
    int k = vsnprintf(buf + *o, n - *o, fmt, ap);
    va_end(ap);
    *o = k < 0 ? n : *o + (size_t)k;
}

/* infotext_utils.quote: as is unless it holds ',', ':' or a newline, then json.dumps
 * (ensure_ascii=False: only '"', '\\' and control characters are escaped). */
static void put_quoted(char *buf, size_t n, size_t *o, const char *v) {
    if (!strpbrk(v, ",:\n")) { put(buf, n, o, "%s", v); return; }
    put(buf, n, o, "\"");
    for (const unsigned char *p = (const unsigned char *)v; *p; p++) {
        if (*p == '"' || *p == '\\') put(buf, n, o, "\\%c", *p);
        else if (*p == '\n') put(buf, n, o, "\\n");
        else if (*p == '\t') put(buf, n, o, "\\t");
        else if (*p == '\r') put(buf, n, o, "\\r");
        else if (*p < 0x20) put(buf, n, o, "\\u%04x", *p);
        else put(buf, n, o, "%c", *p);
    }
    put(buf, n, o, "\"");
}

/* A1111's sampler names; the row is SlSamplerKind's value */
static const char *const a1111_sampler[] = {"DDIM", "Euler", "Euler a", "DPM++ 2M"};

void sample_format_parameters(char *buf, size_t n, const SampleRun *r, const char *model_name, const SampleJob *j,
                              uint64_t seed, const char (*lora_hash)[13]) {
    size_t o = 0;
    buf[0] = '\0';
    put(buf, n, &o, "%s\n", j->written);
    if (j->negative[0]) put(buf, n, &o, "Negative prompt: %s\n", j->negative);
    put(buf, n, &o, "Steps: %d, Sampler: %s, Schedule type: %s, CFG scale: %g, Seed: %llu, Size: %dx%d, ", j->steps,
        a1111_sampler[j->sampler], j->karras > 0 ? "Karras" : "Automatic", (double)j->cfg, (unsigned long long)seed,
        j->width, j->height);
    if (r->model_hash[0]) put(buf, n, &o, "Model hash: %s, ", r->model_hash);
    put(buf, n, &o, "Model: ");
    put_quoted(buf, n, &o, model_name);
    if (j->sampler == SL_SAMPLER_DDIM && j->eta != 0) put(buf, n, &o, ", Eta DDIM: %g", (double)j->eta);
    if (r->clip_skip > 1) put(buf, n, &o, ", Clip skip: %d", r->clip_skip);
    if (j->n_lora) {
        char v[SAMPLE_MAX_LORA * 300];
        size_t q = 0;
        v[0] = '\0';
        for (int i = 0; i < j->n_lora; i++) {
            char alias[256];
            size_t a = 0;
            for (const char *c = j->lora[i].name; *c && a + 1 < sizeof alias; c++)
                if (*c != ':' && *c != ',') alias[a++] = *c;
            alias[a] = '\0';
            put(v, sizeof v, &q, "%s%s: %s", i ? ", " : "", alias, lora_hash[i]);
        }
        put(buf, n, &o, ", Lora hashes: ");
        put_quoted(buf, n, &o, v);
    }
    put(buf, n, &o, ", Version: stylora");
}

/* The model-hash cache, as A1111 keeps one (its cache.json "hashes"): hashing a 2-4 GB
 * checkpoint takes seconds, so each file is hashed once per (path, size, mtime). One line
 * a file, "SHA256HEX\tSIZE\tMTIME_NS\tREALPATH", in $STYLORA_CACHE_DIR, else
 * $XDG_CACHE_HOME/stylora, else ~/.cache/stylora; at most HASH_CACHE_MAX lines, newest
 * last. A cache that cannot be read or written only costs the hashing again. */
#define HASH_CACHE_MAX 256
static int hash_cache_file(char *buf, size_t n, int make_dir) {
    const char *d = getenv("STYLORA_CACHE_DIR"), *x = getenv("XDG_CACHE_HOME"), *h = getenv("HOME");
    char dir[4096];
    if (d && *d) snprintf(dir, sizeof dir, "%s", d);
    else if (x && *x) snprintf(dir, sizeof dir, "%s/stylora", x);
    else if (h && *h) snprintf(dir, sizeof dir, "%s/.cache/stylora", h);
    else return 0;
    if (make_dir && !sl_path_is_dir(dir)) {
        char mk[4200];
        snprintf(mk, sizeof mk, "%s", dir);
        for (char *p = mk + 1; *p; p++) /* mkdir -p */
            if (*p == '/') { *p = '\0'; mkdir(mk, 0755); *p = '/'; }
        if (mkdir(mk, 0755) != 0 && errno != EEXIST) return 0;
    }
    return snprintf(buf, n, "%s/model_hashes.tsv", dir) < (int)n;
}

/* The cache's lines of `old` (NUL-terminated, edited in place): line i starts at l[i]. */
static int hash_cache_lines(char *old, char **l, int max) {
    int n = 0;
    for (char *p = old; p && *p && n < max;) {
        char *nl = strchr(p, '\n');
        if (!nl) break; /* a torn last line (no newline) is dropped */
        *nl = '\0';
        if (strlen(p) > 65 && p[64] == '\t') l[n++] = p;
        p = nl + 1;
    }
    return n;
}

SlStatus sample_model_hash(const char *path, char out[11], SlCtx *ctx) {
    out[0] = '\0';
    if (!sl_path_is_file(path)) return SL_OK; /* diffusers folder: see sample_jobs.h */
    struct stat sb;
    char real[4096], key[4400], cache[4200];
    if (stat(path, &sb) != 0 || !realpath(path, real))
        return sl_fail(ctx, SL_ERR_IO, "%s: cannot stat: %s", path, strerror(errno));
    /* "SIZE\tMTIME_NS\tREALPATH": what the line after "SHA256HEX\t" must be */
    snprintf(key, sizeof key, "%lld\t%lld\t%s", (long long)sb.st_size,
             (long long)sb.st_mtim.tv_sec * 1000000000LL + sb.st_mtim.tv_nsec, real);
    const char *key_path = strchr(strchr(key, '\t') + 1, '\t') + 1;
    const int have_cache = hash_cache_file(cache, sizeof cache, 0);
    char *old = NULL, *l[HASH_CACHE_MAX];
    size_t n_old = 0;
    int n = 0;
    if (have_cache && sl_path_is_file(cache) && sl_read_file(cache, 4u << 20, &old, &n_old, NULL) == SL_OK)
        n = hash_cache_lines(old, l, HASH_CACHE_MAX);
    for (int i = 0; i < n; i++)
        if (!strcmp(l[i] + 65, key)) {
            memcpy(out, l[i], 10);
            out[10] = '\0';
            free(old);
            return SL_OK;
        }
    uint8_t d[32];
    char hex[65];
    sl_log(ctx, SL_LOG_INFO, "%s: computing its SHA-256 for the PNGs' Model hash (once: cached in %s)", path,
           have_cache ? cache : "no folder: set STYLORA_CACHE_DIR");
    SlStatus st = sl_sha256_file(path, 0, d, ctx);
    if (st) {
        free(old);
        return st;
    }
    sl_sha256_hex(d, hex);
    memcpy(out, hex, 10);
    out[10] = '\0';
    /* rewrite it atomically: the other files' lines (the newest HASH_CACHE_MAX - 1), then this one */
    char tmp[4300];
    FILE *f = NULL;
    if (have_cache && hash_cache_file(cache, sizeof cache, 1)) {
        snprintf(tmp, sizeof tmp, "%s.tmp.%ld", cache, (long)getpid());
        f = fopen(tmp, "wb");
    }
    if (f) {
        int kept = 0;
        for (int i = n - 1; i >= 0; i--) { /* newest first: mark the ones to keep */
            const char *p2 = strchr(strchr(l[i] + 65, '\t') ? strchr(l[i] + 65, '\t') + 1 : l[i], '\t');
            const int same = p2 && !strcmp(p2 + 1, key_path);
            if (same || kept >= HASH_CACHE_MAX - 1) l[i] = NULL;
            else kept++;
        }
        for (int i = 0; i < n; i++)
            if (l[i]) fprintf(f, "%s\n", l[i]);
        fprintf(f, "%s\t%s\n", hex, key);
        const int bad = ferror(f) != 0;
        if (fclose(f) != 0 || bad || rename(tmp, cache) != 0) unlink(tmp);
    }
    free(old);
    return SL_OK;
}

SlStatus sample_lora_hash(SampleRun *r, const char *path, char out[13], SlCtx *ctx) {
    for (int i = 0; i < r->n_hashes; i++)
        if (!strcmp(r->hashes[i].path, path)) { memcpy(out, r->hashes[i].hash, 13); return SL_OK; }
    SlStFile f;
    SL_TRY(sl_st_open(&f, path, ctx));
    /* kohya writes sshs_model_hash as the same addnet hash; A1111 trusts it when it is there
     * (we only when it is hex, so a hostile value cannot break the infotext's quoting) */
    const char *m = sl_st_meta(&f, "sshs_model_hash");
    int ok = m && strlen(m) >= 12;
    for (int i = 0; ok && i < 12; i++) ok = isxdigit((unsigned char)m[i]) != 0;
    if (ok) {
        memcpy(out, m, 12);
    } else {
        uint8_t d[32];
        char hex[65];
        sl_sha256(f.map + f.data_start, f.map_size - f.data_start, d);
        sl_sha256_hex(d, hex);
        memcpy(out, hex, 12);
    }
    out[12] = '\0';
    sl_st_close(&f);
    if (r->n_hashes < SAMPLE_MAX_HASHES && strlen(path) < sizeof r->hashes[0].path) {
        snprintf(r->hashes[r->n_hashes].path, sizeof r->hashes[0].path, "%s", path);
        memcpy(r->hashes[r->n_hashes++].hash, out, 13);
    }
    return SL_OK;
}

/* ------------------------------------------------------------------ reading */

struct SamplePngArgs {
    char *prompt, *negative;
    char steps[32], sampler[16], schedule[16], cfg[64], seed[32], width[16], height[16], clip_skip[16], eta[64];
    char model_hash[16];
    char *lora_hashes;
};

void sample_args_free(SampleArgs *a) {
    if (!a->png) return;
    free(a->png->prompt);
    free(a->png->negative);
    free(a->png->lora_hashes);
    free(a->png);
    a->png = NULL;
}

const char *sample_args_png_model_hash(const SampleArgs *a) { return a->png ? a->png->model_hash : ""; }
const char *sample_args_png_lora_hashes(const SampleArgs *a) { return a->png ? a->png->lora_hashes : NULL; }

/* As lora_script.py infotext_pasted reads "Lora hashes": entries split at ',', each at its
 * first ':', both sides stripped. */
void sample_check_lora_hashes(const SampleRun *r, const SampleJob *j, const char (*lora_hash)[13], SlCtx *ctx) {
    if (!r->png_lora_hashes) return;
    for (int i = 0; i < j->n_lora; i++) {
        char alias[256];
        size_t a = 0;
        for (const char *c = j->lora[i].name; *c && a + 1 < sizeof alias; c++)
            if (*c != ':' && *c != ',') alias[a++] = *c;
        alias[a] = '\0';
        for (const char *e = r->png_lora_hashes; *e;) {
            size_t len = strcspn(e, ",");
            const char *colon = memchr(e, ':', len);
            if (colon) {
                const char *k = e, *ke = colon, *v = colon + 1, *ve = e + len;
                while (k < ke && isspace((unsigned char)*k)) k++;
                while (ke > k && isspace((unsigned char)ke[-1])) ke--;
                while (v < ve && isspace((unsigned char)*v)) v++;
                while (ve > v && isspace((unsigned char)ve[-1])) ve--;
                if ((size_t)(ke - k) == a && !memcmp(k, alias, a) &&
                    ((size_t)(ve - v) != strlen(lora_hash[i]) || strncasecmp(v, lora_hash[i], (size_t)(ve - v))))
                    sl_log(ctx, SL_LOG_WARN, "%s was made with <lora:%s> of hash %.*s; %s has %s", r->png_path, alias,
                           (int)(ve - v > 64 ? 64 : ve - v), v, j->lora[i].path, lora_hash[i]);
            }
            e += len;
            if (*e == ',') e++;
        }
    }
}

/* Python's str.strip() for ASCII whitespace, in place. */
static char *strip(char *s) {
    while (isspace((unsigned char)*s)) s++;
    size_t n = strlen(s);
    while (n && isspace((unsigned char)s[n - 1])) s[--n] = '\0';
    return s;
}

/* json.loads of a quoted value (infotext_utils.unquote) into out; 0 if malformed. */
static int unquote(const char *v, size_t len, char *out, size_t cap) {
    size_t o = 0;
    if (len < 2 || v[0] != '"' || v[len - 1] != '"') return 0;
    for (size_t i = 1; i + 1 < len; i++) {
        unsigned c = (unsigned char)v[i];
        if (c == '\\') {
            if (i + 2 >= len) return 0;
            c = (unsigned char)v[++i];
            static const char from[] = "\"\\/bfnrt", to[] = "\"\\/\b\f\n\r\t";
            const char *k = strchr(from, (int)c);
            if (c == 'u') {
                unsigned x = 0;
                if (i + 5 >= len) return 0;
                for (int q = 1; q <= 4; q++) {
                    int h = v[i + q];
                    if (!isxdigit(h)) return 0;
                    x = x * 16 + (unsigned)(isdigit(h) ? h - '0' : (tolower(h) - 'a' + 10));
                }
                i += 4;
                if (x < 0x80) { if (o + 1 >= cap) return 0; out[o++] = (char)x; }
                else if (x < 0x800) { if (o + 2 >= cap) return 0; out[o++] = (char)(0xc0 | x >> 6); out[o++] = (char)(0x80 | (x & 63)); }
                else { if (o + 3 >= cap) return 0; out[o++] = (char)(0xe0 | x >> 12); out[o++] = (char)(0x80 | ((x >> 6) & 63)); out[o++] = (char)(0x80 | (x & 63)); }
                continue;
            }
            if (!k || !c) return 0;
            c = (unsigned char)to[k - from];
        }
        if (o + 1 >= cap) return 0;
        out[o++] = (char)c;
    }
    out[o] = '\0';
    return 1;
}

/* What --from-png does with each field of A1111's parameters line. */
typedef enum PngField { PF_STEPS, PF_SAMPLER, PF_SCHEDULE, PF_CFG, PF_SEED, PF_SIZE, PF_CLIP_SKIP, PF_ETA, PF_MODEL_HASH, PF_LORA_HASHES, PF_SEEN } PngField;
static const struct { const char *key; PngField f; } png_fields[] = {
    {"Steps", PF_STEPS}, {"Sampler", PF_SAMPLER}, {"Schedule type", PF_SCHEDULE}, {"CFG scale", PF_CFG},
    {"Seed", PF_SEED}, {"Size", PF_SIZE}, {"Clip skip", PF_CLIP_SKIP}, {"Eta DDIM", PF_ETA},
    {"Model hash", PF_MODEL_HASH}, {"Lora hashes", PF_LORA_HASHES},
    /* read but not needed: --model names the model, the prompt's tags name the adapters */
    {"Model", PF_SEEN}, {"Version", PF_SEEN},
};
/* A1111 sampler names -> ours; "DPM++ 2M Karras" is the name before "Schedule type" existed */
static const struct { const char *a1111, *ours, *schedule; } png_samplers[] = {
    {"Euler a", "euler_a", NULL}, {"Euler", "euler", NULL}, {"DPM++ 2M", "dpmpp_2m", NULL},
    {"DPM++ 2M Karras", "dpmpp_2m", "karras"}, {"DDIM", "ddim", NULL},
};

/* v as an integer in [lo, hi] into out (as text); error names the file and field. */
static SlStatus png_int(const char *file, const char *key, const char *v, long long lo, long long hi, char *out, size_t n,
                        SlCtx *ctx) {
    char *end;
    errno = 0;
    long long x = strtoll(v, &end, 10);
    if (end == v || *end || errno || x < lo || x > hi)
        return sl_fail(ctx, SL_ERR_FORMAT, "%s: \"%s: %.40s\": want an integer in [%lld, %lld]", file, key, v, lo, hi);
    snprintf(out, n, "%lld", x);
    return SL_OK;
}

static SlStatus png_num(const char *file, const char *key, const char *v, double lo, double hi, char *out, size_t n,
                        SlCtx *ctx) {
    double x;
    if (!cli_num_ok(v, lo, hi, CLI_CLOSED, &x) || strlen(v) >= n)
        return sl_fail(ctx, SL_ERR_FORMAT, "%s: \"%s: %.40s\": want a number in [%g, %g]", file, key, v, lo, hi);
    snprintf(out, n, "%s", v);
    return SL_OK;
}

/* One "Key: value" of the parameters line; the unknown keys' names are added to `ignored`. */
static SlStatus png_field(SampleArgs *a, const char *key, const char *v, char *ignored, size_t n_ignored, SlCtx *ctx) {
    struct SamplePngArgs *p = a->png;
    const char *file = a->from_png;
    int k = -1;
    for (size_t i = 0; i < sizeof png_fields / sizeof png_fields[0]; i++)
        if (!strcmp(key, png_fields[i].key)) k = (int)i;
    if (k < 0) {
        size_t o = strlen(ignored);
        if (o + strlen(key) + 3 < n_ignored) snprintf(ignored + o, n_ignored - o, "%s%s", o ? ", " : "", key);
        return SL_OK;
    }
    switch (png_fields[k].f) { /* a field the command line gave is the command line's */
    case PF_STEPS:
        if (a->steps) return SL_OK;
        SL_TRY(png_int(file, key, v, 1, 1000, p->steps, sizeof p->steps, ctx));
        a->steps = p->steps;
        return SL_OK;
    case PF_SAMPLER:
        if (a->sampler) return SL_OK;
        for (size_t i = 0; i < sizeof png_samplers / sizeof png_samplers[0]; i++)
            if (!strcmp(v, png_samplers[i].a1111)) {
                snprintf(p->sampler, sizeof p->sampler, "%s", png_samplers[i].ours);
                a->sampler = p->sampler;
                if (png_samplers[i].schedule && !a->schedule) a->schedule = png_samplers[i].schedule;
                return SL_OK;
            }
        return sl_fail(ctx, SL_ERR_UNSUPPORTED, "%s: sampler \"%.40s\" is not one stylora has (Euler a, Euler, DPM++ 2M, "
                       "DPM++ 2M Karras, DDIM): pick one with --sampler", file, v);
    case PF_SCHEDULE:
        if (a->schedule) return SL_OK;
        if (!strcmp(v, "Karras")) a->schedule = "karras";
        else if (strcmp(v, "Automatic")) sl_log(ctx, SL_LOG_INFO, "%s: schedule type \"%.40s\" is not one stylora has: the scheduler's own", file, v);
        return SL_OK;
    case PF_CFG:
        if (a->cfg) return SL_OK;
        SL_TRY(png_num(file, key, v, SAMPLE_CFG_MIN, SAMPLE_CFG_MAX, p->cfg, sizeof p->cfg, ctx));
        a->cfg = p->cfg;
        return SL_OK;
    case PF_SEED:
        if (a->seed) return SL_OK;
        SL_TRY(png_int(file, key, v, 0, 1LL << 62, p->seed, sizeof p->seed, ctx));
        a->seed = p->seed;
        return SL_OK;
    case PF_SIZE: { /* re_imagesize: ^(\d+)x(\d+)$ */
        const char *x = strchr(v, 'x');
        char w[32], h[32];
        if (!x || x == v || (size_t)(x - v) >= sizeof w || strlen(x + 1) >= sizeof h)
            return sl_fail(ctx, SL_ERR_FORMAT, "%s: \"Size: %.40s\": want WIDTHxHEIGHT", file, v);
        memcpy(w, v, (size_t)(x - v));
        w[x - v] = '\0';
        snprintf(h, sizeof h, "%s", x + 1);
        if (!a->width) { SL_TRY(png_int(file, "Size (width)", w, 8, 8192, p->width, sizeof p->width, ctx)); a->width = p->width; }
        if (!a->height) { SL_TRY(png_int(file, "Size (height)", h, 8, 8192, p->height, sizeof p->height, ctx)); a->height = p->height; }
        return SL_OK;
    }
    case PF_CLIP_SKIP:
        if (a->clip_skip) return SL_OK;
        SL_TRY(png_int(file, key, v, 1, 64, p->clip_skip, sizeof p->clip_skip, ctx));
        a->clip_skip = p->clip_skip;
        return SL_OK;
    case PF_ETA:
        if (a->eta) return SL_OK;
        SL_TRY(png_num(file, key, v, 0, 1, p->eta, sizeof p->eta, ctx));
        a->eta = p->eta;
        return SL_OK;
    case PF_MODEL_HASH:
        snprintf(p->model_hash, sizeof p->model_hash, "%s", v);
        return SL_OK;
    case PF_LORA_HASHES:
        free(p->lora_hashes);
        if (!(p->lora_hashes = strdup(v))) return sl_fail(ctx, SL_ERR_NOMEM, "out of memory");
        return SL_OK;
    case PF_SEEN:
        return SL_OK;
    }
    return SL_OK;
}

/* re.findall(re_param, line): calls png_field for each match; returns the count, or -1
 * on error (ctx set). With a == NULL it only counts. */
static int png_params(pcre2_code *re, const char *line, SampleArgs *a, char *ignored, size_t n_ignored, SlCtx *ctx) {
    pcre2_match_data *md = pcre2_match_data_create_from_pattern(re, NULL);
    if (!md) { sl_fail(ctx, SL_ERR_NOMEM, "out of memory"); return -1; }
    size_t len = strlen(line), at = 0;
    int count = 0;
    char *v = malloc(len + 1);
    if (!v) { pcre2_match_data_free(md); sl_fail(ctx, SL_ERR_NOMEM, "out of memory"); return -1; }
    while (at <= len && pcre2_match(re, (PCRE2_SPTR)line, len, at, 0, md, NULL) > 0) {
        const PCRE2_SIZE *ov = pcre2_get_ovector_pointer(md);
        count++;
        if (a) {
            char key[128];
            size_t kl = ov[3] - ov[2], vl = ov[5] - ov[4];
            snprintf(key, sizeof key, "%.*s", (int)(kl < sizeof key ? kl : sizeof key - 1), line + ov[2]);
            const char *vs = line + ov[4];
            /* as A1111: a value starting and ending with '"' is JSON */
            if (!(vl >= 2 && vs[0] == '"' && vs[vl - 1] == '"' && unquote(vs, vl, v, len + 1))) {
                memcpy(v, vs, vl);
                v[vl] = '\0';
            }
            if (png_field(a, key, v, ignored, n_ignored, ctx)) { count = -1; break; }
        }
        at = ov[1] > ov[0] ? ov[1] : ov[0] + 1;
    }
    free(v);
    pcre2_match_data_free(md);
    return count;
}

SlStatus sample_args_from_png(SampleArgs *a, SlCtx *ctx) {
    SlImageText *text = NULL;
    int n_text = 0;
    SL_TRY(sl_image_read_text(a->from_png, &text, &n_text, ctx));
    const char *params = NULL;
    for (int i = 0; i < n_text; i++)
        if (!strcmp(text[i].key, "parameters")) params = text[i].value;
    SlStatus st = SL_OK;
    char *x = NULL, ignored[512] = "";
    pcre2_code *re = NULL;
    if (!params) st = sl_fail(ctx, SL_ERR_MISSING, "%s: no \"parameters\" text (A1111's generation settings) in this image", a->from_png);
    if (!st && !(a->png = calloc(1, sizeof *a->png))) st = sl_fail(ctx, SL_ERR_NOMEM, "out of memory");
    if (!st && !(x = strdup(params))) st = sl_fail(ctx, SL_ERR_NOMEM, "out of memory");
    if (!st) {
        /* infotext_utils.re_param_code, verbatim */
        static const char pat[] = "\\s*(\\w[\\w \\-/]+):\\s*(\"(?:\\\\.|[^\\\\\"])+\"|[^,]*)(?:,|$)";
        int err;
        PCRE2_SIZE off;
        re = pcre2_compile((PCRE2_SPTR)pat, PCRE2_ZERO_TERMINATED, 0, &err, &off, NULL);
        if (!re) st = sl_fail(ctx, SL_ERR_UNSUPPORTED, "infotext pattern did not compile (PCRE2 error %d)", err);
    }
    if (!st) {
        /* parse_generation_parameters: *lines, lastline = x.strip().split("\n") */
        char *body = strip(x), *last = strrchr(body, '\n');
        char *lastline = last ? last + 1 : body;
        int n = png_params(re, lastline, NULL, NULL, 0, ctx);
        if (n < 0) st = SL_ERR_NOMEM;
        if (n < 3) lastline = NULL; /* not a parameters line: it is part of the prompt */
        else if (last) *last = '\0';
        else body = body + strlen(body);
        size_t cap = strlen(params) + 1;
        a->png->prompt = calloc(cap, 1);
        a->png->negative = calloc(cap, 1);
        if (!st && (!a->png->prompt || !a->png->negative)) st = sl_fail(ctx, SL_ERR_NOMEM, "out of memory");
        int negative = 0;
        for (char *line = body, *next; !st && line; line = next) {
            next = strchr(line, '\n');
            if (next) *next++ = '\0';
            line = strip(line);
            if (!strncmp(line, "Negative prompt:", 16)) { negative = 1; line = strip(line + 16); }
            char *to = negative ? a->png->negative : a->png->prompt;
            if (*to) strcat(to, "\n");
            strcat(to, line);
        }
        if (!st && lastline && png_params(re, lastline, a, ignored, sizeof ignored, ctx) < 0) st = ctx->status ? ctx->status : SL_ERR_FORMAT;
    }
    if (!st && ignored[0]) sl_log(ctx, SL_LOG_INFO, "%s: fields stylora does not use, ignored: %s", a->from_png, ignored);
    if (!st && !a->prompt) a->prompt = a->png->prompt;
    if (!st && !a->negative && a->png->negative[0]) a->negative = a->png->negative;
    pcre2_code_free(re);
    free(x);
    sl_image_text_free(text, n_text);
    return st;
}
