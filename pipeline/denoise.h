/* denoise.h - the sampling loop: U-Net + sampler + classifier-free guidance.
 *
 * Each step runs the U-Net once on a batch of 2B (uncond then cond, as
 * diffusers concatenates them) when guidance is on, or on B without it
 * (guidance 1 or no uncond), combines, and steps the sampler. Ancestral /
 * eta > 0 noise for step i comes from the counter RNG (seed, stream 1 + i), so
 * a seed gives the same image whatever the thread count.
 *
 * Dimension letters: B images, C latent channels, h/w latent size, T tokens,
 * D text width.
 */
#ifndef SL_PIPELINE_DENOISE_H
#define SL_PIPELINE_DENOISE_H

#include <stdint.h>

#include "core/status.h"
#include "pipeline/sampler.h"
#include "unet/unet.h"

typedef struct SlDenoiseOpts {
    SlSamplerOpts sampler;
    int steps;
    float guidance;            /* CFG scale; <= 1 disables the uncond pass */
    uint64_t seed;             /* for ancestral / eta noise */
    /* called after each step with the current latents [B,C,h,w]; may be NULL */
    void (*on_step)(void *user, int step, int n_steps, const float *latents);
    void *user;
} SlDenoiseOpts;

/* latents [B,C,h,w]: in, standard-normal initial noise (scaled here by the
 * sampler's init_noise_sigma); out, the denoised latents (before the VAE).
 * cond/uncond [B,T,D] (uncond may be NULL when guidance <= 1). The U-Net is
 * (re)planned for this size. Fails on non-finite latents, naming the step. */
SlStatus sl_denoise(SlUNet *u, const SlSchedule *sched, float *latents, const float *cond, const float *uncond,
                    int64_t B, int64_t h, int64_t w, int64_t T, const SlDenoiseOpts *opts, SlCtx *ctx);

#endif
