#!/usr/bin/env -S /usr/bin/python3
"""resize_ref.py - golden values for tests/test_styles_resize.c (LoRA resize / SVD merge).

The maths of kohya-ss/sd-scripts networks/resize_lora.py (rank_resize, index_sv_ratio,
index_sv_fro, index_sv_cumulative, extract_linear / extract_conv) and
networks/svd_merge_lora.py (sum of ratio * alpha/r * up @ down, then SVD), written here in
plain torch (no sd-scripts import), float64 from float32 inputs:

    delta  = B @ A                      (conv: A [r,Ci,k,k] flattened to [r, Ci*k*k])
    U, S, Vh = torch.linalg.svd(delta)
    rank-R delta (what the resized adapter applies) = s * U[:, :R] diag(S[:R]) Vh[:R]

Cases ("lin" O 24, I 16, r 8; "conv" Co 12, Ci 4, k 3, r 6): B and A are built as
U diag(sv) M and M^-1 V^T (random orthonormal U, V, random mixing M) so the spectrum is
known and no dynamic rank lands on a tie. Per case: a, b, alpha, S (the singular values
of B A, unscaled as kohya's), delta_R (scaled, at the fixed rank R), rank_fro / rank_ratio
/ rank_cum (the rank kohya picks for sv_fro:0.9, sv_ratio:5, sv_cumulative:0.85).
Merge ("m"): adapter 1 has lin (r 4, alpha 2), adapter 2 lin (r 3, alpha 3) and conv
(Co 8, Ci 3, k 3, r 2, alpha 1); weights 0.7 and -0.4; m.lin.sum, m.conv.sum (the weighted
sums of scaled deltas) and m.lin.r3 (the best rank-3 approximation of m.lin.sum).

Writes tests/data/resize_golden.safetensors (F32, a few KB).
Run:  /usr/bin/python3 tests/reference/resize_ref.py
"""
import json
import os
import struct

import numpy as np
import torch

torch.manual_seed(2020)
T = {}
MIN_SV = 1e-6
FRO, RATIO, CUM = 0.9, 5.0, 0.85


def put(name, t):
    T[name] = torch.as_tensor(t).detach().to(torch.float32).contiguous().numpy()


def index_sv_cumulative(S, target):
    c = torch.cumsum(S, 0) / S.sum()
    return max(0, min(int(torch.searchsorted(c, torch.tensor([target], dtype=S.dtype))), len(S) - 1)), c


def index_sv_fro(S, target):
    c = torch.cumsum(S * S, 0) / (S * S).sum()
    return max(0, min(int(torch.searchsorted(c, torch.tensor([target * target], dtype=S.dtype))), len(S) - 1)), c


def index_sv_ratio(S, target):
    return max(0, min(int((S > S[0] / target).sum()) - 1, len(S) - 1))


def orth(n, k):
    q, _ = torch.linalg.qr(torch.randn(n, k, dtype=torch.float64))
    return q


def factors(O, K, sv):
    r = len(sv)
    M = torch.randn(r, r, dtype=torch.float64) + 2 * torch.eye(r, dtype=torch.float64)
    B = orth(O, r) @ torch.diag(torch.tensor(sv, dtype=torch.float64)) @ M
    A = torch.linalg.inv(M) @ orth(K, r).T
    return A.float(), B.float()


def case(name, O, Ci, k, sv, alpha, R):
    K = Ci * k * k
    A, B = factors(O, K, sv)
    r = len(sv)
    d = B.double() @ A.double()
    U, S, Vh = torch.linalg.svd(d)
    s = alpha / r
    i_fro, c_fro = index_sv_fro(S, FRO)
    i_cum, c_cum = index_sv_cumulative(S, CUM)
    i_rat = index_sv_ratio(S, RATIO)
    # no pick on a tie: the C side computes S in its own way
    assert abs(c_fro[i_fro] - FRO * FRO) > 1e-3 and (i_fro == 0 or abs(c_fro[i_fro - 1] - FRO * FRO) > 1e-3)
    assert abs(c_cum[i_cum] - CUM) > 1e-3 and (i_cum == 0 or abs(c_cum[i_cum - 1] - CUM) > 1e-3)
    assert float(((S / (S[0] / RATIO)) - 1).abs().min()) > 1e-3
    assert float(S[0]) > MIN_SV
    put(f"{name}.a", A.reshape(r, Ci, k, k) if k > 1 else A)
    put(f"{name}.b", B.reshape(O, r, 1, 1) if k > 1 else B)
    put(f"{name}.alpha", torch.tensor([alpha]))
    put(f"{name}.S", S[: min(O, K)])
    put(f"{name}.delta_r", s * (U[:, :R] @ torch.diag(S[:R]) @ Vh[:R]))
    put(f"{name}.R", torch.tensor([R]))
    for key, i in (("rank_fro", i_fro), ("rank_ratio", i_rat), ("rank_cum", i_cum)):
        put(f"{name}.{key}", torch.tensor([min(i + 1, r)]))


case("lin", 24, 16, 1, [8, 5, 3, 2, 1.2, 0.7, 0.4, 0.2], 4.0, 3)
case("conv", 12, 4, 3, [6, 2.5, 1.5, 0.8, 0.3, 0.1], 3.0, 2)
put("params", torch.tensor([FRO, RATIO, CUM]))

# merge: two adapters, a shared linear and a conv only in the second
f32 = lambda *s: torch.randn(*s, dtype=torch.float32) * 0.5
w1, w2 = 0.7, -0.4
a1, b1, a2, b2 = f32(4, 12), f32(20, 4), f32(3, 12), f32(20, 3)
ca, cb = f32(2, 3, 3, 3), f32(8, 2, 1, 1)
lin = w1 * (2.0 / 4) * (b1.double() @ a1.double()) + w2 * (3.0 / 3) * (b2.double() @ a2.double())
conv = w2 * (1.0 / 2) * (cb.double().reshape(8, 2) @ ca.double().reshape(2, 27))
U, S, Vh = torch.linalg.svd(lin)
for k, v in dict(a1=a1, b1=b1, a2=a2, b2=b2, ca=ca, cb=cb).items():
    put(f"m.{k}", v)
put("m.w", torch.tensor([w1, w2]))
put("m.lin.sum", lin)
put("m.conv.sum", conv.reshape(8, 3, 3, 3))
put("m.lin.r3", U[:, :3] @ torch.diag(S[:3]) @ Vh[:3])


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


out = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "data", "resize_golden.safetensors")
save(out, T)
print("wrote", os.path.normpath(out), len(T), "tensors")
