/* fuzz_image.c - libFuzzer target: sl_image_read_memory on arbitrary bytes
 * (PNG, JPEG, GIF, PNM, ... whatever the reader sniffs) with a small pixel
 * limit (256 x 256) so huge declared sizes are refused cheaply, keeping PNG
 * text chunks; the channel mode (native / RGB / RGBA) comes from the input
 * length so every mode is exercised without changing the file bytes.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "core/image.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    SlCtx ctx;
    sl_ctx_init(&ctx);
    SlImageReadOpts o = sl_image_read_opts_default();
    o.max_pixels = 256 * 256;
    o.channels = (int[]){0, 3, 4}[size % 3];
    o.read_text = 1;
    SlImage im;
    memset(&im, 0, sizeof im);
    if (sl_image_read_memory(&im, data, size, "fuzz.img", &o, &ctx) == SL_OK) {
        if (im.w <= 0 || im.h <= 0 || (int64_t)im.w * im.h > o.max_pixels) abort();
        if (o.channels && im.c != o.channels) abort();
        /* touch every pixel byte: ASan flags a buffer smaller than w*h*c */
        volatile uint8_t acc = 0;
        for (size_t i = 0; i < (size_t)im.w * im.h * im.c; i++) acc ^= im.data[i];
        for (int i = 0; i < im.n_text; i++) (void)(strlen(im.text[i].key) + strlen(im.text[i].value));
        (void)acc;
    }
    sl_image_free(&im);
    return 0;
}
