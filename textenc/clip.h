/* clip.h - the CLIP text transformer (forward only), as transformers' CLIPTextModel.
 *
 * Model (transformers modeling_clip.py, CLIPTextTransformer):
 *   x = token_embedding[ids] + position_embedding[0..T)             hidden state 0
 *   block i: x = x + out_proj(attn_causal(ln1(x)))                     (q,k,v,out: Linear D->D,
 *            x = x + fc2(act(fc1(ln2(x))))                              scale HD^-0.5)
 *                                                                       hidden state i+1
 *   last_hidden_state = final_layer_norm(x)
 *   pooler_output[b] = last_hidden_state[b, p_b], where p_b is
 *     argmax(ids[b])                 when eos_token_id == 2 (old configs whose eos id is wrong:
 *                                    the end-of-text token is the largest id; transformers 4.45)
 *     first t with ids[b,t] == eos   otherwise (0 if the row has none, as torch.argmax of zeros).
 * act is quick_gelu (x*sigmoid(1.702x), OpenAI CLIP) or exact gelu (OpenCLIP / SD 2.x).
 * No attention mask besides the causal one: Stable Diffusion never passes one.
 *
 * Weight layouts (SlClipLayout), all read through an SlWeights:
 *   HF       transformers names `text_model.*`: a diffusers `text_encoder/` folder, or an SD 1.x
 *            single file through sl_weights_view(.., SL_CKPT_TE1_PREFIX).
 *   HF_BARE  the same without `text_model.` (old SD 1.x checkpoints).
 *   OPENCLIP SD 2.x single file through sl_weights_view(.., SL_CKPT_TE2_PREFIX): token_embedding,
 *            positional_embedding, transformer.resblocks.N.{ln_1,ln_2,attn.in_proj_*,attn.out_proj,
 *            mlp.c_fc,mlp.c_proj}, ln_final. attn.in_proj_{weight,bias} stack q,k,v along dim 0 and are
 *            split on load. text_projection is not used.
 *   AUTO     picks one of the above from the token-embedding key present.
 * The mapping is a table (clip.c) of transformers name -> file name (+ row part of a stacked
 * tensor), expanded for the layer count and installed with sl_weights_set_map.
 *
 * Usage (weights are copied as F32, so w may be closed after sl_clip_load):
 *   SlClipConfig cfg; SlWeights w; SlClip *te;
 *   sl_clip_config_load(&cfg, "sd/text_encoder/config.json", ctx);
 *   sl_weights_open_dir(&w, "sd/text_encoder", ctx);
 *   sl_clip_load(&te, &cfg, &w, SL_CLIP_LAYOUT_AUTO, ctx);
 *   sl_clip_forward(te, ids, B, 77, cond, NULL, NULL, ctx);     cond [B,77,D]
 *   sl_clip_free(te); sl_weights_close(&w);
 * A single-file checkpoint has no config: take sl_clip_config_preset(SD1 | SD2), open the file
 * and load through sl_weights_view(&w, &file, SL_CKPT_TE1_PREFIX | SL_CKPT_TE2_PREFIX).
 * Clip skip k (diffusers' clip_skip = k-1): sl_clip_final_norm(hidden_states[L-k+1]), e.g. the
 * penultimate state for "clip skip 2". The SD2 preset already stops at OpenCLIP's penultimate
 * layer, so SD 2.x conditions on last_hidden_state.
 *
 * Memory: one arena for the frozen weights (planned from the config), one for the activations,
 * planned for a (B, T) capacity by sl_clip_reserve and reused until a larger (B, T) comes.
 *
 * Not here: tokenization (textenc/tokenizer.h), the text projection, backward / adapters
 * (the Linear layers are SlLinear modules, so an adapter hook can be attached later).
 *
 * Dimension letters: B batch, T tokens, D hidden size, F intermediate size, L layers,
 * NH heads, HD = D/NH head size, V vocabulary, P max positions.
 */
