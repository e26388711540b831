/* sampler.c - DDIM, Euler, Euler ancestral and DPM++ 2M steps; timesteps and
 * sigma schedules as diffusers 0.30 sets them.
 *
 * Rounding notes. numpy computes the timestep grids and the sigma
 * interpolation in float64 and each ufunc rounds on its own, so the helpers
 * below keep products out of the compiler's FMA contraction (mul_d). The
 * per-element step arithmetic follows torch's float32 order of operations.
 * FMA contraction is switched off for this file (GCC fuses even
 * (float)((double)a*b) - c): a fused step drifts from torch by up to 1e-3 of
 * the output where the update cancels (zero-terminal-SNR first steps).
 */
#if defined(__clang__)
#pragma STDC FP_CONTRACT OFF
#elif defined(__GNUC__)
#pragma GCC optimize("fp-contract=off")
#endif
#include "pipeline/sampler.h"

#include <math.h>
#include <string.h>

#include "core/tensor.h"

static const char *const KIND_NAMES[] = {"ddim", "euler", "euler_a", "dpmpp_2m"};

const char *sl_sampler_kind_name(SlSamplerKind k) { return (unsigned)k < 4 ? KIND_NAMES[k] : "?"; }
int sl_sampler_kind_from_name(const char *s, SlSamplerKind *out) {
    for (int i = 0; i < 4; i++)
        if (strcmp(s, KIND_NAMES[i]) == 0) { *out = (SlSamplerKind)i; return 1; }
    return 0;
}

/* ---- float64 helpers with numpy's rounding ---- */

static double mul_d(double a, double b) {
    volatile double p = a * b;
    return p;
}
static inline float mulf(float a, float b) { return (float)((double)a * (double)b); }

/* np.linspace(start, stop, num)[i] (endpoint=True). */
static double np_linspace(double start, double stop, int num, int i) {
    if (num == 1) return start;
    if (i == num - 1) return stop;
    double step = (stop - start) / (num - 1);
    return mul_d((double)i, step) + start;
}

/* np.arange(start, stop, step): length and element i. */
static long np_arange_len(double start, double stop, double step) {
    double l = ceil((stop - start) / step);
    return l > 0 ? (long)l : 0;
}
static double np_arange(double start, double step, long i) {
    if (i == 0) return start;
    double second = start + step;
    if (i == 1) return second;
    return start + mul_d((double)i, second - start);
}

/* np.interp(x, arange(T), fp) with fp float32. */
static double np_interp_grid(double x, const float *fp, int T) {
    if (x <= 0) return fp[0];
    if (x >= T - 1) return fp[T - 1];
    int j = (int)floor(x);
    double slope = ((double)fp[j + 1] - (double)fp[j]) / 1.0;
    return mul_d(slope, x - j) + (double)fp[j];
}

/* diffusers _convert_to_karras: rho = 7, ramp = linspace(0, 1, n). */
static double karras_sigma(double sigma_min, double sigma_max, int n, int i) {
    const double rho = 7.0;
    double min_inv = pow(sigma_min, 1 / rho), max_inv = pow(sigma_max, 1 / rho);
    double ramp = np_linspace(0, 1, n, i);
    return pow(max_inv + mul_d(ramp, min_inv - max_inv), rho);
}

/* diffusers _sigma_to_t: piecewise-linear in log sigma over the table. */
static double sigma_to_t(double sigma, const float *log_sigmas, int T) {
    double ls = log(sigma > 1e-10 ? sigma : 1e-10);
    /* low_idx = argmax(cumsum(ls >= log_sigmas)) (first index of the max), clipped to T-2 */
    int count = 0, best = 0, low = 0;
    for (int i = 0; i < T; i++) {
        count += ls - (double)log_sigmas[i] >= 0;
        if (count > best) { best = count; low = i; }
    }
    if (low > T - 2) low = T - 2;
    int high = low + 1;
    double lo = log_sigmas[low], hi = log_sigmas[high];
    double w = (lo - ls) / (lo - hi);
    if (w < 0) w = 0;
    if (w > 1) w = 1;
    return mul_d(1 - w, (double)low) + mul_d(w, (double)high);
}

/* ---- set_timesteps ---- */

