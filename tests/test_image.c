/* test_image.c - core/image.c: PNG round trips with text, the PNG colour
 * types libpng must convert, JPEG/BMP/TGA through stb_image, refusal of
 * broken, truncated and oversized files, the pixel helpers, and the whole-file
 * reader (core/file.h) every image, config and caption goes through. Files go to
 * $SL_BINARY_DIR/test_image_files/. */
#include <errno.h>
#include <png.h>
#include <stdint.h>
#include <sys/stat.h>
#include <dirent.h>
#include <zlib.h>

#define STB_IMAGE_WRITE_IMPLEMENTATION
#define STB_IMAGE_WRITE_STATIC
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wunused-function"
#pragma GCC diagnostic ignored "-Wunused-parameter"
#pragma GCC diagnostic ignored "-Wsign-compare"
#include <stb_image_write.h>
#pragma GCC diagnostic pop

#include "core/file.h"
#include "core/image.h"
#include "core/status.h"
#include "test_util.h"

static char g_dir[4096];

static const char *tpath(const char *name) {
    static char buf[8][4352];
    static int k = 0;
    k = (k + 1) % 8;
    snprintf(buf[k], sizeof buf[k], "%s/%s", g_dir, name);
    return buf[k];
}

static void write_bytes(const char *path, const void *data, size_t n) {
    FILE *f = fopen(path, "wb");
    if (!f) { fprintf(stderr, "cannot write %s\n", path); exit(2); }
    if (n) fwrite(data, 1, n, f);
    fclose(f);
}

static uint8_t *read_bytes(const char *path, size_t *n) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    fseek(f, 0, SEEK_END);
    long len = ftell(f);
    fseek(f, 0, SEEK_SET);
    uint8_t *b = malloc((size_t)len + 1);
    *n = fread(b, 1, (size_t)len, f);
    fclose(f);
    return b;
}

/* A deterministic test pattern (H, W, C). */
static uint8_t *pattern(int w, int h, int c, unsigned seed) {
    uint8_t *p = malloc((size_t)w * h * c);
    uint32_t s = seed * 2654435761u + 1;
    for (size_t i = 0; i < (size_t)w * h * c; i++) {
        s = s * 1664525u + 1013904223u;
        p[i] = (uint8_t)(s >> 24);
    }
    return p;
}

/* Checks status and that the message names the file. */
static void check_fails(SlStatus got, SlStatus want, const SlCtx *ctx, const char *path, const char *what) {
    CHECK(got == want, "%s: status %s, want %s (%s)", what, sl_status_name(got), sl_status_name(want), ctx->msg);
    CHECK(strstr(ctx->msg, path) != NULL, "%s: message does not name %s: %s", what, path, ctx->msg);
    printf("ok   %s -> %s: %s\n", what, sl_status_name(got), ctx->msg);
}

/* Writes a PNG with libpng directly: any colour type / depth, optional palette, tRNS, interlace. */
static void write_png_raw(const char *path, int w, int h, int depth, int color, const uint8_t *pix,
                          const png_color *pal, int npal, const uint8_t *trns, int ntrns,
                          const png_color_16 *trns_color, int interlace) {
    FILE *f = fopen(path, "wb");
    png_structp png = png_create_write_struct(PNG_LIBPNG_VER_STRING, NULL, NULL, NULL);
    png_infop info = png_create_info_struct(png);
    if (setjmp(png_jmpbuf(png))) { fprintf(stderr, "libpng write failed for %s\n", path); exit(2); }
    png_init_io(png, f);
    png_set_IHDR(png, info, (png_uint_32)w, (png_uint_32)h, depth, color,
                 interlace ? PNG_INTERLACE_ADAM7 : PNG_INTERLACE_NONE, PNG_COMPRESSION_TYPE_DEFAULT,
                 PNG_FILTER_TYPE_DEFAULT);
    if (pal) png_set_PLTE(png, info, pal, npal);
    if (trns || trns_color) png_set_tRNS(png, info, trns, ntrns, (png_color_16p)trns_color);
    png_write_info(png, info);
    size_t rowbytes = png_get_rowbytes(png, info);
    png_bytep *rows = malloc((size_t)h * sizeof *rows);
    for (int y = 0; y < h; y++) rows[y] = (png_bytep)pix + (size_t)y * rowbytes;
    png_write_image(png, rows);
    png_write_end(png, NULL);
    png_destroy_write_struct(&png, &info);
    free(rows);
    fclose(f);
}

static const char *find_text(const SlImage *img, const char *key) {
    for (int i = 0; i < img->n_text; i++)
        if (strcmp(img->text[i].key, key) == 0) return img->text[i].value;
    return NULL;
}

static int count_tmp_files(void) {
    DIR *d = opendir(g_dir);
    int n = 0;
    struct dirent *e;
    while (d && (e = readdir(d)))
        if (strstr(e->d_name, ".tmp.")) n++;
    if (d) closedir(d);
    return n;
}

