/* eval.h - measuring a style adapter (issue 10): a style distance between two
 * image sets, and prompt fidelity on the shipped shapes domain.
 *
 * Style distance (eval_style.c). Each set is summarised by per-image features
 * averaged over the set (so the summary does not depend on the set size):
 * the Gram matrices of three fixed random convolution layers (seeded
 * He-normal weights, ReLU, strides 1/2/2) run on the image area-resized to
 * 64x64, centred and contrast-normalised (texture, not colour); the channel
 * means and standard deviations; a saturation histogram; a gradient-magnitude
 * histogram; a magnitude-weighted edge-orientation histogram; the fraction of
 * dark pixels and the fraction of edge pixels that are dark ink. The distance
 * is the mean of seven terms, each in [0, 1] or near it and free of the image
 * count and of the Gram scale:
 *   gram    mean over layers of |Ga - Gb|_F / (0.5 (|Ga|_F + |Gb|_F))
 *   colour  mean over channels of |mean_a - mean_b| + |std_a - std_b|
 *   sat, grad, orient   total-variation distances of the histograms
 *   dark, ink           absolute differences of the fractions
 * 0 = identical statistics. A finite set is a noisy estimate: two disjoint
 * halves of one style's 32 images score 0.04-0.10, 48 plain renders 0.11,
 * while different styles score 0.25-0.52 apart (tests/test_eval.c checks the
 * 1.5x margin). Compare sets of equal size; `stylora eval` prints the
 * reference's own halves distance as the noise floor.
 *
 * Prompt fidelity, emoji models (pipeline/judge.h, not here): when the model folder has
 * judge/ or `stylora eval --judge DIR` names one, tools/cmd_eval.c measures prompt
 * fidelity with it instead of the scene detector below: the share of images whose
 * prompt's emoji is among the judge's 5 best of all its classes (prompt_fidelity_*),
 * and the share where it is the best (prompt_fidelity_top1_*); prompts that name no
 * class are skipped and counted. Chance is 5/N and 1/N (N = 1,911 classes).
 *
 * Prompt fidelity, the shapes domain (eval_scene.c). Captions follow tools/shapes/scene.py's
 * grammar (an optional "trigger, " prefix is skipped):
 *   single  "a large red circle [on the left|...] on a yellow background"
 *   group   "two small green stars [in the center|...] on a blue background"
 *   pair    "two small red circles above a medium blue square on a yellow background"
 * The detector takes the background from the image border, keeps pixels far
 * from it (per blob, above half its peak contrast: the true edge of an
 * antialiased shape), labels connected components, fills their holes, and
 * classifies each one's colour (hue of the chromatic pixels, lightness of grey
 * ones, against scene.py's COLOURS) and shape (fill ratio of the bounding box,
 * vertical asymmetry, corners, middle row/column, and where the foreground
 * starts along rays from the centre for rings). fidelity = 1 if a component
 * has the main (first) group's colour AND shape, 0.5 if one has its colour or
 * one has its shape, else 0. Counts are a separate figure (count_ok). The
 * score has a chance level: pure noise images score about 0.3 (spurious
 * blobs match colour or shape), so read it against the base model's figure.
 *
 * Dimension letters: H height, W width, C channels (images are (H, W, C) 8-bit).
 *
 * Not here: sampling images (tools/cmd_eval.c does that), the emoji judge
 * (pipeline/judge.h), CLIP-based scores.
 */
#ifndef SL_PIPELINE_EVAL_H
#define SL_PIPELINE_EVAL_H

#include <stdint.h>

#include "core/image.h"
#include "core/status.h"

/* ------------------------------------------------------------ the domain */
enum { SL_EVAL_N_COLOURS = 10, SL_EVAL_N_SHAPES = 6, SL_EVAL_MAX_OBJECTS = 16 };

typedef enum SlShape {
    SL_SHAPE_CIRCLE = 0, SL_SHAPE_SQUARE, SL_SHAPE_TRIANGLE, SL_SHAPE_STAR, SL_SHAPE_RING, SL_SHAPE_CROSS
} SlShape;

/* Names in scene.py's order: colours red green blue yellow orange purple white
 * black pink gray; shapes circle square triangle star ring cross. */
const char *sl_eval_colour_name(int colour);
const char *sl_eval_shape_name(int shape);
/* scene.py's RGB of a colour index. */
void sl_eval_colour_rgb(int colour, uint8_t rgb[3]);

