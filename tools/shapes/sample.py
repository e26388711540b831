#!/usr/bin/env -S /usr/bin/python3
"""sample.py - DDIM samples from models/shapes64 in PyTorch (to look at what the model draws).

Usage: /usr/bin/python3 tools/shapes/sample.py [--model DIR] [--out grid.png] [--steps 30]
          [--guidance 5] [--seed 0] [--ckpt WORK/unet.pt] [PROMPT ...]
Loads the diffusers folder (F16 weights, fp32 math) with the tests/reference modules,
samples each prompt with DDIM (diffusers DDIMScheduler semantics: scaled_linear betas,
"leading" spacing, steps_offset 1, set_alpha_to_one false, eta 0) and classifier-free
guidance (empty prompt as the unconditional), decodes latents / scaling_factor and writes
a grid (one row per prompt, --n images each). With --ckpt it also reports how far the U-Net
output with F16-rounded weights is from the fp32 EMA weights of that checkpoint.
"""
import argparse
import json
import os
import sys

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
import numpy as np  # noqa: E402
import torch  # noqa: E402
from PIL import Image  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.normpath(os.path.join(HERE, "..", ".."))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(ROOT, "tests", "reference"))
import clip_text_ref  # noqa: E402
import clip_tokenizer_ref  # noqa: E402
import unet_ref  # noqa: E402
import vae_ref  # noqa: E402

PROMPTS = [
    "a large red circle in the center on a white background",
    "a large blue square on the left on a yellow background",
    "a medium green triangle at the top on a black background",
    "two small yellow stars in the center on a purple background",
    "three small white crosses at the bottom on a blue background",
    "a medium red circle above a medium blue square on a white background",
    "a large orange ring to the right of a small green star on a gray background",
    "two small pink circles below a large black triangle on a green background",
]


def load(model):
    tok = clip_tokenizer_ref.Tok(os.path.join(model, "tokenizer"))
    te_cfg = json.load(open(os.path.join(model, "text_encoder", "config.json")))
    te_sd = {k: v.float() for k, v in clip_text_ref.st_load(os.path.join(model, "text_encoder", "model.safetensors")).items()}
    un_cfg = json.load(open(os.path.join(model, "unet", "config.json")))
    un = unet_ref.UNet(un_cfg)
    un.load_state_dict({k: v.float() for k, v in clip_text_ref.st_load(
        os.path.join(model, "unet", "diffusion_pytorch_model.safetensors")).items()}, strict=True)
    vae_cfg = json.load(open(os.path.join(model, "vae", "config.json")))
    vae = vae_ref.AutoencoderKL(vae_cfg)
    vae.load_state_dict({k: v.float() for k, v in clip_text_ref.st_load(
        os.path.join(model, "vae", "diffusion_pytorch_model.safetensors")).items()}, strict=True)
    return tok, te_cfg, te_sd, un, vae, vae_cfg["scaling_factor"]


def encode(tok, te_cfg, te_sd, prompts):
    ids = torch.tensor([tok.encode(p)[0] for p in prompts], dtype=torch.int64)
    return clip_text_ref.clip_text_forward(te_sd, te_cfg, ids)[0]


@torch.no_grad()
def ddim(un, cond, unc, steps, guidance, gen):
    betas = torch.linspace(0.00085 ** 0.5, 0.012 ** 0.5, 1000, dtype=torch.float64) ** 2
    ac = torch.cumprod(1 - betas, 0)
    ratio = 1000 // steps
    ts = (np.arange(0, steps) * ratio).round()[::-1].astype(np.int64) + 1  # leading + steps_offset
    B = cond.shape[0]
    x = torch.randn((B, 4, 16, 16), generator=gen)
    for t in ts:
        inp = torch.cat([x, x])
        tt = torch.full((2 * B,), float(t))
        e_c, e_u = un(inp, tt, torch.cat([cond, unc])).chunk(2)
        eps = e_u + guidance * (e_c - e_u)
        a_t = ac[t].item()
        prev = t - ratio
        a_p = ac[prev].item() if prev >= 0 else ac[0].item()  # set_alpha_to_one False
        x0 = (x - (1 - a_t) ** 0.5 * eps) / a_t ** 0.5
        x = a_p ** 0.5 * x0 + (1 - a_p) ** 0.5 * eps
    return x


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("prompts", nargs="*")
    ap.add_argument("--model", default=os.path.join(ROOT, "models", "shapes64"))
    ap.add_argument("--out", default="/tmp/shapes64_samples.png")
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--guidance", type=float, default=5.0)
    ap.add_argument("--n", type=int, default=4)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--ckpt")
    ap.add_argument("--threads", type=int, default=2)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    tok, te_cfg, te_sd, un, vae, scale = load(a.model)
    prompts = a.prompts or PROMPTS
    if a.ckpt:
        st = torch.load(a.ckpt)
        n_te = len(st["te"])
        keys = [k for k, _ in un.named_parameters()]
        fp32 = unet_ref.UNet(un.cfg)
        fp32.load_state_dict(dict(zip(keys, st["ema"][n_te:])), strict=True)
        g = torch.Generator().manual_seed(5)
        x = torch.randn(4, 4, 16, 16, generator=g)
        with torch.no_grad():
            ehs = encode(tok, te_cfg, te_sd, (prompts * 4)[:4])
            for t in (50.0, 500.0, 950.0):
                tt = torch.full((4,), t)
                r, h = fp32(x, tt, ehs), un(x, tt, ehs)
                print("F16 weights vs fp32 (t=%g): max|diff| %.2e, rms diff / rms out %.2e"
                      % (t, (r - h).abs().max().item(), ((r - h).pow(2).mean() / r.pow(2).mean()).sqrt().item()))
    gen = torch.Generator().manual_seed(a.seed)
    rows = []
    with torch.no_grad():
        unc1 = encode(tok, te_cfg, te_sd, [""])
        for p in prompts:
            cond = encode(tok, te_cfg, te_sd, [p] * a.n)
            z = ddim(un, cond, unc1.expand(a.n, -1, -1), a.steps, a.guidance, gen)
            img = vae.decode(z / scale).clamp(-1, 1)
            rows.append(((img + 1) * 127.5).round().byte().permute(0, 2, 3, 1).numpy())
            print(p, flush=True)
    s = 2
    grid = Image.new("RGB", (a.n * 64 * s, len(rows) * 64 * s), (255, 255, 255))
    for r, row in enumerate(rows):
        for c, im in enumerate(row):
            grid.paste(Image.fromarray(im).resize((64 * s, 64 * s), Image.NEAREST), (c * 64 * s, r * 64 * s))
    grid.save(a.out)
    print("wrote", a.out)


if __name__ == "__main__":
    main()
