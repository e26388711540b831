/* hash.h - the project's one non-cryptographic hash: 64-bit FNV-1a.
 *
 * Cache keys (latents, text embeddings, sample files), per-image seeds and the
 * cross-rank weight check are built from it, so its output must never change:
 * a different value silently invalidates every cache on disk.
 *
 * Not here: anything that needs collision resistance against an adversary.
 */
#ifndef SL_HASH_H
#define SL_HASH_H

#include <stddef.h>
#include <stdint.h>

/* The FNV-1a 64-bit offset basis and prime (Fowler, Noll, Vo). */
#define SL_FNV1A64_OFFSET 0xcbf29ce484222325ull
#define SL_FNV1A64_PRIME 0x100000001b3ull

/* Continues a 64-bit FNV-1a hash h over data[0..n): start with
 * h = SL_FNV1A64_OFFSET, then chain calls to hash several pieces. */
uint64_t sl_hash_bytes(const void *data, size_t n, uint64_t h);

#endif