typedef struct SlSceneGroup {
    int colour, shape, count; /* count 1..3 */
    int size;                 /* 0 small, 1 medium, 2 large */
} SlSceneGroup;

typedef struct SlSceneCaption {
    int kind;                 /* 0 single, 1 group, 2 pair */
    int n_groups;             /* 1, or 2 for a pair */
    SlSceneGroup g[2];        /* g[0] is the main object */
    int bg;                   /* background colour */
} SlSceneCaption;

/* Parses a caption of the scene grammar. A leading "word, " (trigger) and
 * trailing whitespace/newline are skipped. SL_ERR_FORMAT names the first word
 * that does not fit. */
SlStatus sl_eval_parse_caption(SlSceneCaption *out, const char *caption, SlCtx *ctx);

/* ------------------------------------------------------------ the detector */
typedef struct SlDetObject {
    int colour, shape;
    int area;                 /* pixels of the component (holes not counted) */
    float cx, cy;             /* centroid */
    int x0, y0, x1, y1;       /* bounding box, inclusive */
} SlDetObject;

typedef struct SlDetection {
    uint8_t bg_rgb[3];        /* median border colour */
    int bg_colour;            /* nearest named colour of bg_rgb */
    int n;                    /* objects kept (largest first) */
    SlDetObject obj[SL_EVAL_MAX_OBJECTS];
} SlDetection;

/* Finds the objects of an RGB or RGBA image (alpha ignored), 16x16 to 4096x4096
 * (SL_ERR_ARG outside). Deterministic; no global state.
 * Components smaller than 0.25% of the image are dropped. */
SlStatus sl_eval_detect(SlDetection *out, const SlImage *img, SlCtx *ctx);

typedef struct SlFidelity {
    float score;              /* main group: 1 colour+shape, 0.5 one of them, 0 none */
    int colour_ok, shape_ok;  /* main group's colour / shape seen on some object */
    int both_ok;              /* one object has both */
    int count_ok;             /* objects with both == the caption's count */
    float score_second;       /* the same score for a pair's second group (NAN otherwise) */
} SlFidelity;

void sl_eval_fidelity(SlFidelity *out, const SlDetection *det, const SlSceneCaption *cap);

/* ------------------------------------------------------------ style distance */
enum { SL_STYLE_LAYERS = 3, SL_STYLE_HIST = 8 };

typedef struct SlStyleNet {
    int ch[SL_STYLE_LAYERS + 1];     /* 3, 16, 32, 32 */
    float *w[SL_STYLE_LAYERS];       /* [Co, Ci, 3, 3] each, owned */
} SlStyleNet;

/* Fixed random features from `seed` (the same seed gives the same net). */
SlStatus sl_style_net_init(SlStyleNet *net, uint64_t seed, SlCtx *ctx);
void sl_style_net_free(SlStyleNet *net);

typedef struct SlStyleStats {
    int n;                                   /* images summed */
    double gram[SL_STYLE_LAYERS][32 * 32];   /* sum of per-image Gram [C, C] (C <= 32) */
    double mean[3], std[3];                  /* sums of per-image channel mean / std in [0,1] */
    double sat[SL_STYLE_HIST];               /* sum of per-image saturation histograms */
    double grad[SL_STYLE_HIST];              /* sum of per-image gradient histograms */
    double orient[SL_STYLE_HIST];            /* sum of per-image edge-orientation histograms */
    double dark;                             /* sum of per-image dark-pixel fractions */
    double ink;                              /* sum of per-image fractions of edge pixels that are dark */
} SlStyleStats;

/* Zeroes the sums. */
void sl_style_stats_init(SlStyleStats *s);
/* Adds one image (RGB/RGBA, any size; resized to 64x64 first). */
SlStatus sl_style_stats_add(SlStyleStats *s, const SlStyleNet *net, const SlImage *img, SlCtx *ctx);

typedef struct SlStyleDistance {
    double total;                            /* mean of the seven terms below */
    double gram, colour, sat, grad, orient, dark, ink;
} SlStyleDistance;

/* Distance between two summaries (each with n >= 1; SL_ERR_ARG otherwise). */
SlStatus sl_style_distance(SlStyleDistance *out, const SlStyleStats *a, const SlStyleStats *b, SlCtx *ctx);

#endif
