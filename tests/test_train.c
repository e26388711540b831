/* test_train.c - the trainer on the tiny golden model: the validation loss
 * falls when overfitting a handful of images; the same seed gives the same
 * adapter bytes with 1 and 2 threads; a run stopped and resumed ends with the
 * same bytes as one never stopped (also with --micro-batch and grad-accum);
 * caches hit on a second run; an empty
 * folder, unreadable images and a read-only output folder give clear errors;
 * a failed init leaks nothing and leaves a trainer that refuses every call;
 * sl_trainer_run stopped and resumed writes the uninterrupted run's CSV log
 * (steps a killed run logged past its checkpoint are dropped); a resume with
 * another data folder or base model is refused, and allowed with resume_anyway;
 * temp files of dead processes are removed at set-up, a live one's kept;
 * captions with a NUL byte are refused and a folder with none warns; NaN/Inf
 * weights in any component are refused at load. */
#include <math.h>
#include <omp.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "core/config.h"
#include "fixture_tiny.h"
#include "pipeline/data.h"
#include "pipeline/quant.h"
#include "pipeline/train.h"
#include "textenc/tokenizer.h"
#include "test_util.h"

static char g_root[2048], g_model[2200], g_data[2200];

static void base_config(SlTrainConfig *c, const char *out) {
    sl_train_config_default(c);
    c->model = g_model;
    c->data = g_data;
    c->out = out;
    c->resolution = 32;
    c->rank = 4;
    c->alpha = 8;
    c->batch = 2;
    c->steps = 6;
    c->lr = 1e-2f;
    c->seed = 7;
    c->flip = 1;
    c->caption_dropout = 0.2f;
}

/* Reads a whole file (for byte comparisons). */
static char *slurp(const char *path, size_t *n) {
    SlCtx ctx;
    sl_ctx_init(&ctx);
    char *buf = NULL;
    if (sl_read_file(path, 1u << 30, &buf, n, &ctx) != SL_OK) return NULL;
    return buf;
}

static int same_file(const char *a, const char *b) {
    size_t na, nb;
    char *x = slurp(a, &na), *y = slurp(b, &nb);
    int same = x && y && na == nb && memcmp(x, y, na) == 0;
    free(x);
    free(y);
    return same;
}

static SlStatus run(const SlTrainConfig *c, int64_t stop_at, SlCtx *ctx) {
    SlTrainer tr;
    SlStatus st = sl_trainer_init(&tr, c, ctx);
    while (!st && tr.step < (stop_at ? stop_at : c->steps)) st = sl_trainer_step(&tr, ctx);
    if (!st) st = sl_trainer_save(&tr, ctx);
    sl_trainer_free(&tr);
    return st;
}

static void test_loss_falls(void) {
    SlCtx ctx;
    sl_ctx_init(&ctx);
    char out[4096];
    snprintf(out, sizeof out, "%s/overfit.safetensors", g_root);
    SlTrainConfig c;
    base_config(&c, out);
    c.steps = 80;
    c.caption_dropout = 0;
    c.flip = 0;
    c.lr = 3e-3f;
    SlTrainer tr;
    CHECK_OK(sl_trainer_init(&tr, &c, &ctx), &ctx);
    double before = 0, after = 0;
    CHECK_OK(sl_trainer_eval_loss(&tr, 8, 1234, &before, &ctx), &ctx);
    double again;
    CHECK_OK(sl_trainer_eval_loss(&tr, 8, 1234, &again, &ctx), &ctx);
    CHECK(again == before, "eval loss is not deterministic: %g vs %g", before, again);
    SlStatus st = SL_OK;
    while (!st && tr.step < c.steps) st = sl_trainer_step(&tr, &ctx);
    CHECK_OK(st, &ctx);
    CHECK_OK(sl_trainer_eval_loss(&tr, 8, 1234, &after, &ctx), &ctx);
    printf("overfit: validation loss %.5f -> %.5f after %lld steps\n", before, after, (long long)c.steps);
    CHECK(after < 0.8 * before, "loss did not fall by 20%%: %g -> %g", before, after);
    sl_trainer_free(&tr);
}

