/* test_conv_implicit.c - the implicit-im2col convolution forward (nn/conv2d.c:
 * sl_gemm_op gathers the column matrix's panels straight from the image) gives
 * exactly the bytes of the banded explicit im2col path (SlKernels.conv = IM2COL),
 * on the VAE's and U-Net's geometries (3x3 stride 1 at several widths, stride-2
 * downsamples with symmetric and asymmetric padding, widths not a multiple of the
 * 32-pixel panel, outputs cut into several im2col bands, few output channels so
 * that the explicit path reads its columns in place), with and without bias, with
 * 1 and 2 threads, on each GEMM kernel; binary16 weights (sl_conv2d_forward_f16)
 * give the fp32 bytes on the widened weights; and both paths stay within tolerance
 * of the double-accumulating reference twin.
 */
#include <math.h>
#include <omp.h>
#include <stdint.h>
#include <string.h>

#include "nn/gemm.h"
#include "nn_test_common.h"

typedef struct Geo {
    const char *name;
    int64_t B, Ci, H, W, Co, k, stride, pt, pl, pb, pr;
    int ref; /* also check against sl_conv2d_forward_ref (cheap enough) */
} Geo;

static void check_geo(int kernel, const Geo *g, uint64_t *rng) {
    const SlKernels explicit_k = {kernel, SL_CONV_KERNEL_IM2COL, 0}, implicit_k = {kernel, SL_CONV_KERNEL_AUTO, 0};
    const SlConvDims d = sl_conv_dims(g->B, g->Ci, g->H, g->W, g->Co, g->k, g->stride, g->pt, g->pl, g->pb, g->pr);
    const int64_t nx = d.B * d.Ci * d.H * d.W, ny = d.B * d.Co * d.Ho * d.Wo, nw = d.Co * d.Ci * d.kh * d.kw;
    float *x = nt_randn_new(nx, rng, 0.0, 1.0), *w = nt_randn_new(nw, rng, 0.0, 0.1);
    float *b = nt_randn_new(d.Co, rng, 0.0, 0.1);
    uint16_t *wh = sl_alloc((size_t)nw * sizeof(uint16_t));
    if (!wh) exit(2);
    sl_f32_to_f16(wh, w, (size_t)nw);
    sl_f16_to_f32(w, wh, (size_t)nw); /* w: exactly the halves' values */
    float *work = nt_zeros((int64_t)sl_conv2d_workspace(&d) + 1);
    float *ye = nt_zeros(ny), *yi = nt_zeros(ny), *yr = nt_zeros(ny);
    const int saved = omp_get_max_threads();
    for (int bias = 0; bias < 2; bias++) {
        const float *bp = bias ? b : NULL;
        sl_conv2d_forward(ye, x, w, bp, &d, work, &explicit_k);
        for (int th = 1; th <= 2; th++) {
            omp_set_num_threads(th);
            for (int64_t i = 0; i < ny; i++) yi[i] = NAN; /* every output must be written */
            sl_conv2d_forward(yi, x, w, bp, &d, work, &implicit_k);
            CHECK(memcmp(ye, yi, sizeof(float) * (size_t)ny) == 0,
                  "%s kernel %d bias %d threads %d: implicit im2col differs from the explicit path", g->name,
                  kernel, bias, th);
            for (int64_t i = 0; i < ny; i++) yi[i] = NAN;
            sl_conv2d_forward_f16(yi, x, wh, bp, &d, work, &implicit_k);
            CHECK(memcmp(ye, yi, sizeof(float) * (size_t)ny) == 0,
                  "%s kernel %d bias %d threads %d: binary16 weights differ from fp32 on the widened weights",
                  g->name, kernel, bias, th);
        }
        omp_set_num_threads(saved);
        if (g->ref) {
            sl_conv2d_forward_ref(yr, x, w, bp, &d, NULL);
            char what[160];
            snprintf(what, sizeof what, "%s kernel %d bias %d vs the reference twin", g->name, kernel, bias);
            /* sums of K = Ci*k*k products of N(0,1) x N(0,0.01) terms in fp32 */
            const double K = (double)(d.Ci * d.kh * d.kw);
            sl_test_close(what, yi, yr, (size_t)ny, 2e-7 * K + 1e-6, 1e-5);
        }
    }
    sl_free(x); sl_free(w); sl_free(b); sl_free(wh); sl_free(work); sl_free(ye); sl_free(yi); sl_free(yr);
}

