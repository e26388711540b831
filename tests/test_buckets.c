/* test_buckets.c - aspect-ratio buckets (train --buckets), kohya's enable_bucket:
 * the bucket lists and each image's bucket and resized size equal those of a
 * re-statement of kohya's algorithm (tests/reference/buckets_ref.py ->
 * tests/data/buckets_golden.json) exactly; an image already at its bucket's
 * height is center-cropped at kohya's trim // 2, pixel for pixel; in a trainer on
 * the tiny model a 2:1 image goes to the 2:1 bucket, every batch's images share
 * one bucket, every sample is seen each epoch, and the U-Net runs at the batch's
 * bucket shape; training with buckets is the same bytes with 1 and 2 threads,
 * resumes bit-exactly, hits its per-bucket latent cache on a second run; a
 * checkpoint without buckets does not resume with them; a bucket step that is no
 * multiple of the model's size multiple is refused. */
#include <omp.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/config.h"
#include "core/file.h"
#include "fixture_tiny.h"
#include "pipeline/data.h"
#include "pipeline/train.h"
#include "test_util.h"

static char g_root[2048], g_model[2200], g_data[2200];

static void test_golden_lists(void) {
    SlCtx ctx;
    sl_ctx_init(&ctx);
    char path[4096];
    snprintf(path, sizeof path, "%s/tests/data/buckets_golden.json", sl_test_source());
    SlConfig js = {0};
    CHECK_OK(sl_config_load(&js, path, &ctx), &ctx);
    const cJSON *cases = cJSON_GetObjectItemCaseSensitive(js.root, "cases");
    CHECK(cJSON_GetArraySize(cases) >= 4, "%s: no cases", path);
    int n_sel = 0;
    const cJSON *cs;
    cJSON_ArrayForEach(cs, cases) {
        const int R = cJSON_GetObjectItem(cs, "resolution")->valueint, lo = cJSON_GetObjectItem(cs, "min")->valueint;
        const int hi = cJSON_GetObjectItem(cs, "max")->valueint, step = cJSON_GetObjectItem(cs, "step")->valueint;
        SlBuckets bk;
        CHECK_OK(sl_buckets_make(&bk, R, lo, hi, step, &ctx), &ctx);
        const cJSON *want = cJSON_GetObjectItem(cs, "buckets");
        CHECK(bk.n == cJSON_GetArraySize(want), "R %d step %d: %d buckets, kohya's algorithm makes %d", R, step, bk.n,
              cJSON_GetArraySize(want));
        for (int i = 0; i < bk.n && i < cJSON_GetArraySize(want); i++) {
            const cJSON *wh = cJSON_GetArrayItem(want, i);
            const int w = cJSON_GetArrayItem(wh, 0)->valueint, h = cJSON_GetArrayItem(wh, 1)->valueint;
            CHECK(bk.b[i].w == w && bk.b[i].h == h, "R %d step %d: bucket %d is %dx%d, want %dx%d", R, step, i, bk.b[i].w,
                  bk.b[i].h, w, h);
            CHECK((int64_t)bk.b[i].w * bk.b[i].h <= (int64_t)R * R, "bucket %dx%d is larger than %d^2", bk.b[i].w, bk.b[i].h, R);
        }
        const cJSON *sel;
        cJSON_ArrayForEach(sel, cJSON_GetObjectItem(cs, "select")) {
            int v[7];
            for (int k = 0; k < 7; k++) v[k] = cJSON_GetArrayItem(sel, k)->valueint;
            int rw = 0, rh = 0;
            const int got = sl_buckets_select(&bk, v[0], v[1], &rw, &rh);
            CHECK(got == v[2] && rw == v[3] && rh == v[4], "R %d step %d: image %dx%d -> bucket %d (%dx%d) resized %dx%d, "
                  "kohya: bucket %d resized %dx%d", R, step, v[0], v[1], got, bk.b[got].w, bk.b[got].h, rw, rh, v[2], v[3], v[4]);
            n_sel++;
        }
        /* the brief's case: at 96 px in steps of 16 a 2:1 image has an exact 2:1 bucket */
        if (R == 96 && step == 16) {
            int rw, rh, b = sl_buckets_select(&bk, 1024, 512, &rw, &rh);
            CHECK(bk.b[b].w == 128 && bk.b[b].h == 64, "2:1 image at 96 px: bucket %dx%d", bk.b[b].w, bk.b[b].h);
        }
    }
    printf("buckets: %d selections equal kohya's algorithm\n", n_sel);
    sl_config_free(&js);
    /* bad limits are errors, not empty lists */
    SlBuckets bk;
    CHECK(sl_buckets_make(&bk, 64, 32, 16, 16, &ctx) == SL_ERR_ARG, "min > max accepted");
    CHECK(sl_buckets_make(&bk, 64, 8, 128, 16, &ctx) == SL_ERR_ARG, "min < step accepted");
    CHECK(sl_buckets_make(&bk, 64, 16, 65536, 16, &ctx) == SL_ERR_ARG && strstr(ctx.msg, "more than"),
          "thousands of buckets accepted: %s", ctx.msg);
}

