/* hash.c - 64-bit FNV-1a; see hash.h. */
#include "hash.h"

uint64_t sl_hash_bytes(const void *data, size_t n, uint64_t h) {
    const uint8_t *p = data;
    for (size_t i = 0; i < n; i++) {
        h ^= p[i];
        h *= SL_FNV1A64_PRIME;
    }
    return h;
}
