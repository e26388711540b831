/* schedule.c - scheduler config parsing, beta/alpha tables, forward process.
 *
 * See schedule.h. FMA contraction is off for this file so that each float32
 * operation rounds as PyTorch's does; the one FMA torch's linspace kernel
 * performs is written out with fmaf().
 */
#if defined(__clang__)
#pragma STDC FP_CONTRACT OFF
#elif defined(__GNUC__)
#pragma GCC optimize("fp-contract=off")
#endif
#include "pipeline/schedule.h"

#include <cJSON.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/config.h"
#include "core/tensor.h"

static const char *const PRED_NAMES[] = {"epsilon", "v_prediction", "sample"};
static const char *const SPACING_NAMES[] = {"leading", "trailing", "linspace"};
static const char *const BETA_NAMES[] = {"linear", "scaled_linear", "squaredcos_cap_v2"};

const char *sl_prediction_name(SlPrediction p) { return (unsigned)p < 3 ? PRED_NAMES[p] : "?"; }
const char *sl_spacing_name(SlSpacing s) { return (unsigned)s < 3 ? SPACING_NAMES[s] : "?"; }

static int name_index(const char *s, const char *const *names, int n) {
    for (int i = 0; i < n; i++)
        if (strcmp(s, names[i]) == 0) return i;
    return -1;
}
int sl_prediction_from_name(const char *s, SlPrediction *out) {
    int i = name_index(s, PRED_NAMES, 3);
    if (i < 0) return 0;
    *out = (SlPrediction)i;
    return 1;
}
int sl_spacing_from_name(const char *s, SlSpacing *out) {
    int i = name_index(s, SPACING_NAMES, 3);
    if (i < 0) return 0;
    *out = (SlSpacing)i;
    return 1;
}

void sl_sched_config_default(SlSchedConfig *c) {
    memset(c, 0, sizeof *c);
    c->num_train_timesteps = 1000;
    c->beta_start = 0.0001;
    c->beta_end = 0.02;
    c->beta_schedule = SL_BETA_LINEAR;
    c->prediction_type = SL_PRED_EPSILON;
    c->timestep_spacing = SL_SPACING_LEADING;
    c->set_alpha_to_one = 1;
    c->clip_sample = 1;
    c->clip_sample_range = 1.0;
    c->sigma_min = NAN;
    c->sigma_max = NAN;
    c->lambda_min_clipped = -INFINITY;
}

void sl_sched_config_free(SlSchedConfig *c) {
    sl_free(c->trained_betas);
    c->trained_betas = NULL;
}

/* Python's json writes +-inf as bare Infinity / -Infinity, which cJSON
 * rejects: rewrite those tokens (outside strings) to 1e999, which strtod reads
 * as inf. Same length or shorter, padded with spaces. */
static void patch_infinity(char *t) {
    int in_str = 0;
    for (char *p = t; *p; p++) {
        if (in_str) {
            if (*p == '\\' && p[1]) p++;
            else if (*p == '"') in_str = 0;
        } else if (*p == '"') {
            in_str = 1;
        } else if (strncmp(p, "Infinity", 8) == 0) {
            memcpy(p, "1e999   ", 8);
            p += 7;
        }
    }
}

/* Reads an enum-valued string key; unknown values are SL_ERR_UNSUPPORTED. */
static SlStatus get_enum(const SlConfig *j, const char *key, const char *const *names, int n, int def, int *out,
                         SlCtx *ctx) {
    const char *v;
    SL_TRY(sl_config_str(j, key, NULL, &v, ctx));
    if (!v) { *out = def; return SL_OK; }
    int i = name_index(v, names, n);
    if (i < 0) {
        char list[256] = "";
        for (int k = 0; k < n; k++) {
            strncat(list, names[k], sizeof list - strlen(list) - 1);
            if (k + 1 < n) strncat(list, ", ", sizeof list - strlen(list) - 1);
        }
        return sl_fail(ctx, SL_ERR_UNSUPPORTED, "%s: key '%s' = '%s' is not supported (supported: %s)", j->path, key, v,
                       list);
    }
    *out = i;
    return SL_OK;
}

/* A string key that, when present, must equal one supported value. */
static SlStatus require_str(const SlConfig *j, const char *key, const char *const *ok, int n, SlCtx *ctx) {
    int dummy;
    return get_enum(j, key, ok, n, 0, &dummy, ctx);
}