int main(void) {
    const Geo geos[] = {
        /* VAE decoder, channels cut down, spatial sizes of a 256 px decode */
        {"vae 3x3 32px", 1, 64, 32, 32, 96, 3, 1, 1, 1, 1, 1, 1},
        {"vae 3x3 64px", 1, 32, 64, 64, 40, 3, 1, 1, 1, 1, 1, 1},
        {"vae 3x3 256px", 1, 16, 256, 256, 24, 3, 1, 1, 1, 1, 1, 0},
        {"vae conv_out 256px (3 channels: few rows)", 1, 32, 256, 256, 3, 3, 1, 1, 1, 1, 1, 0},
        {"vae 3x3 128px, several im2col bands", 1, 128, 128, 128, 8, 3, 1, 1, 1, 1, 1, 1},
        {"vae encoder downsample (pad right/bottom only)", 1, 16, 64, 64, 32, 3, 2, 0, 0, 1, 1, 1},
        /* U-Net at 512 px (64x64 latent) and smaller */
        {"unet 3x3 64 latent", 2, 8, 64, 64, 20, 3, 1, 1, 1, 1, 1, 1},
        {"unet downsample 64->32", 1, 24, 64, 64, 30, 3, 2, 1, 1, 1, 1, 1},
        {"unet downsample 32->16", 1, 40, 32, 32, 36, 3, 2, 1, 1, 1, 1, 1},
        {"unet 3x3 16 latent (2 rows per panel)", 1, 40, 16, 16, 50, 3, 1, 1, 1, 1, 1, 1},
        {"unet 3x3 8 latent (explicit: too few columns)", 1, 40, 8, 8, 50, 3, 1, 1, 1, 1, 1, 1},
        {"unet 3x3 8 latent, batch 2 (one product for the batch)", 2, 40, 8, 8, 50, 3, 1, 1, 1, 1, 1, 1},
        {"unet 3x3 4 latent, batch 7 (batched), odd channels", 7, 13, 4, 4, 37, 3, 1, 1, 1, 1, 1, 1},
        {"unet downsample 8->4, batch 2 (too narrow even batched)", 2, 24, 8, 8, 30, 3, 2, 1, 1, 1, 1, 1},
        /* odd widths and shapes */
        {"13x40 stride 2", 2, 5, 13, 40, 17, 3, 2, 1, 1, 1, 1, 1},
        {"25x21 3x3", 1, 7, 25, 21, 33, 3, 1, 1, 1, 1, 1, 1},
        {"5x5 kernel pad 2 at 19x50", 1, 6, 19, 50, 14, 5, 1, 2, 2, 2, 2, 1},
        {"2x2 kernel stride 2 no pad", 1, 9, 30, 62, 11, 2, 2, 0, 0, 0, 0, 1},
        {"1x1 (pointwise)", 1, 16, 20, 20, 12, 1, 1, 0, 0, 0, 0, 1},
        {"1x1 stride 2", 1, 16, 21, 40, 12, 1, 2, 0, 0, 0, 0, 1},
        {"3x3 pad 0 at 40x70", 1, 6, 40, 70, 13, 3, 1, 0, 0, 0, 0, 1},
    };
    const int kernels[] = {SL_GEMM_KERNEL_BLAS, SL_GEMM_KERNEL_AVX512};
    uint64_t rng = 777;
    for (size_t ki = 0; ki < 2; ki++) {
        const SlKernels k = {kernels[ki], 0, 0};
        if (!sl_kernels_available(&k)) {
            printf("kernel %s not available on this CPU: skipped\n", sl_kernels_name("gemm", kernels[ki]));
            continue;
        }
        for (size_t gi = 0; gi < sizeof geos / sizeof geos[0]; gi++) check_geo(kernels[ki], &geos[gi], &rng);
    }
    /* the gathered path needs the AVX-512 GEMM and is off when im2col is asked for */
    const SlKernels avx = {SL_GEMM_KERNEL_AVX512, 0, 0}, avx_i2c = {SL_GEMM_KERNEL_AVX512, SL_CONV_KERNEL_IM2COL, 0},
                    blas = {SL_GEMM_KERNEL_BLAS, 0, 0};
    CHECK(sl_kernels_conv_implicit(&avx) == sl_kernels_available(&avx), "implicit conv iff the AVX-512 GEMM runs");
    CHECK(!sl_kernels_conv_implicit(&avx_i2c) && !sl_kernels_conv_implicit(&blas),
          "im2col asked for, or the BLAS GEMM: never implicit");
    printf("%d checks, %d failures\n", sl_test_checks, sl_test_failures);
    return sl_test_failures ? 1 : 0;
}
