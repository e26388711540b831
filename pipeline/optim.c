/* optim.c - AdamW, schedules, clipping; see optim.h. */
#include "pipeline/optim.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

SlAdamWConfig sl_adamw_defaults(void) {
    SlAdamWConfig c = {0.9f, 0.999f, 1e-8f, 1e-2f};
    return c;
}

SlStatus sl_adamw_init(SlAdamW *o, const SlParamRef *params, int n, const SlAdamWConfig *cfg, SlCtx *ctx) {
    memset(o, 0, sizeof *o);
    o->cfg = *cfg;
    if (!(cfg->beta1 >= 0 && cfg->beta1 < 1 && cfg->beta2 >= 0 && cfg->beta2 < 1 && cfg->eps > 0 && cfg->weight_decay >= 0))
        return sl_fail(ctx, SL_ERR_ARG, "AdamW: betas must be in [0,1), eps > 0, weight decay >= 0");
    size_t total = 0;
    for (int i = 0; i < n; i++) total += 2 * sl_align_up((size_t)params[i].n * sizeof(float));
    o->params = malloc((size_t)(n ? n : 1) * sizeof *o->params);
    o->m = malloc((size_t)(n ? n : 1) * sizeof(float *));
    o->v = malloc((size_t)(n ? n : 1) * sizeof(float *));
    if (!o->params || !o->m || !o->v) { sl_adamw_free(o); return sl_fail(ctx, SL_ERR_NOMEM, "AdamW: out of memory"); }
    SlStatus st = sl_arena_init(&o->state, total, "optimizer state", ctx);
    if (st) { sl_adamw_free(o); return st; }
    for (int i = 0; i < n; i++) {
        o->params[i] = params[i];
        o->m[i] = sl_arena_take_f32(&o->state, params[i].n);
        o->v[i] = sl_arena_take_f32(&o->state, params[i].n);
    }
    o->n_params = n;
    return SL_OK;
}

void sl_adamw_free(SlAdamW *o) {
    sl_arena_free(&o->state);
    free(o->params);
    free(o->m);
    free(o->v);
    memset(o, 0, sizeof *o);
}

size_t sl_adamw_state_bytes(const SlAdamW *o) { return o->state.used; }

void sl_adamw_step(SlAdamW *o, float lr) {
    o->step++;
    const float b1 = o->cfg.beta1, b2 = o->cfg.beta2, eps = o->cfg.eps;
    /* torch 1.13 _single_tensor_adamw, in float32 except the bias corrections (Python floats) */
    const double bc1 = 1.0 - pow((double)b1, (double)o->step), bc2 = 1.0 - pow((double)b2, (double)o->step);
    const float step_size = (float)(lr / bc1), bc2_sqrt = (float)sqrt(bc2);
    for (int p = 0; p < o->n_params; p++) {
        float *w = o->params[p].w, *m = o->m[p], *v = o->v[p];
        const float *g = o->params[p].g;
        const float decay = o->params[p].decay ? (float)(1.0 - (double)lr * o->cfg.weight_decay) : 1.0f;
        const int64_t n = o->params[p].n;
#pragma omp parallel for schedule(static) if (n > 65536)
        for (int64_t i = 0; i < n; i++) {
            float wi = w[i] * decay;
            float mi = m[i] * b1 + g[i] * (1.0f - b1);
            float vi = v[i] * b2 + g[i] * g[i] * (1.0f - b2);
            float denom = sqrtf(vi) / bc2_sqrt + eps;
            w[i] = wi - step_size * (mi / denom);
            m[i] = mi;
            v[i] = vi;
        }
    }
}

double sl_grad_global_norm(const SlParamRef *p, int n) {
    /* fixed 4096-element chunks, partial sums in double added in chunk order:
     * the same bits for any thread count */
    enum { CHUNK = 4096, GROUP = 256 };
    double total = 0;
    for (int t = 0; t < n; t++) {
        const float *g = p[t].g;
        const int64_t len = p[t].n, nch = (len + CHUNK - 1) / CHUNK;
        for (int64_t c0 = 0; c0 < nch; c0 += GROUP) {
            double part[GROUP];
            int64_t nc = nch - c0 < GROUP ? nch - c0 : GROUP;
#pragma omp parallel for schedule(static) if (nc > 8)
            for (int64_t c = 0; c < nc; c++) {
                int64_t b = (c0 + c) * CHUNK, e = b + CHUNK < len ? b + CHUNK : len;
                double s = 0;
                for (int64_t i = b; i < e; i++) s += (double)g[i] * g[i];
                part[c] = s;
            }
            for (int64_t c = 0; c < nc; c++) total += part[c];
        }
    }
    return sqrt(total);
}

double sl_grad_clip(SlParamRef *p, int n, double max_norm) {
    double norm = sl_grad_global_norm(p, n);
    double coef = max_norm / (norm + 1e-6);
    if (coef < 1.0) {
        float c = (float)coef;
        for (int t = 0; t < n; t++)
            for (int64_t i = 0; i < p[t].n; i++) p[t].g[i] *= c;
    }
    return norm;
}

int sl_grad_first_nonfinite(const SlParamRef *p, int n) {
    for (int t = 0; t < n; t++)
        if (sl_count_nonfinite(p[t].g, (size_t)p[t].n)) return t;
    return -1;
}

static const char *k_lr_names[] = {"constant", "constant_with_warmup", "linear", "cosine"};

int sl_lr_schedule_from_name(const char *s, SlLrSchedule *out) {
    for (int i = 0; i < 4; i++)
        if (strcmp(s, k_lr_names[i]) == 0) { *out = (SlLrSchedule)i; return 1; }
    return 0;
}

const char *sl_lr_schedule_name(SlLrSchedule s) { return (unsigned)s < 4 ? k_lr_names[s] : "?"; }

float sl_lr_at(SlLrSchedule s, float base_lr, int64_t step, int64_t warmup, int64_t total) {
    double f = 1.0;
    if (s != SL_LR_CONSTANT && step < warmup) {
        f = (double)step / (double)(warmup > 1 ? warmup : 1);
    } else if (s == SL_LR_LINEAR) {
        double d = (double)(total - warmup > 1 ? total - warmup : 1);
        f = fmax(0.0, (double)(total - step) / d);
    } else if (s == SL_LR_COSINE) { /* num_cycles 0.5 */
        double d = (double)(total - warmup > 1 ? total - warmup : 1);
        double progress = (double)(step - warmup) / d;
        f = fmax(0.0, 0.5 * (1.0 + cos(M_PI * 0.5 * 2.0 * progress)));
    }
    return (float)(base_lr * f);
}
