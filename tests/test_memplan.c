/* test_memplan.c - the memory plan (pipeline/memplan.h, issue 22) on the shipped
 * models/shapes64 and tests/data/shapes64_styles/neon:
 * - every plan's rows add up: the persistent set is the sum of the rows that are not
 *   load-time, and the predicted peak is max(that set, the loading set) >= it;
 * - the prediction from the configs alone (sl_train_predict_memory) equals the plan
 *   read from an initialised trainer's arenas (sl_trainer_mem_plan) row by row within
 *   ROW_RTOL and in the peak within PEAK_RTOL, for the fp16 (by dtype), bf16, fp32 and NF4
 *   bases, a micro-batched run with samples and a DoRA run;
 * - --max-memory sizes parse (8G, 3500M, 2GiB, bytes) and bad ones are errors naming it;
 * - sl_train_fit_memory picks the largest micro-batch that fits a limit, and names
 *   --micro-batch / --base when asked not to pick;
 * - `stylora train --max-memory 1M` is refused before loading (no image encoded, no
 *   output), naming the settings; `--max-memory 8X` names the option.
 * No wall time or measured RSS is asserted (bench/bench_memplan.c measures).
 */
#include <sys/stat.h>
#include <unistd.h>

#include "pipeline/train.h"
#include "tests/test_util.h"

#define ROW_RTOL 0.02  /* per row, relative to the larger of the two (+ 64 KiB for alignment) */
#define PEAK_RTOL 0.01 /* predicted peak, before loading vs from the loaded arenas */

static char g_model[2048], g_data[2048], g_out[2200];

static void cfg_default(SlTrainConfig *c) {
    sl_train_config_default(c);
    c->model = g_model;
    c->data = g_data;
    c->out = g_out;
    c->steps = 2;
}

static void check_sums(const char *name, const SlMemPlan *p) {
    double persistent = 0, load = 0;
    int acts = 0;
    for (int i = 0; i < p->n; i++) {
        CHECK(p->rows[i].bytes >= 0, "%s: row %s is negative (%g)", name, p->rows[i].label, p->rows[i].bytes);
        if (!strstr(p->rows[i].label, SL_MEMPLAN_TRANSIENT)) persistent += p->rows[i].bytes;
        else load += p->rows[i].bytes;
        acts |= strstr(p->rows[i].label, "activations (no checkpointing)") != NULL;
    }
    CHECK(acts, "%s: no 'activations (no checkpointing)' row", name);
    CHECK(fabs(persistent - sl_mem_plan_persistent(p)) <= 1, "%s: persistent %g vs rows %g", name,
          sl_mem_plan_persistent(p), persistent);
    CHECK(p->predicted_peak >= persistent, "%s: peak %g < the persistent rows %g", name, p->predicted_peak, persistent);
    CHECK(load > 0, "%s: no load-time row (the mapped weight files)", name);
    CHECK(p->predicted_peak <= persistent + load, "%s: peak %g above every row together %g", name, p->predicted_peak,
          persistent + load);
}

/* prediction vs the loaded trainer's plan */
static void check_case(const char *name, const SlTrainConfig *c) {
    SlCtx ctx;
    sl_ctx_init(&ctx);
    SlMemPlan pred, got;
    CHECK_OK(sl_train_predict_memory(c, &pred, &ctx), &ctx);
    SlTrainer tr;
    CHECK_OK(sl_trainer_init(&tr, c, &ctx), &ctx);
    sl_trainer_mem_plan(&tr, &got);
    sl_trainer_free(&tr);
    check_sums(name, &pred);
    check_sums(name, &got);
    CHECK(pred.n == got.n, "%s: %d predicted rows, %d from the trainer", name, pred.n, got.n);
    double worst = 0;
    for (int i = 0; i < pred.n && i < got.n; i++) {
        CHECK(!strcmp(pred.rows[i].label, got.rows[i].label), "%s: row %d '%s' vs '%s'", name, i, pred.rows[i].label,
              got.rows[i].label);
        const double a = pred.rows[i].bytes, b = got.rows[i].bytes, m = a > b ? a : b;
        CHECK(fabs(a - b) <= ROW_RTOL * m + 65536, "%s: %s predicted %.0f, trainer %.0f", name, pred.rows[i].label, a, b);
        if (m > 0 && fabs(a - b) / m > worst) worst = fabs(a - b) / m;
    }
    const double r = pred.predicted_peak / got.predicted_peak;
    CHECK(fabs(r - 1) <= PEAK_RTOL, "%s: predicted peak %.0f vs %.0f from the arenas", name, pred.predicted_peak,
          got.predicted_peak);
    printf("ok   %s: %d rows, peak %.2f MiB predicted / %.2f MiB loaded (ratio %.4f, worst row %.2f%%)\n", name, pred.n,
           pred.predicted_peak / 1048576, got.predicted_peak / 1048576, r, 100 * worst);
}

