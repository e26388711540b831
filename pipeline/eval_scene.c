/* eval_scene.c - prompt fidelity on the shapes domain: the caption parser, the
 * object detector and the fidelity score (see eval.h for the contract).
 *
 * The detector is deliberately simple geometry, tuned on plain renders of
 * tools/shapes/scene.py and checked on the example styles (outline, hatch,
 * neon) by tests/test_eval.c:
 *   1. background palette: the median colour of a 2-pixel border ring, a second
 *      border colour if >= 15% of the ring is far from the first (hatching),
 *      and black if the border is dark (neon's vignette fades to black inside);
 *   2. foreground: distance to the nearest palette segment > SEG_THRESHOLD;
 *      then, per blob, only pixels above half the blob's 95th-percentile
 *      distance (the true edge of an antialiased shape; strips neon glow and
 *      pale outline fills);
 *   3. 8-connected components; holes filled; components lying inside another
 *      one's holes (a neon ring's inner line) are folded into it;
 *   4. shape from the filled region: vertical asymmetry -> triangle; a full
 *      bounding box or filled inner corners -> square; fill ratio >= 0.67 ->
 *      fat cross (empty corners, full middle row/column), else ring or disc by
 *      the radius (lower quartile over 16 rays, in units of the equivalent
 *      radius, on the step-2 mask) where the foreground starts: ~0.55 for
 *      a ring, 0 for a disc, >= 0.7 for a neon (outline-only) disc; below 0.67
 *      -> cross if the middle row and column are full, else star;
 *   5. colour from every non-background pixel of the filled region: hue of the
 *      most chromatic ones against the seven chromatic COLOURS, or, for grey
 *      components, lightness (white / gray / black), ignoring minority ink and
 *      paper pixels.
 * Measured (tests/test_eval.c prints it): main object colour AND shape right
 * on 98% of plain renders; 68% / 67% / 66% on outline / hatch / neon (grey
 * objects change lightness in those styles; small neon rings fill in).
 *
 * Dimension letters: H height, W width, C channels.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "core/tensor.h"
#include "pipeline/eval.h"

/* tools/shapes/scene.py COLOURS (same order, same RGB): keep in sync. */
static const struct { const char *name; uint8_t rgb[3]; } COLOURS[SL_EVAL_N_COLOURS] = {
    {"red", {220, 40, 40}},     {"green", {40, 165, 60}},   {"blue", {40, 80, 220}},
    {"yellow", {245, 215, 40}}, {"orange", {245, 135, 20}}, {"purple", {135, 50, 180}},
    {"white", {245, 245, 245}}, {"black", {25, 25, 25}},    {"pink", {245, 135, 185}},
    {"gray", {128, 128, 128}},
};
enum { C_WHITE = 6, C_BLACK = 7, C_GRAY = 9 };
/* scene.py SHAPES and PLURAL */
static const char *SHAPES[SL_EVAL_N_SHAPES] = {"circle", "square", "triangle", "star", "ring", "cross"};
static const char *PLURAL[SL_EVAL_N_SHAPES] = {"circles", "squares", "triangles", "stars", "rings", "crosses"};

#define SEG_THRESHOLD 56.0f   /* RGB distance from the background palette */
#define CHROMA_MIN 40.0f      /* p75 chroma below this: a grey object */
#define RING_START_MIN 0.25f  /* ring: foreground starts between these radii (x equivalent radius) */
#define RING_START_MAX 0.66f

const char *sl_eval_colour_name(int c) { return c >= 0 && c < SL_EVAL_N_COLOURS ? COLOURS[c].name : "?"; }
const char *sl_eval_shape_name(int s) { return s >= 0 && s < SL_EVAL_N_SHAPES ? SHAPES[s] : "?"; }
void sl_eval_colour_rgb(int c, uint8_t rgb[3]) { memcpy(rgb, COLOURS[c].rgb, 3); }

/* ------------------------------------------------------------ captions */
typedef struct Toks {
    char buf[512];
    char *t[64];
    int n, i;
} Toks;