static void test_roundtrip(void) {
    SlCtx ctx;
    sl_ctx_init(&ctx);
    const char *params = "a painting of a lighthouse, oil on canvas\nNegative prompt: blurry\n"
                         "Steps: 20, Sampler: Euler a, CFG scale: 7, Seed: 1234, Size: 32x24";
    const char *utf8 = "caf\xc3\xa9 \xe2\x9c\x93 \xe6\x97\xa5\xe6\x9c\xac";
    SlImageText text[2] = {{(char *)"parameters", (char *)params}, {(char *)"stylora", (char *)utf8}};
    for (int c = 3; c <= 4; c++) {
        SlImage img = {.w = 32, .h = 24, .c = c, .data = pattern(32, 24, c, (unsigned)c)};
        const char *p = tpath(c == 3 ? "rgb.png" : "rgba.png");
        CHECK_OK(sl_image_write_png(&img, p, text, 2, &ctx), &ctx);
        SlImageReadOpts o = sl_image_read_opts_default();
        o.read_text = 1;
        SlImage back;
        CHECK_OK(sl_image_read(&back, p, &o, &ctx), &ctx);
        CHECK(back.w == 32 && back.h == 24 && back.c == c, "c=%d: read back %dx%dx%d", c, back.w, back.h, back.c);
        CHECK(back.data && memcmp(back.data, img.data, (size_t)32 * 24 * c) == 0, "c=%d: pixels differ", c);
        const char *v1 = find_text(&back, "parameters"), *v2 = find_text(&back, "stylora");
        CHECK(back.n_text == 2 && v1 && strcmp(v1, params) == 0, "c=%d: parameters chunk lost (%d chunks)", c, back.n_text);
        CHECK(v2 && strcmp(v2, utf8) == 0, "c=%d: UTF-8 iTXt chunk differs: %s", c, v2 ? v2 : "(none)");
        sl_image_free(&back);

        SlImageText *t = NULL;
        int nt = 0;
        CHECK_OK(sl_image_read_text(p, &t, &nt, &ctx), &ctx);
        CHECK(nt == 2 && strcmp(t[0].key, "parameters") == 0 && strcmp(t[0].value, params) == 0,
              "read_text: %d chunks", nt);
        sl_image_text_free(t, nt);

        int pw, ph, pc;
        CHECK_OK(sl_image_probe(p, &pw, &ph, &pc, &ctx), &ctx);
        CHECK(pw == 32 && ph == 24 && pc == c, "probe %dx%dx%d", pw, ph, pc);

        /* Channel conversion on read. */
        o = sl_image_read_opts_default();
        o.channels = c == 3 ? 4 : 3;
        CHECK_OK(sl_image_read(&back, p, &o, &ctx), &ctx);
        CHECK(back.c == o.channels, "converted channels %d", back.c);
        int bad = 0;
        for (int i = 0; i < 32 * 24 && back.data; i++) {
            if (c == 3) {
                bad += memcmp(back.data + 4 * i, img.data + 3 * i, 3) != 0 || back.data[4 * i + 3] != 255;
            } else {
                const uint8_t *s = img.data + 4 * i;
                for (int k = 0; k < 3; k++) {
                    double want = (s[3] * s[k] + (255.0 - s[3]) * 255.0) / 255.0;
                    bad += fabs(back.data[3 * i + k] - want) > 0.5 + 1e-9;
                }
            }
        }
        CHECK(bad == 0, "c=%d: %d pixels wrong after channel conversion", c, bad);
        sl_image_free(&back);
        free(img.data);
    }
    CHECK(count_tmp_files() == 0, "temporary files left in %s", g_dir);

    /* Overwrite is atomic-by-rename: the old file is replaced whole. */
    SlImage small = {.w = 2, .h = 2, .c = 3, .data = pattern(2, 2, 3, 9)};
    CHECK_OK(sl_image_write_png(&small, tpath("rgb.png"), NULL, 0, &ctx), &ctx);
    SlImage back;
    CHECK_OK(sl_image_read(&back, tpath("rgb.png"), NULL, &ctx), &ctx);
    CHECK(back.w == 2 && back.n_text == 0, "overwritten file: %dx%d, %d text", back.w, back.h, back.n_text);
    sl_image_free(&back);

    /* Bad key: refused, nothing written. */
    SlImageText badkey = {(char *)"", (char *)"x"};
    SlStatus st = sl_image_write_png(&small, tpath("badkey.png"), &badkey, 1, &ctx);
    check_fails(st, SL_ERR_ARG, &ctx, tpath("badkey.png"), "empty text key");
    struct stat sb;
    CHECK(stat(tpath("badkey.png"), &sb) != 0, "file written despite bad key");
    /* Unwritable destination. */
    const char *nodir = tpath("no/such/dir/x.png");
    st = sl_image_write_png(&small, nodir, NULL, 0, &ctx);
    check_fails(st, SL_ERR_IO, &ctx, nodir, "write into a missing folder");
    free(small.data);
}

