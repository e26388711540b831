/* test_report.c - pipeline/report.c: HTML escaping (every special character, the
 * snprintf-style length, truncation that never cuts an entity or a UTF-8
 * character) and a whole page whose captions, prompts, command line and memory
 * advice hold markup: none of it may reach the page as markup. */
#include <ctype.h>
#include <unistd.h>

#include "core/file.h"
#include "core/image.h"
#include "pipeline/report.h"
#include "test_util.h"

static void test_escape(void) {
    char out[256];
    const char *in = "<script>alert(\"x\" & 'y')</script>";
    const char *want = "&lt;script&gt;alert(&quot;x&quot; &amp; &#39;y&#39;)&lt;/script&gt;";
    size_t n = sl_html_escape(out, sizeof out, in);
    CHECK(strcmp(out, want) == 0, "escaped to '%s'", out);
    CHECK(n == strlen(want), "length %zu, want %zu", n, strlen(want));
    CHECK(sl_html_escape(NULL, 0, in) == strlen(want), "measuring with cap 0");
    /* plain UTF-8 passes through unchanged */
    n = sl_html_escape(out, sizeof out, "caf\xc3\xa9 \xe2\x80\x94 ok");
    CHECK(strcmp(out, "caf\xc3\xa9 \xe2\x80\x94 ok") == 0 && n == 12, "utf-8 changed: '%s' (%zu)", out, n);
    /* too small: cut before the entity that does not fit, never inside it */
    n = sl_html_escape(out, 6, "ab<cd");
    CHECK(strcmp(out, "ab") == 0 && n == 8, "cut at an entity: '%s' (%zu)", out, n);
    n = sl_html_escape(out, 7, "ab<cd");
    CHECK(strcmp(out, "ab&lt;") == 0, "entity that fits exactly: '%s'", out);
    /* ... and never inside a UTF-8 character (\xe2\x80\x94 is one) */
    n = sl_html_escape(out, 5, "ab\xe2\x80\x94");
    CHECK(strcmp(out, "ab\xe2\x80") != 0 && strcmp(out, "ab") == 0, "cut inside a character: '%s'", out);
    n = sl_html_escape(out, 1, "x");
    CHECK(out[0] == '\0' && n == 1, "cap 1 gives the empty string");
}

/* The page of a fake trainer (no model: the writer needs only the config, the data
 * list and the plan) with hostile strings everywhere a user can put one. */