static void test_determinism_threads(void) {
    SlCtx ctx;
    sl_ctx_init(&ctx);
    char o1[4096], o2[4096];
    snprintf(o1, sizeof o1, "%s/t1.safetensors", g_root);
    snprintf(o2, sizeof o2, "%s/t2.safetensors", g_root);
    SlTrainConfig c;
    base_config(&c, o1);
    omp_set_num_threads(1);
    CHECK_OK(run(&c, 0, &ctx), &ctx);
    omp_set_num_threads(2);
    base_config(&c, o2);
    CHECK_OK(run(&c, 0, &ctx), &ctx);
    CHECK(same_file(o1, o2), "adapters differ between 1 and 2 threads");
}

static void test_resume(void) {
    SlCtx ctx;
    sl_ctx_init(&ctx);
    char full[4096], part[4096];
    snprintf(full, sizeof full, "%s/straight.safetensors", g_root);
    snprintf(part, sizeof part, "%s/resumed.safetensors", g_root);
    SlTrainConfig c;
    base_config(&c, full);
    CHECK_OK(run(&c, 0, &ctx), &ctx);
    base_config(&c, part);
    CHECK_OK(run(&c, 3, &ctx), &ctx); /* stopped after 3 of 6 steps, checkpoint written */
    c.resume = 1;
    CHECK_OK(run(&c, 0, &ctx), &ctx);
    CHECK(same_file(full, part), "the resumed run's adapter file differs from the uninterrupted run's");
    /* and tensor by tensor, to say which */
    SlStFile a, b;
    CHECK_OK(sl_st_open(&a, full, &ctx), &ctx);
    CHECK_OK(sl_st_open(&b, part, &ctx), &ctx);
    CHECK(a.n == b.n && a.n > 0, "tensor counts %d vs %d", a.n, b.n);
    int diff = 0;
    for (int i = 0; i < a.n && i < b.n; i++)
        diff += strcmp(a.entries[i].name, b.entries[i].name) || a.entries[i].nbytes != b.entries[i].nbytes ||
                memcmp(sl_st_data(&a, &a.entries[i]), sl_st_data(&b, &b.entries[i]), a.entries[i].nbytes);
    CHECK(diff == 0, "%d tensors differ between the resumed and the uninterrupted run", diff);
    sl_st_close(&a);
    sl_st_close(&b);
    /* resuming with other settings is refused */
    base_config(&c, part);
    c.resume = 1;
    c.rank = 2;
    SlTrainer tr;
    SlStatus st = sl_trainer_init(&tr, &c, &ctx);
    CHECK(st != SL_OK && strstr(ctx.msg, "rank"), "resume with another rank: %s", ctx.msg);
    sl_trainer_free(&tr);
}

static void test_caches(void) {
    SlCtx ctx;
    sl_ctx_init(&ctx);
    char out[4096], cache[4096];
    snprintf(out, sizeof out, "%s/cached.safetensors", g_root);
    snprintf(cache, sizeof cache, "%s/cache", g_root);
    char cmd[4200];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", cache); /* a cache left by an earlier run would hit */
    CHECK(system(cmd) == 0, "cannot clear %s", cache);
    SlTrainConfig c;
    base_config(&c, out);
    c.cache_dir = cache;
    SlTrainer tr;
    CHECK_OK(sl_trainer_init(&tr, &c, &ctx), &ctx);
    CHECK(tr.cache_hits == 0 && tr.cache_misses == 4 + 5, "first run: %d hits %d misses", tr.cache_hits, tr.cache_misses);
    sl_trainer_free(&tr);
    CHECK_OK(sl_trainer_init(&tr, &c, &ctx), &ctx);
    CHECK(tr.cache_hits == 9 && tr.cache_misses == 0, "second run: %d hits %d misses", tr.cache_hits, tr.cache_misses);
    sl_trainer_free(&tr);
}

/* A failed init (the data folder given as the model) frees what it had made (ASan's leak check
 * sees it: no sl_trainer_free here) and leaves a trainer every call refuses; it once divided by
 * the zero micro-batch (SIGFPE) in eval_loss. */
