/* safetensors.c - validated reader and atomic writer; see safetensors.h.
 *
 * Format: u64 little-endian header length N, N bytes of JSON, then the data
 * section. The JSON maps tensor names to {dtype, shape, data_offsets:[b,e]}
 * (offsets relative to the data section) plus an optional "__metadata__"
 * object of string values.
 */
#include "safetensors.h"
#include "outpath.h"

#include <cJSON.h>
#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

static char *sl_strdup(const char *s) {
    size_t n = strlen(s) + 1;
    char *d = malloc(n);
    if (d) memcpy(d, s, n);
    return d;
}

static int entry_cmp_name(const void *a, const void *b) {
    return strcmp(((const SlStEntry *)a)->name, ((const SlStEntry *)b)->name);
}

static int entry_cmp_offset(const void *a, const void *b) {
    const SlStEntry *x = *(const SlStEntry *const *)a, *y = *(const SlStEntry *const *)b;
    if (x->offset != y->offset) return x->offset < y->offset ? -1 : 1;
    return x->nbytes < y->nbytes ? -1 : x->nbytes > y->nbytes;
}

/* JSON numbers are doubles: accept whole numbers in [0, 2^53]. */
static int json_uint(const cJSON *v, uint64_t *out) {
    if (!cJSON_IsNumber(v)) return 0;
    double d = v->valuedouble;
    if (!(d >= 0) || d > 9007199254740992.0 || d != (double)(uint64_t)d) return 0;
    *out = (uint64_t)d;
    return 1;
}

static void st_free_fields(SlStFile *f) {
    for (int i = 0; i < f->n; i++) free(f->entries[i].name);
    free(f->entries);
    for (int i = 0; i < f->n_meta; i++) { free(f->meta_keys[i]); free(f->meta_vals[i]); }
    free(f->meta_keys);
    free(f->meta_vals);
    free(f->path);
}

/* 1 if the bytes are a PyTorch checkpoint (.ckpt/.pt/.bin) rather than safetensors:
 * a zip archive (torch.save since 1.6) or a raw pickle (protocol 2-5). A real
 * safetensors file can start with the same bytes (a header of 640 bytes is
 * 80 02 00..), but its JSON header then starts with '{' at byte 8. */
static int looks_like_pickle(const uint8_t *b, size_t n) {
    if (n >= 9 && b[8] == '{') return 0;
    if (n >= 4 && memcmp(b, "PK\x03\x04", 4) == 0) return 1;
    return n >= 2 && b[0] == 0x80 && b[1] >= 2 && b[1] <= 5;
}