static int tok_is(Toks *k, const char *w) { return k->i < k->n && strcmp(k->t[k->i], w) == 0; }
static int tok_eat(Toks *k, const char *w) {
    if (!tok_is(k, w)) return 0;
    k->i++;
    return 1;
}
static SlStatus tok_bad(Toks *k, const char *caption, const char *want, SlCtx *ctx) {
    return sl_fail(ctx, SL_ERR_FORMAT, "caption \"%s\": expected %s at word %d (\"%s\")", caption, want, k->i + 1,
                   k->i < k->n ? k->t[k->i] : "<end>");
}

static int find_word(const char *const *list, int n, const char *w) {
    for (int i = 0; i < n; i++)
        if (strcmp(list[i], w) == 0) return i;
    return -1;
}

static int colour_index(const char *w) {
    for (int i = 0; i < SL_EVAL_N_COLOURS; i++)
        if (strcmp(COLOURS[i].name, w) == 0) return i;
    return -1;
}

/* COUNT SIZE COLOUR NOUN */
static SlStatus parse_group(SlSceneGroup *g, Toks *k, const char *cap, SlCtx *ctx) {
    static const char *counts[] = {"a", "two", "three"}, *sizes[] = {"small", "medium", "large"};
    if (k->i >= k->n || (g->count = find_word(counts, 3, k->t[k->i]) + 1) == 0)
        return tok_bad(k, cap, "a count (a/two/three)", ctx);
    k->i++;
    if (k->i >= k->n || (g->size = find_word(sizes, 3, k->t[k->i])) < 0) return tok_bad(k, cap, "a size", ctx);
    k->i++;
    if (k->i >= k->n || (g->colour = colour_index(k->t[k->i])) < 0) return tok_bad(k, cap, "a colour", ctx);
    k->i++;
    const char *const *nouns = g->count == 1 ? SHAPES : PLURAL;
    if (k->i >= k->n || (g->shape = find_word(nouns, SL_EVAL_N_SHAPES, k->t[k->i])) < 0)
        return tok_bad(k, cap, g->count == 1 ? "a shape" : "a plural shape", ctx);
    k->i++;
    return SL_OK;
}

SlStatus sl_eval_parse_caption(SlSceneCaption *out, const char *caption, SlCtx *ctx) {
    memset(out, 0, sizeof *out);
    Toks k;
    memset(&k, 0, sizeof k);
    const char *s = caption, *comma = strchr(caption, ',');
    if (comma) s = comma + 1; /* "trigger, caption" */
    if (strlen(s) >= sizeof k.buf) return sl_fail(ctx, SL_ERR_FORMAT, "caption too long (%zu bytes)", strlen(s));
    strcpy(k.buf, s);
    for (char *save = NULL, *w = strtok_r(k.buf, " \t\r\n", &save); w; w = strtok_r(NULL, " \t\r\n", &save)) {
        if (k.n == 64) return sl_fail(ctx, SL_ERR_FORMAT, "caption \"%s\": too many words", caption);
        k.t[k.n++] = w;
    }
    if (!k.n) return sl_fail(ctx, SL_ERR_FORMAT, "empty caption");
    SL_TRY(parse_group(&out->g[0], &k, caption, ctx));
    out->n_groups = 1;
    out->kind = out->g[0].count == 1 ? 0 : 1;
    if (tok_is(&k, "above") || tok_is(&k, "below") || tok_is(&k, "to")) { /* pair */
        if (tok_eat(&k, "to")) {
            tok_eat(&k, "the");
            if (!tok_eat(&k, "left") && !tok_eat(&k, "right")) return tok_bad(&k, caption, "left/right", ctx);
            if (!tok_eat(&k, "of")) return tok_bad(&k, caption, "\"of\"", ctx);
        } else {
            k.i++;
        }
        SL_TRY(parse_group(&out->g[1], &k, caption, ctx));
        out->n_groups = 2;
        out->kind = 2;
    } else if (k.i + 1 < k.n && (tok_is(&k, "at") || tok_is(&k, "in") ||
                                 (tok_is(&k, "on") && strcmp(k.t[k.i + 1], "the") == 0))) {
        static const char *where[] = {"left", "right", "top", "bottom", "center"};
        k.i++;
        if (!tok_eat(&k, "the")) return tok_bad(&k, caption, "\"the\"", ctx);
        if (k.i >= k.n || find_word(where, 5, k.t[k.i]) < 0) return tok_bad(&k, caption, "a place", ctx);
        k.i++;
    }
    if (!tok_eat(&k, "on")) return tok_bad(&k, caption, "\"on\"", ctx);
    if (!tok_eat(&k, "a") && !tok_eat(&k, "an")) return tok_bad(&k, caption, "a/an", ctx);
    if (k.i >= k.n || (out->bg = colour_index(k.t[k.i])) < 0) return tok_bad(&k, caption, "a background colour", ctx);
    k.i++;
    if (!tok_eat(&k, "background")) return tok_bad(&k, caption, "\"background\"", ctx);
    if (k.i != k.n) return tok_bad(&k, caption, "the end", ctx);
    return SL_OK;
}

