/* judge.c - the emoji fidelity judge: loading, embedding, ranking, prompt -> class.
 *
 * One table of layers (their PyTorch keys) drives the weight plan, the loading and the
 * forward pass. Weights live in one arena, activations in another, both sized from the
 * config at load; sl_judge_embed allocates nothing but a resized copy of an image whose
 * size is not the judge's.
 *
 * Dimension letters: S image side, C channels, H/W feature size, G groups, E embedding
 * width, N classes, K the top-k asked for.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "core/config.h"
#include "core/file.h"
#include "core/tensor.h"
#include "core/weights.h"
#include "nn/nn.h"
#include "pipeline/judge.h"

#define JUDGE_LAYERS 7                          /* stem + 3 blocks x 2 convs */
#define JUDGE_TSV_MAX_BYTES (16u * 1024u * 1024u)
#define JUDGE_NORM_EPS 1e-12                     /* F.normalize's eps */

/* conv + GroupNorm + SiLU, keys "<conv>.weight/bias" and "<norm>.weight/bias" */
typedef struct JudgeLayer {
    float *conv_w;  /* <conv>.weight [Co,Ci,3,3] */
    float *conv_b;  /* <conv>.bias   [Co] */
    float *norm_w;  /* <norm>.weight [Co] */
    float *norm_b;  /* <norm>.bias   [Co] */
    SlConvDims d;   /* batch 1 */
} JudgeLayer;

/* The layers in forward order, by their state-dict prefixes. */
static const char *const LAYER_KEYS[JUDGE_LAYERS][2] = {
    {"stem.conv", "stem.norm"},           {"blocks.0.conv1", "blocks.0.norm1"}, {"blocks.0.conv2", "blocks.0.norm2"},
    {"blocks.1.conv1", "blocks.1.norm1"}, {"blocks.1.conv2", "blocks.1.norm2"}, {"blocks.2.conv1", "blocks.2.norm1"},
    {"blocks.2.conv2", "blocks.2.norm2"},
};

struct SlJudge {
    SlJudgeConfig cfg;
    SlKernels kern;
    char dir[1024];
    JudgeLayer layer[JUDGE_LAYERS];
    float *proj_w;      /* proj.weight [E,C3] */
    float *proj_b;      /* proj.bias   [E] */
    float *classes;     /* classes     [N,E], rows renormalised to unit length */
    float *weights;     /* the arena of everything above */
    /* activations (one arena) */
    float *x;           /* [3,S,S] the image in [-1,1] */
    float *h, *t;       /* [max Co*Ho*Wo] layer output / conv output */
    float *work;        /* conv workspace */
    float *gn_mean, *gn_rstd; /* [G] */
    float *pool;        /* [C3] */
    float *raw;         /* [E] before normalising */
    float *acts;
    /* classes.tsv */
    char *tsv;          /* the file, lines cut in place */
    char **unified;     /* (N) into tsv */
    char **caption;     /* (N) into tsv */
    char *lower_text;   /* the trimmed, lower-cased captions, one after another */
    char **lower;       /* (N) into lower_text */
    int *order;         /* (N) class indices sorted by lower */
};

/* ------------------------------------------------------------ text helpers */

