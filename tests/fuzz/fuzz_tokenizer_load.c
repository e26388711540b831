/* fuzz_tokenizer_load.c - libFuzzer target: the tokenizer's file parsers.
 * sl_tokenizer_load takes a path only, so the input is written to files in a
 * per-process scratch folder. The first byte picks the form:
 *   even: a diffusers tokenizer/ folder; the rest is split at the first two
 *         "\n@@\n" markers into vocab.json | merges.txt | tokenizer_config.json
 *         (a missing part is an absent file);
 *   odd:  a CLIP bpe_simple_vocab file (the rest, uncompressed or gzip).
 * A loaded tokenizer then encodes a fixed prompt and the input itself.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fuzz_common.h"
#include "textenc/tokenizer.h"

static const uint8_t *find_marker(const uint8_t *p, const uint8_t *end) {
    static const char m[] = "\n@@\n";
    for (; p + 4 <= end; p++)
        if (memcmp(p, m, 4) == 0) return p;
    return NULL;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size < 1) return 0;
    const char *dir = fuzz_tmp_dir();
    char path[1200], vocab[1200], merges[1200], tcfg[1200], single[1200];
    snprintf(path, sizeof path, "%s/tokenizer", dir);
    snprintf(vocab, sizeof vocab, "%s/vocab.json", path);
    snprintf(merges, sizeof merges, "%s/merges.txt", path);
    snprintf(tcfg, sizeof tcfg, "%s/tokenizer_config.json", path);
    snprintf(single, sizeof single, "%s/bpe.txt", dir);
    mkdir(path, 0700);
    unlink(vocab);
    unlink(merges);
    unlink(tcfg);
    const uint8_t *p = data + 1, *end = data + size;
    const char *load = path;
    if (data[0] & 1) {
        if (!fuzz_write(single, p, (size_t)(end - p))) return 0;
        load = single;
    } else {
        const char *files[3] = {vocab, merges, tcfg};
        for (int i = 0; i < 3 && p; i++) {
            const uint8_t *m = i < 2 ? find_marker(p, end) : NULL;
            const uint8_t *stop = m ? m : end;
            if (!fuzz_write(files[i], p, (size_t)(stop - p))) return 0;
            p = m ? m + 4 : NULL;
        }
    }
    SlCtx ctx;
    sl_ctx_init(&ctx);
    SlTokenizer *tok = NULL;
    if (sl_tokenizer_load(&tok, load, &ctx) == SL_OK) {
        int32_t ids[77] = {0};
        int n = 0;
        (void)sl_tokenizer_encode(tok, "a photo of <|endoftext|> a cat!!", ids, 77, &n, &ctx);
        (void)sl_tokenizer_encode_n(tok, (const char *)data, size, ids, 77, &n, &ctx);
        for (int i = 0; i < 77; i++) {
            char buf[32];
            (void)sl_tokenizer_decode_token(tok, ids[i], buf, sizeof buf);
        }
        sl_tokenizer_free(tok);
    } else if (tok) {
        abort(); /* the contract: *out is NULL on failure */
    }
    return 0;
}