static void test_init_failure(void) {
    SlCtx ctx;
    sl_ctx_init(&ctx);
    char out[4096];
    snprintf(out, sizeof out, "%s/never.safetensors", g_root);
    SlTrainConfig c;
    base_config(&c, out);
    c.model = g_data;
    SlTrainer tr;
    SlStatus st = sl_trainer_init(&tr, &c, &ctx);
    CHECK(st == SL_ERR_FORMAT && strstr(ctx.msg, "not a model folder"), "data folder as the model: %s", ctx.msg);
    CHECK(tr.data.n == 0 && tr.micro == 0, "a failed init leaves a zeroed trainer (%d images kept)", tr.data.n);
    double loss = 0;
    CHECK(sl_trainer_eval_loss(&tr, 1, 1, &loss, &ctx) == SL_ERR_ARG && strstr(ctx.msg, "not initialised"),
          "eval_loss on a failed trainer: %s", ctx.msg);
    CHECK(sl_trainer_step(&tr, &ctx) == SL_ERR_ARG, "step on a failed trainer: %s", ctx.msg);
    CHECK(sl_trainer_save(&tr, &ctx) == SL_ERR_ARG, "save on a failed trainer: %s", ctx.msg);
    CHECK(access(out, F_OK) != 0, "a failed trainer wrote %s", out);
}

static void test_bad_input(void) {
    SlCtx ctx;
    sl_ctx_init(&ctx);
    char out[4096], empty[4096], bad[4096], p[4200];
    snprintf(out, sizeof out, "%s/bad.safetensors", g_root);
    snprintf(empty, sizeof empty, "%s/empty", g_root);
    mkdir(empty, 0755);
    SlTrainConfig c;
    base_config(&c, out);
    c.data = empty;
    SlTrainer tr;
    SlStatus st = sl_trainer_init(&tr, &c, &ctx);
    CHECK(st == SL_ERR_MISSING && strstr(ctx.msg, "no images"), "empty folder: %s", ctx.msg);
    sl_trainer_free(&tr);
    /* one good image and one broken one: skipped with a warning, or a stop */
    snprintf(bad, sizeof bad, "%s/badimgs", g_root);
    fixture_images(bad, 1, 32);
    snprintf(p, sizeof p, "%s/broken.png", bad);
    FILE *f = fopen(p, "w");
    fprintf(f, "this is not a png");
    fclose(f);
    base_config(&c, out);
    c.data = bad;
    st = sl_trainer_init(&tr, &c, &ctx);
    CHECK(st == SL_OK && tr.n_valid == 1, "bad image skipped: %s (valid %d)", ctx.msg, tr.n_valid);
    sl_trainer_free(&tr);
    c.stop_on_bad_image = 1;
    st = sl_trainer_init(&tr, &c, &ctx);
    CHECK(st == SL_ERR_FORMAT && strstr(ctx.msg, "broken.png"), "bad image stops: %s", ctx.msg);
    sl_trainer_free(&tr);
    /* a read-only output folder fails before training */
    if (geteuid() != 0) { /* root writes anywhere */
        char ro[4096];
        snprintf(ro, sizeof ro, "%s/ro", g_root);
        mkdir(ro, 0555);
        snprintf(p, sizeof p, "%s/ro/x.safetensors", g_root);
        base_config(&c, p);
        st = sl_trainer_init(&tr, &c, &ctx);
        CHECK(st == SL_ERR_IO && strstr(ctx.msg, "cannot write"), "read-only: %s", ctx.msg);
        sl_trainer_free(&tr);
    }
    base_config(&c, "/nonexistent-dir/x.safetensors");
    st = sl_trainer_init(&tr, &c, &ctx);
    CHECK(st == SL_ERR_IO && strstr(ctx.msg, "does not exist"), "missing output folder: %s", ctx.msg);
    sl_trainer_free(&tr);
}

/* --micro-batch: a batch run N images at a time. Stopped and resumed (also with
 * grad-accum) it ends with the same bytes as a run never stopped; the validation
 * loss agrees with the whole-batch forward (not bitwise: see tests/test_dist.c);
 * a micro-batch that does not divide the batch is refused. (That N ranks x b ==
 * one process --batch N*b --micro-batch b byte for byte is tests/test_dist.c's.) */
