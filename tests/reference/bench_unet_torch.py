#!/usr/bin/env -S /usr/bin/python3
"""bench_unet_torch.py - the PyTorch side of bench/bench_unet.c (same shapes, 2 threads).

Usage: /usr/bin/python3 tests/reference/bench_unet_torch.py [config.json] [--hw 32] [--batch 1]
       [--tokens 77] [--iters 1] [--full]
Default config: $SL_SHARED_DIR/sd15/unet/config.json. Random weights (3.4 GB for SD 1.5).
Without --full the weights are frozen and backward computes the input gradient
(the LoRA case); --full makes every weight require grad.
The model is tests/reference/unet_ref.py's plain-torch UNet (eager attention, fp32).
"""
import argparse
import os
import resource
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import unet_ref  # noqa: E402


def main():
    ap = argparse.ArgumentParser()
    shared = os.environ.get("SL_SHARED_DIR", "../shared")
    ap.add_argument("config", nargs="?", default=os.path.join(shared, "sd15", "unet", "config.json"))
    ap.add_argument("--hw", type=int, default=32)
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--tokens", type=int, default=77)
    ap.add_argument("--iters", type=int, default=1)
    ap.add_argument("--full", action="store_true")
    a = ap.parse_args()
    torch.set_num_threads(2)
    torch.manual_seed(0)
    import json
    cfg = json.load(open(a.config))
    t0 = time.time()
    m = unet_ref.UNet(cfg)
    for p in m.parameters():
        p.requires_grad_(a.full)
    n = sum(p.numel() for p in m.parameters())
    print("config %s: %d weights (%.2f GB), init %.1f s" % (a.config, n, n * 4e-9, time.time() - t0))
    x = torch.randn(a.batch, cfg.get("in_channels", 4), a.hw, a.hw, requires_grad=True)
    ehs = torch.randn(a.batch, a.tokens, cfg["cross_attention_dim"])
    ts = torch.full((a.batch,), 500.0)
    best_f = best_b = 1e30
    for _ in range(a.iters):
        t1 = time.time()
        out = m(x, ts, ehs)
        t2 = time.time()
        out.backward(torch.randn_like(out))
        t3 = time.time()
        best_f = min(best_f, t2 - t1)
        best_b = min(best_b, t3 - t2)
        x.grad = None
        m.zero_grad(set_to_none=True)
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / (1024.0 * 1024.0)
    print("torch %s unet %s B=%d %dx%d T=%d: forward %.2f s, backward %.2f s, total %.2f s, peak RSS %.2f GB"
          % (torch.__version__, "full-grad" if a.full else "frozen", a.batch, a.hw, a.hw, a.tokens, best_f, best_b,
             best_f + best_b, rss))


if __name__ == "__main__":
    main()