/* ------------------------------------------------------------ pixels */
static float hue_of(float r, float g, float b, float *chroma) {
    float mx = fmaxf(r, fmaxf(g, b)), mn = fminf(r, fminf(g, b)), c = mx - mn, h;
    *chroma = c;
    if (c <= 0) return 0;
    if (mx == r) h = 60.0f * fmodf((g - b) / c + 6.0f, 6.0f);
    else if (mx == g) h = 60.0f * ((b - r) / c + 2.0f);
    else h = 60.0f * ((r - g) / c + 4.0f);
    return h;
}

static float luma_of(const float p[3]) { return 0.299f * p[0] + 0.587f * p[1] + 0.114f * p[2]; }

static int nearest_rgb(const float p[3]) {
    int best = 0;
    float bd = 1e30f;
    for (int i = 0; i < SL_EVAL_N_COLOURS; i++) {
        float d = 0;
        for (int c = 0; c < 3; c++) d += (p[c] - COLOURS[i].rgb[c]) * (p[c] - COLOURS[i].rgb[c]);
        if (d < bd) { bd = d; best = i; }
    }
    return best;
}

/* Distance from p to segment [a, b]. */
static float seg_dist(const float p[3], const float a[3], const float b[3]) {
    float ab[3], ap[3], den = 0, t = 0, d = 0;
    for (int c = 0; c < 3; c++) { ab[c] = b[c] - a[c]; ap[c] = p[c] - a[c]; den += ab[c] * ab[c]; t += ab[c] * ap[c]; }
    t = den > 0 ? fminf(fmaxf(t / den, 0.0f), 1.0f) : 0.0f;
    for (int c = 0; c < 3; c++) { float e = ap[c] - t * ab[c]; d += e * e; }
    return sqrtf(d);
}

static int cmp_float(const void *a, const void *b) {
    float x = *(const float *)a, y = *(const float *)b;
    return (x > y) - (x < y);
}

/* Per-channel median of the n pixels px[n][3] into out (sorts a copy). */
static void median_rgb(float out[3], const float *px, int n, float *tmp) {
    for (int c = 0; c < 3; c++) {
        for (int i = 0; i < n; i++) tmp[i] = px[3 * i + c];
        qsort(tmp, (size_t)n, sizeof(float), cmp_float);
        out[c] = tmp[n / 2];
    }
}

/* ------------------------------------------------------------ detector */
typedef struct Comp {
    int area, x0, y0, x1, y1, filled;
    float fcx, fcy;         /* centroid of the filled region */
    int label, dropped;
} Comp;

/* The background palette (up to 3 colours) from the border ring. */
static int background_palette(float pal[3][3], const float *rgb, int W, int H, float *tmp, float *tmp2) {
    int n = 0;
    for (int y = 0; y < H; y++)
        for (int x = 0; x < W; x++)
            if (x < 2 || y < 2 || x >= W - 2 || y >= H - 2) memcpy(tmp + 3 * n++, rgb + 3 * (y * W + x), 3 * sizeof(float));
    median_rgb(pal[0], tmp, n, tmp2);
    int np = 1, m = 0;
    for (int i = 0; i < n; i++) {
        float d = 0;
        for (int c = 0; c < 3; c++) d += (tmp[3 * i + c] - pal[0][c]) * (tmp[3 * i + c] - pal[0][c]);
        if (d > 25.0f * 25.0f) memmove(tmp + 3 * m++, tmp + 3 * i, 3 * sizeof(float));
    }
    if (m >= n * 15 / 100 && m > 0) median_rgb(pal[np++], tmp, m, tmp2);
    if (luma_of(pal[0]) < 60.0f) { pal[np][0] = pal[np][1] = pal[np][2] = 0.0f; np++; }
    return np;
}

