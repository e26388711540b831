#!/usr/bin/env -S /usr/bin/python3
"""nf4_unet_ref.py - the NF4 U-Net in PyTorch (bitsandbytes' quantize_4bit as re-stated in
nf4_ref.py, on the same layers stylora quantizes) and where its error comes from.

  /usr/bin/python3 tests/reference/nf4_unet_ref.py write MODEL_DIR IN.safetensors [--t T ...] [--layers attn,ff,proj]
      writes inputs (sample, timestep, encoder_hidden_states; seed 0) for `stylora probe unet`
      and the torch outputs (out_fp32, out_nf4), and prints: the NF4-vs-fp32 output cosine of the torch model; the per-layer output
      cosine (each quantized layer alone, fed the fp32 model's own input); the cosine of the
      hidden state after each block (how the error grows with depth).
  /usr/bin/python3 tests/reference/nf4_unet_ref.py compare MODEL_DIR IN.safetensors C_FP32.safetensors C_NF4.safetensors [--layers ...]
      compares stylora's outputs (probe unet, --base fp32 / --base nf4) with the torch ones.
  --random SEED replaces the weights by unet_ref.randomize(seed) (a random-weight model).
tests/data/nf4_unet_tiny.safetensors (test_nf4's golden) is
  write ../shared/golden/tiny-sd1 tests/data/nf4_unet_tiny.safetensors
"""
import argparse
import json
import math
import os
import sys

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import unet_ref  # noqa: E402
from nf4_ref import NF4, quant_nf4  # noqa: E402

PRESETS = {"attn": ["to_q", "to_k", "to_v", "to_out.0"], "ff": ["ff.net.0.proj", "ff.net.2"],
           "proj": ["proj_in", "proj_out"],
           "time": ["time_embedding.linear_1", "time_embedding.linear_2", "time_emb_proj"]}


def selected(name, layers):
    pats = []
    if "all" in layers.split(","):
        return True
    for tok in layers.split(","):
        pats += PRESETS.get(tok, [tok])
    return any(name == p or name.endswith("." + p) for p in pats)


