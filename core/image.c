/* image.c - image reading (libpng, stb_image), PNG writing, pixel helpers; see image.h.
 *
 * Files are read whole into memory, then decoded: PNG by signature through
 * libpng (errors caught with setjmp on a per-call jmp_buf reached through
 * png_get_error_ptr), everything else through stb_image after
 * stbi_info_from_memory has told us the declared size. Truncation is checked
 * before decoding: uncompressed BMP/TGA must hold the declared pixel bytes
 * (stb_image pads a short one with zeros and reports success), and JPEG gets a
 * marker walk to its end-of-image marker, so a cut file is named "truncated"
 * whatever stb's decoder tolerates.
 */
#include "image.h"
#include "outpath.h"

#include "file.h"

#include <errno.h>
#include <limits.h>
#include <math.h>
#include <png.h>
#include <setjmp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* stb_image: memory-only, no PNG (libpng does PNG). Its implementation lives
 * here and nowhere else (libstb.so is not linked). Its failure reason is a
 * thread-local we copy at once; its global flip/unpremultiply flags are never
 * set. stb_image_resize is static to this file. */
#define STB_IMAGE_IMPLEMENTATION
#define STBI_NO_STDIO
#define STBI_ONLY_JPEG
#define STBI_ONLY_BMP
#define STBI_ONLY_TGA
#define STBI_ONLY_GIF
/* stb asserts on states that corrupt files can reach (e.g. a Huffman code that does not match
 * its table); with NDEBUG (every CMake build type) they are already off and the decoder goes on
 * to fail cleanly. Keep them off in every build, so the fuzz build (no NDEBUG) tests the same code. */
#define STBI_ASSERT(x) ((void)0)
#define STB_IMAGE_RESIZE_IMPLEMENTATION
#define STB_IMAGE_RESIZE_STATIC
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wunused-function"
#pragma GCC diagnostic ignored "-Wunused-parameter"
#pragma GCC diagnostic ignored "-Wunused-but-set-variable"
#pragma GCC diagnostic ignored "-Wsign-compare"
#pragma GCC diagnostic ignored "-Wimplicit-fallthrough"
#pragma GCC diagnostic ignored "-Wmisleading-indentation"
#pragma GCC diagnostic ignored "-Wshift-negative-value"
#pragma GCC diagnostic ignored "-Wtype-limits"
#include "third_party/stb/stb_image.h" /* Debian's, plus upstream v2.28 JPEG fixes (see its top) */
#include <stb_image_resize.h>
#pragma GCC diagnostic pop

/* The largest file we read into memory (stb_image takes an int length). */
#define SL_IMAGE_MAX_FILE_BYTES ((size_t)INT_MAX)

/* ---------------------------------------------------------------- files */

/* The file's bytes, through the one whole-file reader (core/file.h). */
static SlStatus read_whole_file(const char *path, uint8_t **buf, size_t *len, SlCtx *ctx) {
    char *text;
    SlStatus st = sl_read_file(path, SL_IMAGE_MAX_FILE_BYTES, &text, len, ctx);
    *buf = (uint8_t *)text;
    return st;
}

/* ---------------------------------------------------------------- text */

/* Latin-1 (tEXt/zTXt) to a new UTF-8 string; NULL on allocation failure. */
static char *latin1_to_utf8(const char *s, size_t n) {
    char *o = malloc(2 * n + 1), *p = o;
    if (!o) return NULL;
    for (size_t i = 0; i < n; i++) {
        unsigned char ch = (unsigned char)s[i];
        if (ch < 0x80) {
            *p++ = (char)ch;
        } else {
            *p++ = (char)(0xC0 | (ch >> 6));
            *p++ = (char)(0x80 | (ch & 0x3F));
        }
    }
    *p = '\0';
    return o;
}

static char *copy_bytes(const char *s, size_t n) {
    char *o = malloc(n + 1);
    if (!o) return NULL;
    memcpy(o, s, n);
    o[n] = '\0';
    return o;
}

void sl_image_text_free(SlImageText *text, int n_text) {
    if (!text) return;
    for (int i = 0; i < n_text; i++) {
        free(text[i].key);
        free(text[i].value);
    }
    free(text);
}

void sl_image_free(SlImage *img) {
    if (!img) return;
    free(img->data);
    sl_image_text_free(img->text, img->n_text);
    memset(img, 0, sizeof *img);
}

SlStatus sl_image_alloc(SlImage *img, int w, int h, int c, SlCtx *ctx) {
    memset(img, 0, sizeof *img);
    if (w <= 0 || h <= 0 || c < 1 || c > 4)
        return sl_fail(ctx, SL_ERR_ARG, "image of %dx%dx%d is not allocatable", w, h, c);
    size_t n = (size_t)w * (size_t)h * (size_t)c;
    img->data = malloc(n);
    if (!img->data) return sl_fail(ctx, SL_ERR_NOMEM, "cannot allocate a %dx%dx%d image", w, h, c);
    img->w = w;
    img->h = h;
    img->c = c;
    return SL_OK;
}

/* ---------------------------------------------------------------- PNG read */

/* Reads IHDR straight from the bytes (libpng's png_read_info would first read
 * on to the first IDAT) and notes a tRNS chunk before IDAT. Returns 1 if the
 * file starts with a well-formed IHDR. */
