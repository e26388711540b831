/* outpath.c - output path checks (see outpath.h). */
#include "outpath.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static const char *kind_name(mode_t m) {
    if (S_ISDIR(m)) return "directory";
    if (S_ISCHR(m)) return "character device";
    if (S_ISBLK(m)) return "block device";
    if (S_ISFIFO(m)) return "FIFO";
    if (S_ISSOCK(m)) return "socket";
    if (S_ISREG(m)) return "regular file";
    return "special file";
}

/* "<what> <path>" or "<path>" (what NULL), for the messages. */
static const char *label(char *buf, size_t n, const char *what, const char *path) {
    snprintf(buf, n, "%s%s%s", what ? what : "", what ? " " : "", path);
    return buf;
}

/* The parent of a new path must be an existing folder we may create entries in. */
static SlStatus check_parent(const char *lab, const char *path, SlCtx *ctx) {
    char dir[4096];
    size_t len = strlen(path);
    if (len >= sizeof dir) return sl_fail(ctx, SL_ERR_ARG, "%s: path is too long", lab);
    memcpy(dir, path, len + 1);
    while (len > 1 && dir[len - 1] == '/') dir[--len] = '\0'; /* "out/" -> "out" */
    char *slash = strrchr(dir, '/');
    if (!slash) snprintf(dir, sizeof dir, ".");
    else if (slash == dir) dir[1] = '\0'; /* "/x" -> "/" */
    else *slash = '\0';
    struct stat sb;
    if (stat(dir, &sb) != 0)
        return sl_fail(ctx, SL_ERR_IO, "%s: folder %s does not exist (%s)", lab, dir, strerror(errno));
    if (!S_ISDIR(sb.st_mode)) return sl_fail(ctx, SL_ERR_IO, "%s: %s is not a folder (%s)", lab, dir, kind_name(sb.st_mode));
    if (access(dir, W_OK | X_OK) != 0)
        return sl_fail(ctx, SL_ERR_IO, "%s: cannot write into folder %s: %s", lab, dir, strerror(errno));
    return SL_OK;
}

SlStatus sl_path_check_writable(const char *what, const char *path, SlCtx *ctx) {
    char lab[4200];
    if (!path || !*path)
        return sl_fail(ctx, SL_ERR_ARG, "%s: empty path; give a file name", what ? what : "output path");
    label(lab, sizeof lab, what, path);
    if (path[strlen(path) - 1] == '/') return sl_fail(ctx, SL_ERR_ARG, "%s: ends with '/'; give a file name", lab);
    struct stat sb;
    if (stat(path, &sb) == 0) { /* follows symlinks: what a write would reach */
        if (!S_ISREG(sb.st_mode))
            return sl_fail(ctx, SL_ERR_IO, "%s: not a regular file (%s); refusing to replace it", lab, kind_name(sb.st_mode));
        return check_parent(lab, path, ctx); /* tmp + rename needs the folder */
    }
    /* ENOTDIR: a parent is not a folder, which check_parent names */
    if (errno != ENOENT && errno != ENOTDIR) return sl_fail(ctx, SL_ERR_IO, "%s: %s", lab, strerror(errno));
    return check_parent(lab, path, ctx);
}

SlStatus sl_path_check_writable_dir(const char *what, const char *path, SlCtx *ctx) {
    char lab[4200];
    if (!path || !*path)
        return sl_fail(ctx, SL_ERR_ARG, "%s: empty path; give a folder name", what ? what : "output folder");
    label(lab, sizeof lab, what, path);
    struct stat sb;
    if (stat(path, &sb) == 0) {
        if (!S_ISDIR(sb.st_mode)) return sl_fail(ctx, SL_ERR_IO, "%s: not a folder (%s)", lab, kind_name(sb.st_mode));
        if (access(path, W_OK | X_OK) != 0)
            return sl_fail(ctx, SL_ERR_IO, "%s: cannot write into this folder: %s", lab, strerror(errno));
        return SL_OK;
    }
    /* ENOTDIR: a parent is not a folder, which check_parent names */
    if (errno != ENOENT && errno != ENOTDIR) return sl_fail(ctx, SL_ERR_IO, "%s: %s", lab, strerror(errno));
    return check_parent(lab, path, ctx);
}
