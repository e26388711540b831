/* rng.h - counter-based random numbers (Philox 4x32-10).
 *
 * Philox 4x32-10 (Salmon et al., "Parallel random numbers: as easy as 1, 2, 3",
 * SC 2011) with the Random123 / numpy / PyTorch constants. A block of four
 * 32-bit words is a pure function of a 128-bit counter and a 64-bit key, so any
 * element of any stream can be produced on its own: results never depend on
 * the thread count or on how a caller splits a fill into chunks.
 *
 * Addressing. A stream is (seed, stream id); its u32 element i is word i%4 of
 * the block with key = seed (low word first) and counter =
 * {block lo, block hi, stream lo, stream hi}, block = i/4.
 *   uniform element i = (u32[i] >> 8) * 2^-24          in [0, 1)
 *   normal elements 2j, 2j+1 = Box-Muller of u32[2j], u32[2j+1]
 *     (r = sqrt(-2 ln u), u = ((u32[2j] >> 8) + 1) * 2^-24 in (0, 1],
 *      theta = 2 pi (u32[2j+1] >> 8) * 2^-24; even -> r cos, odd -> r sin)
 * so uniform, normal and u32 fills over the same (seed, stream, offsets) reuse
 * the same words: give independent uses different stream ids.
 *
 * Not here: other generators, other distributions, cryptographic use.
 */
#ifndef SL_RNG_H
#define SL_RNG_H

#include <stdint.h>

/* One Philox 4x32-10 block: out = philox(ctr, key). out may alias ctr. */
void sl_philox4x32_10(uint32_t out[4], const uint32_t ctr[4], const uint32_t key[2]);

/* out[i] = u32 element (offset + i) of stream (seed, stream), i in [0, n).
 * Large fills run in parallel with OpenMP; results are identical for any
 * thread count. */
void sl_rng_u32(uint32_t *out, int64_t n, uint64_t seed, uint64_t stream, uint64_t offset);

/* out[i] = uniform float in [0, 1) from the top 24 bits of u32 element offset+i. */
void sl_rng_uniform(float *out, int64_t n, uint64_t seed, uint64_t stream, uint64_t offset);

/* out[i] = standard normal element offset+i (Box-Muller pairs, see above).
 * Element i depends only on (seed, stream, offset + i). */
void sl_rng_normal(float *out, int64_t n, uint64_t seed, uint64_t stream, uint64_t offset);

/* A small stateful convenience over one stream: `counter` is the index of the
 * next u32 element. Initialize with sl_rng_init or a designated initializer. */
typedef struct SlRng {
    uint64_t seed;
    uint64_t stream;
    uint64_t counter;
} SlRng;

static inline SlRng sl_rng_init(uint64_t seed, uint64_t stream) {
    SlRng r = {seed, stream, 0};
    return r;
}

/* Next u32 element; counter += 1. */
uint32_t sl_rng_next_u32(SlRng *r);
/* Next uniform in [0, 1); counter += 1. */
float sl_rng_next_uniform(SlRng *r);
/* A standard normal: rounds counter up to even, returns the cosine half of
 * that pair (normal element `counter`), counter += 2. */
float sl_rng_next_normal(SlRng *r);
/* Unbiased integer in [0, n) by rejection; n must be >= 1. Consumes one or
 * more u32 elements. */
uint32_t sl_rng_uniform_int(SlRng *r, uint32_t n);

#endif
