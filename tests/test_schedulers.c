/* test_schedulers.c - noise schedule and samplers against two references:
 *  1. tests/data/schedulers_golden.safetensors from tests/reference/schedulers_ref.py
 *     (torch/numpy re-implementation of diffusers 0.30): alphas_cumprod of four beta
 *     configs; timesteps, sigmas, init_noise_sigma and the latents after every step of
 *     67 sampler runs with a fake model (model_out = table[i] + 0.1 * scaled input).
 *  2. the shared tiny-sd1 golden made with diffusers 0.30.2: sched.alphas_cumprod and
 *     the 5-step DDIM loop (golden guided model_out fed into our step).
 * Plus config-error cases, the training-side maths, and argument checks.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/safetensors.h"
#include "core/tensor.h"
#include "pipeline/sampler.h"
#include "pipeline/schedule.h"
#include "tests/test_util.h"

/* Named tolerances. */
#define TOL_ACP_REL 1e-6      /* alphas_cumprod vs torch, relative */
#define TOL_STEP_REL 1e-5     /* sampler outputs vs reference, relative to the output scale */
#define TOL_TIMESTEP_ABS 1e-3 /* fractional Euler+Karras timesteps (numpy's float32 log differs by ulps) */

static SlCtx ctx;

static float *load_f32(const SlStFile *f, const char *name, size_t *n_out) {
    const SlStEntry *e = sl_st_find(f, name);
    if (!e) { CHECK(0, "missing tensor %s", name); return NULL; }
    size_t n = (size_t)sl_shape_numel(e->ndim, e->shape);
    float *buf = malloc(n * sizeof(float) + 1);
    CHECK_OK(sl_st_read_f32(f, e, buf, &ctx), &ctx);
    if (n_out) *n_out = n;
    return buf;
}

static double max_rel(const float *a, const float *b, size_t n) {
    double m = 0;
    for (size_t i = 0; i < n; i++) {
        double d = fabs((double)a[i] - b[i]) / fmax(fabs((double)b[i]), 1e-30);
        if (d > m) m = d;
    }
    return m;
}

static void sd_config(SlSchedConfig *c, SlPrediction pred, SlSpacing sp) {
    sl_sched_config_default(c);
    c->beta_start = 0.00085;
    c->beta_end = 0.012;
    c->beta_schedule = SL_BETA_SCALED_LINEAR;
    c->steps_offset = 1;
    c->set_alpha_to_one = 0;
    c->clip_sample = 0;
    c->prediction_type = pred;
    c->timestep_spacing = sp;
}

/* ---- 1. local reference ---- */

static void test_acp_tables(const SlStFile *f) {
    struct { const char *name; double b0, b1; SlBetaSchedule s; int zsnr; } cfgs[] = {
        {"linear", 0.0001, 0.02, SL_BETA_LINEAR, 0},
        {"scaled_linear", 0.00085, 0.012, SL_BETA_SCALED_LINEAR, 0},
        {"squaredcos_cap_v2", 0.0001, 0.02, SL_BETA_SQUAREDCOS_CAP_V2, 0},
        {"scaled_linear_zsnr", 0.00085, 0.012, SL_BETA_SCALED_LINEAR, 1},
    };
    for (int k = 0; k < 4; k++) {
        SlSchedConfig c;
        sl_sched_config_default(&c);
        c.beta_start = cfgs[k].b0;
        c.beta_end = cfgs[k].b1;
        c.beta_schedule = cfgs[k].s;
        c.rescale_betas_zero_snr = cfgs[k].zsnr;
        SlSchedule s;
        CHECK_OK(sl_schedule_init(&s, &c, &ctx), &ctx);
        char key[64];
        snprintf(key, sizeof key, "acp.%s", cfgs[k].name);
        float *ref = load_f32(f, key, NULL);
        if (ref) {
            int exact = memcmp(ref, s.alphas_cumprod, 1000 * sizeof(float)) == 0;
            char what[96];
            snprintf(what, sizeof what, "%s (bit-exact: %s)", key, exact ? "yes" : "no");
            sl_test_close(what, s.alphas_cumprod, ref, 1000, 0, TOL_ACP_REL);
        }
        free(ref);
        sl_schedule_free(&s);
    }
}