/* Integer grids (DDIM: n points; DPM: n+1 points with the last dropped). */
static SlStatus timesteps_int(double *ts, int n, int T, int last, SlSpacing sp, int offset, int dpm, SlCtx *ctx) {
    if (sp == SL_SPACING_LINSPACE) {
        int m = dpm ? n + 1 : n;
        for (int i = 0; i < n; i++) ts[i] = nearbyint(np_linspace(0, (double)(last - 1), m, m - 1 - i));
    } else if (sp == SL_SPACING_LEADING) {
        int ratio = dpm ? last / (n + 1) : T / n;
        for (int i = 0; i < n; i++) ts[i] = (double)((long)(dpm ? n - i : n - 1 - i) * ratio + offset);
    } else {
        double step = (double)T / n;
        double start = dpm ? last : T;
        long len = np_arange_len(start, 0, -step);
        if (len != n)
            return sl_fail(ctx, SL_ERR_UNSUPPORTED, "scheduler: trailing spacing gives %ld timesteps for %d steps", len, n);
        for (int i = 0; i < n; i++) ts[i] = nearbyint(np_arange(start, -step, i)) - 1;
    }
    return SL_OK;
}

/* Euler-family float grids (np.float32 results). */
static SlStatus timesteps_euler(double *ts, int n, int T, SlSpacing sp, int offset, SlCtx *ctx) {
    if (sp == SL_SPACING_LINSPACE) {
        for (int i = 0; i < n; i++) ts[i] = (float)np_linspace(0, (double)(T - 1), n, n - 1 - i);
    } else if (sp == SL_SPACING_LEADING) {
        int ratio = T / n;
        for (int i = 0; i < n; i++) ts[i] = (float)((long)(n - 1 - i) * ratio + offset);
    } else {
        double step = (double)T / n;
        long len = np_arange_len(T, 0, -step);
        if (len != n)
            return sl_fail(ctx, SL_ERR_UNSUPPORTED, "scheduler: trailing spacing gives %ld timesteps for %d steps", len, n);
        for (int i = 0; i < n; i++) ts[i] = (float)(nearbyint(np_arange(T, -step, i)) - 1);
    }
    return SL_OK;
}

