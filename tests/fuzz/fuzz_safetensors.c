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
        int64_t numel = 1;
        for (int d = 0; d < e->ndim; d++) numel *= e->shape[d];
        if (numel > (1 << 20)) continue; /* keep each input cheap */
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