static int is_space(char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\v' || c == '\f'; }
static char to_lower(char c) { return c >= 'A' && c <= 'Z' ? (char)(c - 'A' + 'a') : c; }

/* [*s, *s + *n) with ASCII whitespace trimmed from both ends. */
static void trim(const char **s, size_t *n) {
    while (*n && is_space(**s)) { (*s)++; (*n)--; }
    while (*n && is_space((*s)[*n - 1])) (*n)--;
}

/* strcmp of the lower-cased segment seg[0..n) against the NUL-terminated (lower-case) b. */
static int seg_cmp(const char *seg, size_t n, const char *b) {
    for (size_t i = 0; i < n; i++, b++) {
        const unsigned char x = (unsigned char)to_lower(seg[i]), y = (unsigned char)*b;
        if (!y || x != y) return y ? (x < y ? -1 : 1) : 1;
    }
    return *b ? -1 : 0;
}

/* ------------------------------------------------------------ config */

static SlStatus config_read(SlJudgeConfig *c, const char *path, SlCtx *ctx) {
    memset(c, 0, sizeof *c);
    SlConfig j;
    SL_TRY(sl_config_load(&j, path, ctx));
    SlStatus st = SL_OK;
    const char *name = NULL;
    static const char *const required[] = {"channels", "norm_num_groups", "embed_dim", "num_classes"};
    for (size_t i = 0; !st && i < sizeof required / sizeof *required; i++)
        if (!sl_config_has(&j, required[i]))
            st = sl_fail(ctx, SL_ERR_MISSING, "%s: key '%s' is missing (a judge config needs it)", path, required[i]);
    if (!st) st = sl_config_str(&j, "_class_name", "StyloraEmojiJudge", &name, ctx);
    if (!st && strcmp(name, "StyloraEmojiJudge") != 0)
        st = sl_fail(ctx, SL_ERR_FORMAT, "%s: _class_name '%s' is not a judge (StyloraEmojiJudge)", path, name);
    int64_t v, ch[5];
    int nch = 0;
    if (!st) st = sl_config_int(&j, "image_size", 64, 8, 1024, &v, ctx);
    if (!st) c->image_size = (int)v;
    if (!st) st = sl_config_int(&j, "stem_stride", 2, 1, 4, &v, ctx);
    if (!st) c->stem_stride = (int)v;
    if (!st) st = sl_config_int(&j, "norm_num_groups", 0, 1, 4096, &v, ctx);
    if (!st) c->groups = (int)v;
    if (!st) st = sl_config_int(&j, "embed_dim", 0, 1, 65536, &v, ctx);
    if (!st) c->embed_dim = (int)v;
    if (!st) st = sl_config_int(&j, "num_classes", 0, 1, 1000000, &v, ctx);
    if (!st) c->num_classes = (int)v;
    double eps = 0;
    if (!st) st = sl_config_num(&j, "norm_eps", 1e-5, &eps, ctx);
    if (!st && !(eps > 0 && eps < 1))
        st = sl_fail(ctx, SL_ERR_FORMAT, "%s: norm_eps %g is not in (0, 1)", path, eps);
    c->eps = (float)eps;
    if (!st) st = sl_config_int_list(&j, "channels", 1, 4096, ch, 5, &nch, ctx);
    if (!st && nch != 4)
        st = sl_fail(ctx, SL_ERR_FORMAT, "%s: channels has %d entries (the judge has 4: stem and three blocks)", path, nch);
    for (int i = 0; !st && i < 4; i++) {
        c->channels[i] = (int)ch[i];
        if (ch[i] % c->groups != 0)
            st = sl_fail(ctx, SL_ERR_FORMAT, "%s: channels[%d] = %d is not a multiple of norm_num_groups %d", path, i,
                         (int)ch[i], c->groups);
    }
    sl_config_free(&j);
    return st;
}

/* ------------------------------------------------------------ weights */

/* Layer l's input and output channels and stride: the stem 3 -> C0; block b's conv1
 * C(b) -> C(b+1) stride 2, its conv2 C(b+1) -> C(b+1) stride 1. */
static void layer_io(const SlJudgeConfig *c, int l, int *ci, int *co, int *stride) {
    const int blk = (l + 1) / 2; /* 0 stem, then 1, 1, 2, 2, 3, 3 */
    *co = c->channels[blk];
    *ci = l == 0 ? 3 : (l & 1) ? c->channels[blk - 1] : *co;
    *stride = l == 0 ? c->stem_stride : (l & 1) ? 2 : 1;
}

typedef struct JudgeSpec {
    char name[64];
    int ndim;
    int64_t shape[4];
    float **dst;
} JudgeSpec;

/* The tensor table of config c into spec (room for 4 * JUDGE_LAYERS + 3); returns the count. */
static int spec_table(SlJudge *j, JudgeSpec *spec) {
    const SlJudgeConfig *c = &j->cfg;
    int n = 0;
    for (int l = 0; l < JUDGE_LAYERS; l++) {
        int ci, co, stride;
        layer_io(c, l, &ci, &co, &stride);
        JudgeLayer *L = &j->layer[l];
        float **dst[4] = {&L->conv_w, &L->conv_b, &L->norm_w, &L->norm_b};
        for (int k = 0; k < 4; k++) {
            JudgeSpec *s = &spec[n++];
            snprintf(s->name, sizeof s->name, "%s.%s", LAYER_KEYS[l][k / 2], (k & 1) ? "bias" : "weight");
            s->ndim = k == 0 ? 4 : 1;
            s->shape[0] = co;
            s->shape[1] = ci;
            s->shape[2] = s->shape[3] = 3;
            s->dst = dst[k];
        }
    }
    spec[n++] = (JudgeSpec){"proj.weight", 2, {c->embed_dim, c->channels[3], 0, 0}, &j->proj_w};
    spec[n++] = (JudgeSpec){"proj.bias", 1, {c->embed_dim, 0, 0, 0}, &j->proj_b};
    spec[n++] = (JudgeSpec){"classes", 2, {c->num_classes, c->embed_dim, 0, 0}, &j->classes};
    return n;
}

static size_t spec_numel(const JudgeSpec *s) {
    size_t n = 1;
    for (int i = 0; i < s->ndim; i++) n *= (size_t)s->shape[i];
    return n;
}

/* Rounds a float count up to whole 64-byte lines, so every tensor starts aligned. */
static size_t round16(size_t n) { return (n + 15) & ~(size_t)15; }

static SlStatus weights_read(SlJudge *j, const char *path, SlCtx *ctx) {
    JudgeSpec spec[4 * JUDGE_LAYERS + 3];
    const int ns = spec_table(j, spec);
    size_t total = 0;
    for (int i = 0; i < ns; i++) total += round16(spec_numel(&spec[i]));
    j->weights = sl_alloc(total * sizeof(float));
    if (!j->weights) return sl_fail(ctx, SL_ERR_NOMEM, "%s: out of memory for %zu weights", path, total);
    float *p = j->weights;
    for (int i = 0; i < ns; i++) {
        *spec[i].dst = p;
        p += round16(spec_numel(&spec[i]));
    }
    SlWeights w;
    SL_TRY(sl_weights_open_file(&w, path, ctx));
    SlStatus st = SL_OK;
    for (int i = 0; !st && i < ns; i++) {
        const SlStFile *f = NULL;
        const SlStEntry *e = sl_weights_find_shaped(&w, spec[i].name, spec[i].ndim, spec[i].shape, &f, ctx);
        if (!e) { st = ctx->status; break; }
        if (e->dtype != SL_F16 && e->dtype != SL_BF16 && e->dtype != SL_F32) {
            st = sl_fail(ctx, SL_ERR_SHAPE, "%s: weight '%s' is %s (the judge takes F16, BF16 or F32)", path,
                         spec[i].name, sl_dtype_name(e->dtype));
            break;
        }
        st = sl_st_read_f32(f, e, *spec[i].dst, ctx);
        if (!st) st = sl_weights_check_finite(&w, "judge", spec[i].name, *spec[i].dst, spec_numel(&spec[i]), 0, ctx);
    }
    if (!st) sl_weights_report_unused(&w, 8, ctx);
    sl_weights_close(&w);
    /* rows widened from F16 are unit only to ~1e-3: make the scores true cosines */
    const int N = j->cfg.num_classes, E = j->cfg.embed_dim;
    for (int r = 0; !st && r < N; r++) {
        float *row = j->classes + (size_t)r * E;
        double s = 0;
        for (int e = 0; e < E; e++) s += (double)row[e] * row[e];
        if (!(s > 0)) { st = sl_fail(ctx, SL_ERR_NUMERIC, "%s: row %d of 'classes' is zero", path, r); break; }
        const double inv = 1.0 / sqrt(s);
        for (int e = 0; e < E; e++) row[e] = (float)(row[e] * inv);
    }
    return st;
}

/* ------------------------------------------------------------ classes.tsv */

typedef struct CaptionKey {
    const char *lower;
    int cls;
} CaptionKey;

static int caption_key_cmp(const void *a, const void *b) {
    const CaptionKey *x = a, *y = b;
    const int r = strcmp(x->lower, y->lower);
    return r ? r : (x->cls > y->cls) - (x->cls < y->cls);
}

/* j->order = the class indices sorted by lower-cased caption (equal ones by index). */
static SlStatus order_sort(SlJudge *j, SlCtx *ctx) {
    const int N = j->cfg.num_classes;
    CaptionKey *k = malloc((size_t)N * sizeof *k);
    if (!k) return sl_fail(ctx, SL_ERR_NOMEM, "out of memory");
    for (int i = 0; i < N; i++) k[i] = (CaptionKey){j->lower[i], i};
    qsort(k, (size_t)N, sizeof *k, caption_key_cmp);
    for (int i = 0; i < N; i++) j->order[i] = k[i].cls;
    free(k);
    return SL_OK;
}

static SlStatus classes_read(SlJudge *j, const char *path, SlCtx *ctx) {
    const int N = j->cfg.num_classes;
    size_t len = 0;
    SL_TRY(sl_read_file(path, JUDGE_TSV_MAX_BYTES, &j->tsv, &len, ctx));
    if (memchr(j->tsv, 0, len)) return sl_fail(ctx, SL_ERR_FORMAT, "%s: holds a NUL byte (not a text file)", path);
    int lines = 0;
    for (size_t i = 0; i < len; i++) lines += j->tsv[i] == '\n';
    if (len && j->tsv[len - 1] != '\n') lines++;
    if (lines != N)
        return sl_fail(ctx, SL_ERR_FORMAT, "%s: %d class line%s, but num_classes in config.json is %d", path, lines,
                       lines == 1 ? "" : "s", N);
    j->unified = calloc((size_t)N, sizeof *j->unified);
    j->caption = calloc((size_t)N, sizeof *j->caption);
    j->lower = calloc((size_t)N, sizeof *j->lower);
    j->order = calloc((size_t)N, sizeof *j->order);
    j->lower_text = malloc(len + 1);
    if (!j->unified || !j->caption || !j->lower || !j->order || !j->lower_text)
        return sl_fail(ctx, SL_ERR_NOMEM, "out of memory");
    char *s = j->tsv, *lt = j->lower_text;
    for (int i = 0; i < N; i++) {
        char *nl = strchr(s, '\n');
        if (nl) *nl = 0;
        size_t n = strlen(s);
        if (n && s[n - 1] == '\r') s[--n] = 0;
        char *tab = strchr(s, '\t');
        const char *u = s, *cap = tab ? tab + 1 : NULL;
        size_t un = tab ? (size_t)(tab - s) : 0, cn = cap ? strlen(cap) : 0;
        if (cap) trim(&cap, &cn);
        trim(&u, &un);
        if (!tab || strchr(tab + 1, '\t') || !un || !cn)
            return sl_fail(ctx, SL_ERR_FORMAT, "%s: line %d is not `unified<TAB>caption` (two non-empty fields): '%.60s'",
                           path, i + 1, s);
        *tab = 0;
        j->unified[i] = s;
        j->caption[i] = tab + 1;
        j->lower[i] = lt;
        for (size_t k = 0; k < cn; k++) *lt++ = to_lower(cap[k]);
        *lt++ = 0;
        s = nl ? nl + 1 : s + n;
    }
    SL_TRY(order_sort(j, ctx));
    for (int i = 1; i < N; i++)
        if (!strcmp(j->lower[j->order[i - 1]], j->lower[j->order[i]])) {
            int a = j->order[i - 1], b = j->order[i];
            return sl_fail(ctx, SL_ERR_FORMAT, "%s: lines %d and %d have the same caption '%s' (a prompt must name one class)",
                           path, (a < b ? a : b) + 1, (a < b ? b : a) + 1, j->caption[a]);
        }
    return SL_OK;
}

/* ------------------------------------------------------------ plan */

static SlStatus acts_plan(SlJudge *j, SlCtx *ctx) {
    const SlJudgeConfig *c = &j->cfg;
    int64_t H = c->image_size, W = c->image_size;
    size_t act = 0, work = 0;
    for (int l = 0; l < JUDGE_LAYERS; l++) {
        int ci, co, stride;
        layer_io(c, l, &ci, &co, &stride);
        j->layer[l].d = sl_conv_dims(1, ci, H, W, co, 3, stride, 1, 1, 1, 1);
        const SlConvDims *d = &j->layer[l].d;
        if ((size_t)(co * d->Ho * d->Wo) > act) act = (size_t)(co * d->Ho * d->Wo);
        if (sl_conv2d_workspace(d) > work) work = sl_conv2d_workspace(d);
        H = d->Ho;
        W = d->Wo;
    }
    const size_t nx = round16((size_t)3 * c->image_size * c->image_size), na = round16(act), nw = round16(work);
    const size_t ng = round16((size_t)c->groups), np = round16((size_t)c->channels[3]), ne = round16((size_t)c->embed_dim);
    j->acts = sl_alloc((nx + 2 * na + nw + 2 * ng + np + ne) * sizeof(float));
    if (!j->acts) return sl_fail(ctx, SL_ERR_NOMEM, "%s: out of memory for the judge's activations", j->dir);
    float *p = j->acts;
    j->x = p; p += nx;
    j->h = p; p += na;
    j->t = p; p += na;
    j->work = p; p += nw;
    j->gn_mean = p; p += ng;
    j->gn_rstd = p; p += ng;
    j->pool = p; p += np;
    j->raw = p;
    return SL_OK;
}

/* ------------------------------------------------------------ public */

SlStatus sl_judge_load(SlJudge **out, const char *dir, SlCtx *ctx) {
    *out = NULL;
    SlJudge *j = calloc(1, sizeof *j);
    if (!j) return sl_fail(ctx, SL_ERR_NOMEM, "out of memory");
    snprintf(j->dir, sizeof j->dir, "%s", dir);
    j->kern = sl_kernels_default();
    char p[1100];
    SlStatus st = SL_OK;
    if (!sl_path_is_dir(dir)) st = sl_fail(ctx, SL_ERR_MISSING, "%s: no judge folder there", dir);
    if (!st) st = config_read(&j->cfg, sl_path_join(p, sizeof p, dir, "config.json"), ctx);
    if (!st) st = weights_read(j, sl_path_join(p, sizeof p, dir, "model.safetensors"), ctx);
    if (!st) st = classes_read(j, sl_path_join(p, sizeof p, dir, "classes.tsv"), ctx);
    if (!st) st = acts_plan(j, ctx);
    if (st) {
        sl_judge_free(j);
        return st;
    }
    *out = j;
    return SL_OK;
}

void sl_judge_free(SlJudge *j) {
    if (!j) return;
    sl_free(j->weights);
    sl_free(j->acts);
    free(j->tsv);
    free(j->unified);
    free(j->caption);
    free(j->lower_text);
    free(j->lower);
    free(j->order);
    free(j);
}

const SlJudgeConfig *sl_judge_config(const SlJudge *j) { return &j->cfg; }
const char *sl_judge_class_caption(const SlJudge *j, int i) { return j->caption[i]; }
const char *sl_judge_class_unified(const SlJudge *j, int i) { return j->unified[i]; }

/* emb [E] of the S x S RGB image img. */
static void embed_one(SlJudge *j, const SlImage *img, float *emb) {
    const SlJudgeConfig *c = &j->cfg;
    sl_image_to_chw(j->x, img, 3);
    const float *in = j->x;
    for (int l = 0; l < JUDGE_LAYERS; l++) {
        const JudgeLayer *L = &j->layer[l];
        const SlConvDims *d = &L->d;
        sl_conv2d_forward(j->t, in, L->conv_w, L->conv_b, d, j->work, &j->kern);
        sl_groupnorm_silu_forward(j->h, j->gn_mean, j->gn_rstd, j->t, L->norm_w, L->norm_b, 1, d->Co, d->Ho * d->Wo,
                                  c->groups, c->eps);
        in = j->h;
    }
    const SlConvDims *d = &j->layer[JUDGE_LAYERS - 1].d;
    const int64_t C3 = d->Co, HW = d->Ho * d->Wo;
    for (int64_t ch = 0; ch < C3; ch++) {
        double s = 0;
        for (int64_t i = 0; i < HW; i++) s += j->h[ch * HW + i];
        j->pool[ch] = (float)(s / (double)HW);
    }
    sl_linear_forward(j->raw, j->pool, j->proj_w, j->proj_b, 1, C3, c->embed_dim, &j->kern);
    double ss = 0;
    for (int e = 0; e < c->embed_dim; e++) ss += (double)j->raw[e] * j->raw[e];
    const double norm = sqrt(ss) > JUDGE_NORM_EPS ? sqrt(ss) : JUDGE_NORM_EPS;
    for (int e = 0; e < c->embed_dim; e++) emb[e] = (float)(j->raw[e] / norm);
}

SlStatus sl_judge_embed(SlJudge *j, const SlImage *imgs, int n, float *emb, SlCtx *ctx) {
    const int S = j->cfg.image_size, E = j->cfg.embed_dim;
    for (int i = 0; i < n; i++) {
        const SlImage *im = &imgs[i];
        if (im->c != 3 || !im->data || im->w < 1 || im->h < 1)
            return sl_fail(ctx, SL_ERR_ARG, "judge: image %d is %dx%d with %d channels (an RGB image is needed)", i,
                           im->w, im->h, im->c);
        if (im->w == S && im->h == S) {
            embed_one(j, im, emb + (size_t)i * E);
            continue;
        }
        SlImage r = {0};
        SL_TRY(sl_image_resize(&r, im, S, S, SL_RESIZE_AREA, ctx));
        embed_one(j, &r, emb + (size_t)i * E);
        sl_image_free(&r);
    }
    return SL_OK;
}

/* 1 when class a ranks before class b in row s: the higher score, ties to the lower index. */
static int ranks_before(const float *s, int a, int b) { return s[a] > s[b] || (s[a] == s[b] && a < b); }

SlStatus sl_judge_rank(const SlJudge *j, const float *emb, int n, float *scores, int k, int *top, SlCtx *ctx) {
    const int N = j->cfg.num_classes, E = j->cfg.embed_dim;
    if (top && (k < 1 || k > N)) return sl_fail(ctx, SL_ERR_ARG, "judge: top %d of %d classes", k, N);
    for (int i = 0; i < n; i++) {
        const float *e = emb + (size_t)i * E;
        float *s = scores + (size_t)i * N;
        for (int c = 0; c < N; c++) {
            const float *w = j->classes + (size_t)c * E;
            double acc = 0;
            for (int q = 0; q < E; q++) acc += (double)e[q] * w[q];
            s[c] = (float)acc;
        }
        if (!top) continue;
        int *t = top + (size_t)i * k;
        for (int r = 0; r < k; r++) { /* the best class ranked after t[r-1] */
            int best = -1;
            for (int c = 0; c < N; c++)
                if ((r == 0 || ranks_before(s, t[r - 1], c)) && (best < 0 || ranks_before(s, c, best))) best = c;
            t[r] = best;
        }
    }
    return SL_OK;
}

int sl_judge_class_place(const SlJudge *j, const float *scores_row, int cls) {
    int place = 0;
    for (int c = 0; c < j->cfg.num_classes; c++) place += c != cls && ranks_before(scores_row, c, cls);
    return place;
}

/* The class whose lower-cased caption equals seg[0..n) lower-cased, or -1. */
static int find_exact(const SlJudge *j, const char *seg, size_t n) {
    int lo = 0, hi = j->cfg.num_classes - 1;
    while (lo <= hi) {
        const int mid = lo + (hi - lo) / 2, c = j->order[mid];
        const int r = seg_cmp(seg, n, j->lower[c]);
        if (!r) return c;
        if (r < 0) hi = mid - 1;
        else lo = mid + 1;
    }
    return -1;
}

static int find_from(const SlJudge *j, const char *s, size_t n) {
    for (;;) {
        trim(&s, &n);
        if (!n) return -1;
        const int c = find_exact(j, s, n);
        if (c >= 0) return c;
        const char *comma = NULL;
        for (size_t i = 0; i + 1 < n; i++)
            if (s[i] == ',' && s[i + 1] == ' ') { comma = s + i; break; }
        if (!comma) return -1;
        n -= (size_t)(comma + 2 - s);
        s = comma + 2;
    }
}

/* Length of p[0..n) without its trailing ", <CLDR skin tone>" segments (the captions of
 * skin-tone variations: "a father christmas, medium skin tone"; the judge's classes are
 * the base emoji). */
static size_t strip_tones(const char *p, size_t n) {
    static const char *const tones[] = {", light skin tone", ", medium-light skin tone", ", medium skin tone",
                                        ", medium-dark skin tone", ", dark skin tone"};
    for (int again = 1; again;) {
        again = 0;
        while (n && (p[n - 1] == ' ' || p[n - 1] == '\n' || p[n - 1] == '\r' || p[n - 1] == '\t')) n--;
        for (size_t t = 0; t < sizeof tones / sizeof tones[0]; t++) {
            size_t k = strlen(tones[t]);
            if (n > k && strncasecmp(p + n - k, tones[t], k) == 0) { n -= k; again = 1; break; }
        }
    }
    return n;
}

int sl_judge_find_class(const SlJudge *j, const char *prompt) {
    size_t n = strlen(prompt);
    int c = find_from(j, prompt, n);
    size_t b = strip_tones(prompt, n);
    if (c < 0 && b < n) c = find_from(j, prompt, b);
    return c;
}
