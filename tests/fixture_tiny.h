/* fixture_tiny.h - test fixtures: the shared tiny golden model made usable for
 * prompts (a tokenizer whose ids fit its 1000-token text encoder), and small
 * folders of training images, and copies of its parts with a bad weight.
 *
 * The golden tiny-sd1 ships no tokenizer/ folder and its text encoder has a
 * vocabulary of 1000 with BOS 998 / EOS 999. The tokenizer made here is a
 * valid CLIP-format byte-level BPE: the 256 byte symbols (ids 0..255), the
 * same with "</w>" (256..511), a few merges, and the two specials at 998/999.
 */
#ifndef SL_FIXTURE_TINY_H
#define SL_FIXTURE_TINY_H

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/image.h"
#include "core/safetensors.h"
#include "core/status.h"

/* CLIP's bytes_to_unicode: printable bytes map to themselves, the others to 256+n. */
static inline int fixture_byte_cp(int b, int *table) {
    (void)table;
    static int map[256], ready = 0;
    if (!ready) {
        int n = 0;
        for (int i = 0; i < 256; i++) {
            int printable = (i >= '!' && i <= '~') || (i >= 0xA1 && i <= 0xAC) || (i >= 0xAE && i <= 0xFF);
            map[i] = printable ? i : 256 + n++;
        }
        ready = 1;
    }
    return map[b];
}

static inline void fixture_put_utf8(FILE *f, int cp) {
    if (cp < 0x80) {
        if (cp == '"' || cp == '\\') fputc('\\', f);
        fputc(cp, f);
    } else if (cp < 0x800) {
        fputc(0xC0 | (cp >> 6), f);
        fputc(0x80 | (cp & 0x3F), f);
    } else {
        fputc(0xE0 | (cp >> 12), f);
        fputc(0x80 | ((cp >> 6) & 0x3F), f);
        fputc(0x80 | (cp & 0x3F), f);
    }
}

/* Writes dir/tokenizer/{vocab.json,merges.txt,tokenizer_config.json}. */
static inline int fixture_write_tokenizer(const char *dir) {
    char p[8400];
    snprintf(p, sizeof p, "%s/tokenizer", dir);
    mkdir(p, 0755);
    snprintf(p, sizeof p, "%s/tokenizer/vocab.json", dir);
    FILE *f = fopen(p, "w");
    if (!f) return 0;
    fputc('{', f);
    for (int pass = 0; pass < 2; pass++)
        for (int b = 0; b < 256; b++) {
            fputc('"', f);
            fixture_put_utf8(f, fixture_byte_cp(b, NULL));
            fprintf(f, "%s\": %d, ", pass ? "</w>" : "", pass * 256 + b);
        }
    /* merges: "r e" -> "re", "re d</w>" -> "red</w>" */
    fprintf(f, "\"re\": 512, \"red</w>\": 513, \"<|startoftext|>\": 998, \"<|endoftext|>\": 999}");
    fclose(f);
    snprintf(p, sizeof p, "%s/tokenizer/merges.txt", dir);
    f = fopen(p, "w");
    if (!f) return 0;
    fprintf(f, "#version: 0.2\nr e\nre d</w>\n");
    fclose(f);
    snprintf(p, sizeof p, "%s/tokenizer/tokenizer_config.json", dir);
    f = fopen(p, "w");
    if (!f) return 0;
    fprintf(f, "{\"model_max_length\": 77, \"pad_token\": \"<|endoftext|>\", \"bos_token\": \"<|startoftext|>\", \"eos_token\": \"<|endoftext|>\"}");
    fclose(f);
    return 1;
}

/* dir = a diffusers folder: symlinks to the golden parts + the fixture tokenizer. */
static inline int fixture_tiny_model(const char *dir, const char *shared) {
    mkdir(dir, 0755);
    const char *parts[] = {"unet", "vae", "text_encoder", "scheduler", "model_index.json"};
    for (int i = 0; i < 5; i++) {
        char src[8400], dst[8400];
        snprintf(src, sizeof src, "%s/golden/tiny-sd1/%s", shared, parts[i]);
        snprintf(dst, sizeof dst, "%s/%s", dir, parts[i]);
        struct stat sb;
        if (stat(src, &sb) != 0) { /* a dangling link would only fail later, as "not a model folder" */
            fprintf(stderr, "fixture: %s is missing (SL_SHARED_DIR=%s)\n", src, shared);
            return 0;
        }
        unlink(dst);
        if (symlink(src, dst) != 0) return 0;
    }
    return fixture_write_tokenizer(dir);
}