static void test_png_kinds(void) {
    SlCtx ctx;
    sl_ctx_init(&ctx);
    const int w = 7, h = 5; /* odd sizes exercise row padding and interlace */
    SlImage img;

    /* 16-bit RGB: expect round(v / 257) (libpng's scale_16 rounds). */
    uint16_t v16[7 * 5 * 3];
    uint8_t be[7 * 5 * 3 * 2];
    for (int i = 0; i < w * h * 3; i++) {
        v16[i] = (uint16_t)((i * 40503u + 128u) & 0xFFFF);
        be[2 * i] = (uint8_t)(v16[i] >> 8);
        be[2 * i + 1] = (uint8_t)v16[i];
    }
    write_png_raw(tpath("rgb16.png"), w, h, 16, PNG_COLOR_TYPE_RGB, be, NULL, 0, NULL, 0, NULL, 0);
    CHECK_OK(sl_image_read(&img, tpath("rgb16.png"), NULL, &ctx), &ctx);
    int bad = 0;
    for (int i = 0; i < w * h * 3 && img.data; i++) bad += fabs(img.data[i] - v16[i] / 257.0) > 0.5 + 1e-9;
    CHECK(img.c == 3 && bad == 0, "16-bit RGB: %d of %d samples not round(v/257)", bad, w * h * 3);
    sl_image_free(&img);

    /* 8-bit palette with tRNS -> RGBA. */
    png_color pal[3] = {{255, 0, 0}, {0, 255, 0}, {10, 20, 30}};
    uint8_t trns[2] = {255, 128};
    uint8_t idx[7 * 5];
    for (int i = 0; i < w * h; i++) idx[i] = (uint8_t)(i % 3);
    write_png_raw(tpath("pal.png"), w, h, 8, PNG_COLOR_TYPE_PALETTE, idx, pal, 3, trns, 2, NULL, 0);
    CHECK_OK(sl_image_read(&img, tpath("pal.png"), NULL, &ctx), &ctx);
    bad = 0;
    for (int i = 0; i < w * h && img.data; i++) {
        const png_color *e = &pal[idx[i]];
        uint8_t a = idx[i] < 2 ? trns[idx[i]] : 255;
        const uint8_t *px = img.data + 4 * i;
        bad += px[0] != e->red || px[1] != e->green || px[2] != e->blue || px[3] != a;
    }
    CHECK(img.c == 4 && bad == 0, "palette+tRNS: c=%d, %d pixels wrong", img.c, bad);
    sl_image_free(&img);

    /* 2-bit palette without tRNS -> RGB (packed pixels). */
    uint8_t packed[5 * 2];
    for (int y = 0; y < h; y++) {
        packed[2 * y] = 0x1B;     /* indices 0 1 2 3 */
        packed[2 * y + 1] = 0x24; /* indices 0 2 1 (0) */
    }
    png_color pal4[4] = {{0, 0, 0}, {85, 85, 85}, {170, 170, 170}, {255, 255, 255}};
    write_png_raw(tpath("pal2.png"), w, h, 2, PNG_COLOR_TYPE_PALETTE, packed, pal4, 4, NULL, 0, NULL, 0);
    CHECK_OK(sl_image_read(&img, tpath("pal2.png"), NULL, &ctx), &ctx);
    static const int want_idx[7] = {0, 1, 2, 3, 0, 2, 1};
    bad = 0;
    for (int y = 0; y < h && img.data; y++)
        for (int x = 0; x < w; x++) bad += img.data[(y * w + x) * 3 + 1] != pal4[want_idx[x]].green;
    CHECK(img.c == 3 && bad == 0, "2-bit palette: c=%d, %d pixels wrong", img.c, bad);
    sl_image_free(&img);

    /* 8-bit gray, interlaced -> RGB with equal channels. */
    uint8_t gray[7 * 5];
    for (int i = 0; i < w * h; i++) gray[i] = (uint8_t)(i * 7);
    write_png_raw(tpath("gray_interlaced.png"), w, h, 8, PNG_COLOR_TYPE_GRAY, gray, NULL, 0, NULL, 0, NULL, 1);
    CHECK_OK(sl_image_read(&img, tpath("gray_interlaced.png"), NULL, &ctx), &ctx);
    bad = 0;
    for (int i = 0; i < w * h && img.data; i++)
        bad += img.data[3 * i] != gray[i] || img.data[3 * i + 1] != gray[i] || img.data[3 * i + 2] != gray[i];
    CHECK(img.c == 3 && bad == 0, "gray interlaced: c=%d, %d pixels wrong", img.c, bad);
    sl_image_free(&img);
    SlImageText *t = NULL;
    int nt = -1;
    CHECK_OK(sl_image_read_text(tpath("gray_interlaced.png"), &t, &nt, &ctx), &ctx); /* row streaming, 7 passes */
    CHECK(nt == 0 && t == NULL, "interlaced PNG without text: %d chunks", nt);

    /* 1-bit gray -> 0 / 255. */
    uint8_t bits[5];
    for (int y = 0; y < h; y++) bits[y] = 0xAA; /* 1 0 1 0 1 0 1 */
    write_png_raw(tpath("gray1.png"), w, h, 1, PNG_COLOR_TYPE_GRAY, bits, NULL, 0, NULL, 0, NULL, 0);
    CHECK_OK(sl_image_read(&img, tpath("gray1.png"), NULL, &ctx), &ctx);
    bad = 0;
    for (int x = 0; x < w && img.data; x++) bad += img.data[3 * x] != (x % 2 == 0 ? 255 : 0);
    CHECK(img.c == 3 && bad == 0, "1-bit gray: %d pixels wrong", bad);
    sl_image_free(&img);

    /* 16-bit gray+alpha -> RGBA. */
    uint8_t ga[7 * 5 * 4];
    for (int i = 0; i < w * h; i++) {
        uint16_t g = (uint16_t)(i * 1800), a = (uint16_t)(65535 - i * 1000);
        ga[4 * i] = (uint8_t)(g >> 8); ga[4 * i + 1] = (uint8_t)g;
        ga[4 * i + 2] = (uint8_t)(a >> 8); ga[4 * i + 3] = (uint8_t)a;
    }
    write_png_raw(tpath("ga16.png"), w, h, 16, PNG_COLOR_TYPE_GRAY_ALPHA, ga, NULL, 0, NULL, 0, NULL, 0);
    CHECK_OK(sl_image_read(&img, tpath("ga16.png"), NULL, &ctx), &ctx);
    bad = 0;
    for (int i = 0; i < w * h && img.data; i++) {
        double g = (i * 1800) / 257.0, a = (65535 - i * 1000) / 257.0;
        const uint8_t *px = img.data + 4 * i;
        bad += fabs(px[0] - g) > 0.5 + 1e-9 || px[1] != px[0] || px[2] != px[0] || fabs(px[3] - a) > 0.5 + 1e-9;
    }
    CHECK(img.c == 4 && bad == 0, "16-bit gray+alpha: c=%d, %d pixels wrong", img.c, bad);
    sl_image_free(&img);

    /* RGB with a tRNS colour key -> RGBA with that colour transparent. */
    uint8_t rgb[7 * 5 * 3];
    for (int i = 0; i < w * h; i++) { rgb[3 * i] = (uint8_t)(i % 2 ? 50 : 60); rgb[3 * i + 1] = 70; rgb[3 * i + 2] = 80; }
    png_color_16 key = {0, 50, 70, 80, 0};
    write_png_raw(tpath("rgb_key.png"), w, h, 8, PNG_COLOR_TYPE_RGB, rgb, NULL, 0, NULL, 0, &key, 0);
    CHECK_OK(sl_image_read(&img, tpath("rgb_key.png"), NULL, &ctx), &ctx);
    bad = 0;
    for (int i = 0; i < w * h && img.data; i++) bad += img.data[4 * i + 3] != (i % 2 ? 0 : 255);
    CHECK(img.c == 4 && bad == 0, "tRNS colour key: c=%d, %d alphas wrong", img.c, bad);
    sl_image_free(&img);
}