/* An image at its bucket's height (no resize) is cropped at (slack // 2): pixel for pixel. */
static void test_center_crop(void) {
    SlCtx ctx;
    sl_ctx_init(&ctx);
    SlBuckets bk;
    CHECK_OK(sl_buckets_make(&bk, 96, 48, 192, 16, &ctx), &ctx);
    char dir[4096], path[4200];
    snprintf(dir, sizeof dir, "%s/crop", g_root);
    /* 136x64: aspect 2.125 lies exactly between 128x64 (2) and 144x64 (2.25): numpy's
     * argmin takes the first, 128x64; slack 8 -> x 4. 64x135: 64x128, slack 7 -> y 3. */
    const struct { int w, h, bw, bh, x, y; } cases[2] = {{136, 64, 128, 64, 4, 0}, {64, 135, 64, 128, 0, 3}};
    for (int k = 0; k < 2; k++) {
        char name[32];
        snprintf(name, sizeof name, "c%d", k);
        CHECK(fixture_image_wh(dir, name, cases[k].w, cases[k].h, k), "cannot write %s", dir);
        snprintf(path, sizeof path, "%s/%s.png", dir, name);
        int rw, rh;
        const int b = sl_buckets_select(&bk, cases[k].w, cases[k].h, &rw, &rh);
        CHECK(bk.b[b].w == cases[k].bw && bk.b[b].h == cases[k].bh && rw == cases[k].w && rh == cases[k].h,
              "%dx%d: bucket %dx%d resized %dx%d", cases[k].w, cases[k].h, bk.b[b].w, bk.b[b].h, rw, rh);
        const int W = bk.b[b].w, H = bk.b[b].h;
        float *got = malloc((size_t)3 * W * H * sizeof(float)), *want = malloc((size_t)3 * W * H * sizeof(float));
        SlImage img = {0}, cr = {0};
        SlImageReadOpts ro = sl_image_read_opts_default();
        ro.channels = 3;
        CHECK_OK(sl_image_read(&img, path, &ro, &ctx), &ctx);
        CHECK_OK(sl_image_crop(&cr, &img, cases[k].x, cases[k].y, W, H, &ctx), &ctx);
        sl_image_to_chw(want, &cr, 3);
        CHECK_OK(sl_data_prepare_image_bucket(got, path, &bk, b, 0, 0, &ctx), &ctx);
        CHECK(memcmp(got, want, (size_t)3 * W * H * sizeof(float)) == 0, "%dx%d: not the crop at (%d, %d)", cases[k].w,
              cases[k].h, cases[k].x, cases[k].y);
        sl_image_flip_h(&cr);
        sl_image_to_chw(want, &cr, 3);
        CHECK_OK(sl_data_prepare_image_bucket(got, path, &bk, b, 1, 0, &ctx), &ctx);
        CHECK(memcmp(got, want, (size_t)3 * W * H * sizeof(float)) == 0, "%dx%d: flip is not the mirrored crop",
              cases[k].w, cases[k].h);
        sl_image_free(&img);
        sl_image_free(&cr);
        free(got);
        free(want);
    }
    /* a 3x700 strip covers its 48x192 bucket at 48x11200: above a 10000-pixel limit, refused by name */
    CHECK(fixture_image_wh(dir, "strip", 3, 700, 5), "cannot write %s", dir);
    snprintf(path, sizeof path, "%s/strip.png", dir);
    int rw, rh;
    const int b = sl_buckets_select(&bk, 3, 700, &rw, &rh);
    CHECK(bk.b[b].w == 48 && bk.b[b].h == 192 && rw == 48 && rh == 11200, "3x700: bucket %dx%d resized %dx%d", bk.b[b].w,
          bk.b[b].h, rw, rh);
    float *buf = malloc((size_t)3 * 48 * 192 * sizeof(float));
    SlStatus st = sl_data_prepare_image_bucket(buf, path, &bk, b, 0, 10000, &ctx);
    CHECK(st == SL_ERR_FORMAT && strstr(ctx.msg, "strip.png") && strstr(ctx.msg, "48x11200"), "3x700 strip: %s", ctx.msg);
    free(buf);
}

