#!/usr/bin/env -S /usr/bin/python3
"""bench_torch.py - the PyTorch side of bench/run.sh: the same steps as bench/bench_train.c,
bench/bench_sample.c and bench/bench_infer.c, on the plain-torch models of this folder
(unet_ref.py, vae_ref.py, clip_text_ref.py: diffusers / transformers semantics, eager
attention, fp32).

Usage: /usr/bin/python3 tests/reference/bench_torch.py WHAT --model DIR [--random] [--res R]
           [--iters N] [--threads T] [--full] [--mode base|merged|unmerged] [--rank 8] [--alpha 8]
  WHAT     train (LoRA, or --full), sample (--mode), vae (decode), textenc
  DIR      a diffusers folder; without --random its real weights are loaded (safetensors read
           by hand, F16 -> F32), with --random only its configs (PyTorch's default init).
  --res    image size (default the VAE's sample_size); latents res / 2^(n_blocks-1).
  --threads torch.set_num_threads (default: all cores).

LoRA: PEFT's LoraLayer semantics written out by hand (no peft installed): every Attention's
to_q, to_k, to_v, to_out.0 becomes y = W x + b + (alpha / r) * B(A(x)), A kaiming-uniform
(a = sqrt(5)) as PEFT initialises lora_A, B zeros; torch.optim.AdamW over the A, B tensors
only (torch defaults: lr 1e-4 here, betas 0.9/0.999, eps 1e-8, weight decay 0.01).
Train step: zero_grad(set_to_none), forward, F.mse_loss, backward, AdamW step.
Sample step: Euler (step 10 of 30, leading spacing) input scaling, U-Net on [uncond; cond]
(batch 2), guidance 7.5, Euler update; merged = W += (alpha/r) B A before timing (B random
N(0, 0.01^2), as the C side), unmerged = the LoRA layers in the forward.
Prints RESULT lines in bench/bench_util.h's form (flops=0: run.sh takes the count from the
C side), best of N after one warm-up, peak RSS from getrusage.
"""
import argparse
import json
import math
import os
import resource
import sys
import time

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bench_textenc_torch  # noqa: E402
import clip_text_ref  # noqa: E402
import unet_ref  # noqa: E402
import vae_ref  # noqa: E402


def rss_mib():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def result(name, seconds, extra=""):
    print("RESULT %s seconds=%.6f flops=0 rss_mib=%.1f%s" % (name, seconds, rss_mib(), extra), flush=True)


def best_of(iters, fn):
    best = 1e30
    for it in range(iters + 1):  # it 0: warm-up
        t0 = time.perf_counter()
        fn()
        dt = time.perf_counter() - t0
        if it > 0:
            best = min(best, dt)
    return best


def load_cfg(model, part):
    with open(os.path.join(model, part, "config.json")) as f:
        return json.load(f)


def load_weights(model, part):
    d = os.path.join(model, part)
    files = [f for f in sorted(os.listdir(d)) if f.endswith(".safetensors")]
    if not files:
        sys.exit("bench_torch.py: no .safetensors in %s" % d)
    sd = {}
    for f in files:
        sd.update(unet_ref.st_read(os.path.join(d, f)))
    return {k: v.float() for k, v in sd.items()}


def latent_size(model, res):
    v = load_cfg(model, "vae")
    R = res or v.get("sample_size", 512)
    return R // (2 ** (len(v["block_out_channels"]) - 1)), v


def make_unet(a):
    cfg = load_cfg(a.model, "unet")
    torch.manual_seed(0)
    m = unet_ref.UNet(cfg)
    if not a.random:
        m.load_state_dict(load_weights(a.model, "unet"), strict=True)
    return m, cfg


# ---------------------------------------------------------------- LoRA (PEFT semantics)
class LoraLinear(nn.Module):
    def __init__(self, base, r, alpha):
        super().__init__()
        self.base_layer = base
        self.lora_A = nn.Linear(base.in_features, r, bias=False)
        self.lora_B = nn.Linear(r, base.out_features, bias=False)
        nn.init.kaiming_uniform_(self.lora_A.weight, a=math.sqrt(5))
        nn.init.zeros_(self.lora_B.weight)
        self.scaling = alpha / r

    def forward(self, x):
        return self.base_layer(x) + self.lora_B(self.lora_A(x)) * self.scaling