/* "sampler/sigmas/prediction/spacing/steps[/zsnr]" */
static int parse_case(const char *name, SlSamplerOpts *o, SlPrediction *pred, SlSpacing *sp, int *n, int *zsnr) {
    char buf[128];
    snprintf(buf, sizeof buf, "%s", name);
    char *parts[6], *save = NULL;
    int k = 0;
    for (char *p = strtok_r(buf, "/", &save); p && k < 6; p = strtok_r(NULL, "/", &save)) parts[k++] = p;
    if (k != 5 && !(k == 6 && strcmp(parts[5], "zsnr") == 0)) return 0;
    *zsnr = k == 6;
    memset(o, 0, sizeof *o);
    if (strcmp(parts[0], "ddim_eta0.5") == 0) { o->kind = SL_SAMPLER_DDIM; o->eta = 0.5f; }
    else if (!sl_sampler_kind_from_name(parts[0], &o->kind)) return 0;
    o->karras = strcmp(parts[1], "karras") == 0;
    if (!sl_prediction_from_name(parts[2], pred) || !sl_spacing_from_name(parts[3], sp)) return 0;
    *n = atoi(parts[4]);
    return *n > 0;
}

static void test_cases(const SlStFile *f) {
    const char *meta = sl_st_meta(f, "cases");
    CHECK(meta != NULL, "golden has no 'cases' metadata");
    if (!meta) return;
    size_t nt, nn, ns;
    float *table = load_f32(f, "model.table", &nt);
    float *noise0 = load_f32(f, "noise.init", &nn);
    float *noises = load_f32(f, "noise.steps", &ns);
    const size_t N = 64;
    char *list = strdup(meta);
    int n_cases = 0, n_fail_before = sl_test_failures;
    double worst_lat = 0, worst_sig = 0, worst_ts = 0;
    char worst_name[128] = "";
    char *save = NULL;
    for (char *name = strtok_r(list, ",", &save); name; name = strtok_r(NULL, ",", &save)) {
        SlSamplerOpts o;
        SlPrediction pred;
        SlSpacing sp;
        int n = 0, zsnr = 0;
        CHECK(parse_case(name, &o, &pred, &sp, &n, &zsnr), "bad case name %s", name);
        n_cases++;
        SlSchedConfig c;
        sd_config(&c, pred, sp);
        c.rescale_betas_zero_snr = zsnr;
        SlSchedule sch;
        CHECK_OK(sl_schedule_init(&sch, &c, &ctx), &ctx);
        SlSampler smp;
        SlStatus st = sl_sampler_init(&smp, &sch, &o, n, &ctx);
        CHECK_OK(st, &ctx);
        if (st != SL_OK) { sl_schedule_free(&sch); continue; }
        char key[192];
        /* timesteps */
        snprintf(key, sizeof key, "case/%s/timesteps", name);
        float *ts = load_f32(f, key, NULL);
        float got_ts[64];
        for (int i = 0; i < n; i++) got_ts[i] = (float)smp.timesteps[i];
        char what[256];
        snprintf(what, sizeof what, "%s timesteps", name);
        int frac = o.kind == SL_SAMPLER_EULER && o.karras;
        if (ts) sl_test_close(what, got_ts, ts, (size_t)n, frac ? TOL_TIMESTEP_ABS : 0, 0);
        for (int i = 0; ts && i < n; i++) worst_ts = fmax(worst_ts, fabs(got_ts[i] - ts[i]));
        free(ts);
        /* sigmas */
        if (smp.sigmas) {
            snprintf(key, sizeof key, "case/%s/sigmas", name);
            float *sg = load_f32(f, key, NULL);
            snprintf(what, sizeof what, "%s sigmas", name);
            if (sg) {
                sl_test_close(what, smp.sigmas, sg, (size_t)n + 1, 0, TOL_STEP_REL);
                worst_sig = fmax(worst_sig, max_rel(smp.sigmas, sg, (size_t)n));
            }
            free(sg);
        }
        snprintf(key, sizeof key, "case/%s/init_noise_sigma", name);
        float *ins = load_f32(f, key, NULL);
        snprintf(what, sizeof what, "%s init_noise_sigma", name);
        if (ins) sl_test_close(what, &smp.init_noise_sigma, ins, 1, 0, TOL_STEP_REL);
        free(ins);
        /* the loop */
        snprintf(key, sizeof key, "case/%s/latents", name);
        float *lat = load_f32(f, key, NULL);
        float x[64], xin[64], mo[64], hist[64];
        SlSamplerState state;
        sl_sampler_state_init(&state, hist, N);
        for (size_t j = 0; j < N; j++) x[j] = noise0[j] * smp.init_noise_sigma;
        for (int i = 0; i < n && lat; i++) {
            sl_sampler_scale_model_input(&smp, xin, x, N, i);
            for (size_t j = 0; j < N; j++) mo[j] = table[(size_t)i * N + j] + (float)(0.1f * (double)xin[j]);
            CHECK_OK(sl_sampler_step(&smp, &state, x, mo, i, x, noises + (size_t)i * N, N, &ctx), &ctx);
            const float *ref = lat + (size_t)i * N;
            double scale = sl_test_scale(ref, N);
            snprintf(what, sizeof what, "%s step %d latents", name, i);
            int ok = 1;
            for (size_t j = 0; j < N; j++) ok &= fabs(x[j] - ref[j]) <= TOL_STEP_REL * scale;
            if (!ok) sl_test_close(what, x, ref, N, TOL_STEP_REL * scale, 0);
            else sl_test_checks++;
            double e = 0;
            for (size_t j = 0; j < N; j++) e = fmax(e, fabs(x[j] - ref[j]) / scale);
            if (e > worst_lat) { worst_lat = e; snprintf(worst_name, sizeof worst_name, "%s step %d", name, i); }
            if (!ok) break;
        }
        free(lat);
        sl_sampler_free(&smp);
        sl_schedule_free(&sch);
    }
    printf("     %d sampler cases (%d failed checks): worst latent err %.3g of scale (%s), worst sigma rel err %.3g, "
           "worst timestep abs err %.3g\n",
           n_cases, sl_test_failures - n_fail_before, worst_lat, worst_name, worst_sig, worst_ts);
    CHECK(n_cases >= 67, "expected at least 67 cases, got %d", n_cases);
    free(list);
    free(table);
    free(noise0);
    free(noises);
}