static void base_config(SlTrainConfig *c, const char *out) {
    sl_train_config_default(c);
    c->model = g_model;
    c->data = g_data;
    c->out = out;
    c->resolution = 48; /* the tiny model's multiple is 4 px: default step 8, sides 24..96; 64x32 is a bucket */
    c->buckets = 1;
    c->rank = 4;
    c->alpha = 8;
    c->batch = 2;
    c->steps = 6;
    c->lr = 1e-2f;
    c->seed = 7;
    c->flip = 1;
    c->caption_dropout = 0.2f;
}

static SlStatus run(const SlTrainConfig *c, int64_t stop_at, SlCtx *ctx) {
    SlTrainer tr;
    SlStatus st = sl_trainer_init(&tr, c, ctx);
    while (!st && tr.step < (stop_at ? stop_at : c->steps)) st = sl_trainer_step(&tr, ctx);
    if (!st) st = sl_trainer_save(&tr, ctx);
    sl_trainer_free(&tr);
    return st;
}

static int same_file(const char *a, const char *b) {
    SlCtx ctx;
    sl_ctx_init(&ctx);
    char *x = NULL, *y = NULL;
    size_t na = 0, nb = 0;
    int ok = sl_read_file(a, 1u << 30, &x, &na, &ctx) == SL_OK && sl_read_file(b, 1u << 30, &y, &nb, &ctx) == SL_OK;
    ok = ok && na == nb && memcmp(x, y, na) == 0;
    free(x);
    free(y);
    return ok;
}

typedef struct LogLines { int n_bucket; char text[4096]; } LogLines;
static void log_collect(void *user, SlLogLevel level, const char *msg) {
    LogLines *l = user;
    if (level == SL_LOG_INFO && strncmp(msg, "bucket ", 7) == 0) {
        l->n_bucket++;
        size_t o = strlen(l->text);
        snprintf(l->text + o, sizeof l->text - o, "%s\n", msg);
    }
}

/* the index of the valid image whose file name ends with `name` */
static int valid_of(const SlTrainer *tr, const char *name) {
    for (int i = 0; i < tr->n_valid; i++) {
        const char *p = tr->data.items[tr->valid[i]].path;
        size_t n = strlen(p), k = strlen(name);
        if (n >= k && strcmp(p + n - k, name) == 0) return i;
    }
    return -1;
}