/* Reads a binary PPM (P6) or PGM (P5) written by PIL; returns pixels (H, W, C). */
static uint8_t *read_pnm(const char *path, int *w, int *h, int *c) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    char magic[3] = {0};
    int maxv = 0;
    if (fscanf(f, "%2s %d %d %d", magic, w, h, &maxv) != 4 || maxv != 255 || fgetc(f) == EOF) {
        fclose(f);
        return NULL;
    }
    *c = strcmp(magic, "P6") == 0 ? 3 : 1;
    size_t n = (size_t)*w * *h * *c;
    uint8_t *p = malloc(n);
    if (fread(p, 1, n, f) != n) { free(p); p = NULL; }
    fclose(f);
    return p;
}

/* JPEGs written by libjpeg (tests/reference/image_jpeg.py): stb_image's decode
 * against libjpeg's, and against the source pattern. */
static void test_jpeg(void) {
    SlCtx ctx;
    sl_ctx_init(&ctx);
    const int w = 48, h = 40;
    uint8_t *src = malloc((size_t)w * h * 3);
    for (int y = 0; y < h; y++)
        for (int x = 0; x < w; x++) {
            uint8_t *p = src + (y * w + x) * 3;
            p[0] = (uint8_t)(x * 5);
            p[1] = (uint8_t)(y * 6);
            p[2] = (uint8_t)(int)(128 + 60 * sin(x * 0.2) * cos(y * 0.15));
        }
    static const char *names[3] = {"image_baseline", "image_progressive", "image_gray"};
    for (int k = 0; k < 3; k++) {
        char jpg[4400], ref[4400];
        snprintf(jpg, sizeof jpg, "%s/tests/data/%s.jpg", sl_test_source(), names[k]);
        snprintf(ref, sizeof ref, "%s/tests/data/%s.%s", sl_test_source(), names[k], k == 2 ? "pgm" : "ppm");
        int rw = 0, rh = 0, rc = 0;
        uint8_t *lj = read_pnm(ref, &rw, &rh, &rc);
        CHECK(lj && rw == w && rh == h, "cannot read %s", ref);
        SlImage img;
        CHECK_OK(sl_image_read(&img, jpg, NULL, &ctx), &ctx);
        CHECK(img.w == w && img.h == h && img.c == 3, "%s: %dx%dx%d", jpg, img.w, img.h, img.c);
        if (!lj || !img.data || img.w != w || img.h != h || img.c != 3) { free(lj); sl_image_free(&img); continue; }
        double mae_lj = 0, max_lj = 0, mae_src = 0;
        for (int i = 0; i < w * h; i++)
            for (int ch = 0; ch < 3; ch++) {
                double got = img.data[3 * i + ch];
                double e = fabs(got - lj[rc * i + (rc == 3 ? ch : 0)]);
                mae_lj += e;
                if (e > max_lj) max_lj = e;
                if (k < 2) mae_src += fabs(got - src[3 * i + ch]);
            }
        mae_lj /= w * h * 3;
        mae_src /= w * h * 3;
        printf("%s: vs libjpeg mean abs %.3f max %.0f; vs source mean abs %.3f (of 255)\n", names[k], mae_lj, max_lj, mae_src);
        /* Decoders differ in IDCT and chroma upsampling: a few levels at most. */
        CHECK(mae_lj < 0.5 && max_lj <= 4, "%s: stb vs libjpeg mean %.3f max %.0f", names[k], mae_lj, max_lj);
        CHECK(mae_src < 3.0, "%s: far from the source pattern: mean %.3f", names[k], mae_src);
        if (k == 2) {
            int bad = 0;
            for (int i = 0; i < w * h; i++) bad += img.data[3 * i] != img.data[3 * i + 1] || img.data[3 * i] != img.data[3 * i + 2];
            CHECK(bad == 0, "gray JPEG: %d pixels with unequal channels", bad);
        }
        free(lj);
        sl_image_free(&img);
    }
    free(src);
}