static SlStatus st_parse(SlStFile *f, SlCtx *ctx) {
    const char *label = f->path;
    if (looks_like_pickle(f->map, f->map_size))
        return sl_fail(ctx, SL_ERR_UNSUPPORTED, "%s is a PyTorch pickle/zip checkpoint, not safetensors; %s", label,
                       SL_ST_PICKLE_HINT);
    if (f->map_size < 8)
        return sl_fail(ctx, SL_ERR_FORMAT, "%s: file is %zu bytes, too short for a safetensors header", label, f->map_size);
    uint64_t hlen = 0;
    for (int i = 7; i >= 0; i--) hlen = (hlen << 8) | f->map[i];
    if (hlen > SL_ST_MAX_HEADER)
        return sl_fail(ctx, SL_ERR_FORMAT, "%s: header length %llu exceeds the %u-byte limit",
                       label, (unsigned long long)hlen, SL_ST_MAX_HEADER);
    if (hlen < 2 || hlen > f->map_size - 8)
        return sl_fail(ctx, SL_ERR_FORMAT, "%s: header length %llu does not fit in a %zu-byte file (truncated?)",
                       label, (unsigned long long)hlen, f->map_size);
    f->data_start = 8 + (size_t)hlen;
    size_t data_size = f->map_size - f->data_start;

    cJSON *root = cJSON_ParseWithLength((const char *)f->map + 8, (size_t)hlen);
    if (!root) return sl_fail(ctx, SL_ERR_FORMAT, "%s: header is not valid JSON", label);
    if (!cJSON_IsObject(root)) {
        cJSON_Delete(root);
        return sl_fail(ctx, SL_ERR_FORMAT, "%s: header is not a JSON object", label);
    }
    int count = cJSON_GetArraySize(root);
    f->entries = calloc((size_t)(count ? count : 1), sizeof(SlStEntry));
    if (!f->entries) { cJSON_Delete(root); return sl_fail(ctx, SL_ERR_NOMEM, "%s: out of memory", label); }

    SlStatus st = SL_OK;
    const cJSON *it;
    cJSON_ArrayForEach(it, root) {
        const char *key = it->string ? it->string : "";
        if (strcmp(key, "__metadata__") == 0) {
            if (!cJSON_IsObject(it)) { st = sl_fail(ctx, SL_ERR_FORMAT, "%s: __metadata__ is not an object", label); break; }
            /* a second __metadata__ would overwrite (and leak) the first's arrays (found by fuzz_safetensors) */
            if (f->meta_keys) { st = sl_fail(ctx, SL_ERR_FORMAT, "%s: __metadata__ appears twice", label); break; }
            int nm = cJSON_GetArraySize(it);
            f->meta_keys = calloc((size_t)nm + 1, sizeof(char *));
            f->meta_vals = calloc((size_t)nm + 1, sizeof(char *));
            if (!f->meta_keys || !f->meta_vals) { st = sl_fail(ctx, SL_ERR_NOMEM, "%s: out of memory", label); break; }
            const cJSON *m;
            cJSON_ArrayForEach(m, it) {
                if (!cJSON_IsString(m)) {
                    st = sl_fail(ctx, SL_ERR_FORMAT, "%s: __metadata__ value of '%s' is not a string", label, m->string ? m->string : "");
                    break;
                }
                f->meta_keys[f->n_meta] = sl_strdup(m->string ? m->string : "");
                f->meta_vals[f->n_meta] = sl_strdup(m->valuestring);
                f->n_meta++;
            }
            if (st) break;
            continue;
        }
        SlStEntry *e = &f->entries[f->n];
        e->name = sl_strdup(key);
        if (!e->name) { st = sl_fail(ctx, SL_ERR_NOMEM, "%s: out of memory", label); break; }
        f->n++;
        if (!cJSON_IsObject(it)) { st = sl_fail(ctx, SL_ERR_FORMAT, "%s: tensor '%s' is not a JSON object", label, key); break; }
        const cJSON *dt = cJSON_GetObjectItemCaseSensitive(it, "dtype");
        const cJSON *sh = cJSON_GetObjectItemCaseSensitive(it, "shape");
        const cJSON *off = cJSON_GetObjectItemCaseSensitive(it, "data_offsets");
        if (!cJSON_IsString(dt) || !sl_dtype_from_name(dt->valuestring, &e->dtype)) {
            st = sl_fail(ctx, SL_ERR_FORMAT, "%s: tensor '%s' has unknown or missing dtype %s%s%s", label, key,
                         cJSON_IsString(dt) ? "'" : "", cJSON_IsString(dt) ? dt->valuestring : "", cJSON_IsString(dt) ? "'" : "");
            break;
        }
        if (!cJSON_IsArray(sh) || cJSON_GetArraySize(sh) > SL_MAX_DIMS) {
            st = sl_fail(ctx, SL_ERR_FORMAT, "%s: tensor '%s' has a missing or over-%d-dimensional shape", label, key, SL_MAX_DIMS);
            break;
        }
        uint64_t numel = 1;
        int overflow = 0;
        const cJSON *d;
        cJSON_ArrayForEach(d, sh) {
            uint64_t v;
            if (!json_uint(d, &v)) { overflow = -1; break; }
            e->shape[e->ndim++] = (int64_t)v;
            if (v && numel > UINT64_MAX / v) overflow = 1;
            else numel *= v;
        }
        if (overflow < 0) { st = sl_fail(ctx, SL_ERR_FORMAT, "%s: tensor '%s' has a shape entry that is not a non-negative integer", label, key); break; }
        uint64_t esz = sl_dtype_size(e->dtype);
        if (overflow || numel > UINT64_MAX / esz) { st = sl_fail(ctx, SL_ERR_FORMAT, "%s: tensor '%s': shape element count overflows", label, key); break; }
        uint64_t b, en;
        if (!cJSON_IsArray(off) || cJSON_GetArraySize(off) != 2 || !json_uint(cJSON_GetArrayItem(off, 0), &b) ||
            !json_uint(cJSON_GetArrayItem(off, 1), &en) || en < b) {
            st = sl_fail(ctx, SL_ERR_FORMAT, "%s: tensor '%s' has malformed data_offsets", label, key);
            break;
        }
        if (en > data_size) {
            st = sl_fail(ctx, SL_ERR_FORMAT, "%s: tensor '%s' data [%llu,%llu) runs past the end of the data section (%zu bytes; truncated file?)",
                         label, key, (unsigned long long)b, (unsigned long long)en, data_size);
            break;
        }
        if (en - b != numel * esz) {
            char sbuf[128];
            st = sl_fail(ctx, SL_ERR_FORMAT, "%s: tensor '%s' %s %s needs %llu bytes but its range holds %llu", label, key,
                         sl_dtype_name(e->dtype), sl_shape_str(e->ndim, e->shape, sbuf, sizeof sbuf),
                         (unsigned long long)(numel * esz), (unsigned long long)(en - b));
            break;
        }
        e->offset = (size_t)b;
        e->nbytes = (size_t)(en - b);
    }
    cJSON_Delete(root);
    if (st) return st;

    /* duplicates (cJSON keeps repeated keys) */
    qsort(f->entries, (size_t)f->n, sizeof(SlStEntry), entry_cmp_name);
    for (int i = 1; i < f->n; i++)
        if (strcmp(f->entries[i - 1].name, f->entries[i].name) == 0)
            return sl_fail(ctx, SL_ERR_FORMAT, "%s: tensor '%s' appears twice in the header", label, f->entries[i].name);
    /* overlaps (zero-size tensors overlap nothing) */
    if (f->n > 1) {
        const SlStEntry **byoff = malloc((size_t)f->n * sizeof *byoff);
        if (!byoff) return sl_fail(ctx, SL_ERR_NOMEM, "%s: out of memory", label);
        for (int i = 0; i < f->n; i++) byoff[i] = &f->entries[i];
        qsort(byoff, (size_t)f->n, sizeof *byoff, entry_cmp_offset);
        size_t end = 0;
        const SlStEntry *prev = NULL;
        for (int i = 0; i < f->n; i++) {
            if (byoff[i]->nbytes == 0) continue;
            if (prev && byoff[i]->offset < end) {
                st = sl_fail(ctx, SL_ERR_FORMAT, "%s: tensors '%s' and '%s' overlap", label, prev->name, byoff[i]->name);
                break;
            }
            end = byoff[i]->offset + byoff[i]->nbytes;
            prev = byoff[i];
        }
        free(byoff);
    }
    return st;
}

