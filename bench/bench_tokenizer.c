/* bench_tokenizer.c - CLIP tokenizer throughput: load time, prompts/s and tokens/s over a few
 * thousand prompts (eight typical SD prompts, ASCII and not, each with " variant <i>"
 * appended). The Python reference runs the same prompts:
 *     /usr/bin/python3 tests/reference/clip_tokenizer_ref.py --bench 4000
 * Usage: bench_tokenizer [tokenizer_dir_or_gz] [n_prompts]   (default $SL_SHARED_DIR/sd15/tokenizer, 4000)
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "core/status.h"
#include "textenc/tokenizer.h"

/* Keep in sync with BENCH_PROMPTS in tests/reference/clip_tokenizer_ref.py. */
static const char *const PROMPTS[8] = {
    "a photo of an astronaut riding a horse on mars",
    "A Cat, sitting on a mat!! 42",
    "a masterpiece, best quality, highly detailed oil painting of a majestic castle on a hill at sunset, "
    "dramatic lighting, volumetric clouds, golden hour, trending on artstation, by greg rutkowski and "
    "alphonse mucha, 8k, ultra realistic, intricate details, sharp focus, cinematic composition",
    "portrait of a young woman, watercolor, soft pastel colors, don't overexpose, it's delicate",
    "caf\xc3\xa9 na\xc3\xafve r\xc3\xa9sum\xc3\xa9 in the style of sks, \xf0\x9f\x98\x80 emoji",
    "\xe7\x8c\xab\xe5\x92\xaa\xe5\x9c\xa8\xe5\xba\x8a\xe4\xb8\x8a, a cat on the bed, 4k photo",
    "fish &amp; chips   on a\ttable\nwith    a  beer, (bokeh:1.2), [blurry]",
    "cyberpunk city street at night, neon signs, rain, reflections, ultra wide angle, 35mm",
};

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

int main(int argc, char **argv) {
    char path[4096];
    const char *shared = getenv("SL_SHARED_DIR");
    if (argc > 1) snprintf(path, sizeof path, "%s", argv[1]);
    else snprintf(path, sizeof path, "%s/sd15/tokenizer", shared && *shared ? shared : "../shared");
    int n = argc > 2 ? atoi(argv[2]) : 4000;
    if (n < 1) n = 1;

    SlCtx ctx;
    sl_ctx_init(&ctx);
    SlTokenizer *tok = NULL;
    double t0 = now_s();
    if (sl_tokenizer_load(&tok, path, &ctx) != SL_OK) {
        fprintf(stderr, "bench_tokenizer: %s\n", ctx.msg);
        return 1;
    }
    double t_load = now_s() - t0;

    char (*text)[1024] = malloc(sizeof *text * (size_t)n);
    if (!text) return 1;
    for (int i = 0; i < n; i++) snprintf(text[i], sizeof text[i], "%s variant %d", PROMPTS[i % 8], i);
    int32_t ids[77];
    long tokens = 0;
    t0 = now_s();
    for (int i = 0; i < n; i++) {
        int n_real = 0;
        if (sl_tokenizer_encode(tok, text[i], ids, 77, &n_real, &ctx) != SL_OK) {
            fprintf(stderr, "bench_tokenizer: %s\n", ctx.msg);
            return 1;
        }
        tokens += n_real;
    }
    double dt = now_s() - t0;
    printf("tokenizer %s: vocab %d, merges %d, load %.3f s\n", path, sl_tokenizer_vocab_size(tok),
           sl_tokenizer_n_merges(tok), t_load);
    printf("C encode: %d prompts, %ld tokens (incl. BOS/EOS), %.3f s, %.0f prompts/s, %.0f tokens/s\n", n, tokens,
           dt, n / dt, tokens / dt);
    printf("(python reference, no cache: /usr/bin/python3 tests/reference/clip_tokenizer_ref.py --bench %d)\n", n);
    free(text);
    sl_tokenizer_free(tok);
    return 0;
}
