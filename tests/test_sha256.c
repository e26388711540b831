/* test_sha256.c - core/sha256 against the FIPS 180-4 / NIST CSVP example
 * vectors (empty, "abc", the 448- and 896-bit messages, a million 'a'), the
 * same digests when the message arrives in pieces split at every offset, and
 * sl_sha256_file from an offset (what A1111's addnet LoRA hash needs) equal to
 * hashing the tail in memory, plus a missing file named in the error. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/sha256.h"
#include "test_util.h"

static void hex_of(const void *p, size_t n, char hex[65]) {
    uint8_t d[32];
    sl_sha256(p, n, d);
    sl_sha256_hex(d, hex);
}

int main(void) {
    static const struct { const char *msg, *hex; } vec[] = {
        {"", "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"},
        {"abc", "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"},
        {"abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq",
         "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1"},
        {"abcdefghbcdefghicdefghijdefghijkefghijklfghijklmghijklmnhijklmnoijklmnopjklmnopqklmnopqrlmnopqrsmnopqrstnopqrstu",
         "cf5b16a778af8380036ce59e7b0492370b249b11e8f07a51afac45037afee9d1"},
    };
    char hex[65];
    for (size_t i = 0; i < sizeof vec / sizeof vec[0]; i++) {
        hex_of(vec[i].msg, strlen(vec[i].msg), hex);
        CHECK(strcmp(hex, vec[i].hex) == 0, "\"%.20s...\": %s, want %s", vec[i].msg, hex, vec[i].hex);
    }
    /* a million 'a', fed in uneven pieces that cross block boundaries */
    const size_t n = 1000000;
    char *a = malloc(n);
    memset(a, 'a', n);
    SlSha256 s;
    sl_sha256_init(&s);
    for (size_t o = 0, step = 1; o < n; o += step, step = step * 7 % 997 + 1)
        sl_sha256_update(&s, a + o, o + step > n ? n - o : step);
    uint8_t d[32];
    sl_sha256_final(&s, d);
    sl_sha256_hex(d, hex);
    CHECK(strcmp(hex, "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0") == 0, "million a: %s", hex);
    /* two pieces split at every offset of a 200-byte message (lengths 55, 56, 64 pad differently) */
    uint8_t msg[200], one[32], two[32];
    for (int i = 0; i < 200; i++) msg[i] = (uint8_t)(i * 37 + 11);
    for (size_t len = 50; len <= 200; len += 3)
        for (size_t cut = 0; cut <= len; cut++) {
            sl_sha256(msg, len, one);
            sl_sha256_init(&s);
            sl_sha256_update(&s, msg, cut);
            sl_sha256_update(&s, msg + cut, len - cut);
            sl_sha256_final(&s, two);
            if (memcmp(one, two, 32)) {
                CHECK(0, "length %zu split at %zu gives another digest", len, cut);
                len = 201;
                break;
            }
        }
    /* file from an offset == the tail hashed in memory (2 MB: crosses the 1 MiB reads) */
    char path[2048];
    snprintf(path, sizeof path, "%s/tmp_test_sha256.bin", sl_test_binary());
    FILE *f = fopen(path, "wb");
    CHECK(f && fwrite(a, 1, n, f) == n && fwrite(a, 1, n, f) == n && fwrite(msg, 1, 200, f) == 200, "cannot write %s", path);
    if (f) fclose(f);
    SlCtx ctx;
    sl_ctx_init(&ctx);
    uint8_t want[32];
    SlSha256 t;
    sl_sha256_init(&t);
    sl_sha256_update(&t, a + 12345, n - 12345);
    sl_sha256_update(&t, a, n);
    sl_sha256_update(&t, msg, 200);
    sl_sha256_final(&t, want);
    CHECK_OK(sl_sha256_file(path, 12345, d, &ctx), &ctx);
    CHECK(memcmp(d, want, 32) == 0, "file hash from offset 12345 differs from the in-memory tail");
    remove(path);
    CHECK(sl_sha256_file(path, 0, d, &ctx) == SL_ERR_IO && strstr(ctx.msg, "tmp_test_sha256.bin"), "missing file: %s", ctx.msg);
    free(a);
    return sl_test_finish("test_sha256");
}
