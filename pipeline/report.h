/* report.h - one HTML page per training run (issue 22): <out>.html.
 *
 * The page is self-contained: every image is a data: URI of its PNG bytes, the
 * loss curve is inline SVG, there is no script and no network reference, so it
 * opens in any browser offline. Sections carry stable element ids: settings,
 * data, loss, throughput, memory, checkpoints (each checkpoint's grid ckpt-STEP).
 * It is rewritten atomically (temp file + fsync + rename) at each checkpoint
 * and at the end, so a reader never sees half a page.
 *
 * Assets it reads: the samples sl_trainer_sample wrote (sample-stepNNNNNN-I.png
 * in samples_dir), and in assets_dir (<out>.report/) the contact sheet's
 * thumbnails (sl_report_thumbnails) and the base model's samples (base-I.png).
 * A missing asset is shown as missing, never an error: the report must not
 * stop a run.
 *
 * Every user string (command line, captions, prompts, paths) is HTML-escaped.
 *
 * Not here: running the samplers (the training loop does) or measuring memory
 * beyond the process's peak RSS (getrusage).
 */
#ifndef SL_PIPELINE_REPORT_H
#define SL_PIPELINE_REPORT_H

#include <stddef.h>
#include <stdint.h>

#include "core/status.h"
#include "pipeline/train.h"

/* One CSV log row, kept by the training loop for the curve. */
typedef struct SlReportRow {
    int64_t step;
    float loss, lr;
} SlReportRow;

typedef struct SlReportInput {
    const char *cmdline;       /* the command line as given (NULL: not shown) */
    const SlReportRow *rows;   /* [n_rows] the steps logged so far, in order (with a resume's earlier ones) */
    int64_t n_rows;
    int64_t steps_timed;       /* steps this process ran ... */
    double step_seconds;       /* ... and their wall time */
    const char *samples_dir;   /* where sample-stepNNNNNN-I.png are */
    const char *assets_dir;    /* <out>.report: thumb-NNNN.png, base-I.png */
    const SlMemPlan *plan;     /* NULL: sl_trainer_mem_plan(tr) */
    int final;                 /* 1: the run ended (else: at a checkpoint) */
} SlReportInput;

/* Writes dst = s with & < > " ' replaced by entities, NUL-terminated, cut at a
 * character boundary if cap is too small (cap >= 1). Returns the length the
 * full escaped text needs (without the NUL), as snprintf does. */
size_t sl_html_escape(char *dst, size_t cap, const char *s);

/* Writes the contact sheet's thumbnails (longer side <= 96 px) of the first
 * SL_REPORT_MAX_THUMBS valid training images into assets_dir (created if
 * missing) as thumb-NNNN.png, skipping those that exist. An image that cannot
 * be read is skipped (the page says so). Errors: the folder cannot be made. */
#define SL_REPORT_MAX_THUMBS 64
SlStatus sl_report_thumbnails(const SlTrainer *tr, const char *assets_dir, SlCtx *ctx);

/* Writes the page to path atomically. Errors: SL_ERR_IO (cannot write or
 * rename, naming the file), SL_ERR_NOMEM. */
SlStatus sl_report_write(const char *path, const SlTrainer *tr, const SlReportInput *in, SlCtx *ctx);

#endif