static void test_predict_equals_loaded(void) {
    SlTrainConfig c;
    cfg_default(&c);
    check_case("default base (fp16: the file is F16)", &c);
    cfg_default(&c);
    c.base = "fp32";
    check_case("--base fp32", &c);
    cfg_default(&c);
    c.base = "bf16";
    check_case("--base bf16", &c);
    cfg_default(&c);
    c.base = "nf4";
    check_case("--base nf4", &c);
    cfg_default(&c);
    c.base = "nf4";
    c.nf4_double_quant = 1;
    c.nf4_layers = "attn";
    check_case("--base nf4 --nf4-layers attn --nf4-double-quant", &c);
    cfg_default(&c);
    c.batch = 4;
    c.micro_batch = 2;
    c.flip = 1;
    c.sample_every = 1;
    c.sample_prompts[c.n_sample_prompts++] = "a red square";
    check_case("batch 4, micro-batch 2, flip, samples", &c);
    cfg_default(&c);
    c.dora = 1;
    c.rank = 4;
    c.targets = "attn,ff";
    check_case("DoRA rank 4 on attn,ff (fp32)", &c);
    cfg_default(&c);
    c.full = 1;
    check_case("--full", &c);
}

static void test_size_parse(void) {
    SlCtx ctx;
    sl_ctx_init(&ctx);
    const struct { const char *s; double v; } ok[] = {
        {"8G", 8.0 * 1073741824}, {"3500M", 3500.0 * 1048576}, {"2GiB", 2.0 * 1073741824}, {"123456", 123456},
        {"1.5g", 1.5 * 1073741824}, {"64K", 65536}, {"100MB", 100.0 * 1048576},
    };
    for (size_t i = 0; i < sizeof ok / sizeof ok[0]; i++) {
        double v = 0;
        CHECK_OK(sl_mem_size_parse(ok[i].s, "--max-memory", &v, &ctx), &ctx);
        CHECK(v == ok[i].v, "'%s' -> %.0f, want %.0f", ok[i].s, v, ok[i].v);
    }
    const char *bad[] = {"8X", "", "-1G", "G", "8 G", "0", "1e400", "8Gx", NULL};
    for (int i = 0; bad[i]; i++) {
        double v = 0;
        sl_ctx_init(&ctx);
        SlStatus st = sl_mem_size_parse(bad[i], "--max-memory", &v, &ctx);
        CHECK(st == SL_ERR_ARG && strstr(ctx.msg, "--max-memory"), "'%s' accepted or unnamed: %s", bad[i], ctx.msg);
    }
}

static void test_fit(void) {
    SlCtx ctx;
    sl_ctx_init(&ctx);
    SlTrainConfig c;
    cfg_default(&c);
    c.batch = 8;
    c.base = "fp32";
    SlMemPlan whole, two;
    CHECK_OK(sl_train_predict_memory(&c, &whole, &ctx), &ctx);
    c.micro_batch = 2;
    CHECK_OK(sl_train_predict_memory(&c, &two, &ctx), &ctx);
    CHECK(two.predicted_peak < whole.predicted_peak, "micro-batch 2 (%.0f) not below batch 8 (%.0f)", two.predicted_peak,
          whole.predicted_peak);
    /* a limit between micro-batch 2 and 4: picking gives 2 */
    const double limit = two.predicted_peak + 1024;
    c.micro_batch = 0;
    SlMemPlan p;
    int fits = 0;
    CHECK_OK(sl_train_fit_memory(&c, limit, 1, &p, &fits, &ctx), &ctx);
    CHECK(fits && c.micro_batch == 2 && strstr(p.advice, "--micro-batch 2"), "picked %lld (fits %d): %s",
          (long long)c.micro_batch, fits, p.advice);
    CHECK(p.predicted_peak <= limit && p.available == limit, "picked plan %.0f over the limit %.0f", p.predicted_peak, limit);
    /* not picking: the advice names the micro-batch */
    c.micro_batch = 0;
    CHECK_OK(sl_train_fit_memory(&c, limit, 0, &p, &fits, &ctx), &ctx);
    CHECK(!fits && c.micro_batch == 0 && strstr(p.advice, "--micro-batch 2"), "advice: %s", p.advice);
    /* nothing fits 1 MiB: the advice still names the settings */
    CHECK_OK(sl_train_fit_memory(&c, 1048576, 1, &p, &fits, &ctx), &ctx);
    CHECK(!fits && strstr(p.advice, "--micro-batch") && strstr(p.advice, "--base"), "1 MiB: %s", p.advice);
    /* the whole batch fits its own prediction: nothing said */
    CHECK_OK(sl_train_fit_memory(&c, whole.predicted_peak, 1, &p, &fits, &ctx), &ctx);
    CHECK(fits && !p.advice[0] && c.micro_batch == 0, "fits: %s", p.advice);
    /* a bad resolution is an error naming it, before anything loads */
    c.resolution = 65;
    SlStatus st = sl_train_predict_memory(&c, &p, &ctx);
    CHECK(st == SL_ERR_ARG && strstr(ctx.msg, "resolution 65"), "resolution 65: %s", ctx.msg);
}