static void test_page(void) {
    char dir[] = "/tmp/sl_report_XXXXXX";
    CHECK(mkdtemp(dir) != NULL, "mkdtemp");
    static SlTrainer tr;
    memset(&tr, 0, sizeof tr);
    char out[256], page[300], assets[300], img[16] = "a.png";
    snprintf(out, sizeof out, "%s/<b>x</b>.safetensors", dir);
    snprintf(page, sizeof page, "%s/page.html", dir);
    snprintf(assets, sizeof assets, "%s/x.report", dir);
    tr.cfg.out = out;
    tr.cfg.model = "m";
    tr.cfg.data = "d";
    tr.cfg.steps = 2;
    tr.cfg.sample_every = 1;
    tr.cfg.n_sample_prompts = 1;
    tr.cfg.sample_prompts[0] = "<img src=x onerror=alert(1)>";
    tr.step = 2;
    char caption[] = "neon <script>alert('caption')</script> & co";
    SlDataItem item = {img, caption, 1};
    tr.data.items = &item;
    tr.data.n = 1;
    int valid = 0;
    tr.valid = &valid;
    tr.n_valid = 1;
    SlMemPlan plan = {0};
    sl_mem_plan_add(&plan, "weights <fp16>", 2e6);
    plan.predicted_peak = 3e6;
    snprintf(plan.advice, sizeof plan.advice, "try --micro-batch 1 <script>");
    SlReportRow rows[2] = {{1, 0.5f, 1e-3f}, {2, 0.25f, 1e-3f}};
    SlReportInput in = {.cmdline = "stylora train --caption '<script>x</script>'", .rows = rows, .n_rows = 2, .steps_timed = 2,
                        .step_seconds = 1.0, .samples_dir = dir, .assets_dir = assets, .plan = &plan, .final = 1};
    SlCtx ctx;
    sl_ctx_init(&ctx);
    CHECK_OK(sl_report_write(page, &tr, &in, &ctx), &ctx);
    char *html = NULL;
    size_t n = 0;
    CHECK_OK(sl_read_file(page, 1 << 24, &html, &n, &ctx), &ctx);
    if (html) {
        char *low = strdup(html);
        for (char *p = low; *p; p++) *p = (char)tolower((unsigned char)*p);
        CHECK(!strstr(low, "<script"), "a <script> element reached the page");
        CHECK(!strstr(low, "<img src=x"), "the prompt's <img> reached the page");
        CHECK(!strstr(low, "<b>x</b>"), "the out path's markup reached the page");
        CHECK(strstr(html, "neon &lt;script&gt;alert(&#39;caption&#39;)&lt;/script&gt; &amp; co"), "caption not shown escaped");
        CHECK(strstr(html, "--caption &#39;&lt;script&gt;x&lt;/script&gt;&#39;"), "command line not shown escaped");
        CHECK(strstr(html, "try --micro-batch 1 &lt;script&gt;"), "advice not shown escaped");
        CHECK(strstr(html, "weights &lt;fp16&gt;"), "plan row not shown escaped");
        const char *ids[] = {"id=\"settings\"", "id=\"data\"", "id=\"loss\"", "id=\"throughput\"", "id=\"memory\"",
                             "id=\"checkpoints\"", "id=\"ckpt-base\"", "img-src data:"};
        for (size_t i = 0; i < sizeof ids / sizeof ids[0]; i++) CHECK(strstr(html, ids[i]), "missing %s", ids[i]);
        /* no sample files: no checkpoint rows, and the missing thumbnail and base image are marked */
        CHECK(!strstr(html, "id=\"ckpt-1\""), "a checkpoint row without samples");
        CHECK(strstr(html, "class=\"missing\""), "missing images not marked");
        CHECK(strstr(html, "<td class=\"num\">-</td><td class=\"num\">-</td></tr>"), "no images: the figures must be '-'");
        free(low);
    }
    free(html);
    CHECK(access(page, F_OK) == 0, "page not written");
    char tmp[320];
    snprintf(tmp, sizeof tmp, "%s.tmp.%ld", page, (long)getpid());
    CHECK(access(tmp, F_OK) != 0, "temp file left behind");
    /* a folder where the page should go is refused, naming it */
    SlCtx bad;
    sl_ctx_init(&bad);
    CHECK(sl_report_write(dir, &tr, &in, &bad) != SL_OK && strstr(bad.msg, dir), "folder as page: %s", bad.msg);
    unlink(page);
    rmdir(dir);
}

/* tests/cli_report.sh's image check: `test_report --decode [--nonblank] FILE...` reads
 * each file with stylora's own reader and prints its size; --nonblank also requires
 * that over 1% of the pixels differ from the top-left one (a blank screenshot is
 * one colour). Exit 1 if any file does not decode or is blank. */
static int decode_files(int argc, char **argv) {
    int nonblank = 0, bad = 0;
    for (int i = 2; i < argc; i++) {
        if (!strcmp(argv[i], "--nonblank")) {
            nonblank = 1;
            continue;
        }
        SlImage im = {0};
        SlCtx ctx;
        sl_ctx_init(&ctx);
        if (sl_image_read(&im, argv[i], NULL, &ctx) != SL_OK) {
            fprintf(stderr, "%s: does not decode: %s\n", argv[i], ctx.msg);
            bad = 1;
            continue;
        }
        int64_t differ = 0, n = (int64_t)im.w * im.h;
        for (int64_t p = 0; p < n; p++) differ += memcmp(im.data + p * im.c, im.data, (size_t)im.c) != 0;
        printf("%s: %dx%dx%d, %.1f%% of pixels differ from the top-left one\n", argv[i], im.w, im.h, im.c,
               100.0 * (double)differ / (double)n);
        if (nonblank && differ * 100 <= n) {
            fprintf(stderr, "%s: blank\n", argv[i]);
            bad = 1;
        }
        sl_image_free(&im);
    }
    return bad;
}

int main(int argc, char **argv) {
    if (argc > 1 && !strcmp(argv[1], "--decode")) return decode_files(argc, argv);
    test_escape();
    test_page();
    return sl_test_finish("test_report");
}
