/* train_resume.c - what a training run cleans so that --resume is safe: the
 * temporary files that killed runs left behind. See train.h. */
#include "pipeline/train.h"

#include <dirent.h>
#include <errno.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

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
    /* the adapter, the state file and the write probe (train.c) beside --out */
    split_path(c->out, dir, sizeof dir, &base);
    char state_base[4200];
    snprintf(state_base, sizeof state_base, "%s.state", base);
    const char *stems[3] = {base, state_base, ".stylora-write-test"};
    const char *seps[3] = {".tmp.", ".tmp.", "."};
    removed += clean_dir(dir, stems, seps, 3, 0, ctx);
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
