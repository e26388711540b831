#!/usr/bin/env -S /usr/bin/python3
"""bench_textenc_torch.py - PyTorch twin of bench/bench_textenc.c.

Usage: /usr/bin/python3 tests/reference/bench_textenc_torch.py [config.json] [threads]
Same model as tests/reference/clip_text_ref.py (plain torch, eager attention as transformers
4.45's "eager" implementation, fp32), random weights, one 77-token prompt, B=1, hidden states
kept; min and median of 7 forwards after a warm-up, torch.set_num_threads(threads, default 2).
"""
import json
import os
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from clip_text_ref import clip_text_forward  # noqa: E402

REPS = 7


def bench_weights(cfg):
    """The benchmark's seeded random CLIP text weights (std 0.02, unit LayerNorms, zero biases);
    tests/reference/bench_torch.py --random uses the same."""
    D, Fh, L, V, P = (cfg["hidden_size"], cfg["intermediate_size"], cfg["num_hidden_layers"], cfg["vocab_size"],
                      cfg["max_position_embeddings"])
    g = torch.Generator().manual_seed(42)
    rn = lambda *s: torch.randn(*s, generator=g) * 0.02  # noqa: E731
    p = "text_model."
    sd = {p + "embeddings.token_embedding.weight": rn(V, D), p + "embeddings.position_embedding.weight": rn(P, D),
          p + "final_layer_norm.weight": torch.ones(D), p + "final_layer_norm.bias": torch.zeros(D)}
    for i in range(L):
        q = f"{p}encoder.layers.{i}."
        for n in ("layer_norm1", "layer_norm2"):
            sd[q + n + ".weight"], sd[q + n + ".bias"] = torch.ones(D), torch.zeros(D)
        for n in ("q_proj", "k_proj", "v_proj", "out_proj"):
            sd[q + f"self_attn.{n}.weight"], sd[q + f"self_attn.{n}.bias"] = rn(D, D), torch.zeros(D)
        sd[q + "mlp.fc1.weight"], sd[q + "mlp.fc1.bias"] = rn(Fh, D), torch.zeros(Fh)
        sd[q + "mlp.fc2.weight"], sd[q + "mlp.fc2.bias"] = rn(D, Fh), torch.zeros(D)
    return sd


def main():
    here = os.path.dirname(os.path.abspath(__file__))
    shared = os.environ.get("SL_SHARED_DIR", os.path.join(here, "..", "..", "..", "shared"))
    path = sys.argv[1] if len(sys.argv) > 1 else os.path.join(shared, "sd15", "text_encoder", "config.json")
    threads = int(sys.argv[2]) if len(sys.argv) > 2 else 2
    torch.set_num_threads(threads)
    cfg = json.load(open(path))
    V = cfg["vocab_size"]
    sd = bench_weights(cfg)
    eos = cfg["eos_token_id"]
    T = 77
    ids = torch.full((1, T), V - 1 if eos == 2 else eos, dtype=torch.int64)
    ids[0, 0] = cfg["bos_token_id"] if cfg["bos_token_id"] < V else 0
    ids[0, 1:16] = torch.tensor([(320 + 97 * t) % V for t in range(1, 16)])
    times = []
    with torch.no_grad():
        clip_text_forward(sd, cfg, ids)
        for _ in range(REPS):
            t0 = time.perf_counter()
            clip_text_forward(sd, cfg, ids)
            times.append(time.perf_counter() - t0)
    times.sort()
    print(f"  pytorch  forward: min {1e3 * times[0]:8.1f} ms  median {1e3 * times[REPS // 2]:8.1f} ms   "
          f"(torch {torch.__version__}, {torch.get_num_threads()} threads)")


if __name__ == "__main__":
    main()
