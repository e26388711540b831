/* unet_backward.c - backward of the U-Net, walking the layer list in reverse.
 *
 * Every layer's output has a gradient buffer (layer->dout) that its readers
 * accumulate into; the walk zeroes them all first, then each layer turns its
 * dout into gradients of its inputs (its sources' dout), its weights (when
 * dw/db are set) and its hooks. silu(emb) is shared by every resnet: its
 * gradient is summed across them and the time embedding is walked last.
 * The gradient to encoder_hidden_states is computed only when u->dehs is set.
 *
 * With checkpointing, a module's internal caches were overwritten by later
 * modules: its forward is run again (rewriting its own output with the same
 * values and refreshing hook caches) right before its backward.
 *
 * Scratch: u->scratch[0..5], each max_act floats, reused layer by layer.
 * Dimension letters as in unet.h.
 */
#include <assert.h>
#include <math.h>
#include <string.h>

#include "unet.h"
#include "unet_internal.h"

static void zero(float *p, int64_t n) { memset(p, 0, sizeof(float) * (size_t)n); }

static void resnet_backward(SlUNet *u, SlUNetResnet *r) {
    const int64_t B = u->B, S = r->H * r->W, nI = B * r->Ci * S, nO = B * r->Co * S;
    float *da2 = u->scratch[0], *dn2 = u->scratch[1], *dh1 = u->scratch[2], *dte = u->scratch[3];
    /* out = shortcut(in) + conv2(silu(gn2(h1))) */
    if (r->has_shortcut)
        sl_convmod_backward(&r->shortcut, r->din, r->dout, r->in, B, r->H, r->W, u->work);
    else
        sl_axpy(r->din, 1.0f, r->dout, nO);
    zero(da2, nO);
    sl_convmod_backward(&r->conv2, da2, r->dout, r->a2, B, r->H, r->W, u->work);
    zero(dn2, nO);
    sl_silu_backward(dn2, da2, r->n2, nO);
    zero(dh1, nO);
    sl_groupnorm_backward(dh1, r->norm2.dg, r->norm2.db, dn2, r->h1, r->norm2.g, r->mean2, r->rstd2, B, r->Co, S,
                          r->norm2.G);
    /* h1 = conv1(silu(gn1(in))) + temb_proj(silu(emb))[:, :, None, None] */
    for (int64_t b = 0; b < B; b++)
        for (int64_t c = 0; c < r->Co; c++) {
            const float *g = dh1 + (b * r->Co + c) * S;
            double s = 0;
            for (int64_t k = 0; k < S; k++) s += g[k];
            dte[b * r->Co + c] = (float)s;
        }
    sl_linmod_backward(&r->temb, u->demb_act, dte, u->emb_act, B);
    float *da1 = u->scratch[0], *dn1 = u->scratch[1];
    zero(da1, nI);
    sl_convmod_backward(&r->conv1, da1, dh1, r->a1, B, r->H, r->W, u->work);
    zero(dn1, nI);
    sl_silu_backward(dn1, da1, r->n1, nI);
    sl_groupnorm_backward(r->din, r->norm1.dg, r->norm1.db, dn1, r->in, r->norm1.g, r->mean1, r->rstd1, B, r->Ci,
                          S, r->norm1.G);
}

/* dh [N,C]: on entry the gradient of the block output, on exit of its input x. */
static void tblock_backward(SlUNet *u, SlUNetTransformer *t, SlUNetTBlock *b, float *dh) {
    const int64_t B = u->B, S = t->H * t->W, C = t->C, N = B * S, NH = t->heads, HD = C / NH, T = u->T;
    const float scale = 1.0f / sqrtf((float)HD);
    float *s1 = u->scratch[1], *s2 = u->scratch[2], *s3 = u->scratch[3], *s4 = u->scratch[4],
          *s5 = u->scratch[5];
    /* y = xb + ff2(geglu(ff1(ln3(xb)))) */
    zero(s1, N * 4 * C);
    sl_linmod_backward(&b->ff2, s1, dh, b->gg, N);
    zero(s2, N * 8 * C);
    sl_geglu_backward(s2, s1, b->f1, N, 4 * C);
    zero(s1, N * C);
    sl_linmod_backward(&b->ff1, s1, s2, b->n3, N);
    sl_layernorm_backward(dh, b->ln3.dg, b->ln3.db, s1, b->xb, b->ln3.g, b->m3, b->r3, N, C);
    /* xb = xa + o2(attn(q2(ln2(xa)), k2(ehs), v2(ehs))) */
    zero(s1, N * C);
    sl_linmod_backward(&b->o2, s1, dh, b->at2, N);
    zero(s2, N * C);
    zero(s3, B * T * C);
    zero(s4, B * T * C);
    sl_attention_backward(s2, s3, s4, s1, b->qq2, b->kk2, b->vv2, b->at2, b->lse2, B, S, T, NH, HD, scale, 0,
                          u->work);
    sl_linmod_backward(&b->k2, u->dehs, s3, u->ehs, B * T);
    sl_linmod_backward(&b->v2, u->dehs, s4, u->ehs, B * T);
    zero(s5, N * C);
    sl_linmod_backward(&b->q2, s5, s2, b->n2, N);
    sl_layernorm_backward(dh, b->ln2.dg, b->ln2.db, s5, b->xa, b->ln2.g, b->m2, b->r2, N, C);
    /* xa = x + o1(attn(q1(n1), k1(n1), v1(n1))), n1 = ln1(x) */
    zero(s1, N * C);
    sl_linmod_backward(&b->o1, s1, dh, b->at1, N);
    zero(s2, N * C);
    zero(s3, N * C);
    zero(s4, N * C);
    sl_attention_backward(s2, s3, s4, s1, b->qq1, b->kk1, b->vv1, b->at1, b->lse1, B, S, S, NH, HD, scale, 0,
                          u->work);
    zero(s5, N * C);
    sl_linmod_backward(&b->q1, s5, s2, b->n1, N);
    sl_linmod_backward(&b->k1, s5, s3, b->n1, N);
    sl_linmod_backward(&b->v1, s5, s4, b->n1, N);
    sl_layernorm_backward(dh, b->ln1.dg, b->ln1.db, s5, b->x, b->ln1.g, b->m1, b->r1, N, C);
}

