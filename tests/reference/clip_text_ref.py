#!/usr/bin/env -S /usr/bin/python3
"""clip_text_ref.py - plain-PyTorch CLIP text transformer and the textenc golden files.

The model follows transformers' CLIPTextTransformer (modeling_clip.py, 4.45):
token + position embeddings, pre-LayerNorm blocks with causal self-attention
(scale HD^-0.5) and an MLP (fc1, quick_gelu | exact gelu, fc2), a final
LayerNorm; hidden_states[0] are the embeddings, hidden_states[i] the output of
block i (no final LN); pooler_output is the final-LN state at
  argmax(input_ids)                     if eos_token_id == 2 (legacy configs)
  first position where ids == eos_id    otherwise (argmax of the 0/1 mask: 0 if absent).
A second, independent forward runs the OpenCLIP layout (stacked in_proj,
F.multi_head_attention_forward with an additive causal mask) on converted
weights, so the key mapping and q/k/v split order are checked here too.

Steps (run as `/usr/bin/python3 tests/reference/clip_text_ref.py` from the repo root):
 1. proves this reference against the shared golden (tiny-sd1, made with the
    real transformers), failing loudly if it disagrees;
 2. writes tests/data/textenc_<name>.safetensors (weights with transformers
    names, `in.input_ids` I64 [B,T], `out.hidden_states` [(L+1),B,T,D],
    `out.last_hidden_state` [B,T,D], `out.pooler_output` [B,D]) and
    tests/data/textenc_<name>.json (its config.json) for further tiny configs;
 3. writes tests/data/textenc_gelu_openclip.safetensors: the same weights as
    an SD 2.x single file would hold them (prefix cond_stage_model.model.,
    F16), plus the unused text_projection / logit_scale.

torch + numpy only (no transformers, no safetensors package).
"""
import json
import os
import struct
import sys

import numpy as np
import torch
import torch.nn.functional as F

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.normpath(os.path.join(HERE, "..", ".."))
SHARED = os.environ.get("SL_SHARED_DIR", os.path.join(ROOT, "..", "shared"))
OUT = os.path.join(ROOT, "tests", "data")

# ---- minimal safetensors I/O ----
_DT = {"F32": np.float32, "F16": np.float16, "I64": np.int64, "I32": np.int32, "F64": np.float64}
_DT_NAME = {np.dtype(v): k for k, v in _DT.items()}


def st_load(path):
    with open(path, "rb") as f:
        buf = f.read()
    (n,) = struct.unpack("<Q", buf[:8])
    hdr = json.loads(buf[8:8 + n])
    data = buf[8 + n:]
    out = {}
    for k, v in hdr.items():
        if k == "__metadata__":
            continue
        a, b = v["data_offsets"]
        arr = np.frombuffer(data[a:b], dtype=_DT[v["dtype"]]).reshape(v["shape"])
        out[k] = torch.from_numpy(arr.copy())
    return out


def st_save(path, tensors, meta=None):
    hdr, blobs, off = {}, [], 0
    for k in sorted(tensors):
        arr = np.ascontiguousarray(tensors[k].detach().cpu().numpy())
        b = arr.tobytes()
        hdr[k] = {"dtype": _DT_NAME[arr.dtype], "shape": list(arr.shape), "data_offsets": [off, off + len(b)]}
        blobs.append(b)
        off += len(b)
    if meta:
        hdr["__metadata__"] = meta
    h = json.dumps(hdr, separators=(",", ":")).encode()
    h += b" " * ((8 - len(h) % 8) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)) + h + b"".join(blobs))


# ---- the model (transformers layout) ----
def act_fn(name):
    if name == "quick_gelu":
        return lambda x: x * torch.sigmoid(1.702 * x)
    if name == "gelu":
        return lambda x: F.gelu(x)  # exact erf form, transformers' GELUActivation
    raise ValueError(f"hidden_act {name!r} not supported")


def pool_index(ids, eos):
    if eos == 2:
        return ids.to(torch.int).argmax(dim=-1)
    return (ids.to(torch.int) == eos).int().argmax(dim=-1)