SlStatus sl_sampler_init(SlSampler *s, const SlSchedule *sched, const SlSamplerOpts *o, int n_steps, SlCtx *ctx) {
    memset(s, 0, sizeof *s);
    const SlSchedConfig *cfg = &sched->cfg;
    const int T = sched->T;
    const char *kname = sl_sampler_kind_name(o->kind);
    if ((unsigned)o->kind > SL_SAMPLER_DPMPP_2M)
        return sl_fail(ctx, SL_ERR_ARG, "sampler: unknown kind %d", (int)o->kind);
    if (n_steps < 1 || n_steps > T)
        return sl_fail(ctx, SL_ERR_ARG, "sampler %s: %d steps outside [1, %d] (num_train_timesteps)", kname, n_steps, T);
    int karras = o->karras < 0 ? cfg->use_karras_sigmas : o->karras != 0;
    if (karras && (o->kind == SL_SAMPLER_DDIM || o->kind == SL_SAMPLER_EULER_A))
        return sl_fail(ctx, SL_ERR_UNSUPPORTED, "sampler %s: Karras sigmas are not supported (diffusers 0.30 has none for it)", kname);
    if (o->kind == SL_SAMPLER_EULER_A && cfg->prediction_type == SL_PRED_SAMPLE)
        return sl_fail(ctx, SL_ERR_UNSUPPORTED, "sampler euler_a: prediction_type 'sample' is not supported");
    if (!(o->eta >= 0) || (o->eta > 0 && o->kind != SL_SAMPLER_DDIM))
        return sl_fail(ctx, SL_ERR_ARG, "sampler %s: eta %g invalid (>= 0, and only DDIM takes eta)", kname, o->eta);

    s->kind = o->kind;
    s->karras = karras;
    s->eta = o->eta;
    s->pred = cfg->prediction_type;
    s->n_steps = n_steps;
    s->sched = sched;
    s->init_noise_sigma = 1.0f;
    s->timesteps = sl_alloc((size_t)n_steps * sizeof(double));
    float *tab = NULL, *logtab = NULL;
    SlStatus st = SL_OK;
    if (!s->timesteps) { st = sl_fail(ctx, SL_ERR_NOMEM, "sampler: out of memory"); goto fail; }

    if (o->kind == SL_SAMPLER_DDIM) {
        st = timesteps_int(s->timesteps, n_steps, T, T, cfg->timestep_spacing, cfg->steps_offset, 0, ctx);
        if (st != SL_OK) goto fail;
    } else {
        /* sigma table over train timesteps, float32 as torch computes it */
        s->sigmas = sl_alloc((size_t)(n_steps + 1) * sizeof(float));
        tab = sl_alloc((size_t)T * sizeof(float));
        logtab = sl_alloc((size_t)T * sizeof(float));
        if (!s->sigmas || !tab || !logtab) { st = sl_fail(ctx, SL_ERR_NOMEM, "sampler: out of memory"); goto fail; }
        for (int t = 0; t < T; t++) {
            float a = sched->alphas_cumprod[t];
            if (t == T - 1 && cfg->rescale_betas_zero_snr) a = 0x1p-24f; /* diffusers: avoid inf sigma */
            tab[t] = sqrtf((1.0f - a) / a);
            logtab[t] = (float)log((double)tab[t]);
        }
        const double smin = cfg->sigma_min, smax = cfg->sigma_max; /* NAN: from the schedule */
        if (o->kind == SL_SAMPLER_DPMPP_2M) {
            /* last_timestep from lambda_min_clipped (searchsorted on flipped lambda_t) */
            int clipped = 0;
            for (int k = 0; k < T; k++) {
                float a = sched->alphas_cumprod[T - 1 - k];
                if (k == 0 && cfg->rescale_betas_zero_snr) a = 0x1p-24f;
                float lam = logf(sqrtf(a)) - logf(sqrtf(1.0f - a));
                if ((double)lam < cfg->lambda_min_clipped) clipped++;
                else break;
            }
            int last = T - clipped;
            if (karras) {
                double lo = isnan(smin) ? (double)tab[0] : smin, hi = isnan(smax) ? (double)tab[T - 1] : smax;
                for (int i = 0; i < n_steps; i++) {
                    double sg = karras_sigma(lo, hi, n_steps, i);
                    s->sigmas[i] = (float)sg;
                    s->timesteps[i] = nearbyint(sigma_to_t(sg, logtab, T));
                }
            } else {
                st = timesteps_int(s->timesteps, n_steps, T, last, cfg->timestep_spacing, cfg->steps_offset, 1, ctx);
                if (st != SL_OK) goto fail;
                for (int i = 0; i < n_steps; i++) /* out-of-range timesteps fail below */
                    s->sigmas[i] = (float)np_interp_grid(s->timesteps[i], tab, T);
            }
        } else {
            st = timesteps_euler(s->timesteps, n_steps, T, cfg->timestep_spacing, cfg->steps_offset, ctx);
            if (st != SL_OK) goto fail;
            double first = np_interp_grid(s->timesteps[0], tab, T);
            double lastsig = np_interp_grid(s->timesteps[n_steps - 1], tab, T);
            for (int i = 0; i < n_steps; i++) {
                double sg = np_interp_grid(s->timesteps[i], tab, T);
                if (karras) {
                    double lo = isnan(smin) ? lastsig : smin, hi = isnan(smax) ? first : smax;
                    sg = karras_sigma(lo, hi, n_steps, i);
                    s->timesteps[i] = (float)sigma_to_t(sg, logtab, T);
                }
                s->sigmas[i] = (float)sg;
            }
            float mx = 0;
            for (int i = 0; i < n_steps; i++) mx = s->sigmas[i] > mx ? s->sigmas[i] : mx;
            s->init_noise_sigma = (cfg->timestep_spacing == SL_SPACING_LEADING) ? sqrtf(mulf(mx, mx) + 1.0f) : mx;
        }
        s->sigmas[n_steps] = 0.0f;
    }
    for (int i = 0; i < n_steps; i++)
        if (!(s->timesteps[i] >= 0 && s->timesteps[i] <= T - 1)) {
            st = sl_fail(ctx, SL_ERR_ARG, "sampler %s: timestep %g (step %d of %d, spacing %s, steps_offset %d) outside [0, %d]",
                         kname, s->timesteps[i], i, n_steps, sl_spacing_name(cfg->timestep_spacing), cfg->steps_offset,
                         T - 1);
            goto fail;
        }
    sl_free(tab);
    sl_free(logtab);
    return SL_OK;
fail:
    sl_free(tab);
    sl_free(logtab);
    sl_sampler_free(s);
    return st;
}

void sl_sampler_free(SlSampler *s) {
    sl_free(s->timesteps);
    sl_free(s->sigmas);
    s->timesteps = NULL;
    s->sigmas = NULL;
}