SlStatus sl_st_open_buffer(SlStFile *f, const uint8_t *buf, size_t size, const char *label, SlCtx *ctx) {
    memset(f, 0, sizeof *f);
    f->path = sl_strdup(label ? label : "<buffer>");
    f->map = buf;
    f->map_size = size;
    SlStatus st = st_parse(f, ctx);
    if (st) {
        st_free_fields(f);
        memset(f, 0, sizeof *f);
    }
    return st;
}

SlStatus sl_st_open(SlStFile *f, const char *path, SlCtx *ctx) {
    memset(f, 0, sizeof *f);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return sl_fail(ctx, SL_ERR_IO, "%s: cannot open: %s", path, strerror(errno));
    struct stat sb;
    if (fstat(fd, &sb) != 0 || !S_ISREG(sb.st_mode)) {
        close(fd);
        return sl_fail(ctx, SL_ERR_IO, "%s: not a regular file", path);
    }
    size_t size = (size_t)sb.st_size;
    if (size < 8) {
        close(fd);
        return sl_fail(ctx, SL_ERR_FORMAT, "%s: file is %zu bytes, too short for a safetensors header", path, size);
    }
    void *map = mmap(NULL, size, PROT_READ, MAP_PRIVATE, fd, 0);
    close(fd);
    if (map == MAP_FAILED) return sl_fail(ctx, SL_ERR_IO, "%s: cannot map: %s", path, strerror(errno));
    SlStatus st = sl_st_open_buffer(f, map, size, path, ctx);
    if (st) { munmap(map, size); return st; }
    f->owns_map = 1;
    return SL_OK;
}

