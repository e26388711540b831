#!/usr/bin/env -S /usr/bin/python3
"""lycoris_ref.py - LyCORIS LoHa / LoKr golden files for tests/test_lycoris.c.

The maths, restated from KohakuBlueleaf/LyCORIS (lycoris/functional/loha.py, lokr.py,
general.py; lycoris/modules/lokr.py) and the consumer side of comfyanonymous/ComfyUI
(comfy/weight_adapter/loha.py, lokr.py); no lycoris import, plain torch in float64:

  LoHa   dW = (w1_a @ w1_b) * (w2_a @ w2_b) * alpha / R,  R = rows of hada_w1_b
         Tucker: factor = einsum("i j k l, j r, i p -> p r k l", t, w_b, w_a)
         (w1_b [R, I*k*k] for a plain conv; the product is reshaped to [O, I, k, k])
  LoKr   dW = kron(w1, w2) * alpha / r,  w1 = lokr_w1 or w1_a @ w1_b,
         w2 = lokr_w2, w2_a @ w2_b (w2_b [R, d, k, k] viewed [R, -1]) or the Tucker rebuild;
         4-D w2: w1 unsqueezed to [a, c, 1, 1] (make_kron);
         r = rows of lokr_w2_b if w2 is factorised, else rows of lokr_w1_b;
         both factors full: scale 1 whatever alpha is (LyCORIS sets alpha = dim there).
  No alpha tensor: alpha = r (scale 1).

On the tiny golden U-Net (tests/data/shared/golden/tiny-sd1) it writes, with kohya key naming
(lora_unet_<module, '.' -> '_'>.hada_w1_a, .alpha, ...):
  tests/data/lycoris_loha.safetensors   5 LoHa modules: linear (alpha, no alpha), 1x1 conv,
                                        3x3 conv flat, 3x3 conv Tucker
  tests/data/lycoris_lokr.safetensors   4 LoKr modules: linear w1 full + w2 factorised,
                                        linear both full (alpha 7 ignored), conv w1 factorised +
                                        Tucker w2, conv w2_a/4-D w2_b without alpha, conv both full
  tests/data/lycoris_golden.safetensors
      <algo>.merged.<diffusers key>  W + dW (F32) for every touched module
      <algo>.out                     U-Net output with the merged weights, on the golden inputs
                                     unet.in.* of ../shared/golden/tiny-sd1/expected.safetensors
Run:  /usr/bin/python3 tests/reference/lycoris_ref.py
"""
import os
import sys

import torch

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import unet_ref  # noqa: E402
from unet_ref import UNet, st_read, st_write  # noqa: E402

# the U-Net runs in float64: its sinusoidal embedding is built in float32, so cast it
_temb = unet_ref.timestep_embedding
unet_ref.timestep_embedding = lambda *args, **kw: _temb(*args, **kw).double()

DATA = os.path.normpath(os.path.join(HERE, "..", "data"))
GOLD = os.path.join(DATA, "shared", "golden", "tiny-sd1")
torch.manual_seed(2020)


def rnd(*s, std=0.3):
    return (torch.randn(*s, dtype=torch.float64) * std)


def tucker(t, wa, wb):
    return torch.einsum("i j k l, j r, i p -> p r k l", t, wb, wa)


def loha_delta(m, shape):
    R = m["hada_w1_b"].shape[0]
    scale = m["alpha"].item() / R if "alpha" in m else 1.0
    if "hada_t1" in m:
        m1 = tucker(m["hada_t1"], m["hada_w1_a"], m["hada_w1_b"])
        m2 = tucker(m["hada_t2"], m["hada_w2_a"], m["hada_w2_b"])
    else:
        m1 = m["hada_w1_a"] @ m["hada_w1_b"].reshape(R, -1)
        m2 = m["hada_w2_a"] @ m["hada_w2_b"].reshape(m["hada_w2_b"].shape[0], -1)
    return (m1 * m2 * scale).reshape(shape)


def lokr_delta(m, shape):
    r = None
    if "lokr_w1" in m:
        w1 = m["lokr_w1"]
    else:
        w1 = m["lokr_w1_a"] @ m["lokr_w1_b"]
        r = m["lokr_w1_b"].shape[0]
    if "lokr_w2" in m:
        w2 = m["lokr_w2"]
    elif "lokr_t2" in m:
        w2 = tucker(m["lokr_t2"], m["lokr_w2_a"], m["lokr_w2_b"])
        r = m["lokr_w2_b"].shape[0]
    else:
        b = m["lokr_w2_b"]
        w2 = (m["lokr_w2_a"] @ b.reshape(b.shape[0], -1)).reshape(m["lokr_w2_a"].shape[0], *b.shape[1:])
        r = b.shape[0]
    scale = m["alpha"].item() / r if (r is not None and "alpha" in m and m["alpha"].item() != 0) else 1.0
    for _ in range(w2.dim() - w1.dim()):
        w1 = w1.unsqueeze(-1)
    return (torch.kron(w1.contiguous(), w2.contiguous()) * scale).reshape(shape)


def a(v):
    return torch.tensor(float(v), dtype=torch.float64)