static void test_micro_batch(void) {
    SlCtx ctx;
    sl_ctx_init(&ctx);
    char full[4096], part[4096];
    snprintf(full, sizeof full, "%s/mb_straight.safetensors", g_root);
    snprintf(part, sizeof part, "%s/mb_resumed.safetensors", g_root);
    SlTrainConfig c;
    base_config(&c, full);
    c.micro_batch = 1;
    c.grad_accum = 2;
    CHECK_OK(run(&c, 0, &ctx), &ctx);
    base_config(&c, part);
    c.micro_batch = 1;
    c.grad_accum = 2;
    CHECK_OK(run(&c, 3, &ctx), &ctx);
    c.resume = 1;
    CHECK_OK(run(&c, 0, &ctx), &ctx);
    CHECK(same_file(full, part), "micro-batch 1 x grad-accum 2: the resumed run differs from the uninterrupted one");
    /* the validation loss, micro-batched and whole */
    SlTrainer tr;
    double whole = 0, micro = 0;
    base_config(&c, full);
    CHECK_OK(sl_trainer_init(&tr, &c, &ctx), &ctx);
    CHECK_OK(sl_trainer_eval_loss(&tr, 2, 99, &whole, &ctx), &ctx);
    sl_trainer_free(&tr);
    c.micro_batch = 1;
    CHECK_OK(sl_trainer_init(&tr, &c, &ctx), &ctx);
    CHECK_OK(sl_trainer_eval_loss(&tr, 2, 99, &micro, &ctx), &ctx);
    sl_trainer_free(&tr);
    CHECK(fabs(whole - micro) <= 1e-5 * whole, "validation loss micro-batched %.9g vs whole batch %.9g", micro, whole);
    /* must divide the batch */
    base_config(&c, full);
    c.batch = 3;
    c.micro_batch = 2;
    SlStatus st = sl_trainer_init(&tr, &c, &ctx);
    CHECK(st == SL_ERR_ARG && strstr(ctx.msg, "micro-batch"), "micro-batch 2 of batch 3: %s", ctx.msg);
    sl_trainer_free(&tr);
}

/* sl_trainer_run hooks for the tests: stop when the trainer reaches stop_at. */
typedef struct StopAt { const SlTrainer *tr; int64_t stop_at; } StopAt;
static int stop_at_step(void *user) {
    const StopAt *s = user;
    return s->tr->step == s->stop_at;
}

static SlStatus run_loop(const SlTrainConfig *c, int64_t stop_at, int *stopped, SlCtx *ctx) {
    SlTrainer tr;
    SlStatus st = sl_trainer_init(&tr, c, ctx);
    StopAt s = {&tr, stop_at};
    SlTrainHooks h = {.user = &s, .stop_requested = stop_at ? stop_at_step : NULL};
    SlTrainRunResult res = {0};
    if (!st) st = sl_trainer_run(&tr, &h, &res, ctx);
    *stopped = res.stopped;
    sl_trainer_free(&tr);
    return st;
}

/* The CSV log of a run stopped at step 3 and resumed is the uninterrupted run's,
 * byte for byte, even when the stopped run had logged steps beyond its
 * checkpoint (as a run killed between checkpoints, or failing to save, does). */
static void test_run_log_resume(void) {
    SlCtx ctx;
    sl_ctx_init(&ctx);
    char full[4096], part[4096], csv_full[4200], csv_part[4200];
    snprintf(full, sizeof full, "%s/loop_straight.safetensors", g_root);
    snprintf(part, sizeof part, "%s/loop_resumed.safetensors", g_root);
    snprintf(csv_full, sizeof csv_full, "%s.csv", full);
    snprintf(csv_part, sizeof csv_part, "%s.csv", part);
    SlTrainConfig c;
    base_config(&c, full);
    int stopped = 0;
    CHECK_OK(run_loop(&c, 0, &stopped, &ctx), &ctx);
    CHECK(!stopped, "the uninterrupted run says it stopped");
    base_config(&c, part);
    CHECK_OK(run_loop(&c, 3, &stopped, &ctx), &ctx);
    CHECK(stopped, "the run asked to stop at step 3 did not stop");
    FILE *f = fopen(csv_part, "a"); /* steps 4, 5 and a torn 6 logged by a run that died before checkpointing them */
    CHECK(f != NULL, "cannot append to %s", csv_part);
    if (f) {
        fprintf(f, "4,0.5,0.01,1\n5,0.5,0.01,1\n6,0.");
        fclose(f);
    }
    c.resume = 1;
    CHECK_OK(run_loop(&c, 0, &stopped, &ctx), &ctx);
    CHECK(same_file(full, part), "sl_trainer_run stopped and resumed: the adapter differs from the uninterrupted run's");
    CHECK(same_file(csv_full, csv_part), "the resumed run's CSV log is not the uninterrupted run's (steps repeated?)");
    size_t n = 0;
    char *log = slurp(csv_part, &n);
    int rows = 0;
    for (size_t i = 0; log && i < n; i++) rows += log[i] == '\n';
    CHECK(rows == 1 + 6, "the resumed log has %d lines, expected the header and 6 steps", rows);
    free(log);
    char tmp[4300];
    snprintf(tmp, sizeof tmp, "%s.tmp.%ld", csv_part, (long)getpid());
    CHECK(access(tmp, F_OK) != 0, "the log's temp file %s was left behind", tmp);
}

