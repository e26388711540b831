/* train_resume.c - what a training run checks and cleans so that --resume is
 * safe: content hashes of the data folder and of the base weights (recorded in
 * the state file, compared on resume; train.c), and the temporary files that
 * killed runs left behind. See train.h. */
#include "pipeline/train.h"

#include <dirent.h>
#include <errno.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/hash.h"

SlStatus sl_train_data_hash(const SlDataset *data, uint64_t *out, SlCtx *ctx) {
    uint64_t h = SL_FNV1A64_OFFSET;
    for (int i = 0; i < data->n; i++) {
        const SlDataItem *it = &data->items[i];
        uint64_t fh = 0;
        SlCtx fctx;
        sl_ctx_init(&fctx);
        /* an unreadable image (skipped by the run) counts by its name: it has no bytes */
        if (sl_file_hash(it->path, 0, &fh, &fctx) != SL_OK) {
            const char *name = strrchr(it->path, '/');
            fh = sl_hash_bytes(name ? name : it->path, strlen(name ? name : it->path), 1);
        }
        h = sl_hash_bytes(&fh, sizeof fh, h);
        h = sl_hash_bytes(it->caption, strlen(it->caption) + 1, h); /* (+1: "ab","c" != "a","bc") */
        h = sl_hash_bytes(&it->repeats, sizeof it->repeats, h);
    }
    (void)ctx;
    *out = h;
    return SL_OK;
}

/* Files at or under this size are hashed whole; larger ones are sampled. */
#define FULL_HASH_MAX ((int64_t)64 << 20)
#define SAMPLE_CHUNKS 256
#define SAMPLE_BYTES 4096

/* One weight file: its size, its safetensors header (names, dtypes, shapes,
 * offsets, metadata) and its bytes: all of them up to FULL_HASH_MAX, beyond
 * that SAMPLE_CHUNKS chunks of SAMPLE_BYTES spread evenly over the file. The
 * sample cannot see every edit of a multi-GB checkpoint, but a different model,
 * a fine-tune or a re-export changes the header or the sampled bytes. */
static SlStatus weight_file_hash(const char *path, uint64_t *h, SlCtx *ctx) {
    FILE *f = fopen(path, "rb");
    if (!f) return sl_fail(ctx, SL_ERR_IO, "%s: cannot open: %s", path, strerror(errno));
    struct stat sb;
    if (fstat(fileno(f), &sb) != 0) {
        fclose(f);
        return sl_fail(ctx, SL_ERR_IO, "%s: cannot stat: %s", path, strerror(errno));
    }
    const int64_t size = (int64_t)sb.st_size;
    *h = sl_hash_bytes(&size, sizeof size, *h);
    uint8_t *buf = malloc(65536);
    if (!buf) {
        fclose(f);
        return sl_fail(ctx, SL_ERR_NOMEM, "out of memory");
    }
    size_t k;
    int bad = 0;
    if (size <= FULL_HASH_MAX) {
        while ((k = fread(buf, 1, 65536, f)) > 0) *h = sl_hash_bytes(buf, k, *h);
        bad = ferror(f);
    } else {
        uint64_t hlen = 0; /* the header: 8-byte little-endian length, then JSON */
        uint8_t len8[8];
        bad = fread(len8, 1, 8, f) != 8;
        for (int i = 0; i < 8 && !bad; i++) hlen |= (uint64_t)len8[i] << (8 * i);
        if (!bad && hlen > (uint64_t)size - 8) bad = 1;
        for (uint64_t left = hlen; !bad && left > 0; left -= k) {
            k = fread(buf, 1, left < 65536 ? (size_t)left : 65536, f);
            if (!k) bad = 1;
            *h = sl_hash_bytes(buf, k, *h);
        }
        const int64_t stride = size / SAMPLE_CHUNKS;
        for (int c = 0; c < SAMPLE_CHUNKS && !bad; c++) {
            bad = fseeko(f, (off_t)(c * stride), SEEK_SET) != 0;
            k = bad ? 0 : fread(buf, 1, SAMPLE_BYTES, f);
            *h = sl_hash_bytes(buf, k, *h);
        }
    }
    free(buf);
    fclose(f);
    if (bad) return sl_fail(ctx, SL_ERR_IO, "%s: read error (or not a safetensors file)", path);
    return SL_OK;
}

static int cmp_str(const void *a, const void *b) { return strcmp(*(char *const *)a, *(char *const *)b); }

/* Hashes dir/part/ *.safetensors in name order (the weights of one component). */
static SlStatus part_hash(const char *dir, const char *part, uint64_t *h, int *n_files, SlCtx *ctx) {
    char sub[4096];
    snprintf(sub, sizeof sub, "%s/%s", dir, part);
    DIR *d = opendir(sub);
    if (!d) return SL_OK; /* a model without this part (the loader says if it needed it) */
    char *names[512];
    int n = 0;
    struct dirent *e;
    while ((e = readdir(d)) && n < 512) {
        size_t l = strlen(e->d_name);
        if (l > 12 && !strcmp(e->d_name + l - 12, ".safetensors") && (names[n] = strdup(e->d_name))) n++;
    }
    closedir(d);
    qsort(names, (size_t)n, sizeof *names, cmp_str);
    SlStatus st = SL_OK;
    for (int i = 0; i < n; i++) {
        char p[4400];
        snprintf(p, sizeof p, "%s/%s", sub, names[i]);
        *h = sl_hash_bytes(part, strlen(part) + 1, *h);
        *h = sl_hash_bytes(names[i], strlen(names[i]) + 1, *h);
        if (!st) st = weight_file_hash(p, h, ctx);
        free(names[i]);
    }
    *n_files += n;
    return st;
}

