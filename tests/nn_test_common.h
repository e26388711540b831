/* nn_test_common.h - helpers shared by test_nn_forward.c and test_nn_grad.c:
 * a deterministic random fill (splitmix64 + Box-Muller, state passed
 * explicitly) and loading of the golden tensors in
 * tests/data/nn_ops_ref.safetensors (made by tests/reference/nn_ops_ref.py).
 */
#ifndef SL_NN_TEST_COMMON_H
#define SL_NN_TEST_COMMON_H

#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#include "core/safetensors.h"
#include "core/status.h"
#include "core/tensor.h"
#include "nn/nn.h"
#include "test_util.h"

static inline uint64_t nt_next(uint64_t *s) {
    uint64_t z = (*s += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}
static inline double nt_unif(uint64_t *s) { return ((nt_next(s) >> 11) + 0.5) * (1.0 / 9007199254740992.0); }

/* x[0..n) ~ N(mean, sd) */
static inline void nt_randn(float *x, int64_t n, uint64_t *s, double mean, double sd) {
    for (int64_t i = 0; i < n; i++) {
        const double u1 = nt_unif(s), u2 = nt_unif(s);
        x[i] = (float)(mean + sd * sqrt(-2.0 * log(u1)) * cos(6.283185307179586 * u2));
    }
}

/* Fresh allocation of n floats (zeroed); aborts the test on failure. */
static inline float *nt_zeros(int64_t n) {
    float *p = sl_calloc((size_t)(n > 0 ? n : 1) * sizeof(float));
    if (!p) { fprintf(stderr, "out of memory\n"); exit(2); }
    return p;
}
static inline float *nt_randn_new(int64_t n, uint64_t *s, double mean, double sd) {
    float *p = nt_zeros(n);
    nt_randn(p, n, s, mean, sd);
    return p;
}
static inline float *nt_copy(const float *x, int64_t n) {
    float *p = nt_zeros(n);
    for (int64_t i = 0; i < n; i++) p[i] = x[i];
    return p;
}

/* Opens tests/data/nn_ops_ref.safetensors from SL_SOURCE_DIR. */
static inline int nt_golden_open(SlStFile *f, SlCtx *ctx) {
    char path[4096];
    snprintf(path, sizeof path, "%s/tests/data/nn_ops_ref.safetensors", sl_test_source());
    SlStatus st = sl_st_open(f, path, ctx);
    CHECK(st == SL_OK, "open %s: %s", path, ctx->msg);
    return st == SL_OK;
}

/* Newly allocated copy of golden tensor `name` with exactly n elements (NULL + failed CHECK otherwise). */
static inline float *nt_golden(const SlStFile *f, const char *name, int64_t n, SlCtx *ctx) {
    const SlStEntry *e = sl_st_find(f, name);
    CHECK(e != NULL, "golden tensor %s missing", name);
    if (!e) return NULL;
    const int64_t got = sl_shape_numel(e->ndim, e->shape);
    CHECK(got == n, "golden tensor %s has %lld elements, want %lld", name, (long long)got, (long long)n);
    if (got != n) return NULL;
    float *p = nt_zeros(n);
    SlStatus st = sl_st_read_f32(f, e, p, ctx);
    CHECK(st == SL_OK, "read %s: %s", name, ctx->msg);
    return p;
}

#endif
