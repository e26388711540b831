/* fuzz_safetensors.c - libFuzzer target: sl_st_open_buffer on arbitrary bytes,
 * then every accessor on whatever it accepted: find (names sorted and unique),
 * data (range inside the buffer), meta, read_f32 / read_i64 of each tensor,
 * load_f32 with the entry's own shape and with a wrong one.
 */
#include <stdint.h>
#include <stdlib.h>

#include "core/safetensors.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    SlCtx ctx;
    sl_ctx_init(&ctx);
    SlStFile f;
    if (sl_st_open_buffer(&f, data, size, "fuzz.safetensors", &ctx) != SL_OK) return 0;
    for (int i = 0; i < f.n_meta; i++)
        if (!sl_st_meta(&f, f.meta_keys[i])) abort();
    for (int i = 0; i < f.n; i++) {
        const SlStEntry *e = &f.entries[i];
        if (sl_st_find(&f, e->name) != e) abort(); /* the reader promises sorted, unique names */
        const uint8_t *p = sl_st_data(&f, e);
        if (p < data || p + e->nbytes > data + size) abort(); /* the range must be inside the buffer */
        /* the element count, without overflowing on huge dimensions beside a zero one
         * (the reader accepts [2^32, 2^35, 0, 3]: 0 elements); over 2^20 is skipped */
        int64_t numel = 1;
        int big = 0;
        for (int d = 0; d < e->ndim; d++)
            if (e->shape[d] == 0) numel = 0;
        for (int d = 0; d < e->ndim && numel && !big; d++) {
            if (e->shape[d] > (1 << 20) / numel) big = 1;
            else numel *= e->shape[d];
        }
        if (big) continue; /* keep each input cheap */
        float *fb = malloc(((size_t)numel + 1) * sizeof(float));
        int64_t *ib = malloc(((size_t)numel + 1) * sizeof(int64_t));
        if (fb && ib) {
            sl_ctx_clear(&ctx);
            (void)sl_st_read_f32(&f, e, fb, &ctx);
            (void)sl_st_read_i64(&f, e, ib, &ctx);
            (void)sl_st_load_f32(&f, e->name, e->ndim, e->shape, fb, &ctx);
            int64_t wrong[SL_MAX_DIMS] = {numel + 1};
            if (sl_st_load_f32(&f, e->name, 1, wrong, fb, &ctx) == SL_OK) abort(); /* numel differs */
        }
        free(fb);
        free(ib);
    }
    sl_st_close(&f);
    return 0;
}