static void test_trainer_buckets(void) {
    SlCtx ctx;
    sl_ctx_init(&ctx);
    LogLines lines = {0};
    ctx.log = log_collect;
    ctx.log_user = &lines;
    char out[4096];
    snprintf(out, sizeof out, "%s/b.safetensors", g_root);
    SlTrainConfig c;
    base_config(&c, out);
    SlTrainer tr;
    CHECK_OK(sl_trainer_init(&tr, &c, &ctx), &ctx);
    CHECK(tr.cfg.bucket_step == 8 && tr.cfg.min_bucket == 24 && tr.cfg.max_bucket == 96, "defaults at 48 px: step %lld, "
          "sides %lld..%lld", (long long)tr.cfg.bucket_step, (long long)tr.cfg.min_bucket, (long long)tr.cfg.max_bucket);
    const struct { const char *name; int w, h; } want[] = {
        {"wide2to1.png", 64, 32}, {"wide_big.png", 64, 32}, {"tall1to2.png", 32, 64}, {"sq0.png", 48, 48}, {"sq1.png", 48, 48}};
    for (int k = 0; k < 5; k++) {
        int i = valid_of(&tr, want[k].name);
        CHECK(i >= 0, "%s not in the data", want[k].name);
        if (i < 0) continue;
        SlBucket b = tr.buckets.b[tr.item_bucket[i]];
        CHECK(b.w == want[k].w && b.h == want[k].h, "%s: bucket %dx%d, want %dx%d", want[k].name, b.w, b.h, want[k].w, want[k].h);
    }
    /* kohya-style counts at start: 3 non-empty buckets (the tall one in a 2_ folder: 2 with repeats) */
    CHECK(lines.n_bucket == 3 && strstr(lines.text, "bucket 64x32: 2 images\n") &&
          strstr(lines.text, "bucket 32x64: 1 image (2 with repeats)\n") && strstr(lines.text, "bucket 48x48: 2 images\n"),
          "bucket lines:\n%s", lines.text);
    /* batches per epoch: ceil(2/2) + ceil(2/2) + ceil(2/2) = 3; each one bucket; every sample seen each epoch */
    CHECK(tr.n_batches == 3, "%lld batches per epoch, want 3", (long long)tr.n_batches);
    for (int64_t epoch = 0; epoch < 3; epoch++) {
        int seen[16] = {0};
        for (int64_t e = 0; e < tr.n_batches; e++) {
            const int64_t kb = epoch * tr.n_batches + e;
            int first = sl_trainer_batch_item(&tr, kb, 0);
            for (int64_t j = 0; j < c.batch; j++) {
                int it = sl_trainer_batch_item(&tr, kb, j);
                seen[it]++;
                CHECK(tr.item_bucket[it] == tr.item_bucket[first], "epoch %lld batch %lld: images of buckets %d and %d",
                      (long long)epoch, (long long)e, tr.item_bucket[first], tr.item_bucket[it]);
            }
        }
        for (int i = 0; i < tr.n_valid; i++)
            CHECK(seen[i] == tr.data.items[tr.valid[i]].repeats, "epoch %lld: image %d seen %d times, repeats %d",
                  (long long)epoch, i, seen[i], tr.data.items[tr.valid[i]].repeats);
    }
    /* the U-Net runs each step at its batch's bucket (latent = pixels / 2 on the tiny model) */
    int shapes = 0, last_w = 0;
    for (int s = 0; s < 6; s++) {
        const int it = sl_trainer_batch_item(&tr, tr.step, 0);
        CHECK_OK(sl_trainer_step(&tr, &ctx), &ctx);
        const SlBucket b = tr.buckets.b[tr.item_bucket[it]];
        CHECK(tr.model.unet.W == b.w / 2 && tr.model.unet.H == b.h / 2, "step %d: U-Net at %lldx%lld, bucket %dx%d", s,
              (long long)tr.model.unet.W, (long long)tr.model.unet.H, b.w, b.h);
        shapes += b.w != last_w;
        last_w = b.w;
        CHECK(isfinite(tr.loss) && tr.loss > 0, "step %d: loss %g", s, tr.loss);
    }
    CHECK(shapes >= 2, "6 steps ran at one shape only");
    double loss = 0;
    CHECK_OK(sl_trainer_eval_loss(&tr, 3, 99, &loss, &ctx), &ctx);
    CHECK(isfinite(loss) && loss > 0, "eval loss %g", loss);
    CHECK_OK(sl_trainer_save(&tr, &ctx), &ctx);
    sl_trainer_free(&tr);
    /* kohya's metadata keys */
    SlStFile f;
    CHECK_OK(sl_st_open(&f, out, &ctx), &ctx);
    const char *eb = sl_st_meta(&f, "ss_enable_bucket"), *info = sl_st_meta(&f, "ss_bucket_info");
    CHECK(eb && !strcmp(eb, "True") && info && strstr(info, "\"resolution\": [64, 32], \"count\": 2"),
          "ss_enable_bucket %s, ss_bucket_info %s", eb ? eb : "(none)", info ? info : "(none)");
    sl_st_close(&f);
}

