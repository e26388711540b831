/* progress.h - a progress line for long work (training steps, encoding a dataset).
 *
 * Shows step/total, percent, rate (it/s, or s/it when slower than one step a
 * second), elapsed time and ETA, plus a caller-supplied tail such as
 * "loss 0.1234". On a terminal the line is redrawn in place with '\r' (at most
 * ten times a second, with a bar); into a file or pipe it prints plain lines at
 * most every `interval` seconds (default 5) plus the final one, so logs stay
 * short. quiet prints nothing.
 *
 * This is the one place in core/ that writes text, by design: the caller
 * (tools/) passes the FILE* and decides whether to show it.
 *
 * Not here: multiple concurrent bars, thread safety (update from one thread).
 */
#ifndef SL_PROGRESS_H
#define SL_PROGRESS_H

#include <stdint.h>
#include <stdio.h>

#define SL_PROGRESS_INTERVAL_S 5.0   /* plain-line spacing when not a terminal */
#define SL_PROGRESS_REDRAW_S 0.1     /* terminal redraw spacing */

typedef struct SlProgress {
    FILE *out;            /* not owned */
    char label[48];
    int64_t total;        /* <= 0: unknown (no percent, no ETA) */
    int64_t done;         /* last value passed to update */
    int quiet;
    int tty;              /* out is a terminal: redraw in place */
    double interval;      /* seconds between plain lines; set after begin to change */
    double t0;            /* monotonic clock at begin, seconds */
    double t_last;        /* elapsed seconds at the last line/redraw; < 0: none yet */
    double t_now;         /* elapsed seconds at the last update */
    int64_t done_printed; /* done shown by the last line; -1: none */
    int last_len;         /* terminal: width of the last drawn line */
    char extra[96];       /* last tail text */
} SlProgress;

/* Starts a bar. out may be NULL (same as quiet). Prints nothing yet. */
void sl_progress_begin(SlProgress *p, const char *label, int64_t total, FILE *out, int quiet);

/* Records progress `done` (steps finished) with an optional tail (may be NULL:
 * keeps the previous one) and prints if the interval has passed. */
void sl_progress_update(SlProgress *p, int64_t done, const char *extra);

/* Prints the final line (unless identical to the last printed one) and, on a
 * terminal, ends it with a newline. */
void sl_progress_end(SlProgress *p);

/* The same two with an explicit elapsed time in seconds since begin, for
 * tests and for callers that keep their own clock. */
void sl_progress_update_at(SlProgress *p, int64_t done, const char *extra, double elapsed_s);
void sl_progress_end_at(SlProgress *p, double elapsed_s);

/* Formats the line (without '\r' or '\n') that would be shown now. */
void sl_progress_format(const SlProgress *p, char *buf, size_t n);

#endif
