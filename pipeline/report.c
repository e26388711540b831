/* report.c - the run's HTML page (see report.h).
 *
 * Built in memory as one string, then written atomically (as core/safetensors.c's
 * writer: <path>.tmp.PID, fsync, rename). Images go in as data: URIs of their PNG
 * bytes; the curve is inline SVG. A Content-Security-Policy meta tag
 * (default-src 'none'; img-src data:) makes "no script, no network" a property
 * the browser enforces, not only a habit of this file.
 */
#include "pipeline/report.h"

#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/file.h"
#include "core/image.h"
#include "core/outpath.h"
#include "pipeline/eval.h"
#include "pipeline/memplan.h"
#include "pipeline/optim.h"

size_t sl_html_escape(char *dst, size_t cap, const char *s) {
    size_t need = 0, k = 0;
    int full = 0; /* stop copying once a piece no longer fits: never half an entity */
    for (; *s; s++) {
        const char *rep;
        char one[2] = {*s, 0};
        switch (*s) {
        case '&': rep = "&amp;"; break;
        case '<': rep = "&lt;"; break;
        case '>': rep = "&gt;"; break;
        case '"': rep = "&quot;"; break;
        case '\'': rep = "&#39;"; break;
        default: rep = one; break;
        }
        const size_t l = strlen(rep);
        if (!full && k + l < cap) {
            memcpy(dst + k, rep, l);
            k += l;
        } else if (!full) {
            full = 1;
            /* stopped inside a UTF-8 character: drop the bytes of it already copied */
            if (((unsigned char)*s & 0xC0) == 0x80) {
                while (k > 0 && ((unsigned char)dst[k - 1] & 0xC0) == 0x80) k--;
                if (k > 0 && ((unsigned char)dst[k - 1] & 0xC0) == 0xC0) k--;
            }
        }
        need += l;
    }
    if (cap) dst[k] = '\0';
    return need;
}

/* ---- a growing string; an allocation failure sticks and is reported once at the end ---- */

typedef struct Buf {
    char *p;
    size_t n, cap;
    int oom;
} Buf;

static void buf_reserve(Buf *b, size_t more) {
    if (b->oom || b->n + more + 1 <= b->cap) return;
    size_t cap = b->cap ? b->cap : 65536;
    while (cap < b->n + more + 1) cap *= 2;
    char *p = realloc(b->p, cap);
    if (!p) {
        b->oom = 1;
        return;
    }
    b->p = p;
    b->cap = cap;
}

static void put(Buf *b, const char *s, size_t n) {
    buf_reserve(b, n);
    if (b->oom) return;
    memcpy(b->p + b->n, s, n);
    b->n += n;
    b->p[b->n] = '\0';
}

static void puts_(Buf *b, const char *s) { put(b, s, strlen(s)); }

#if defined(__GNUC__)
__attribute__((format(printf, 2, 3)))
#endif
static void putf(Buf *b, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    const int n = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    if (n < 0) return;
    buf_reserve(b, (size_t)n);
    if (b->oom) return;
    va_start(ap, fmt);
    vsnprintf(b->p + b->n, (size_t)n + 1, fmt, ap);
    va_end(ap);
    b->n += (size_t)n;
}

/* user text, escaped */
static void put_esc(Buf *b, const char *s) {
    if (!s) return;
    const size_t need = sl_html_escape(NULL, 0, s);
    buf_reserve(b, need);
    if (b->oom) return;
    sl_html_escape(b->p + b->n, need + 1, s);
    b->n += need;
}