static int png_peek_header(const uint8_t *b, size_t n, uint32_t *w, uint32_t *h, int *c) {
    if (n < 8 + 25 || memcmp(b + 12, "IHDR", 4) != 0) return 0;
    uint32_t len = ((uint32_t)b[8] << 24) | ((uint32_t)b[9] << 16) | ((uint32_t)b[10] << 8) | b[11];
    if (len != 13) return 0;
    *w = ((uint32_t)b[16] << 24) | ((uint32_t)b[17] << 16) | ((uint32_t)b[18] << 8) | b[19];
    *h = ((uint32_t)b[20] << 24) | ((uint32_t)b[21] << 16) | ((uint32_t)b[22] << 8) | b[23];
    int color = b[25];
    int alpha = (color & PNG_COLOR_MASK_ALPHA) != 0;
    for (size_t pos = 8 + 25; !alpha && pos + 8 <= n;) {
        uint32_t cl = ((uint32_t)b[pos] << 24) | ((uint32_t)b[pos + 1] << 16) | ((uint32_t)b[pos + 2] << 8) | b[pos + 3];
        if (memcmp(b + pos + 4, "IDAT", 4) == 0 || memcmp(b + pos + 4, "IEND", 4) == 0) break;
        if (memcmp(b + pos + 4, "tRNS", 4) == 0) alpha = 1;
        if ((uint64_t)cl + 12 > n - pos) break;
        pos += (size_t)cl + 12;
    }
    *c = alpha ? 4 : 3;
    return 1;
}

static SlStatus pixel_limit_fail(SlCtx *ctx, const char *name, uint32_t w, uint32_t h, int64_t limit) {
    return sl_fail(ctx, SL_ERR_NOMEM, "%s: image of %ux%u (%llu pixels) exceeds the limit of %lld pixels",
                   name, (unsigned)w, (unsigned)h, (unsigned long long)w * h, (long long)limit);
}

typedef enum { PNG_TEXT_ONLY, PNG_FULL } PngMode;

/* Everything a libpng error may need to clean up lives here, reached through
 * a pointer, so nothing is lost across the longjmp. */
typedef struct PngRead {
    const uint8_t *buf;
    size_t len, pos;
    const char *name;
    jmp_buf jb;
    char msg[256];
    png_structp png;
    png_infop info;
    uint8_t *data;     /* (H, W, C) */
    png_bytep *rows;   /* (H) */
    uint8_t *row;      /* one row, text-only mode */
    SlImageText *text; /* (n_text) */
    int n_text;
} PngRead;

static void png_error_cb(png_structp png, png_const_charp msg) {
    PngRead *r = png_get_error_ptr(png);
    snprintf(r->msg, sizeof r->msg, "%s", msg);
    longjmp(r->jb, 1);
}

static void png_warning_cb(png_structp png, png_const_charp msg) {
    (void)png;
    (void)msg; /* warnings (bad ancillary CRC, sRGB profile notes) are not failures */
}

static void png_read_cb(png_structp png, png_bytep out, size_t n) {
    PngRead *r = png_get_io_ptr(png);
    if (n > r->len - r->pos) png_error(png, "unexpected end of file (truncated)");
    memcpy(out, r->buf + r->pos, n);
    r->pos += n;
}

static SlStatus png_collect_text(PngRead *r, SlCtx *ctx) {
    png_textp tp = NULL;
    int n = png_get_text(r->png, r->info, &tp, NULL);
    if (n <= 0) return SL_OK;
    r->text = calloc((size_t)n, sizeof *r->text);
    if (!r->text) return sl_fail(ctx, SL_ERR_NOMEM, "%s: cannot allocate text chunks", r->name);
    for (int i = 0; i < n; i++) {
        const png_text *t = &tp[i];
        int is_itxt = t->compression == PNG_ITXT_COMPRESSION_NONE || t->compression == PNG_ITXT_COMPRESSION_zTXt;
        size_t vlen = is_itxt ? t->itxt_length : t->text_length;
        const char *val = t->text ? t->text : "";
        if (!t->text) vlen = 0;
        r->text[i].key = latin1_to_utf8(t->key, strlen(t->key));
        r->text[i].value = is_itxt ? copy_bytes(val, vlen) : latin1_to_utf8(val, vlen);
        r->n_text = i + 1;
        if (!r->text[i].key || !r->text[i].value)
            return sl_fail(ctx, SL_ERR_NOMEM, "%s: cannot allocate text chunks", r->name);
    }
    return SL_OK;
}

/* Every chunk before IEND must lie inside the buffer. libpng allocates (and zeroes) an
 * ancillary chunk's declared length before reading it, so a 300-byte file declaring a
 * 2 GB iTXt chunk cost 2 GB and a minute (found by tests/fuzz/fuzz_image); its
 * png_set_chunk_malloc_max did not stop that here. Returns 1 if they fit, else 0 with
 * the chunk's name in name[5]. A missing IEND is left to libpng ("truncated"). */