/* GIFs from PIL (tests/reference/image_fixtures.py) against PIL's decode saved
 * as PNG: an opaque GIF reads as RGB, one with a transparent index as RGBA. */
static void test_gif(void) {
    SlCtx ctx;
    sl_ctx_init(&ctx);
    static const char *names[2] = {"image_opaque", "image_alpha"};
    for (int k = 0; k < 2; k++) {
        char gif[4400], ref[4400];
        snprintf(gif, sizeof gif, "%s/tests/data/%s.gif", sl_test_source(), names[k]);
        snprintf(ref, sizeof ref, "%s/tests/data/%s_gif.png", sl_test_source(), names[k]);
        SlImage got, want;
        CHECK_OK(sl_image_read(&got, gif, NULL, &ctx), &ctx);
        CHECK_OK(sl_image_read(&want, ref, NULL, &ctx), &ctx);
        int c = k == 0 ? 3 : 4;
        CHECK(got.c == c && want.c == c && got.w == want.w && got.h == want.h, "%s: %dx%dx%d vs PIL %dx%dx%d",
              names[k], got.w, got.h, got.c, want.w, want.h, want.c);
        int bad = 0, transparent = 0;
        if (got.data && want.data && got.c == want.c && got.w == want.w && got.h == want.h)
            for (int i = 0; i < got.w * got.h; i++) {
                const uint8_t *a = got.data + i * c, *b = want.data + i * c;
                if (c == 4 && b[3] == 0) { /* colour under alpha 0 is arbitrary */
                    transparent++;
                    bad += a[3] != 0;
                } else {
                    bad += memcmp(a, b, (size_t)c) != 0;
                }
            }
        CHECK(bad == 0 && (k == 0 || transparent > 0), "%s: %d pixels differ from PIL (%d transparent)", names[k], bad, transparent);
        sl_image_free(&got);
        sl_image_free(&want);
    }
}

/* BMP and TGA written by stb_image_write: lossless, so exact. */
static void test_bmp_tga(void) {
    SlCtx ctx;
    sl_ctx_init(&ctx);
    const int w = 48, h = 40;
    SlImage img;
    uint8_t *rgba = pattern(w, h, 4, 5);
    CHECK(stbi_write_bmp(tpath("p.bmp"), w, h, 4, rgba), "stbi_write_bmp failed");
    CHECK(stbi_write_tga(tpath("p.tga"), w, h, 4, rgba), "stbi_write_tga failed");
    const char *names[2] = {"p.bmp", "p.tga"};
    for (int k = 0; k < 2; k++) {
        CHECK_OK(sl_image_read(&img, tpath(names[k]), NULL, &ctx), &ctx);
        CHECK(img.c == 4 && img.data && memcmp(img.data, rgba, (size_t)w * h * 4) == 0, "%s: pixels differ (c=%d)", names[k], img.c);
        sl_image_free(&img);
    }
    /* Its top-down twin (negative height, rows stored first to last) is the same
     * image: it was refused as "no pixels" (issue 21, item 4). */
    SlStatus st;
    size_t n = 0;
    uint8_t *b = read_bytes(tpath("p.bmp"), &n);
    {
        uint32_t off = b[10] | (uint32_t)b[11] << 8 | (uint32_t)b[12] << 16 | (uint32_t)b[13] << 24;
        int32_t hh = (int32_t)(b[22] | (uint32_t)b[23] << 8 | (uint32_t)b[24] << 16 | (uint32_t)b[25] << 24);
        int bpp = b[28] | b[29] << 8;
        size_t stride = (size_t)((w * bpp + 31) / 32) * 4;
        CHECK(hh == h && off + stride * h <= n, "p.bmp: unexpected header (height %d, %d bpp)", (int)hh, bpp);
        if (hh != h || off + stride * h > n) exit(1);
        uint8_t *td = malloc(n);
        memcpy(td, b, n);
        uint32_t neg = (uint32_t)-h;
        for (int k = 0; k < 4; k++) td[22 + k] = (uint8_t)(neg >> (8 * k));
        for (int y = 0; y < h; y++) memcpy(td + off + stride * y, b + off + stride * (h - 1 - y), stride);
        write_bytes(tpath("topdown.bmp"), td, n);
        free(td);
        int pw = 0, ph = 0, pc = 0;
        CHECK_OK(sl_image_probe(tpath("topdown.bmp"), &pw, &ph, &pc, &ctx), &ctx);
        CHECK(pw == w && ph == h, "top-down BMP probed as %dx%d, want %dx%d", pw, ph, w, h);
        CHECK_OK(sl_image_read(&img, tpath("topdown.bmp"), NULL, &ctx), &ctx);
        CHECK(img.w == w && img.h == h && img.c == 4 && img.data && memcmp(img.data, rgba, (size_t)w * h * 4) == 0,
              "top-down BMP: %dx%dx%d, pixels differ from its bottom-up twin", img.w, img.h, img.c);
        sl_image_free(&img);
    }
    /* Truncated by one byte: stb_image alone would pad with zeros. */
    write_bytes(tpath("trunc.bmp"), b, n - 1);
    free(b);
    st = sl_image_read(&img, tpath("trunc.bmp"), NULL, &ctx);
    check_fails(st, SL_ERR_FORMAT, &ctx, tpath("trunc.bmp"), "truncated BMP");
    stbi_write_tga_with_rle = 0;
    CHECK(stbi_write_tga(tpath("raw.tga"), w, h, 4, rgba), "stbi_write_tga failed");
    CHECK_OK(sl_image_read(&img, tpath("raw.tga"), NULL, &ctx), &ctx);
    CHECK(img.data && memcmp(img.data, rgba, (size_t)w * h * 4) == 0, "uncompressed TGA pixels differ");
    sl_image_free(&img);
    b = read_bytes(tpath("raw.tga"), &n);
    write_bytes(tpath("trunc.tga"), b, n / 2);
    free(b);
    st = sl_image_read(&img, tpath("trunc.tga"), NULL, &ctx);
    check_fails(st, SL_ERR_FORMAT, &ctx, tpath("trunc.tga"), "truncated TGA");
    free(rgba);
}

