/* image.h - image files in and out, and the small pixel operations training needs.
 *
 * Reads PNG with libpng (8/16 bit, palette, gray, gray+alpha, RGB, RGBA,
 * interlaced; 16-bit samples are scaled to 8 bits with rounding) and JPEG, BMP,
 * TGA and GIF (first frame) with stb_image. The result is always 8-bit RGB or
 * RGBA, row-major (H, W, C). Writes 8-bit PNG atomically (temp file + rename)
 * with text chunks (A1111 stores its generation settings under "parameters").
 *
 * Safety: a declared size above the pixel limit (default 64 megapixels) is
 * refused before any pixel buffer is allocated; truncated or malformed files
 * give SL_ERR_FORMAT; every message names the file. libpng errors are caught
 * per call (no global state), so reads may run on several threads at once.
 *
 * Float layout for models: (C, H, W) in [-1, 1] (x / 127.5 - 1), RGB order.
 * Dimension letters: H height, W width, C channels.
 *
 * Not here: colour management (ICC/gAMA are ignored; pixels are taken as
 * sRGB), EXIF orientation, animation, writing anything but PNG.
 */
#ifndef SL_IMAGE_H
#define SL_IMAGE_H

#include <stdint.h>

#include "status.h"

#define SL_IMAGE_DEFAULT_MAX_PIXELS ((int64_t)64 * 1000 * 1000)

/* One text chunk (tEXt / zTXt / iTXt). Owned strings, NUL-terminated. */
typedef struct SlImageText {
    char *key;    /* 1..79 characters; UTF-8 on read, printable ASCII to write */
    char *value;  /* UTF-8 (tEXt/zTXt Latin-1 is converted on read) */
} SlImageText;

typedef struct SlImage {
    int w, h, c;          /* c is 3 (RGB) or 4 (RGBA); a few helpers also accept 1 and 2 */
    uint8_t *data;        /* (H, W, C), owned; free with sl_image_free */
    int n_text;           /* PNG text chunks read from the file (0 for other formats) */
    SlImageText *text;    /* (n_text), owned */
} SlImage;

typedef struct SlImageReadOpts {
    int64_t max_pixels;   /* refuse w*h above this; <= 0 means the default */
    int channels;         /* 0: keep (RGB or RGBA as the file has alpha); 3: RGB, alpha
                             composited on white; 4: RGBA (opaque alpha added) */
    int read_text;        /* 1: keep PNG text chunks in SlImage.text */
} SlImageReadOpts;

/* Zeroed options: default limit, native channels, no text. */
static inline SlImageReadOpts sl_image_read_opts_default(void) {
    SlImageReadOpts o = {SL_IMAGE_DEFAULT_MAX_PIXELS, 0, 0};
    return o;
}

/* Reads an image file into *out (zeroed first; free with sl_image_free).
 * opts may be NULL (defaults). Errors: SL_ERR_IO (cannot open/read),
 * SL_ERR_FORMAT (not an image, truncated, corrupt), SL_ERR_NOMEM (declared
 * size above the pixel limit, or allocation failed). */
SlStatus sl_image_read(SlImage *out, const char *path, const SlImageReadOpts *opts, SlCtx *ctx);

/* Same, from a memory buffer; `name` is used in messages. */
SlStatus sl_image_read_memory(SlImage *out, const uint8_t *buf, size_t len, const char *name,
                              const SlImageReadOpts *opts, SlCtx *ctx);

/* Reads only the declared size and channel count (no pixel decode, no pixel
 * limit). *c is what sl_image_read would return with channels = 0, except
 * that every GIF reports 4. */
SlStatus sl_image_probe(const char *path, int *w, int *h, int *c, SlCtx *ctx);

/* Reads only the PNG text chunks of `path` into *text / *n_text (free with
 * sl_image_text_free). Non-PNG files give zero chunks and SL_OK. */
SlStatus sl_image_read_text(const char *path, SlImageText **text, int *n_text, SlCtx *ctx);
void sl_image_text_free(SlImageText *text, int n_text);

/* Writes img (c = 1, 2, 3 or 4; 8-bit) as PNG with the given text chunks
 * (tEXt if the value is ASCII, else uncompressed UTF-8 iTXt). Atomic: writes
 * "<path>.tmp.XXXXXX" in the same folder, fsyncs, renames. Keys must be 1..79
 * printable Latin-1 characters (SL_ERR_ARG otherwise). */
SlStatus sl_image_write_png(const SlImage *img, const char *path, const SlImageText *text,
                            int n_text, SlCtx *ctx);

/* Frees the pixels and text and zeroes *img. NULL-safe. */
void sl_image_free(SlImage *img);

/* Allocates a w x h x c image (pixels uninitialized). */
SlStatus sl_image_alloc(SlImage *img, int w, int h, int c, SlCtx *ctx);

/* RGBA -> RGB in place, compositing on white: out = a*px + (255-a)*255, rounded.
 * No-op for c = 3. Gray+alpha (c = 2) becomes gray (c = 1). */
void sl_image_flatten_white(SlImage *img);

typedef enum SlResizeFilter {
    SL_RESIZE_AREA = 0,   /* box filter: exact area average when downscaling */
    SL_RESIZE_BILINEAR,   /* triangle filter, widened when downscaling (antialiased) */
    SL_RESIZE_BICUBIC     /* Catmull-Rom, widened when downscaling */
} SlResizeFilter;

/* out = in resized to w x h (out is allocated; in is unchanged). RGBA is
 * filtered with premultiplied alpha. */
SlStatus sl_image_resize(SlImage *out, const SlImage *in, int w, int h, SlResizeFilter filter,
                         SlCtx *ctx);

/* out = the w x h window of in at (x, y); SL_ERR_ARG if it leaves the image. */
SlStatus sl_image_crop(SlImage *out, const SlImage *in, int x, int y, int w, int h, SlCtx *ctx);

/* out = the centered w x h window of in (offsets rounded down). */
SlStatus sl_image_center_crop(SlImage *out, const SlImage *in, int w, int h, SlCtx *ctx);

/* Mirrors the image left-right in place. */
void sl_image_flip_h(SlImage *img);

/* out (C, H, W) = in[h][w][c] / 127.5 - 1 for the first `c_out` channels
 * (c_out <= in->c; use 3 to drop alpha). */
void sl_image_to_chw(float *out, const SlImage *in, int c_out);

/* out (H, W, C) 8-bit from chw (C, H, W): round((x + 1) * 127.5), clamped to
 * [0, 255]; NaN maps to 0. out is allocated. */
SlStatus sl_image_from_chw(SlImage *out, const float *chw, int c, int h, int w, SlCtx *ctx);

#endif