float sl_sampler_input_scale(const SlSampler *s, int i) {
    if (s->kind != SL_SAMPLER_EULER && s->kind != SL_SAMPLER_EULER_A) return 1.0f;
    float sg = s->sigmas[i];
    return 1.0f / sqrtf(mulf(sg, sg) + 1.0f);
}

void sl_sampler_scale_model_input(const SlSampler *s, float *out, const float *x, size_t N, int i) {
    if (s->kind != SL_SAMPLER_EULER && s->kind != SL_SAMPLER_EULER_A) {
        if (out != x) memmove(out, x, N * sizeof(float));
        return;
    }
    float sg = s->sigmas[i];
    float d = sqrtf(mulf(sg, sg) + 1.0f);
    for (size_t j = 0; j < N; j++) out[j] = x[j] / d;
}

int sl_sampler_needs_noise(const SlSampler *s, int i) {
    (void)i;
    return s->kind == SL_SAMPLER_EULER_A || (s->kind == SL_SAMPLER_DDIM && s->eta > 0);
}

void sl_sampler_state_init(SlSamplerState *st, float *history, size_t N) {
    st->history = history;
    st->n = N;
    st->n_history = 0;
    st->next_step = 0;
}

void sl_cfg_combine(float *out, const float *uncond, const float *cond, float scale, size_t N) {
    for (size_t j = 0; j < N; j++) {
        float u = uncond[j];
        out[j] = u + mulf(scale, cond[j] - u);
    }
}

/* ---- steps ---- */

static void step_ddim(const SlSampler *s, float *prev, const float *e, int i, const float *x, const float *noise,
                      size_t N) {
    const SlSchedule *sc = s->sched;
    const int t = (int)s->timesteps[i];
    const int pt = t - sc->T / s->n_steps;
    const float a_t = sc->alphas_cumprod[t];
    const float a_p = pt >= 0 ? sc->alphas_cumprod[pt] : sc->final_alpha_cumprod;
    const float b_t = 1.0f - a_t, b_p = 1.0f - a_p;
    const float sa = sqrtf(a_t), sb = sqrtf(b_t), sap = sqrtf(a_p);
    const float var = mulf(b_p / b_t, 1.0f - a_t / a_p);
    const float std = mulf(s->eta, sqrtf(var));
    const float dir = sqrtf(1.0f - a_p - mulf(std, std));
    const int clip = sc->cfg.clip_sample;
    const float r = (float)sc->cfg.clip_sample_range;
    for (size_t j = 0; j < N; j++) {
        float x0, eps;
        if (s->pred == SL_PRED_EPSILON) {
            x0 = (x[j] - mulf(sb, e[j])) / sa;
            eps = e[j];
        } else if (s->pred == SL_PRED_V) {
            x0 = mulf(sa, x[j]) - mulf(sb, e[j]);
            eps = mulf(sa, e[j]) + mulf(sb, x[j]);
        } else {
            x0 = e[j];
            eps = (x[j] - mulf(sa, x0)) / sb;
        }
        if (clip) x0 = x0 < -r ? -r : (x0 > r ? r : x0);
        float p = mulf(sap, x0) + mulf(dir, eps);
        if (s->eta > 0) p = p + mulf(std, noise[j]);
        prev[j] = p;
    }
}

/* x0 prediction of the Euler family at sigma. */
static inline float euler_x0(SlPrediction pred, float x, float e, float sigma, float vc, float vd) {
    if (pred == SL_PRED_EPSILON) return x - mulf(sigma, e);
    if (pred == SL_PRED_V) return mulf(e, vc) + x / vd;
    return e;
}

static void step_euler(const SlSampler *s, float *prev, const float *e, int i, const float *x, const float *noise,
                       size_t N) {
    const float sigma = s->sigmas[i], next = s->sigmas[i + 1];
    const float s2p1 = mulf(sigma, sigma) + 1.0f;
    const float vc = -sigma / sqrtf(s2p1); /* v: x0 = e * (-sigma/sqrt(sigma^2+1)) + x/(sigma^2+1) */
    if (s->kind == SL_SAMPLER_EULER) {
        const float dt = next - sigma;
        for (size_t j = 0; j < N; j++) {
            float x0 = euler_x0(s->pred, x[j], e[j], sigma, vc, s2p1);
            float d = (x[j] - x0) / sigma;
            prev[j] = x[j] + mulf(d, dt);
        }
    } else {
        const float f2 = mulf(sigma, sigma), t2 = mulf(next, next);
        const float up = sqrtf(mulf(t2, f2 - t2) / f2);
        const float down = sqrtf(t2 - mulf(up, up));
        const float dt = down - sigma;
        for (size_t j = 0; j < N; j++) {
            float x0 = euler_x0(s->pred, x[j], e[j], sigma, vc, s2p1);
            float d = (x[j] - x0) / sigma;
            float p = x[j] + mulf(d, dt);
            prev[j] = p + mulf(noise[j], up);
        }
    }
}

