/* fuzz_common.h - helpers shared by the libFuzzer targets in tests/fuzz/.
 *
 * The targets are built by tests/fuzz/run.sh with clang -fsanitize=fuzzer,
 * address,undefined against the library sources. Paths to shared data come
 * from SL_SHARED_DIR (else the SL_FUZZ_SHARED_DEFAULT the script compiles in).
 * Temp files go to $SL_FUZZ_TMP (else /dev/shm, else /tmp), one per process.
 *
 * Not here: any checking of results beyond "no crash, no hang, no leak":
 * the sanitizers and libFuzzer's leak checker are the oracle.
 */
#ifndef SL_FUZZ_COMMON_H
#define SL_FUZZ_COMMON_H

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#ifndef SL_FUZZ_SHARED_DEFAULT
#define SL_FUZZ_SHARED_DEFAULT "/work/shared"
#endif

static inline const char *fuzz_shared_dir(void) {
    const char *s = getenv("SL_SHARED_DIR");
    return s && *s ? s : SL_FUZZ_SHARED_DEFAULT;
}

/* A per-process scratch directory (created on first use). */
static inline const char *fuzz_tmp_dir(void) {
    static char dir[1024];
    if (!dir[0]) {
        const char *base = getenv("SL_FUZZ_TMP");
        struct stat st;
        if (!base || !*base) base = stat("/dev/shm", &st) == 0 ? "/dev/shm" : "/tmp";
        snprintf(dir, sizeof dir, "%s/sl_fuzz_%ld", base, (long)getpid());
        mkdir(dir, 0700);
    }
    return dir;
}

/* Writes data to path; 1 on success. */
static inline int fuzz_write(const char *path, const uint8_t *data, size_t size) {
    FILE *f = fopen(path, "wb");
    if (!f) return 0;
    int ok = fwrite(data, 1, size, f) == size;
    return fclose(f) == 0 && ok;
}

#endif