/* A run resumed with another data folder or another base model is refused,
 * naming what changed; with resume_anyway it continues. */
static void test_resume_other_inputs(void) {
    SlCtx ctx;
    sl_ctx_init(&ctx);
    char out[4096], data2[2300], model2[2300], cmd[20000];
    snprintf(out, sizeof out, "%s/guard.safetensors", g_root);
    snprintf(data2, sizeof data2, "%s/data_other", g_root);
    snprintf(model2, sizeof model2, "%s/model_other", g_root);
    SlTrainConfig c;
    base_config(&c, out);
    c.steps = 4;
    CHECK_OK(run(&c, 2, &ctx), &ctx);
    /* the same images with one caption changed */
    snprintf(cmd, sizeof cmd, "rm -rf '%s' && cp -r '%s' '%s' && echo 'a blue square' > '%s/img01.txt'", data2, g_data,
             data2, data2);
    CHECK(system(cmd) == 0, "cannot make %s", data2);
    /* the same model with one VAE weight nudged (the lowest byte of the file's last float) */
    snprintf(cmd, sizeof cmd, "rm -rf '%s' && cp -r '%s' '%s' && rm '%s/vae' && cp -rL '%s/vae' '%s/vae'", model2, g_model,
             model2, model2, g_model, model2);
    CHECK(system(cmd) == 0, "cannot make %s", model2);
    char vae[4200];
    snprintf(vae, sizeof vae, "%s/vae/diffusion_pytorch_model.safetensors", model2);
    FILE *f = fopen(vae, "r+b");
    CHECK(f && fseek(f, -4, SEEK_END) == 0, "cannot open %s", vae);
    if (f) {
        int b = fgetc(f);
        fseek(f, -4, SEEK_END);
        fputc(b ^ 1, f);
        fclose(f);
    }
    SlTrainer tr;
    base_config(&c, out);
    c.steps = 4;
    c.resume = 1;
    c.data = data2;
    SlStatus st = sl_trainer_init(&tr, &c, &ctx);
    CHECK(st == SL_ERR_ARG && strstr(ctx.msg, "the data folder differs from the one this run started with") &&
              strstr(ctx.msg, "--resume-anyway"),
          "resume with another caption: %s", st ? ctx.msg : "accepted");
    sl_trainer_free(&tr);
    c.data = g_data;
    c.model = model2;
    st = sl_trainer_init(&tr, &c, &ctx);
    CHECK(st == SL_ERR_ARG && strstr(ctx.msg, "the base model differs") && strstr(ctx.msg, "model_other"),
          "resume with another model: %s", st ? ctx.msg : "accepted");
    sl_trainer_free(&tr);
    c.data = data2;
    c.resume_anyway = 1;
    st = sl_trainer_init(&tr, &c, &ctx);
    CHECK(st == SL_OK && tr.step == 2, "resume_anyway with another data folder and model: %s", st ? ctx.msg : "ok");
    sl_trainer_free(&tr);
    /* the same inputs resume (the hashes are stable) */
    base_config(&c, out);
    c.steps = 4;
    c.resume = 1;
    st = sl_trainer_init(&tr, &c, &ctx);
    CHECK(st == SL_OK && tr.step == 2, "resume with the same data and model: %s", st ? ctx.msg : "ok");
    sl_trainer_free(&tr);
}

