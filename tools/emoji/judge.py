"""judge.py - the fidelity judge of models/emoji64 (issue 19): which of the 1,911 emoji an image shows.

An image-embedding network, small and plain so that stylora's C code runs it with its own conv,
GroupNorm and linear kernels (pipeline/judge.c):
  x: RGB [B,3,64,64] in [-1,1]
  stem      conv3x3 3->C0 stride 2 pad 1, GroupNorm(G), SiLU     64 -> 32
  blocks.i  (i = 0..2)  conv3x3 Ci->Ci+1 stride 2 pad 1, GroupNorm, SiLU, conv3x3 stride 1 pad 1,
            GroupNorm, SiLU                                   32 -> 16 -> 8 -> 4
  mean over H,W -> proj (linear C3->E) -> L2-normalised embedding e
  classes   [N,E] unit rows, one per base emoji; score = cos(e, class); ranking by score
Channels C = [32,64,128,256], G = 8, E = 256, N = 1,911 (the defaults of Judge(); tests/reference/judge_ref.py
builds a tiny one).
Trained with normalised-softmax cross entropy (scale 16) on every image of the set (skin tones
labelled with their base emoji), each drawn plain, in one random look (pretrain.looks), or in one
of the five example styles (gen_styles.STYLES), then shifted, scaled, colour-jittered, blurred
and noised on the fly. Written as OUT/judge/{config.json, model.safetensors (F16), classes.tsv}.
"""
import json
import math
import os
import time

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

CHANNELS = [32, 64, 128, 256]
GROUPS = 8
EMBED = 256
SCALE = 16.0


class Judge(nn.Module):
    def __init__(self, n_classes, channels=CHANNELS, groups=GROUPS, embed=EMBED):
        super().__init__()
        c = self.channels = list(channels)
        self.groups, self.embed_dim = groups, embed
        self.stem = nn.ModuleDict({"conv": nn.Conv2d(3, c[0], 3, 2, 1), "norm": nn.GroupNorm(groups, c[0])})
        self.blocks = nn.ModuleList()
        for i in range(3):
            self.blocks.append(nn.ModuleDict({
                "conv1": nn.Conv2d(c[i], c[i + 1], 3, 2, 1), "norm1": nn.GroupNorm(groups, c[i + 1]),
                "conv2": nn.Conv2d(c[i + 1], c[i + 1], 3, 1, 1), "norm2": nn.GroupNorm(groups, c[i + 1])}))
        self.proj = nn.Linear(c[3], embed)
        self.classes = nn.Parameter(torch.randn(n_classes, embed) * embed ** -0.5)

    def embed(self, x):
        h = F.silu(self.stem["norm"](self.stem["conv"](x)))
        for b in self.blocks:
            h = F.silu(b["norm1"](b["conv1"](h)))
            h = F.silu(b["norm2"](b["conv2"](h)))
        return F.normalize(self.proj(h.mean(dim=(2, 3))), dim=1)

    def forward(self, x):
        return self.embed(x) @ F.normalize(self.classes, dim=1).t()  # cosines [B,N]


