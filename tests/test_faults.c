/* test_faults.c - `stylora train` (the real program, $SL_STYLORA) under faults,
 * on the tiny golden model with the fixture tokenizer and four 32x32 images:
 *
 *   kill -9  at seeded random moments (checkpoint every step), each time
 *            followed by --resume: after every kill the adapter file is absent
 *            or a complete file (`stylora inspect` exits 0) and the state file
 *            opens; the run that finally completes writes the same bytes as
 *            an uninterrupted run; its CSV log has each step once, and no temp
 *            file of a killed save is left (the next run removes them).
 *   SIGINT   during training: exit 130 with a checkpoint, and --resume ends
 *            with the same bytes; SIGINT at the very last step exits 0 with
 *            the final adapter.
 *   disk full (a small tmpfs, when this process may mount; else RLIMIT_FSIZE
 *            on the child, so write() fails with EFBIG; SIGXFSZ ignored): the
 *            save fails with a one-line error, exit 1, and the previous
 *            adapter and state files are left complete, no temp file behind.
 *   read-only output: a file where the output folder should be (ENOTDIR),
 *            and, when mounting works, a read-only tmpfs (root ignores chmod):
 *            an error before the first training step.
 *   resume with other inputs: another data folder is refused naming it, and
 *            --resume-anyway continues.
 * Mounts are undone at the end. Each check prints what it saw.
 */
#include <errno.h>
#include <fcntl.h>
#include <dirent.h>
#include <signal.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "core/config.h"
#include "core/safetensors.h"
#include "fixture_tiny.h"
#include "pipeline/train.h"
#include "test_util.h"

#define STEPS "8"

static const char *g_steps = STEPS; /* --steps of the next spawn */
static char g_root[2048], g_model[2200], g_data[2200], g_bin[2048];
static int g_mounted_full, g_mounted_ro;
static char g_full[2200], g_ro[2200];

static double now_s(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + 1e-9 * t.tv_nsec;
}

static uint64_t g_rng = 0x9E3779B97F4A7C15ull; /* xorshift64*, fixed seed: the kill moments repeat */
static double rnd01(void) {
    g_rng ^= g_rng >> 12;
    g_rng ^= g_rng << 25;
    g_rng ^= g_rng >> 27;
    return (double)((g_rng * 2685821657736338717ull) >> 11) / 9007199254740992.0;
}

/* Starts `stylora train` with the common settings plus extra args (NULL-terminated);
 * stdout/stderr go to errpath. fsize > 0 sets RLIMIT_FSIZE in the child. */
static pid_t spawn_train(const char *out, const char *errpath, long fsize, const char *const *extra) {
    const char *argv[64];
    int n = 0;
    const char *base[] = {g_bin, "train", "--model", g_model, "--data", g_data, "--out", out, "--steps", g_steps,
                          "--batch", "2", "--rank", "4", "--alpha", "8", "--resolution", "32", "--seed", "7",
                          "--lr", "1e-2", "--threads", "1", "--quiet", NULL};
    for (int i = 0; base[i]; i++) argv[n++] = base[i];
    for (int i = 0; extra && extra[i]; i++) argv[n++] = extra[i];
    argv[n] = NULL;
    pid_t pid = fork();
    if (pid == 0) {
        int fd = open(errpath, O_WRONLY | O_CREAT | O_TRUNC, 0644);
        if (fd >= 0) {
            dup2(fd, 1);
            dup2(fd, 2);
            close(fd);
        }
        if (fsize > 0) {
            struct rlimit rl = {(rlim_t)fsize, (rlim_t)fsize};
            setrlimit(RLIMIT_FSIZE, &rl);
            signal(SIGXFSZ, SIG_IGN); /* write() then fails with EFBIG instead of killing us */
        }
        setenv("OMP_WAIT_POLICY", "passive", 1);
        execv(g_bin, (char *const *)argv);
        _exit(127);
    }
    return pid;
}