void sl_st_close(SlStFile *f) {
    if (!f) return;
    if (f->owns_map && f->map) munmap((void *)f->map, f->map_size);
    st_free_fields(f);
    memset(f, 0, sizeof *f);
}

const SlStEntry *sl_st_find(const SlStFile *f, const char *name) {
    int lo = 0, hi = f->n - 1;
    while (lo <= hi) {
        int mid = (lo + hi) / 2;
        int c = strcmp(f->entries[mid].name, name);
        if (c == 0) return &f->entries[mid];
        if (c < 0) lo = mid + 1;
        else hi = mid - 1;
    }
    return NULL;
}

const void *sl_st_data(const SlStFile *f, const SlStEntry *e) { return f->map + f->data_start + e->offset; }

const char *sl_st_meta(const SlStFile *f, const char *key) {
    for (int i = 0; i < f->n_meta; i++)
        if (strcmp(f->meta_keys[i], key) == 0) return f->meta_vals[i];
    return NULL;
}

SlStatus sl_st_read_f32(const SlStFile *f, const SlStEntry *e, float *dst, SlCtx *ctx) {
    size_t n = (size_t)sl_shape_numel(e->ndim, e->shape);
    if (e->dtype == SL_BOOL)
        return sl_fail(ctx, SL_ERR_SHAPE, "%s: tensor '%s' is BOOL, expected a float tensor", f->path, e->name);
    SlStatus st = sl_convert_to_f32(dst, sl_st_data(f, e), e->dtype, n, ctx);
    if (st) sl_fail_prefix(ctx, "%s: tensor '%s'", f->path, e->name);
    return st;
}

SlStatus sl_st_load_f32(const SlStFile *f, const char *name, int ndim, const int64_t *shape, float *dst,
                        SlCtx *ctx) {
    const SlStEntry *e = sl_st_find(f, name);
    if (!e) return sl_fail(ctx, SL_ERR_MISSING, "%s: tensor '%s' not found", f->path, name);
    int same = e->ndim == ndim;
    for (int i = 0; same && i < ndim; i++) same = e->shape[i] == shape[i];
    if (!same) {
        char a[128], b[128];
        return sl_fail(ctx, SL_ERR_SHAPE, "%s: tensor '%s' has shape %s, expected %s", f->path, name,
                       sl_shape_str(e->ndim, e->shape, a, sizeof a), sl_shape_str(ndim, shape, b, sizeof b));
    }
    return sl_st_read_f32(f, e, dst, ctx);
}

SlStatus sl_st_read_i64(const SlStFile *f, const SlStEntry *e, int64_t *dst, SlCtx *ctx) {
    size_t n = (size_t)sl_shape_numel(e->ndim, e->shape);
    const uint8_t *p = sl_st_data(f, e);
    for (size_t i = 0; i < n; i++) {
        switch (e->dtype) {
        case SL_I64: memcpy(&dst[i], p + 8 * i, 8); break;
        case SL_I32: { int32_t v; memcpy(&v, p + 4 * i, 4); dst[i] = v; } break;
        case SL_I16: { int16_t v; memcpy(&v, p + 2 * i, 2); dst[i] = v; } break;
        case SL_I8: dst[i] = (int8_t)p[i]; break;
        case SL_U8: case SL_BOOL: dst[i] = p[i]; break;
        default:
            return sl_fail(ctx, SL_ERR_SHAPE, "%s: tensor '%s' is %s, expected an integer tensor", f->path, e->name,
                           sl_dtype_name(e->dtype));
        }
    }
    return SL_OK;
}

/* ---- writer ---- */

void sl_st_writer_init(SlStWriter *w) { memset(w, 0, sizeof *w); }

void sl_st_writer_free(SlStWriter *w) {
    for (int i = 0; i < w->n; i++) { free(w->items[i].name); free(w->items[i].owned); }
    free(w->items);
    for (int i = 0; i < w->n_meta; i++) { free(w->meta_keys[i]); free(w->meta_vals[i]); }
    free(w->meta_keys);
    free(w->meta_vals);
    memset(w, 0, sizeof *w);
}

