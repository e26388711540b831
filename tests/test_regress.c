/* test_regress.c - every file in tests/data/regress/ fed to the parser its name
 * names: inputs that once crashed or hung a fuzzer (tests/fuzz/) and hand-made
 * hostile files. Each must give an error status with a message naming the file
 * (and, for configs, the key) and no crash (the ASan/UBSan build of the suite
 * is the real oracle).
 *
 * File name prefix -> parser, and what is asserted:
 *   image_*         sl_image_read (256x256 pixel limit)          error, names file
 *   st_*            sl_st_open                                    error, names file
 *   config_unet_*   sl_unet_config_load (+ init_shapes if OK)     error, names file
 *   config_vae_*    sl_vae_config_load                            error, names file
 *   config_clip_*   sl_clip_config_load                           error, names file
 *   config_sched_*  sl_sched_config_load                          error, names file
 *   adapter_*       sl_adapter_load against the tiny U-Net's sites: error, names file;
 *                   and without sites: no crash (shapes are only known with sites)
 *   tokload_*       the fuzz_tokenizer_load layout (see there): no crash
 *   tokenc_*        sl_tokenizer_encode_n with the SD 1.5 tokenizer: no crash, and
 *                   either SL_ERR_ARG or BOS ... EOS
 * A config name with "__KEY." (config_unet__layers_per_block.json) must also name KEY.
 */
#include <dirent.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>
#include <zlib.h>

#include "core/config.h"
#include "core/image.h"
#include "core/safetensors.h"
#include "pipeline/schedule.h"
#include "styles/adapter.h"
#include "test_util.h"
#include "textenc/clip.h"
#include "textenc/tokenizer.h"
#include "unet/unet.h"
#include "vae/vae.h"

static SlUNet g_unet;
static SlSites g_sites;
static SlTokenizer *g_tok;
static int g_n_files;

static int starts(const char *s, const char *p) { return strncmp(s, p, strlen(p)) == 0; }

/* The status must be an error whose one-line message names the file. */
static void expect_error(SlStatus st, const SlCtx *ctx, const char *path, const char *name) {
    CHECK(st != SL_OK, "%s: accepted, expected an error", name);
    if (st == SL_OK) return;
    printf("  %-48s %s\n", name, ctx->msg);
    CHECK(strstr(ctx->msg, name) != NULL, "%s: message does not name the file: %s", name, ctx->msg);
    CHECK(strchr(ctx->msg, '\n') == NULL, "%s: message is not one line: %s", name, ctx->msg);
    (void)path;
    const char *k = strstr(name, "__");
    if (k && starts(name, "config_")) {
        char key[128];
        snprintf(key, sizeof key, "%s", k + 2);
        char *dot = strrchr(key, '.');
        if (dot) *dot = 0;
        CHECK(strstr(ctx->msg, key) != NULL, "%s: message does not name key '%s': %s", name, key, ctx->msg);
    }
}

static void tokload(const char *path, const char *name) {
    size_t n = 0;
    char *buf = NULL;
    SlCtx ctx;
    sl_ctx_init(&ctx);
    if (sl_read_file(path, 1u << 24, &buf, &n, &ctx) != SL_OK || n == 0) {
        CHECK(0, "%s: unreadable: %s", name, ctx.msg);
        free(buf);
        return;
    }
    char dir[4096], f[4200];
    snprintf(dir, sizeof dir, "%s/tmp_regress_tok", sl_test_binary());
    mkdir(dir, 0755);
    const char *load = dir;
    const char *parts[3] = {"vocab.json", "merges.txt", "tokenizer_config.json"};
    for (int i = 0; i < 3; i++) {
        snprintf(f, sizeof f, "%s/%s", dir, parts[i]);
        unlink(f);
    }
    char *p = buf + 1, *end = buf + n;
    if (buf[0] & 1) {
        snprintf(f, sizeof f, "%s/bpe.txt", dir);
        FILE *o = fopen(f, "wb");
        fwrite(p, 1, (size_t)(end - p), o);
        fclose(o);
        load = f;
    } else {
        for (int i = 0; i < 3 && p; i++) {
            char *m = NULL;
            for (char *q = p; i < 2 && q + 4 <= end; q++)
                if (memcmp(q, "\n@@\n", 4) == 0) { m = q; break; }
            char *stop = m ? m : end;
            snprintf(f, sizeof f, "%s/%s", dir, parts[i]);
            FILE *o = fopen(f, "wb");
            fwrite(p, 1, (size_t)(stop - p), o);
            fclose(o);
            p = m ? m + 4 : NULL;
        }
    }
    SlTokenizer *tok = NULL;
    if (sl_tokenizer_load(&tok, load, &ctx) == SL_OK) {
        int32_t ids[77];
        int nr = 0;
        (void)sl_tokenizer_encode_n(tok, buf, n, ids, 77, &nr, &ctx);
        sl_tokenizer_free(tok);
    } else {
        CHECK(tok == NULL, "%s: failed load left a tokenizer", name);
    }
    free(buf);
}