static void test_training_golden(const SlStFile *f) {
    SlSchedConfig c;
    sd_config(&c, SL_PRED_EPSILON, SL_SPACING_LEADING);
    SlSchedule s;
    CHECK_OK(sl_schedule_init(&s, &c, &ctx), &ctx);
    enum { B = 5, N = 64 };
    int64_t t[B] = {0};
    const SlStEntry *te = sl_st_find(f, "train.t");
    CHECK(te && sl_shape_numel(te->ndim, te->shape) == B, "train.t missing or not [5]");
    if (te) CHECK_OK(sl_st_read_i64(f, te, t, &ctx), &ctx);
    float *x0 = load_f32(f, "train.x0", NULL), *eps = load_f32(f, "train.eps", NULL);
    float *noisy = load_f32(f, "train.noisy", NULL), *vel = load_f32(f, "train.velocity", NULL);
    float *snr = load_f32(f, "train.snr", NULL), *we = load_f32(f, "train.minsnr5_eps", NULL);
    float *wv = load_f32(f, "train.minsnr5_v", NULL);
    if (x0 && eps && noisy && vel && snr && we && wv) {
        float out[B * N], g_snr[B], g_we[B], g_wv[B];
        CHECK_OK(sl_schedule_add_noise(out, x0, eps, t, B, N, &s, &ctx), &ctx);
        sl_test_close("train add_noise", out, noisy, B * N, TOL_STEP_REL * sl_test_scale(noisy, B * N), 0);
        CHECK_OK(sl_schedule_target(out, x0, eps, t, B, N, SL_PRED_V, &s, &ctx), &ctx);
        sl_test_close("train v target", out, vel, B * N, TOL_STEP_REL * sl_test_scale(vel, B * N), 0);
        for (int b = 0; b < B; b++) {
            g_snr[b] = sl_schedule_snr(&s, t[b]);
            g_we[b] = sl_schedule_min_snr_weight(&s, t[b], 5.0f, SL_PRED_EPSILON);
            g_wv[b] = sl_schedule_min_snr_weight(&s, t[b], 5.0f, SL_PRED_V);
        }
        sl_test_close("train snr", g_snr, snr, B, 0, TOL_STEP_REL);
        sl_test_close("train min-snr-5 weight (epsilon)", g_we, we, B, 0, TOL_STEP_REL);
        sl_test_close("train min-snr-5 weight (v)", g_wv, wv, B, 0, TOL_STEP_REL);
    }
    free(x0); free(eps); free(noisy); free(vel); free(snr); free(we); free(wv);
    sl_schedule_free(&s);
}