/* Temp files of a dead process beside the outputs and in the cache folder are
 * removed at set-up; a live process's, and names that are not ours, are kept. */
static void test_stale_tmp(void) {
    SlCtx ctx;
    sl_ctx_init(&ctx);
    pid_t dead = fork(); /* a pid that is surely gone: a child that exited and was reaped */
    if (dead == 0) _exit(0);
    int status;
    waitpid(dead, &status, 0);
    CHECK(kill(dead, 0) != 0, "the reaped child %ld is still there", (long)dead);
    const long live = (long)getppid(); /* ctest (or the shell): alive, and not the trainer */
    char out[4096], cache[4096];
    snprintf(out, sizeof out, "%s/stale.safetensors", g_root);
    snprintf(cache, sizeof cache, "%s/stale_cache", g_root);
    mkdir(cache, 0755);
    char gone[6][4300], kept[3][4300];
    snprintf(gone[0], sizeof gone[0], "%s.tmp.%ld", out, (long)dead);
    snprintf(gone[1], sizeof gone[1], "%s.state.tmp.%ld", out, (long)dead);
    snprintf(gone[2], sizeof gone[2], "%s.csv.tmp.%ld", out, (long)dead);
    snprintf(gone[3], sizeof gone[3], "%s/.stylora-write-test.%ld", g_root, (long)dead);
    snprintf(gone[4], sizeof gone[4], "%s/lat_0123456789abcdef_2.safetensors.tmp.%ld", cache, (long)dead);
    snprintf(gone[5], sizeof gone[5], "%s.html.tmp.%ld", out, (long)dead); /* the report's (kill -9 left one) */
    snprintf(kept[0], sizeof kept[0], "%s.state.tmp.%ld", out, live);
    snprintf(kept[1], sizeof kept[1], "%s/other.safetensors.tmp.%ld", g_root, (long)dead); /* another output's */
    snprintf(kept[2], sizeof kept[2], "%s/te_0123456789abcdef.safetensors.tmp.%ld", cache, live);
    for (int i = 0; i < 9; i++) {
        FILE *f = fopen(i < 6 ? gone[i] : kept[i - 6], "w");
        CHECK(f != NULL, "cannot write %s", i < 6 ? gone[i] : kept[i - 6]);
        if (f) fclose(f);
    }
    SlTrainConfig c;
    base_config(&c, out);
    c.cache_dir = cache;
    SlTrainer tr;
    CHECK_OK(sl_trainer_init(&tr, &c, &ctx), &ctx);
    sl_trainer_free(&tr);
    for (int i = 0; i < 6; i++) CHECK(access(gone[i], F_OK) != 0, "the dead process's %s was not removed", gone[i]);
    for (int i = 0; i < 3; i++) {
        CHECK(access(kept[i], F_OK) == 0, "%s was removed (%s)", kept[i], i == 1 ? "not ours" : "its process is alive");
        unlink(kept[i]);
    }
}

/* Captions read by sl_dataset_scan: a NUL byte in a caption file is refused with
 * the file and offset (it cut the caption silently); a folder where no image
 * has a caption, with no --caption or --trigger, warns once naming the folder
 * (it trained on empty captions silently). */
typedef struct LogLines { int n_warn; char last[2048]; } LogLines;
static void log_collect(void *user, SlLogLevel level, const char *msg) {
    LogLines *l = user;
    if (level == SL_LOG_WARN) { l->n_warn++; snprintf(l->last, sizeof l->last, "%s", msg); }
}