static void tokenc(const char *path, const char *name) {
    size_t n = 0;
    char *buf = NULL;
    SlCtx ctx;
    sl_ctx_init(&ctx);
    if (sl_read_file(path, 1u << 24, &buf, &n, &ctx) != SL_OK) {
        CHECK(0, "%s: unreadable: %s", name, ctx.msg);
        return;
    }
    int32_t ids[77];
    int nr = 0;
    SlStatus st = sl_tokenizer_encode_n(g_tok, buf, n, ids, 77, &nr, &ctx);
    CHECK(st == SL_OK || st == SL_ERR_ARG, "%s: status %s: %s", name, sl_status_name(st), ctx.msg);
    if (st == SL_OK)
        CHECK(nr >= 2 && ids[0] == sl_tokenizer_bos(g_tok) && ids[nr - 1] == sl_tokenizer_eos(g_tok),
              "%s: output is not BOS ... EOS", name);
    free(buf);
}

static void one_file(const char *path, const char *name) {
    SlCtx ctx;
    sl_ctx_init(&ctx);
    SlStatus st;
    g_n_files++;
    if (starts(name, "image_")) {
        SlImageReadOpts o = sl_image_read_opts_default();
        o.max_pixels = 256 * 256;
        SlImage im;
        st = sl_image_read(&im, path, &o, &ctx);
        if (st == SL_OK) sl_image_free(&im);
        expect_error(st, &ctx, path, name);
    } else if (starts(name, "st_")) {
        SlStFile f;
        st = sl_st_open(&f, path, &ctx);
        if (st == SL_OK) sl_st_close(&f);
        expect_error(st, &ctx, path, name);
    } else if (starts(name, "config_unet_")) {
        SlUNetConfig c;
        st = sl_unet_config_load(&c, path, &ctx);
        if (st == SL_OK) { /* an accepted config must at least build its module tree */
            SlUNet u;
            memset(&u, 0, sizeof u);
            st = sl_unet_init_shapes(&u, &c, &ctx);
            sl_unet_free(&u);
        }
        expect_error(st, &ctx, path, name);
    } else if (starts(name, "config_vae_")) {
        SlVaeConfig c;
        st = sl_vae_config_load(&c, path, &ctx);
        expect_error(st, &ctx, path, name);
    } else if (starts(name, "config_clip_")) {
        SlClipConfig c;
        st = sl_clip_config_load(&c, path, &ctx);
        expect_error(st, &ctx, path, name);
    } else if (starts(name, "config_sched_")) {
        SlSchedConfig c;
        st = sl_sched_config_load(&c, path, &ctx);
        if (st == SL_OK) sl_sched_config_free(&c);
        expect_error(st, &ctx, path, name);
    } else if (starts(name, "adapter_")) {
        SlAdapter ad;
        memset(&ad, 0, sizeof ad);
        SlAdapterLoadOpts o = {0}; /* alpha from the file (metadata), as `sample --lora` does */
        st = sl_adapter_load(&ad, path, NULL, &o, NULL, &ctx); /* no crash; may load */
        sl_adapter_free(&ad);
        memset(&ad, 0, sizeof ad);
        st = sl_adapter_load(&ad, path, &g_sites, &o, NULL, &ctx);
        sl_adapter_free(&ad);
        expect_error(st, &ctx, path, name);
    } else if (starts(name, "tokload_")) {
        tokload(path, name);
    } else if (starts(name, "tokenc_")) {
        tokenc(path, name);
    } else {
        g_n_files--;
        CHECK(0, "%s: unknown prefix (see test_regress.c for the naming rule)", name);
    }
}