static int png_chunks_fit(const uint8_t *b, size_t n, char name[5]) {
    size_t p = 8;
    while (p + 8 <= n) {
        uint32_t len = ((uint32_t)b[p] << 24) | ((uint32_t)b[p + 1] << 16) | ((uint32_t)b[p + 2] << 8) | b[p + 3];
        for (int i = 0; i < 4; i++) {
            uint8_t c = b[p + 4 + i];
            name[i] = (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') ? (char)c : '?';
        }
        name[4] = 0;
        if ((uint64_t)len + 12 > n - p) return 0;
        if (!memcmp(b + p + 4, "IEND", 4)) return 1;
        p += (size_t)len + 12;
    }
    return 1;
}

/* Decodes PNG bytes. TEXT_ONLY streams rows through
 * one row buffer to reach text after IDAT; FULL decodes pixels. */
static SlStatus png_decode(SlImage *out, PngRead *r, const SlImageReadOpts *o, PngMode mode, SlCtx *ctx) {
    volatile SlStatus st = SL_OK; /* set after setjmp */
    int64_t limit = o->max_pixels > 0 ? o->max_pixels : SL_IMAGE_DEFAULT_MAX_PIXELS;
    uint32_t hw = 0, hh = 0;
    int hc = 0;
    if (!png_peek_header(r->buf, r->len, &hw, &hh, &hc))
        return sl_fail(ctx, SL_ERR_FORMAT, "%s: bad PNG: no IHDR chunk after the signature", r->name);
    char cname[5];
    if (!png_chunks_fit(r->buf, r->len, cname))
        return sl_fail(ctx, SL_ERR_FORMAT, "%s: bad PNG: truncated (chunk '%s' runs past the end of the file)",
                       r->name, cname);
    /* unsigned: two 32-bit sizes overflow int64 (found by tests/fuzz/fuzz_image) */
    if (mode == PNG_FULL && ((uint64_t)hw * hh > (uint64_t)limit || hw > INT_MAX || hh > INT_MAX))
        return pixel_limit_fail(ctx, r->name, hw, hh, limit);
    r->png = png_create_read_struct(PNG_LIBPNG_VER_STRING, r, png_error_cb, png_warning_cb);
    if (!r->png) return sl_fail(ctx, SL_ERR_NOMEM, "%s: cannot create PNG reader", r->name);
    r->info = png_create_info_struct(r->png);
    if (!r->info) {
        png_destroy_read_struct(&r->png, NULL, NULL);
        return sl_fail(ctx, SL_ERR_NOMEM, "%s: cannot create PNG reader", r->name);
    }
    if (setjmp(r->jb)) {
        st = sl_fail(ctx, SL_ERR_FORMAT, "%s: bad PNG: %s", r->name, r->msg);
        goto done;
    }
    png_set_read_fn(r->png, r, png_read_cb);
    png_set_user_limits(r->png, 0x7fffffff, 0x7fffffff); /* our pixel limit decides */
    png_read_info(r->png, r->info);

    png_uint_32 w = 0, h = 0;
    int depth = 0, color = 0, interlace = 0;
    png_get_IHDR(r->png, r->info, &w, &h, &depth, &color, &interlace, NULL, NULL);
    int has_alpha = (color & PNG_COLOR_MASK_ALPHA) || png_get_valid(r->png, r->info, PNG_INFO_tRNS);
    int64_t npix = (int64_t)w * (int64_t)h;
    if (mode == PNG_FULL && (npix > limit || w > INT_MAX || h > INT_MAX)) { /* IHDR read twice: same answer */
        st = pixel_limit_fail(ctx, r->name, w, h, limit);
        goto done;
    }
    int passes = 1;
    if (mode == PNG_FULL) {
        if (color == PNG_COLOR_TYPE_PALETTE) png_set_palette_to_rgb(r->png);
        if (color == PNG_COLOR_TYPE_GRAY && depth < 8) png_set_expand_gray_1_2_4_to_8(r->png);
        if (png_get_valid(r->png, r->info, PNG_INFO_tRNS)) png_set_tRNS_to_alpha(r->png);
        if (depth == 16) png_set_scale_16(r->png); /* rounds: (v * 255 + 32895) >> 16 */
        if (!(color & PNG_COLOR_MASK_COLOR)) png_set_gray_to_rgb(r->png);
        if (o->channels == 4 && !has_alpha) png_set_add_alpha(r->png, 0xff, PNG_FILLER_AFTER);
    }
    passes = png_set_interlace_handling(r->png);
    png_read_update_info(r->png, r->info);
    size_t rowbytes = png_get_rowbytes(r->png, r->info);
    if (mode == PNG_FULL) {
        int c = png_get_channels(r->png, r->info);
        if ((c != 3 && c != 4) || rowbytes != (size_t)w * (size_t)c || png_get_bit_depth(r->png, r->info) != 8) {
            st = sl_fail(ctx, SL_ERR_UNSUPPORTED, "%s: PNG layout not converted to 8-bit RGB(A) (%d channels)",
                         r->name, c);
            goto done;
        }
        r->data = malloc((size_t)npix * (size_t)c);
        r->rows = malloc((size_t)h * sizeof *r->rows);
        if (!r->data || !r->rows) {
            st = sl_fail(ctx, SL_ERR_NOMEM, "%s: cannot allocate %ux%ux%d pixels", r->name, (unsigned)w, (unsigned)h, c);
            goto done;
        }
        for (png_uint_32 y = 0; y < h; y++) r->rows[y] = r->data + (size_t)y * rowbytes;
        png_read_image(r->png, r->rows);
        out->w = (int)w;
        out->h = (int)h;
        out->c = c;
    } else { /* PNG_TEXT_ONLY */
        r->row = malloc(rowbytes ? rowbytes : 1);
        if (!r->row) {
            st = sl_fail(ctx, SL_ERR_NOMEM, "%s: cannot allocate a PNG row", r->name);
            goto done;
        }
        for (int p = 0; p < passes; p++)
            for (png_uint_32 y = 0; y < h; y++) png_read_row(r->png, r->row, NULL);
    }
    png_read_end(r->png, r->info); /* text after IDAT; a missing IEND is truncation */
    if (mode == PNG_TEXT_ONLY || o->read_text) {
        st = png_collect_text(r, ctx);
        if (st != SL_OK) goto done;
    }
    if (mode == PNG_FULL) {
        out->data = r->data;
        r->data = NULL;
    }
    out->text = r->text;
    out->n_text = r->n_text;
    r->text = NULL;
    r->n_text = 0;
done:
    png_destroy_read_struct(&r->png, &r->info, NULL);
    free(r->data);
    free(r->rows);
    free(r->row);
    sl_image_text_free(r->text, r->n_text);
    r->data = NULL;
    r->rows = NULL;
    r->row = NULL;
    r->text = NULL;
    return st;
}

/* ---------------------------------------------------------------- JPEG check */

/* Huffman tables whose 16 code-length counts sum past 256 symbols. Debian's
 * stb_image (2022-09) writes h->size[k++] and the values without that bound (a
 * heap overflow found by tests/fuzz/fuzz_image; upstream stb later added the
 * check), and it parses DHT already in stbi_info_from_memory, so this runs
 * before any stb call. It mirrors stb's loop exactly: tables are read while the
 * segment length L (without its 2 bytes) is > 0, 17 bytes each plus their
 * symbols, from the byte stream (zeros past the end, as stbi__get8 gives), not
 * bounded by L. `pos` is the first byte after the length. Returns 1 if fine. */
static int jpeg_dht_ok(const uint8_t *b, size_t n, size_t pos, long L) {
    while (L > 0) {
        size_t sum = 0;
        for (size_t i = 1; i <= 16; i++) sum += pos + i < n ? b[pos + i] : 0;
        if (sum > 256) return 0;
        pos += 17 + sum;
        L -= (long)(17 + sum);
    }
    return 1;
}

/* Walks the JPEG marker structure to the end-of-image marker. Returns 1 if
 * complete, else 0 with a reason. With tables_only (the pre-check before stb
 * sees the bytes) only a bad Huffman table fails; truncation returns 1. */
/* Position just after the SOI marker, or 0 if b is not a JPEG. stb_image, like libjpeg,
 * skips fill bytes before a marker, so "FF FF D8" starts a JPEG too (a fuzzer found
 * that the Huffman pre-check missed such files). */
static size_t jpeg_soi_end(const uint8_t *b, size_t n) {
    size_t p = 0;
    if (n < 3 || b[0] != 0xFF) return 0;
    while (p < n && b[p] == 0xFF) p++;
    return p < n && b[p] == 0xD8 ? p + 1 : 0;
}

static int jpeg_walk(const uint8_t *b, size_t n, const char **why, int tables_only) {
    size_t pos = jpeg_soi_end(b, n); /* after SOI */
    *why = "truncated (no end-of-image marker)";
    for (;;) {
        while (pos < n && b[pos] != 0xFF) pos++; /* extraneous bytes: libjpeg warns, decoders skip */
        while (pos < n && b[pos] == 0xFF) pos++; /* fill bytes */
        if (pos >= n) return tables_only;
        uint8_t m = b[pos++];
        if (m == 0xD9) return 1;                         /* EOI */
        if ((m >= 0xD0 && m <= 0xD7) || m == 0x01) continue; /* no length */
        if (m == 0x00 || m == 0xD8) {
            *why = "corrupt marker structure";
            return tables_only;
        }
        if (pos + 2 > n) return tables_only;
        size_t seglen = ((size_t)b[pos] << 8) | b[pos + 1];
        if (seglen < 2) {
            *why = "corrupt segment length";
            return tables_only;
        }
        if (m == 0xC4 && !jpeg_dht_ok(b, n, pos + 2, (long)seglen - 2)) {
            *why = "corrupt Huffman table (more than 256 codes)";
            return 0;
        }
        if (pos + seglen > n) return tables_only;
        pos += seglen;
        if (m == 0xDA) { /* SOS: skip entropy-coded data up to the next real marker */
            for (;;) {
                if (pos + 1 >= n) return tables_only;
                if (b[pos] == 0xFF) {
                    uint8_t nb = b[pos + 1];
                    if (nb == 0x00 || (nb >= 0xD0 && nb <= 0xD7)) {
                        pos += 2;
                        continue;
                    }
                    break;
                }
                pos++;
            }
        }
    }
}

static uint32_t le16(const uint8_t *b) { return (uint32_t)b[0] | ((uint32_t)b[1] << 8); }
static uint32_t le32(const uint8_t *b) { return le16(b) | (le16(b + 2) << 16); }

/* stb_image reads zeros past the end of a BMP or TGA instead of failing, so
 * uncompressed ones must hold all the pixel bytes their header declares.
 * (RLE variants and GIF are left to the decoder.) Returns 1 if complete. */
static int bmp_tga_is_complete(const uint8_t *b, size_t n) {
    uint64_t need = 0;
    if (n >= 2 && b[0] == 'B' && b[1] == 'M') {
        if (n < 26) return 0;
        uint32_t off = le32(b + 10), hdr = le32(b + 14);
        uint64_t w, h, bpp, comp = 0;
        if (hdr == 12) {
            w = le16(b + 18);
            h = le16(b + 20);
            bpp = n >= 26 ? le16(b + 24) : 0;
        } else {
            if (n < 34) return 0;
            int32_t sw = (int32_t)le32(b + 18), sh = (int32_t)le32(b + 22);
            w = (uint64_t)(sw < 0 ? -(int64_t)sw : sw);
            h = (uint64_t)(sh < 0 ? -(int64_t)sh : sh);
            bpp = le16(b + 28);
            comp = le32(b + 30);
        }
        if (comp != 0 && comp != 3 && comp != 6) return 1; /* RLE / embedded: decoder's job */
        need = off + ((w * bpp + 31) / 32) * 4 * h;
    } else if (n >= 4 && memcmp(b, "GIF8", 4) == 0) {
        return 1;
    } else { /* the only other format stb_image is built with here: TGA */
        if (n < 18) return 0;
        uint32_t type = b[2];
        if (type != 1 && type != 2 && type != 3) return 1; /* RLE */
        uint64_t cmap = b[1] ? (uint64_t)le16(b + 5) * ((b[7] + 7u) / 8u) : 0;
        need = 18 + (uint64_t)b[0] + cmap + (uint64_t)le16(b + 12) * le16(b + 14) * ((b[16] + 7u) / 8u);
    }
    return need <= n;
}

/* ---------------------------------------------------------------- reading */

static const uint8_t png_signature[8] = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1A, '\n'};