/* A bool key that we only support at one value. */
static SlStatus require_bool(const SlConfig *j, const char *key, int supported, SlCtx *ctx) {
    int v;
    SL_TRY(sl_config_bool(j, key, supported, &v, ctx));
    if (v != supported)
        return sl_fail(ctx, SL_ERR_UNSUPPORTED, "%s: key '%s' = %s is not supported (only %s)", j->path, key,
                       v ? "true" : "false", supported ? "true" : "false");
    return SL_OK;
}

static SlStatus parse_keys(SlSchedConfig *c, const SlConfig *j, SlCtx *ctx) {
    const char *cls;
    SL_TRY(sl_config_str(j, "_class_name", "", &cls, ctx));
    snprintf(c->class_name, sizeof c->class_name, "%s", cls);
    int sigma_family = strncmp(cls, "Euler", 5) == 0 || strncmp(cls, "DPMSolver", 9) == 0;

    int64_t iv;
    SL_TRY(sl_config_int(j, "num_train_timesteps", 1000, 2, SL_SCHED_MAX_T, &iv, ctx));
    c->num_train_timesteps = (int)iv;
    SL_TRY(sl_config_num(j, "beta_start", 0.0001, &c->beta_start, ctx));
    SL_TRY(sl_config_num(j, "beta_end", 0.02, &c->beta_end, ctx));
    int e;
    SL_TRY(get_enum(j, "beta_schedule", BETA_NAMES, 3, SL_BETA_LINEAR, &e, ctx));
    c->beta_schedule = (SlBetaSchedule)e;
    SL_TRY(get_enum(j, "prediction_type", PRED_NAMES, 3, SL_PRED_EPSILON, &e, ctx));
    c->prediction_type = (SlPrediction)e;
    SL_TRY(sl_config_int(j, "steps_offset", 0, 0, c->num_train_timesteps - 1, &iv, ctx));
    c->steps_offset = (int)iv;
    SL_TRY(get_enum(j, "timestep_spacing", SPACING_NAMES, 3, sigma_family ? SL_SPACING_LINSPACE : SL_SPACING_LEADING,
                    &e, ctx));
    c->timestep_spacing = (SlSpacing)e;
    SL_TRY(sl_config_bool(j, "set_alpha_to_one", 1, &c->set_alpha_to_one, ctx));
    SL_TRY(sl_config_bool(j, "clip_sample", 1, &c->clip_sample, ctx));
    SL_TRY(sl_config_num(j, "clip_sample_range", 1.0, &c->clip_sample_range, ctx));
    if (!(c->clip_sample_range > 0))
        return sl_fail(ctx, SL_ERR_UNSUPPORTED, "%s: key 'clip_sample_range' = %g must be > 0", j->path,
                       c->clip_sample_range);
    SL_TRY(sl_config_bool(j, "rescale_betas_zero_snr", 0, &c->rescale_betas_zero_snr, ctx));
    SL_TRY(sl_config_bool(j, "use_karras_sigmas", 0, &c->use_karras_sigmas, ctx));
    SL_TRY(sl_config_num(j, "sigma_min", NAN, &c->sigma_min, ctx));
    SL_TRY(sl_config_num(j, "sigma_max", NAN, &c->sigma_max, ctx));
    if (!isnan(c->sigma_min) && !(c->sigma_min > 0))
        return sl_fail(ctx, SL_ERR_UNSUPPORTED, "%s: key 'sigma_min' = %g must be > 0", j->path, c->sigma_min);
    if (!isnan(c->sigma_max) && !(c->sigma_max > 0))
        return sl_fail(ctx, SL_ERR_UNSUPPORTED, "%s: key 'sigma_max' = %g must be > 0", j->path, c->sigma_max);

    /* lambda_min_clipped may be -inf (written as -Infinity): read it raw. */
    const cJSON *lm = cJSON_GetObjectItemCaseSensitive(j->root, "lambda_min_clipped");
    if (lm && !cJSON_IsNull(lm)) {
        if (!cJSON_IsNumber(lm) || isnan(lm->valuedouble))
            return sl_fail(ctx, SL_ERR_FORMAT, "%s: key 'lambda_min_clipped' must be a number", j->path);
        c->lambda_min_clipped = lm->valuedouble;
    }

    /* Keys whose other values change the maths in ways not implemented here. */
    SL_TRY(require_bool(j, "thresholding", 0, ctx));
    SL_TRY(require_bool(j, "use_lu_lambdas", 0, ctx));
    SL_TRY(require_bool(j, "use_exponential_sigmas", 0, ctx));
    SL_TRY(require_bool(j, "use_beta_sigmas", 0, ctx));
    static const char *const interp_ok[] = {"linear"};
    static const char *const ttype_ok[] = {"discrete"};
    static const char *const final_ok[] = {"zero"};
    static const char *const algo_ok[] = {"dpmsolver++"};
    static const char *const solver_ok[] = {"midpoint"};
    static const char *const var_ok[] = {"fixed_small", "fixed_large"};
    SL_TRY(require_str(j, "interpolation_type", interp_ok, 1, ctx));
    SL_TRY(require_str(j, "timestep_type", ttype_ok, 1, ctx));
    SL_TRY(require_str(j, "final_sigmas_type", final_ok, 1, ctx));
    SL_TRY(require_str(j, "algorithm_type", algo_ok, 1, ctx));
    SL_TRY(require_str(j, "solver_type", solver_ok, 1, ctx));
    SL_TRY(require_str(j, "variance_type", var_ok, 2, ctx));
    if (sl_config_has(j, "solver_order")) {
        SL_TRY(sl_config_int(j, "solver_order", 2, 1, 3, &iv, ctx));
        if (iv != 2)
            return sl_fail(ctx, SL_ERR_UNSUPPORTED, "%s: key 'solver_order' = %lld is not supported (only 2)", j->path,
                           (long long)iv);
    }
    int dummy;
    SL_TRY(sl_config_bool(j, "lower_order_final", 1, &dummy, ctx));
    SL_TRY(sl_config_bool(j, "euler_at_final", 0, &dummy, ctx));

    const cJSON *tb = cJSON_GetObjectItemCaseSensitive(j->root, "trained_betas");
    if (tb && !cJSON_IsNull(tb)) {
        if (!cJSON_IsArray(tb))
            return sl_fail(ctx, SL_ERR_FORMAT, "%s: key 'trained_betas' must be null or a list of numbers", j->path);
        int n = cJSON_GetArraySize(tb);
        if (n != c->num_train_timesteps)
            return sl_fail(ctx, SL_ERR_FORMAT, "%s: key 'trained_betas' has %d entries, num_train_timesteps is %d",
                           j->path, n, c->num_train_timesteps);
        c->trained_betas = sl_alloc((size_t)n * sizeof(float));
        if (!c->trained_betas) return sl_fail(ctx, SL_ERR_NOMEM, "%s: out of memory for trained_betas", j->path);
        int i = 0;
        const cJSON *it;
        cJSON_ArrayForEach(it, tb) {
            if (!cJSON_IsNumber(it) || !(it->valuedouble >= 0 && it->valuedouble < 1)) {
                sl_sched_config_free(c);
                return sl_fail(ctx, SL_ERR_FORMAT, "%s: key 'trained_betas'[%d] must be a number in [0, 1)", j->path,
                               i);
            }
            c->trained_betas[i++] = (float)it->valuedouble;
        }
    }
    return SL_OK;
}

