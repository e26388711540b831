/* file.c - whole-file reads; see file.h. */
#include "file.h"

#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

SlStatus sl_read_file(const char *path, size_t max_bytes, char **out, size_t *len, SlCtx *ctx) {
    *out = NULL;
    if (len) *len = 0;
    FILE *f = fopen(path, "rb");
    if (!f) return sl_fail(ctx, SL_ERR_IO, "%s: cannot open: %s", path, strerror(errno));
    struct stat sb;
    if (fstat(fileno(f), &sb) != 0 || !S_ISREG(sb.st_mode)) {
        fclose(f);
        return sl_fail(ctx, SL_ERR_IO, "%s: not a regular file", path);
    }
    if ((uint64_t)sb.st_size > (uint64_t)max_bytes) {
        fclose(f);
        return sl_fail(ctx, SL_ERR_FORMAT, "%s: %lld bytes is over the %zu-byte limit for this kind of file", path,
                       (long long)sb.st_size, max_bytes);
    }
    size_t n = (size_t)sb.st_size;
    char *buf = malloc(n + 1);
    if (!buf) {
        fclose(f);
        return sl_fail(ctx, SL_ERR_NOMEM, "%s: cannot allocate %zu bytes to read it", path, n + 1);
    }
    size_t got = fread(buf, 1, n, f);
    int err = ferror(f) ? errno : 0;
    fclose(f);
    if (err || got != n) {
        free(buf);
        if (err) return sl_fail(ctx, SL_ERR_IO, "%s: read error: %s", path, strerror(err));
        return sl_fail(ctx, SL_ERR_IO, "%s: read error: %zu of %zu bytes (the file shrank while being read?)", path,
                       got, n);
    }
    buf[n] = '\0';
    *out = buf;
    if (len) *len = n;
    return SL_OK;
}
