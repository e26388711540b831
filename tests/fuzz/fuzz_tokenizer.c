/* fuzz_tokenizer.c - libFuzzer target: sl_tokenizer_encode_n on arbitrary bytes
 * with the SD 1.5 tokenizer (shared/sd15/tokenizer) loaded once, at two output
 * lengths, and every produced id decoded back. Invalid UTF-8 must be refused
 * with SL_ERR_ARG, never crash; valid output starts with BOS and ends its real
 * part with EOS.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#include "fuzz_common.h"
#include "textenc/tokenizer.h"

static SlTokenizer *g_tok; /* loaded once, read-only afterwards */

int LLVMFuzzerInitialize(int *argc, char ***argv) {
    (void)argc;
    (void)argv;
    char path[2048];
    snprintf(path, sizeof path, "%s/sd15/tokenizer", fuzz_shared_dir());
    SlCtx ctx;
    sl_ctx_init(&ctx);
    if (sl_tokenizer_load(&g_tok, path, &ctx) != SL_OK) {
        fprintf(stderr, "fuzz_tokenizer: %s\n", ctx.msg);
        exit(1);
    }
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    SlCtx ctx;
    sl_ctx_init(&ctx);
    int32_t ids[300];
    const int lens[2] = {77, 300};
    for (int k = 0; k < 2; k++) {
        int n_real = 0;
        SlStatus st = sl_tokenizer_encode_n(g_tok, (const char *)data, size, ids, lens[k], &n_real, &ctx);
        if (st != SL_OK) {
            if (st != SL_ERR_ARG) abort(); /* only invalid UTF-8 / oversize text may be refused */
            return 0;
        }
        if (n_real < 2 || n_real > lens[k] || ids[0] != sl_tokenizer_bos(g_tok) ||
            ids[n_real - 1] != sl_tokenizer_eos(g_tok))
            abort();
        for (int i = 0; i < lens[k]; i++) {
            char buf[64];
            if (ids[i] < 0 || ids[i] >= sl_tokenizer_vocab_size(g_tok)) abort();
            (void)sl_tokenizer_decode_token(g_tok, ids[i], buf, sizeof buf);
            (void)sl_tokenizer_token_text(g_tok, ids[i]);
        }
    }
    return 0;
}
