/* rng.c - Philox 4x32-10 and the stream fills built on it; see rng.h. */
#include "rng.h"

#include <math.h>
#include <stddef.h>

#define PHILOX_M0 0xD2511F53u
#define PHILOX_M1 0xCD9E8D57u
#define PHILOX_W0 0x9E3779B9u
#define PHILOX_W1 0xBB67AE85u

/* Fills shorter than this stay on the calling thread. */
#define SL_RNG_PAR_MIN 65536
/* Elements per parallel chunk (a multiple of 4 keeps chunks block-aligned,
 * which only saves work: results do not depend on it). */
#define SL_RNG_CHUNK 16384

void sl_philox4x32_10(uint32_t out[4], const uint32_t ctr[4], const uint32_t key[2]) {
    uint32_t c0 = ctr[0], c1 = ctr[1], c2 = ctr[2], c3 = ctr[3];
    uint32_t k0 = key[0], k1 = key[1];
    for (int round = 0; round < 10; round++) {
        uint64_t p0 = (uint64_t)PHILOX_M0 * c0;
        uint64_t p1 = (uint64_t)PHILOX_M1 * c2;
        uint32_t n0 = (uint32_t)(p1 >> 32) ^ c1 ^ k0;
        uint32_t n2 = (uint32_t)(p0 >> 32) ^ c3 ^ k1;
        c1 = (uint32_t)p1;
        c3 = (uint32_t)p0;
        c0 = n0;
        c2 = n2;
        k0 += PHILOX_W0;
        k1 += PHILOX_W1;
    }
    out[0] = c0; out[1] = c1; out[2] = c2; out[3] = c3;
}

/* The block holding u32 elements 4*block .. 4*block+3 of (seed, stream). */
static inline void rng_block(uint32_t out[4], uint64_t seed, uint64_t stream, uint64_t block) {
    const uint32_t key[2] = {(uint32_t)seed, (uint32_t)(seed >> 32)};
    const uint32_t ctr[4] = {(uint32_t)block, (uint32_t)(block >> 32), (uint32_t)stream,
                             (uint32_t)(stream >> 32)};
    sl_philox4x32_10(out, ctr, key);
}

static inline float u32_to_uniform(uint32_t x) { return (float)(x >> 8) * 0x1.0p-24f; }

/* Box-Muller of one pair of words; always computes both halves the same way
 * so an element's value never depends on which neighbours were asked for. */
static void box_muller(float out[2], uint32_t a, uint32_t b) {
    double u = ((double)(a >> 8) + 1.0) * 0x1.0p-24; /* (0, 1]: log is finite */
    double theta = 6.283185307179586476925 * ((double)(b >> 8) * 0x1.0p-24);
    double r = sqrt(-2.0 * log(u));
    out[0] = (float)(r * cos(theta));
    out[1] = (float)(r * sin(theta));
}

typedef enum { RNG_U32, RNG_UNIFORM, RNG_NORMAL } RngKind;

/* Serial fill of elements first .. first+n-1 into out[0..n). */
static void rng_fill_serial(void *out, RngKind kind, int64_t n, uint64_t seed, uint64_t stream,
                            uint64_t first) {
    int64_t i = 0;
    while (i < n) {
        uint64_t e = first + (uint64_t)i;
        uint64_t block = e >> 2;
        uint32_t w[4];
        rng_block(w, seed, stream, block);
        float nrm[4];
        if (kind == RNG_NORMAL) {
            box_muller(nrm, w[0], w[1]);
            box_muller(nrm + 2, w[2], w[3]);
        }
        for (unsigned j = (unsigned)(e & 3); j < 4 && i < n; j++, i++) {
            switch (kind) {
            case RNG_U32: ((uint32_t *)out)[i] = w[j]; break;
            case RNG_UNIFORM: ((float *)out)[i] = u32_to_uniform(w[j]); break;
            case RNG_NORMAL: ((float *)out)[i] = nrm[j]; break;
            }
        }
    }
}

static void rng_fill(void *out, RngKind kind, int64_t n, uint64_t seed, uint64_t stream,
                     uint64_t offset) {
    if (n <= 0) return;
    if (n < SL_RNG_PAR_MIN) {
        rng_fill_serial(out, kind, n, seed, stream, offset);
        return;
    }
    int64_t nchunks = (n + SL_RNG_CHUNK - 1) / SL_RNG_CHUNK;
    size_t esize = kind == RNG_U32 ? sizeof(uint32_t) : sizeof(float);
#pragma omp parallel for schedule(static)
    for (int64_t c = 0; c < nchunks; c++) {
        int64_t lo = c * SL_RNG_CHUNK;
        int64_t len = n - lo < SL_RNG_CHUNK ? n - lo : SL_RNG_CHUNK;
        rng_fill_serial((char *)out + (size_t)lo * esize, kind, len, seed, stream,
                        offset + (uint64_t)lo);
    }
}

void sl_rng_u32(uint32_t *out, int64_t n, uint64_t seed, uint64_t stream, uint64_t offset) {
    rng_fill(out, RNG_U32, n, seed, stream, offset);
}

void sl_rng_uniform(float *out, int64_t n, uint64_t seed, uint64_t stream, uint64_t offset) {
    rng_fill(out, RNG_UNIFORM, n, seed, stream, offset);
}

void sl_rng_normal(float *out, int64_t n, uint64_t seed, uint64_t stream, uint64_t offset) {
    rng_fill(out, RNG_NORMAL, n, seed, stream, offset);
}

uint32_t sl_rng_next_u32(SlRng *r) {
    uint32_t w[4];
    rng_block(w, r->seed, r->stream, r->counter >> 2);
    uint32_t x = w[r->counter & 3];
    r->counter++;
    return x;
}

float sl_rng_next_uniform(SlRng *r) { return u32_to_uniform(sl_rng_next_u32(r)); }

float sl_rng_next_normal(SlRng *r) {
    uint64_t e = (r->counter + 1) & ~(uint64_t)1;
    uint32_t w[4];
    rng_block(w, r->seed, r->stream, e >> 2);
    float nrm[2];
    box_muller(nrm, w[e & 2], w[(e & 2) + 1]);
    r->counter = e + 2;
    return nrm[0];
}

uint32_t sl_rng_uniform_int(SlRng *r, uint32_t n) {
    if (n <= 1) return 0;
    /* Accept x >= 2^32 mod n: the accepted range is a whole number of
     * copies of [0, n), so x % n is exactly uniform. */
    uint32_t threshold = (uint32_t)(-n) % n;
    for (;;) {
        uint32_t x = sl_rng_next_u32(r);
        if (x >= threshold) return x % n;
    }
}