static int is_png(const uint8_t *buf, size_t len) {
    return len >= 8 && memcmp(buf, png_signature, 8) == 0;
}

/* Converts 3 <-> 4 channels to what opts ask for; frees the old buffer. */
static SlStatus image_fit_channels(SlImage *img, int want, const char *name, SlCtx *ctx) {
    if (want == 0 || want == img->c) return SL_OK;
    if (want == 3 && img->c == 4) {
        sl_image_flatten_white(img);
        return SL_OK;
    }
    if (want == 4 && img->c == 3) {
        size_t npix = (size_t)img->w * (size_t)img->h;
        uint8_t *d = malloc(npix * 4);
        if (!d) return sl_fail(ctx, SL_ERR_NOMEM, "%s: cannot allocate RGBA pixels", name);
        for (size_t i = 0; i < npix; i++) {
            memcpy(d + 4 * i, img->data + 3 * i, 3);
            d[4 * i + 3] = 255;
        }
        free(img->data);
        img->data = d;
        img->c = 4;
        return SL_OK;
    }
    return sl_fail(ctx, SL_ERR_ARG, "%s: cannot convert %d channels to %d", name, img->c, want);
}

/* stbi_info_from_memory, except that a top-down BMP (negative height in its
 * header, which stb decodes fine) reports its height as positive. */