def clip_text_forward(sd, cfg, ids):
    """sd: transformers state dict (text_model.*); ids [B,T] int64.
    Returns (last_hidden_state, [hidden_states 0..L], pooler_output)."""
    B, T = ids.shape
    D, NH, L = cfg["hidden_size"], cfg["num_attention_heads"], cfg["num_hidden_layers"]
    HD = D // NH
    eps = cfg["layer_norm_eps"]
    act = act_fn(cfg["hidden_act"])
    p = "text_model."
    x = sd[p + "embeddings.token_embedding.weight"][ids] + sd[p + "embeddings.position_embedding.weight"][:T][None]
    mask = torch.full((T, T), torch.finfo(torch.float32).min).triu(1)  # transformers' causal mask
    hs = [x]
    for i in range(L):
        q_ = p + f"encoder.layers.{i}."
        w = lambda n: sd[q_ + n]
        h = F.layer_norm(x, (D,), w("layer_norm1.weight"), w("layer_norm1.bias"), eps)
        q = F.linear(h, w("self_attn.q_proj.weight"), w("self_attn.q_proj.bias"))
        k = F.linear(h, w("self_attn.k_proj.weight"), w("self_attn.k_proj.bias"))
        v = F.linear(h, w("self_attn.v_proj.weight"), w("self_attn.v_proj.bias"))
        q, k, v = (t.view(B, T, NH, HD).transpose(1, 2) for t in (q, k, v))
        s = (q @ k.transpose(-1, -2)) * HD ** -0.5 + mask
        a = (s.softmax(-1) @ v).transpose(1, 2).reshape(B, T, D)
        x = x + F.linear(a, w("self_attn.out_proj.weight"), w("self_attn.out_proj.bias"))
        h = F.layer_norm(x, (D,), w("layer_norm2.weight"), w("layer_norm2.bias"), eps)
        h = F.linear(act(F.linear(h, w("mlp.fc1.weight"), w("mlp.fc1.bias"))), w("mlp.fc2.weight"), w("mlp.fc2.bias"))
        x = x + h
        hs.append(x)
    last = F.layer_norm(x, (D,), sd[p + "final_layer_norm.weight"], sd[p + "final_layer_norm.bias"], eps)
    pooled = last[torch.arange(B), pool_index(ids, cfg["eos_token_id"])]
    return last, hs, pooled


# ---- OpenCLIP layout (SD 2.x cond_stage_model.model.*) ----
def to_openclip(sd, L):
    """diffusers' conversion lists, inverted: resblocks / ln_1 / c_fc / in_proj (q,k,v stacked)."""
    p = "text_model."
    o = {
        "token_embedding.weight": sd[p + "embeddings.token_embedding.weight"],
        "positional_embedding": sd[p + "embeddings.position_embedding.weight"],
        "ln_final.weight": sd[p + "final_layer_norm.weight"],
        "ln_final.bias": sd[p + "final_layer_norm.bias"],
    }
    pairs = [("layer_norm1", "ln_1"), ("layer_norm2", "ln_2"), ("self_attn.out_proj", "attn.out_proj"),
             ("mlp.fc1", "mlp.c_fc"), ("mlp.fc2", "mlp.c_proj")]
    for i in range(L):
        hf, oc = f"{p}encoder.layers.{i}.", f"transformer.resblocks.{i}."
        for a, b in pairs:
            for s in ("weight", "bias"):
                o[f"{oc}{b}.{s}"] = sd[f"{hf}{a}.{s}"]
        for s in ("weight", "bias"):
            o[f"{oc}attn.in_proj_{s}"] = torch.cat([sd[f"{hf}self_attn.{n}_proj.{s}"] for n in "qkv"], 0)
    return o


def openclip_forward(o, cfg, ids):
    """OpenCLIP TextTransformer (no projection): x + attn(ln_1(x)), x + mlp(ln_2(x)), ln_final."""
    B, T = ids.shape
    D, NH, L = cfg["hidden_size"], cfg["num_attention_heads"], cfg["num_hidden_layers"]
    eps = cfg["layer_norm_eps"]
    act = act_fn(cfg["hidden_act"])
    x = o["token_embedding.weight"][ids] + o["positional_embedding"][:T]
    mask = torch.full((T, T), float("-inf")).triu(1)
    xt = x.transpose(0, 1)  # [T,B,D], nn.MultiheadAttention's layout
    for i in range(L):
        w = lambda n: o[f"transformer.resblocks.{i}.{n}"]
        h = F.layer_norm(xt, (D,), w("ln_1.weight"), w("ln_1.bias"), eps)
        a, _ = F.multi_head_attention_forward(h, h, h, D, NH, w("attn.in_proj_weight"), w("attn.in_proj_bias"),
                                              None, None, False, 0.0, w("attn.out_proj.weight"),
                                              w("attn.out_proj.bias"), training=False, need_weights=False,
                                              attn_mask=mask)
        xt = xt + a
        h = F.layer_norm(xt, (D,), w("ln_2.weight"), w("ln_2.bias"), eps)
        xt = xt + F.linear(act(F.linear(h, w("mlp.c_fc.weight"), w("mlp.c_fc.bias"))),
                           w("mlp.c_proj.weight"), w("mlp.c_proj.bias"))
    return F.layer_norm(xt.transpose(0, 1), (D,), o["ln_final.weight"], o["ln_final.bias"], eps)


