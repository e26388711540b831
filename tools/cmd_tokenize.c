/* cmd_tokenize.c - `stylora tokenize --model DIR TEXT`: prints the token ids
 * (and with --verbose each token's text), as CLIP's tokenizer gives them. */
#include <stdio.h>
#include <stdlib.h>

#include "cli.h"
#include "core/weights.h"
#include "textenc/tokenizer.h"

int cmd_tokenize(int argc, char **argv) {
    const char *model = NULL, *verbose = NULL, *maxlen = NULL, *all = NULL;
    const CliOpt opts[] = {
        {"--model", "DIR", "model folder (its tokenizer/), a tokenizer folder, or a CLIP bpe .txt.gz", &model, 0},
        {"--max-length", "N", "pad/truncate to N tokens (default: the tokenizer's model_max_length)", &maxlen, 0},
        {"--all", NULL, "print the padding too", &all, 0},
        {"--verbose", NULL, "print each token's text beside its id", &verbose, 0},
        {0},
    };
    const char *syn = "--model DIR [--verbose] TEXT";
    const char *pos[1];
    int npos;
    cli_parse("tokenize", syn, opts, argc, argv, pos, 1, &npos);
    if (npos != 1 || !model) {
        cli_usage(stderr, "tokenize", syn, opts);
        return 2;
    }
    SlCtx ctx;
    cli_ctx_init(&ctx, 0);
    char p[4096];
    const char *src = model;
    if (sl_path_is_dir(sl_path_join(p, sizeof p, model, "tokenizer"))) src = p;
    SlTokenizer *tok;
    if (sl_tokenizer_load(&tok, src, &ctx) != SL_OK) return cli_fail("tokenize", &ctx);
    int n = maxlen ? (int)cli_int("tokenize", "--max-length", maxlen, 2, 1 << 20) : sl_tokenizer_max_length(tok);
    int32_t *ids = malloc((size_t)n * sizeof *ids);
    int n_real = 0;
    if (!ids || sl_tokenizer_encode(tok, pos[0], ids, n, &n_real, &ctx) != SL_OK) {
        free(ids);
        sl_tokenizer_free(tok);
        return cli_fail("tokenize", &ctx);
    }
    int shown = all ? n : n_real;
    for (int i = 0; i < shown; i++) {
        if (verbose) {
            char buf[256];
            sl_tokenizer_decode_token(tok, ids[i], buf, sizeof buf);
            printf("%d\t%s\n", ids[i], buf);
        } else {
            printf("%s%d", i ? " " : "", ids[i]);
        }
    }
    if (!verbose) printf("\n");
    fprintf(stderr, "%d tokens (with BOS/EOS) of %d\n", n_real, n);
    free(ids);
    sl_tokenizer_free(tok);
    return 0;
}
