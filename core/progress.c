/* progress.c - progress line on a terminal or in a log; see progress.h. */
#include "progress.h"

#include <string.h>
#include <time.h>
#include <unistd.h>

static double monotonic_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* "m:ss", or "h:mm:ss" from an hour on. */
static void format_duration(char *buf, size_t n, double s) {
    if (!(s >= 0)) s = 0;
    if (s > 359999999.0) s = 359999999.0;
    long t = (long)(s + 0.5);
    if (t >= 3600)
        snprintf(buf, n, "%ld:%02ld:%02ld", t / 3600, (t / 60) % 60, t % 60);
    else
        snprintf(buf, n, "%ld:%02ld", t / 60, t % 60);
}

void sl_progress_begin(SlProgress *p, const char *label, int64_t total, FILE *out, int quiet) {
    memset(p, 0, sizeof *p);
    snprintf(p->label, sizeof p->label, "%s", label ? label : "");
    p->total = total;
    p->out = out;
    p->quiet = quiet || !out;
    p->tty = out && isatty(fileno(out));
    p->interval = SL_PROGRESS_INTERVAL_S;
    p->t0 = monotonic_s();
    p->t_last = -1;
    p->done_printed = -1;
}

void sl_progress_format(const SlProgress *p, char *buf, size_t n) {
    char steps[64], pct[16] = "", rate[32], el[24], eta[32] = "";
    double t = p->t_now;
    double r = t > 0 && p->done > 0 ? (double)p->done / t : 0; /* steps per second */
    if (p->total > 0) {
        snprintf(steps, sizeof steps, "%lld/%lld", (long long)p->done, (long long)p->total);
        snprintf(pct, sizeof pct, "%3d%%  ", (int)(100.0 * (double)p->done / (double)p->total));
    } else {
        snprintf(steps, sizeof steps, "%lld", (long long)p->done);
    }
    if (r <= 0)
        snprintf(rate, sizeof rate, "-- it/s");
    else if (r >= 1)
        snprintf(rate, sizeof rate, "%.2f it/s", r);
    else
        snprintf(rate, sizeof rate, "%.2f s/it", 1.0 / r);
    format_duration(el, sizeof el, t);
    if (p->total > 0) {
        char d[24] = "--";
        if (p->done >= p->total)
            format_duration(d, sizeof d, 0);
        else if (r > 0)
            format_duration(d, sizeof d, (double)(p->total - p->done) / r);
        snprintf(eta, sizeof eta, "  eta %s", d);
    }
    char bar[32] = "";
    if (p->tty && p->total > 0) {
        int width = 20, fill = (int)(width * (double)p->done / (double)p->total);
        if (fill > width) fill = width;
        if (fill < 0) fill = 0;
        bar[0] = '[';
        for (int i = 0; i < width; i++) bar[1 + i] = i < fill ? '#' : '.';
        bar[width + 1] = ']';
        bar[width + 2] = ' ';
        bar[width + 3] = '\0';
    }
    snprintf(buf, n, "%s%s%s%s  %s%s  elapsed %s%s%s%s", p->label, p->label[0] ? "  " : "", bar, steps, pct,
             rate, el, eta, p->extra[0] ? "  " : "", p->extra);
}

static void progress_print(SlProgress *p, int final) {
    char line[512];
    sl_progress_format(p, line, sizeof line);
    int len = (int)strlen(line);
    if (p->tty) {
        int pad = p->last_len > len ? p->last_len - len : 0;
        fprintf(p->out, "\r%s%*s%s", line, pad, "", final ? "\n" : "");
    } else {
        fprintf(p->out, "%s\n", line);
    }
    fflush(p->out);
    p->last_len = len;
    p->t_last = p->t_now;
    p->done_printed = p->done;
}

void sl_progress_update_at(SlProgress *p, int64_t done, const char *extra, double elapsed_s) {
    p->done = done;
    p->t_now = elapsed_s;
    if (extra) snprintf(p->extra, sizeof p->extra, "%s", extra);
    if (p->quiet) return;
    double since = elapsed_s - (p->t_last < 0 ? 0 : p->t_last);
    if (p->tty ? since >= SL_PROGRESS_REDRAW_S || p->t_last < 0 : since >= p->interval)
        progress_print(p, 0);
}

void sl_progress_update(SlProgress *p, int64_t done, const char *extra) {
    sl_progress_update_at(p, done, extra, monotonic_s() - p->t0);
}

void sl_progress_end_at(SlProgress *p, double elapsed_s) {
    if (p->quiet) return;
    /* A log already holding this exact state gets no duplicate line. */
    if (!p->tty && p->done_printed == p->done && p->t_last >= 0) return;
    p->t_now = elapsed_s;
    progress_print(p, 1);
}

void sl_progress_end(SlProgress *p) { sl_progress_end_at(p, monotonic_s() - p->t0); }