static int stb_info(const uint8_t *buf, size_t len, int *w, int *h, int *comp) {
    if (!stbi_info_from_memory(buf, (int)len, w, h, comp)) return 0;
    if (len >= 2 && buf[0] == 'B' && buf[1] == 'M' && *h < 0 && *h != INT_MIN) *h = -*h;
    return 1;
}

SlStatus sl_image_read_memory(SlImage *out, const uint8_t *buf, size_t len, const char *name,
                              const SlImageReadOpts *opts, SlCtx *ctx) {
    memset(out, 0, sizeof *out);
    SlImageReadOpts o = opts ? *opts : sl_image_read_opts_default();
    if (o.channels != 0 && o.channels != 3 && o.channels != 4)
        return sl_fail(ctx, SL_ERR_ARG, "%s: channels must be 0, 3 or 4, not %d", name, o.channels);
    int64_t limit = o.max_pixels > 0 ? o.max_pixels : SL_IMAGE_DEFAULT_MAX_PIXELS;
    if (len == 0) return sl_fail(ctx, SL_ERR_FORMAT, "%s: empty file (0 bytes), not an image", name);
    SlStatus st;
    if (is_png(buf, len)) {
        PngRead r;
        memset(&r, 0, sizeof r);
        r.buf = buf;
        r.len = len;
        r.name = name;
        st = png_decode(out, &r, &o, PNG_FULL, ctx);
    } else {
        if (len > SL_IMAGE_MAX_FILE_BYTES)
            return sl_fail(ctx, SL_ERR_NOMEM, "%s: %zu bytes is too large for an image", name, len);
        int w = 0, h = 0, comp = 0;
        const char *why = NULL;
        int is_jpeg = jpeg_soi_end(buf, len) != 0;
        if (is_jpeg && !jpeg_walk(buf, len, &why, 1)) /* before stb parses any table */
            return sl_fail(ctx, SL_ERR_FORMAT, "%s: bad JPEG: %s", name, why);
        if (!stb_info(buf, len, &w, &h, &comp))
            return sl_fail(ctx, SL_ERR_FORMAT, "%s: not a readable PNG, JPEG, BMP, TGA or GIF image (%s)",
                           name, stbi_failure_reason());
        /* a GIF may declare a 0-pixel screen and stb still "decodes" it (found by fuzz_image) */
        if (w <= 0 || h <= 0) return sl_fail(ctx, SL_ERR_FORMAT, "%s: image of %dx%d has no pixels", name, w, h);
        int64_t npix = (int64_t)w * (int64_t)h;
        if (npix > limit) return pixel_limit_fail(ctx, name, (uint32_t)w, (uint32_t)h, limit);
        if (is_jpeg && !jpeg_walk(buf, len, &why, 0))
            return sl_fail(ctx, SL_ERR_FORMAT, "%s: bad JPEG: %s", name, why);
        if (!is_jpeg && !bmp_tga_is_complete(buf, len))
            return sl_fail(ctx, SL_ERR_FORMAT, "%s: truncated image: fewer pixel bytes than the header declares", name);
        int want = (comp == 2 || comp == 4) ? 4 : 3;
        int got_w = 0, got_h = 0, got_c = 0;
        uint8_t *px = stbi_load_from_memory(buf, (int)len, &got_w, &got_h, &got_c, want);
        if (!px) return sl_fail(ctx, SL_ERR_FORMAT, "%s: cannot decode: %s", name, stbi_failure_reason());
        if (got_w != w || got_h != h) {
            stbi_image_free(px);
            return sl_fail(ctx, SL_ERR_FORMAT, "%s: decoded size %dx%d differs from header %dx%d", name,
                           got_w, got_h, w, h);
        }
        out->w = w;
        out->h = h;
        out->c = want;
        out->data = px; /* stb allocates with malloc: sl_image_free's free() matches */
        st = SL_OK;
        /* stb reports every GIF as RGBA: an opaque one is RGB. */
        if (want == 4 && o.channels == 0 && len >= 4 && memcmp(buf, "GIF8", 4) == 0) {
            size_t n_px = (size_t)w * (size_t)h, i = 0;
            while (i < n_px && px[4 * i + 3] == 255) i++;
            if (i == n_px) sl_image_flatten_white(out);
        }
    }
    if (st == SL_OK) st = image_fit_channels(out, o.channels, name, ctx);
    if (st != SL_OK) sl_image_free(out);
    return st;
}