static void test_bad_files(void) {
    SlCtx ctx;
    sl_ctx_init(&ctx);
    SlImage img;
    SlStatus st;

    /* Truncated PNG (half, and just the IEND chunk missing). */
    SlImage src = {.w = 64, .h = 64, .c = 3, .data = pattern(64, 64, 3, 3)};
    CHECK_OK(sl_image_write_png(&src, tpath("whole.png"), NULL, 0, &ctx), &ctx);
    free(src.data);
    size_t n = 0;
    uint8_t *b = read_bytes(tpath("whole.png"), &n);
    write_bytes(tpath("trunc_half.png"), b, n / 2);
    st = sl_image_read(&img, tpath("trunc_half.png"), NULL, &ctx);
    check_fails(st, SL_ERR_FORMAT, &ctx, tpath("trunc_half.png"), "truncated PNG (half)");
    CHECK(img.data == NULL, "truncated PNG left pixels");
    write_bytes(tpath("trunc_iend.png"), b, n - 12);
    st = sl_image_read(&img, tpath("trunc_iend.png"), NULL, &ctx);
    check_fails(st, SL_ERR_FORMAT, &ctx, tpath("trunc_iend.png"), "PNG without IEND");
    /* A flipped byte inside IDAT: CRC error. */
    b[n / 2] ^= 0x55;
    write_bytes(tpath("crc.png"), b, n);
    st = sl_image_read(&img, tpath("crc.png"), NULL, &ctx);
    check_fails(st, SL_ERR_FORMAT, &ctx, tpath("crc.png"), "PNG with a corrupt IDAT");
    free(b);

    /* Truncated JPEGs (baseline and progressive), cut mid-scan and just before EOI. */
    static const char *jpegs[2] = {"image_baseline", "image_progressive"};
    char jpg[4400];
    for (int k = 0; k < 2; k++) {
        snprintf(jpg, sizeof jpg, "%s/tests/data/%s.jpg", sl_test_source(), jpegs[k]);
        b = read_bytes(jpg, &n);
        CHECK(b != NULL, "%s missing", jpg);
        if (!b) continue;
        write_bytes(tpath("trunc.jpg"), b, n * 6 / 10);
        st = sl_image_read(&img, tpath("trunc.jpg"), NULL, &ctx);
        check_fails(st, SL_ERR_FORMAT, &ctx, tpath("trunc.jpg"), "truncated JPEG");
        write_bytes(tpath("trunc_eoi.jpg"), b, n - 2);
        st = sl_image_read(&img, tpath("trunc_eoi.jpg"), NULL, &ctx);
        check_fails(st, SL_ERR_FORMAT, &ctx, tpath("trunc_eoi.jpg"), "JPEG without EOI");
        free(b);
    }

    /* A text file named .png, and one named .jpg. */
    const char *txt = "this is not an image, just some text\n";
    write_bytes(tpath("text.png"), txt, strlen(txt));
    st = sl_image_read(&img, tpath("text.png"), NULL, &ctx);
    check_fails(st, SL_ERR_FORMAT, &ctx, tpath("text.png"), "text file named .png");
    write_bytes(tpath("text.jpg"), txt, strlen(txt));
    st = sl_image_read(&img, tpath("text.jpg"), NULL, &ctx);
    check_fails(st, SL_ERR_FORMAT, &ctx, tpath("text.jpg"), "text file named .jpg");

    /* Zero bytes, and a missing file. */
    write_bytes(tpath("empty.png"), "", 0);
    st = sl_image_read(&img, tpath("empty.png"), NULL, &ctx);
    check_fails(st, SL_ERR_FORMAT, &ctx, tpath("empty.png"), "zero-byte file");
    st = sl_image_read(&img, tpath("missing.png"), NULL, &ctx);
    check_fails(st, SL_ERR_IO, &ctx, tpath("missing.png"), "missing file");

    /* A PNG header declaring 100000 x 100000 and no image data: refused at
     * IHDR (NOMEM, not the FORMAT a decode attempt would hit). */
    uint8_t huge[8 + 25];
    static const uint8_t sig[8] = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1A, '\n'};
    memcpy(huge, sig, 8);
    uint8_t *c = huge + 8;
    c[0] = 0; c[1] = 0; c[2] = 0; c[3] = 13;
    memcpy(c + 4, "IHDR", 4);
    uint32_t dim = 100000;
    for (int k = 0; k < 2; k++) {
        c[8 + 4 * k] = (uint8_t)(dim >> 24); c[9 + 4 * k] = (uint8_t)(dim >> 16);
        c[10 + 4 * k] = (uint8_t)(dim >> 8); c[11 + 4 * k] = (uint8_t)dim;
    }
    c[16] = 8; c[17] = 6; c[18] = 0; c[19] = 0; c[20] = 0; /* 8-bit RGBA */
    uint32_t crc = (uint32_t)crc32(0, c + 4, 17);
    c[21] = (uint8_t)(crc >> 24); c[22] = (uint8_t)(crc >> 16); c[23] = (uint8_t)(crc >> 8); c[24] = (uint8_t)crc;
    write_bytes(tpath("huge.png"), huge, sizeof huge);
    st = sl_image_read(&img, tpath("huge.png"), NULL, &ctx);
    check_fails(st, SL_ERR_NOMEM, &ctx, tpath("huge.png"), "PNG declaring 100000x100000");
    CHECK(strstr(ctx.msg, "100000x100000") != NULL, "message lacks the size: %s", ctx.msg);
    int pw = 0, ph = 0, pc = 0;
    CHECK_OK(sl_image_probe(tpath("huge.png"), &pw, &ph, &pc, &ctx), &ctx);
    CHECK(pw == 100000 && ph == 100000 && pc == 4, "probe of huge.png: %dx%dx%d", pw, ph, pc);

    /* The same through stb: a BMP header declaring 100000 x 100000. */
    uint8_t bmp[54] = {'B', 'M'};
    bmp[10] = 54;                    /* pixel data offset */
    bmp[14] = 40;                    /* BITMAPINFOHEADER */
    bmp[18] = 0xA0; bmp[19] = 0x86; bmp[20] = 0x01; /* width 100000 */
    bmp[22] = 0xA0; bmp[23] = 0x86; bmp[24] = 0x01; /* height 100000 */
    bmp[26] = 1; bmp[28] = 24;       /* planes, bits per pixel */
    write_bytes(tpath("huge.bmp"), bmp, sizeof bmp);
    st = sl_image_read(&img, tpath("huge.bmp"), NULL, &ctx);
    check_fails(st, SL_ERR_NOMEM, &ctx, tpath("huge.bmp"), "BMP declaring 100000x100000");
    CHECK(strstr(ctx.msg, "100000x100000") != NULL, "message lacks the size: %s", ctx.msg);

    /* A configurable limit: 64x64 = 4096 pixels against a limit of 4000. */
    SlImageReadOpts o = sl_image_read_opts_default();
    o.max_pixels = 4000;
    st = sl_image_read(&img, tpath("whole.png"), &o, &ctx);
    check_fails(st, SL_ERR_NOMEM, &ctx, tpath("whole.png"), "PNG over a 4000-pixel limit");
    snprintf(jpg, sizeof jpg, "%s/tests/data/image_baseline.jpg", sl_test_source());
    st = sl_image_read(&img, jpg, &(SlImageReadOpts){.max_pixels = 1000}, &ctx);
    check_fails(st, SL_ERR_NOMEM, &ctx, jpg, "JPEG over a 1000-pixel limit");
}

