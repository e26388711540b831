/* test_rng.c - Philox known answers, golden stream values, statistics and
 * determinism across chunking and thread counts for core/rng.c; FNV-1a known
 * answers for core/hash.h (cache keys and image seeds depend on its bits). */
#include <inttypes.h>
#include <omp.h>
#include <stdint.h>
#include <string.h>

#include "core/hash.h"
#include "core/rng.h"
#include "core/status.h"
#include "test_util.h"

static void test_kat(void) {
    /* Random123 kat_vectors, philox4x32_10. */
    static const uint32_t kat[3][10] = {
        {0, 0, 0, 0, 0, 0, 0x6627e8d5, 0xe169c58d, 0xbc57ac4c, 0x9b00dbd8},
        {0xffffffff, 0xffffffff, 0xffffffff, 0xffffffff, 0xffffffff, 0xffffffff,
         0x408f276d, 0x41c83b0e, 0xa20bc7c6, 0x6d5451fd},
        {0x243f6a88, 0x85a308d3, 0x13198a2e, 0x03707344, 0xa4093822, 0x299f31d0,
         0xd16cfe09, 0x94fdcceb, 0x5001e420, 0x24126ea1},
    };
    for (int t = 0; t < 3; t++) {
        uint32_t out[4];
        sl_philox4x32_10(out, kat[t], kat[t] + 4);
        for (int j = 0; j < 4; j++)
            CHECK(out[j] == kat[t][6 + j], "kat %d word %d: got %08x want %08x", t, j, out[j], kat[t][6 + j]);
    }
    /* Stream addressing: seed 0, stream 0, element 0..3 is the zero block. */
    uint32_t w[4];
    sl_rng_u32(w, 4, 0, 0, 0);
    CHECK(w[0] == 0x6627e8d5 && w[3] == 0x9b00dbd8, "stream (0,0) block 0: %08x .. %08x", w[0], w[3]);
}

/* Compares against tests/data/rng_golden.txt (tests/reference/rng_philox.py). */
static void test_golden(void) {
    char path[4096];
    snprintf(path, sizeof path, "%s/tests/data/rng_golden.txt", sl_test_source());
    FILE *f = fopen(path, "r");
    CHECK(f != NULL, "cannot open %s", path);
    if (!f) return;
    uint64_t seed, stream, offset;
    int n;
    CHECK(fscanf(f, "%" SCNu64 " %" SCNu64 " %" SCNu64 " %d", &seed, &stream, &offset, &n) == 4, "header of %s", path);
    if (n <= 0 || n > 1000) { fclose(f); CHECK(0, "bad n %d", n); return; }
    uint32_t ref_u[1000], got_u[1000];
    float ref_f[1000], ref_n[1000], got_f[1000], got_n[1000];
    for (int i = 0; i < n; i++) {
        double u, z;
        CHECK(fscanf(f, "%" SCNu32 " %lf %lf", &ref_u[i], &u, &z) == 3, "line %d of %s", i + 2, path);
        ref_f[i] = (float)u;
        ref_n[i] = (float)z;
    }
    fclose(f);
    sl_rng_u32(got_u, n, seed, stream, offset);
    int bad = 0;
    for (int i = 0; i < n; i++) bad += got_u[i] != ref_u[i];
    CHECK(bad == 0, "%d of %d u32 differ from golden", bad, n);
    sl_rng_uniform(got_f, n, seed, stream, offset);
    sl_test_close("uniform vs python", got_f, ref_f, (size_t)n, 0.0, 0.0);
    sl_rng_normal(got_n, n, seed, stream, offset);
    /* Both sides compute in double then round to float: at most 1 float ulp. */
    sl_test_close("normal vs python", got_n, ref_n, (size_t)n, 1e-7, 2e-7);
}

static void test_stats(void) {
    const int64_t n = 1000000;
    float *x = malloc((size_t)n * sizeof *x);
    sl_rng_normal(x, n, 42, 1, 0);
    double s = 0, s2 = 0, s4 = 0;
    for (int64_t i = 0; i < n; i++) s += x[i];
    double mean = s / n;
    for (int64_t i = 0; i < n; i++) {
        double d = x[i] - mean;
        s2 += d * d;
        s4 += d * d * d * d;
    }
    double var = s2 / (n - 1), kurt = (s4 / n) / (var * var);
    /* 5 sigma bounds: se(mean) = 1/sqrt(n), se(std) ~ 1/sqrt(2n), se(kurt) ~ sqrt(24/n). */
    printf("normal: mean %.5f std %.5f kurtosis %.4f\n", mean, sqrt(var), kurt);
    CHECK(fabs(mean) < 5.0 / sqrt((double)n), "normal mean %g", mean);
    CHECK(fabs(sqrt(var) - 1.0) < 5.0 / sqrt(2.0 * n), "normal std %g", sqrt(var));
    CHECK(fabs(kurt - 3.0) < 5.0 * sqrt(24.0 / n), "normal kurtosis %g", kurt);
    sl_rng_uniform(x, n, 42, 2, 0);
    double lo = 1, hi = 0;
    s = 0;
    for (int64_t i = 0; i < n; i++) {
        s += x[i];
        if (x[i] < lo) lo = x[i];
        if (x[i] > hi) hi = x[i];
    }
    CHECK(lo >= 0.0 && hi < 1.0, "uniform range [%g, %g]", lo, hi);
    CHECK(fabs(s / n - 0.5) < 5.0 * sqrt(1.0 / 12.0 / n), "uniform mean %g", s / n);
    free(x);

    SlRng r = sl_rng_init(7, 3);
    int counts[3] = {0, 0, 0};
    const int draws = 30000;
    for (int i = 0; i < draws; i++) {
        uint32_t k = sl_rng_uniform_int(&r, 3);
        CHECK(k < 3, "uniform_int out of range: %u", k);
        if (k < 3) counts[k]++;
    }
    double sd = sqrt(draws * (1.0 / 3) * (2.0 / 3));
    for (int k = 0; k < 3; k++)
        CHECK(fabs(counts[k] - draws / 3.0) < 5 * sd, "uniform_int(3) count[%d] = %d", k, counts[k]);
    /* The worst case for rejection (n just above 2^31) still terminates and stays in range. */
    uint32_t big = 0x80000001u;
    for (int i = 0; i < 1000; i++) CHECK(sl_rng_uniform_int(&r, big) < big, "uniform_int(2^31+1)");
    CHECK(sl_rng_uniform_int(&r, 1) == 0, "uniform_int(1)");
}

