#!/usr/bin/env -S /usr/bin/python3
"""judge_ref.py - a tiny fidelity judge and its golden file for tests/test_judge.c and tests/cli_judge.sh.

Uses tools/emoji/judge.py's own Judge and export (so the C loader reads what the real
training writes), with small widths: channels [8,16,16,32], 4 groups, embedding 16, 12
classes, seeded random weights (GroupNorm scales and shifts randomised too, so they are
exercised). Writes, from the repo root:
  tests/data/judge_tiny/{config.json, model.safetensors (F16), classes.tsv}   (judge.export)
  tests/data/judge_tiny_golden.safetensors
      images U8 [B,64,64,3], embed F32 [B,E], scores F32 [B,N], top5 I64 [B,5]
  tests/data/judge_tiny_images/NNN.png + NNN.txt   the same B images, captioned so that
      image 0 names its top-1 class, image 1 its third, image 2 its ninth, image 3 no class:
      top-5 fidelity 2/3, top-1 1/3, one prompt skipped, whatever the weights.
The expected values come from a float64 forward of the weights as stored (F16, widened),
class rows renormalised: what the C judge computes in fp32. The script fails unless every
row's sorted scores are at least MIN_GAP apart (so the C top-k cannot differ by rounding)
and prints how far PyTorch's own fp32 forward is from the float64 one.

Run: /usr/bin/python3 tests/reference/judge_ref.py   (torch + numpy + PIL; deterministic)
"""
import importlib.util
import os
import sys

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.normpath(os.path.join(HERE, "..", ".."))
sys.path.insert(0, HERE)
import clip_text_ref  # noqa: E402  (st_save / st_load, used by judge.export)

clip_text_ref._DT["U8"] = np.uint8
clip_text_ref._DT_NAME[np.dtype(np.uint8)] = "U8"

_spec = importlib.util.spec_from_file_location("emoji_judge", os.path.join(ROOT, "tools", "emoji", "judge.py"))
judge = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(judge)

CHANNELS, GROUPS, EMBED = [8, 16, 16, 32], 4, 16
CLASSES = [("1F34E", "a red apple, food"), ("1F600", "a grinning face"), ("1F680", "a rocket, travel"),
           ("1F431", "a cat face"), ("1F1EB-1F1F7", "the flag of france"), ("2764-FE0F", "a red heart"),
           ("1F355", "a pizza, food"), ("1F333", "a deciduous tree"), ("26BD", "a soccer ball, activity"),
           ("1F319", "a crescent moon"), ("1F4A1", "an electric light bulb"), ("1F422", "a turtle, animals")]
B, S = 4, 64
PLACES = [0, 2, 8]          # the class place each of images 0..2 is captioned with
TRIGGER = "tstmoji, "
MIN_GAP = 2e-4
OUT = os.path.join(ROOT, "tests", "data")


def images(rng):
    """B smooth 64x64 RGB scenes: a gradient background and a few flat discs and boxes (PNG-friendly)."""
    yy, xx = np.mgrid[0:S, 0:S].astype(np.float64) / (S - 1)
    out = []
    for _ in range(B):
        c0, c1 = rng.integers(0, 256, 3), rng.integers(0, 256, 3)
        t = (xx * rng.uniform(0, 1) + yy * rng.uniform(0, 1))[..., None] / 2
        img = c0 * (1 - t) + c1 * t
        for _ in range(rng.integers(2, 5)):
            col = rng.integers(0, 256, 3)
            cx, cy, r = rng.uniform(0.2, 0.8), rng.uniform(0.2, 0.8), rng.uniform(0.08, 0.3)
            if rng.uniform() < 0.5:
                m = (xx - cx) ** 2 + (yy - cy) ** 2 < r * r
            else:
                m = (abs(xx - cx) < r) & (abs(yy - cy) < r * 0.6)
            img[m] = col
        out.append(np.clip(np.round(img), 0, 255).astype(np.uint8))
    return np.stack(out)