/* Shape of component k from the filled regions fill (H, W) and the
 * foreground mask fg (H, W) used for the ring test. */
static int classify_shape(const Comp *k, const uint8_t *fill, const uint8_t *fg, int W, int H) {
    int bw = k->x1 - k->x0 + 1, bh = k->y1 - k->y0 + 1;
    float fillr = (float)k->filled / (float)(bw * bh);
    float aspect = (float)bw / (float)bh;
    float asym = (k->fcy - 0.5f * (float)(k->y0 + k->y1)) / (float)bh; /* > 0: mass low: apex up */
    /* a cross fills its bbox's middle row and column; a star does not */
    int yc = (k->y0 + k->y1) / 2, xc = (k->x0 + k->x1) / 2, nrow = 0, ncol = 0;
    for (int x = k->x0; x <= k->x1; x++) nrow += fill[yc * W + x];
    for (int y = k->y0; y <= k->y1; y++) ncol += fill[y * W + xc];
    float mid = fminf((float)nrow / (float)bw, (float)ncol / (float)bh);
    if (asym > 0.10f && fillr < 0.70f) return SL_SHAPE_TRIANGLE;
    /* square: (nearly) full bbox, or all four corners one pixel in still filled */
    int corners = bw >= 3 && bh >= 3 && fill[(k->y0 + 1) * W + k->x0 + 1] && fill[(k->y0 + 1) * W + k->x1 - 1] &&
                  fill[(k->y1 - 1) * W + k->x0 + 1] && fill[(k->y1 - 1) * W + k->x1 - 1];
    if ((fillr >= 0.89f || (fillr >= 0.7f && corners)) && aspect > 0.75f && aspect < 1.33f) return SL_SHAPE_SQUARE;
    if (fillr >= 0.67f) {
        /* a fat cross (thick outlines) has empty bbox corners; a disc does not */
        int cw = bw / 4 > 1 ? bw / 4 : 1, chh = bh / 4 > 1 ? bh / 4 : 1, nc = 0;
        for (int y = 0; y < chh; y++)
            for (int x = 0; x < cw; x++)
                nc += fill[(k->y0 + y) * W + k->x0 + x] + fill[(k->y0 + y) * W + k->x1 - x] +
                      fill[(k->y1 - y) * W + k->x0 + x] + fill[(k->y1 - y) * W + k->x1 - x];
        if ((float)nc / (float)(4 * cw * chh) < 0.04f && mid >= 0.9f) return SL_SHAPE_CROSS;
        /* ring or disc: where does the foreground start along 16 rays? The
         * lower quartile, so that gaps between hatch stripes do not count */
        float R = sqrtf((float)k->filled / 3.14159265f), starts[16];
        for (int r = 0; r < 16; r++) {
            float a = 2.0f * 3.14159265f * (float)r / 16.0f, st = 1.0f;
            for (float rho = 0.0f; rho <= 1.0f; rho += 0.25f / R) {
                int x = (int)lroundf(k->fcx + rho * R * cosf(a)), y = (int)lroundf(k->fcy + rho * R * sinf(a));
                if (x < 0 || y < 0 || x >= W || y >= H) break;
                if (fg[y * W + x]) { st = rho; break; }
            }
            starts[r] = st;
        }
        qsort(starts, 16, sizeof(float), cmp_float);
        if (starts[4] > RING_START_MIN && starts[4] < RING_START_MAX) return SL_SHAPE_RING;
        return SL_SHAPE_CIRCLE;
    }
    return mid >= 0.9f ? SL_SHAPE_CROSS : SL_SHAPE_STAR;
}