#ifndef SL_TEXTENC_CLIP_H
#define SL_TEXTENC_CLIP_H

#include <stdint.h>

#include "core/config.h"
#include "core/status.h"
#include "core/tensor.h"
#include "core/weights.h"
#include "nn/module.h"

typedef enum SlClipAct { SL_CLIP_ACT_QUICK_GELU = 0, SL_CLIP_ACT_GELU = 1 } SlClipAct;

typedef struct SlClipConfig {
    int64_t D;        /* hidden_size */
    int64_t F;        /* intermediate_size */
    int64_t L;        /* num_hidden_layers */
    int64_t NH;       /* num_attention_heads (divides D) */
    int64_t P;        /* max_position_embeddings */
    int64_t V;        /* vocab_size */
    SlClipAct act;    /* hidden_act */
    float eps;        /* layer_norm_eps */
    int64_t bos_id, eos_id, pad_id;
} SlClipConfig;

typedef enum SlClipLayout {
    SL_CLIP_LAYOUT_AUTO = 0,
    SL_CLIP_LAYOUT_HF,
    SL_CLIP_LAYOUT_HF_BARE,
    SL_CLIP_LAYOUT_OPENCLIP
} SlClipLayout;

typedef struct SlClipLayer {                /* prefix text_model.encoder.layers.{i}. */
    float *ln1_w, *ln1_b;                   /* [D] layer_norm1.{weight,bias} */
    SlLinear q, k, v;                       /* w [D,D], b [D] self_attn.{q,k,v}_proj.{weight,bias} */
    SlLinear o;                             /* w [D,D], b [D] self_attn.out_proj.{weight,bias} */
    float *ln2_w, *ln2_b;                   /* [D] layer_norm2.{weight,bias} */
    SlLinear fc1;                           /* w [F,D], b [F] mlp.fc1.{weight,bias} */
    SlLinear fc2;                           /* w [D,F], b [D] mlp.fc2.{weight,bias} */
} SlClipLayer;

typedef struct SlClipParams {
    float *tok_emb;   /* [V,D] text_model.embeddings.token_embedding.weight */
    float *pos_emb;   /* [P,D] text_model.embeddings.position_embedding.weight */
    SlClipLayer *layers; /* [L] */
    float *lnf_w;     /* [D] text_model.final_layer_norm.weight */
    float *lnf_b;     /* [D] text_model.final_layer_norm.bias */
} SlClipParams;

typedef struct SlClipActs {  /* planned for N = B*T rows */
    float *x;         /* [B,T,D] residual stream (when the caller keeps no hidden states) */
    float *ln;        /* [B,T,D] LayerNorm output */
    float *mean, *rstd; /* [B*T] */
    float *q, *k, *v; /* [B,T,D] */
    float *att;       /* [B,T,D] attention output (heads interleaved) */
    float *proj;      /* [B,T,D] out_proj / fc2 output */
    float *lse;       /* [B,NH,T] */
    float *h;         /* [B,T,F] MLP hidden */
    float *work;      /* sl_attention_workspace(B,T,T,NH,HD) floats */
} SlClipActs;

typedef struct SlClip {
    SlClipConfig cfg;
    SlClipParams params;
    SlArena weights;      /* frozen weights */
    SlArena acts_arena;   /* activations */
    SlClipActs acts;
    int cap_B, cap_T;     /* capacity of acts_arena */
    int n_unused;         /* tensors of the weight view never read by sl_clip_load */
    SlKernels kern;       /* the kernels its products run on (sl_clip_set_kernels; zero: the CPU's default) */
} SlClip;

/* Reads a transformers CLIPTextConfig config.json (a diffusers text_encoder/config.json).
 * Absent keys take CLIPTextConfig's defaults; wrong types, absurd sizes, a head count that
 * does not divide hidden_size or an unknown hidden_act fail with a message naming the key. */
