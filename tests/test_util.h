/* test_util.h - the tiny test harness shared by tests/test_*.c.
 *
 * Each test is its own executable registered with CTest; it exits non-zero
 * if any check failed. Comparisons follow STYLE rule 4:
 * |got - ref| <= atol + rtol * |ref|, and print the worst element.
 * Paths: SL_SHARED_DIR (../shared), SL_SOURCE_DIR, SL_BINARY_DIR come from CTest.
 */
#ifndef SL_TEST_UTIL_H
#define SL_TEST_UTIL_H

#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int sl_test_failures = 0;
static int sl_test_checks = 0;

#define CHECK(cond, ...)                                                   \
    do {                                                                   \
        sl_test_checks++;                                                  \
        if (!(cond)) {                                                     \
            sl_test_failures++;                                            \
            fprintf(stderr, "FAIL %s:%d: %s: ", __FILE__, __LINE__, #cond); \
            fprintf(stderr, __VA_ARGS__);                                  \
            fprintf(stderr, "\n");                                         \
        }                                                                  \
    } while (0)

/* CHECK that an SlStatus is SL_OK, printing the context message otherwise. */
#define CHECK_OK(expr, ctxp)                                                       \
    do {                                                                           \
        SlStatus st_ = (expr);                                                     \
        CHECK(st_ == SL_OK, "%s -> %s: %s", #expr, sl_status_name(st_), (ctxp)->msg); \
    } while (0)

static inline const char *sl_test_env(const char *name, const char *fallback) {
    const char *v = getenv(name);
    return v && *v ? v : fallback;
}
static inline const char *sl_test_shared(void) { return sl_test_env("SL_SHARED_DIR", "../shared"); }
static inline const char *sl_test_source(void) { return sl_test_env("SL_SOURCE_DIR", "."); }
static inline const char *sl_test_binary(void) { return sl_test_env("SL_BINARY_DIR", "."); }

/* Returns 1 if all n values are within atol + rtol*|ref|; prints the worst one. */
static inline int sl_test_close(const char *what, const float *got, const float *ref, size_t n,
                                double atol, double rtol) {
    size_t worst = 0, bad = 0;
    double worst_excess = -1e300, max_abs = 0;
    for (size_t i = 0; i < n; i++) {
        double d = fabs((double)got[i] - (double)ref[i]);
        double lim = atol + rtol * fabs((double)ref[i]);
        if (!(d <= lim)) bad++;
        if (d > max_abs || isnan(d)) max_abs = isnan(d) ? INFINITY : d;
        if (d - lim > worst_excess || isnan(d)) { worst_excess = isnan(d) ? INFINITY : d - lim; worst = i; }
    }
    sl_test_checks++;
    if (bad) {
        sl_test_failures++;
        fprintf(stderr, "FAIL %s: %zu of %zu values out of tolerance (atol %g rtol %g); worst [%zu] got %.8g ref %.8g; max abs err %.3g\n",
                what, bad, n, atol, rtol, worst, n ? got[worst] : 0.f, n ? ref[worst] : 0.f, max_abs);
        return 0;
    }
    printf("ok   %s: max abs err %.3g over %zu values\n", what, max_abs, n);
    return 1;
}

/* Max |ref| (the "output scale" that golden tolerances are relative to). */
/* x[i] uniform in [-scale, scale) from a seeded LCG (inputs that need no statistics). */
static inline void sl_test_fill(float *x, size_t n, uint32_t seed, float scale) {
    uint32_t s = seed * 2654435761u + 1;
    for (size_t i = 0; i < n; i++) {
        s = s * 1664525u + 1013904223u;
        x[i] = ((float)(s >> 8) / 16777216.0f - 0.5f) * 2.0f * scale;
    }
}

static inline double sl_test_scale(const float *ref, size_t n) {
    double m = 0;
    for (size_t i = 0; i < n; i++) if (fabs(ref[i]) > m) m = fabs(ref[i]);
    return m;
}

static inline int sl_test_finish(const char *name) {
    printf("%s: %d checks, %d failed\n", name, sl_test_checks, sl_test_failures);
    return sl_test_failures ? 1 : 0;
}

#endif
