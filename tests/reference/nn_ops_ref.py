#!/usr/bin/env -S /usr/bin/python3
"""nn_ops_ref.py - golden values for tests/test_nn_forward.c and test_nn_grad.c.

Writes tests/data/nn_ops_ref.safetensors (F32 tensors, a few KB) holding inputs,
outputs and gradients of each nn/ kernel at tiny odd shapes. Run with the
system python that has torch 1.13:  /usr/bin/python3 tests/reference/nn_ops_ref.py

Values are computed in float64 from float32 inputs (the "true" answer for those
inputs) except the timestep embedding, which follows diffusers'
get_timestep_embedding in float32 step by step (the float32 arguments of
sin/cos are part of its semantics). Gradients are of L = sum(out * R) for a
random R stored alongside ("<op>.r").
"""
import json
import math
import os
import struct

import numpy as np
import torch
import torch.nn.functional as F

torch.manual_seed(1234)
T = {}


def put(name, t):
    T[name] = t.detach().to(torch.float32).contiguous().numpy()


def rnd(*shape):
    return torch.randn(*shape, dtype=torch.float32)


def grads(name, fn, inputs):
    """Stores out = fn(*inputs) (float64) and grads of sum(out * R)."""
    xs = [x.double().requires_grad_(True) for x in inputs]
    out = fn(*xs)
    r = rnd(*out.shape)
    (out * r.double()).sum().backward()
    put(name + ".out", out)
    put(name + ".r", r)
    return [x.grad for x in xs]


# ---- linear: x [4,5], w [3,5], b [3]
x, w, b = rnd(4, 5), rnd(3, 5), rnd(3)
put("linear.x", x); put("linear.w", w); put("linear.b", b)
g = grads("linear", lambda x, w, b: F.linear(x, w, b), [x, w, b])
put("linear.dx", g[0]); put("linear.dw", g[1]); put("linear.db", g[2])

# ---- conv2d 3x3 stride 2 pad 1: x [2,3,7,6], w [4,3,3,3]
x, w, b = rnd(2, 3, 7, 6), rnd(4, 3, 3, 3), rnd(4)
put("conv.x", x); put("conv.w", w); put("conv.b", b)
g = grads("conv", lambda x, w, b: F.conv2d(x, w, b, stride=2, padding=1), [x, w, b])
put("conv.dx", g[0]); put("conv.dw", g[1]); put("conv.db", g[2])
# ---- same input, asymmetric pad (left 0, right 1, top 0, bottom 1) then stride 2 (VAE downsample)
g = grads("conv_asym", lambda x, w, b: F.conv2d(F.pad(x, (0, 1, 0, 1)), w, b, stride=2), [x, w, b])
put("conv_asym.dx", g[0]); put("conv_asym.dw", g[1]); put("conv_asym.db", g[2])

# ---- groupnorm: x [2,6,5,3], G=3, eps 1e-6; inputs offset so the mean is not ~0
x, ga, be = rnd(2, 6, 5, 3) * 2.0 + 3.0, rnd(6), rnd(6)
put("gn.x", x); put("gn.gamma", ga); put("gn.beta", be)
g = grads("gn", lambda x, ga, be: F.group_norm(x, 3, ga, be, eps=1e-6), [x, ga, be])
put("gn.dx", g[0]); put("gn.dgamma", g[1]); put("gn.dbeta", g[2])
xd = x.double()
put("gn_silu.out", F.silu(F.group_norm(xd, 3, ga.double(), be.double(), eps=1e-6)))

# ---- layernorm: x [3,10], eps 1e-5
x, ga, be = rnd(3, 10) + 1.0, rnd(10), rnd(10)
put("ln.x", x); put("ln.gamma", ga); put("ln.beta", be)
g = grads("ln", lambda x, ga, be: F.layer_norm(x, (10,), ga, be, eps=1e-5), [x, ga, be])
put("ln.dx", g[0]); put("ln.dgamma", g[1]); put("ln.dbeta", g[2])

# ---- activations on 41 values spread over [-6, 6]
x = torch.linspace(-6, 6, 41, dtype=torch.float32) + 0.01 * rnd(41)
put("act.x", x)
put("act.silu", F.silu(x.double()))
put("act.gelu", F.gelu(x.double()))
put("act.quick_gelu", x.double() * torch.sigmoid(1.702 * x.double()))
# ---- geglu: in [3, 2*5] = [hidden | gate]
x = rnd(3, 10)
put("geglu.x", x)
g = grads("geglu", lambda x: x.chunk(2, dim=-1)[0] * F.gelu(x.chunk(2, dim=-1)[1]), [x])
put("geglu.dx", g[0])

# ---- attention: B2, NH2, HD6, Tq5, Tk7, explicit softmax(q k^T * scale) v
B, NH, HD, Tq, Tk = 2, 2, 6, 5, 7
q, k, v = rnd(B, Tq, NH * HD), rnd(B, Tk, NH * HD), rnd(B, Tk, NH * HD)
put("att.q", q); put("att.k", k); put("att.v", v)
scale = 1.0 / math.sqrt(HD)


def attention(q, k, v, causal):
    qh = q.view(B, Tq, NH, HD).transpose(1, 2)
    kh = k.view(B, Tk, NH, HD).transpose(1, 2)
    vh = v.view(B, Tk, NH, HD).transpose(1, 2)
    s = qh @ kh.transpose(-1, -2) * scale  # [B,NH,Tq,Tk]
    if causal:  # key j masked for query i when j > i (top-left aligned, as torch's is_causal)
        mask = torch.ones(Tq, Tk, dtype=torch.bool).tril(0)
        s = s.masked_fill(~mask, float("-inf"))
    o = torch.softmax(s, dim=-1) @ vh
    return o.transpose(1, 2).reshape(B, Tq, NH * HD), torch.logsumexp(s, dim=-1)


for causal in (0, 1):
    n = "att_causal" if causal else "att"
    _, lse = attention(q.double(), k.double(), v.double(), causal)
    put(n + ".lse", lse)
    g = grads(n, lambda q, k, v: attention(q, k, v, causal)[0], [q, k, v])
    put(n + ".dq", g[0]); put(n + ".dk", g[1]); put(n + ".dv", g[2])


# ---- timestep embedding, diffusers get_timestep_embedding written out in float32
def timestep_embedding(t, dim, flip, shift, max_period=10000):
    half = dim // 2
    exponent = -math.log(max_period) * torch.arange(0, half, dtype=torch.float32)
    exponent = exponent / (half - shift)
    emb = t[:, None].float() * torch.exp(exponent)[None, :]
    emb = torch.cat([torch.sin(emb), torch.cos(emb)], dim=-1)
    if flip:
        emb = torch.cat([emb[:, half:], emb[:, :half]], dim=-1)
    if dim % 2 == 1:
        emb = F.pad(emb, (0, 1, 0, 0))
    return emb


t = torch.tensor([0.0, 1.0, 37.0, 500.5, 999.0], dtype=torch.float32)
put("temb.t", t)
put("temb.sd", timestep_embedding(t, 320, True, 0.0))    # SD U-Net: flip, shift 0
put("temb.odd", timestep_embedding(t, 7, False, 1.0))    # diffusers defaults, odd dim


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


out = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "data", "nn_ops_ref.safetensors")
save(out, T)
print("wrote", os.path.normpath(out), len(T), "tensors")