/* A gzip bomb as a CLIP bpe file: 100 MiB of merges in ~0.3 MB must be refused at the
 * tokenizer's file-size bound, not read into memory. Written here (too big to commit). */
static void test_gzip_bomb(void) {
    char path[4200];
    snprintf(path, sizeof path, "%s/tmp_regress_bomb.txt.gz", sl_test_binary());
    gzFile g = gzopen(path, "wb1");
    CHECK(g != NULL, "cannot write %s", path);
    if (!g) return;
    static char chunk[1 << 20];
    for (size_t i = 0; i + 4 <= sizeof chunk; i += 4) memcpy(chunk + i, "a b\n", 4);
    gzputs(g, "#version: 0.2\n");
    for (int i = 0; i < 100; i++) gzwrite(g, chunk, sizeof chunk);
    gzclose(g);
    SlCtx ctx;
    sl_ctx_init(&ctx);
    SlTokenizer *tok = NULL;
    SlStatus st = sl_tokenizer_load(&tok, path, &ctx);
    CHECK(st != SL_OK && tok == NULL && strstr(ctx.msg, "larger than"), "gzip bomb: %s", ctx.msg);
    printf("  %-48s %s\n", "(gzip bomb, 100 MiB)", ctx.msg);
    sl_tokenizer_free(tok);
    unlink(path);
}

int main(void) {
    SlCtx ctx;
    sl_ctx_init(&ctx);
    char path[8400];
    snprintf(path, sizeof path, "%s/golden/tiny-sd1/unet/config.json", sl_test_shared());
    SlUNetConfig cfg;
    sl_sites_init(&g_sites);
    CHECK_OK(sl_unet_config_load(&cfg, path, &ctx), &ctx);
    CHECK_OK(sl_unet_init(&g_unet, &cfg, &ctx), &ctx);
    CHECK_OK(sl_unet_plan(&g_unet, 1, 16, 16, 8, &ctx), &ctx);
    CHECK_OK(sl_sites_add_unet(&g_sites, &g_unet, &ctx), &ctx);
    snprintf(path, sizeof path, "%s/sd15/tokenizer", sl_test_shared());
    CHECK_OK(sl_tokenizer_load(&g_tok, path, &ctx), &ctx);
    if (sl_test_failures) return sl_test_finish("test_regress");

    char dir[4096];
    snprintf(dir, sizeof dir, "%s/tests/data/regress", sl_test_source());
    DIR *d = opendir(dir);
    CHECK(d != NULL, "cannot open %s", dir);
    if (d) {
        /* sorted order, so failures read the same on every machine */
        char **names = NULL;
        int n = 0, cap = 0;
        struct dirent *e;
        while ((e = readdir(d))) {
            if (e->d_name[0] == '.') continue;
            if (n == cap) {
                cap = cap ? 2 * cap : 64;
                names = realloc(names, (size_t)cap * sizeof *names);
            }
            names[n++] = strdup(e->d_name);
        }
        closedir(d);
        for (int i = 0; i < n; i++)
            for (int j = i + 1; j < n; j++)
                if (strcmp(names[j], names[i]) < 0) {
                    char *t = names[i];
                    names[i] = names[j];
                    names[j] = t;
                }
        for (int i = 0; i < n; i++) {
            snprintf(path, sizeof path, "%s/%s", dir, names[i]);
            struct timespec t0, t1;
            clock_gettime(CLOCK_MONOTONIC, &t0);
            one_file(path, names[i]);
            clock_gettime(CLOCK_MONOTONIC, &t1);
            double dt = (double)(t1.tv_sec - t0.tv_sec) + 1e-9 * (double)(t1.tv_nsec - t0.tv_nsec);
            /* fuzzer "timeout" inputs must stay fixed: generous for a loaded sanitizer run */
            CHECK(dt < 20.0, "%s: took %.1f s (a hang?)", names[i], dt);
            free(names[i]);
        }
        free(names);
    }
    test_gzip_bomb();
    printf("test_regress: %d files\n", g_n_files);
    CHECK(g_n_files > 0, "no regression files found");
    sl_tokenizer_free(g_tok);
    sl_sites_free(&g_sites);
    sl_unet_free(&g_unet);
    return sl_test_finish("test_regress");
}
