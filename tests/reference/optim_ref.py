#!/usr/bin/env -S /usr/bin/python3
"""optim_ref.py - golden file for tests/test_optim.c: torch.optim.AdamW steps
with a diffusers-style LR schedule (written out here as LambdaLR factors, since
diffusers is not installed) and clip_grad_norm_.

Writes tests/data/optim_golden.safetensors:
  p{i}.init, p{i}.grad.s{k} (gradients fed at step k), p{i}.after (weights after
  all steps), lr.{schedule} (the lr at steps 0..N-1 for each schedule),
  clip.grads (before), clip.after, clip.norm.
Run: /usr/bin/python3 tests/reference/optim_ref.py
"""
import json, math, os, struct
import numpy as np
import torch

torch.manual_seed(0)
out = os.path.join(os.path.dirname(__file__), "..", "data", "optim_golden.safetensors")
tensors = {}

shapes = [(7, 5), (13,), (3, 4, 2)]
params = [torch.nn.Parameter(torch.randn(s)) for s in shapes]
for i, p in enumerate(params):
    tensors[f"p{i}.init"] = p.detach().clone()
# weight decay on p0 and p2 only (param groups), lr from a warmup+cosine schedule
steps, warmup, base_lr = 6, 2, 1e-2
def cosine(step):
    if step < warmup:
        return step / max(1, warmup)
    progress = (step - warmup) / max(1, steps - warmup)
    return max(0.0, 0.5 * (1.0 + math.cos(math.pi * 0.5 * 2.0 * progress)))
opt = torch.optim.AdamW([{"params": [params[0], params[2]], "weight_decay": 0.05},
                         {"params": [params[1]], "weight_decay": 0.0}],
                        lr=base_lr, betas=(0.9, 0.99), eps=1e-6)
sched = torch.optim.lr_scheduler.LambdaLR(opt, cosine)
for k in range(steps):
    for i, p in enumerate(params):
        g = torch.randn(p.shape) * (0.1 + k)
        p.grad = g
        tensors[f"p{i}.grad.s{k}"] = g.clone()
    opt.step()
    sched.step()
for i, p in enumerate(params):
    tensors[f"p{i}.after"] = p.detach().clone()

def linear(step, total=10, w=3):
    if step < w:
        return step / max(1, w)
    return max(0.0, (total - step) / max(1, total - w))
def cwarm(step, w=3):
    return step / max(1, w) if step < w else 1.0
def cos10(step, total=10, w=3):
    if step < w:
        return step / max(1, w)
    progress = (step - w) / max(1, total - w)
    return max(0.0, 0.5 * (1.0 + math.cos(math.pi * 0.5 * 2.0 * progress)))
for name, fn in [("linear", linear), ("constant_with_warmup", cwarm), ("cosine", cos10)]:
    tensors[f"lr.{name}"] = torch.tensor([2e-3 * fn(s) for s in range(12)], dtype=torch.float32)

cg = [torch.randn(50) * 3, torch.randn(4, 4)]
tensors["clip.grads0"] = cg[0].clone(); tensors["clip.grads1"] = cg[1].clone()
ps = [torch.nn.Parameter(torch.zeros_like(g)) for g in cg]
for p, g in zip(ps, cg):
    p.grad = g.clone()
norm = torch.nn.utils.clip_grad_norm_(ps, 1.5)
tensors["clip.norm"] = torch.tensor([float(norm)], dtype=torch.float32)
tensors["clip.after0"] = ps[0].grad.clone(); tensors["clip.after1"] = ps[1].grad.clone()

# minimal safetensors writer
header, blobs, off = {}, [], 0
for k in sorted(tensors):
    a = tensors[k].detach().contiguous().numpy().astype(np.float32)
    b = a.tobytes()
    header[k] = {"dtype": "F32", "shape": list(a.shape), "data_offsets": [off, off + len(b)]}
    blobs.append(b); off += len(b)
h = json.dumps(header).encode()
h += b" " * ((8 - len(h) % 8) % 8)
with open(out, "wb") as f:
    f.write(struct.pack("<Q", len(h))); f.write(h)
    for b in blobs: f.write(b)
print("wrote", out)