/* n images of w x w with a coloured square on a varying background, and captions. */
static inline int fixture_images(const char *dir, int n, int w) {
    mkdir(dir, 0755);
    SlCtx ctx;
    sl_ctx_init(&ctx);
    for (int i = 0; i < n; i++) {
        SlImage im = {0};
        if (sl_image_alloc(&im, w, w, 3, &ctx) != SL_OK) return 0;
        for (int y = 0; y < w; y++)
            for (int x = 0; x < w; x++) {
                int in = x > w / 4 && x < 3 * w / 4 && y > w / 4 && y < 3 * w / 4;
                uint8_t *px = im.data + ((size_t)y * w + x) * 3;
                px[0] = in ? 220 : (uint8_t)(40 * i);
                px[1] = in ? 30 : 200;
                px[2] = in ? 30 : (uint8_t)(255 - 30 * i);
            }
        char p[8400];
        snprintf(p, sizeof p, "%s/img%02d.png", dir, i);
        SlStatus st = sl_image_write_png(&im, p, NULL, 0, &ctx);
        sl_image_free(&im);
        if (st) return 0;
        snprintf(p, sizeof p, "%s/img%02d.txt", dir, i);
        FILE *f = fopen(p, "w");
        if (!f) return 0;
        fprintf(f, "a red square %d\n", i);
        fclose(f);
    }
    return 1;
}

/* Writes dir/name.png, a w x h image (a red rectangle on a background coloured by
 * `tone`), and dir/name.txt with a caption; for aspect-ratio buckets. 1 on success. */
static inline int fixture_image_wh(const char *dir, const char *name, int w, int h, int tone) {
    mkdir(dir, 0755);
    SlCtx ctx;
    sl_ctx_init(&ctx);
    SlImage im = {0};
    if (sl_image_alloc(&im, w, h, 3, &ctx) != SL_OK) return 0;
    for (int y = 0; y < h; y++)
        for (int x = 0; x < w; x++) {
            int in = x > w / 4 && x < 3 * w / 4 && y > h / 4 && y < 3 * h / 4;
            uint8_t *px = im.data + ((size_t)y * w + x) * 3;
            px[0] = in ? 220 : (uint8_t)(40 * tone + x);
            px[1] = in ? 30 : (uint8_t)(200 - y);
            px[2] = in ? 30 : (uint8_t)(255 - 30 * tone);
        }
    char p[8400];
    snprintf(p, sizeof p, "%s/%s.png", dir, name);
    SlStatus st = sl_image_write_png(&im, p, NULL, 0, &ctx);
    sl_image_free(&im);
    if (st) return 0;
    snprintf(p, sizeof p, "%s/%s.txt", dir, name);
    FILE *f = fopen(p, "w");
    if (!f) return 0;
    fprintf(f, "a red rectangle %s\n", name);
    fclose(f);
    return 1;
}

/* Copies file src to dst; 1 on success. */
static inline int fixture_copy(const char *src, const char *dst) {
    FILE *a = fopen(src, "rb"), *b = a ? fopen(dst, "wb") : NULL;
    char buf[65536];
    size_t n;
    int ok = a && b;
    while (ok && (n = fread(buf, 1, sizeof buf, a)) > 0) ok = fwrite(buf, 1, n, b) == n;
    if (a) { ok &= !ferror(a); fclose(a); }
    if (b) ok &= fclose(b) == 0;
    return ok;
}

/* Writes the golden tiny model's `part` folder ("vae", "unet" or "text_encoder":
 * config and weights) into dir with every element of tensor `key` set to `all`
 * (if not NaN), or only element `at` set to NaN. Returns 1 on success. */
static inline int fixture_bad_part(const char *dir, const char *shared, const char *part, const char *key, float all,
                                   size_t at) {
    char src[8400], dst[8400];
    const char *file = strcmp(part, "text_encoder") == 0 ? "model.safetensors" : "diffusion_pytorch_model.safetensors";
    snprintf(src, sizeof src, "%s/golden/tiny-sd1/%s/%s", shared, part, file);
    SlCtx ctx;
    sl_ctx_init(&ctx);
    SlStFile f;
    if (sl_st_open(&f, src, &ctx) != SL_OK) return 0;
    const SlStEntry *e = sl_st_find(&f, key);
    int ok = e && e->dtype == SL_F32;
    uint8_t *bytes = ok ? malloc(f.map_size) : NULL;
    if (bytes) {
        memcpy(bytes, f.map, f.map_size);
        uint8_t *x = bytes + ((const uint8_t *)sl_st_data(&f, e) - f.map); /* maybe not float-aligned */
        const size_t n = e->nbytes / sizeof(float);
        for (size_t i = 0; i < n; i++) {
            const float v = NAN;
            if (!isnan(all)) memcpy(x + 4 * i, &all, 4);
            else if (i == at) memcpy(x + 4 * i, &v, 4);
        }
        mkdir(dir, 0755);
        snprintf(src, sizeof src, "%s/golden/tiny-sd1/%s/config.json", shared, part);
        snprintf(dst, sizeof dst, "%s/config.json", dir);
        ok = fixture_copy(src, dst);
        snprintf(dst, sizeof dst, "%s/%s", dir, file);
        FILE *o = ok ? fopen(dst, "wb") : NULL;
        ok = o && fwrite(bytes, 1, f.map_size, o) == f.map_size;
        if (o) ok &= fclose(o) == 0;
    }
    free(bytes);
    sl_st_close(&f);
    return ok;
}

#endif