static void test_pixels(void) {
    SlCtx ctx;
    sl_ctx_init(&ctx);
    /* Area downscale by 2 is the 2x2 mean (stb rounds; allow 1 step). */
    SlImage in = {.w = 16, .h = 12, .c = 3, .data = pattern(16, 12, 3, 11)}, out;
    CHECK_OK(sl_image_resize(&out, &in, 8, 6, SL_RESIZE_AREA, &ctx), &ctx);
    int worst = 0;
    for (int y = 0; y < 6 && out.data; y++)
        for (int x = 0; x < 8; x++)
            for (int k = 0; k < 3; k++) {
                int s = 0;
                for (int dy = 0; dy < 2; dy++)
                    for (int dx = 0; dx < 2; dx++) s += in.data[((2 * y + dy) * 16 + 2 * x + dx) * 3 + k];
                int d = abs((int)out.data[(y * 8 + x) * 3 + k] - (int)lround(s / 4.0));
                if (d > worst) worst = d;
            }
    printf("area downscale x2 vs 2x2 mean: max diff %d\n", worst);
    CHECK(worst <= 1, "area downscale differs from the 2x2 mean by %d", worst);
    sl_image_free(&out);
    /* A constant image stays constant under every filter and ratio. */
    SlImage flat;
    CHECK_OK(sl_image_alloc(&flat, 37, 23, 4, &ctx), &ctx);
    for (int i = 0; i < 37 * 23; i++) { flat.data[4 * i] = 200; flat.data[4 * i + 1] = 100; flat.data[4 * i + 2] = 3; flat.data[4 * i + 3] = 255; }
    for (int f = 0; f < 3; f++) {
        CHECK_OK(sl_image_resize(&out, &flat, 16, 11, (SlResizeFilter)f, &ctx), &ctx);
        int bad = 0;
        for (int i = 0; i < 16 * 11 && out.data; i++)
            bad += out.data[4 * i] != 200 || out.data[4 * i + 1] != 100 || out.data[4 * i + 2] != 3 || out.data[4 * i + 3] != 255;
        CHECK(bad == 0, "filter %d: constant image changed at %d pixels", f, bad);
        sl_image_free(&out);
        CHECK_OK(sl_image_resize(&out, &flat, 50, 30, (SlResizeFilter)f, &ctx), &ctx);
        bad = 0;
        for (int i = 0; i < 50 * 30 && out.data; i++) bad += out.data[4 * i] != 200;
        CHECK(bad == 0, "filter %d upscale: constant image changed at %d pixels", f, bad);
        sl_image_free(&out);
    }
    sl_image_free(&flat);

    /* Crop, center crop, flip. */
    SlImage cr;
    CHECK_OK(sl_image_crop(&cr, &in, 3, 2, 5, 4, &ctx), &ctx);
    CHECK(cr.data && memcmp(cr.data + (1 * 5 + 2) * 3, in.data + (3 * 16 + 5) * 3, 3) == 0, "crop pixel (2,1)");
    sl_image_free(&cr);
    CHECK_OK(sl_image_center_crop(&cr, &in, 10, 12, &ctx), &ctx);
    CHECK(cr.data && memcmp(cr.data, in.data + 3 * 3, 10 * 3) == 0, "center crop offset");
    sl_image_free(&cr);
    SlStatus st = sl_image_crop(&cr, &in, 10, 0, 8, 4, &ctx);
    CHECK(st == SL_ERR_ARG && cr.data == NULL, "crop past the edge: %s", sl_status_name(st));
    SlImage fl;
    CHECK_OK(sl_image_crop(&fl, &in, 0, 0, 16, 12, &ctx), &ctx);
    sl_image_flip_h(&fl);
    int bad = 0;
    for (int y = 0; y < 12; y++)
        for (int x = 0; x < 16; x++) bad += memcmp(fl.data + (y * 16 + x) * 3, in.data + (y * 16 + 15 - x) * 3, 3) != 0;
    CHECK(bad == 0, "flip_h: %d pixels wrong", bad);
    sl_image_free(&fl);

    /* CHW float round trip is exact; out-of-range and NaN are clamped. */
    float *chw = malloc(sizeof(float) * 3 * 16 * 12);
    sl_image_to_chw(chw, &in, 3);
    CHECK(fabsf(chw[0] - (in.data[0] / 127.5f - 1)) < 1e-6f && fabsf(chw[16 * 12] - (in.data[1] / 127.5f - 1)) < 1e-6f,
          "to_chw layout");
    SlImage rt;
    CHECK_OK(sl_image_from_chw(&rt, chw, 3, 12, 16, &ctx), &ctx);
    CHECK(rt.data && memcmp(rt.data, in.data, 16 * 12 * 3) == 0, "chw round trip not exact");
    sl_image_free(&rt);
    float odd[5] = {-2.0f, 2.0f, NAN, 0.0f, -1.0f};
    CHECK_OK(sl_image_from_chw(&rt, odd, 1, 1, 5, &ctx), &ctx);
    CHECK(rt.data && rt.data[0] == 0 && rt.data[1] == 255 && rt.data[2] == 0 && rt.data[3] == 128 && rt.data[4] == 0,
          "clamping: %d %d %d %d %d", rt.data[0], rt.data[1], rt.data[2], rt.data[3], rt.data[4]);
    sl_image_free(&rt);
    free(chw);
    free(in.data);
}

