#!/usr/bin/env -S /usr/bin/python3
"""bench_vae_torch.py - the PyTorch side of bench/bench_vae.c.

SD-1.5-size AutoencoderKL (tests/reference/vae_ref.py, PyTorch's default
random init), torch.set_num_threads(2), fp32, no grad: encodes 1x3x256x256 and
decodes 1x4x32x32, printing time, GFLOP/s and peak RSS in the same form as the
C benchmark. FLOPs are counted with forward hooks (2 * MACs of every Conv2d and
Linear, plus Q K^T and P V of the attention), independently of the C count.

Usage: /usr/bin/python3 tests/reference/bench_vae_torch.py [config.json] [reps]
"""
import json
import os
import resource
import sys
import time

import torch
import torch.nn as nn

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import vae_ref  # noqa: E402


def peak_rss_mib():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def add_flop_hooks(m, total):
    """Adds 2*MACs of every Conv2d / Linear and the attention matmuls to total[0]."""

    def conv_hook(mod, inp, out):
        total[0] += 2.0 * out.numel() * mod.in_channels * mod.kernel_size[0] * mod.kernel_size[1]

    def lin_hook(mod, inp, out):
        total[0] += 2.0 * out.numel() * mod.in_features

    def attn_hook(mod, inp, out):
        b, c, h, w = inp[0].shape
        total[0] += 2.0 * b * (h * w) ** 2 * c * 2

    hs = []
    for mod in m.modules():
        if isinstance(mod, nn.Conv2d):
            hs.append(mod.register_forward_hook(conv_hook))
        elif isinstance(mod, nn.Linear):
            hs.append(mod.register_forward_hook(lin_hook))
        elif isinstance(mod, vae_ref.Attn):
            hs.append(mod.register_forward_hook(attn_hook))
    return hs


def main():
    torch.set_num_threads(2)
    shared = os.environ.get("SL_SHARED_DIR", os.path.join(vae_ref.ROOT, "..", "shared"))
    path = sys.argv[1] if len(sys.argv) > 1 and sys.argv[1] else os.path.join(shared, "sd15", "vae", "config.json")
    reps = int(sys.argv[2]) if len(sys.argv) > 2 else 1
    cfg = json.load(open(path))
    torch.manual_seed(42)
    m = vae_ref.AutoencoderKL(cfg).eval()
    n = sum(p.numel() for p in m.parameters())
    print(f"bench_vae (torch {torch.__version__}, {torch.get_num_threads()} threads): {n} params, "
          f"weights {n * 4 / 1048576:.1f} MiB, peak RSS after load {peak_rss_mib():.1f} MiB")
    img = torch.sin(0.001 * torch.arange(3 * 256 * 256, dtype=torch.float32)).reshape(1, 3, 256, 256)
    lat = torch.cos(0.37 * torch.arange(4 * 32 * 32, dtype=torch.float32)).reshape(1, 4, 32, 32)
    for what, fn, shape in (("encode", lambda: m.encode(img), "1x3x256x256"),
                            ("decode", lambda: m.decode(lat), "1x4x32x32")):
        times, total = [], [0.0]
        for r in range(reps):
            hooks = add_flop_hooks(m, total) if r == 0 else []  # count during the first call
            t0 = time.perf_counter()
            with torch.no_grad():
                fn()
            times.append(time.perf_counter() - t0)
            for h in hooks:
                h.remove()
        flops = total[0]
        line = (f"{what} {shape}: {times[0]:.3f} s, {flops * 1e-9:.1f} GFLOP, "
                f"{flops * 1e-9 / times[0]:.1f} GFLOP/s")
        if reps > 1:
            b = min(times[1:])
            line += f" (best later {b:.3f} s, {flops * 1e-9 / b:.1f} GFLOP/s)"
        print(line + f", peak RSS {peak_rss_mib():.1f} MiB")


if __name__ == "__main__":
    main()