# ---- helpers ----
def rel_err(a, b):
    return float((a - b).abs().max() / b.abs().max())


def check(name, got, ref, tol):
    e = rel_err(got, ref)
    print(f"  {name:32s} max|err|/max|ref| = {e:.2e}")
    if not e <= tol:
        sys.exit(f"FAIL {name}: {e:.3e} > {tol:.1e}")


def prove_against_golden():
    g = os.path.join(SHARED, "golden", "tiny-sd1")
    cfg = json.load(open(os.path.join(g, "text_encoder", "config.json")))
    sd = st_load(os.path.join(g, "text_encoder", "model.safetensors"))
    ex = st_load(os.path.join(g, "expected.safetensors"))
    print(f"golden tiny-sd1 (eos {cfg['eos_token_id']}, {cfg['hidden_act']}):")
    tol = 1e-5
    with torch.no_grad():
        last, hs, pooled = clip_text_forward(sd, cfg, ex["te.in.input_ids"])
        check("te.last_hidden_state", last, ex["te.last_hidden_state"], tol)
        check("te.hidden_states.0", hs[0], ex["te.hidden_states.0"], tol)
        check("te.penultimate_hidden_state", hs[-2], ex["te.penultimate_hidden_state"], tol)
        check("te.pooler_output", pooled, ex["te.pooler_output"], tol)
        ulast, _, _ = clip_text_forward(sd, cfg, ex["te.in.uncond_input_ids"])
        check("te.uncond_last_hidden_state", ulast, ex["te.uncond_last_hidden_state"], tol)
        oc = to_openclip(sd, cfg["num_hidden_layers"])
        check("openclip path on golden weights", openclip_forward(oc, cfg, ex["te.in.input_ids"]),
              ex["te.last_hidden_state"], tol)


def random_clip(cfg, seed, f16_exact):
    """Weights with transformers' init scales, but non-trivial LN and bias values."""
    g = torch.Generator().manual_seed(seed)
    D, Fh, L = cfg["hidden_size"], cfg["intermediate_size"], cfg["num_hidden_layers"]
    rn = lambda *s, std=1.0: torch.randn(*s, generator=g) * std
    p = "text_model."
    sd = {
        p + "embeddings.token_embedding.weight": rn(cfg["vocab_size"], D, std=0.5),
        p + "embeddings.position_embedding.weight": rn(cfg["max_position_embeddings"], D, std=0.5),
        p + "final_layer_norm.weight": 1 + rn(D, std=0.2),
        p + "final_layer_norm.bias": rn(D, std=0.2),
    }
    for i in range(L):
        q = f"{p}encoder.layers.{i}."
        for n in ("layer_norm1", "layer_norm2"):
            sd[q + n + ".weight"] = 1 + rn(D, std=0.2)
            sd[q + n + ".bias"] = rn(D, std=0.2)
        for n in "qkv":
            sd[q + f"self_attn.{n}_proj.weight"] = rn(D, D, std=D ** -0.5)
            sd[q + f"self_attn.{n}_proj.bias"] = rn(D, std=0.1)
        sd[q + "self_attn.out_proj.weight"] = rn(D, D, std=D ** -0.5)
        sd[q + "self_attn.out_proj.bias"] = rn(D, std=0.1)
        sd[q + "mlp.fc1.weight"] = rn(Fh, D, std=D ** -0.5)
        sd[q + "mlp.fc1.bias"] = rn(Fh, std=0.1)
        sd[q + "mlp.fc2.weight"] = rn(D, Fh, std=Fh ** -0.5)
        sd[q + "mlp.fc2.bias"] = rn(D, std=0.1)
    if f16_exact:  # values representable in F16, so an F16 copy computes the same outputs
        sd = {k: v.half().float() for k, v in sd.items()}
    return sd


def make_config(**kw):
    cfg = {"architectures": ["CLIPTextModel"], "attention_dropout": 0.0, "initializer_factor": 1.0,
           "initializer_range": 0.02, "model_type": "clip_text_model", "projection_dim": kw["hidden_size"],
           "torch_dtype": "float32"}
    cfg.update(kw)
    return cfg