SlStatus sl_sched_config_parse(SlSchedConfig *c, const char *text, const char *label, SlCtx *ctx) {
    sl_sched_config_default(c);
    size_t len = strlen(text);
    char *copy = malloc(len + 1);
    if (!copy) return sl_fail(ctx, SL_ERR_NOMEM, "%s: out of memory", label ? label : "<scheduler config>");
    memcpy(copy, text, len + 1);
    patch_infinity(copy);
    SlConfig j;
    SlStatus st = sl_config_parse(&j, copy, label ? label : "<scheduler config>", ctx);
    free(copy);
    if (st != SL_OK) return st;
    st = parse_keys(c, &j, ctx);
    sl_config_free(&j);
    if (st != SL_OK) sl_sched_config_free(c);
    return st;
}

SlStatus sl_sched_config_load(SlSchedConfig *c, const char *path, SlCtx *ctx) {
    sl_sched_config_default(c);
    char *text;
    SL_TRY(sl_read_file(path, SL_CONFIG_MAX_BYTES, &text, NULL, ctx));
    SlStatus st = sl_sched_config_parse(c, text, path, ctx);
    free(text);
    return st;
}

/* ---- tables ---- */

/* float a + b*c with the product rounded first (no FMA). */
static inline float add_mul_f(float a, float b, float c) {
    float p = (float)((double)b * (double)c);
    return (float)((double)a + (double)p);
}