def augment(x, g):
    """x [B,3,64,64] in [0,1] -> randomly shifted/scaled, jittered, blurred, noised, in [-1,1]."""
    B = x.shape[0]
    s = 1 + (torch.rand(B, generator=g) - 0.5) * 0.3                # scale 0.85..1.15
    tx, ty = [(torch.rand(B, generator=g) - 0.5) * 0.25 for _ in range(2)]  # +-4 px
    theta = torch.zeros(B, 2, 3)
    theta[:, 0, 0] = 1 / s
    theta[:, 1, 1] = 1 / s
    theta[:, 0, 2] = tx
    theta[:, 1, 2] = ty
    grid = F.affine_grid(theta, x.shape, align_corners=False)
    corner = x[:, :, :2, :2].mean(dim=(2, 3), keepdim=True)
    x = F.grid_sample(x - corner, grid, mode="bilinear", padding_mode="zeros", align_corners=False) + corner
    br = 1 + (torch.rand(B, 1, 1, 1, generator=g) - 0.5) * 0.4
    ct = 1 + (torch.rand(B, 1, 1, 1, generator=g) - 0.5) * 0.4
    sat = 1 + (torch.rand(B, 1, 1, 1, generator=g) - 0.5) * 0.6
    m = x.mean(dim=(1, 2, 3), keepdim=True)
    x = (x - m) * ct + m
    grey = x.mean(dim=1, keepdim=True)
    x = ((x - grey) * sat + grey) * br
    sig = torch.rand(B, generator=g) * 1.5                           # blur sigma 0..1.5 px
    r = torch.arange(-3, 4).float()
    k = torch.exp(-r[None] ** 2 / (2 * sig[:, None].clamp(min=1e-3) ** 2))
    k = k / k.sum(1, keepdim=True)                                   # [B,7]
    xp = F.pad(x, (3, 3, 3, 3), mode="replicate")
    xb = xp.reshape(1, B * 3, 70, 70)
    kh = k.repeat_interleave(3, 0)[:, None, None, :]
    kv = k.repeat_interleave(3, 0)[:, None, :, None]
    xb = F.conv2d(F.conv2d(xb, kh, groups=B * 3), kv, groups=B * 3)
    x = xb.reshape(B, 3, 64, 64)
    x = x + torch.randn(x.shape, generator=g) * (torch.rand(B, 1, 1, 1, generator=g) * 0.04)
    return x.clamp(0, 1) * 2 - 1


def class_table(d):
    """Class index per image and the class list [(base unified, caption of the base emoji)]."""
    bases = sorted(set(str(b) for b in d["base"]))
    cap = {}
    for b, c, t in zip(d["base"], d["captions"], d["tone"]):
        if not str(t):
            cap[str(b)] = str(c)
    idx = {b: i for i, b in enumerate(bases)}
    return np.array([idx[str(b)] for b in d["base"]]), [(b, cap[b]) for b in bases]


def styled(d, gs):
    """The five example styles applied to every base emoji: ([M,64,64,3] u8, class per image)."""
    y, _ = class_table(d)
    base_ix = [i for i, t in enumerate(d["tone"]) if not str(t)]
    out, lab = [], []
    for i in base_ix:
        a = d["rgba"][i].astype(np.float32) / 255.0
        for _, _, fn, _ in gs.STYLES:
            out.append((np.clip(fn(a), 0, 1) * 255 + 0.5).astype(np.uint8))
            lab.append(y[i])
    return np.stack(out), np.array(lab)


def topk(model, x_u8, y, k=5, bs=256):
    """Top-1 and top-k shares of model on images x_u8 [N,64,64,3] with labels y."""
    model.eval()
    h1 = hk = 0
    with torch.no_grad():
        for i in range(0, len(x_u8), bs):
            x = torch.from_numpy(x_u8[i:i + bs]).permute(0, 3, 1, 2).float() / 127.5 - 1
            s = model(x)
            t = torch.from_numpy(y[i:i + bs])
            top = s.topk(k, dim=1).indices
            h1 += (top[:, 0] == t).sum().item()
            hk += (top == t[:, None]).any(1).sum().item()
    model.train()
    return h1 / len(x_u8), hk / len(x_u8)


def export(model, classes, out_dir, info):
    import clip_text_ref
    os.makedirs(out_dir, exist_ok=True)
    sd = {k: v.detach().float() for k, v in model.state_dict().items()}
    sd["classes"] = F.normalize(sd["classes"], dim=1)
    sd = {k: v.half() for k, v in sd.items()}
    tmp = os.path.join(out_dir, "model.safetensors.tmp")
    clip_text_ref.st_save(tmp, sd, {"format": "pt"})
    os.replace(tmp, os.path.join(out_dir, "model.safetensors"))
    cfg = {"_class_name": "StyloraEmojiJudge", "image_size": 64, "channels": model.channels, "stem_stride": 2,
           "norm_num_groups": model.groups, "norm_eps": 1e-5, "embed_dim": model.embed_dim, "num_classes": len(classes), "input": "RGB in [-1, 1]",
           "score": "cosine of the L2-normalised embedding with each row of `classes`", "training": info}
    with open(os.path.join(out_dir, "config.json"), "w") as f:
        json.dump(cfg, f, indent=2)
        f.write("\n")
    with open(os.path.join(out_dir, "classes.tsv"), "w") as f:
        f.write("".join("%s\t%s\n" % (u, c) for u, c in classes))