A0 = "down_blocks.0.attentions.0.transformer_blocks.0."
LOHA = {
    A0 + "attn1.to_q": {"hada_w1_a": rnd(32, 4), "hada_w1_b": rnd(4, 32), "hada_w2_a": rnd(32, 4),
                        "hada_w2_b": rnd(4, 32), "alpha": a(2)},
    "mid_block.attentions.0.transformer_blocks.0.ff.net.2": {
        "hada_w1_a": rnd(64, 8), "hada_w1_b": rnd(8, 256), "hada_w2_a": rnd(64, 8), "hada_w2_b": rnd(8, 256)},
    "down_blocks.0.attentions.0.proj_in": {"hada_w1_a": rnd(32, 2), "hada_w1_b": rnd(2, 32), "hada_w2_a": rnd(32, 2),
                                           "hada_w2_b": rnd(2, 32), "alpha": a(2)},
    "down_blocks.1.resnets.0.conv1": {"hada_w1_a": rnd(64, 4), "hada_w1_b": rnd(4, 32 * 9, std=0.1),
                                      "hada_w2_a": rnd(64, 4), "hada_w2_b": rnd(4, 32 * 9, std=0.1), "alpha": a(1)},
    "up_blocks.0.resnets.1.conv1": {"hada_t1": rnd(3, 3, 3, 3), "hada_w1_a": rnd(3, 64), "hada_w1_b": rnd(3, 96, std=0.1),
                                    "hada_t2": rnd(3, 3, 3, 3), "hada_w2_a": rnd(3, 64), "hada_w2_b": rnd(3, 96, std=0.1),
                                    "alpha": a(6)},
}
LOKR = {
    A0 + "attn2.to_v": {"lokr_w1": rnd(4, 4), "lokr_w2_a": rnd(8, 2), "lokr_w2_b": rnd(2, 8), "alpha": a(1)},
    "mid_block.attentions.0.transformer_blocks.0.ff.net.0.proj": {"lokr_w1": rnd(8, 4), "lokr_w2": rnd(64, 16, std=0.05),
                                                                   "alpha": a(7)},
    "mid_block.resnets.0.conv2": {"lokr_w1_a": rnd(4, 2), "lokr_w1_b": rnd(2, 8), "lokr_t2": rnd(3, 3, 3, 3),
                                  "lokr_w2_a": rnd(3, 16), "lokr_w2_b": rnd(3, 8, std=0.1), "alpha": a(1.5)},
    "up_blocks.1.resnets.1.conv1": {"lokr_w1": rnd(2, 4), "lokr_w2_a": rnd(16, 2), "lokr_w2_b": rnd(2, 16, 3, 3, std=0.1)},
    "down_blocks.0.resnets.0.conv2": {"lokr_w1": rnd(4, 4), "lokr_w2": rnd(8, 8, 3, 3, std=0.1)},
}


def kohya(name):
    return "lora_unet_" + name.replace(".", "_")


def main():
    torch.set_num_threads(1)
    sd = st_read(os.path.join(GOLD, "unet", "diffusion_pytorch_model.safetensors"))
    ex = st_read(os.path.join(GOLD, "expected.safetensors"))
    cfg = __import__("json").load(open(os.path.join(GOLD, "unet", "config.json")))
    golden = {}
    for algo, mods, fn in (("loha", LOHA, loha_delta), ("lokr", LOKR, lokr_delta)):
        f32 = {k: v.float() for k, v in sd.items()}
        file_t = {}
        for name, m in mods.items():
            # the file holds f32: the reference computes from exactly those values
            m32 = {k: v.float().double() for k, v in m.items()}
            for k, v in m32.items():
                file_t[kohya(name) + "." + k] = v.float()
            key = name + ".weight"
            W = sd[key].double()
            merged = W + fn(m32, W.shape)
            golden[algo + ".merged." + key] = merged.float()
            f32[key] = merged.float()
        st_write(os.path.join(DATA, "lycoris_%s.safetensors" % algo), file_t,
                 {"ss_network_module": "lycoris.kohya", "ss_network_args": '{"algo": "%s"}' % algo})
        model = UNet(cfg).double()
        model.load_state_dict({k: v.double() for k, v in f32.items()}, strict=True)
        with torch.no_grad():
            out = model(ex["unet.in.sample"].double(), ex["unet.in.timesteps"], ex["unet.in.encoder_hidden_states"].double())
        golden[algo + ".out"] = out.float()
        base = UNet(cfg).double()
        base.load_state_dict({k: v.double() for k, v in sd.items()}, strict=True)
        with torch.no_grad():
            b = base(ex["unet.in.sample"].double(), ex["unet.in.timesteps"], ex["unet.in.encoder_hidden_states"].double())
        print("%s: %d modules, |out - base| max %.3g, |out| max %.3g" % (
            algo, len(mods), (out - b).abs().max().item(), out.abs().max().item()))
    st_write(os.path.join(DATA, "lycoris_golden.safetensors"), golden)
    print("wrote", os.path.join(DATA, "lycoris_{loha,lokr,golden}.safetensors"))


if __name__ == "__main__":
    main()