/* sl_read_file: bytes (NULs included) plus a terminator, and errors that name
 * the file: missing, a folder, over the caller's limit. */
static void test_read_file(void) {
    SlCtx ctx;
    sl_ctx_init(&ctx);
    const char bytes[6] = {'a', 'b', '\0', 'c', '\n', 'd'};
    write_bytes(tpath("six.bin"), bytes, sizeof bytes);
    char *text = NULL;
    size_t len = 0;
    CHECK_OK(sl_read_file(tpath("six.bin"), 6, &text, &len, &ctx), &ctx);
    CHECK(text && len == 6 && memcmp(text, bytes, 6) == 0 && text[6] == '\0', "six.bin: len %zu", len);
    free(text);
    write_bytes(tpath("empty.bin"), NULL, 0);
    CHECK_OK(sl_read_file(tpath("empty.bin"), 0, &text, NULL, &ctx), &ctx);
    CHECK(text && text[0] == '\0', "empty.bin: not an empty string");
    free(text);
    SlStatus st = sl_read_file(tpath("six.bin"), 5, &text, &len, &ctx);
    check_fails(st, SL_ERR_FORMAT, &ctx, tpath("six.bin"), "file over the limit");
    CHECK(text == NULL && strstr(ctx.msg, "6 bytes") && strstr(ctx.msg, "5-byte limit"), "limit message: %s", ctx.msg);
    st = sl_read_file(tpath("no-such-file"), 100, &text, &len, &ctx);
    check_fails(st, SL_ERR_IO, &ctx, tpath("no-such-file"), "missing file");
    CHECK(strstr(ctx.msg, "cannot open") != NULL, "missing file message: %s", ctx.msg);
    st = sl_read_file(g_dir, 100, &text, &len, &ctx);
    check_fails(st, SL_ERR_IO, &ctx, g_dir, "a folder");
    CHECK(text == NULL && strstr(ctx.msg, "not a regular file") != NULL, "folder message: %s", ctx.msg);
}

int main(void) {
    snprintf(g_dir, sizeof g_dir, "%s/test_image_files", sl_test_binary());
    if (mkdir(g_dir, 0755) != 0 && errno != EEXIST) {
        fprintf(stderr, "cannot create %s\n", g_dir);
        return 2;
    }
    test_roundtrip();
    test_png_kinds();
    test_jpeg();
    test_gif();
    test_bmp_tga();
    test_bad_files();
    test_pixels();
    test_read_file();
    return sl_test_finish("test_image");
}