/* the real program: refused before loading */
static void test_cli(void) {
    const char *bin = getenv("SL_STYLORA");
    if (!bin || !*bin) {
        printf("skip the CLI checks: SL_STYLORA not set\n");
        return;
    }
    char out[2300], log[2400], cmd[16384];
    snprintf(out, sizeof out, "%s/tmp_memplan/cli.safetensors", sl_test_binary());
    snprintf(log, sizeof log, "%s/tmp_memplan/cli.txt", sl_test_binary());
    unlink(out);
    const char *cases[][3] = { /* extra options, exit code, what the output must hold */
        {"--max-memory 1M", "1", "--max-memory"},
        {"--max-memory 8X", "2", "--max-memory '8X'"},
        {"--micro-batch auto", "2", "--micro-batch auto needs --max-memory"},
        {"--max-memory 1M --micro-batch auto", "1", "exceeds --max-memory"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        snprintf(cmd, sizeof cmd, "'%s' train --model '%s' --data '%s' --out '%s' --steps 2 --threads 1 %s > '%s' 2>&1",
                 bin, g_model, g_data, out, cases[i][0], log);
        int rc = system(cmd);
        rc = WIFEXITED(rc) ? WEXITSTATUS(rc) : -1;
        char text[16384] = "";
        FILE *f = fopen(log, "r");
        if (f) {
            text[fread(text, 1, sizeof text - 1, f)] = '\0';
            fclose(f);
        }
        CHECK(rc == atoi(cases[i][1]) && strstr(text, cases[i][2]), "%s: exit %d: %s", cases[i][0], rc, text);
        CHECK(!strstr(text, "encoding images") && !strstr(text, "data: ") && access(out, F_OK) != 0,
              "%s: not refused before loading: %s", cases[i][0], text);
        if (i == 0)
            CHECK(strstr(text, "--micro-batch") && strstr(text, "--base") && strstr(text, "predicted peak"),
                  "1M: the refusal names no setting: %s", text);
    }
    /* a limit that fits: the plan printed, the run done, the measured peak beside the predicted */
    snprintf(cmd, sizeof cmd, "'%s' train --model '%s' --data '%s' --out '%s' --steps 2 --threads 1 --max-memory 4G > '%s' 2>&1",
             bin, g_model, g_data, out, log);
    int rc = system(cmd);
    char text[16384] = "";
    FILE *f = fopen(log, "r");
    if (f) {
        text[fread(text, 1, sizeof text - 1, f)] = '\0';
        fclose(f);
    }
    CHECK(rc == 0 && strstr(text, "memory plan") && strstr(text, "activations (no checkpointing)") &&
          strstr(text, "measured peak RSS"), "4G: exit %d: %s", rc, text);
}

int main(void) {
    snprintf(g_model, sizeof g_model, "%s/models/shapes64", sl_test_source());
    snprintf(g_data, sizeof g_data, "%s/tests/data/shapes64_styles/neon", sl_test_source());
    char dir[2100];
    snprintf(dir, sizeof dir, "%s/tmp_memplan", sl_test_binary());
    mkdir(dir, 0755);
    snprintf(g_out, sizeof g_out, "%s/a.safetensors", dir);
    test_predict_equals_loaded();
    test_size_parse();
    test_fit();
    test_cli();
    printf("%d checks, %d failures\n", sl_test_checks, sl_test_failures);
    return sl_test_failures ? 1 : 0;
}