static void test_determinism_resume(void) {
    SlCtx ctx;
    sl_ctx_init(&ctx);
    char o1[4096], o2[4096], part[4096];
    snprintf(o1, sizeof o1, "%s/t1.safetensors", g_root);
    snprintf(o2, sizeof o2, "%s/t2.safetensors", g_root);
    snprintf(part, sizeof part, "%s/resumed.safetensors", g_root);
    SlTrainConfig c;
    base_config(&c, o1);
    c.grad_accum = 2; /* two buckets within one step */
    omp_set_num_threads(1);
    CHECK_OK(run(&c, 0, &ctx), &ctx);
    omp_set_num_threads(2);
    c.out = o2;
    CHECK_OK(run(&c, 0, &ctx), &ctx);
    CHECK(same_file(o1, o2), "bucketed training differs between 1 and 2 threads");
    c.out = part;
    CHECK_OK(run(&c, 4, &ctx), &ctx); /* stopped after 4 of 6 steps (mid-epoch), checkpoint written */
    c.resume = 1;
    CHECK_OK(run(&c, 0, &ctx), &ctx);
    CHECK(same_file(o1, part), "the resumed bucketed run differs from the uninterrupted one");
    /* micro-batches of 1 (the U-Net planned per shard of a bucket's batch): thread-independent too */
    char m1[4096], m2[4096];
    snprintf(m1, sizeof m1, "%s/m1.safetensors", g_root);
    snprintf(m2, sizeof m2, "%s/m2.safetensors", g_root);
    c.micro_batch = 1;
    c.resume = 0;
    c.out = m1;
    omp_set_num_threads(1);
    CHECK_OK(run(&c, 0, &ctx), &ctx);
    omp_set_num_threads(2);
    c.out = m2;
    CHECK_OK(run(&c, 0, &ctx), &ctx);
    CHECK(same_file(m1, m2), "bucketed training with --micro-batch 1 differs between 1 and 2 threads");
    c.micro_batch = 0;
    c.out = part;
    c.resume = 1;
    /* a checkpoint made with buckets does not resume without them */
    c.buckets = 0;
    SlTrainer tr;
    SlStatus st = sl_trainer_init(&tr, &c, &ctx);
    CHECK(st == SL_ERR_ARG && strstr(ctx.msg, "buckets"), "resume without buckets: %s", ctx.msg);
    sl_trainer_free(&tr);
    /* and buckets change the run: not the bytes of the square run */
    char sq[4096];
    snprintf(sq, sizeof sq, "%s/square.safetensors", g_root);
    c.resume = 0;
    c.out = sq;
    CHECK_OK(run(&c, 0, &ctx), &ctx);
    CHECK(!same_file(o1, sq), "--buckets made no difference");
}