/* <img> of the PNG at path as a data: URI; a missing or unreadable file is a visible note */
static void put_img(Buf *b, const char *path, const char *alt, int max_px) {
    static const char tbl[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    char *data = NULL;
    size_t n = 0;
    SlCtx q;
    sl_ctx_init(&q);
    if (sl_read_file(path, (size_t)64 << 20, &data, &n, &q) != SL_OK) {
        puts_(b, "<span class=\"missing\">(missing: ");
        put_esc(b, path);
        puts_(b, ")</span>");
        return;
    }
    puts_(b, "<img alt=\"");
    put_esc(b, alt);
    putf(b, "\" style=\"max-width:%dpx;max-height:%dpx\" src=\"data:image/png;base64,", max_px, max_px);
    buf_reserve(b, (n + 2) / 3 * 4);
    if (!b->oom) {
        const unsigned char *s = (const unsigned char *)data;
        char *o = b->p + b->n;
        for (size_t i = 0; i < n; i += 3) {
            const unsigned v = (unsigned)s[i] << 16 | (i + 1 < n ? (unsigned)s[i + 1] << 8 : 0) | (i + 2 < n ? s[i + 2] : 0);
            *o++ = tbl[v >> 18 & 63];
            *o++ = tbl[v >> 12 & 63];
            *o++ = i + 1 < n ? tbl[v >> 6 & 63] : '=';
            *o++ = i + 2 < n ? tbl[v & 63] : '=';
        }
        b->n = (size_t)(o - b->p);
        b->p[b->n] = '\0';
    }
    puts_(b, "\">");
    free(data);
}

static void put_bytes(Buf *b, double x) {
    if (x >= 1e9) putf(b, "%.2f GB", x / 1e9);
    else if (x >= 1e6) putf(b, "%.2f MB", x / 1e6);
    else putf(b, "%.1f kB", x / 1e3);
}

/* ---- sections ---- */

static void section_settings(Buf *b, const SlTrainer *tr, const SlReportInput *in) {
    const SlTrainConfig *c = &tr->cfg;
    puts_(b, "<section id=\"settings\"><h2>Settings</h2>\n");
    if (in->cmdline) {
        puts_(b, "<pre class=\"cmd\">");
        put_esc(b, in->cmdline);
        puts_(b, "</pre>\n");
    }
    puts_(b, "<table>\n");
#define ROW_S(k, v) (puts_(b, "<tr><th>" k "</th><td>"), put_esc(b, (v)), puts_(b, "</td></tr>\n"))
#define ROW_F(k, ...) (puts_(b, "<tr><th>" k "</th><td>"), putf(b, __VA_ARGS__), puts_(b, "</td></tr>\n"))
    ROW_S("model", c->model);
    ROW_S("data", c->data);
    ROW_S("out", c->out);
    ROW_F("steps", "%lld (done: %lld)", (long long)c->steps, (long long)tr->step);
    ROW_F("batch", "%lld x %lld accumulation x %d rank(s), micro-batch %lld", (long long)c->batch,
          (long long)c->grad_accum, tr->world > 1 ? tr->world : 1, (long long)tr->micro);
    ROW_F("resolution", "%lld", (long long)tr->R);
    if (c->full) ROW_S("adapter", "none: every U-Net weight (--full)");
    else
        ROW_F("adapter", "%s rank %lld (conv %lld), alpha %g%s%s, dropout %g", c->dora ? "DoRA" : "LoRA",
              (long long)c->rank, (long long)c->conv_rank, c->alpha > 0 ? c->alpha : (float)c->rank,
              c->rslora ? ", rsLoRA" : "", c->gaussian_init ? ", gaussian init" : "", c->dropout);
    ROW_S("targets", c->targets ? c->targets : "attn");
    ROW_S("base weights", c->base ? c->base : "default (as the file stores them)");
    ROW_F("learning rate", "%g, %s, warmup %lld", c->lr, sl_lr_schedule_name(c->lr_schedule), (long long)c->warmup);
    ROW_F("AdamW", "betas (%g, %g), eps %g, weight decay %g", c->adam.beta1, c->adam.beta2, c->adam.eps,
          c->adam.weight_decay);
    ROW_F("loss", "grad clip %g, min-SNR-gamma %g, noise offset %g, caption dropout %g", c->grad_clip,
          c->min_snr_gamma, c->noise_offset, c->caption_dropout);
    ROW_F("clip skip", "%d", c->clip_skip);
    ROW_S("trigger", c->trigger ? c->trigger : "");
    ROW_F("flip", "%s", c->flip ? "yes" : "no");
    ROW_F("seed", "%llu", (unsigned long long)c->seed);
    ROW_F("save / sample every", "%lld / %lld steps", (long long)c->save_every, (long long)c->sample_every);
#undef ROW_S
#undef ROW_F
    puts_(b, "</table></section>\n");
}

static void section_data(Buf *b, const SlTrainer *tr, const SlReportInput *in) {
    puts_(b, "<section id=\"data\"><h2>Data</h2>\n");
    putf(b, "<p>%d images (%d found, %lld samples per epoch with repeats)</p>\n", tr->n_valid, tr->data.n,
         (long long)tr->n_samples);
    if (tr->cfg.buckets && tr->buckets.n) {
        puts_(b, "<table><tr><th>bucket</th><th>images</th></tr>\n");
        for (int k = 0; k < tr->buckets.n; k++) {
            int cnt = 0;
            for (int i = 0; i < tr->n_valid; i++) cnt += tr->item_bucket && tr->item_bucket[i] == k;
            if (cnt) putf(b, "<tr><td>%dx%d</td><td>%d</td></tr>\n", tr->buckets.b[k].w, tr->buckets.b[k].h, cnt);
        }
        puts_(b, "</table>\n");
    }
    puts_(b, "<div class=\"sheet\">\n");
    const int n = tr->n_valid < SL_REPORT_MAX_THUMBS ? tr->n_valid : SL_REPORT_MAX_THUMBS;
    for (int i = 0; i < n; i++) {
        const SlDataItem *it = &tr->data.items[tr->valid[i]];
        char path[4200];
        snprintf(path, sizeof path, "%s/thumb-%04d.png", in->assets_dir, i);
        puts_(b, "<figure>");
        put_img(b, path, it->path, 96);
        puts_(b, "<figcaption>");
        put_esc(b, it->caption);
        puts_(b, "</figcaption></figure>\n");
    }
    puts_(b, "</div>");
    if (tr->n_valid > n) putf(b, "<p>(the first %d of %d images)</p>", n, tr->n_valid);
    puts_(b, "</section>\n");
}

/* The raw loss (grey), its moving average (blue, factor 0.95 as the progress bar)
 * and the learning rate (orange, own scale on the right), as one SVG. */
static void section_loss(Buf *b, const SlReportInput *in) {
    puts_(b, "<section id=\"loss\"><h2>Loss and learning rate</h2>\n");
    const int64_t n = in->n_rows;
    if (n < 1) {
        puts_(b, "<p>no steps yet</p></section>\n");
        return;
    }
    const double W = 900, H = 320, L = 60, R = 60, T = 16, B = 36;
    float lo = INFINITY, hi = -INFINITY, lr_hi = 0;
    for (int64_t i = 0; i < n; i++) {
        const float v = in->rows[i].loss;
        if (isfinite(v)) {
            lo = v < lo ? v : lo;
            hi = v > hi ? v : hi;
        }
        if (in->rows[i].lr > lr_hi) lr_hi = in->rows[i].lr;
    }
    if (!(hi >= lo)) lo = 0, hi = 1;
    if (hi - lo < 1e-12f) hi = lo + 1e-6f + fabsf(lo) * 1e-3f;
    if (lr_hi <= 0) lr_hi = 1;
    const double s0 = (double)in->rows[0].step, s1 = (double)in->rows[n - 1].step;
    const double sx = (W - L - R) / (s1 > s0 ? s1 - s0 : 1), sy = (H - T - B) / (double)(hi - lo);
#define X(s) (L + ((double)(s)-s0) * sx)
#define Y(v) (H - B - ((double)(v)-lo) * sy)
    putf(b, "<svg id=\"loss-svg\" xmlns=\"http://www.w3.org/2000/svg\" width=\"%.0f\" height=\"%.0f\" viewBox=\"0 0 %.0f %.0f\">\n",
         W, H, W, H);
    putf(b, "<rect x=\"%.0f\" y=\"%.0f\" width=\"%.0f\" height=\"%.0f\" fill=\"#fff\" stroke=\"#999\"/>\n", L, T,
         W - L - R, H - T - B);
    for (int k = 0; k <= 4; k++) { /* grid lines with the loss on the left, lr on the right */
        const double y = T + (H - T - B) * k / 4.0;
        putf(b, "<line x1=\"%.0f\" y1=\"%.1f\" x2=\"%.0f\" y2=\"%.1f\" stroke=\"#eee\"/>", L, y, W - R, y);
        putf(b, "<text x=\"%.0f\" y=\"%.1f\" font-size=\"11\" text-anchor=\"end\">%.4g</text>", L - 4, y + 4,
             hi - (hi - lo) * k / 4.0);
        putf(b, "<text x=\"%.0f\" y=\"%.1f\" font-size=\"11\" fill=\"#c60\">%.2g</text>\n", W - R + 4, y + 4,
             lr_hi * (1 - k / 4.0));
    }
    putf(b, "<text x=\"%.0f\" y=\"%.0f\" font-size=\"11\">step %lld</text>", L, H - 12, (long long)in->rows[0].step);
    putf(b, "<text x=\"%.0f\" y=\"%.0f\" font-size=\"11\" text-anchor=\"end\">step %lld</text>\n", W - R, H - 12,
         (long long)in->rows[n - 1].step);
    puts_(b, "<polyline id=\"loss-raw\" fill=\"none\" stroke=\"#bbb\" stroke-width=\"1\" points=\"");
    for (int64_t i = 0; i < n; i++)
        if (isfinite(in->rows[i].loss)) putf(b, "%.1f,%.1f ", X(in->rows[i].step), Y(in->rows[i].loss));
    puts_(b, "\"/>\n<polyline id=\"loss-smooth\" fill=\"none\" stroke=\"#1f5fbf\" stroke-width=\"2\" points=\"");
    double ema = 0;
    int started = 0;
    for (int64_t i = 0; i < n; i++) {
        if (!isfinite(in->rows[i].loss)) continue;
        ema = started ? 0.95 * ema + 0.05 * in->rows[i].loss : in->rows[i].loss;
        started = 1;
        putf(b, "%.1f,%.1f ", X(in->rows[i].step), Y(ema));
    }
    puts_(b, "\"/>\n<polyline id=\"lr\" fill=\"none\" stroke=\"#c60\" stroke-width=\"1\" stroke-dasharray=\"4 3\" points=\"");
    for (int64_t i = 0; i < n; i++)
        putf(b, "%.1f,%.1f ", X(in->rows[i].step), H - B - (double)in->rows[i].lr / lr_hi * (H - T - B));
    puts_(b, "\"/>\n</svg>\n");
#undef X
#undef Y
    putf(b, "<p class=\"legend\"><span style=\"color:#999\">raw loss</span>, <span style=\"color:#1f5fbf\">smoothed "
            "(EMA 0.95)</span>, <span style=\"color:#c60\">learning rate (right axis)</span>; last loss %.5g, smoothed %.5g</p>\n",
         in->rows[n - 1].loss, ema);
    puts_(b, "</section>\n");
}

static void section_throughput(Buf *b, const SlTrainer *tr, const SlReportInput *in) {
    puts_(b, "<section id=\"throughput\"><h2>Throughput</h2>\n");
    if (in->steps_timed > 0 && in->step_seconds > 0) {
        const double sps = (double)in->steps_timed / in->step_seconds;
        const double ips = sps * (double)(tr->cfg.batch * tr->cfg.grad_accum * (tr->world > 1 ? tr->world : 1));
        putf(b, "<table><tr><th>steps/s</th><td>%.3f</td></tr><tr><th>images/s</th><td>%.3f</td></tr>"
                "<tr><th>time in steps</th><td>%.1f s for %lld steps</td></tr></table>\n",
             sps, ips, in->step_seconds, (long long)in->steps_timed);
    } else
        puts_(b, "<p>no steps timed yet</p>\n");
    puts_(b, "</section>\n");
}

static void section_memory(Buf *b, const SlTrainer *tr, const SlMemPlan *given) {
    SlMemPlan plan;
    if (given) plan = *given;
    else sl_trainer_mem_plan(tr, &plan);
    struct rusage ru;
    const double rss = getrusage(RUSAGE_SELF, &ru) == 0 ? (double)ru.ru_maxrss * 1024.0 : 0; /* Linux: kB */
    puts_(b, "<section id=\"memory\"><h2>Memory</h2>\n<table>\n");
    for (int i = 0; i < plan.n; i++) {
        puts_(b, "<tr><td>");
        put_esc(b, plan.rows[i].label);
        puts_(b, "</td><td class=\"num\">");
        put_bytes(b, plan.rows[i].bytes);
        puts_(b, "</td></tr>\n");
    }
    puts_(b, "<tr class=\"total\"><th>predicted peak</th><td class=\"num\">");
    if (plan.predicted_peak > 0) put_bytes(b, plan.predicted_peak);
    else puts_(b, "(no prediction)");
    puts_(b, "</td></tr>\n<tr class=\"total\"><th>measured peak RSS</th><td class=\"num\">");
    if (rss > 0) put_bytes(b, rss);
    else puts_(b, "(unknown)");
    if (rss > 0 && plan.predicted_peak > 0) putf(b, " (%+.1f%% of predicted)", 100.0 * (rss / plan.predicted_peak - 1));
    puts_(b, "</td></tr>\n<tr><th>available</th><td class=\"num\">");
    if (plan.available > 0) put_bytes(b, plan.available);
    else puts_(b, "(unknown)");
    puts_(b, "</td></tr>\n</table>\n");
    if (plan.advice[0]) {
        puts_(b, "<p class=\"advice\">");
        put_esc(b, plan.advice);
        puts_(b, "</p>\n");
    }
    puts_(b, "</section>\n");
}

/* ---- the checkpoints' figures: `stylora eval`'s measures on the sample rows ---- */

#define REPORT_STYLE_SEED 1234 /* = tools/cmd_eval.c's EVAL_SEED: the same style net, comparable figures */

typedef struct Scorer {
    int ok;               /* 0: no figures (no thumbnails, out of memory) */
    int has_net;          /* net to free */
    SlStyleNet net;
    SlStyleStats ref;     /* the training images (their thumbnails) */
    SlStyleStats row;
} Scorer;

/* The reference is the contact sheet's thumbnails (the style net resizes to 64x64
 * anyway), so a report costs no pass over the full-size data set. */
static void scorer_init(Scorer *sc, const SlTrainer *tr, const char *assets) {
    SlCtx q;
    sl_ctx_init(&q);
    sc->ok = sc->has_net = sl_style_net_init(&sc->net, REPORT_STYLE_SEED, &q) == SL_OK;
    sl_style_stats_init(&sc->ref);
    const int n = tr->n_valid < SL_REPORT_MAX_THUMBS ? tr->n_valid : SL_REPORT_MAX_THUMBS;
    for (int i = 0; i < n && sc->ok; i++) {
        char path[4200];
        snprintf(path, sizeof path, "%s/thumb-%04d.png", assets, i);
        SlImage im = {0};
        if (sl_image_read(&im, path, NULL, &q) == SL_OK) sl_style_stats_add(&sc->ref, &sc->net, &im, &q);
        sl_image_free(&im);
    }
    if (sc->ref.n == 0) sc->ok = 0;
}

/* Scores one row's images (paths[n]; prompts[n]): the style distance of the row to the
 * training images and the mean prompt fidelity over the prompts of the shapes grammar
 * (NaN if none parses). Returns 0 if no image could be read. */
static int scorer_row(Scorer *sc, char (*paths)[4200], const char *const *prompts, int n, double *dist, double *fid) {
    SlCtx q;
    sl_ctx_init(&q);
    sl_style_stats_init(&sc->row);
    double fsum = 0;
    int fn = 0;
    for (int i = 0; i < n; i++) {
        SlImage im = {0};
        SlImageReadOpts o = sl_image_read_opts_default();
        o.channels = 3;
        if (sl_image_read(&im, paths[i], &o, &q) == SL_OK) {
            sl_style_stats_add(&sc->row, &sc->net, &im, &q);
            SlSceneCaption cap;
            SlDetection det;
            if (sl_eval_parse_caption(&cap, prompts[i], &q) == SL_OK && sl_eval_detect(&det, &im, &q) == SL_OK) {
                SlFidelity f;
                sl_eval_fidelity(&f, &det, &cap);
                fsum += f.score;
                fn++;
            }
        }
        sl_image_free(&im);
    }
    SlStyleDistance d;
    if (sc->row.n == 0 || sl_style_distance(&d, &sc->row, &sc->ref, &q) != SL_OK) return 0;
    *dist = d.total;
    *fid = fn ? fsum / fn : NAN;
    return 1;
}

static void put_scores(Buf *b, Scorer *sc, char (*paths)[4200], const char *const *prompts, int n) {
    double dist, fid;
    if (!sc->ok || !scorer_row(sc, paths, prompts, n, &dist, &fid)) {
        puts_(b, "<td class=\"num\">-</td><td class=\"num\">-</td>");
        return;
    }
    putf(b, "<td class=\"num style\">%.4f</td>", dist);
    if (isnan(fid)) puts_(b, "<td class=\"num fidelity\">-</td>");
    else putf(b, "<td class=\"num fidelity\">%.3f</td>", fid);
}

static void section_checkpoints(Buf *b, const SlTrainer *tr, const SlReportInput *in) {
    const SlTrainConfig *c = &tr->cfg;
    puts_(b, "<section id=\"checkpoints\"><h2>Checkpoints</h2>\n");
    if (!c->sample_every || !c->n_sample_prompts) {
        puts_(b, "<p>no samples (--sample-every and --sample-prompt)</p></section>\n");
        return;
    }
    putf(b, "<p>%d prompt(s), seeds %llu.., %d steps, guidance %g; the first row is the base model (adapter off)</p>\n",
         c->n_sample_prompts, (unsigned long long)c->seed, c->sample_steps, c->sample_cfg);
    puts_(b, "<table class=\"grid\"><tr><th></th>");
    for (int i = 0; i < c->n_sample_prompts; i++) {
        puts_(b, "<th>");
        put_esc(b, c->sample_prompts[i]);
        puts_(b, "</th>");
    }
    puts_(b, "<th>style distance</th><th>prompt fidelity</th></tr>\n<tr id=\"ckpt-base\"><th>base model</th>");
    Scorer *sc = calloc(1, sizeof *sc);
    if (sc) scorer_init(sc, tr, in->assets_dir);
    char path[4200];
    char (*paths)[4200] = malloc((size_t)c->n_sample_prompts * sizeof *paths);
    if (!paths && sc) sc->ok = 0;
    for (int i = 0; i < c->n_sample_prompts; i++) {
        snprintf(path, sizeof path, "%s/base-%d.png", in->assets_dir, i);
        if (paths) memcpy(paths[i], path, sizeof path);
        puts_(b, "<td>");
        put_img(b, path, c->sample_prompts[i], 256);
        puts_(b, "</td>");
    }
    if (sc) put_scores(b, sc, paths, c->sample_prompts, c->n_sample_prompts);
    puts_(b, "</tr>\n");
    for (int64_t s = c->sample_every; s <= tr->step; s += c->sample_every) {
        snprintf(path, sizeof path, "%s/sample-step%06lld-0.png", in->samples_dir, (long long)s);
        struct stat sb;
        if (stat(path, &sb) != 0) continue; /* (a resumed run's earlier samples may be gone) */
        putf(b, "<tr id=\"ckpt-%lld\"><th>step %lld</th>", (long long)s, (long long)s);
        for (int i = 0; i < c->n_sample_prompts; i++) {
            snprintf(path, sizeof path, "%s/sample-step%06lld-%d.png", in->samples_dir, (long long)s, i);
            if (paths) memcpy(paths[i], path, sizeof path);
            puts_(b, "<td>");
            put_img(b, path, c->sample_prompts[i], 256);
            puts_(b, "</td>");
        }
        if (sc) put_scores(b, sc, paths, c->sample_prompts, c->n_sample_prompts);
        puts_(b, "</tr>\n");
    }
    puts_(b, "</table>\n<p class=\"legend\">style distance: <code>stylora eval</code>'s measure (pipeline/eval.h; 0 = "
             "the same statistics) of the row's images to the training images (their thumbnails); prompt fidelity: "
             "the mean over the prompts of the shapes grammar (1 = colour and shape right; - when none parses). "
             "A few images make noisy figures: read the trend; <code>stylora eval --n 32</code> measures the "
             "finished adapter.</p></section>\n");
    if (sc && sc->has_net) sl_style_net_free(&sc->net);
    free(sc);
    free(paths);
}

static SlStatus write_atomic(const char *path, const char *data, size_t n, SlCtx *ctx) {
    char tmp[4200];
    snprintf(tmp, sizeof tmp, "%s.tmp.%ld", path, (long)getpid());
    FILE *f = fopen(tmp, "wb");
    if (!f) return sl_fail(ctx, SL_ERR_IO, "%s: cannot create: %s", tmp, strerror(errno));
    int bad = fwrite(data, 1, n, f) != n || fflush(f) != 0 || fsync(fileno(f)) != 0;
    const int err = errno;
    if (fclose(f) != 0 && !bad) bad = 1;
    if (bad) {
        unlink(tmp);
        return sl_fail(ctx, SL_ERR_IO, "%s: cannot write the report: %s", path, strerror(err));
    }
    if (rename(tmp, path) != 0) {
        const int e = errno;
        unlink(tmp);
        return sl_fail(ctx, SL_ERR_IO, "%s: cannot rename into place: %s", path, strerror(e));
    }
    return SL_OK;
}

SlStatus sl_report_write(const char *path, const SlTrainer *tr, const SlReportInput *in, SlCtx *ctx) {
    SL_TRY(sl_path_check_writable("report", path, ctx));
    Buf b = {0};
    puts_(&b, "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\n"
              "<meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'none'; img-src data:; style-src 'unsafe-inline'\">\n"
              "<title>stylora training report: ");
    put_esc(&b, tr->cfg.out);
    puts_(&b, "</title>\n<style>\n"
              "body{font-family:sans-serif;margin:1.5em;color:#222;max-width:1150px}\n"
              "section{margin:1.5em 0;border-top:1px solid #ccc}\n"
              "table{border-collapse:collapse}td,th{padding:2px 8px;text-align:left;vertical-align:top}\n"
              ".num{text-align:right}.total th,.total td{font-weight:bold}\n"
              "pre.cmd{white-space:pre-wrap;word-break:break-all;background:#f4f4f4;padding:6px}\n"
              ".sheet{display:flex;flex-wrap:wrap;gap:6px}.sheet figure{margin:0;width:100px;font-size:10px}\n"
              ".sheet img{display:block;image-rendering:pixelated;width:96px}\n"
              ".grid img{image-rendering:pixelated;width:96px}.grid th{font-size:12px;max-width:140px}\n"
              ".missing{color:#a00;font-size:11px}.advice{color:#a00}\n"
              "</style></head><body>\n<h1>stylora training report</h1>\n<p>");
    put_esc(&b, tr->cfg.out);
    putf(&b, ": step %lld of %lld%s</p>\n", (long long)tr->step, (long long)tr->cfg.steps,
         in->final ? " (finished)" : " (in progress: rewritten at each checkpoint)");
    section_settings(&b, tr, in);
    section_data(&b, tr, in);
    section_loss(&b, in);
    section_throughput(&b, tr, in);
    section_memory(&b, tr, in->plan);
    section_checkpoints(&b, tr, in);
    puts_(&b, "</body></html>\n");
    SlStatus st = b.oom ? sl_fail(ctx, SL_ERR_NOMEM, "%s: out of memory building the report", path)
                        : write_atomic(path, b.p, b.n, ctx);
    free(b.p);
    return st;
}

SlStatus sl_report_thumbnails(const SlTrainer *tr, const char *assets_dir, SlCtx *ctx) {
    if (mkdir(assets_dir, 0755) != 0 && errno != EEXIST)
        return sl_fail(ctx, SL_ERR_IO, "%s: cannot create the report's folder: %s", assets_dir, strerror(errno));
    const int n = tr->n_valid < SL_REPORT_MAX_THUMBS ? tr->n_valid : SL_REPORT_MAX_THUMBS;
    for (int i = 0; i < n; i++) {
        char path[4200];
        snprintf(path, sizeof path, "%s/thumb-%04d.png", assets_dir, i);
        struct stat sb;
        if (stat(path, &sb) == 0) continue;
        const char *src = tr->data.items[tr->valid[i]].path;
        SlImageReadOpts o = sl_image_read_opts_default();
        o.channels = 3;
        SlImage im = {0}, th = {0};
        SlCtx q;
        sl_ctx_init(&q);
        if (sl_image_read(&im, src, &o, &q) == SL_OK) {
            const int big = im.w > im.h ? im.w : im.h;
            const int w = big > 96 ? (int)((int64_t)im.w * 96 / big) : im.w, h = big > 96 ? (int)((int64_t)im.h * 96 / big) : im.h;
            if (sl_image_resize(&th, &im, w > 0 ? w : 1, h > 0 ? h : 1, SL_RESIZE_AREA, &q) == SL_OK &&
                sl_image_write_png(&th, path, NULL, 0, &q) != SL_OK)
                sl_log(ctx, SL_LOG_WARN, "report: %s", q.msg);
        }
        sl_image_free(&im);
        sl_image_free(&th);
    }
    return SL_OK;
}