SlStatus sl_st_writer_add(SlStWriter *w, const char *name, SlDType dtype, int ndim, const int64_t *shape,
                          const void *data, SlCtx *ctx) {
    if (ndim < 0 || ndim > SL_MAX_DIMS || (unsigned)dtype >= SL_DTYPE_COUNT)
        return sl_fail(ctx, SL_ERR_ARG, "tensor '%s': bad dtype or rank", name);
    if (strcmp(name, "__metadata__") == 0 || !*name)
        return sl_fail(ctx, SL_ERR_ARG, "tensor name '%s' is reserved or empty", name);
    for (int i = 0; i < w->n; i++)
        if (strcmp(w->items[i].name, name) == 0) return sl_fail(ctx, SL_ERR_ARG, "tensor '%s' added twice", name);
    if (w->n == w->cap) {
        int cap = w->cap ? 2 * w->cap : 64;
        void *p = realloc(w->items, (size_t)cap * sizeof *w->items);
        if (!p) return sl_fail(ctx, SL_ERR_NOMEM, "out of memory adding '%s'", name);
        w->items = p;
        w->cap = cap;
    }
    struct SlStWItem *it = &w->items[w->n];
    memset(it, 0, sizeof *it);
    it->name = sl_strdup(name);
    if (!it->name) return sl_fail(ctx, SL_ERR_NOMEM, "out of memory adding '%s'", name);
    it->dtype = dtype;
    it->ndim = ndim;
    for (int i = 0; i < ndim; i++) {
        if (shape[i] < 0) { free(it->name); return sl_fail(ctx, SL_ERR_ARG, "tensor '%s': negative dimension", name); }
        it->shape[i] = shape[i];
    }
    it->data = data;
    w->n++;
    return SL_OK;
}

SlStatus sl_st_writer_add_f32_as(SlStWriter *w, const char *name, SlDType store, int ndim, const int64_t *shape,
                                 const float *data, SlCtx *ctx) {
    if (store == SL_F32) return sl_st_writer_add(w, name, SL_F32, ndim, shape, data, ctx);
    if (store != SL_F16 && store != SL_BF16)
        return sl_fail(ctx, SL_ERR_ARG, "tensor '%s': cannot store F32 as %s", name, sl_dtype_name(store));
    size_t n = (size_t)sl_shape_numel(ndim, shape);
    uint16_t *buf = malloc(n * 2 + 2);
    if (!buf) return sl_fail(ctx, SL_ERR_NOMEM, "out of memory converting '%s'", name);
    if (store == SL_F16) sl_f32_to_f16(buf, data, n);
    else sl_f32_to_bf16(buf, data, n);
    SlStatus st = sl_st_writer_add(w, name, store, ndim, shape, buf, ctx);
    if (st) { free(buf); return st; }
    w->items[w->n - 1].owned = buf;
    return SL_OK;
}

SlStatus sl_st_writer_meta(SlStWriter *w, const char *key, const char *value, SlCtx *ctx) {
    for (int i = 0; i < w->n_meta; i++)
        if (strcmp(w->meta_keys[i], key) == 0) {
            char *v = sl_strdup(value);
            if (!v) return sl_fail(ctx, SL_ERR_NOMEM, "out of memory");
            free(w->meta_vals[i]);
            w->meta_vals[i] = v;
            return SL_OK;
        }
    if (w->n_meta == w->cap_meta) {
        int cap = w->cap_meta ? 2 * w->cap_meta : 16;
        char **k = realloc(w->meta_keys, (size_t)cap * sizeof(char *));
        if (!k) return sl_fail(ctx, SL_ERR_NOMEM, "out of memory");
        w->meta_keys = k;
        char **v = realloc(w->meta_vals, (size_t)cap * sizeof(char *));
        if (!v) return sl_fail(ctx, SL_ERR_NOMEM, "out of memory");
        w->meta_vals = v;
        w->cap_meta = cap;
    }
    w->meta_keys[w->n_meta] = sl_strdup(key);
    w->meta_vals[w->n_meta] = sl_strdup(value);
    if (!w->meta_keys[w->n_meta] || !w->meta_vals[w->n_meta]) return sl_fail(ctx, SL_ERR_NOMEM, "out of memory");
    w->n_meta++;
    return SL_OK;
}