SlStatus sl_image_read(SlImage *out, const char *path, const SlImageReadOpts *opts, SlCtx *ctx) {
    memset(out, 0, sizeof *out);
    uint8_t *buf;
    size_t len;
    SL_TRY(read_whole_file(path, &buf, &len, ctx));
    SlStatus st = sl_image_read_memory(out, buf, len, path, opts, ctx);
    free(buf);
    return st;
}

SlStatus sl_image_probe(const char *path, int *w, int *h, int *c, SlCtx *ctx) {
    uint8_t *buf;
    size_t len;
    SL_TRY(read_whole_file(path, &buf, &len, ctx));
    SlStatus st = SL_OK;
    SlImage img;
    memset(&img, 0, sizeof img);
    if (len == 0) {
        st = sl_fail(ctx, SL_ERR_FORMAT, "%s: empty file (0 bytes), not an image", path);
    } else if (is_png(buf, len)) {
        uint32_t pw = 0, ph = 0;
        if (!png_peek_header(buf, len, &pw, &ph, &img.c))
            st = sl_fail(ctx, SL_ERR_FORMAT, "%s: bad PNG: no IHDR chunk after the signature", path);
        else if (pw > INT_MAX || ph > INT_MAX)
            st = sl_fail(ctx, SL_ERR_FORMAT, "%s: bad PNG: size %ux%u out of range", path, (unsigned)pw, (unsigned)ph);
        img.w = (int)pw;
        img.h = (int)ph;
    } else {
        int comp = 0;
        const char *why = NULL;
        if (jpeg_soi_end(buf, len) && !jpeg_walk(buf, len, &why, 1))
            st = sl_fail(ctx, SL_ERR_FORMAT, "%s: bad JPEG: %s", path, why); /* stb would overflow */
        else if (!stb_info(buf, len, &img.w, &img.h, &comp))
            st = sl_fail(ctx, SL_ERR_FORMAT, "%s: not a readable PNG, JPEG, BMP, TGA or GIF image (%s)",
                         path, stbi_failure_reason());
        img.c = (comp == 2 || comp == 4) ? 4 : 3;
    }
    free(buf);
    if (st == SL_OK) {
        *w = img.w;
        *h = img.h;
        *c = img.c;
    }
    return st;
}

SlStatus sl_image_read_text(const char *path, SlImageText **text, int *n_text, SlCtx *ctx) {
    *text = NULL;
    *n_text = 0;
    uint8_t *buf;
    size_t len;
    SL_TRY(read_whole_file(path, &buf, &len, ctx));
    SlStatus st = SL_OK;
    if (is_png(buf, len)) {
        PngRead r;
        memset(&r, 0, sizeof r);
        r.buf = buf;
        r.len = len;
        r.name = path;
        SlImageReadOpts o = sl_image_read_opts_default();
        SlImage img;
        memset(&img, 0, sizeof img);
        st = png_decode(&img, &r, &o, PNG_TEXT_ONLY, ctx);
        if (st == SL_OK) {
            *text = img.text;
            *n_text = img.n_text;
        }
    }
    free(buf);
    return st;
}

/* ---------------------------------------------------------------- PNG write */

typedef struct PngWrite {
    jmp_buf jb;
    char msg[256];
    png_structp png;
    png_infop info;
    png_bytep *rows;  /* (H) */
    png_text *text;   /* (n_text) */
    FILE *f;
} PngWrite;