static void test_chunking_and_state(void) {
    enum { N = 1003 };
    float whole[N], parts[N], one[N];
    uint32_t uw[N], up[N];
    sl_rng_normal(whole, N, 99, 5, 11);
    sl_rng_u32(uw, N, 99, 5, 11);
    /* Odd-sized pieces starting at odd offsets. */
    int64_t at = 0, step = 1;
    while (at < N) {
        int64_t len = step < N - at ? step : N - at;
        sl_rng_normal(parts + at, len, 99, 5, 11 + (uint64_t)at);
        sl_rng_u32(up + at, len, 99, 5, 11 + (uint64_t)at);
        at += len;
        step = step * 2 + 1;
    }
    for (int i = 0; i < N; i++) sl_rng_normal(one + i, 1, 99, 5, 11 + (uint64_t)i);
    CHECK(memcmp(whole, parts, sizeof whole) == 0, "normal fill differs when chunked");
    CHECK(memcmp(whole, one, sizeof whole) == 0, "normal fill differs element by element");
    CHECK(memcmp(uw, up, sizeof uw) == 0, "u32 fill differs when chunked");

    SlRng r = sl_rng_init(99, 5);
    r.counter = 11;
    CHECK(sl_rng_next_u32(&r) == uw[0], "next_u32 at counter 11");
    float u = sl_rng_next_uniform(&r), uref;
    sl_rng_uniform(&uref, 1, 99, 5, 12);
    CHECK(u == uref, "next_uniform at counter 12: %g vs %g", u, uref);
    /* counter 13 -> rounds up to the pair (14, 15), returns element 14. */
    float z = sl_rng_next_normal(&r);
    CHECK(z == whole[14 - 11], "next_normal: %g vs %g", z, whole[3]);
    CHECK(r.counter == 16, "counter after next_normal: %" PRIu64, r.counter);

    /* Different streams and seeds give different numbers. */
    uint32_t a[8], b[8], c[8];
    sl_rng_u32(a, 8, 1, 0, 0);
    sl_rng_u32(b, 8, 1, 1, 0);
    sl_rng_u32(c, 8, 2, 0, 0);
    CHECK(memcmp(a, b, sizeof a) != 0 && memcmp(a, c, sizeof a) != 0, "streams/seeds collide");
}

static void test_threads(void) {
    const int64_t n = 300001; /* above the parallel threshold, not chunk-aligned */
    float *x1 = malloc((size_t)n * sizeof(float)), *x2 = malloc((size_t)n * sizeof(float));
    uint32_t *u1 = malloc((size_t)n * sizeof(uint32_t)), *u2 = malloc((size_t)n * sizeof(uint32_t));
    int saved = omp_get_max_threads();
    omp_set_num_threads(1);
    sl_rng_normal(x1, n, 1234, 9, 3);
    sl_rng_u32(u1, n, 1234, 9, 3);
    omp_set_num_threads(2);
    sl_rng_normal(x2, n, 1234, 9, 3);
    sl_rng_u32(u2, n, 1234, 9, 3);
    omp_set_num_threads(saved);
    CHECK(memcmp(x1, x2, (size_t)n * sizeof(float)) == 0, "normal differs between 1 and 2 threads");
    CHECK(memcmp(u1, u2, (size_t)n * sizeof(uint32_t)) == 0, "u32 differs between 1 and 2 threads");
    /* And the parallel fill equals the serial element-wise definition at a few spots. */
    float z;
    sl_rng_normal(&z, 1, 1234, 9, 3 + 250000);
    CHECK(z == x2[250000], "parallel element 250000");
    free(x1); free(x2); free(u1); free(u2);
}

/* FNV-1a 64 reference vectors (Fowler/Noll/Vo test suite), and chaining: one
 * call over "foobar" equals "foo" then "bar". */
static void test_fnv1a(void) {
    static const struct { const char *s; uint64_t h; } v[] = {
        {"", 0xcbf29ce484222325ull}, {"a", 0xaf63dc4c8601ec8cull}, {"foobar", 0x85944171f73967e8ull},
    };
    for (size_t i = 0; i < sizeof v / sizeof v[0]; i++) {
        uint64_t h = sl_hash_bytes(v[i].s, strlen(v[i].s), SL_FNV1A64_OFFSET);
        CHECK(h == v[i].h, "fnv1a64(\"%s\") = %016" PRIx64 ", want %016" PRIx64, v[i].s, h, v[i].h);
    }
    uint64_t h = sl_hash_bytes("bar", 3, sl_hash_bytes("foo", 3, SL_FNV1A64_OFFSET));
    CHECK(h == 0x85944171f73967e8ull, "chained fnv1a64(foo, bar) = %016" PRIx64, h);
}

int main(void) {
    test_kat();
    test_golden();
    test_stats();
    test_chunking_and_state();
    test_threads();
    test_fnv1a();
    return sl_test_finish("test_rng");
}
