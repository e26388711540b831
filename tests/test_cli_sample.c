/* test_cli_sample.c - `stylora train` and `stylora sample` end to end through
 * the real program on the tiny golden model (fixture tokenizer):
 * a JSON config file, the CSV log and loss curve, samples that are the same
 * bytes for the same seed, adapter weight 0 equal to the base, merged images
 * within one 8-bit level of unmerged, a prompts file that swaps adapters and
 * leaves the base bit-exact for its last job, A1111 parameters in the PNG (read back
 * with A1111's own infotext regex through PCRE2: the prompt with its <lora:...> tags and the
 * --lora adapters appended as tags, every field, Lora hashes equal to kohya's addnet hash
 * computed here), `sample --from-png` giving the same image bytes and text, overridden by an
 * explicit --seed, and a hand-written A1111 text parsed into the right settings,
 * plain prompts-file lines taken as written (apostrophes, 70 words, a <lora:...> tag),
 * a <lora:...> tag at the end of a 5,000-byte prompt,
 * and a bad prompts line reported with its line number. The kernel overrides of the
 * environment (SL_GEMM, SL_CONV, SL_ATTENTION, read by tools/ only): a bad value is
 * refused naming the variable; the portable kernels reach the trainer (on an
 * AVX-512 CPU its adapter is other bytes than the default kernels'). */
#include <stdarg.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <string.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <time.h>

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>

#include "core/config.h"
#include "core/safetensors.h"
#include "core/sha256.h"
#include "core/image.h"
#include "core/weights.h"
#include "fixture_tiny.h"
#include "nn/kernels.h"
#include "unet/unet.h"
#include "vae/vae.h"
#include "test_util.h"

static char g_root[2048], g_model[2200], g_data[2200], g_bin[2048];