SlStatus sl_clip_config_load(SlClipConfig *cfg, const char *config_json, SlCtx *ctx);
/* The same from an already parsed config. */
SlStatus sl_clip_config_read(SlClipConfig *cfg, const SlConfig *json, SlCtx *ctx);

/* Text encoders of single-file checkpoints, which carry no config.json: the values of the
 * matching diffusers text_encoder/config.json. SD1 = OpenAI CLIP ViT-L/14 (12 layers of 768,
 * quick_gelu); SD2 = OpenCLIP ViT-H/14 text tower as diffusers keeps it (the first 23 of its 24
 * layers of 1024, gelu: SD 2.x conditions on the penultimate layer). */
typedef enum SlClipPreset { SL_CLIP_PRESET_SD1 = 0, SL_CLIP_PRESET_SD2 = 1 } SlClipPreset;
void sl_clip_config_preset(SlClipConfig *cfg, SlClipPreset preset);

/* Number of float parameters of the model. */
int64_t sl_clip_param_count(const SlClipConfig *cfg);

/* Loads the weights of `cfg` from w (any dtype the reader converts to F32) in `layout`.
 * For OPENCLIP / HF_BARE (also when AUTO picks them) a key map is installed on w.
 * Every tensor's shape is checked; a missing or misshaped tensor fails naming it.
 * Tensors of w (under its prefix) never read are counted in (*out)->n_unused and logged at
 * WARN, except the known extras (position_ids, OpenCLIP's text_projection and logit_scale). */
SlStatus sl_clip_load(SlClip **out, const SlClipConfig *cfg, SlWeights *w, SlClipLayout layout,
                      SlCtx *ctx);
/* Builds a model with random weights for tests and benchmarks that need a full-size model
 * without a file: LayerNorms 1 / 0, biases 0, other tensors uniform with the standard
 * deviations of transformers' CLIP init (seeded Philox; same seed, same bytes). */
SlStatus sl_clip_init_random(SlClip **out, const SlClipConfig *cfg, uint64_t seed, SlCtx *ctx);
void sl_clip_free(SlClip *m);

/* The kernels (nn/kernels.h) every product of the model runs on from now on: stamped
 * on each layer's modules (adapter hooks read them there). NULL: the CPU's default,
 * which a loaded model starts with. */
void sl_clip_set_kernels(SlClip *m, const SlKernels *k);

/* Plans and (re)allocates the activation arena for up to B x T tokens (only grows). */
SlStatus sl_clip_reserve(SlClip *m, int B, int T, SlCtx *ctx);
/* The activation arena bytes sl_clip_reserve allocates for (B, T) (memory plans). */
size_t sl_clip_acts_bytes(const SlClipConfig *c, int64_t B, int64_t T);

/* Forward pass. ids [B,T] in [0,V), 1 <= T <= P. Outputs (caller-owned):
 *   last_hidden   [B,T,D]          after the final LayerNorm (required)
 *   hidden_states [(L+1),B,T,D]    K=0 embeddings, K=i output of block i, no final LN (or NULL)
 *   pooled        [B,D]            pooler_output, see the header comment (or NULL)
 * Reserves activations if (B,T) exceeds the capacity (the only allocation). */
SlStatus sl_clip_forward(SlClip *m, const int32_t *ids, int B, int T, float *last_hidden,
                         float *hidden_states, float *pooled, SlCtx *ctx);

/* out [N,D] = final_layer_norm(in [N,D]) (for clip skip); out may not alias in. Uses the
 * activation arena's statistics rows: N <= reserved B*T. */
SlStatus sl_clip_final_norm(SlClip *m, float *out, const float *in, int64_t N, SlCtx *ctx);

/* Position pooled for row ids[0..T) under eos_id (see the header comment). */
int sl_clip_pool_index(const int32_t *ids, int T, int64_t eos_id);

const char *sl_clip_layout_name(SlClipLayout l);

#endif
