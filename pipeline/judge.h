/* judge.h - the emoji fidelity judge (issue 19): which of the model's emoji an image shows.
 *
 * A small image-embedding net trained by tools/emoji/judge.py and exported as a folder
 * JUDGE/ = {config.json, model.safetensors, classes.tsv} (models/emoji64/judge/):
 *   x         RGB [1,3,S,S] in [-1, 1] (x = u8 / 127.5 - 1), S = image_size (64)
 *   stem      conv3x3 3->C0 stride stem_stride pad 1, GroupNorm(G), SiLU
 *   blocks.i  (i = 0..2) conv3x3 Ci->Ci+1 stride 2 pad 1, GroupNorm, SiLU,
 *             conv3x3 Ci+1->Ci+1 stride 1 pad 1, GroupNorm, SiLU
 *   mean over H,W -> proj (linear C3->E) -> L2-normalised embedding e [E]
 *   score j   = cos(e, classes[j]), classes [N,E] (rows renormalised after widening)
 * Class j is line j of classes.tsv, `unified<TAB>caption`.
 *
 * Images of another size than S x S are area-resized to S x S first (non-square ones
 * squashed, as eval_style.c does); only RGB (c = 3) is taken, RGBA is refused (read
 * images with channels = 3, which composites alpha on white as the training data was).
 * Each image runs alone (batch 1), so an embedding never depends on the other images of
 * the call; the kernels give the same bits for any thread count.
 *
 * Dimension letters: S image side, C channels, G groups, E embedding width, N classes.
 *
 * Not here: which prompts are scored or what the figures mean (tools/cmd_eval.c), training
 * (tools/emoji/judge.py).
 */
#ifndef SL_PIPELINE_JUDGE_H
#define SL_PIPELINE_JUDGE_H

#include "core/image.h"
#include "core/status.h"

typedef struct SlJudgeConfig {
    int image_size;   /* S: "image_size" (default 64) */
    int channels[4];  /* C0..C3: "channels" */
    int stem_stride;  /* "stem_stride" (default 2) */
    int groups;       /* G: "norm_num_groups" */
    float eps;        /* "norm_eps" (default 1e-5) */
    int embed_dim;    /* E: "embed_dim" */
    int num_classes;  /* N: "num_classes", also the rows of `classes` and the lines of classes.tsv */
} SlJudgeConfig;

typedef struct SlJudge SlJudge;

/* Loads the judge folder dir: config.json, model.safetensors (F16, BF16 or F32, widened to
 * fp32) and classes.tsv. Any fault (a missing file, a bad or missing config key, a missing,
 * misshapen, non-float or non-finite tensor, a class count that disagrees with the config,
 * a malformed or duplicated classes.tsv line) fails with a message naming the file (and the
 * key, tensor or line). Tensors the judge does not use are logged as warnings. On success
 * *out is the caller's (sl_judge_free); on failure *out is NULL. */
SlStatus sl_judge_load(SlJudge **out, const char *dir, SlCtx *ctx);
void sl_judge_free(SlJudge *j);

const SlJudgeConfig *sl_judge_config(const SlJudge *j);
/* Class i's caption / unified code as written in classes.tsv (0 <= i < N). */
const char *sl_judge_class_caption(const SlJudge *j, int i);
const char *sl_judge_class_unified(const SlJudge *j, int i);

/* emb [n,E] = the unit embeddings of imgs[0..n) (RGB 8-bit, any size: see above).
 * Uses the judge's own buffers: one call at a time per judge. SL_ERR_ARG for an image
 * that is not RGB or is empty (naming its index). */
SlStatus sl_judge_embed(SlJudge *j, const SlImage *imgs, int n, float *emb, SlCtx *ctx);

/* scores [n,N] = cosines of emb [n,E] with every class; top [n,k] (may be NULL) the k best
 * class indices of each row, best first, ties to the lower index. SL_ERR_ARG unless
 * 1 <= k <= N when top is given. Deterministic; no allocation. */
SlStatus sl_judge_rank(const SlJudge *j, const float *emb, int n, float *scores, int k, int *top, SlCtx *ctx);

/* The place of class cls in one row of scores [N] under sl_judge_rank's order: 0 when it
 * is the best, so it is in the top k exactly when the result is < k. */
int sl_judge_class_place(const SlJudge *j, const float *scores_row, int cls);

/* The class a prompt asks for, or -1: the prompt trimmed and lower-cased (ASCII) equal to a
 * class caption (compared the same way); else the text up to and including the first ", "
 * is dropped and the rest tried again, repeatedly ("nenmoji, a red apple, food" finds
 * "a red apple, food", then would try "food"). A prompt that finds nothing is tried again
 * without its trailing ", <CLDR skin tone>" segments (a skin-tone variation's caption,
 * "a father christmas, medium skin tone", finds its base emoji's class). */
int sl_judge_find_class(const SlJudge *j, const char *prompt);

#endif