static int wait_rc(pid_t pid, int *sig) {
    int status = 0;
    while (waitpid(pid, &status, 0) < 0 && errno == EINTR) {}
    *sig = WIFSIGNALED(status) ? WTERMSIG(status) : 0;
    return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

static int run_train(const char *out, const char *errpath, long fsize, const char *const *extra, int *sig) {
    return wait_rc(spawn_train(out, errpath, fsize, extra), sig);
}

static char *slurp(const char *path, size_t *n) {
    SlCtx ctx;
    sl_ctx_init(&ctx);
    char *buf = NULL;
    *n = 0;
    if (sl_read_file(path, 1u << 30, &buf, n, &ctx) != SL_OK) return NULL;
    return buf;
}

static int same_file(const char *a, const char *b) {
    size_t na, nb;
    char *x = slurp(a, &na), *y = slurp(b, &nb);
    int same = x && y && na == nb && memcmp(x, y, na) == 0;
    free(x);
    free(y);
    return same;
}

static int exists(const char *p) {
    struct stat st;
    return stat(p, &st) == 0;
}

/* `stylora inspect path` exits 0 (a complete, valid file). */
static int inspect_ok(const char *path) {
    pid_t pid = fork();
    if (pid == 0) {
        int fd = open("/dev/null", O_WRONLY);
        dup2(fd, 1);
        dup2(fd, 2);
        execl(g_bin, g_bin, "inspect", path, (char *)NULL);
        _exit(127);
    }
    int sig;
    return wait_rc(pid, &sig) == 0;
}

/* The state file opens as valid safetensors; returns its step or -1. */
static long state_step(const char *state) {
    SlCtx ctx;
    sl_ctx_init(&ctx);
    SlStFile f;
    if (sl_st_open(&f, state, &ctx) != SL_OK) return -1;
    const char *s = sl_st_meta(&f, "stylora.step");
    long step = s ? atol(s) : -1;
    sl_st_close(&f);
    return step;
}

/* Counts (and removes, naming them) files in dir whose name starts with prefix and
 * holds ".tmp."; pid_only: only those ending ".tmp.<digits>" count (the PNG writer's
 * mkstemp names carry no pid: nothing can tell whether their writer is alive). */
static int count_tmp(const char *dir, const char *prefix, int pid_only) {
    DIR *d = opendir(dir);
    int n = 0;
    if (!d) return 0;
    struct dirent *e;
    while ((e = readdir(d)))
        if (!strncmp(e->d_name, prefix, strlen(prefix)) && strstr(e->d_name, ".tmp.")) {
            char p[4400];
            snprintf(p, sizeof p, "%s/%s", dir, e->d_name);
            unlink(p);
            const char *t = strstr(e->d_name, ".tmp.") + 5;
            int pid_named = *t != 0;
            for (; *t; t++) pid_named &= *t >= '0' && *t <= '9';
            fprintf(stderr, "temp file left: %s\n", e->d_name);
            n += !pid_only || pid_named;
        }
    closedir(d);
    return n;
}

static void print_file(const char *path) {
    size_t n;
    char *b = slurp(path, &n);
    if (b) fprintf(stderr, "---- %s:\n%s----\n", path, b);
    free(b);
}

static double g_ref_time;
static char g_ref[2300];

static void test_reference(void) {
    snprintf(g_ref, sizeof g_ref, "%s/ref.safetensors", g_root);
    char err[2300];
    snprintf(err, sizeof err, "%s/ref.log", g_root);
    const char *extra[] = {"--save-every", "1", NULL};
    double t0 = now_s();
    int sig, rc = run_train(g_ref, err, 0, extra, &sig);
    g_ref_time = now_s() - t0;
    CHECK(rc == 0, "reference run: rc %d signal %d", rc, sig);
    if (rc) print_file(err);
    printf("reference: %s steps in %.2f s\n", STEPS, g_ref_time);
}

static void test_kill9(void) {
    char out[2300], state[2400], err[2300];
    snprintf(out, sizeof out, "%s/k9.safetensors", g_root);
    sl_trainer_state_path(state, sizeof state, out);
    snprintf(err, sizeof err, "%s/k9.log", g_root);
    int kills = 0, with_state = 0, torn = 0, done = 0;
    long last_step = 0;
    /* Under load (ctest -j2 beside other heavy tests) a run can be slower than the reference
     * run was: a round that made no progress widens the window, so the loop still ends. */
    double stretch = 1.0;
    for (int round = 0; round < 40 && !done; round++) {
        int has_state = exists(state);
        const char *ex_resume[] = {"--save-every", "1", "--resume", NULL};
        const char *ex_fresh[] = {"--save-every", "1", NULL};
        pid_t pid = spawn_train(out, err, 0, has_state ? ex_resume : ex_fresh);
        /* a kill moment in (0.03, 0.48) of a whole run: during loading, steps and saves */
        double delay = g_ref_time * stretch * (0.03 + 0.45 * rnd01()), t0 = now_s();
        int status = 0, finished = 0;
        while (now_s() - t0 < delay) {
            pid_t r = waitpid(pid, &status, WNOHANG);
            if (r == pid) {
                finished = 1;
                break;
            }
            usleep(5000);
        }
        if (finished) {
            int rc = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
            CHECK(rc == 0, "kill -9 round %d: the run ended by itself with rc %d", round, rc);
            if (rc) print_file(err);
            done = 1;
            break;
        }
        kill(pid, SIGKILL);
        int sig;
        wait_rc(pid, &sig);
        kills++;
        if (exists(out) && !inspect_ok(out)) torn++;
        long before = last_step;
        if (exists(state)) {
            long s = state_step(state);
            CHECK(s >= last_step, "kill -9 round %d: state step went back %ld -> %ld (or the file is torn)", round, last_step, s);
            if (s > 0) with_state++;
            if (s > last_step) last_step = s;
        }
        if (last_step == before && stretch < 16.0) stretch *= 1.4;
    }
    CHECK(done, "kill -9: the run never completed after %d kills", kills);
    CHECK(torn == 0, "kill -9: %d times the adapter file was torn (stylora inspect failed)", torn);
    CHECK(same_file(g_ref, out), "kill -9: the final adapter differs from the uninterrupted run's");
    int left = count_tmp(g_root, "k9.safetensors", 1);
    CHECK(left == 0, "kill -9: %d temp files of killed runs left after the run that completed", left);
    /* the log: rows 1..STEPS, each once, in order (a resume cuts back what a killed run logged past its checkpoint) */
    char csv[2400];
    snprintf(csv, sizeof csv, "%s.csv", out);
    size_t n = 0;
    char *log = slurp(csv, &n);
    long expect = 1;
    int rows_ok = log != NULL;
    for (char *line = log ? strchr(log, '\n') : NULL; rows_ok && line && line[1]; line = strchr(line + 1, '\n'))
        rows_ok = atol(line + 1) == expect++;
    CHECK(rows_ok && expect == atol(STEPS) + 1, "kill -9: the CSV log does not have steps 1..%s once each (at step %ld):\n%s",
          STEPS, expect - 1, log ? log : "(none)");
    free(log);
    printf("kill -9: %d kills (%d with a checkpoint on disk, last step %ld), final adapter %s the reference; "
           "%d orphaned temp files of killed saves\n",
           kills, with_state, last_step, same_file(g_ref, out) ? "equals" : "DIFFERS from", left);
}

static void test_sigint(void) {
    char out[2300], state[2400], err[2300];
    snprintf(out, sizeof out, "%s/int.safetensors", g_root);
    sl_trainer_state_path(state, sizeof state, out);
    snprintf(err, sizeof err, "%s/int.log", g_root);
    /* SIGINT before the handler is installed (model loading) kills the process as
     * usual; wait longer each time until one lands inside the training loop. */
    double frac = 0.5;
    int got130 = 0;
    for (int tries = 0; tries < 12 && !got130; tries++) {
        unlink(out);
        unlink(state);
        pid_t pid = spawn_train(out, err, 0, NULL);
        double t0 = now_s();
        int status = 0, finished = 0;
        while (now_s() - t0 < frac * g_ref_time) {
            if (waitpid(pid, &status, WNOHANG) == pid) {
                finished = 1;
                break;
            }
            usleep(5000);
        }
        if (finished) { /* too late: try earlier */
            frac *= 0.6;
            continue;
        }
        kill(pid, SIGINT);
        int sig, rc = wait_rc(pid, &sig);
        if (rc == 130) {
            got130 = 1;
        } else if (sig == SIGINT) {
            frac = frac * 1.3 > 0.95 ? 0.95 : frac * 1.3; /* still loading: later */
        } else if (rc == 0) {
            frac *= 0.6;
        } else {
            CHECK(0, "SIGINT: rc %d signal %d", rc, sig);
            print_file(err);
            return;
        }
    }
    CHECK(got130, "SIGINT never landed inside the training loop");
    if (!got130) return;
    long s = state_step(state);
    CHECK(s >= 1 && s < atol(STEPS), "SIGINT: checkpoint step %ld", s);
    CHECK(inspect_ok(out), "SIGINT: the adapter written on Ctrl-C is not a valid file");
    size_t n;
    char *log = slurp(err, &n);
    CHECK(log && strstr(log, "--resume"), "SIGINT: message does not say how to continue: %s", log ? log : "");
    free(log);
    const char *ex[] = {"--resume", NULL};
    int sig, rc = run_train(out, err, 0, ex, &sig);
    CHECK(rc == 0, "SIGINT: --resume rc %d", rc);
    CHECK(same_file(g_ref, out), "SIGINT: the resumed adapter differs from the uninterrupted run's");
    printf("SIGINT: exit 130 at step %ld, --resume ends with the reference bytes\n", s);
}

/* With --steps 1 every SIGINT that reaches the training loop lands in the last
 * step: the run must finish normally (exit 0, final adapter written), not exit
 * 130 claiming a checkpoint it never wrote. */
static void test_sigint_last_step(void) {
    char out[2300], err[2300];
    snprintf(out, sizeof out, "%s/last.safetensors", g_root);
    snprintf(err, sizeof err, "%s/last.log", g_root);
    g_steps = "1";
    double frac = 0.02; /* of a whole STEPS-step run */
    int landed = 0;
    for (int tries = 0; tries < 15 && !landed; tries++) {
        unlink(out);
        pid_t pid = spawn_train(out, err, 0, NULL);
        double t0 = now_s();
        int status = 0, finished = 0;
        while (now_s() - t0 < frac * g_ref_time) {
            if (waitpid(pid, &status, WNOHANG) == pid) {
                finished = 1;
                break;
            }
            usleep(2000);
        }
        if (finished) {
            frac *= 0.7;
            continue;
        }
        kill(pid, SIGINT);
        int sig, rc = wait_rc(pid, &sig);
        if (sig == SIGINT) {
            frac *= 1.25; /* still loading */
            continue;
        }
        landed = 1;
        CHECK(rc == 0 && inspect_ok(out), "SIGINT in the last step: rc %d, adapter %s", rc,
              exists(out) ? "present" : "MISSING");
        if (rc) print_file(err);
        printf("SIGINT in the last step: rc %d, final adapter %s\n", rc, exists(out) ? "written" : "missing");
    }
    if (!landed) printf("SIGINT in the last step: never landed in the loop in 15 tries (timing), not checked\n");
    g_steps = STEPS;
}

/* Disk full during a checkpoint. */
static void test_disk_full(void) {
    char ref_state[2400];
    sl_trainer_state_path(ref_state, sizeof ref_state, g_ref);
    struct stat sa, ss;
    if (stat(g_ref, &sa) || stat(ref_state, &ss)) {
        CHECK(0, "disk full: reference files missing");
        return;
    }
    long A = (long)sa.st_size, S = (long)ss.st_size;
    char dir[2300], out[2400], state[2500], err[2300], csv[2300];
    snprintf(err, sizeof err, "%s/full.log", g_root);
    snprintf(csv, sizeof csv, "%s/full.csv", g_root);
    const char *how;
    long fsize = 0;
    char cmd[4600];
    snprintf(g_full, sizeof g_full, "%s/tmpfs_full", g_root);
    mkdir(g_full, 0755);
    /* Room for the first checkpoint (A + S) and half of the next adapter's temp file:
     * the first save succeeds, the second runs out of space. Pages are 4 KiB. */
    long pg = 4096, cap = ((A + pg - 1) / pg + (S + pg - 1) / pg) * pg + (A / 2 / pg) * pg + 2 * pg;
    snprintf(cmd, sizeof cmd, "mount -t tmpfs -o size=%ld tmpfs '%s' 2>/dev/null", cap, g_full);
    if (geteuid() == 0 && system(cmd) == 0) {
        g_mounted_full = 1;
        how = "a tmpfs of exactly the room for one checkpoint";
        snprintf(dir, sizeof dir, "%s", g_full);
    } else {
        /* no mount: RLIMIT_FSIZE below the state file's size; the adapter (smaller)
         * is written first, then the state file fails with EFBIG */
        how = "RLIMIT_FSIZE (cannot mount here)";
        snprintf(dir, sizeof dir, "%s", g_root);
        fsize = A + (S - A) / 2;
        CHECK(S > A, "disk full: state %ld is not larger than the adapter %ld", S, A);
    }
    snprintf(out, sizeof out, "%s/full.safetensors", dir);
    sl_trainer_state_path(state, sizeof state, out);
    int sig, rc;
    if (fsize == 0) {
        const char *ex[] = {"--save-every", "1", "--log", csv, NULL};
        rc = run_train(out, err, 0, ex, &sig);
        long s = state_step(state);
        CHECK(rc == 1 && sig == 0, "disk full: rc %d signal %d (expected 1)", rc, sig);
        CHECK(s == 1, "disk full: the checkpoint of step 1 should be left, state step %ld", s);
        CHECK(inspect_ok(out), "disk full: the previous adapter is not a complete file");
    } else {
        /* a previous adapter (the reference) must survive the failed save */
        char cp[4800];
        snprintf(cp, sizeof cp, "cp '%s' '%s'", g_ref, out);
        CHECK(system(cp) == 0, "cannot copy the reference");
        const char *ex[] = {"--log", csv, NULL};
        rc = run_train(out, err, fsize, ex, &sig);
        CHECK(rc == 1 && sig == 0, "disk full: rc %d signal %d (expected 1)", rc, sig);
        CHECK(same_file(out, g_ref) || inspect_ok(out), "disk full: the previous adapter was damaged");
    }
    size_t n;
    char *log = slurp(err, &n);
    int lines = 0;
    for (size_t i = 0; log && i < n; i++) lines += log[i] == '\n';
    CHECK(log && lines == 1 && strstr(log, "full.safetensors") &&
              (strstr(log, "No space") || strstr(log, "too large")),
          "disk full: expected one error line naming the file and the cause: %s", log ? log : "");
    printf("disk full (%s): %s", how, log ? log : "\n");
    free(log);
    int left = count_tmp(dir, "full.safetensors", 0);
    CHECK(left == 0, "disk full: %d temp files left behind", left);
}

static void test_readonly(void) {
    char file[2300], out[2400], err[2300];
    snprintf(err, sizeof err, "%s/ro.log", g_root);
    /* a regular file where the output folder should be: ENOTDIR for everyone, root too */
    snprintf(file, sizeof file, "%s/not_a_dir", g_root);
    FILE *f = fopen(file, "w");
    if (f) fclose(f);
    snprintf(out, sizeof out, "%s/x.safetensors", file);
    double t0 = now_s();
    int sig, rc = run_train(out, err, 0, NULL, &sig);
    double dt = now_s() - t0;
    size_t n;
    char *log = slurp(err, &n);
    CHECK(rc == 1 && log && strstr(log, "not_a_dir"), "output under a file: rc %d: %s", rc, log ? log : "");
    printf("output under a regular file: rc %d in %.2f s: %s", rc, dt, log ? log : "\n");
    free(log);
    /* a read-only tmpfs (chmod does not stop root) */
    snprintf(g_ro, sizeof g_ro, "%s/ro_mount", g_root);
    mkdir(g_ro, 0755);
    char cmd[4600];
    snprintf(cmd, sizeof cmd, "mount -t tmpfs -o ro,size=64k tmpfs '%s' 2>/dev/null", g_ro);
    if (geteuid() != 0 || system(cmd) != 0) {
        printf("SKIPPED read-only mount: cannot mount a tmpfs here (not root or no CAP_SYS_ADMIN)\n");
        return;
    }
    g_mounted_ro = 1;
    snprintf(out, sizeof out, "%s/x.safetensors", g_ro);
    t0 = now_s();
    rc = run_train(out, err, 0, NULL, &sig);
    dt = now_s() - t0;
    log = slurp(err, &n);
    CHECK(rc == 1 && log && strstr(log, "Read-only") && strstr(log, "before training"),
          "read-only output: rc %d: %s", rc, log ? log : "");
    /* "before training" is the trainer's own word for where it stopped; the time is
     * printed, not asserted (tests never assert on wall time; it failed under -j2 load) */
    printf("read-only output folder: rc %d in %.2f s: %s", rc, dt, log ? log : "\n");
    free(log);
}

/* The checkpoint of the reference run resumed with a data folder of 3 of its 4
 * images: refused naming the folder; --resume-anyway continues (nothing left to
 * train: the run ends at once with the checkpoint's adapter). */
static void test_resume_other_data(void) {
    char data2[2100], out[2300], state[2400], ref_state[2400], err[2300], cmd[7000];
    snprintf(data2, sizeof data2, "%s/data3", g_root);
    snprintf(out, sizeof out, "%s/guard.safetensors", g_root);
    sl_trainer_state_path(state, sizeof state, out);
    sl_trainer_state_path(ref_state, sizeof ref_state, g_ref);
    snprintf(err, sizeof err, "%s/guard.log", g_root);
    snprintf(cmd, sizeof cmd, "cp '%s' '%s'", ref_state, state);
    CHECK(fixture_images(data2, 3, 32) && system(cmd) == 0, "cannot set up the other-data resume");
    const char *ex[] = {"--resume", NULL};
    snprintf(g_data, sizeof g_data, "%s", data2); /* spawn_train passes g_data */
    int sig, rc = run_train(out, err, 0, ex, &sig);
    size_t n;
    char *log = slurp(err, &n);
    CHECK(rc == 1 && log && strstr(log, "the data folder differs") && strstr(log, "data3") && strstr(log, "--resume-anyway"),
          "resume with other data: rc %d: %s", rc, log ? log : "");
    printf("resume with other data: rc %d: %s", rc, log ? log : "\n");
    free(log);
    const char *ex2[] = {"--resume-anyway", NULL};
    rc = run_train(out, err, 0, ex2, &sig);
    CHECK(rc == 0, "resume with other data and --resume-anyway: rc %d", rc);
    if (rc) print_file(err);
    snprintf(g_data, sizeof g_data, "%s/data", g_root);
}

static void unmount_all(void) {
    char cmd[4600];
    if (g_mounted_full) {
        snprintf(cmd, sizeof cmd, "umount '%s'", g_full);
        if (system(cmd) != 0) fprintf(stderr, "cannot unmount %s\n", g_full);
    }
    if (g_mounted_ro) {
        snprintf(cmd, sizeof cmd, "umount '%s'", g_ro);
        if (system(cmd) != 0) fprintf(stderr, "cannot unmount %s\n", g_ro);
    }
}

int main(int argc, char **argv) {
    /* `test_faults --fixture DIR`: only write DIR/model and DIR/data (tests/valgrind/run.sh) */
    if (argc == 3 && !strcmp(argv[1], "--fixture")) {
        char m[4200], d[4200];
        mkdir(argv[2], 0755);
        snprintf(m, sizeof m, "%s/model", argv[2]);
        snprintf(d, sizeof d, "%s/data", argv[2]);
        int ok = fixture_tiny_model(m, sl_test_shared()) && fixture_images(d, 4, 32);
        if (!ok) fprintf(stderr, "test_faults: cannot write the fixture into %s\n", argv[2]);
        return ok ? 0 : 1;
    }
    const char *bin = getenv("SL_STYLORA");
    if (!bin || !*bin) {
        printf("SKIPPED test_faults: SL_STYLORA (the stylora program) is not set\n");
        return 77;
    }
    snprintf(g_bin, sizeof g_bin, "%s", bin);
    snprintf(g_root, sizeof g_root, "%s/tmp_test_faults", sl_test_binary());
    char cmd[7000];
    snprintf(cmd, sizeof cmd, "umount '%s/tmpfs_full' '%s/ro_mount' 2>/dev/null; rm -rf '%s'", g_root, g_root, g_root);
    if (system(cmd) != 0) {} /* nothing mounted is the normal case */
    mkdir(g_root, 0755);
    snprintf(g_model, sizeof g_model, "%s/model", g_root);
    snprintf(g_data, sizeof g_data, "%s/data", g_root);
    CHECK(fixture_tiny_model(g_model, sl_test_shared()), "cannot build the fixture model");
    CHECK(fixture_images(g_data, 4, 32), "cannot write the fixture images");
    if (sl_test_failures) return sl_test_finish("test_faults");
    test_reference();
    if (!sl_test_failures) {
        test_kill9();
        test_sigint();
        test_sigint_last_step();
        test_disk_full();
        test_readonly();
        test_resume_other_data();
    }
    unmount_all();
    return sl_test_finish("test_faults");
}