def train(a, d, log):
    import sys
    gs = sys.modules["emoji_gen_styles"]
    pre = sys.modules["__main__"] if hasattr(sys.modules["__main__"], "looks") else None
    out_dir = os.path.join(a.out, "judge")
    ck = os.path.join(a.work, "judge.pt")
    y, classes = class_table(d)
    t0 = time.time()
    sty, ysty = styled(d, gs)
    log("judge: %d classes; %d plain, %d random-look, %d styled images (%.0f s to draw)"
        % (len(classes), len(y), len(y), len(sty), time.time() - t0))
    pools = [(d["plain"], y), (d["varied"], y), (sty, ysty)]
    torch.manual_seed(a.seed + 11)
    model = Judge(len(classes))
    opt = torch.optim.AdamW(model.parameters(), lr=2e-3, weight_decay=1e-4)
    step, elapsed = 0, 0.0
    if os.path.exists(ck):
        st = torch.load(ck)
        model.load_state_dict(st["model"])
        opt.load_state_dict(st["opt"])
        step, elapsed = st["step"], st["elapsed"]
        if st.get("done"):
            log("judge: %s done" % ck)
            return
    g = torch.Generator().manual_seed(a.seed + 12 + step)
    budget = a.judge_minutes * 60
    t_start, t_log, hist = time.time() - elapsed, time.time(), []

    def save(done=False):
        torch.save({"model": model.state_dict(), "opt": opt.state_dict(), "step": step,
                    "elapsed": time.time() - t_start, "done": done}, ck + ".tmp")
        os.replace(ck + ".tmp", ck)

    bs = 128
    while time.time() - t_start < budget:
        frac = (time.time() - t_start) / budget
        for pg in opt.param_groups:
            pg["lr"] = 2e-3 * min(1.0, (step + 1) / 100) * 0.5 * (1 + math.cos(math.pi * min(frac, 1.0)))
        parts = [bs // 2, bs // 4, bs - bs // 2 - bs // 4]  # plain, random look, example style
        xs, ys = [], []
        for (imgs, lab), n in zip(pools, parts):
            ix = torch.randint(0, len(imgs), (n,), generator=g).numpy()
            xs.append(torch.from_numpy(imgs[ix]))
            ys.append(torch.from_numpy(lab[ix]))
        x = augment(torch.cat(xs).permute(0, 3, 1, 2).float() / 255.0, g)
        t = torch.cat(ys)
        loss = F.cross_entropy(model(x) * SCALE, t)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        step += 1
        hist.append(loss.item())
        if time.time() - t_log > 60 or step == 20:
            log("judge step %d %.0f s loss(avg50) %.3f" % (step, time.time() - t_start, float(np.mean(hist[-50:]))))
            t_log = time.time()
            save()
    save(done=True)
    info = {"steps": step, "seconds": round(time.time() - t_start), "batch": bs,
            "loss_avg50": float(np.mean(hist[-50:])) if hist else None}
    base = np.array([not str(t) for t in d["tone"]])
    info["plain_top1_top5"] = topk(model, d["plain"][base], y[base])
    info["styled_top1_top5"] = topk(model, sty, ysty)
    vae_ck = os.path.join(a.work, "vae.pt")
    if os.path.exists(vae_ck) and pre is not None:
        import vae_ref
        vae = vae_ref.AutoencoderKL(pre.VAE_CFG)
        vae.load_state_dict(torch.load(vae_ck)["model"])
        vae.eval()
        rec = []
        with torch.no_grad():
            for i in range(0, int(base.sum()), 128):
                x = torch.from_numpy(d["plain"][base][i:i + 128]).permute(0, 3, 1, 2).float() / 127.5 - 1
                r = vae.decode(vae.encode(x)[0]).clamp(-1, 1)
                rec.append(((r + 1) * 127.5 + 0.5).clamp(0, 255).byte().permute(0, 2, 3, 1).numpy())
        info["vae_roundtrip_top1_top5"] = topk(model, np.concatenate(rec), y[base])
    log("judge done: %s" % json.dumps(info))
    export(model, classes, out_dir, info)