static void png_write_error_cb(png_structp png, png_const_charp msg) {
    PngWrite *wr = png_get_error_ptr(png);
    snprintf(wr->msg, sizeof wr->msg, "%s", msg);
    longjmp(wr->jb, 1);
}

static int is_ascii(const char *s) {
    for (; *s; s++)
        if ((unsigned char)*s >= 0x80) return 0;
    return 1;
}

SlStatus sl_image_write_png(const SlImage *img, const char *path, const SlImageText *text,
                            int n_text, SlCtx *ctx) {
    if (!img || !img->data || img->w <= 0 || img->h <= 0 || img->c < 1 || img->c > 4)
        return sl_fail(ctx, SL_ERR_ARG, "%s: no image to write", path);
    if (n_text < 0 || (n_text > 0 && !text)) return sl_fail(ctx, SL_ERR_ARG, "%s: bad text chunk list", path);
    SL_TRY(sl_path_check_writable(NULL, path, ctx)); /* the rename would replace a FIFO or device */
    for (int i = 0; i < n_text; i++) {
        const char *k = text[i].key;
        size_t kl = k ? strlen(k) : 0;
        int ok = kl >= 1 && kl <= 79 && text[i].value;
        for (size_t j = 0; ok && j < kl; j++) ok = k[j] >= 0x20 && k[j] < 0x7F;
        if (!ok) return sl_fail(ctx, SL_ERR_ARG, "%s: text key \"%s\" must be 1-79 printable ASCII characters with a value",
                                path, k ? k : "(null)");
    }
    size_t plen = strlen(path);
    char *tmp = malloc(plen + 16);
    if (!tmp) return sl_fail(ctx, SL_ERR_NOMEM, "%s: out of memory", path);
    snprintf(tmp, plen + 16, "%s.tmp.XXXXXX", path);
    int fd = mkstemp(tmp);
    if (fd < 0) {
        SlStatus e = sl_fail(ctx, SL_ERR_IO, "%s: cannot create temporary file: %s", path, strerror(errno));
        free(tmp);
        return e;
    }
    (void)fchmod(fd, 0644);

    PngWrite wrs;
    PngWrite *wr = &wrs;
    memset(wr, 0, sizeof *wr);
    volatile SlStatus st = SL_OK; /* set after setjmp */
    wr->f = fdopen(fd, "wb");
    if (!wr->f) {
        close(fd);
        st = sl_fail(ctx, SL_ERR_IO, "%s: cannot open temporary file: %s", path, strerror(errno));
        goto done;
    }
    wr->png = png_create_write_struct(PNG_LIBPNG_VER_STRING, wr, png_write_error_cb, png_warning_cb);
    if (wr->png) wr->info = png_create_info_struct(wr->png);
    wr->rows = malloc((size_t)img->h * sizeof *wr->rows);
    wr->text = n_text ? calloc((size_t)n_text, sizeof *wr->text) : NULL;
    if (!wr->png || !wr->info || !wr->rows || (n_text && !wr->text)) {
        st = sl_fail(ctx, SL_ERR_NOMEM, "%s: cannot set up the PNG writer", path);
        goto done;
    }
    if (setjmp(wr->jb)) {
        st = sl_fail(ctx, SL_ERR_IO, "%s: PNG write failed: %s", path, wr->msg);
        goto done;
    }
    static const int color_types[5] = {0, PNG_COLOR_TYPE_GRAY, PNG_COLOR_TYPE_GRAY_ALPHA,
                                       PNG_COLOR_TYPE_RGB, PNG_COLOR_TYPE_RGB_ALPHA};
    png_init_io(wr->png, wr->f);
    png_set_IHDR(wr->png, wr->info, (png_uint_32)img->w, (png_uint_32)img->h, 8, color_types[img->c],
                 PNG_INTERLACE_NONE, PNG_COMPRESSION_TYPE_DEFAULT, PNG_FILTER_TYPE_DEFAULT);
    for (int i = 0; i < n_text; i++) {
        png_text *t = &wr->text[i];
        t->key = text[i].key;
        t->text = text[i].value;
        if (is_ascii(text[i].value)) {
            t->compression = PNG_TEXT_COMPRESSION_NONE;
            t->text_length = strlen(text[i].value);
        } else {
            t->compression = PNG_ITXT_COMPRESSION_NONE;
            t->itxt_length = strlen(text[i].value);
            t->lang = "";
            t->lang_key = "";
        }
    }
    if (n_text) png_set_text(wr->png, wr->info, wr->text, n_text);
    png_write_info(wr->png, wr->info);
    size_t stride = (size_t)img->w * (size_t)img->c;
    for (int y = 0; y < img->h; y++) wr->rows[y] = img->data + (size_t)y * stride;
    png_write_image(wr->png, wr->rows);
    png_write_end(wr->png, NULL);
    if (fflush(wr->f) != 0 || fsync(fileno(wr->f)) != 0) {
        st = sl_fail(ctx, SL_ERR_IO, "%s: write failed: %s", path, strerror(errno));
        goto done;
    }
done:
    if (wr->png) png_destroy_write_struct(&wr->png, wr->info ? &wr->info : NULL);
    free(wr->rows);
    free(wr->text);
    if (wr->f && fclose(wr->f) != 0 && st == SL_OK)
        st = sl_fail(ctx, SL_ERR_IO, "%s: close failed: %s", path, strerror(errno));
    if (st == SL_OK && rename(tmp, path) != 0)
        st = sl_fail(ctx, SL_ERR_IO, "%s: cannot rename temporary file into place: %s", path, strerror(errno));
    if (st != SL_OK) unlink(tmp);
    free(tmp);
    return st;
}

