/* denoise.c - the sampling loop; see denoise.h. */
#include "pipeline/denoise.h"

#include <math.h>
#include <string.h>

#include "core/rng.h"
#include "core/tensor.h"

SlStatus sl_denoise(SlUNet *u, const SlSchedule *sched, float *latents, const float *cond, const float *uncond,
                    int64_t B, int64_t h, int64_t w, int64_t T, const SlDenoiseOpts *o, SlCtx *ctx) {
    const int64_t C = u->cfg.in_channels, D = u->cfg.cross_dim;
    const size_t N = (size_t)(B * C * h * w), ND = (size_t)(B * T * D);
    int guided = uncond && o->guidance > 1.0f;
    int64_t BB = guided ? 2 * B : B;
    if (u->cfg.out_channels != C)
        return sl_fail(ctx, SL_ERR_UNSUPPORTED, "U-Net has %lld input but %lld output channels: cannot denoise",
                       (long long)C, (long long)u->cfg.out_channels);
    SlSampler smp;
    SL_TRY(sl_sampler_init(&smp, sched, &o->sampler, o->steps, ctx));
    /* forward only: an inference plan keeps no backward caches (the previous
     * setting is restored below; callers that train afterwards re-plan) */
    const int was_inference = sl_unet_set_inference(u, 1);
    SlStatus st = sl_unet_plan(u, BB, h, w, T, ctx);
    sl_unet_set_inference(u, was_inference);
    /* one buffer: model input [BB,C,h,w], model output [BB,C,h,w], ehs [BB,T,D],
     * t [BB], guided eps [N], noise [N], history [N] */
    float *buf = st ? NULL : sl_alloc((2 * (size_t)BB * N / (size_t)B + (size_t)BB * T * D + (size_t)BB + 3 * N) * sizeof(float));
    if (!st && !buf) st = sl_fail(ctx, SL_ERR_NOMEM, "out of memory for the sampling buffers");
    if (st) { sl_sampler_free(&smp); return st; }
    float *xin = buf, *mout = xin + (size_t)BB * C * h * w, *ehs = mout + (size_t)BB * C * h * w;
    float *tt = ehs + (size_t)BB * T * D, *eps = tt + BB, *noise = eps + N, *hist = noise + N;
    if (guided) {
        memcpy(ehs, uncond, ND * sizeof(float));
        memcpy(ehs + ND, cond, ND * sizeof(float));
    } else {
        memcpy(ehs, cond, ND * sizeof(float));
    }
    for (size_t i = 0; i < N; i++) latents[i] *= smp.init_noise_sigma;
    SlSamplerState state;
    sl_sampler_state_init(&state, hist, N);
    for (int i = 0; i < smp.n_steps && !st; i++) {
        sl_sampler_scale_model_input(&smp, xin, latents, N, i);
        if (guided) memcpy(xin + N, xin, N * sizeof(float));
        for (int64_t b = 0; b < BB; b++) tt[b] = (float)smp.timesteps[i];
        sl_unet_forward(u, mout, xin, tt, ehs);
        if (guided) sl_cfg_combine(eps, mout, mout + N, o->guidance, N);
        else memcpy(eps, mout, N * sizeof(float));
        const float *nz = NULL;
        if (sl_sampler_needs_noise(&smp, i)) {
            sl_rng_normal(noise, (int64_t)N, o->seed, 1 + (uint64_t)i, 0);
            nz = noise;
        }
        st = sl_sampler_step(&smp, &state, latents, eps, i, latents, nz, N, ctx);
        if (!st && sl_count_nonfinite(latents, N))
            st = sl_fail(ctx, SL_ERR_NUMERIC, "sampling step %d of %d (t=%g) produced non-finite latents", i + 1,
                         smp.n_steps, smp.timesteps[i]);
        if (!st && o->on_step) o->on_step(o->user, i, smp.n_steps, latents);
    }
    sl_free(buf);
    sl_sampler_free(&smp);
    return st;
}