SlStatus sl_train_model_hash(const char *path, uint64_t *out, SlCtx *ctx) {
    uint64_t h = SL_FNV1A64_OFFSET;
    int n = 0;
    if (sl_path_is_file(path)) { /* a single-file checkpoint */
        SL_TRY(weight_file_hash(path, &h, ctx));
        n = 1;
    } else {
        static const char *const parts[] = {"unet", "vae", "text_encoder", "text_encoder_2"};
        for (int i = 0; i < 4; i++) SL_TRY(part_hash(path, parts[i], &h, &n, ctx));
    }
    if (!n) return sl_fail(ctx, SL_ERR_MISSING, "%s: no weight files (.safetensors) to fingerprint", path);
    *out = h;
    return SL_OK;
}

/* ---- temporary files of dead processes ---- */

/* The pid of name = stem + sep + digits, or 0. */
static long tail_pid(const char *name, const char *stem, size_t stem_len, const char *sep) {
    const size_t sl = strlen(sep);
    if (strncmp(name, stem, stem_len) || strncmp(name + stem_len, sep, sl)) return 0;
    const char *d = name + stem_len + sl;
    if (!*d) return 0;
    for (const char *p = d; *p; p++)
        if (*p < '0' || *p > '9') return 0;
    return strtol(d, NULL, 10);
}

/* The cache writes lat_<hash>_<n>.safetensors and te_<hash>.safetensors. */
static long cache_tmp_pid(const char *name) {
    if (strncmp(name, "lat_", 4) && strncmp(name, "te_", 3)) return 0;
    const char *t = strstr(name, ".safetensors.tmp.");
    return t ? tail_pid(name, name, (size_t)(t - name), ".safetensors.tmp.") : 0;
}

/* 1 if no process has this pid (kill(pid, 0) fails with ESRCH). A live process of
 * another user (EPERM) is alive; our own pid is not stale. */
static int pid_dead(long pid) {
    if (pid <= 0 || pid == (long)getpid()) return 0;
    return kill((pid_t)pid, 0) != 0 && errno == ESRCH;
}

/* Removes in dir every regular file that `match` attributes to a dead pid. */
static int clean_dir(const char *dir, const char *const *stems, const char *const *seps, int n_stems, int cache,
                     SlCtx *ctx) {
    DIR *d = opendir(dir);
    if (!d) return 0;
    int removed = 0;
    struct dirent *e;
    while ((e = readdir(d))) {
        long pid = cache ? cache_tmp_pid(e->d_name) : 0;
        for (int i = 0; !pid && i < n_stems; i++) pid = tail_pid(e->d_name, stems[i], strlen(stems[i]), seps[i]);
        if (!pid_dead(pid)) continue;
        char p[4400];
        struct stat sb;
        snprintf(p, sizeof p, "%s/%s", dir, e->d_name);
        if (lstat(p, &sb) != 0 || !S_ISREG(sb.st_mode)) continue;
        if (unlink(p) == 0) {
            removed++;
            sl_log(ctx, SL_LOG_INFO, "removed %s, left by a run that ended (process %ld)", p, pid);
        }
    }
    closedir(d);
    return removed;
}

/* dir and base name of a path ("a/b.x" -> "a", "b.x"; "b.x" -> ".", "b.x") */
static void split_path(const char *path, char *dir, size_t n, const char **base) {
    const char *slash = strrchr(path, '/');
    if (slash) snprintf(dir, n, "%.*s", (int)(slash - path), path);
    else snprintf(dir, n, ".");
    if (slash && slash == path) snprintf(dir, n, "/");
    *base = slash ? slash + 1 : path;
}

int sl_train_clean_stale_tmp(const SlTrainConfig *c, SlCtx *ctx) {
    char dir[4096], log[4200];
    const char *base;
    int removed = 0;
    /* the adapter, the state file, the report (<out>.html, pipeline/report.c) and the write
     * probe (train.c) beside --out */
    split_path(c->out, dir, sizeof dir, &base);
    char state_base[4200], html_base[4200];
    snprintf(state_base, sizeof state_base, "%s.state", base);
    snprintf(html_base, sizeof html_base, "%s.html", base);
    const char *stems[4] = {base, state_base, html_base, ".stylora-write-test"};
    const char *seps[4] = {".tmp.", ".tmp.", ".tmp.", "."};
    removed += clean_dir(dir, stems, seps, 4, 0, ctx);
    /* the CSV log's cut-back copy (train_run.c) beside the log */
    if (c->log_csv) snprintf(log, sizeof log, "%s", c->log_csv);
    else snprintf(log, sizeof log, "%s.csv", c->out);
    split_path(log, dir, sizeof dir, &base);
    const char *lstems[1] = {base};
    const char *lseps[1] = {".tmp."};
    removed += clean_dir(dir, lstems, lseps, 1, 0, ctx);
    if (c->cache_dir) removed += clean_dir(c->cache_dir, NULL, NULL, 0, 1, ctx);
    return removed;
}
