/* module.c - Linear / Conv2d modules with the adapter hook of module.h.
 *
 * The order of operations (base, hook, bias) is the contract documented in
 * module.h; this file only wires it to the nn.h kernels.
 */
#include "module.h"

#include <assert.h>

/* ---- Linear ---- */

/* The dense base product: fp32 m->w, or the frozen 16-bit m->w16 (binary16 or bfloat16). */
static void lin_dense_forward(const SlLinear *m, float *out, const float *in, const float *b, int64_t N) {
    if (!m->w && m->w16 && m->w16_bf16)
        sl_linear_forward_bf16(out, in, m->w16, b, N, m->I, m->O, &m->kern);
    else if (!m->w && m->w16)
        sl_linear_forward_f16(out, in, m->w16, b, N, m->I, m->O, &m->kern);
    else
        sl_linear_forward(out, in, m->w, b, N, m->I, m->O, &m->kern);
}

/* din += g W, dw += g^T x, db += sum g (each when non-NULL). */
static void lin_dense_backward(const SlLinear *m, float *din, float *dw, float *db, const float *g, const float *in,
                               int64_t N) {
    if (!m->w && m->w16) {
        assert(!dw && "a 16-bit base is frozen");
        if (db) sl_linear_backward(NULL, NULL, db, g, in, NULL, N, m->I, m->O, &m->kern);
        if (m->w16_bf16) sl_linear_backward_input_bf16(din, g, m->w16, N, m->I, m->O, &m->kern);
        else sl_linear_backward_input_f16(din, g, m->w16, N, m->I, m->O, &m->kern);
        return;
    }
    sl_linear_backward(din, dw, db, g, in, m->w, N, m->I, m->O, &m->kern);
}

void sl_linmod_forward(const SlLinear *m, float *out, const float *in, int64_t N) {
    SlHook *h = m->hook;
    if (!h) {
        lin_dense_forward(m, out, in, m->b, N);
        return;
    }
    if (h->ops->lin_base_forward)
        h->ops->lin_base_forward(h, m, out, in, N);
    else
        lin_dense_forward(m, out, in, NULL, N);
    if (h->ops->lin_forward) h->ops->lin_forward(h, m, out, in, N);
    if (m->b)
        for (int64_t n = 0; n < N; n++) {
            float *y = out + n * m->O;
            for (int64_t o = 0; o < m->O; o++) y[o] += m->b[o];
        }
}

void sl_linmod_backward(const SlLinear *m, float *din, const float *dout, const float *in, int64_t N) {
    SlHook *h = m->hook;
    if (!h) {
        lin_dense_backward(m, din, m->dw, m->db, dout, in, N);
        return;
    }
    if (m->db) sl_linear_backward(NULL, NULL, m->db, dout, in, m->w, N, m->I, m->O, &m->kern);
    const float *g = dout;
    if (h->ops->lin_backward) {
        const float *r = h->ops->lin_backward(h, m, din, dout, in, N);
        if (r) g = r;
    }
    if (h->ops->lin_base_forward) {
        assert(!m->dw && "a replaced base is frozen");
        if (din && h->ops->lin_base_backward_input) h->ops->lin_base_backward_input(h, m, din, g, N);
    } else {
        lin_dense_backward(m, din, m->dw, NULL, g, in, N);
    }
}

/* ---- Conv2d ---- */

SlConvDims sl_convmod_dims(const SlConv2d *m, int64_t B, int64_t H, int64_t W) {
    return sl_conv_dims(B, m->Ci, H, W, m->Co, m->k, m->stride, m->pad, m->pad, m->pad, m->pad);
}

size_t sl_convmod_workspace(const SlConv2d *m, int64_t B, int64_t H, int64_t W) {
    SlConvDims d = sl_convmod_dims(m, B, H, W);
    return sl_conv2d_workspace(&d);
}

/* The dense base convolution: fp32 m->w, or the frozen 16-bit m->w16 (binary16 or bfloat16). */
static void conv_dense_forward(const SlConv2d *m, float *out, const float *in, const float *b, const SlConvDims *d,
                               float *work) {
    if (!m->w && m->w16 && m->w16_bf16)
        sl_conv2d_forward_bf16(out, in, m->w16, b, d, work, &m->kern);
    else if (!m->w && m->w16)
        sl_conv2d_forward_f16(out, in, m->w16, b, d, work, &m->kern);
    else
        sl_conv2d_forward(out, in, m->w, b, d, work, &m->kern);
}

static void conv_dense_backward(const SlConv2d *m, float *din, float *dw, float *db, const float *g, const float *in,
                                const SlConvDims *d, float *work) {
    if (!m->w && m->w16) {
        assert(!dw && "a 16-bit base is frozen");
        if (db) sl_conv2d_backward(NULL, NULL, db, g, in, NULL, d, work, &m->kern);
        if (din && m->w16_bf16) sl_conv2d_backward_input_bf16(din, g, m->w16, d, work, &m->kern);
        else if (din) sl_conv2d_backward_input_f16(din, g, m->w16, d, work, &m->kern);
        return;
    }
    sl_conv2d_backward(din, dw, db, g, in, m->w, d, work, &m->kern);
}

void sl_convmod_forward(const SlConv2d *m, float *out, const float *in, int64_t B, int64_t H,
                        int64_t W, float *work) {
    SlConvDims d = sl_convmod_dims(m, B, H, W);
    SlHook *h = m->hook;
    if (!h) {
        conv_dense_forward(m, out, in, m->b, &d, work);
        return;
    }
    if (h->ops->conv_base_forward)
        h->ops->conv_base_forward(h, m, out, in, &d, work);
    else
        conv_dense_forward(m, out, in, NULL, &d, work);
    if (h->ops->conv_forward) h->ops->conv_forward(h, m, out, in, &d, work);
    if (m->b) {
        const int64_t P = d.Ho * d.Wo;
        for (int64_t b = 0; b < B; b++)
            for (int64_t c = 0; c < m->Co; c++) {
                float *y = out + (b * m->Co + c) * P;
                for (int64_t p = 0; p < P; p++) y[p] += m->b[c];
            }
    }
}

void sl_convmod_backward(const SlConv2d *m, float *din, const float *dout, const float *in,
                         int64_t B, int64_t H, int64_t W, float *work) {
    SlConvDims d = sl_convmod_dims(m, B, H, W);
    SlHook *h = m->hook;
    if (!h) {
        conv_dense_backward(m, din, m->dw, m->db, dout, in, &d, work);
        return;
    }
    if (m->db) sl_conv2d_backward(NULL, NULL, m->db, dout, in, m->w, &d, work, &m->kern);
    const float *g = dout;
    if (h->ops->conv_backward) {
        const float *r = h->ops->conv_backward(h, m, din, dout, in, &d, work);
        if (r) g = r;
    }
    if (h->ops->conv_base_forward) {
        assert(!m->dw && "a replaced base is frozen");
        if (din && h->ops->conv_base_backward_input)
            h->ops->conv_base_backward_input(h, m, din, g, &d, work);
    } else {
        conv_dense_backward(m, din, m->dw, NULL, g, in, &d, work);
    }
}