def inject_lora(unet, r, alpha):
    """Wraps to_q, to_k, to_v, to_out.0 of every Attention; returns the LoRA layers."""
    layers = []
    for mod in list(unet.modules()):
        if isinstance(mod, unet_ref.Attention):
            for n in ("to_q", "to_k", "to_v"):
                l = LoraLinear(getattr(mod, n), r, alpha)
                setattr(mod, n, l)
                layers.append(l)
            l = LoraLinear(mod.to_out[0], r, alpha)
            mod.to_out[0] = l
            layers.append(l)
    return layers


def merge_lora(unet):
    """W += scaling * B A, then the plain layers go back in place (PEFT merge_and_unload)."""
    with torch.no_grad():
        for mod in list(unet.modules()):
            if isinstance(mod, unet_ref.Attention):
                for n in ("to_q", "to_k", "to_v"):
                    l = getattr(mod, n)
                    l.base_layer.weight += l.scaling * (l.lora_B.weight @ l.lora_A.weight)
                    setattr(mod, n, l.base_layer)
                l = mod.to_out[0]
                l.base_layer.weight += l.scaling * (l.lora_B.weight @ l.lora_A.weight)
                mod.to_out[0] = l.base_layer


# ---------------------------------------------------------------- benchmarks
def bench_train(a):
    m, cfg = make_unet(a)
    h, vcfg = latent_size(a.model, a.res)
    tcfg = load_cfg(a.model, "text_encoder")
    for p in m.parameters():
        p.requires_grad_(a.full)
    if a.full:
        params = list(m.parameters())
    else:
        params = [p for l in inject_lora(m, a.rank, a.alpha) for p in (l.lora_A.weight, l.lora_B.weight)]
    opt = torch.optim.AdamW(params, lr=1e-4)
    g = torch.Generator().manual_seed(3)
    B = a.batch
    xt = torch.randn(B, cfg["in_channels"], h, h, generator=g)
    target = torch.randn(B, cfg["out_channels"], h, h, generator=g)
    ehs = torch.randn(B, 77, tcfg["hidden_size"], generator=g)
    ts = torch.full((B,), 500.0)
    state = {}

    def step():
        opt.zero_grad(set_to_none=True)
        loss = F.mse_loss(m(xt, ts, ehs), target)
        loss.backward()
        opt.step()
        state["loss"] = loss.item()

    t = best_of(a.iters, step)
    n_tr = sum(p.numel() for p in params)
    opt_bytes = sum(s[k].numel() * s[k].element_size() for s in opt.state.values() for k in ("exp_avg", "exp_avg_sq"))
    print("torch %s %s step, B=%d latents %dx%d: %.3f s, %d trainable" % (
        torch.__version__, "full fine-tuning" if a.full else "LoRA", B, h, h, t, n_tr))
    result("train_full" if a.full else "train_lora", t, " loss=%.6g trainable_params=%d optimizer_state_bytes=%d"
           % (state["loss"], n_tr, opt_bytes))


def euler_sigma(model, n_steps, i):
    """diffusers EulerDiscreteScheduler (leading spacing, steps_offset) sigmas i, i+1 and timestep i."""
    with open(os.path.join(model, "scheduler", "scheduler_config.json")) as f:
        s = json.load(f)
    T = s.get("num_train_timesteps", 1000)
    betas = np.linspace(s.get("beta_start", 1e-4) ** 0.5, s.get("beta_end", 0.02) ** 0.5, T, dtype=np.float32) ** 2
    ac = np.cumprod(1.0 - betas, axis=0)
    ratio = T // n_steps
    ts = (np.arange(0, n_steps) * ratio).round()[::-1].astype(np.float32) + s.get("steps_offset", 0)
    sig = np.interp(ts, np.arange(0, T), ((1 - ac) / ac) ** 0.5)
    sig = np.concatenate([sig, [0.0]]).astype(np.float32)
    return float(sig[i]), float(sig[i + 1]), float(ts[i])