def dequant_nf4(w):
    packed, absmax = quant_nf4(w)
    n = w.numel()
    q = torch.stack([packed >> 4, packed & 15], dim=1).reshape(-1)[:n].long()
    code = torch.tensor(NF4, dtype=torch.float32)
    pad = torch.zeros(((n + 63) // 64) * 64)
    pad[:n] = code[q]
    return (pad.view(-1, 64) * absmax[:, None]).reshape(-1)[:n].reshape(w.shape)


def load(model_dir, random_seed):
    cfg = json.load(open(os.path.join(model_dir, "unet", "config.json")))
    m = unet_ref.UNet(cfg)
    if random_seed is None:
        sd = unet_ref.st_read(os.path.join(model_dir, "unet", "diffusion_pytorch_model.safetensors"))
        m.load_state_dict({k: v.float() for k, v in sd.items()}, strict=True)
    else:
        unet_ref.randomize(m, random_seed)
    return cfg, m.eval()


def quantized_copy(m, cfg, layers):
    q = unet_ref.UNet(cfg)
    q.load_state_dict(m.state_dict())
    names = []
    with torch.no_grad():
        for name, mod in q.named_modules():
            if isinstance(mod, (torch.nn.Linear, torch.nn.Conv2d)) and selected(name, layers):
                if isinstance(mod, torch.nn.Conv2d) and mod.kernel_size != (1, 1):
                    continue
                mod.weight.copy_(dequant_nf4(mod.weight))
                names.append(name)
    return q.eval(), names


def inputs(cfg, ts, H=16, T=7):
    g = torch.Generator().manual_seed(0)
    B = len(ts)
    s = torch.randn(B, cfg["in_channels"], H, H, generator=g)
    e = torch.randn(B, T, cfg["cross_attention_dim"], generator=g)
    return s, torch.tensor(ts, dtype=torch.float32), e


def cos(a, b):
    a, b = a.reshape(-1).double(), b.reshape(-1).double()
    return (a @ b / (a.norm() * b.norm() + 1e-300)).item()


def analyse(m, q, names, s, t, e):
    """Per-layer cosine (each layer alone on the fp32 input) and per-block cosine (through depth)."""
    mods = dict(m.named_modules())
    qmods = dict(q.named_modules())
    per_layer, inp = [], {}
    hooks = [mods[n].register_forward_hook(lambda mod, i, o, n=n: inp.__setitem__(n, i[0].detach())) for n in names]
    blocks_m, blocks_q = [], []

    def tap(store):
        return lambda mod, i, o: store.append(o.detach() if torch.is_tensor(o) else o[0].detach())
    for n, mod in m.named_modules():
        if n.count(".") == 2 and (".resnets." in n or ".attentions." in n):
            hooks.append(mod.register_forward_hook(tap(blocks_m)))
            hooks.append(qmods[n].register_forward_hook(tap(blocks_q)))
    with torch.no_grad():
        o_m = m(s, t, e)
        o_q = q(s, t, e)
        for n in names:
            x = inp[n]
            per_layer.append((n, cos(mods[n](x), qmods[n](x)),
                              ((qmods[n].weight - mods[n].weight).norm() / mods[n].weight.norm()).item()))
    for h in hooks:
        h.remove()
    depth = [cos(a, b) for a, b in zip(blocks_m, blocks_q)]
    return o_m, o_q, per_layer, depth


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("mode", choices=["write", "compare"])
    ap.add_argument("model")
    ap.add_argument("inp")
    ap.add_argument("c_fp32", nargs="?")
    ap.add_argument("c_nf4", nargs="?")
    ap.add_argument("--t", type=float, nargs="+", default=[137.0, 548.0])
    ap.add_argument("--layers", default="attn,ff,proj")
    ap.add_argument("--random", type=int, default=None)
    a = ap.parse_args()
    torch.set_num_threads(1)
    cfg, m = load(a.model, a.random)
    q, names = quantized_copy(m, cfg, a.layers)
    s, t, e = inputs(cfg, a.t)
    o_m, o_q, per_layer, depth = analyse(m, q, names, s, t, e)
    if a.mode == "write":
        unet_ref.st_write(a.inp, {"sample": s, "timestep": t, "encoder_hidden_states": e, "out_fp32": o_m,
                                  "out_nf4": o_q}, {"oracle": "nf4_unet_ref.py", "layers": a.layers})
    print("torch: %d NF4 layers (%s): U-Net output cosine nf4 vs fp32 %.5f" % (len(names), a.layers, cos(o_m, o_q)))
    for b in range(len(a.t)):
        print("  t=%g: cosine %.5f" % (a.t[b], cos(o_m[b], o_q[b])))
    pl = sorted(c for _, c, _ in per_layer)
    we = sorted(w for _, _, w in per_layer)
    print("per layer (alone): output cosine min %.5f median %.5f max %.5f; weight rel err median %.4f max %.4f" %
          (pl[0], pl[len(pl) // 2], pl[-1], we[len(we) // 2], we[-1]))
    print("through depth (block outputs): " + " ".join("%.4f" % d for d in depth))
    if a.mode == "compare":
        cf = unet_ref.st_read(a.c_fp32)["out"]
        cq = unet_ref.st_read(a.c_nf4)["out"]
        sc = o_m.abs().max().item()
        print("stylora fp32 vs torch fp32: max abs %.3g (scale %.3g)" % ((cf - o_m).abs().max().item(), sc))
        print("stylora nf4  vs torch nf4 : max abs %.3g, cosine %.7f" % ((cq - o_q).abs().max().item(), cos(cq, o_q)))
        print("stylora nf4 vs stylora fp32 cosine %.5f" % cos(cq, cf))


if __name__ == "__main__":
    main()