/* ---- 2. shared diffusers golden ---- */

static void test_shared_golden(void) {
    char path[1024];
    snprintf(path, sizeof path, "%s/golden/tiny-sd1/expected.safetensors", sl_test_shared());
    SlStFile f;
    if (sl_st_open(&f, path, &ctx) != SL_OK) {
        CHECK(0, "cannot open shared golden: %s", ctx.msg);
        return;
    }
    snprintf(path, sizeof path, "%s/golden/tiny-sd1/scheduler/scheduler_config.json", sl_test_shared());
    SlSchedConfig c;
    CHECK_OK(sl_sched_config_load(&c, path, &ctx), &ctx);
    SlSchedule s;
    CHECK_OK(sl_schedule_init(&s, &c, &ctx), &ctx);
    float *acp = load_f32(&f, "sched.alphas_cumprod", NULL);
    if (acp) {
        int exact = memcmp(acp, s.alphas_cumprod, 1000 * sizeof(float)) == 0;
        printf("     shared sched.alphas_cumprod bit-exact: %s, max rel err %.3g\n", exact ? "yes" : "no",
               max_rel(s.alphas_cumprod, acp, 1000));
        sl_test_close("shared sched.alphas_cumprod", s.alphas_cumprod, acp, 1000, 0, TOL_ACP_REL);
    }
    free(acp);

    SlSamplerOpts o = {SL_SAMPLER_DDIM, 0, 0.0f};
    SlSampler smp;
    CHECK_OK(sl_sampler_init(&smp, &s, &o, 5, &ctx), &ctx);
    const SlStEntry *te = sl_st_find(&f, "ddim.timesteps");
    int64_t ts[5] = {0};
    CHECK(te && sl_shape_numel(te->ndim, te->shape) == 5, "ddim.timesteps missing or not [5]");
    if (te) CHECK_OK(sl_st_read_i64(&f, te, ts, &ctx), &ctx);
    static const int64_t want[5] = {801, 601, 401, 201, 1};
    for (int i = 0; i < 5; i++) {
        CHECK(smp.timesteps[i] == (double)ts[i], "ddim timestep %d: got %g, golden %lld", i, smp.timesteps[i],
              (long long)ts[i]);
        CHECK(ts[i] == want[i], "golden timestep %d is %lld", i, (long long)ts[i]);
    }
    const size_t N = 4 * 16 * 16;
    float *x = load_f32(&f, "ddim.in.latents", NULL);
    float *chain = malloc(N * sizeof(float));
    if (x) memcpy(chain, x, N * sizeof(float));
    double worst = 0;
    for (int i = 0; i < 5 && x; i++) {
        char key[64], what[96];
        snprintf(key, sizeof key, "ddim.step%d.model_out", i);
        float *mo = load_f32(&f, key, NULL);
        snprintf(key, sizeof key, "ddim.step%d.latents", i);
        float *ref = load_f32(&f, key, NULL);
        if (!mo || !ref) { free(mo); free(ref); break; }
        float *out = malloc(N * sizeof(float));
        CHECK_OK(sl_sampler_step(&smp, NULL, out, mo, i, x, NULL, N, &ctx), &ctx);
        double scale = sl_test_scale(ref, N);
        snprintf(what, sizeof what, "shared ddim step %d latents (from golden input)", i);
        sl_test_close(what, out, ref, N, TOL_STEP_REL * scale, 0);
        for (size_t j = 0; j < N; j++) worst = fmax(worst, fabs(out[j] - ref[j]) / scale);
        CHECK_OK(sl_sampler_step(&smp, NULL, chain, mo, i, chain, NULL, N, &ctx), &ctx);
        memcpy(x, ref, N * sizeof(float));
        free(out);
        free(mo);
        free(ref);
    }
    float *fin = load_f32(&f, "ddim.final_latents", NULL);
    if (fin) sl_test_close("shared ddim final latents (chained)", chain, fin, N, TOL_STEP_REL * sl_test_scale(fin, N), 0);
    printf("     shared DDIM worst per-step err %.3g of scale\n", worst);
    free(fin);
    free(chain);
    free(x);
    sl_sampler_free(&smp);
    sl_schedule_free(&s);
    sl_sched_config_free(&c);
    sl_st_close(&f);
}