static void test_captions(void) {
    SlCtx ctx;
    sl_ctx_init(&ctx);
    LogLines lines = {0};
    ctx.log = log_collect;
    ctx.log_user = &lines;
    char dir[4096], p[4200];
    snprintf(dir, sizeof dir, "%s/captions", g_root);
    CHECK(fixture_images(dir, 2, 8), "cannot write %s", dir);
    SlDataset d;
    CHECK_OK(sl_dataset_scan(&d, dir, NULL, &ctx), &ctx);
    CHECK(d.n == 2 && strcmp(d.items[1].caption, "a red square 1") == 0 && lines.n_warn == 0,
          "captioned folder: %d items, '%s', %d warnings", d.n, d.n == 2 ? d.items[1].caption : "", lines.n_warn);
    sl_dataset_free(&d);
    snprintf(p, sizeof p, "%s/img01.txt", dir);
    FILE *f = fopen(p, "wb");
    fwrite("a red\0 square", 1, 14, f);
    fclose(f);
    SlStatus st = sl_dataset_scan(&d, dir, NULL, &ctx);
    CHECK(st == SL_ERR_FORMAT && strstr(ctx.msg, p) && strstr(ctx.msg, "NUL byte at byte offset 5"), "NUL: %s: %s",
          sl_status_name(st), ctx.msg);
    for (int i = 0; i < 2; i++) {
        snprintf(p, sizeof p, "%s/img%02d.txt", dir, i);
        remove(p);
    }
    CHECK_OK(sl_dataset_scan(&d, dir, NULL, &ctx), &ctx);
    CHECK(lines.n_warn == 1 && strstr(lines.last, dir) && strstr(lines.last, "--caption") &&
              strstr(lines.last, ".txt") && strstr(lines.last, "--trigger"),
          "uncaptioned folder: %d warnings, last: %s", lines.n_warn, lines.last);
    sl_dataset_free(&d);
    SlDataOpts o = {.default_caption = "a square"};
    CHECK_OK(sl_dataset_scan(&d, dir, &o, &ctx), &ctx);
    sl_dataset_free(&d);
    SlDataOpts t = {.trigger = "sks"};
    CHECK_OK(sl_dataset_scan(&d, dir, &t, &ctx), &ctx);
    sl_dataset_free(&d);
    CHECK(lines.n_warn == 1, "--caption or --trigger given: %d warnings (%s)", lines.n_warn, lines.last);
    /* two captions of 80 words: the trainer says once how many tokens were dropped (A1111's
     * wording), the count its tokenizer gives; it cut them silently */
    for (int i = 0; i < 2; i++) {
        snprintf(p, sizeof p, "%s/img%02d.txt", dir, i);
        f = fopen(p, "w");
        for (int k = 0; k < 80; k++) fprintf(f, k ? " %s" : "%s", k == 79 && i ? "dog" : "cat");
        fclose(f);
    }
    char out[4096];
    snprintf(out, sizeof out, "%s/captions.safetensors", g_root);
    SlTrainConfig c;
    base_config(&c, out);
    c.data = dir;
    lines.n_warn = 0;
    SlTrainer tr;
    CHECK_OK(sl_trainer_init(&tr, &c, &ctx), &ctx);
    char want[128] = "(no tokenizer)";
    int32_t ids[77];
    int n_dropped = 0;
    if (tr.model.tok && sl_tokenizer_encode_dropped(tr.model.tok, tr.data.items[0].caption, ids, 77, NULL, &n_dropped,
                                                    NULL, 0, &ctx) == SL_OK)
        snprintf(want, sizeof want, "%d tokens over the limit of 75 were dropped: 'c", n_dropped);
    sl_trainer_free(&tr);
    CHECK(n_dropped > 5 && lines.n_warn == 1 && strstr(lines.last, want),
          "long captions: %d warnings (want '%s'), last: %s", lines.n_warn, want, lines.last);
}

/* Bad weights through the whole model loader. A NaN is refused at load with one
 * message naming the component, the tensor, the file and the element, for every
 * component (only the U-Net and text encoder were checked). A VAE encoder that
 * overflows at run time (finite weights of 3e38) stops set-up at the first image
 * with the VAE encoder named (not image by image as unreadable); its NaN latents
 * went on to fail as "the loss is not finite (the U-Net output went bad)". */