void sl_linspace_f32_torch(float *out, float start, float end, int n) {
    if (n <= 0) return;
    if (n == 1) { out[0] = start; return; }
    /* torch: step = (end - start) / (steps - 1) in float; first half counts up
     * from start, second half down from end. Its AVX2 kernel fills 2 vectors
     * of 8 per iteration: lane 0 is start + step*idx (contracted to an FMA),
     * lane j adds j*step; the tail (< 16 left) runs the scalar formula. */
    const float step = (float)((double)(float)((double)end - (double)start) / (double)(float)(n - 1));
    const int half = n / 2;
    const int nvec = (n / 16) * 16;
    for (int idx = 0; idx < nvec; idx += 8) {
        float base = idx < half ? fmaf(step, (float)idx, start) : fmaf(-step, (float)(n - idx - 1), end);
        for (int j = 0; j < 8; j++) out[idx + j] = add_mul_f(base, (float)j, step);
    }
    for (int idx = nvec; idx < n; idx++)
        out[idx] = idx < half ? add_mul_f(start, step, (float)idx) : add_mul_f(end, -step, (float)(n - idx - 1));
}

/* alphas = 1 - betas; acp = cumprod (double accumulator, float stores). */
static void cumprod_alphas(float *acp, const float *betas, int T) {
    double acc = 1.0;
    for (int i = 0; i < T; i++) {
        acc *= (double)(1.0f - betas[i]);
        acp[i] = (float)acc;
    }
}

static double alpha_bar_cos(double t) {
    double c = cos((t + 0.008) / 1.008 * M_PI / 2);
    return c * c;
}

/* diffusers rescale_zero_terminal_snr (arXiv 2305.08891 Alg. 1), float32. */
static void rescale_zero_terminal_snr(float *betas, float *tmp, int T) {
    cumprod_alphas(tmp, betas, T);
    for (int i = 0; i < T; i++) tmp[i] = sqrtf(tmp[i]);
    float a0 = tmp[0], aT = tmp[T - 1];
    float scale = a0 / (a0 - aT);
    for (int i = 0; i < T; i++) {
        float v = (tmp[i] - aT) * scale;
        tmp[i] = v * v; /* alphas_bar */
    }
    float prev = tmp[0];
    betas[0] = 1.0f - tmp[0];
    for (int i = 1; i < T; i++) {
        float a = tmp[i] / prev;
        prev = tmp[i];
        betas[i] = 1.0f - a;
    }
}

SlStatus sl_schedule_init(SlSchedule *s, const SlSchedConfig *cfg, SlCtx *ctx) {
    memset(s, 0, sizeof *s);
    const int T = cfg->num_train_timesteps;
    if (T < 2 || T > SL_SCHED_MAX_T)
        return sl_fail(ctx, SL_ERR_ARG, "scheduler: num_train_timesteps %d outside [2, %d]", T, SL_SCHED_MAX_T);
    s->cfg = *cfg;
    s->cfg.trained_betas = NULL;
    s->T = T;
    s->betas = sl_alloc((size_t)T * sizeof(float));
    s->alphas_cumprod = sl_alloc((size_t)T * sizeof(float));
    if (!s->betas || !s->alphas_cumprod) {
        sl_schedule_free(s);
        return sl_fail(ctx, SL_ERR_NOMEM, "scheduler: out of memory for %d timesteps", T);
    }
    float *b = s->betas;
    if (cfg->trained_betas) {
        memcpy(b, cfg->trained_betas, (size_t)T * sizeof(float));
    } else if (cfg->beta_schedule == SL_BETA_LINEAR) {
        sl_linspace_f32_torch(b, (float)cfg->beta_start, (float)cfg->beta_end, T);
    } else if (cfg->beta_schedule == SL_BETA_SCALED_LINEAR) {
        sl_linspace_f32_torch(b, (float)sqrt(cfg->beta_start), (float)sqrt(cfg->beta_end), T);
        for (int i = 0; i < T; i++) b[i] = b[i] * b[i];
    } else if (cfg->beta_schedule == SL_BETA_SQUAREDCOS_CAP_V2) {
        for (int i = 0; i < T; i++) {
            double t1 = (double)i / T, t2 = (double)(i + 1) / T;
            double beta = 1 - alpha_bar_cos(t2) / alpha_bar_cos(t1);
            b[i] = (float)(beta < 0.999 ? beta : 0.999);
        }
    } else {
        sl_schedule_free(s);
        return sl_fail(ctx, SL_ERR_ARG, "scheduler: unknown beta_schedule %d", (int)cfg->beta_schedule);
    }
    if (cfg->rescale_betas_zero_snr) rescale_zero_terminal_snr(b, s->alphas_cumprod, T);
    cumprod_alphas(s->alphas_cumprod, b, T);
    s->final_alpha_cumprod = cfg->set_alpha_to_one ? 1.0f : s->alphas_cumprod[0];
    return SL_OK;
}