def randomised(seed, x_u8):
    """Seeded random weights; proj ignores the direction all images' pooled features share
    (a random net's are alike) and its bias is on the scale of what is left, so the images
    rank the classes differently."""
    torch.manual_seed(seed)
    m = judge.Judge(len(CLASSES), channels=CHANNELS, groups=GROUPS, embed=EMBED)
    with torch.no_grad():
        for name, p in m.named_parameters():
            if ".norm" in name:
                p.copy_((1 + 0.3 * torch.randn_like(p)) if name.endswith("weight") else 0.2 * torch.randn_like(p))
            elif name.endswith("bias"):
                p.copy_(0.1 * torch.randn_like(p))
        h = torch.from_numpy(x_u8).permute(0, 3, 1, 2).float() / 127.5 - 1
        h = F.silu(m.stem["norm"](m.stem["conv"](h)))
        for b in m.blocks:
            h = F.silu(b["norm2"](b["conv2"](F.silu(b["norm1"](b["conv1"](h))))))
        pooled = h.mean(dim=(2, 3))
        u = F.normalize(pooled.mean(0), dim=0)
        m.proj.weight.sub_(m.proj.weight @ u[:, None] * u[None, :])
        m.proj.bias.copy_(0.5 * (pooled @ m.proj.weight.t()).std() * torch.randn(EMBED))
    return m


def forward_as_stored(judge_dir, x_u8, dtype):
    """Embeddings and scores of the exported (F16) weights, computed in dtype."""
    sd = {k: v.to(dtype) for k, v in clip_text_ref.st_load(os.path.join(judge_dir, "model.safetensors")).items()}
    m = judge.Judge(len(CLASSES), channels=CHANNELS, groups=GROUPS, embed=EMBED).to(dtype)
    m.load_state_dict(sd)
    m.eval()
    x = torch.from_numpy(x_u8).permute(0, 3, 1, 2).to(dtype) / 127.5 - 1
    with torch.no_grad():
        e = m.embed(x)
        s = e @ F.normalize(m.classes, dim=1).t()
    return e, s


def main():
    judge_dir = os.path.join(OUT, "judge_tiny")
    rng = np.random.default_rng(1919)
    x = images(rng)
    for seed in range(19, 119):  # the first seed whose score gaps are all clear of rounding
        judge.export(randomised(seed, x), CLASSES, judge_dir, {"reference": "tests/reference/judge_ref.py", "seed": seed})
        e, s = forward_as_stored(judge_dir, x, torch.float64)
        gap = (s.sort(dim=1, descending=True).values.diff(dim=1).abs()).min().item()
        if gap >= MIN_GAP:
            break
    else:
        raise SystemExit("judge_ref: no seed gave score gaps >= %g" % MIN_GAP)
    e32, s32 = forward_as_stored(judge_dir, x, torch.float32)
    scale = e.abs().max().item()
    print("seed %d: min score gap %.2e; torch fp32 vs fp64: embed %.2e (max |e| %.3f), scores %.2e"
          % (seed, gap, (e32.double() - e).abs().max().item(), scale, (s32.double() - s).abs().max().item()))
    top5 = s.topk(5, dim=1).indices
    golden = {"images": torch.from_numpy(x), "embed": e.float(), "scores": s.float(), "top5": top5.long()}
    clip_text_ref.st_save(os.path.join(OUT, "judge_tiny_golden.safetensors"), golden,
                          {"source": "tests/reference/judge_ref.py", "seed": str(seed)})
    img_dir = os.path.join(OUT, "judge_tiny_images")
    os.makedirs(img_dir, exist_ok=True)
    order = s.argsort(dim=1, descending=True)
    for i in range(B):
        Image.fromarray(x[i]).save(os.path.join(img_dir, "%03d.png" % i), optimize=True)
        cap = TRIGGER + CLASSES[order[i, PLACES[i]].item()][1] if i < len(PLACES) else "a photo of a dog"
        with open(os.path.join(img_dir, "%03d.txt" % i), "w") as f:
            f.write(cap + "\n")
        print("image %d: top5 %s, caption '%s'" % (i, top5[i].tolist(), cap))


if __name__ == "__main__":
    main()