def write_case(name, cfg, ids, seed, store_f16=False, openclip=False):
    sd = random_clip(cfg, seed, f16_exact=store_f16 or openclip)
    with torch.no_grad():
        last, hs, pooled = clip_text_forward(sd, cfg, ids)
        if openclip:
            oc = to_openclip(sd, cfg["num_hidden_layers"])
            check(f"{name}: openclip == transformers", openclip_forward(oc, cfg, ids), last, 1e-5)
    print(f"{name}: D={cfg['hidden_size']} NH={cfg['num_attention_heads']} L={cfg['num_hidden_layers']} "
          f"act={cfg['hidden_act']} eos={cfg['eos_token_id']} ids {list(ids.shape)} "
          f"pool at {pool_index(ids, cfg['eos_token_id']).tolist()}")
    out = {k: (v.half() if store_f16 else v) for k, v in sd.items()}
    out["in.input_ids"] = ids.to(torch.int64)
    out["out.hidden_states"] = torch.stack(hs, 0)
    out["out.last_hidden_state"] = last
    out["out.pooler_output"] = pooled
    path = os.path.join(OUT, f"textenc_{name}.safetensors")
    st_save(path, out, {"source": "tests/reference/clip_text_ref.py", "torch": torch.__version__})
    with open(os.path.join(OUT, f"textenc_{name}.json"), "w") as f:
        json.dump(cfg, f, indent=2)
        f.write("\n")
    print(f"  wrote {path} ({os.path.getsize(path)} bytes)")
    if openclip:
        D = cfg["hidden_size"]
        g = torch.Generator().manual_seed(seed + 1)
        oc = {"cond_stage_model.model." + k: v.half() for k, v in oc.items()}
        oc["cond_stage_model.model.text_projection"] = torch.randn(D, D, generator=g).half()  # unused
        oc["cond_stage_model.model.logit_scale"] = torch.tensor(4.6052).half()                 # unused
        path = os.path.join(OUT, f"textenc_{name}_openclip.safetensors")
        st_save(path, oc, {"source": "tests/reference/clip_text_ref.py (OpenCLIP layout of textenc_gelu)"})
        print(f"  wrote {path} ({os.path.getsize(path)} bytes)")


def main():
    torch.set_num_threads(1)
    prove_against_golden()
    os.makedirs(OUT, exist_ok=True)

    # SD-2-like: exact gelu, 3 heads of 16, pad id 0 (OpenCLIP tokenizer), T = max positions.
    # Rows: a prompt, the empty prompt, a truncated prompt without EOS (pooled at position 0).
    cfg = make_config(hidden_size=48, intermediate_size=64, num_hidden_layers=3, num_attention_heads=3,
                      max_position_embeddings=24, vocab_size=300, hidden_act="gelu", layer_norm_eps=1e-5,
                      bos_token_id=298, eos_token_id=299, pad_token_id=0)
    T = 24
    g = torch.Generator().manual_seed(7)
    ids = torch.zeros(3, T, dtype=torch.int64)
    ids[:, 0] = 298
    ids[0, 1:10] = torch.randint(1, 298, (9,), generator=g)
    ids[0, 10] = 299
    ids[1, 1] = 299
    ids[2, 1:] = torch.randint(1, 298, (T - 1,), generator=g)
    write_case("gelu", cfg, ids, seed=1, openclip=True)

    # Legacy pooling (eos_token_id == 2: argmax of ids), quick_gelu, 5 heads of 8, four layers,
    # T = 13 < 20 positions, weights stored as F16, id 2 occurs inside the prompt.
    cfg = make_config(hidden_size=40, intermediate_size=72, num_hidden_layers=4, num_attention_heads=5,
                      max_position_embeddings=20, vocab_size=200, hidden_act="quick_gelu", layer_norm_eps=1e-5,
                      bos_token_id=0, eos_token_id=2, pad_token_id=1)
    T = 13
    ids = torch.full((2, T), 199, dtype=torch.int64)  # 199 plays CLIP's <|endoftext|> (the largest id)
    ids[:, 0] = 198
    ids[0, 1:6] = torch.tensor([5, 2, 17, 2, 120])
    ids[1, 1:12] = torch.randint(3, 198, (11,), generator=g)
    write_case("legacy", cfg, ids, seed=2, store_f16=True)


if __name__ == "__main__":
    main()