/* Colour of the component from its pixels px[n][3] (scratch tmp[n]). */
static int classify_colour(const float *px, int n, float *tmp) {
    for (int i = 0; i < n; i++) {
        float ch;
        hue_of(px[3 * i], px[3 * i + 1], px[3 * i + 2], &ch);
        tmp[i] = ch;
    }
    qsort(tmp, (size_t)n, sizeof(float), cmp_float);
    if (n == 0) return C_GRAY;
    float p75 = tmp[(3 * n) / 4];
    if (p75 >= CHROMA_MIN) {
        double sx = 0, sy = 0;
        for (int i = 0; i < n; i++) {
            float ch, h = hue_of(px[3 * i], px[3 * i + 1], px[3 * i + 2], &ch);
            if (ch < 0.5f * p75) continue;
            sx += ch * cos(h * M_PI / 180.0);
            sy += ch * sin(h * M_PI / 180.0);
        }
        double h = atan2(sy, sx) * 180.0 / M_PI;
        if (h < 0) h += 360.0;
        int best = 0;
        double bd = 1e30;
        for (int c = 0; c < SL_EVAL_N_COLOURS; c++) {
            if (c == C_WHITE || c == C_BLACK || c == C_GRAY) continue;
            float cc, hc = hue_of(COLOURS[c].rgb[0], COLOURS[c].rgb[1], COLOURS[c].rgb[2], &cc);
            double d = fabs(h - hc);
            if (d > 180) d = 360 - d;
            if (d < bd) { bd = d; best = c; }
        }
        return best;
    }
    /* grey: lightness, ignoring a minority of ink (< 40) and paper (> 235) */
    int n_ink = 0, n_paper = 0, m = 0;
    for (int i = 0; i < n; i++) {
        float l = luma_of(px + 3 * i);
        n_ink += l < 40.0f;
        n_paper += l > 235.0f;
    }
    for (int i = 0; i < n; i++) {
        float l = luma_of(px + 3 * i);
        if ((l < 40.0f && 2 * n_ink < n) || (l > 235.0f && 2 * n_paper < n)) continue;
        tmp[m++] = l;
    }
    if (!m) for (int i = 0; i < n; i++) tmp[m++] = luma_of(px + 3 * i);
    qsort(tmp, (size_t)m, sizeof(float), cmp_float);
    float l = tmp[m / 2];
    return l > 200.0f ? C_WHITE : l < 70.0f ? C_BLACK : C_GRAY;
}