static int sh(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static int sh(const char *fmt, ...) {
    char cmd[16384];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(cmd, sizeof cmd, fmt, ap);
    va_end(ap);
    int rc = system(cmd);
    return WIFEXITED(rc) ? WEXITSTATUS(rc) : -1;
}

static int read_png(const char *path, SlImage *im) {
    SlCtx ctx;
    sl_ctx_init(&ctx);
    SlImageReadOpts o = sl_image_read_opts_default();
    o.read_text = 1;
    if (sl_image_read(im, path, &o, &ctx) != SL_OK) {
        fprintf(stderr, "%s\n", ctx.msg);
        return 0;
    }
    return 1;
}

/* max |a - b| over pixels, or -1 if sizes differ / unreadable */
static int png_diff(const char *a, const char *b) {
    SlImage x = {0}, y = {0};
    int d = -1;
    if (read_png(a, &x) && read_png(b, &y) && x.w == y.w && x.h == y.h && x.c == y.c) {
        d = 0;
        for (size_t i = 0; i < (size_t)x.w * x.h * x.c; i++) {
            int e = abs((int)x.data[i] - (int)y.data[i]);
            if (e > d) d = e;
        }
    }
    sl_image_free(&x);
    sl_image_free(&y);
    return d;
}

/* The "parameters" text of a PNG (malloc'd), or NULL. */
static char *params_of(const char *path) {
    SlImage im = {0};
    char *out = NULL;
    if (read_png(path, &im))
        for (int i = 0; i < im.n_text; i++)
            if (strcmp(im.text[i].key, "parameters") == 0) out = strdup(im.text[i].value);
    sl_image_free(&im);
    return out;
}

/* A1111's modules/infotext_utils.py parse_generation_parameters, independently of
 * tools/sample_infotext.c: re_param_code verbatim, the last line is the parameters when
 * it holds 3 or more matches, "Negative prompt:" starts the negative lines, quoted values
 * are JSON (only \" and \\ occur here), "WxH" values split into KEY-1 and KEY-2. */
typedef struct Infotext {
    char prompt[8192], negative[2048];
    int n;
    char key[40][64], val[40][512];
} Infotext;

static const char *it_get(const Infotext *t, const char *key) {
    for (int i = 0; i < t->n; i++)
        if (!strcmp(t->key[i], key)) return t->val[i];
    return NULL;
}

static void it_strip(char *s) {
    size_t a = 0, n = strlen(s);
    while (a < n && (s[a] == ' ' || s[a] == '\t' || s[a] == '\n' || s[a] == '\r')) a++;
    while (n > a && (s[n - 1] == ' ' || s[n - 1] == '\t' || s[n - 1] == '\n' || s[n - 1] == '\r')) n--;
    memmove(s, s + a, n - a);
    s[n - a] = '\0';
}

static int it_findall(pcre2_code *re, const char *line, Infotext *t) {
    pcre2_match_data *md = pcre2_match_data_create_from_pattern(re, NULL);
    size_t len = strlen(line), at = 0;
    int n = 0;
    while (at <= len && pcre2_match(re, (PCRE2_SPTR)line, len, at, 0, md, NULL) > 0) {
        const PCRE2_SIZE *ov = pcre2_get_ovector_pointer(md);
        if (t && t->n < 39) {
            char *k = t->key[t->n], *v = t->val[t->n];
            snprintf(k, 64, "%.*s", (int)(ov[3] - ov[2]), line + ov[2]);
            size_t vl = ov[5] - ov[4], o = 0;
            const char *vs = line + ov[4];
            if (vl >= 2 && vs[0] == '"' && vs[vl - 1] == '"') {
                for (size_t i = 1; i + 1 < vl && o < 511; i++) v[o++] = vs[i] == '\\' ? vs[++i] : vs[i];
                v[o] = '\0';
            } else {
                snprintf(v, 512, "%.*s", (int)vl, vs);
            }
            unsigned w, h;
            char x[2];
            if (sscanf(v, "%u%1[x]%u", &w, x, &h) == 3 && strspn(v, "0123456789x") == strlen(v)) {
                char base[64];
                snprintf(base, sizeof base, "%s", k);
                snprintf(t->key[t->n + 1], 64, "%.60s-2", base);
                snprintf(t->val[t->n + 1], 512, "%u", h);
                snprintf(v, 512, "%u", w);
                strcat(k, "-1");
                t->n++;
            }
            t->n++;
        }
        n++;
        at = ov[1] > ov[0] ? ov[1] : ov[0] + 1;
    }
    pcre2_match_data_free(md);
    return n;
}

static int a1111_parse(const char *text, Infotext *t) {
    static const char pat[] = "\\s*(\\w[\\w \\-/]+):\\s*(\"(?:\\\\.|[^\\\\\"])+\"|[^,]*)(?:,|$)";
    int err;
    PCRE2_SIZE off;
    pcre2_code *re = pcre2_compile((PCRE2_SPTR)pat, PCRE2_ZERO_TERMINATED, 0, &err, &off, NULL);
    memset(t, 0, sizeof *t);
    if (!re || !text) { pcre2_code_free(re); return 0; }
    char *x = strdup(text);
    it_strip(x);
    char *last = strrchr(x, '\n'), *lastline = last ? last + 1 : x;
    if (it_findall(re, lastline, NULL) >= 3) {
        it_findall(re, lastline, t);
        if (last) *last = '\0';
        else x[0] = '\0';
    }
    int neg = 0;
    for (char *line = x, *next; line; line = next) {
        next = strchr(line, '\n');
        if (next) *next++ = '\0';
        it_strip(line);
        if (!strncmp(line, "Negative prompt:", 16)) { neg = 1; line += 16; it_strip(line); }
        char *to = neg ? t->negative : t->prompt;
        if (*to) strcat(to, "\n");
        strcat(to, line);
    }
    free(x);
    pcre2_code_free(re);
    return 1;
}

/* kohya's addnet hash (A1111 modules/hashes.py addnet_hash_safetensors): SHA-256 of a
 * safetensors file after its 8-byte length and JSON header; the first 12 hex digits. */
static void addnet_hash12(const char *path, char out[13]) {
    char *buf = NULL, hex[65];
    size_t n = 0;
    SlCtx ctx;
    sl_ctx_init(&ctx);
    strcpy(out, "(unreadable)");
    if (sl_read_file(path, 1u << 30, &buf, &n, &ctx) != SL_OK || n < 8) { free(buf); return; }
    uint64_t h = 0;
    for (int i = 7; i >= 0; i--) h = h << 8 | (uint8_t)buf[i];
    uint8_t d[32];
    if (8 + h <= n) {
        sl_sha256(buf + 8 + h, n - 8 - h, d);
        sl_sha256_hex(d, hex);
        memcpy(out, hex, 12);
        out[12] = '\0';
    }
    free(buf);
}

/* The tiny diffusers model as one single-file checkpoint (LDM names, through the
 * library's own key tables), so "Model hash" has a file to hash. 1 on success. */
static int write_single_file(const char *model, const char *out) {
    SlCtx ctx;
    sl_ctx_init(&ctx);
    char p[4096];
    SlStFile te, un, va;
    SlUNetConfig ucfg;
    SlUNet u;
    SlVaeConfig vcfg;
    SlKeyPair *um = NULL, *vm = NULL;
    int nu = 0, nv = 0, ok = 1;
    memset(&u, 0, sizeof u);
    memset(&te, 0, sizeof te);
    memset(&un, 0, sizeof un);
    memset(&va, 0, sizeof va);
    snprintf(p, sizeof p, "%s/text_encoder/model.safetensors", model);
    ok = ok && sl_st_open(&te, p, &ctx) == SL_OK;
    snprintf(p, sizeof p, "%s/unet/diffusion_pytorch_model.safetensors", model);
    ok = ok && sl_st_open(&un, p, &ctx) == SL_OK;
    snprintf(p, sizeof p, "%s/vae/diffusion_pytorch_model.safetensors", model);
    ok = ok && sl_st_open(&va, p, &ctx) == SL_OK;
    snprintf(p, sizeof p, "%s/unet/config.json", model);
    ok = ok && sl_unet_config_load(&ucfg, p, &ctx) == SL_OK && sl_unet_init_shapes(&u, &ucfg, &ctx) == SL_OK &&
         sl_unet_ldm_map(&u, &um, &nu, &ctx) == SL_OK;
    snprintf(p, sizeof p, "%s/vae/config.json", model);
    ok = ok && sl_vae_config_load(&vcfg, p, &ctx) == SL_OK && sl_vae_ldm_key_map(&vcfg, &vm, &nv, &ctx) == SL_OK;
    SlStWriter w;
    sl_st_writer_init(&w);
    static char names[4096][160];
    int k = 0;
    const SlStFile *files[3] = {&te, &un, &va};
    for (int f = 0; ok && f < 3; f++)
        for (int i = 0; ok && i < files[f]->n; i++) {
            const SlStEntry *e = &files[f]->entries[i];
            const char *to = e->name;
            const SlKeyPair *map = f == 1 ? um : vm;
            for (int q = 0; f && q < (f == 1 ? nu : nv); q++)
                if (!strcmp(map[q].from, e->name)) to = map[q].to;
            snprintf(names[k], sizeof names[k], "%s%s", f == 0 ? SL_CKPT_TE1_PREFIX : f == 1 ? SL_CKPT_UNET_PREFIX : SL_CKPT_VAE_PREFIX, to);
            ok = k < 4095 && sl_st_writer_add(&w, names[k++], e->dtype, e->ndim, e->shape, sl_st_data(files[f], e), &ctx) == SL_OK;
        }
    ok = ok && sl_st_writer_save(&w, out, &ctx) == SL_OK;
    if (!ok) fprintf(stderr, "single file: %s\n", ctx.msg);
    sl_st_writer_free(&w);
    sl_unet_free_map(um, nu);
    if (vm) sl_vae_key_map_free(vm, nv);
    sl_unet_free(&u);
    sl_st_close(&te);
    sl_st_close(&un);
    sl_st_close(&va);
    return ok;
}

int main(void) {
    snprintf(g_root, sizeof g_root, "%s/tmp_test_cli_sample", sl_test_binary());
    sh("rm -rf '%s'", g_root);
    mkdir(g_root, 0755);
    snprintf(g_model, sizeof g_model, "%s/model", g_root);
    snprintf(g_data, sizeof g_data, "%s/data", g_root);
    snprintf(g_bin, sizeof g_bin, "%s", sl_test_env("SL_STYLORA", "./stylora"));
    if (!fixture_tiny_model(g_model, sl_test_shared()) || !fixture_images(g_data, 3, 32)) return 1;
    char cache_dir[2300]; /* the Model-hash cache of every run here: not the user's ~/.cache */
    snprintf(cache_dir, sizeof cache_dir, "%s/hash_cache", g_root);
    setenv("STYLORA_CACHE_DIR", cache_dir, 1);
    /* train from a JSON config (command-line options win over it) */
    char p[4096];
    snprintf(p, sizeof p, "%s/train.json", g_root);
    FILE *f = fopen(p, "w");
    fprintf(f, "{\"steps\": 3, \"rank\": 2, \"lr\": 0.01, \"resolution\": 32, \"trigger\": \"sks\", \"flip\": true}\n");
    fclose(f);
    int rc = sh("'%s' train --quiet --model '%s' --data '%s' --out '%s/style.safetensors' --config '%s' --steps 4", g_bin, g_model,
                g_data, g_root, p);
    CHECK(rc == 0, "train failed (%d)", rc);
    char *csv = NULL;
    size_t n = 0;
    SlCtx ctx;
    sl_ctx_init(&ctx);
    snprintf(p, sizeof p, "%s/style.safetensors.csv", g_root);
    CHECK(sl_read_file(p, 1 << 20, &csv, &n, &ctx) == SL_OK, "no CSV log: %s", ctx.msg);
    int lines = 0;
    for (size_t i = 0; csv && i < n; i++) lines += csv[i] == '\n';
    CHECK(lines == 5 && csv && strncmp(csv, "step,loss,lr,grad_norm", 22) == 0, "CSV has %d lines (want header + 4 steps)", lines);
    free(csv);
    snprintf(p, sizeof p, "%s/style.safetensors.loss.png", g_root);
    CHECK(sl_path_is_file(p), "no loss curve");
    rc = sh("'%s' inspect '%s/style.safetensors' | grep -q 'ss_network_dim = 2'", g_bin, g_root);
    CHECK(rc == 0, "adapter metadata lacks ss_network_dim = 2 (JSON config not applied?)");
    /* sampling: same seed, same bytes */
    const char *common = "--steps 3 --cfg 3 --width 32 --height 32 --seed 5 --quiet";
    CHECK(sh("'%s' sample --model '%s' --prompt 'a red square' %s --out '%s/base1'", g_bin, g_model, common, g_root) == 0, "sample");
    CHECK(sh("'%s' sample --model '%s' --prompt 'a red square' %s --out '%s/base2'", g_bin, g_model, common, g_root) == 0, "sample");
    char a[4096], b[4096];
    snprintf(a, sizeof a, "%s/base1/00000-5.png", g_root);
    snprintf(b, sizeof b, "%s/base2/00000-5.png", g_root);
    CHECK(png_diff(a, b) == 0, "same seed gives different images");
    /* adapter weight 0 == base; merged ~ unmerged; weight 1 differs from base */
    CHECK(sh("'%s' sample --model '%s' --prompt 'a red square' %s --lora '%s/style.safetensors:0' --out '%s/w0'", g_bin, g_model, common, g_root, g_root) == 0, "w0");
    snprintf(b, sizeof b, "%s/w0/00000-5.png", g_root);
    CHECK(png_diff(a, b) == 0, "adapter weight 0 differs from the base");
    CHECK(sh("'%s' sample --model '%s' --prompt 'a red square' %s --lora '%s/style.safetensors' --out '%s/un'", g_bin, g_model, common, g_root, g_root) == 0, "unmerged");
    CHECK(sh("'%s' sample --model '%s' --prompt 'a red square' %s --lora '%s/style.safetensors' --merge --out '%s/me'", g_bin, g_model, common, g_root, g_root) == 0, "merged");
    char u[4096], m[4096];
    snprintf(u, sizeof u, "%s/un/00000-5.png", g_root);
    snprintf(m, sizeof m, "%s/me/00000-5.png", g_root);
    int dm = png_diff(u, m), db = png_diff(a, u);
    printf("merged vs unmerged: max %d levels; adapter vs base: max %d levels\n", dm, db);
    CHECK(dm >= 0 && dm <= 1, "merged vs unmerged differ by %d levels", dm);
    CHECK(db > 0, "the adapter changed nothing");
    /* parameters chunk */
    SlImage im = {0};
    if (read_png(u, &im)) {
        const char *params = NULL;
        for (int i = 0; i < im.n_text; i++)
            if (strcmp(im.text[i].key, "parameters") == 0) params = im.text[i].value;
        CHECK(params && strstr(params, "a red square <lora:style:1>\n") && strstr(params, "Steps: 3") && strstr(params, "Seed: 5") &&
                  strstr(params, "Size: 32x32") && strstr(params, "Lora hashes: \"style: ") && !strstr(params, "Lora weights"),
              "parameters chunk: %s", params ? params : "(none)");
    }
    sl_image_free(&im);
    /* a prompts file that swaps adapters; its last job (no adapter) equals the base */
    snprintf(p, sizeof p, "%s/prompts.txt", g_root);
    f = fopen(p, "w");
    fprintf(f, "# jobs\n--prompt \"a red square <lora:style:0.7>\" --seed 5\n\n--prompt \"a red square\" --seed 5 --negative_prompt \"\" \n"
               "--prompt \"a red square <lora:style:1>\" --seed 5 --steps 3\na red square\n");
    fclose(f);
    CHECK(sh("'%s' sample --model '%s' --prompts '%s' %s --merge --out '%s/jobs'", g_bin, g_model, p, common, g_root) == 0, "prompts file");
    snprintf(b, sizeof b, "%s/jobs/00003-5.png", g_root);
    CHECK(png_diff(a, b) == 0, "after merging and unmerging adapters the base image changed");
    snprintf(b, sizeof b, "%s/jobs/00001-5.png", g_root);
    CHECK(png_diff(a, b) == 0, "second job (no adapter) differs from the base");
    snprintf(b, sizeof b, "%s/jobs/00002-5.png", g_root);
    CHECK(png_diff(m, b) == 0, "third job (adapter weight 1, merged) differs from the merged run");
    /* plain lines are prompts as written (issue 21 item 3): an apostrophe is not a quote, a
     * 70-word line has no word cap, and a <lora:...> tag in a plain line still applies */
    snprintf(p, sizeof p, "%s/plain.txt", g_root);
    f = fopen(p, "w");
    fprintf(f, "the artist's red circle\na red square <lora:style:1>\n");
    for (int i = 0; i < 70; i++) fprintf(f, "%sword%d", i ? " " : "", i);
    fprintf(f, "\n");
    fclose(f);
    rc = sh("'%s' sample --model '%s' --prompts '%s' %s --out '%s/plain'", g_bin, g_model, p, common, g_root);
    CHECK(rc == 0, "prompts file of plain lines failed (%d)", rc);
    const char *want[3] = {"the artist's red circle\n", "a red square <lora:style:1>\n", "word0 word1 word2"};
    for (int k = 0; k < 3 && rc == 0; k++) {
        snprintf(b, sizeof b, "%s/plain/%05d-5.png", g_root, k);
        memset(&im, 0, sizeof im);
        const char *params = NULL;
        if (read_png(b, &im))
            for (int i = 0; i < im.n_text; i++)
                if (strcmp(im.text[i].key, "parameters") == 0) params = im.text[i].value;
        CHECK(params && strncmp(params, want[k], strlen(want[k])) == 0 && (k != 1 || strstr(params, "Lora hashes: \"style: ")) &&
                  (k != 2 || strstr(params, "word69\n")),
              "plain line %d: parameters %s", k + 1, params ? params : "(none)");
        sl_image_free(&im);
    }
    snprintf(b, sizeof b, "%s/plain/00001-5.png", g_root);
    CHECK(png_diff(u, b) == 0, "plain line with <lora:style:1> differs from the --lora run");
    /* a <lora:...> tag after 5,000 bytes of prompt still applies (it was cut with the text
     * at the job's 4,096-byte buffer), from --prompt and from a prompts-file line */
    static char longp[6000];
    size_t lo = 0;
    for (int i = 0; lo < 5000; i++) lo += (size_t)snprintf(longp + lo, sizeof longp - lo, "red%d ", i);
    snprintf(longp + lo, sizeof longp - lo, "<lora:style:1>");
    snprintf(p, sizeof p, "%s/long.txt", g_root);
    f = fopen(p, "w");
    fprintf(f, "%s\n", longp);
    fclose(f);
    rc = sh("'%s' sample --model '%s' --prompt '%s' --lora-dir '%s' %s --out '%s/long1'", g_bin, g_model, longp, g_root, common, g_root);
    int rc2 = sh("'%s' sample --model '%s' --prompts '%s' %s --out '%s/long2'", g_bin, g_model, p, common, g_root);
    CHECK(rc == 0 && rc2 == 0, "long prompts failed (%d, %d)", rc, rc2);
    for (int k = 1; k <= 2; k++) {
        snprintf(b, sizeof b, "%s/long%d/00000-5.png", g_root, k);
        memset(&im, 0, sizeof im);
        const char *params = NULL;
        if (read_png(b, &im))
            for (int i = 0; i < im.n_text; i++)
                if (strcmp(im.text[i].key, "parameters") == 0) params = im.text[i].value;
        CHECK(params && strncmp(params, "red0 red1", 9) == 0 && strstr(params, "<lora:style:1>\n") &&
                  strstr(params, "Lora hashes: \"style: "),
              "long prompt %d: the tag at its end was lost", k);
        sl_image_free(&im);
    }
    char *err = NULL;
    /* A1111 infotext (issue 20): two adapters, one by a tag and one by --lora, a negative
     * prompt holding a comma, DPM++ 2M with Karras sigmas, clip skip 2 */
    char style_hash[13];
    snprintf(p, sizeof p, "%s/style.safetensors", g_root);
    addnet_hash12(p, style_hash);
    CHECK(sh("cp '%s/style.safetensors' '%s/style2.safetensors'", g_root, g_root) == 0, "cp");
    rc = sh("'%s' sample --model '%s' --prompt 'a red square <lora:style2:0.5>' --negative 'blurry, dark' --lora '%s/style.safetensors:0.7' "
            "--lora-dir '%s' --sampler dpmpp_2m --schedule karras --clip-skip 2 %s --out '%s/info'",
            g_bin, g_model, g_root, g_root, common, g_root);
    CHECK(rc == 0, "sample with two adapters failed (%d)", rc);
    snprintf(a, sizeof a, "%s/info/00000-5.png", g_root);
    char *info = params_of(a);
    Infotext t;
    CHECK(a1111_parse(info, &t) && t.n >= 10, "A1111's regex finds %d fields in: %s", t.n, info ? info : "(none)");
    char want_hashes[128];
    snprintf(want_hashes, sizeof want_hashes, "style2: %s, style: %s", style_hash, style_hash);
    static const char *const fields[][2] = {{"Steps", "3"}, {"Sampler", "DPM++ 2M"}, {"Schedule type", "Karras"},
                                            {"CFG scale", "3"}, {"Seed", "5"}, {"Size-1", "32"}, {"Size-2", "32"},
                                            {"Clip skip", "2"}, {"Model", "model"}, {"Version", "stylora"}};
    for (size_t i = 0; i < sizeof fields / sizeof fields[0]; i++) {
        const char *v = it_get(&t, fields[i][0]);
        CHECK(v && !strcmp(v, fields[i][1]), "%s: '%s', want '%s'", fields[i][0], v ? v : "(none)", fields[i][1]);
    }
    const char *lh = it_get(&t, "Lora hashes");
    CHECK(lh && !strcmp(lh, want_hashes), "Lora hashes: '%s', want '%s'", lh ? lh : "(none)", want_hashes);
    CHECK(!it_get(&t, "Model hash"), "a diffusers folder got a Model hash");
    CHECK(!strcmp(t.prompt, "a red square <lora:style2:0.5> <lora:style:0.7>"), "prompt: '%s'", t.prompt);
    CHECK(!strcmp(t.negative, "blurry, dark"), "negative prompt: '%s'", t.negative);
    /* --from-png re-runs it: the same pixels and the same text */
    rc = sh("'%s' sample --model '%s' --from-png '%s' --lora-dir '%s' --quiet --out '%s/again'", g_bin, g_model, a, g_root, g_root);
    snprintf(b, sizeof b, "%s/again/00000-5.png", g_root);
    char *again = params_of(b);
    CHECK(rc == 0 && png_diff(a, b) == 0, "--from-png: rc %d, image differs (%d levels)", rc, png_diff(a, b));
    CHECK(info && again && !strcmp(info, again), "--from-png wrote other parameters:\n%s\nvs\n%s", info ? info : "", again ? again : "");
    free(again);
    /* an explicit option overrides the PNG's */
    rc = sh("'%s' sample --model '%s' --from-png '%s' --lora-dir '%s' --seed 6 --quiet --out '%s/seed6'", g_bin, g_model, a, g_root, g_root);
    snprintf(b, sizeof b, "%s/seed6/00000-6.png", g_root);
    again = params_of(b);
    CHECK(rc == 0 && again && strstr(again, "Seed: 6,") && strstr(again, "Clip skip: 2"), "--seed 6 over --from-png: %s",
          again ? again : "(no image)");
    free(again);
    free(info);
    /* a hand-written A1111 text: multi-line prompt and negative, the old "DPM++ 2M Karras"
     * name, fields stylora does not use (one info line names them) */
    SlImage hand = {0};
    CHECK_OK(sl_image_alloc(&hand, 8, 8, 3, &ctx), &ctx);
    memset(hand.data, 128, 8 * 8 * 3);
    const char *a1111 = "a red square, <lora:style:0.8>\nsecond line\nNegative prompt: blurry\nugly\n"
                        "Steps: 4, Sampler: DPM++ 2M Karras, CFG scale: 5.5, Seed: 1234, Size: 32x64, Model hash: 0123456789, "
                        "Model: v1-5, Denoising strength: 0.4, Clip skip: 2, Lora hashes: \"style: 0123456789ab\", "
                        "Hires upscale: 2, Version: v1.9.4";
    SlImageText ht[1] = {{(char *)"parameters", (char *)a1111}};
    snprintf(a, sizeof a, "%s/a1111.png", g_root);
    CHECK_OK(sl_image_write_png(&hand, a, ht, 1, &ctx), &ctx);
    sl_image_free(&hand);
    rc = sh("'%s' sample --model '%s' --from-png '%s' --lora-dir '%s' --out '%s/hand' 2>'%s/hand.err' >/dev/null", g_bin, g_model,
            a, g_root, g_root, g_root);
    snprintf(b, sizeof b, "%s/hand/00000-1234.png", g_root);
    info = params_of(b);
    CHECK(rc == 0 && a1111_parse(info, &t), "--from-png of an A1111 text: rc %d", rc);
    static const char *const hfields[][2] = {{"Steps", "4"}, {"Sampler", "DPM++ 2M"}, {"Schedule type", "Karras"},
                                             {"CFG scale", "5.5"}, {"Seed", "1234"}, {"Size-1", "32"}, {"Size-2", "64"},
                                             {"Clip skip", "2"}};
    for (size_t i = 0; i < sizeof hfields / sizeof hfields[0]; i++) {
        const char *v = it_get(&t, hfields[i][0]);
        CHECK(v && !strcmp(v, hfields[i][1]), "A1111 text: %s: '%s', want '%s'", hfields[i][0], v ? v : "(none)", hfields[i][1]);
    }
    snprintf(want_hashes, sizeof want_hashes, "style: %s", style_hash);
    lh = it_get(&t, "Lora hashes");
    CHECK(lh && !strcmp(lh, want_hashes), "A1111 text: Lora hashes '%s', want '%s'", lh ? lh : "(none)", want_hashes);
    CHECK(!strcmp(t.prompt, "a red square, <lora:style:0.8>\nsecond line") && !strcmp(t.negative, "blurry\nugly"),
          "A1111 text: prompt '%s', negative '%s'", t.prompt, t.negative);
    free(info);
    snprintf(p, sizeof p, "%s/hand.err", g_root);
    err = NULL;
    sl_read_file(p, 1 << 20, &err, &n, &ctx);
    const char *ign = err ? strstr(err, "ignored: ") : NULL;
    CHECK(ign && !strncmp(ign, "ignored: Denoising strength, Hires upscale\n", 42) && !strstr(ign + 1, "ignored: "),
          "one info line naming the unused fields: %s", err ? err : "");
    CHECK(err && strstr(err, "<lora:style> of hash 0123456789ab") && strstr(err, style_hash),
          "no warning that style.safetensors is not the adapter the PNG names: %s", err ? err : "");
    free(err);
    err = NULL;
    /* Model hash: a single-file checkpoint's whole-file SHA-256, 10 hex digits; a PNG made
     * with another model's hash gets a warning */
    snprintf(p, sizeof p, "%s/tiny.safetensors", g_root);
    CHECK(write_single_file(g_model, p), "cannot write the single-file checkpoint");
    char *ckpt = NULL, model_hash[65] = "(unreadable)";
    if (sl_read_file(p, 1u << 30, &ckpt, &n, &ctx) == SL_OK) {
        uint8_t d[32];
        sl_sha256(ckpt, n, d);
        sl_sha256_hex(d, model_hash);
        model_hash[10] = '\0';
    }
    free(ckpt);
    rc = sh("'%s' sample --model '%s' --config '%s' --prompt 'a red square' %s --out '%s/single'", g_bin, p, g_model, common, g_root);
    snprintf(b, sizeof b, "%s/single/00000-5.png", g_root);
    info = params_of(b);
    CHECK(rc == 0 && a1111_parse(info, &t), "single-file sample: rc %d", rc);
    const char *mh = it_get(&t, "Model hash"), *mn = it_get(&t, "Model");
    CHECK(mh && !strcmp(mh, model_hash) && mn && !strcmp(mn, "tiny"), "Model hash '%s' (want '%s'), Model '%s'", mh ? mh : "(none)",
          model_hash, mn ? mn : "(none)");
    free(info);
    /* the hash is cached per (path, size, mtime): a second run reads it from the cache (a value
     * planted there shows up in the PNG), and a file whose mtime changed is hashed again */
    char cache[2300], line[8192] = "";
    snprintf(cache, sizeof cache, "%s/hash_cache/model_hashes.tsv", g_root);
    FILE *cf = fopen(cache, "rb");
    if (cf) {
        if (!fgets(line, sizeof line, cf)) line[0] = '\0';
        fclose(cf);
    }
    CHECK(!strncmp(line, model_hash, 10) && strstr(line, "/tiny.safetensors\n"), "hash cache line: '%s'", line);
    if (strlen(line) > 64) {
        memcpy(line, "feedfacefe", 10);
        cf = fopen(cache, "wb");
        if (cf) { fputs(line, cf); fclose(cf); }
    }
    rc = sh("'%s' sample --model '%s' --config '%s' --prompt 'a red square' %s --out '%s/single2'", g_bin, p, g_model, common, g_root);
    snprintf(b, sizeof b, "%s/single2/00000-5.png", g_root);
    info = params_of(b);
    CHECK(rc == 0 && a1111_parse(info, &t) && it_get(&t, "Model hash") && !strcmp(it_get(&t, "Model hash"), "feedfacefe"),
          "a second run did not take the Model hash from the cache: rc %d", rc);
    free(info);
    struct timespec later[2] = {{0, UTIME_OMIT}, {1234567890, 0}};
    utimensat(AT_FDCWD, p, later, 0);
    rc = sh("'%s' sample --model '%s' --config '%s' --prompt 'a red square' %s --out '%s/single3'", g_bin, p, g_model, common, g_root);
    snprintf(b, sizeof b, "%s/single3/00000-5.png", g_root);
    info = params_of(b);
    CHECK(rc == 0 && a1111_parse(info, &t) && it_get(&t, "Model hash") && !strcmp(it_get(&t, "Model hash"), model_hash),
          "a changed mtime did not hash the file again: rc %d", rc);
    free(info);
    rc = sh("'%s' sample --model '%s' --config '%s' --from-png '%s/a1111.png' --lora-dir '%s' --steps 1 --quiet --out '%s/hand2' "
            "2>'%s/hand2.err' >/dev/null", g_bin, p, g_model, g_root, g_root, g_root, g_root);
    snprintf(p, sizeof p, "%s/hand2.err", g_root);
    sl_read_file(p, 1 << 20, &err, &n, &ctx);
    CHECK(rc == 0 && err && strstr(err, "model hash 0123456789") && strstr(err, model_hash), "model hash warning: rc %d, %s", rc,
          err ? err : "");
    free(err);
    err = NULL;
    /* a sampler stylora lacks, and a PNG without parameters: errors naming them */
    SlImage bare = {0};
    sl_image_alloc(&bare, 8, 8, 3, &ctx);
    memset(bare.data, 0, 8 * 8 * 3);
    SlImageText ut[1] = {{(char *)"parameters", (char *)"cat\nSteps: 4, Sampler: UniPC, Seed: 1"}};
    snprintf(a, sizeof a, "%s/unipc.png", g_root);
    snprintf(b, sizeof b, "%s/bare.png", g_root);
    CHECK(sl_image_write_png(&bare, a, ut, 1, &ctx) == SL_OK && sl_image_write_png(&bare, b, NULL, 0, &ctx) == SL_OK, "write");
    sl_image_free(&bare);
    rc = sh("'%s' sample --model '%s' --from-png '%s' --out '%s/x' 2>'%s' >/dev/null", g_bin, g_model, a, g_root, p);
    sl_read_file(p, 1 << 20, &err, &n, &ctx);
    CHECK(rc == 1 && err && strstr(err, "unipc.png") && strstr(err, "UniPC"), "unknown sampler: rc %d, %s", rc, err ? err : "");
    free(err);
    err = NULL;
    rc = sh("'%s' sample --model '%s' --from-png '%s' --out '%s/x' 2>'%s' >/dev/null", g_bin, g_model, b, g_root, p);
    sl_read_file(p, 1 << 20, &err, &n, &ctx);
    CHECK(rc == 1 && err && strstr(err, "bare.png") && strstr(err, "parameters"), "no parameters: rc %d, %s", rc, err ? err : "");
    free(err);
    err = NULL;
    /* bad line: its number in the message */
    snprintf(p, sizeof p, "%s/prompts.txt", g_root);
    f = fopen(p, "w");
    fprintf(f, "a red square\n--prompt \"unclosed\n");
    fclose(f);
    rc = sh("'%s' sample --model '%s' --prompts '%s' %s --out '%s/bad' 2>'%s/err.txt'", g_bin, g_model, p, common, g_root, g_root);
    snprintf(p, sizeof p, "%s/err.txt", g_root);
    err = NULL;
    sl_read_file(p, 1 << 16, &err, &n, &ctx);
    CHECK(rc == 1 && err && strstr(err, "prompts.txt:2") && strstr(err, "quote"), "bad line: rc %d, %s", rc, err ? err : "");
    free(err);
    err = NULL;
    /* kernel overrides: refused by name, or passed down to the trainer */
    rc = sh("SL_GEMM=fast '%s' sample --model '%s' --prompt 'a red square' %s --out '%s/badk' 2>'%s/err.txt'", g_bin, g_model,
            common, g_root, g_root);
    sl_read_file(p, 1 << 16, &err, &n, &ctx);
    CHECK(rc == 1 && err && strstr(err, "SL_GEMM") && strstr(err, "blas"), "SL_GEMM=fast: rc %d, %s", rc, err ? err : "");
    free(err);
    const char *train = "train --quiet --steps 2 --rank 2 --resolution 32 --seed 3";
    CHECK(sh("'%s' %s --model '%s' --data '%s' --out '%s/kd.safetensors'", g_bin, train, g_model, g_data, g_root) == 0,
          "train on the default kernels");
    CHECK(sh("SL_GEMM=blas SL_CONV=im2col SL_ATTENTION=rows '%s' %s --model '%s' --data '%s' --out '%s/kp.safetensors'", g_bin,
             train, g_model, g_data, g_root) == 0,
          "train on the portable kernels");
    const SlKernels avx = {SL_GEMM_KERNEL_AVX512, 0, SL_ATT_KERNEL_LANES};
    if (sl_kernels_available(&avx))
        CHECK(sh("cmp -s '%s/kd.safetensors' '%s/kp.safetensors'", g_root, g_root) == 1,
              "SL_GEMM=blas SL_ATTENTION=rows gave the default kernels' adapter bytes: the override did not reach the trainer");
    return sl_test_finish("test_cli_sample");
}