void sl_schedule_free(SlSchedule *s) {
    sl_free(s->betas);
    sl_free(s->alphas_cumprod);
    s->betas = s->alphas_cumprod = NULL;
}

/* ---- training side ---- */

static SlStatus check_t(const SlSchedule *s, const int64_t *t, int B, SlCtx *ctx) {
    for (int b = 0; b < B; b++)
        if (t[b] < 0 || t[b] >= s->T)
            return sl_fail(ctx, SL_ERR_ARG, "scheduler: timestep[%d] = %lld outside [0, %d)", b, (long long)t[b],
                           s->T);
    return SL_OK;
}

/* x = ca*a + cb*b per sample, float32 with each product rounded (as torch). */
static void combine(float *out, const float *a, const float *b, const float *ca, const float *cb, int B, size_t N) {
    for (int bi = 0; bi < B; bi++) {
        const float p = ca[bi], q = cb[bi];
        const size_t o = (size_t)bi * N;
        for (size_t i = 0; i < N; i++) {
            float u = (float)((double)p * a[o + i]);
            float v = (float)((double)q * b[o + i]);
            out[o + i] = u + v;
        }
    }
}

#define SL_SCHED_MAX_B 4096

SlStatus sl_schedule_add_noise(float *x_t, const float *x0, const float *eps, const int64_t *t, int B, size_t N,
                               const SlSchedule *s, SlCtx *ctx) {
    if (B < 0 || B > SL_SCHED_MAX_B) return sl_fail(ctx, SL_ERR_ARG, "add_noise: batch %d outside [0, %d]", B, SL_SCHED_MAX_B);
    SL_TRY(check_t(s, t, B, ctx));
    float ca[SL_SCHED_MAX_B], cb[SL_SCHED_MAX_B];
    for (int b = 0; b < B; b++) {
        float a = s->alphas_cumprod[t[b]];
        ca[b] = sqrtf(a);
        cb[b] = sqrtf(1.0f - a);
    }
    combine(x_t, x0, eps, ca, cb, B, N);
    return SL_OK;
}

SlStatus sl_schedule_velocity(float *v, const float *x0, const float *eps, const int64_t *t, int B, size_t N,
                              const SlSchedule *s, SlCtx *ctx) {
    if (B < 0 || B > SL_SCHED_MAX_B) return sl_fail(ctx, SL_ERR_ARG, "velocity: batch %d outside [0, %d]", B, SL_SCHED_MAX_B);
    SL_TRY(check_t(s, t, B, ctx));
    float ca[SL_SCHED_MAX_B], cb[SL_SCHED_MAX_B];
    for (int b = 0; b < B; b++) {
        float a = s->alphas_cumprod[t[b]];
        ca[b] = sqrtf(a);
        cb[b] = -sqrtf(1.0f - a);
    }
    combine(v, eps, x0, ca, cb, B, N);
    return SL_OK;
}

SlStatus sl_schedule_target(float *target, const float *x0, const float *eps, const int64_t *t, int B, size_t N,
                            SlPrediction p, const SlSchedule *s, SlCtx *ctx) {
    switch (p) {
    case SL_PRED_EPSILON:
        if (target != eps) memmove(target, eps, (size_t)B * N * sizeof(float));
        return SL_OK;
    case SL_PRED_SAMPLE:
        if (target != x0) memmove(target, x0, (size_t)B * N * sizeof(float));
        return SL_OK;
    case SL_PRED_V:
        return sl_schedule_velocity(target, x0, eps, t, B, N, s, ctx);
    }
    return sl_fail(ctx, SL_ERR_ARG, "training target: unknown prediction type %d", (int)p);
}

float sl_schedule_snr(const SlSchedule *s, int64_t t) {
    float a = s->alphas_cumprod[t];
    float r = sqrtf(a) / sqrtf(1.0f - a);
    return r * r;
}

float sl_schedule_min_snr_weight(const SlSchedule *s, int64_t t, float gamma, SlPrediction p) {
    float snr = sl_schedule_snr(s, t);
    float m = snr < gamma ? snr : gamma;
    if (p == SL_PRED_EPSILON) return m / snr;
    if (p == SL_PRED_V) return m / (snr + 1.0f);
    return m;
}