static int witem_cmp(const void *a, const void *b) {
    return strcmp(((const struct SlStWItem *)a)->name, ((const struct SlStWItem *)b)->name);
}

static int write_all(int fd, const void *buf, size_t n) {
    const uint8_t *p = buf;
    while (n) {
        ssize_t k = write(fd, p, n > (1u << 30) ? (1u << 30) : n);
        if (k < 0) { if (errno == EINTR) continue; return -1; }
        p += k;
        n -= (size_t)k;
    }
    return 0;
}

SlStatus sl_st_writer_save(SlStWriter *w, const char *path, SlCtx *ctx) {
    SL_TRY(sl_path_check_writable(NULL, path, ctx)); /* the rename would replace a FIFO or device */
    qsort(w->items, (size_t)w->n, sizeof *w->items, witem_cmp);
    cJSON *root = cJSON_CreateObject();
    if (!root) return sl_fail(ctx, SL_ERR_NOMEM, "%s: out of memory", path);
    if (w->n_meta) {
        cJSON *m = cJSON_AddObjectToObject(root, "__metadata__");
        for (int i = 0; m && i < w->n_meta; i++) cJSON_AddStringToObject(m, w->meta_keys[i], w->meta_vals[i]);
    }
    size_t off = 0;
    for (int i = 0; i < w->n; i++) {
        struct SlStWItem *it = &w->items[i];
        size_t nb = (size_t)sl_shape_numel(it->ndim, it->shape) * sl_dtype_size(it->dtype);
        cJSON *t = cJSON_AddObjectToObject(root, it->name);
        if (!t) { cJSON_Delete(root); return sl_fail(ctx, SL_ERR_NOMEM, "%s: out of memory", path); }
        cJSON_AddStringToObject(t, "dtype", sl_dtype_name(it->dtype));
        cJSON *sh = cJSON_AddArrayToObject(t, "shape");
        for (int d = 0; d < it->ndim; d++) cJSON_AddItemToArray(sh, cJSON_CreateNumber((double)it->shape[d]));
        cJSON *of = cJSON_AddArrayToObject(t, "data_offsets");
        cJSON_AddItemToArray(of, cJSON_CreateNumber((double)off));
        cJSON_AddItemToArray(of, cJSON_CreateNumber((double)(off + nb)));
        off += nb;
    }
    char *json = cJSON_PrintUnformatted(root);
    cJSON_Delete(root);
    if (!json) return sl_fail(ctx, SL_ERR_NOMEM, "%s: out of memory", path);
    size_t jlen = strlen(json), padded = (jlen + 7) & ~(size_t)7;
    uint8_t hdr[8];
    for (int i = 0; i < 8; i++) hdr[i] = (uint8_t)((uint64_t)padded >> (8 * i));

    char tmp[4096];
    snprintf(tmp, sizeof tmp, "%s.tmp.%ld", path, (long)getpid());
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0) { free(json); return sl_fail(ctx, SL_ERR_IO, "%s: cannot create: %s", tmp, strerror(errno)); }
    int bad = write_all(fd, hdr, 8) || write_all(fd, json, jlen) || write_all(fd, "        ", padded - jlen);
    free(json);
    for (int i = 0; !bad && i < w->n; i++) {
        struct SlStWItem *it = &w->items[i];
        size_t nb = (size_t)sl_shape_numel(it->ndim, it->shape) * sl_dtype_size(it->dtype);
        if (nb) bad = write_all(fd, it->owned ? it->owned : it->data, nb);
    }
    if (!bad) bad = fsync(fd);
    int err = errno;
    if (close(fd) != 0 && !bad) { bad = 1; err = errno; }
    if (bad) {
        unlink(tmp);
        return sl_fail(ctx, SL_ERR_IO, "%s: write failed: %s (previous file left intact)", path, strerror(err));
    }
    if (rename(tmp, path) != 0) {
        err = errno;
        unlink(tmp);
        return sl_fail(ctx, SL_ERR_IO, "%s: cannot rename into place: %s", path, strerror(err));
    }
    /* make the rename durable */
    char dirbuf[4096];
    snprintf(dirbuf, sizeof dirbuf, "%s", path);
    int dfd = open(dirname(dirbuf), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dfd >= 0) { fsync(dfd); close(dfd); }
    return SL_OK;
}