/* ---- 3. config parsing ---- */

static void expect_fail(const char *json, SlStatus want, const char *needle1, const char *needle2) {
    SlSchedConfig c;
    SlStatus st = sl_sched_config_parse(&c, json, "test.json", &ctx);
    CHECK(st == want, "parse %s: got %s (%s), want %s", json, sl_status_name(st), ctx.msg, sl_status_name(want));
    CHECK(st == SL_OK || (strstr(ctx.msg, needle1) && (!needle2 || strstr(ctx.msg, needle2))),
          "message '%s' should name '%s' and '%s'", ctx.msg, needle1, needle2 ? needle2 : "");
    if (st == SL_OK) sl_sched_config_free(&c);
}

static void test_config(void) {
    expect_fail("{\"beta_schedule\": \"cosine\"}", SL_ERR_UNSUPPORTED, "beta_schedule", "cosine");
    expect_fail("{\"prediction_type\": \"flow\"}", SL_ERR_UNSUPPORTED, "prediction_type", "flow");
    expect_fail("{\"timestep_spacing\": \"middle\"}", SL_ERR_UNSUPPORTED, "timestep_spacing", "middle");
    expect_fail("{\"thresholding\": true}", SL_ERR_UNSUPPORTED, "thresholding", "true");
    expect_fail("{\"algorithm_type\": \"sde-dpmsolver++\"}", SL_ERR_UNSUPPORTED, "algorithm_type", "sde-dpmsolver++");
    expect_fail("{\"final_sigmas_type\": \"sigma_min\"}", SL_ERR_UNSUPPORTED, "final_sigmas_type", "sigma_min");
    expect_fail("{\"solver_order\": 3}", SL_ERR_UNSUPPORTED, "solver_order", "3");
    expect_fail("{\"beta_start\": \"0.1\"}", SL_ERR_FORMAT, "test.json", "beta_start");
    expect_fail("{\"num_train_timesteps\": 10.5}", SL_ERR_FORMAT, "test.json", "num_train_timesteps");
    expect_fail("{\"clip_sample\": 1}", SL_ERR_FORMAT, "test.json", "clip_sample");
    expect_fail("{\"trained_betas\": [0.1, 0.2]}", SL_ERR_FORMAT, "trained_betas", NULL);
    expect_fail("{\"trained_betas\": \"x\"}", SL_ERR_FORMAT, "trained_betas", NULL);
    expect_fail("{\"beta_end\": 0.02,}", SL_ERR_FORMAT, "test.json", NULL);
    expect_fail("{\"_class_name\": \"DPMSolverMultistepScheduler\", \"lambda_min_clipped\": -Infinity, "
                "\"rescale_betas_zero_snr\": true, \"sigma_min\": null, \"use_karras_sigmas\": true}",
                SL_OK, "", NULL);

    SlSchedConfig c;
    CHECK_OK(sl_sched_config_parse(&c, "{\"_class_name\": \"EulerDiscreteScheduler\"}", "e.json", &ctx), &ctx);
    CHECK(c.timestep_spacing == SL_SPACING_LINSPACE, "Euler default spacing should be linspace");
    sl_sched_config_free(&c);
    CHECK_OK(sl_sched_config_parse(&c, "{\"num_train_timesteps\": 4, \"trained_betas\": [0.1, 0.2, 0.3, 0.4]}",
                                   "t.json", &ctx), &ctx);
    SlSchedule s;
    CHECK_OK(sl_schedule_init(&s, &c, &ctx), &ctx);
    CHECK(fabsf(s.alphas_cumprod[3] - 0.9f * 0.8f * 0.7f * 0.6f) < 1e-6f, "trained_betas cumprod %g", s.alphas_cumprod[3]);
    sl_schedule_free(&s);
    sl_sched_config_free(&c);

    char path[1024];
    snprintf(path, sizeof path, "%s/sd15/scheduler/scheduler_config.json", sl_test_shared());
    CHECK_OK(sl_sched_config_load(&c, path, &ctx), &ctx);
    CHECK(c.beta_schedule == SL_BETA_SCALED_LINEAR && c.steps_offset == 1 && !c.set_alpha_to_one && !c.clip_sample &&
              c.timestep_spacing == SL_SPACING_LEADING && c.prediction_type == SL_PRED_EPSILON,
          "sd15 scheduler config parsed wrong");
    sl_sched_config_free(&c);
    SlStatus st = sl_sched_config_load(&c, "/nonexistent/scheduler_config.json", &ctx);
    CHECK(st == SL_ERR_IO && strstr(ctx.msg, "/nonexistent/"), "missing file: %s", ctx.msg);
}