static void test_cache_and_errors(void) {
    SlCtx ctx;
    sl_ctx_init(&ctx);
    char out[4096], cache[4096], cmd[4200];
    snprintf(out, sizeof out, "%s/cached.safetensors", g_root);
    snprintf(cache, sizeof cache, "%s/cache", g_root);
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", cache);
    CHECK(system(cmd) == 0, "cannot clear %s", cache);
    SlTrainConfig c;
    base_config(&c, out);
    c.cache_dir = cache;
    SlTrainer tr;
    CHECK_OK(sl_trainer_init(&tr, &c, &ctx), &ctx);
    CHECK(tr.cache_hits == 0 && tr.cache_misses == 5 + 6, "first run: %d hits %d misses", tr.cache_hits, tr.cache_misses);
    sl_trainer_free(&tr);
    CHECK_OK(sl_trainer_init(&tr, &c, &ctx), &ctx);
    CHECK(tr.cache_hits == 11 && tr.cache_misses == 0, "second run: %d hits %d misses", tr.cache_hits, tr.cache_misses);
    sl_trainer_free(&tr);
    /* the latent entries are named by their bucket: 2 at 64x32, 1 at 32x64, 2 at 48x48 */
    int n64x32 = 0, n32x64 = 0, n48 = 0;
    snprintf(cmd, sizeof cmd, "ls '%s'", cache);
    FILE *p = popen(cmd, "r");
    char line[512];
    while (p && fgets(line, sizeof line, p)) {
        n64x32 += strstr(line, "_2_64x32.safetensors") != NULL;
        n32x64 += strstr(line, "_2_32x64.safetensors") != NULL;
        n48 += strstr(line, "_2_48x48.safetensors") != NULL;
    }
    if (p) pclose(p);
    CHECK(n64x32 == 2 && n32x64 == 1 && n48 == 2, "cache entries per bucket: %d, %d, %d", n64x32, n32x64, n48);
    /* a step that is no multiple of the model's 4 px is refused, naming it */
    base_config(&c, out);
    c.bucket_step = 6;
    SlStatus st = sl_trainer_init(&tr, &c, &ctx);
    CHECK(st == SL_ERR_ARG && strstr(ctx.msg, "--bucket-step 6") && strstr(ctx.msg, "multiple of 4"), "step 6: %s", ctx.msg);
    base_config(&c, out);
    c.min_bucket = 20; /* not a multiple of the default step 8 */
    st = sl_trainer_init(&tr, &c, &ctx);
    CHECK(st == SL_ERR_ARG && strstr(ctx.msg, "--min-bucket 20"), "min 20: %s", ctx.msg);
}

int main(void) {
    snprintf(g_root, sizeof g_root, "%s/tmp_test_buckets", sl_test_binary());
    mkdir(g_root, 0755);
    snprintf(g_model, sizeof g_model, "%s/model", g_root);
    snprintf(g_data, sizeof g_data, "%s/data", g_root);
    char tall[2300];
    snprintf(tall, sizeof tall, "%s/2_tall", g_data);
    /* 2:1 (twice), 1:2 repeated twice, two squares; resolution 48 */
    if (!fixture_tiny_model(g_model, sl_test_shared()) || !fixture_image_wh(g_data, "wide2to1", 64, 32, 0) ||
        !fixture_image_wh(g_data, "wide_big", 100, 50, 1) || !fixture_image_wh(tall, "tall1to2", 30, 60, 2) ||
        !fixture_image_wh(g_data, "sq0", 40, 40, 3) || !fixture_image_wh(g_data, "sq1", 56, 52, 4)) {
        fprintf(stderr, "cannot build fixtures in %s\n", g_root);
        return 1;
    }
    test_golden_lists();
    test_center_crop();
    test_trainer_buckets();
    test_determinism_resume();
    test_cache_and_errors();
    return sl_test_finish("test_buckets");
}