static void test_bad_weights(void) {
    static const struct { const char *part, *key, *component; float all; } cases[] = {
        {"unet", "conv_in.weight", "U-Net", NAN},
        {"text_encoder", "text_model.encoder.layers.0.mlp.fc1.weight", "text encoder", NAN},
        {"vae", "decoder.up_blocks.0.resnets.0.conv2.weight", "VAE decoder", NAN},
        {"vae", "encoder.conv_out.weight", "VAE encoder", 3e38f},
    };
    SlCtx ctx;
    sl_ctx_init(&ctx);
    char model[4096], part[4200], out[4096], cmd[4200];
    snprintf(model, sizeof model, "%s/model_bad", g_root);
    snprintf(out, sizeof out, "%s/bad_weights.safetensors", g_root);
    for (size_t k = 0; k < sizeof cases / sizeof cases[0]; k++) {
        snprintf(part, sizeof part, "%s/%s", model, cases[k].part);
        snprintf(cmd, sizeof cmd, "rm -rf '%s'", model); /* the part is a folder after an earlier run */
        int ok = system(cmd) == 0 && fixture_tiny_model(model, sl_test_shared()) && unlink(part) == 0 &&
                 fixture_bad_part(part, sl_test_shared(), cases[k].part, cases[k].key, cases[k].all, 7);
        CHECK(ok, "cannot build %s", model);
        if (!ok) continue;
        SlTrainConfig c;
        base_config(&c, out);
        c.model = model;
        SlTrainer tr;
        SlStatus st = sl_trainer_init(&tr, &c, &ctx);
        char want[4400];
        if (isnan(cases[k].all))
            snprintf(want, sizeof want, "%s: weight '%s' in %s/%s has 1 NaN/Inf value (the first at element 7)",
                     cases[k].component, cases[k].key, part,
                     strcmp(cases[k].part, "text_encoder") ? "diffusion_pytorch_model.safetensors"
                                                           : "model.safetensors");
        else
            snprintf(want, sizeof want, "%s: its output latent has", cases[k].component);
        CHECK(st == SL_ERR_NUMERIC && strstr(ctx.msg, want), "%s in %s: %s: %s (want \"%s\")",
              isnan(cases[k].all) ? "NaN" : "3e38", cases[k].key, sl_status_name(st), ctx.msg, want);
        sl_trainer_free(&tr);
    }
    /* the same check on the U-Net's fp16, NF4 and bf16 loaders, which read in chunks: the
     * element is counted from the tensor's start */
    const char *q = "down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q.weight";
    snprintf(part, sizeof part, "%s/unet", model);
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", model);
    int ok = system(cmd) == 0 && fixture_tiny_model(model, sl_test_shared()) && unlink(part) == 0 &&
             fixture_bad_part(part, sl_test_shared(), "unet", q, NAN, 70);
    CHECK(ok, "cannot build %s", model);
    char want[4400];
    snprintf(want, sizeof want, "U-Net: weight '%s' in %s/diffusion_pytorch_model.safetensors has 1 NaN/Inf value "
             "(the first at element 70)", q, part);
    for (int k = 0; ok && k < 3; k++) {
        SlModel m;
        SlModelOpts mo = {.unet_half = k == 0, .unet_bf16 = k == 2};
        SlStatus st = k != 1 ? sl_model_load(&m, model, &mo, &ctx) : sl_model_load_nf4(&m, model, &mo, NULL, 1, &ctx);
        CHECK(st == SL_ERR_NUMERIC && strstr(ctx.msg, want), "NaN in %s, %s: %s: %s", q, k == 1 ? "nf4" : k ? "bf16" : "fp16",
              sl_status_name(st), ctx.msg);
        if (st == SL_OK) sl_model_free(&m);
    }
}

int main(void) {
    snprintf(g_root, sizeof g_root, "%s/tmp_test_train", sl_test_binary());
    mkdir(g_root, 0755);
    snprintf(g_model, sizeof g_model, "%s/model", g_root);
    snprintf(g_data, sizeof g_data, "%s/data", g_root);
    if (!fixture_tiny_model(g_model, sl_test_shared()) || !fixture_images(g_data, 4, 40)) {
        fprintf(stderr, "cannot build fixtures in %s\n", g_root);
        return 1;
    }
    test_loss_falls();
    test_determinism_threads();
    test_resume();
    test_micro_batch();
    test_caches();
    test_bad_input();
    test_init_failure();
    test_run_log_resume();
    test_resume_other_inputs();
    test_stale_tmp();
    test_captions();
    test_bad_weights();
    return sl_test_finish("test_train");
}