static void transformer_backward(SlUNet *u, SlUNetTransformer *t) {
    const int64_t B = u->B, S = t->H * t->W, C = t->C, N = B * S;
    float *dh = u->scratch[0], *tmp = u->scratch[1];
    /* out = in + transpose(proj_out(blocks(proj_in(transpose(gn(in)))))) */
    sl_axpy(t->din, 1.0f, t->dout, N * C);
    sl_transpose_cs_sc(tmp, t->dout, B, C, S);
    zero(dh, N * C);
    sl_linmod_backward(&t->proj_out, dh, tmp, t->hout, N);
    for (int64_t i = t->n_tblocks - 1; i >= 0; i--) tblock_backward(u, t, &t->tb[i], dh);
    zero(tmp, N * C);
    sl_linmod_backward(&t->proj_in, tmp, dh, t->tok, N);
    float *dgn = u->scratch[2];
    sl_transpose_sc_cs(dgn, tmp, B, C, S);
    sl_groupnorm_backward(t->din, t->norm.dg, t->norm.db, dgn, t->in, t->norm.g, t->mean, t->rstd, B, C, S,
                          t->norm.G);
}

static void sampler_backward(SlUNet *u, SlUNetSampler *s) {
    if (s->up) {
        float *du = u->scratch[0];
        zero(du, u->B * s->C * 4 * s->H * s->W);
        sl_convmod_backward(&s->conv, du, s->dout, s->u, u->B, 2 * s->H, 2 * s->W, u->work);
        sl_upsample_nearest2x_backward(s->din, du, u->B, s->C, s->H, s->W);
    } else {
        sl_convmod_backward(&s->conv, s->din, s->dout, s->in, u->B, s->H, s->W, u->work);
    }
}

static void concat_backward(SlUNet *u, SlUNetConcat *k) {
    for (int64_t b = 0; b < u->B; b++) {
        sl_axpy(k->da + b * k->Ca * k->S, 1.0f, k->dout + b * (k->Ca + k->Cb) * k->S, k->Ca * k->S);
        sl_axpy(k->db + b * k->Cb * k->S, 1.0f, k->dout + (b * (k->Ca + k->Cb) + k->Ca) * k->S, k->Cb * k->S);
    }
}

void sl_unet_backward(SlUNet *u, float *dsample, const float *dout) {
    assert(!u->planned_inference && "sl_unet_backward after an inference plan");
    if (u->planned_inference) return; /* no gradient buffers were planned */
    const SlUNetConfig *c = &u->cfg;
    const int64_t B = u->B, c0 = c->block_out[0], td = c->time_dim, H = u->H, W = u->W;
    for (int i = 0; i < u->n_layers; i++) {
        SlUNetLayer *l = &u->layers[i];
        if (l->kind != SL_UL_OUT)
            zero(l->dout, B * l->C * sl_unet_layer_h(u, l) * sl_unet_layer_w(u, l));
    }
    zero(u->demb_act, B * td);
    for (int i = u->n_layers - 1; i >= 0; i--) {
        SlUNetLayer *l = &u->layers[i];
        switch (l->kind) {
        case SL_UL_OUT: {
            const int64_t n = B * c0 * H * W;
            float *da = u->scratch[0], *dn = u->scratch[1];
            zero(da, n);
            sl_convmod_backward(&u->conv_out, da, dout, u->no_act, B, H, W, u->work);
            zero(dn, n);
            sl_silu_backward(dn, da, u->no, n);
            SlUNetLayer *s = &u->layers[l->src];
            sl_groupnorm_backward(s->dout, u->norm_out.dg, u->norm_out.db, dn, s->out, u->norm_out.g, u->no_mean,
                                  u->no_rstd, B, c0, H * W, u->norm_out.G);
            break;
        }
        case SL_UL_CONCAT:
            concat_backward(u, &u->cat[l->index]);
            break;
        case SL_UL_SAMPLER:
            if (u->checkpoint && u->smp[l->index].up) sl_unet_sampler_forward(u, &u->smp[l->index]);
            sampler_backward(u, &u->smp[l->index]);
            break;
        case SL_UL_TRANSFORMER:
            if (u->checkpoint) sl_unet_transformer_forward(u, &u->tr[l->index]);
            transformer_backward(u, &u->tr[l->index]);
            break;
        case SL_UL_RESNET:
            if (u->checkpoint) sl_unet_resnet_forward(u, &u->res[l->index]);
            resnet_backward(u, &u->res[l->index]);
            break;
        case SL_UL_CONV_IN:
            sl_convmod_backward(&u->conv_in, dsample, l->dout, u->sample, B, H, W, u->work);
            break;
        }
    }
    /* emb_act = silu(linear_2(silu(linear_1(tsin)))) */
    float *de = u->scratch[0], *dt1a = u->scratch[1], *dt1 = u->scratch[2];
    zero(de, B * td);
    sl_silu_backward(de, u->demb_act, u->emb, B * td);
    zero(dt1a, B * td);
    sl_linmod_backward(&u->time2, dt1a, de, u->t1a, B);
    zero(dt1, B * td);
    sl_silu_backward(dt1, dt1a, u->t1, B * td);
    sl_linmod_backward(&u->time1, NULL, dt1, u->tsin, B);
}