/* ---- 4. training side, guidance, argument checks ---- */

static void test_training_side(void) {
    SlSchedConfig c;
    sd_config(&c, SL_PRED_V, SL_SPACING_LEADING);
    SlSchedule s;
    CHECK_OK(sl_schedule_init(&s, &c, &ctx), &ctx);
    enum { B = 3, N = 32 };
    float x0[B * N], eps[B * N], xt[B * N], v[B * N], tgt[B * N];
    for (int i = 0; i < B * N; i++) {
        x0[i] = sinf(0.37f * i);
        eps[i] = cosf(0.11f * i + 1);
    }
    int64_t t[B] = {0, 500, 999};
    CHECK_OK(sl_schedule_add_noise(xt, x0, eps, t, B, N, &s, &ctx), &ctx);
    CHECK_OK(sl_schedule_velocity(v, x0, eps, t, B, N, &s, &ctx), &ctx);
    CHECK_OK(sl_schedule_target(tgt, x0, eps, t, B, N, SL_PRED_V, &s, &ctx), &ctx);
    CHECK(memcmp(tgt, v, sizeof v) == 0, "v target differs from velocity");
    double e1 = 0, e2 = 0;
    for (int b = 0; b < B; b++) {
        double a = s.alphas_cumprod[t[b]], sa = sqrt(a), sb = sqrt(1 - a);
        for (int j = 0; j < N; j++) {
            int i = b * N + j;
            e1 = fmax(e1, fabs(xt[i] - (sa * x0[i] + sb * eps[i])));
            /* x0 = sqrt(a) x_t - sqrt(1-a) v recovers the clean sample */
            e2 = fmax(e2, fabs(sa * xt[i] - sb * v[i] - x0[i]));
        }
    }
    CHECK(e1 < 1e-6 && e2 < 1e-5, "add_noise err %g, v-inversion err %g", e1, e2);
    printf("ok   add_noise max err %.3g, x0 from (x_t, v) max err %.3g\n", e1, e2);
    int64_t bad = 1000;
    CHECK(sl_schedule_add_noise(xt, x0, eps, &bad, 1, N, &s, &ctx) == SL_ERR_ARG, "t=1000 accepted");

    for (int k = 0; k < 3; k++) {
        double a = s.alphas_cumprod[t[k]], snr = a / (1 - a), gamma = 5;
        float got = sl_schedule_snr(&s, t[k]);
        CHECK(fabs(got - snr) <= 1e-5 * snr, "snr(%lld) %g vs %g", (long long)t[k], got, snr);
        double we = fmin(snr, gamma) / snr, wv = fmin(snr, gamma) / (snr + 1);
        CHECK(fabs(sl_schedule_min_snr_weight(&s, t[k], 5.0f, SL_PRED_EPSILON) - we) <= 1e-5 * we, "eps weight");
        CHECK(fabs(sl_schedule_min_snr_weight(&s, t[k], 5.0f, SL_PRED_V) - wv) <= 1e-5 * wv, "v weight");
    }

    float u[4] = {1, 2, 3, 4}, cnd[4] = {2, 2, 1, 8}, out[4];
    sl_cfg_combine(out, u, cnd, 7.5f, 4);
    CHECK(out[0] == 8.5f && out[1] == 2 && out[2] == -12 && out[3] == 34, "cfg combine %g %g %g %g", out[0], out[1],
          out[2], out[3]);

    /* argument checks */
    SlSampler smp;
    SlSamplerOpts o = {SL_SAMPLER_DDIM, 1, 0};
    CHECK(sl_sampler_init(&smp, &s, &o, 10, &ctx) == SL_ERR_UNSUPPORTED, "DDIM + Karras accepted");
    o = (SlSamplerOpts){SL_SAMPLER_EULER, 0, 0};
    CHECK(sl_sampler_init(&smp, &s, &o, 1001, &ctx) == SL_ERR_ARG, "1001 steps accepted");
    o = (SlSamplerOpts){SL_SAMPLER_EULER_A, 0, 0};
    CHECK_OK(sl_sampler_init(&smp, &s, &o, 4, &ctx), &ctx);
    CHECK(sl_sampler_step(&smp, NULL, xt, eps, 0, x0, NULL, N, &ctx) == SL_ERR_ARG, "euler_a without noise accepted");
    sl_sampler_free(&smp);
    o = (SlSamplerOpts){SL_SAMPLER_DPMPP_2M, 0, 0};
    CHECK_OK(sl_sampler_init(&smp, &s, &o, 4, &ctx), &ctx);
    float hist[N];
    SlSamplerState st;
    sl_sampler_state_init(&st, hist, N);
    CHECK(sl_sampler_step(&smp, &st, xt, eps, 1, x0, NULL, N, &ctx) == SL_ERR_ARG, "DPM step out of order accepted");
    CHECK(sl_sampler_step(&smp, NULL, xt, eps, 0, x0, NULL, N, &ctx) == SL_ERR_ARG, "DPM without state accepted");
    sl_sampler_free(&smp);
    /* DDIM clip_sample: a sample prediction of 5 is clipped to clip_sample_range 0.5 */
    {
        SlSchedConfig cc;
        sd_config(&cc, SL_PRED_SAMPLE, SL_SPACING_LEADING);
        cc.clip_sample = 1;
        cc.clip_sample_range = 0.5;
        SlSchedule sc;
        CHECK_OK(sl_schedule_init(&sc, &cc, &ctx), &ctx);
        o = (SlSamplerOpts){SL_SAMPLER_DDIM, 0, 0};
        CHECK_OK(sl_sampler_init(&smp, &sc, &o, 10, &ctx), &ctx);
        float five[N], prev[N];
        for (int j = 0; j < N; j++) five[j] = 5.0f;
        CHECK_OK(sl_sampler_step(&smp, NULL, prev, five, 0, x0, NULL, N, &ctx), &ctx);
        double a = sc.alphas_cumprod[901], ap = sc.alphas_cumprod[801], err = 0;
        for (int j = 0; j < N; j++) {
            double eps = (x0[j] - sqrt(a) * 5.0) / sqrt(1 - a); /* from the unclipped x0, as diffusers */
            err = fmax(err, fabs(prev[j] - (sqrt(ap) * 0.5 + sqrt(1 - ap) * eps)));
        }
        CHECK(err < 1e-5, "DDIM clip_sample err %g", err);
        sl_sampler_free(&smp);
        sl_schedule_free(&sc);
    }
    /* leading + steps_offset beyond T - 1 */
    c.steps_offset = 1;
    o = (SlSamplerOpts){SL_SAMPLER_DDIM, 0, 0};
    CHECK(sl_sampler_init(&smp, &s, &o, 1000, &ctx) == SL_ERR_ARG, "timestep 1000 accepted");
    sl_schedule_free(&s);
}

int main(void) {
    sl_ctx_init(&ctx);
    char path[1024];
    snprintf(path, sizeof path, "%s/tests/data/schedulers_golden.safetensors", sl_test_source());
    SlStFile f;
    if (sl_st_open(&f, path, &ctx) == SL_OK) {
        test_acp_tables(&f);
        test_cases(&f);
        test_training_golden(&f);
        sl_st_close(&f);
    } else {
        CHECK(0, "cannot open %s: %s", path, ctx.msg);
    }
    test_shared_golden();
    test_config();
    test_training_side();
    return sl_test_finish("test_schedulers");
}
