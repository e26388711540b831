/* sha256.h - SHA-256 (FIPS 180-4), for the hashes A1111 writes into image infotext.
 *
 * A1111 names a checkpoint by the first 10 hex digits of its whole file's
 * SHA-256 and a LoRA file by the first 12 of kohya's "addnet" hash (SHA-256 of
 * a safetensors file after its 8-byte length and JSON header); tools/ composes
 * those from the calls here. None of our dependencies (OpenBLAS, cJSON, PCRE2,
 * libpng, zlib) exports SHA-256, hence this small portable one.
 *
 * Not here: anything secret (no constant-time claims); core/hash.h is the
 * project's fast non-cryptographic hash for cache keys.
 */
#ifndef SL_SHA256_H
#define SL_SHA256_H

#include <stddef.h>
#include <stdint.h>

#include "status.h"

typedef struct SlSha256 {
    uint32_t h[8];     /* chaining state H0..H7 */
    uint64_t n_bytes;  /* message length so far */
    uint8_t block[64]; /* pending bytes of the current block */
    size_t n_block;
} SlSha256;

void sl_sha256_init(SlSha256 *s);
void sl_sha256_update(SlSha256 *s, const void *data, size_t n);
/* Pads, writes the 32-byte digest to out and leaves s unusable until re-init. */
void sl_sha256_final(SlSha256 *s, uint8_t out[32]);
/* One-shot digest of data[0..n). */
void sl_sha256(const void *data, size_t n, uint8_t out[32]);
/* Lower-case hex of a digest: 64 characters and a NUL into hex[65]. */
void sl_sha256_hex(const uint8_t digest[32], char hex[65]);
/* Digest of the bytes of path from byte `offset` to the end, streamed in 1 MiB
 * reads (a multi-GB checkpoint is never held in memory). Errors name the file. */
SlStatus sl_sha256_file(const char *path, uint64_t offset, uint8_t out[32], SlCtx *ctx);

#endif
