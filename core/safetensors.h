/* safetensors.h - validated reader and atomic writer for .safetensors files.
 *
 * Reader: the file is memory-mapped and its header checked in full before any
 * tensor is touched: header length bound, well-formed JSON, known dtypes,
 * shape x dtype size equal to the byte range, ranges inside the data section,
 * no overlaps, no duplicate names, no shape whose element count overflows.
 * Every failure names the file and the fault.
 *
 * Writer: collects tensors (pointers, not copies) and string metadata, then
 * writes "<path>.tmp.<pid>", fsyncs it and renames it over <path>: a crash
 * leaves either the old file or the new one, never a torn file.
 *
 * Not here: model key mapping (core/modelfile.h), dtype policy of models.
 */
#ifndef SL_SAFETENSORS_H
#define SL_SAFETENSORS_H

#include <stddef.h>
#include <stdint.h>

#include "status.h"
#include "tensor.h"

/* Upper bound on the JSON header (safetensors' own reference uses 100 MB). */
#define SL_ST_MAX_HEADER (100u * 1024u * 1024u)

/* What to tell someone who gave us a PyTorch pickle (.ckpt/.pt/.bin, or one renamed). */
#define SL_ST_PICKLE_HINT                                                                                  \
    "pickle checkpoints are never loaded, since loading one can run code; convert it to .safetensors " \
    "first (e.g. in Python: safetensors.torch.save_file(torch.load(f, weights_only=True), out))"

typedef struct SlStEntry {
    char *name;
    SlDType dtype;
    int ndim;
    int64_t shape[SL_MAX_DIMS];
    size_t offset;   /* from the start of the data section */
    size_t nbytes;
} SlStEntry;

typedef struct SlStFile {
    char *path;
    const uint8_t *map;   /* whole file */
    size_t map_size;
    size_t data_start;    /* 8 + header length */
    int n;                /* tensors, sorted by name */
    SlStEntry *entries;
    int n_meta;           /* __metadata__ string pairs, in file order */
    char **meta_keys;
    char **meta_vals;
    int owns_map;         /* 1 if opened by sl_st_open (unmapped on close) */
} SlStFile;

/* Opens and validates path. On failure *f is left closed and ctx names the fault. */
SlStatus sl_st_open(SlStFile *f, const char *path, SlCtx *ctx);
/* Validates an in-memory image (used by open and by fuzzers). `buf` must outlive f;
 * `label` names it in messages. sl_st_close will not unmap/free buf. */
SlStatus sl_st_open_buffer(SlStFile *f, const uint8_t *buf, size_t size, const char *label, SlCtx *ctx);
void sl_st_close(SlStFile *f);

/* Binary search by name; NULL if absent. */
const SlStEntry *sl_st_find(const SlStFile *f, const char *name);
/* Pointer to the raw bytes of e (may be unaligned). */
const void *sl_st_data(const SlStFile *f, const SlStEntry *e);
/* Metadata value for key, or NULL. */
const char *sl_st_meta(const SlStFile *f, const char *key);

/* Copies e into dst as F32 (converting F16/BF16/ints). dst holds numel floats. */
SlStatus sl_st_read_f32(const SlStFile *f, const SlStEntry *e, float *dst, SlCtx *ctx);
/* Finds `name`, checks its shape equals (ndim, shape) and reads it as F32.
 * Errors name the file, the tensor, and both shapes. */
SlStatus sl_st_load_f32(const SlStFile *f, const char *name, int ndim, const int64_t *shape,
                        float *dst, SlCtx *ctx);
/* Reads an integer tensor (I64/I32/I16/I8/U8) into int64 dst (numel values). */
SlStatus sl_st_read_i64(const SlStFile *f, const SlStEntry *e, int64_t *dst, SlCtx *ctx);

/* ---- writer ---- */

typedef struct SlStWriter {
    int n, cap;
    struct SlStWItem {
        char *name;
        SlDType dtype;
        int ndim;
        int64_t shape[SL_MAX_DIMS];
        const void *data;  /* not owned; must live until save */
        void *owned;       /* converted copy (e.g. F32 -> F16), freed by the writer */
    } *items;
    int n_meta, cap_meta;
    char **meta_keys, **meta_vals;
} SlStWriter;

void sl_st_writer_init(SlStWriter *w);
/* Adds a tensor; `data` is referenced, not copied. Names must be unique. */
SlStatus sl_st_writer_add(SlStWriter *w, const char *name, SlDType dtype, int ndim,
                          const int64_t *shape, const void *data, SlCtx *ctx);
/* Adds F32 data stored as `store` (F32, F16 or BF16): converts into an owned copy. */
SlStatus sl_st_writer_add_f32_as(SlStWriter *w, const char *name, SlDType store, int ndim,
                                 const int64_t *shape, const float *data, SlCtx *ctx);
/* Sets a __metadata__ string (replaces an existing key). */
SlStatus sl_st_writer_meta(SlStWriter *w, const char *key, const char *value, SlCtx *ctx);
/* Writes atomically (tmp + fsync + rename). Tensors are stored sorted by name. */
SlStatus sl_st_writer_save(SlStWriter *w, const char *path, SlCtx *ctx);
void sl_st_writer_free(SlStWriter *w);

#endif