/* ---------------------------------------------------------------- pixels */

void sl_image_flatten_white(SlImage *img) {
    if (img->c != 4 && img->c != 2) return;
    int cc = img->c - 1; /* colour channels */
    size_t npix = (size_t)img->w * (size_t)img->h;
    uint8_t *d = img->data;
    for (size_t i = 0; i < npix; i++) {
        const uint8_t *s = img->data + i * (size_t)img->c;
        unsigned a = s[cc];
        uint8_t px[3];
        for (int k = 0; k < cc; k++) px[k] = (uint8_t)((a * s[k] + (255u - a) * 255u + 127u) / 255u);
        memcpy(d + i * (size_t)cc, px, (size_t)cc); /* in place: writes never pass reads */
    }
    img->c = cc;
    uint8_t *shrunk = realloc(img->data, npix * (size_t)cc);
    if (shrunk) img->data = shrunk;
}

SlStatus sl_image_resize(SlImage *out, const SlImage *in, int w, int h, SlResizeFilter filter, SlCtx *ctx) {
    memset(out, 0, sizeof *out);
    if (!in || !in->data || w <= 0 || h <= 0)
        return sl_fail(ctx, SL_ERR_ARG, "resize to %dx%d: bad arguments", w, h);
    stbir_filter f = filter == SL_RESIZE_AREA       ? STBIR_FILTER_BOX
                     : filter == SL_RESIZE_BILINEAR ? STBIR_FILTER_TRIANGLE
                                                    : STBIR_FILTER_CATMULLROM;
    SL_TRY(sl_image_alloc(out, w, h, in->c, ctx));
    int alpha = (in->c == 4 || in->c == 2) ? in->c - 1 : STBIR_ALPHA_CHANNEL_NONE;
    if (!stbir_resize_uint8_generic(in->data, in->w, in->h, 0, out->data, w, h, 0, in->c, alpha, 0,
                                    STBIR_EDGE_CLAMP, f, STBIR_COLORSPACE_LINEAR, NULL)) {
        sl_image_free(out);
        return sl_fail(ctx, SL_ERR_NOMEM, "resize %dx%d -> %dx%d failed", in->w, in->h, w, h);
    }
    return SL_OK;
}

SlStatus sl_image_crop(SlImage *out, const SlImage *in, int x, int y, int w, int h, SlCtx *ctx) {
    memset(out, 0, sizeof *out);
    if (x < 0 || y < 0 || w <= 0 || h <= 0 || x > in->w - w || y > in->h - h)
        return sl_fail(ctx, SL_ERR_ARG, "crop %dx%d at (%d,%d) leaves the %dx%d image", w, h, x, y, in->w, in->h);
    SL_TRY(sl_image_alloc(out, w, h, in->c, ctx));
    size_t row = (size_t)w * (size_t)in->c;
    for (int r = 0; r < h; r++)
        memcpy(out->data + (size_t)r * row,
               in->data + ((size_t)(y + r) * (size_t)in->w + (size_t)x) * (size_t)in->c, row);
    return SL_OK;
}

SlStatus sl_image_center_crop(SlImage *out, const SlImage *in, int w, int h, SlCtx *ctx) {
    return sl_image_crop(out, in, (in->w - w) / 2, (in->h - h) / 2, w, h, ctx);
}

void sl_image_flip_h(SlImage *img) {
    int c = img->c;
    for (int y = 0; y < img->h; y++) {
        uint8_t *row = img->data + (size_t)y * (size_t)img->w * (size_t)c;
        for (int a = 0, b = img->w - 1; a < b; a++, b--)
            for (int k = 0; k < c; k++) {
                uint8_t t = row[a * c + k];
                row[a * c + k] = row[b * c + k];
                row[b * c + k] = t;
            }
    }
}

void sl_image_to_chw(float *out, const SlImage *in, int c_out) {
    size_t hw = (size_t)in->w * (size_t)in->h;
    for (int k = 0; k < c_out && k < in->c; k++) {
        float *o = out + (size_t)k * hw;
        const uint8_t *s = in->data + k;
        for (size_t i = 0; i < hw; i++) o[i] = (float)s[i * (size_t)in->c] * (1.0f / 127.5f) - 1.0f;
    }
}

SlStatus sl_image_from_chw(SlImage *out, const float *chw, int c, int h, int w, SlCtx *ctx) {
    SL_TRY(sl_image_alloc(out, w, h, c, ctx));
    size_t hw = (size_t)w * (size_t)h;
    for (int k = 0; k < c; k++) {
        const float *s = chw + (size_t)k * hw;
        for (size_t i = 0; i < hw; i++) {
            float v = fminf(fmaxf((s[i] + 1.0f) * 127.5f, 0.0f), 255.0f); /* NaN -> 0 */
            out->data[i * (size_t)c + (size_t)k] = (uint8_t)(v + 0.5f);
        }
    }
    return SL_OK;
}