def bench_sample(a):
    m, cfg = make_unet(a)
    h, _ = latent_size(a.model, a.res)
    tcfg = load_cfg(a.model, "text_encoder")
    for p in m.parameters():
        p.requires_grad_(False)
    merge_s = 0.0
    if a.mode != "base":
        layers = inject_lora(m, a.rank, a.alpha)
        g = torch.Generator().manual_seed(11)
        with torch.no_grad():
            for l in layers:
                l.lora_B.weight.copy_(0.01 * torch.randn(l.lora_B.weight.shape, generator=g))
                l.requires_grad_(False)
        if a.mode == "merged":
            t0 = time.perf_counter()
            merge_lora(m)
            merge_s = time.perf_counter() - t0
    m.eval()
    sigma, sigma_next, tstep = euler_sigma(a.model, 30, 10)
    g = torch.Generator().manual_seed(5)
    x0 = torch.randn(1, cfg["in_channels"], h, h, generator=g)
    ehs = torch.randn(2, 77, tcfg["hidden_size"], generator=g)
    ts = torch.full((2,), tstep)
    out = {}

    def step():
        with torch.no_grad():
            x = x0.clone()
            xin = x / ((sigma ** 2 + 1) ** 0.5)
            e = m(torch.cat([xin, xin]), ts, ehs)
            eu, ec = e.chunk(2)
            eps = eu + 7.5 * (ec - eu)
            out["x"] = x + (sigma_next - sigma) * eps

    t = best_of(a.iters, step)
    print("torch guided sampling step (%s), 2x%dx%dx%d: %.3f s" % (a.mode, cfg["in_channels"], h, h, t))
    result("sample_" + a.mode, t, " merge_s=%.4f x0=%.6g" % (merge_s, out["x"].flatten()[0].item()))


def bench_vae(a):
    cfg = load_cfg(a.model, "vae")
    torch.manual_seed(42)
    m = vae_ref.AutoencoderKL(cfg).eval()
    if not a.random:
        m.load_state_dict(load_weights(a.model, "vae"), strict=True)
    h, _ = latent_size(a.model, a.res)
    lc = cfg["latent_channels"]
    lat = torch.cos(0.37 * torch.arange(lc * h * h, dtype=torch.float32)).reshape(1, lc, h, h)

    def dec():
        with torch.no_grad():
            m.decode(lat)

    t = best_of(a.iters, dec)
    print("torch VAE decode 1x%dx%dx%d: %.3f s" % (lc, h, h, t))
    result("vae_decode", t)


def bench_textenc(a):
    cfg = load_cfg(a.model, "text_encoder")
    D, L, V = cfg["hidden_size"], cfg["num_hidden_layers"], cfg["vocab_size"]
    if a.random:
        sd = bench_textenc_torch.bench_weights(cfg)
    else:
        sd = load_weights(a.model, "text_encoder")
    eos, T = cfg["eos_token_id"], 77
    ids = torch.full((1, T), V - 1 if eos == 2 else eos, dtype=torch.int64)
    ids[0, 0] = cfg["bos_token_id"] if cfg["bos_token_id"] < V else 0
    ids[0, 1:16] = torch.tensor([(320 + 97 * t) % V for t in range(1, 16)])

    def fwd():
        with torch.no_grad():
            clip_text_ref.clip_text_forward(sd, cfg, ids)

    t = best_of(a.iters, fwd)
    print("torch text encoder D=%d L=%d, 1x%d tokens: %.4f s" % (D, L, T, t))
    result("textenc", t)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("what", choices=["train", "sample", "vae", "textenc"])
    ap.add_argument("--model", required=True)
    ap.add_argument("--random", action="store_true")
    ap.add_argument("--res", type=int, default=0)
    ap.add_argument("--iters", type=int, default=3)
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--full", action="store_true")
    ap.add_argument("--mode", default="base", choices=["base", "merged", "unmerged"])
    ap.add_argument("--rank", type=int, default=8)
    ap.add_argument("--alpha", type=float, default=8.0)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    {"train": bench_train, "sample": bench_sample, "vae": bench_vae, "textenc": bench_textenc}[a.what](a)


if __name__ == "__main__":
    main()
