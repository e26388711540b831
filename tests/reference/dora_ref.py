#!/usr/bin/env -S /usr/bin/python3
"""dora_ref.py - golden values for tests/test_styles_dora.c (DoRA on a Linear).

PEFT 0.12 (commit e6cd24c9, src/peft/tuners/lora/dora.py, DoraLinearLayer) for a
Linear with weight W [O,I], bias b [O], LoRA A [r,I], B [O,r], scale s and
magnitude m [O], without dropout:

    lora_weight = B @ A
    weight_norm = ||W + s * lora_weight.detach()||_2 per output row, then .detach()
    c           = m / weight_norm
    y           = x W^T + b + (c - 1) * (x W^T) + c * s * (x A^T B^T)

The same maths is written here in plain torch (no peft import), in float64 from
float32 inputs. Gradients are of L = sum(y * R) for a random R ("<case>.r").
Two cases: "small" (O 6, I 5, r 2, N 4) and "mid" (O 24, I 16, r 4, N 10, alpha 8).
m is ||W|| (PEFT's init) perturbed, so c != 1.

Writes tests/data/dora_linear.safetensors (F32, a few KB).
Run:  /usr/bin/python3 tests/reference/dora_ref.py
"""
import json
import os
import struct

import numpy as np
import torch

torch.manual_seed(4321)
T = {}


def put(name, t):
    T[name] = t.detach().to(torch.float32).contiguous().numpy()


def case(name, O, I, r, N, alpha):
    f32 = lambda *s: torch.randn(*s, dtype=torch.float32)
    W, b, A, B, x = f32(O, I) * 0.3, f32(O) * 0.1, f32(r, I) * 0.4, f32(O, r) * 0.4, f32(N, I)
    m0 = torch.linalg.norm(W.double(), dim=1).float()
    m = m0 * (1.0 + 0.2 * torch.rand(O))
    R = f32(N, O)
    s = alpha / r
    Wd, bd = W.double(), b.double()
    Ad, Bd, md, xd = (t.double().requires_grad_(True) for t in (A, B, m, x))
    lora_weight = Bd @ Ad
    weight_norm = torch.linalg.norm(Wd + s * lora_weight.detach(), dim=1).detach()
    c = (md / weight_norm).view(1, -1)
    base = xd @ Wd.T
    y = base + bd + (c - 1) * base + c * (xd @ Ad.T @ Bd.T) * s
    (y * R.double()).sum().backward()
    for k, v in dict(w=W, b=b, a=A, bb=B, m=m, x=x, r=R, y=y, da=Ad.grad, db=Bd.grad, dm=md.grad, dx=xd.grad).items():
        put(f"{name}.{k}", v)
    put(f"{name}.alpha", torch.tensor([alpha], dtype=torch.float32))


case("small", 6, 5, 2, 4, 2.0)
case("mid", 24, 16, 4, 10, 8.0)


def save(path, tensors):
    header, off, blobs = {}, 0, []
    for name in sorted(tensors):
        a = np.ascontiguousarray(tensors[name], dtype="<f4")
        header[name] = {"dtype": "F32", "shape": list(a.shape), "data_offsets": [off, off + a.nbytes]}
        blobs.append(a.tobytes())
        off += a.nbytes
    h = json.dumps(header, separators=(",", ":")).encode()
    h += b" " * ((8 - len(h) % 8) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)))
        f.write(h)
        for blob in blobs:
            f.write(blob)


out = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "data", "dora_linear.safetensors")
save(out, T)
print("wrote", os.path.normpath(out), len(T), "tensors")