/* diffusers _sigma_to_alpha_sigma_t: alpha = 1/sqrt(sigma^2+1), sigma_t = sigma*alpha. */
static void alpha_sigma(float sigma, float *alpha, float *sig_t) {
    *alpha = 1.0f / sqrtf(mulf(sigma, sigma) + 1.0f);
    *sig_t = mulf(sigma, *alpha);
}

static void step_dpmpp_2m(const SlSampler *s, SlSamplerState *st, float *prev, const float *e, int i,
                          const float *x, size_t N) {
    float a_s0, s_s0, a_t, s_t;
    alpha_sigma(s->sigmas[i], &a_s0, &s_s0);
    alpha_sigma(s->sigmas[i + 1], &a_t, &s_t);
    /* final_sigmas_type "zero": the last step is always first order */
    const int first = st->n_history < 1 || i == s->n_steps - 1;
    const float lam_t = logf(a_t) - logf(s_t), lam_s0 = logf(a_s0) - logf(s_s0);
    const float h = lam_t - lam_s0;
    const float ratio = s_t / s_s0;
    const float c = mulf(a_t, expf(-h) - 1.0f); /* alpha_t * (exp(-h) - 1) */
    float inv_r0 = 0, half_c = 0;
    if (!first) {
        float a_s1, s_s1;
        alpha_sigma(s->sigmas[i - 1], &a_s1, &s_s1);
        const float lam_s1 = logf(a_s1) - logf(s_s1);
        const float r0 = (lam_s0 - lam_s1) / h;
        inv_r0 = 1.0f / r0;
        half_c = mulf(0.5f, c);
    }
    float *hist = st->history;
    for (size_t j = 0; j < N; j++) {
        float x0;
        if (s->pred == SL_PRED_EPSILON) x0 = (x[j] - mulf(s_s0, e[j])) / a_s0;
        else if (s->pred == SL_PRED_V) x0 = mulf(a_s0, x[j]) - mulf(s_s0, e[j]);
        else x0 = e[j];
        float p;
        if (s_t == 0.0f) {
            p = x0; /* sigma_next = 0: exp(-h) = 0 and the update is exactly x0 */
        } else if (first) {
            p = mulf(ratio, x[j]) - mulf(c, x0);
        } else {
            float d1 = mulf(inv_r0, x0 - hist[j]);
            p = mulf(ratio, x[j]) - mulf(c, x0) - mulf(half_c, d1);
        }
        hist[j] = x0;
        prev[j] = p;
    }
    if (st->n_history < 2) st->n_history++;
}

SlStatus sl_sampler_step(const SlSampler *s, SlSamplerState *st, float *prev, const float *model_out, int i,
                         const float *sample, const float *noise, size_t N, SlCtx *ctx) {
    const char *kname = sl_sampler_kind_name(s->kind);
    if (i < 0 || i >= s->n_steps)
        return sl_fail(ctx, SL_ERR_ARG, "sampler %s: step %d outside [0, %d)", kname, i, s->n_steps);
    if (sl_sampler_needs_noise(s, i) && !noise)
        return sl_fail(ctx, SL_ERR_ARG, "sampler %s: step %d needs noise but none was given", kname, i);
    switch (s->kind) {
    case SL_SAMPLER_DDIM:
        step_ddim(s, prev, model_out, i, sample, noise, N);
        break;
    case SL_SAMPLER_EULER:
    case SL_SAMPLER_EULER_A:
        step_euler(s, prev, model_out, i, sample, noise, N);
        break;
    case SL_SAMPLER_DPMPP_2M:
        if (!st || !st->history || st->n != N)
            return sl_fail(ctx, SL_ERR_ARG, "sampler dpmpp_2m: state history must hold %zu floats", N);
        if (i != st->next_step)
            return sl_fail(ctx, SL_ERR_ARG, "sampler dpmpp_2m: step %d given, step %d expected (steps run in order)", i,
                           st->next_step);
        step_dpmpp_2m(s, st, prev, model_out, i, sample, N);
        break;
    }
    if (st) st->next_step = i + 1;
    return SL_OK;
}