SlStatus sl_eval_detect(SlDetection *out, const SlImage *img, SlCtx *ctx) {
    memset(out, 0, sizeof *out);
    if (!img || !img->data || (img->c != 3 && img->c != 4))
        return sl_fail(ctx, SL_ERR_ARG, "eval detect: need an RGB or RGBA image");
    if (img->w < 16 || img->h < 16 || img->w > 4096 || img->h > 4096)
        return sl_fail(ctx, SL_ERR_ARG, "eval detect: image %dx%d is outside 16x16..4096x4096", img->w, img->h);
    const int W = img->w, H = img->h, N = W * H;
    const size_t NG = (size_t)(W + 2) * (size_t)(H + 2); /* a bbox grown by 1 */
    size_t bytes = (size_t)N * (3 * sizeof(float) * 2 + 3 * sizeof(float) + sizeof(int) + 2) + NG * (sizeof(int) + 1);
    uint8_t *mem = sl_alloc(bytes);
    if (!mem) return sl_fail(ctx, SL_ERR_NOMEM, "eval detect: out of memory (%dx%d)", W, H);
    float *rgb = (float *)mem;                 /* (H, W, 3) */
    float *px = rgb + 3 * (size_t)N;           /* (N, 3) scratch: border / component pixels */
    float *tmp = px + 3 * (size_t)N;           /* (N) scratch */
    float *tmp2 = tmp + N;                     /* (N) scratch */
    float *dist = tmp2 + N;                    /* (H, W) distance to the background palette */
    int *label = (int *)(dist + N);            /* (H, W): component id + 1, 0 = background */
    int *queue = label + N;                    /* (NG) flood-fill queue */
    uint8_t *raw = (uint8_t *)(queue + NG);    /* (H, W) foreground (components come from it) */
    uint8_t *cover = raw + N;                  /* (H, W) filled regions of kept components */
    uint8_t *work = cover + N;                 /* (NG) scratch mask */
    for (int i = 0; i < N; i++)
        for (int c = 0; c < 3; c++) rgb[3 * i + c] = img->data[(size_t)i * img->c + c];

    /* 1-2: background palette and foreground */
    float pal[3][3];
    int np = background_palette(pal, rgb, W, H, px, tmp);
    for (int c = 0; c < 3; c++) out->bg_rgb[c] = (uint8_t)lroundf(pal[0][c]);
    out->bg_colour = nearest_rgb(pal[0]);
    for (int i = 0; i < N; i++) {
        float d = seg_dist(rgb + 3 * i, pal[0], pal[0]);
        for (int a = 0; a < np; a++)
            for (int b = a + 1; b < np; b++) d = fminf(d, seg_dist(rgb + 3 * i, pal[a], pal[b]));
        dist[i] = d;
        raw[i] = d > SEG_THRESHOLD;
    }
    /* per blob half-maximum: keep pixels above half the blob's 95th-percentile
     * distance (the true edge of an antialiased shape; strips neon glow) */
    memset(label, 0, (size_t)N * sizeof(int));
    for (int s = 0; s < N; s++) {
        if (!raw[s] || label[s]) continue;
        int head = 0, tail = 0;
        label[s] = 1;
        queue[tail++] = s;
        while (head < tail) {
            int p = queue[head++], x = p % W, y = p / W;
            for (int dy = -1; dy <= 1; dy++)
                for (int dx = -1; dx <= 1; dx++) {
                    int xx = x + dx, yy = y + dy;
                    if (xx < 0 || yy < 0 || xx >= W || yy >= H) continue;
                    int q = yy * W + xx;
                    if (raw[q] && !label[q]) { label[q] = 1; queue[tail++] = q; }
                }
        }
        for (int i = 0; i < tail; i++) tmp[i] = dist[queue[i]];
        qsort(tmp, (size_t)tail, sizeof(float), cmp_float);
        float t = fmaxf(SEG_THRESHOLD, 0.5f * tmp[(95 * (tail - 1)) / 100]);
        for (int i = 0; i < tail; i++) raw[queue[i]] = dist[queue[i]] > t;
    }

    /* 3: components */
    Comp comps[256];
    int nc = 0;
    memset(label, 0, (size_t)N * sizeof(int));
    const int min_area = N / 400 > 4 ? N / 400 : 4;
    for (int s = 0; s < N; s++) {
        if (!raw[s] || label[s]) continue;
        int head = 0, tail = 0, id = nc < 256 ? nc + 1 : -1;
        Comp k = {0, W, H, -1, -1, 0, 0, 0, id, 0};
        label[s] = id;
        queue[tail++] = s;
        while (head < tail) {
            int p = queue[head++], x = p % W, y = p / W;
            k.area++;
            if (x < k.x0) k.x0 = x;
            if (x > k.x1) k.x1 = x;
            if (y < k.y0) k.y0 = y;
            if (y > k.y1) k.y1 = y;
            for (int dy = -1; dy <= 1; dy++)
                for (int dx = -1; dx <= 1; dx++) {
                    int xx = x + dx, yy = y + dy;
                    if (xx < 0 || yy < 0 || xx >= W || yy >= H) continue;
                    int q = yy * W + xx;
                    if (raw[q] && !label[q]) { label[q] = id; queue[tail++] = q; }
                }
        }
        if (id > 0 && k.area >= min_area) comps[nc++] = k;
        else if (id > 0) { /* too small: unlabel so its id can be reused */
            for (int i = 0; i < tail; i++) label[queue[i]] = -1;
        }
    }
    /* largest first */
    for (int i = 1; i < nc; i++)
        for (int j = i; j > 0 && comps[j].area > comps[j - 1].area; j--) {
            Comp t = comps[j]; comps[j] = comps[j - 1]; comps[j - 1] = t;
        }
    memset(cover, 0, (size_t)N);
    for (int ci = 0; ci < nc && out->n < SL_EVAL_MAX_OBJECTS; ci++) {
        Comp *k = &comps[ci];
        /* inside a bigger component's holes: part of it (a neon ring's inner line) */
        int inside = 0;
        for (int y = k->y0; y <= k->y1 && !inside; y++)
            for (int x = k->x0; x <= k->x1 && !inside; x++)
                if (label[y * W + x] == k->label && cover[y * W + x]) inside = 1;
        if (inside) { k->dropped = 1; continue; }
        /* fill holes: flood the non-component pixels from the border of the bbox grown by 1 */
        int gx0 = k->x0 - 1, gy0 = k->y0 - 1, gw = k->x1 - k->x0 + 3, gh = k->y1 - k->y0 + 3, head = 0, tail = 0;
        uint8_t *outside = work; /* (gh, gw) */
        memset(outside, 0, (size_t)(gw * gh));
        #define IS_COMP(xx, yy) ((xx) >= 0 && (yy) >= 0 && (xx) < W && (yy) < H && label[(yy) * W + (xx)] == k->label)
        outside[0] = 1;
        queue[tail++] = 0;
        while (head < tail) {
            int p = queue[head++], x = p % gw, y = p / gw;
            static const int d4[4][2] = {{1, 0}, {-1, 0}, {0, 1}, {0, -1}};
            for (int d = 0; d < 4; d++) {
                int xx = x + d4[d][0], yy = y + d4[d][1];
                if (xx < 0 || yy < 0 || xx >= gw || yy >= gh) continue;
                int q = yy * gw + xx;
                if (!outside[q] && !IS_COMP(xx + gx0, yy + gy0)) { outside[q] = 1; queue[tail++] = q; }
            }
        }
        double sx = 0, sy = 0;
        int n_px = 0;
        for (int y = 1; y < gh - 1; y++)
            for (int x = 1; x < gw - 1; x++) {
                if (outside[y * gw + x]) continue;
                int X = x + gx0, Y = y + gy0;
                k->filled++;
                sx += X;
                sy += Y;
                cover[Y * W + X] = 1;
                /* colour from every non-background pixel of the filled region (outline
                 * fills and neon glow fall below the half-maximum cut) */
                if (dist[Y * W + X] > SEG_THRESHOLD) memcpy(px + 3 * n_px++, rgb + 3 * (Y * W + X), 3 * sizeof(float));
            }
        #undef IS_COMP
        k->fcx = (float)(sx / k->filled);
        k->fcy = (float)(sy / k->filled);
        SlDetObject *o = &out->obj[out->n++];
        o->area = k->area;
        o->x0 = k->x0; o->y0 = k->y0; o->x1 = k->x1; o->y1 = k->y1;
        o->cx = k->fcx;
        o->cy = k->fcy;
        o->colour = classify_colour(px, n_px, tmp);
        o->shape = classify_shape(k, cover, raw, W, H);
    }
    sl_free(mem);
    return SL_OK;
}

/* ------------------------------------------------------------ fidelity */
static float group_score(const SlDetection *det, const SlSceneGroup *g, int *colour_ok, int *shape_ok, int *both,
                         int *n_both) {
    int c = 0, s = 0, b = 0;
    for (int i = 0; i < det->n; i++) {
        int ci = det->obj[i].colour == g->colour, si = det->obj[i].shape == g->shape;
        c |= ci;
        s |= si;
        b += ci && si;
    }
    if (colour_ok) *colour_ok = c;
    if (shape_ok) *shape_ok = s;
    if (both) *both = b > 0;
    if (n_both) *n_both = b;
    return b ? 1.0f : (c || s) ? 0.5f : 0.0f;
}

void sl_eval_fidelity(SlFidelity *out, const SlDetection *det, const SlSceneCaption *cap) {
    memset(out, 0, sizeof *out);
    int nb = 0;
    out->score = group_score(det, &cap->g[0], &out->colour_ok, &out->shape_ok, &out->both_ok, &nb);
    out->count_ok = nb == cap->g[0].count;
    out->score_second = cap->n_groups > 1 ? group_score(det, &cap->g[1], NULL, NULL, NULL, NULL) : NAN;
}
