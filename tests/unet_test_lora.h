/* unet_test_lora.h - a LoRA hook written inside the tests (the real one lives in styles/).
 *
 * y = W x + b + s * B (A x), A [r,I], B [O,r], s = alpha / r, as PEFT's
 * lora.Linear without dropout. It proves the nn/module.h hook contract: the
 * forward keeps A x for backward, backward accumulates dA, dB and adds its
 * share to din, and returns NULL (the base sees dout unchanged).
 */
#ifndef SL_UNET_TEST_LORA_H
#define SL_UNET_TEST_LORA_H

#include <stdlib.h>
#include <string.h>

#include "nn/module.h"

typedef struct TestLora {
    SlHook hook;
    int64_t r, in_f, out_f, max_n;
    float s;
    float *A, *B;     /* [r,I], [O,r] */
    float *dA, *dB;   /* same */
    float *ax, *dax;  /* [max_n, r] */
} TestLora;

/* c[M,N] (+)= alpha * op(a) op(b), row-major, plain loops (tests only; avoids cblas.h's I macro). */
static void test_gemm(int ta, int tb, int64_t M, int64_t N, int64_t K, float alpha, const float *a, const float *b,
                      int accumulate, float *c) {
    for (int64_t i = 0; i < M; i++)
        for (int64_t j = 0; j < N; j++) {
            double s = 0;
            for (int64_t k = 0; k < K; k++) {
                float av = ta ? a[k * M + i] : a[i * K + k];
                float bv = tb ? b[j * K + k] : b[k * N + j];
                s += (double)av * bv;
            }
            c[i * N + j] = (accumulate ? c[i * N + j] : 0.0f) + alpha * (float)s;
        }
}

static void test_lora_fwd(SlHook *h, const SlLinear *m, float *y, const float *x, int64_t N) {
    TestLora *L = (TestLora *)h->self;
    if (N > L->max_n || m->I != L->in_f || m->O != L->out_f) abort();
    test_gemm(0, 1, N, L->r, L->in_f, 1.0f, x, L->A, 0, L->ax);    /* ax [N,r] = x A^T */
    test_gemm(0, 1, N, L->out_f, L->r, L->s, L->ax, L->B, 1, y);   /* y [N,O] += s ax B^T */
}

static const float *test_lora_bwd(SlHook *h, const SlLinear *m, float *din, const float *dout, const float *x,
                                  int64_t N) {
    TestLora *L = (TestLora *)h->self;
    (void)m;
    test_gemm(1, 0, L->out_f, L->r, N, L->s, dout, L->ax, 1, L->dB);   /* dB [O,r] += s dout^T ax */
    test_gemm(0, 0, N, L->r, L->out_f, L->s, dout, L->B, 0, L->dax);   /* dax [N,r] = s dout B */
    test_gemm(1, 0, L->r, L->in_f, N, 1.0f, L->dax, x, 1, L->dA);      /* dA [r,I] += dax^T x */
    if (din) test_gemm(0, 0, N, L->in_f, L->r, 1.0f, L->dax, L->A, 1, din); /* din [N,I] += dax A */
    return NULL;
}

static const SlHookOps test_lora_ops = {.lin_forward = test_lora_fwd, .lin_backward = test_lora_bwd};

/* Allocates a LoRA of rank r for a module with I inputs, O outputs, at most max_n rows. */
static TestLora *test_lora_new(int64_t r, int64_t nin, int64_t nout, int64_t max_n, float s) {
    TestLora *L = calloc(1, sizeof *L);
    L->r = r;
    L->in_f = nin;
    L->out_f = nout;
    L->max_n = max_n;
    L->s = s;
    L->A = calloc((size_t)(r * nin), sizeof(float));
    L->B = calloc((size_t)(nout * r), sizeof(float));
    L->dA = calloc((size_t)(r * nin), sizeof(float));
    L->dB = calloc((size_t)(nout * r), sizeof(float));
    L->ax = calloc((size_t)(max_n * r), sizeof(float));
    L->dax = calloc((size_t)(max_n * r), sizeof(float));
    L->hook.ops = &test_lora_ops;
    L->hook.self = L;
    return L;
}

static void test_lora_free(TestLora *L) {
    if (!L) return;
    free(L->A);
    free(L->B);
    free(L->dA);
    free(L->dB);
    free(L->ax);
    free(L->dax);
    free(L);
}

#endif
