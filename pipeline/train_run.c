/* train_run.c - the training loop of `stylora train`, shared by one process
 * and the ranks of a data-parallel run (see sl_trainer_run in train.h): the
 * CSV log, the checkpoint policy, samples, stop requests and the final save.
 * What differs between the two comes in through SlTrainHooks; printing and
 * exiting stay in tools/. */
#include "pipeline/train.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "core/config.h" /* sl_read_file */
#include "pipeline/plot.h"
#include "pipeline/report.h"

static double now_s(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

/* The log path: cfg.log_csv, or <out>.csv. */
static void log_path_of(char *buf, size_t n, const SlTrainConfig *c) {
    if (c->log_csv) snprintf(buf, n, "%s", c->log_csv);
    else snprintf(buf, n, "%s.csv", c->out);
}

/* Rewrites the log at path keeping its header and the rows of steps 1..step, each
 * once (a run killed between checkpoints, or stopped by a failed save, logged
 * steps its resume does again). Atomic: a temp file renamed over the log; a log
 * with nothing to drop is left as it is. */
static SlStatus log_truncate(const char *path, int64_t step, SlCtx *ctx) {
    char *buf = NULL;
    size_t n = 0;
    SlCtx rctx;
    sl_ctx_init(&rctx);
    if (sl_read_file(path, (size_t)1 << 30, &buf, &n, &rctx) != SL_OK) return SL_OK; /* no log yet: a new one */
    char *keep = malloc(n + 1);
    if (!keep) {
        free(buf);
        return sl_fail(ctx, SL_ERR_NOMEM, "%s: out of memory", path);
    }
    size_t k = 0;
    int64_t last = 0;
    for (size_t i = 0; i < n;) {
        size_t e = i;
        while (e < n && buf[e] != '\n') e++;
        char *end;
        const long long s = strtoll(buf + i, &end, 10);
        const int row = end != buf + i && end < buf + e && *end == ',';
        /* the header (any line that is no row) stays; rows beyond the step or repeated go */
        if (!row || (s > last && s <= step)) {
            memcpy(keep + k, buf + i, e - i);
            k += e - i;
            keep[k++] = '\n';
            if (row) last = s;
        }
        i = e + 1;
    }
    free(buf);
    if (k == n) { /* nothing dropped (and the last line ended with a newline) */
        free(keep);
        return SL_OK;
    }
    char tmp[4200];
    snprintf(tmp, sizeof tmp, "%s.tmp.%ld", path, (long)getpid());
    FILE *f = fopen(tmp, "wb");
    SlStatus st = SL_OK;
    if (!f) st = sl_fail(ctx, SL_ERR_IO, "%s: cannot write: %s", tmp, strerror(errno));
    else {
        int bad = fwrite(keep, 1, k, f) != k || fflush(f) != 0 || fsync(fileno(f)) != 0;
        const int err = errno;
        if (fclose(f) != 0 && !bad) bad = 1;
        if (bad) st = sl_fail(ctx, SL_ERR_IO, "%s: cannot cut the log back to step %lld: %s", path, (long long)step, strerror(err));
        else if (rename(tmp, path) != 0)
            st = sl_fail(ctx, SL_ERR_IO, "%s: cannot rename into place: %s", path, strerror(errno));
        if (st) unlink(tmp);
    }
    free(keep);
    return st;
}

/* Opens the CSV log for appending rows: a new log with its header, or on resume the
 * existing one cut back to the checkpoint's step. */
static SlStatus log_open(FILE **out, const char *path, const SlTrainer *tr, SlCtx *ctx) {
    const int resume = tr->cfg.resume;
    if (resume) SL_TRY(log_truncate(path, tr->step, ctx));
    FILE *f = fopen(path, resume ? "a" : "w");
    if (!f) return sl_fail(ctx, SL_ERR_IO, "%s: cannot write the log: %s", path, strerror(errno));
    if (resume) fseek(f, 0, SEEK_END);
    if (!resume || ftell(f) == 0) fprintf(f, "step,loss,lr,grad_norm\n"); /* (a resume without a log starts one) */
    *out = f;
    return SL_OK;
}

/* The base model's samples for the report's first row: the same prompts and seeds as
 * sl_trainer_sample with the adapter's weight at 0 (its hooks then add nothing), as
 * <assets>/base-I.png. Made once per report folder (a resume keeps them). */
static SlStatus report_base_samples(SlTrainer *tr, const char *assets, SlCtx *ctx) {
    const SlTrainConfig *c = &tr->cfg;
    if (!c->sample_every || !c->n_sample_prompts || c->full || tr->set.n_ad < 1) return SL_OK;
    char from[4300], to[4300];
    int have = 1;
    for (int i = 0; i < c->n_sample_prompts && have; i++) {
        snprintf(to, sizeof to, "%s/base-%d.png", assets, i);
        have = access(to, F_OK) == 0;
    }
    if (have) return SL_OK;
    const float w = tr->set.w[0];
    sl_adapter_set_weight(&tr->set, 0, 0.0f);
    SlStatus st = sl_trainer_sample(tr, assets, ctx);
    sl_adapter_set_weight(&tr->set, 0, w);
    for (int i = 0; i < c->n_sample_prompts && !st; i++) {
        snprintf(from, sizeof from, "%s/sample-step%06lld-%d.png", assets, (long long)tr->step, i);
        snprintf(to, sizeof to, "%s/base-%d.png", assets, i);
        if (rename(from, to) != 0) st = sl_fail(ctx, SL_ERR_IO, "%s: cannot rename to %s: %s", from, to, strerror(errno));
    }
    return st;
}

/* A resumed run's report shows the whole curve: the rows of steps 1..step from the
 * log (already cut back to the checkpoint by log_open), into rows[0..step). Returns
 * how many; an unreadable log gives 0 (the report then starts at the resume). */
static int64_t report_log_rows(const char *path, int64_t step, SlReportRow *rows) {
    char *buf = NULL;
    size_t n = 0;
    SlCtx q;
    sl_ctx_init(&q);
    if (sl_read_file(path, (size_t)1 << 30, &buf, &n, &q) != SL_OK) return 0;
    int64_t k = 0;
    for (char *line = buf; line && *line && k < step;) {
        char *next = strchr(line, '\n');
        if (next) *next++ = '\0';
        long long s;
        float loss, lr;
        if (sscanf(line, "%lld,%f,%f", &s, &loss, &lr) == 3 && s >= 1 && s <= step && (k == 0 || s > rows[k - 1].step))
            rows[k++] = (SlReportRow){s, loss, lr};
        line = next;
    }
    free(buf);
    return k;
}

/* Writes the report; a failure is a warning (the adapter and the log are what matter). */
static void report_write(const char *path, SlTrainer *tr, const SlReportInput *in, SlCtx *ctx) {
    SlCtx q;
    sl_ctx_init(&q);
    if (sl_report_write(path, tr, in, &q) != SL_OK) sl_log(ctx, SL_LOG_WARN, "report not written: %s", q.msg);
}

/* The writer failed and this (silent) process only heard of it. */
static SlStatus writer_failed(SlCtx *ctx) {
    return sl_fail(ctx, SL_ERR_INTERRUPTED, "stopped: the writing process failed");
}

SlStatus sl_trainer_run(SlTrainer *tr, const SlTrainHooks *hooks, SlTrainRunResult *res, SlCtx *ctx) {
    static const SlTrainHooks none = {0};
    const SlTrainHooks *h = hooks ? hooks : &none;
    const SlTrainConfig *c = &tr->cfg;
    const int writer = !h->silent;
    memset(res, 0, sizeof *res);
    res->first_step = tr->step;
    if (h->reduce_grads) {
        tr->reduce_grads = h->reduce_grads;
        tr->reduce_user = h->user;
    }
    char log_path[4096], curve_path[4200], out_dir[4096];
    log_path_of(log_path, sizeof log_path, c);
    snprintf(curve_path, sizeof curve_path, "%s.loss.png", c->out);
    snprintf(out_dir, sizeof out_dir, "%s", c->out);
    char *slash = strrchr(out_dir, '/');
    if (slash) *slash = '\0';
    else snprintf(out_dir, sizeof out_dir, ".");

    /* the report (writer only): its folder of images, this run's log rows */
    const char *report = writer ? h->report_path : NULL;
    char assets[4200];
    snprintf(assets, sizeof assets, "%s.report", c->out);
    SlReportRow *rows = report ? malloc((size_t)c->steps * sizeof *rows) : NULL;
    SlReportInput rin = {.cmdline = h->cmdline, .samples_dir = out_dir, .assets_dir = assets};
    rin.rows = rows;
    if (report && !rows) report = NULL;
    if (report) {
        SlCtx q;
        sl_ctx_init(&q);
        if (sl_report_thumbnails(tr, assets, &q) != SL_OK || report_base_samples(tr, assets, &q) != SL_OK) {
            sl_log(ctx, SL_LOG_WARN, "report: %s", q.msg);
            if (q.status == SL_ERR_IO) report = NULL; /* (no folder for its images) */
        }
    }

    FILE *csv = NULL;
    float *losses = NULL; /* [steps] this run's losses, for the curve (none if out of memory) */
    int64_t n_losses = 0;
    SlStatus st = SL_OK;
    if (writer) {
        st = log_open(&csv, log_path, tr, ctx);
        losses = malloc((size_t)c->steps * sizeof(float));
    }
    if (report && c->resume && !st) rin.n_rows = report_log_rows(log_path, tr->step, rows);
    if (h->agree && h->agree(h->user, st != SL_OK) && !st) st = writer_failed(ctx);
    double ema = 0;
    while (!st && tr->step < c->steps) {
        const double t0 = now_s();
        st = sl_trainer_step(tr, ctx);
        if (st) {
            if (h->step_failed) h->step_failed(h->user, tr, ctx);
            break;
        }
        int stop = h->stop_requested ? h->stop_requested(h->user) != 0 : 0;
        if (h->step_done) stop = h->step_done(h->user, tr, stop) != 0;
        res->step_seconds += now_s() - t0;
        if (writer) {
            ema = tr->step - 1 == res->first_step ? tr->loss : 0.95 * ema + 0.05 * tr->loss;
            if (losses) losses[n_losses++] = tr->loss;
            if (rows) rows[rin.n_rows++] = (SlReportRow){tr->step, tr->loss, tr->lr};
            rin.steps_timed++;
            rin.step_seconds = res->step_seconds;
            fprintf(csv, "%lld,%.6g,%.6g,%.6g\n", (long long)tr->step, tr->loss, tr->lr, tr->grad_norm);
            if (h->progress) h->progress(h->user, tr, ema);
        }
        /* at the last step the final save below runs instead (a stop there finishes the run) */
        const int save = tr->step < c->steps &&
                         (h->save_now ? h->save_now(h->user, tr, stop) != 0
                                      : (c->save_every && tr->step % c->save_every == 0) || stop);
        const int sample = c->sample_every && tr->step % c->sample_every == 0;
        if (writer && save) {
            fflush(csv);
            st = sl_trainer_save(tr, ctx);
        }
        if (writer && sample && !st) st = sl_trainer_sample(tr, out_dir, ctx);
        if (report && (save || sample) && !st) report_write(report, tr, &rin, ctx);
        if ((save || sample) && h->agree && h->agree(h->user, st != SL_OK) && !st) st = writer_failed(ctx);
        if (!st && stop && tr->step < c->steps) res->stopped = 1;
        if (res->stopped) break;
    }
    if (!st && !res->stopped) {
        if (writer) {
            /* the last row reaches the file before the state that says the run is done: a
             * kill between the two would otherwise leave a finished run without it */
            if (csv) fflush(csv);
            st = sl_trainer_save(tr, ctx);
            if (!st && losses && n_losses > 1) st = sl_plot_curve_png(curve_path, losses, (int)n_losses, 0.95f, 640, 320, ctx);
            rin.final = 1;
            if (!st && report) report_write(report, tr, &rin, ctx);
        }
        if (h->agree && h->agree(h->user, st != SL_OK) && !st) st = writer_failed(ctx);
    }
    if (csv) fclose(csv);
    free(losses);
    free(rows);
    return st;
}
