/* test_cli_sample.c - `stylora train` and `stylora sample` end to end through
 * the real program on the tiny golden model (fixture tokenizer):
 * a JSON config file, the CSV log and loss curve, samples that are the same
 * bytes for the same seed, adapter weight 0 equal to the base, merged images
 * within one 8-bit level of unmerged, a prompts file that swaps adapters and
 * leaves the base bit-exact for its last job, A1111 parameters in the PNG,
 * plain prompts-file lines taken as written (apostrophes, 70 words, a <lora:...> tag),
 * a <lora:...> tag at the end of a 5,000-byte prompt,
 * and a bad prompts line reported with its line number. The kernel overrides of the
 * environment (SL_GEMM, SL_CONV, SL_ATTENTION, read by tools/ only): a bad value is
 * refused naming the variable; the portable kernels reach the trainer (on an
 * AVX-512 CPU its adapter is other bytes than the default kernels'). */
#include <stdarg.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <string.h>
#include <sys/stat.h>

#include "core/config.h"
#include "core/image.h"
#include "core/weights.h"
#include "fixture_tiny.h"
#include "nn/kernels.h"
#include "test_util.h"

static char g_root[2048], g_model[2200], g_data[2200], g_bin[2048];

static int sh(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static int sh(const char *fmt, ...) {
    char cmd[16384];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(cmd, sizeof cmd, fmt, ap);
    va_end(ap);
    int rc = system(cmd);
    return WIFEXITED(rc) ? WEXITSTATUS(rc) : -1;
}

static int read_png(const char *path, SlImage *im) {
    SlCtx ctx;
    sl_ctx_init(&ctx);
    SlImageReadOpts o = sl_image_read_opts_default();
    o.read_text = 1;
    if (sl_image_read(im, path, &o, &ctx) != SL_OK) {
        fprintf(stderr, "%s\n", ctx.msg);
        return 0;
    }
    return 1;
}

/* max |a - b| over pixels, or -1 if sizes differ / unreadable */
static int png_diff(const char *a, const char *b) {
    SlImage x = {0}, y = {0};
    int d = -1;
    if (read_png(a, &x) && read_png(b, &y) && x.w == y.w && x.h == y.h && x.c == y.c) {
        d = 0;
        for (size_t i = 0; i < (size_t)x.w * x.h * x.c; i++) {
            int e = abs((int)x.data[i] - (int)y.data[i]);
            if (e > d) d = e;
        }
    }
    sl_image_free(&x);
    sl_image_free(&y);
    return d;
}

int main(void) {
    snprintf(g_root, sizeof g_root, "%s/tmp_test_cli_sample", sl_test_binary());
    sh("rm -rf '%s'", g_root);
    mkdir(g_root, 0755);
    snprintf(g_model, sizeof g_model, "%s/model", g_root);
    snprintf(g_data, sizeof g_data, "%s/data", g_root);
    snprintf(g_bin, sizeof g_bin, "%s", sl_test_env("SL_STYLORA", "./stylora"));
    if (!fixture_tiny_model(g_model, sl_test_shared()) || !fixture_images(g_data, 3, 32)) return 1;
    /* train from a JSON config (command-line options win over it) */
    char p[4096];
    snprintf(p, sizeof p, "%s/train.json", g_root);
    FILE *f = fopen(p, "w");
    fprintf(f, "{\"steps\": 3, \"rank\": 2, \"lr\": 0.01, \"resolution\": 32, \"trigger\": \"sks\", \"flip\": true}\n");
    fclose(f);
    int rc = sh("'%s' train --quiet --model '%s' --data '%s' --out '%s/style.safetensors' --config '%s' --steps 4", g_bin, g_model,
                g_data, g_root, p);
    CHECK(rc == 0, "train failed (%d)", rc);
    char *csv = NULL;
    size_t n = 0;
    SlCtx ctx;
    sl_ctx_init(&ctx);
    snprintf(p, sizeof p, "%s/style.safetensors.csv", g_root);
    CHECK(sl_read_file(p, 1 << 20, &csv, &n, &ctx) == SL_OK, "no CSV log: %s", ctx.msg);
    int lines = 0;
    for (size_t i = 0; csv && i < n; i++) lines += csv[i] == '\n';
    CHECK(lines == 5 && csv && strncmp(csv, "step,loss,lr,grad_norm", 22) == 0, "CSV has %d lines (want header + 4 steps)", lines);
    free(csv);
    snprintf(p, sizeof p, "%s/style.safetensors.loss.png", g_root);
    CHECK(sl_path_is_file(p), "no loss curve");
    rc = sh("'%s' inspect '%s/style.safetensors' | grep -q 'ss_network_dim = 2'", g_bin, g_root);
    CHECK(rc == 0, "adapter metadata lacks ss_network_dim = 2 (JSON config not applied?)");
    /* sampling: same seed, same bytes */
    const char *common = "--steps 3 --cfg 3 --width 32 --height 32 --seed 5 --quiet";
    CHECK(sh("'%s' sample --model '%s' --prompt 'a red square' %s --out '%s/base1'", g_bin, g_model, common, g_root) == 0, "sample");
    CHECK(sh("'%s' sample --model '%s' --prompt 'a red square' %s --out '%s/base2'", g_bin, g_model, common, g_root) == 0, "sample");
    char a[4096], b[4096];
    snprintf(a, sizeof a, "%s/base1/00000-5.png", g_root);
    snprintf(b, sizeof b, "%s/base2/00000-5.png", g_root);
    CHECK(png_diff(a, b) == 0, "same seed gives different images");
    /* adapter weight 0 == base; merged ~ unmerged; weight 1 differs from base */
    CHECK(sh("'%s' sample --model '%s' --prompt 'a red square' %s --lora '%s/style.safetensors:0' --out '%s/w0'", g_bin, g_model, common, g_root, g_root) == 0, "w0");
    snprintf(b, sizeof b, "%s/w0/00000-5.png", g_root);
    CHECK(png_diff(a, b) == 0, "adapter weight 0 differs from the base");
    CHECK(sh("'%s' sample --model '%s' --prompt 'a red square' %s --lora '%s/style.safetensors' --out '%s/un'", g_bin, g_model, common, g_root, g_root) == 0, "unmerged");
    CHECK(sh("'%s' sample --model '%s' --prompt 'a red square' %s --lora '%s/style.safetensors' --merge --out '%s/me'", g_bin, g_model, common, g_root, g_root) == 0, "merged");
    char u[4096], m[4096];
    snprintf(u, sizeof u, "%s/un/00000-5.png", g_root);
    snprintf(m, sizeof m, "%s/me/00000-5.png", g_root);
    int dm = png_diff(u, m), db = png_diff(a, u);
    printf("merged vs unmerged: max %d levels; adapter vs base: max %d levels\n", dm, db);
    CHECK(dm >= 0 && dm <= 1, "merged vs unmerged differ by %d levels", dm);
    CHECK(db > 0, "the adapter changed nothing");
    /* parameters chunk */
    SlImage im = {0};
    if (read_png(u, &im)) {
        const char *params = NULL;
        for (int i = 0; i < im.n_text; i++)
            if (strcmp(im.text[i].key, "parameters") == 0) params = im.text[i].value;
        CHECK(params && strstr(params, "a red square\n") && strstr(params, "Steps: 3") && strstr(params, "Seed: 5") &&
                  strstr(params, "Size: 32x32") && strstr(params, "Lora weights: \"style: 1\""),
              "parameters chunk: %s", params ? params : "(none)");
    }
    sl_image_free(&im);
    /* a prompts file that swaps adapters; its last job (no adapter) equals the base */
    snprintf(p, sizeof p, "%s/prompts.txt", g_root);
    f = fopen(p, "w");
    fprintf(f, "# jobs\n--prompt \"a red square <lora:style:0.7>\" --seed 5\n\n--prompt \"a red square\" --seed 5 --negative_prompt \"\" \n"
               "--prompt \"a red square <lora:style:1>\" --seed 5 --steps 3\na red square\n");
    fclose(f);
    CHECK(sh("'%s' sample --model '%s' --prompts '%s' %s --merge --out '%s/jobs'", g_bin, g_model, p, common, g_root) == 0, "prompts file");
    snprintf(b, sizeof b, "%s/jobs/00003-5.png", g_root);
    CHECK(png_diff(a, b) == 0, "after merging and unmerging adapters the base image changed");
    snprintf(b, sizeof b, "%s/jobs/00001-5.png", g_root);
    CHECK(png_diff(a, b) == 0, "second job (no adapter) differs from the base");
    snprintf(b, sizeof b, "%s/jobs/00002-5.png", g_root);
    CHECK(png_diff(m, b) == 0, "third job (adapter weight 1, merged) differs from the merged run");
    /* plain lines are prompts as written (issue 21 item 3): an apostrophe is not a quote, a
     * 70-word line has no word cap, and a <lora:...> tag in a plain line still applies */
    snprintf(p, sizeof p, "%s/plain.txt", g_root);
    f = fopen(p, "w");
    fprintf(f, "the artist's red circle\na red square <lora:style:1>\n");
    for (int i = 0; i < 70; i++) fprintf(f, "%sword%d", i ? " " : "", i);
    fprintf(f, "\n");
    fclose(f);
    rc = sh("'%s' sample --model '%s' --prompts '%s' %s --out '%s/plain'", g_bin, g_model, p, common, g_root);
    CHECK(rc == 0, "prompts file of plain lines failed (%d)", rc);
    const char *want[3] = {"the artist's red circle\n", "a red square\n", "word0 word1 word2"};
    for (int k = 0; k < 3 && rc == 0; k++) {
        snprintf(b, sizeof b, "%s/plain/%05d-5.png", g_root, k);
        memset(&im, 0, sizeof im);
        const char *params = NULL;
        if (read_png(b, &im))
            for (int i = 0; i < im.n_text; i++)
                if (strcmp(im.text[i].key, "parameters") == 0) params = im.text[i].value;
        CHECK(params && strncmp(params, want[k], strlen(want[k])) == 0 && (k != 1 || strstr(params, "Lora weights: \"style: 1\"")) &&
                  (k != 2 || strstr(params, "word69\n")),
              "plain line %d: parameters %s", k + 1, params ? params : "(none)");
        sl_image_free(&im);
    }
    snprintf(b, sizeof b, "%s/plain/00001-5.png", g_root);
    CHECK(png_diff(u, b) == 0, "plain line with <lora:style:1> differs from the --lora run");
    /* a <lora:...> tag after 5,000 bytes of prompt still applies (it was cut with the text
     * at the job's 4,096-byte buffer), from --prompt and from a prompts-file line */
    static char longp[6000];
    size_t lo = 0;
    for (int i = 0; lo < 5000; i++) lo += (size_t)snprintf(longp + lo, sizeof longp - lo, "red%d ", i);
    snprintf(longp + lo, sizeof longp - lo, "<lora:style:1>");
    snprintf(p, sizeof p, "%s/long.txt", g_root);
    f = fopen(p, "w");
    fprintf(f, "%s\n", longp);
    fclose(f);
    rc = sh("'%s' sample --model '%s' --prompt '%s' --lora-dir '%s' %s --out '%s/long1'", g_bin, g_model, longp, g_root, common, g_root);
    int rc2 = sh("'%s' sample --model '%s' --prompts '%s' %s --out '%s/long2'", g_bin, g_model, p, common, g_root);
    CHECK(rc == 0 && rc2 == 0, "long prompts failed (%d, %d)", rc, rc2);
    for (int k = 1; k <= 2; k++) {
        snprintf(b, sizeof b, "%s/long%d/00000-5.png", g_root, k);
        memset(&im, 0, sizeof im);
        const char *params = NULL;
        if (read_png(b, &im))
            for (int i = 0; i < im.n_text; i++)
                if (strcmp(im.text[i].key, "parameters") == 0) params = im.text[i].value;
        CHECK(params && strncmp(params, "red0 red1", 9) == 0 && strstr(params, "Lora weights: \"style: 1\""),
              "long prompt %d: the tag at its end was lost", k);
        sl_image_free(&im);
    }
    /* bad line: its number in the message */
    snprintf(p, sizeof p, "%s/prompts.txt", g_root);
    f = fopen(p, "w");
    fprintf(f, "a red square\n--prompt \"unclosed\n");
    fclose(f);
    rc = sh("'%s' sample --model '%s' --prompts '%s' %s --out '%s/bad' 2>'%s/err.txt'", g_bin, g_model, p, common, g_root, g_root);
    snprintf(p, sizeof p, "%s/err.txt", g_root);
    char *err = NULL;
    sl_read_file(p, 1 << 16, &err, &n, &ctx);
    CHECK(rc == 1 && err && strstr(err, "prompts.txt:2") && strstr(err, "quote"), "bad line: rc %d, %s", rc, err ? err : "");
    free(err);
    err = NULL;
    /* kernel overrides: refused by name, or passed down to the trainer */
    rc = sh("SL_GEMM=fast '%s' sample --model '%s' --prompt 'a red square' %s --out '%s/badk' 2>'%s/err.txt'", g_bin, g_model,
            common, g_root, g_root);
    sl_read_file(p, 1 << 16, &err, &n, &ctx);
    CHECK(rc == 1 && err && strstr(err, "SL_GEMM") && strstr(err, "blas"), "SL_GEMM=fast: rc %d, %s", rc, err ? err : "");
    free(err);
    const char *train = "train --quiet --steps 2 --rank 2 --resolution 32 --seed 3";
    CHECK(sh("'%s' %s --model '%s' --data '%s' --out '%s/kd.safetensors'", g_bin, train, g_model, g_data, g_root) == 0,
          "train on the default kernels");
    CHECK(sh("SL_GEMM=blas SL_CONV=im2col SL_ATTENTION=rows '%s' %s --model '%s' --data '%s' --out '%s/kp.safetensors'", g_bin,
             train, g_model, g_data, g_root) == 0,
          "train on the portable kernels");
    const SlKernels avx = {SL_GEMM_KERNEL_AVX512, 0, SL_ATT_KERNEL_LANES};
    if (sl_kernels_available(&avx))
        CHECK(sh("cmp -s '%s/kd.safetensors' '%s/kp.safetensors'", g_root, g_root) == 1,
              "SL_GEMM=blas SL_ATTENTION=rows gave the default kernels' adapter bytes: the override did not reach the trainer");
    return sl_test_finish("test_cli_sample");
}
