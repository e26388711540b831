#!/usr/bin/env -S /usr/bin/python3
"""pretrain.py - pretrains stylora's emoji model models/emoji64 on CPU with PyTorch (issue 19).

Stages (each resumable from its checkpoint in WORK; `all` runs them in order):
  data   the captioned set (emoji_data.py rules) from the unpacked npm package (fetch.sh):
         RGBA and white-composited RGB [N,64,64] u8, captions, splits, base emoji; plus one
         seeded random look per image (looks()) that teaches the VAE's decoder textures, lines,
         dark paper and pixel blocks the plain emoji never show
  bpe    the tokenizer: CLIP-format byte-level BPE learnt from the captions (tools/shapes/train_bpe.py)
  vae    AutoencoderKL f=4 (64x64x3 <-> 16x16x4), tools/shapes/pretrain.py's VAE loop, on the
         plain emoji and the random looks (val held out); caches latent mean/std of every plain image
  unet   CLIP text encoder + UNet2DConditionModel, jointly from scratch (or from --init-from, a
         models/emoji64 of an earlier run: the way a run continues on a machine without WORK),
         epsilon loss with min-SNR-5 weighting, class-balanced (each base emoji equally often,
         skin tones as its variations), 10% empty captions, AdamW, EMA; val loss logged;
         under CPU bf16 autocast (--bf16 1: fp32 weights, optimizer, EMA and norms; 1.75x the
         fp32 step rate here on AVX512_BF16);
         exports OUT every --export-minutes
  judge  the fidelity judge (judge.py) on all 1,911 emoji with augmentation
  export re-exports OUT from the last unet checkpoint
Needs torch, numpy, regex, PIL for /usr/bin/python3 (tools/deps.sh --torch). 2 threads.
"""
import argparse
import importlib.util
import json
import os
import random
import sys
import time

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.normpath(os.path.join(HERE, "..", ".."))


def _load(name, path):
    spec = importlib.util.spec_from_file_location(name, path)
    mod = importlib.util.module_from_spec(spec)
    sys.modules[name] = mod
    spec.loader.exec_module(mod)
    return mod


# emoji modules first, by path: tools/shapes has a gen_styles.py of its own
ed = _load("emoji_data", os.path.join(HERE, "emoji_data.py"))
gs = _load("emoji_gen_styles", os.path.join(HERE, "gen_styles.py"))
shp = _load("shapes_pretrain", os.path.join(ROOT, "tools", "shapes", "pretrain.py"))
bpe = _load("shapes_train_bpe", os.path.join(ROOT, "tools", "shapes", "train_bpe.py"))
import clip_text_ref  # noqa: E402  (on sys.path through shapes_pretrain)
import clip_tokenizer_ref  # noqa: E402
import unet_ref  # noqa: E402
import vae_ref  # noqa: E402

log = shp.log


def _group_norm_fp32(self, x):
    """nn.GroupNorm on an fp32 copy of its input: under CPU bf16 autocast (torch 1.13) a bf16
    activation meets fp32 affine weights there and group_norm refuses the mix; normalising in fp32
    is also what mixed-precision recipes keep in fp32. A no-op for fp32 inputs."""
    return F.group_norm(x.float(), self.num_groups, self.weight, self.bias, self.eps)


def _layer_norm_fp32(self, x):
    """nn.LayerNorm likewise (the U-Net's transformer blocks)."""
    return F.layer_norm(x.float(), self.normalized_shape, self.weight, self.bias, self.eps)


torch.nn.GroupNorm.forward = _group_norm_fp32
torch.nn.LayerNorm.forward = _layer_norm_fp32

VAE_CFG = dict(shp.VAE_CFG, block_out_channels=[32, 64, 128], norm_num_groups=16)
TE_CFG = dict(shp.TE_CFG, _name_or_path="stylora/emoji64", hidden_size=256, intermediate_size=1024,
              num_attention_heads=4, num_hidden_layers=4, projection_dim=256)
UNET_CFG = dict(shp.UNET_CFG, block_out_channels=[64, 128, 192], cross_attention_dim=256, norm_num_groups=32,
                attention_head_dim=8)
CHECK_PROMPTS = ["a red apple, food", "a grinning face"]


# ------------------------------------------------------------------ random looks (VAE decoder data)
def looks(rgba, rng):
    """One random look of an emoji (64,64,4 floats in [0,1]) -> (64,64,3): paper of any tone,
    fills kept, posterised, washed, greyed or dropped, contours of random colour, weight and
    glow, line textures, pixel blocks. A family the example styles are single points of (the
    styles' own renderers are never used here)."""
    a = rgba[..., 3]
    rgb = rgba[..., :3]
    u = rng.random()
    paper = np.array([rng.uniform(0.8, 1), rng.uniform(0.8, 1), rng.uniform(0.8, 1)], np.float32) if u < 0.45 else \
        np.array([rng.uniform(0, 0.2), rng.uniform(0, 0.2), rng.uniform(0, 0.25)], np.float32) if u < 0.8 else \
        np.array([rng.random(), rng.random(), rng.random()], np.float32)
    f = rng.random()
    if f < 0.3:
        fill = rgb
    elif f < 0.5:
        lv = rng.randint(2, 5)
        fill = np.round(rgb * lv) / lv
        fill = fill * (1 - rng.uniform(0, 0.6)) + rng.uniform(0, 0.6)
    elif f < 0.65:
        fill = np.repeat(gs._luma(rgb)[..., None], 3, -1)
    elif f < 0.8:
        fill = rgb * rng.uniform(0.1, 0.5) + paper * (1 - rng.uniform(0.1, 0.5))
    else:
        fill = None
    out = np.broadcast_to(paper, rgb.shape).copy() if fill is None else gs._over(np.concatenate([fill, rgba[..., 3:]], -1), paper)
    if rng.random() < 0.6 or fill is None:  # contours
        line = np.clip(gs._edges(a) * rng.uniform(0.8, 2.5) + gs._edges(gs._luma(rgb) * a) * rng.uniform(0, 3)
                       - rng.uniform(0, 0.2), 0, 1)
        c = rng.random()
        col = np.array([rng.uniform(0, 0.2)] * 3, np.float32) if c < 0.4 else \
            rgb / np.maximum(rgb.max(-1, keepdims=True), 0.25) if c < 0.75 else \
            np.array([rng.random(), rng.random(), rng.random()], np.float32)
        if rng.random() < 0.35:
            glow = gs._blur(line, rng.randint(1, 3))
            out = np.clip(out + (col if col.ndim == 1 else gs._blur(col, 1)) * glow[..., None] * rng.uniform(0.5, 1.8), 0, 1)
        out = out * (1 - line[..., None]) + col * line[..., None]
    if rng.random() < 0.2:  # line texture where dark
        yy, xx = np.mgrid[0:64, 0:64]
        sp = rng.randint(3, 6)
        pat = ((xx + yy) % sp == 0) if rng.random() < 0.5 else ((xx - yy) % sp == 0) if rng.random() < 0.5 else (yy % sp == 0)
        ink = pat & (1 - gs._luma(out) > rng.uniform(0.1, 0.5))
        out = np.where(ink[..., None], np.array([rng.uniform(0, 0.3)] * 3, np.float32), out)
    if rng.random() < 0.2:  # pixel blocks
        b = rng.choice([2, 4])
        small = out.reshape(64 // b, b, 64 // b, b, 3).mean((1, 3))
        lv = rng.randint(4, 16)
        out = np.repeat(np.repeat(np.round(small * lv) / lv, b, 0), b, 1)
    return np.clip(out, 0, 1)


# ------------------------------------------------------------------ stage: data
def stage_data(a):
    path = os.path.join(a.work, "data.npz")
    if os.path.exists(path):
        log("data: %s exists" % path)
        return
    t0 = time.time()
    img_dir = os.path.join(a.package, "img", "google", "64")
    recs = ed.records(ed.load_entries(os.path.join(a.package, "emoji.json")), img_dir)
    n = len(recs)
    rgba = np.zeros((n, 64, 64, 4), np.uint8)
    plain = np.zeros((n, 64, 64, 3), np.uint8)
    varied = np.zeros((n, 64, 64, 3), np.uint8)
    rng = random.Random(a.seed * 7919)
    for i, r in enumerate(recs):
        x = gs._rgba(os.path.join(img_dir, r["file"]))
        rgba[i] = (x * 255 + 0.5).astype(np.uint8)
        plain[i] = (gs._over(x, np.ones(3, np.float32)) * 255 + 0.5).astype(np.uint8)
        varied[i] = (looks(x, rng) * 255 + 0.5).astype(np.uint8)
    np.savez(path + ".tmp.npz", rgba=rgba, plain=plain, varied=varied,
             captions=np.array([r["caption"] for r in recs]), split=np.array([r["split"] for r in recs]),
             base=np.array([r["base"] for r in recs]), tone=np.array([r["tone"] or "" for r in recs]))
    os.replace(path + ".tmp.npz", path)
    log("data: %d images (%d base emoji) in %.0f s -> %s" % (n, sum(1 for r in recs if not r["tone"]),
                                                           time.time() - t0, path))


def load_data(a):
    return dict(np.load(os.path.join(a.work, "data.npz")))


# ------------------------------------------------------------------ stage: bpe
def stage_bpe(a):
    out = os.path.join(a.out, "tokenizer")
    d = load_data(a)
    caps = [str(c) for c in d["captions"]]
    merges = bpe.learn(bpe.word_counts(caps), a.merges)
    n = bpe.write(out, merges)
    tok = clip_tokenizer_ref.Tok(out)
    lens = [tok.encode(c)[1] for c in caps]
    log("bpe: vocab %d (%d merges); captions %d..%d tokens incl. BOS/EOS, mean %.1f"
        % (n, len(merges), min(lens), max(lens), float(np.mean(lens))))


# ------------------------------------------------------------------ stage: vae
def stage_vae(a):
    d = load_data(a)
    keep = d["split"] != "val"
    imgs = np.concatenate([d["plain"], d["plain"][keep], d["varied"][keep]])  # latents: the first N (all plain)
    ck, lat = os.path.join(a.work, "vae.pt"), os.path.join(a.work, "latents.pt")
    if a.init_from and not os.path.exists(ck):
        # continuing from a shipped model: its VAE is the latent space the U-Net knows; no VAE
        # training (a checkpoint whose elapsed time is the whole budget), only the latent cache
        sd = shp.load_st(os.path.join(a.init_from, "vae", "diffusion_pytorch_model.safetensors"))
        torch.save({"model": sd, "opt": None, "step": 0, "elapsed": a.vae_minutes * 60}, ck)
        log("vae: taken from %s" % a.init_from)
    shp.stage_vae(a, VAE_CFG, imgs, n_latent=len(d["plain"]))
    if a.init_from:
        with open(os.path.join(a.init_from, "vae", "config.json")) as f:
            scale = json.load(f)["scaling_factor"]
        st = torch.load(lat)
        if st["scaling_factor"] != scale:
            st["scaling_factor"] = scale  # the shipped scale, not one re-estimated from new noise draws
            torch.save(st, lat)


def vae_weights(a):
    return torch.load(os.path.join(a.work, "vae.pt"))["model"]


# ------------------------------------------------------------------ stage: unet
def make_models(a, vocab_size):
    te_cfg = dict(TE_CFG, vocab_size=vocab_size)
    te = shp.TextEncoder(te_cfg, a.seed + 3)
    torch.manual_seed(a.seed + 4)
    un = unet_ref.UNet(UNET_CFG)
    return te_cfg, te, un


def init_from(a, te, un):
    """Loads a previously exported models/emoji64 (F16) as the starting weights."""
    te.load_sd(shp.load_st(os.path.join(a.init_from, "text_encoder", "model.safetensors")))
    un.load_state_dict(shp.load_st(os.path.join(a.init_from, "unet", "diffusion_pytorch_model.safetensors")))
    log("unet: initialised from %s" % a.init_from)


def stage_unet(a):
    tok = clip_tokenizer_ref.Tok(os.path.join(a.out, "tokenizer"))
    d = load_data(a)
    caps = [str(c) for c in d["captions"]]
    lat = torch.load(os.path.join(a.work, "latents.pt"))
    lmean, lstd, scale = lat["mean"], lat["std"], lat["scaling_factor"]
    ids_all = torch.tensor([tok.encode(c)[0] for c in caps], dtype=torch.int64)
    empty = torch.tensor(tok.encode("")[0], dtype=torch.int64)
    train_ix = [i for i, s in enumerate(d["split"]) if s != "val"]
    val_ix = torch.tensor([i for i, s in enumerate(d["split"]) if s == "val"])
    groups = {}
    for i in train_ix:
        groups.setdefault(str(d["base"][i]), []).append(i)
    groups = [groups[k] for k in sorted(groups)]
    te_cfg, te, un = make_models(a, len(tok.vocab))
    params = list(te.parameters()) + list(un.parameters())
    log("unet stage: text encoder %d params, unet %d params, %d train images of %d emoji, %d val"
        % (sum(p.numel() for p in te.parameters()), sum(p.numel() for p in un.parameters()),
           len(train_ix), len(groups), len(val_ix)))
    opt = torch.optim.AdamW(params, lr=a.lr, betas=(0.9, 0.999), weight_decay=0.01)
    step, elapsed, hist, vhist = 0, 0.0, [], []
    ck = os.path.join(a.work, "unet.pt")
    if os.path.exists(ck):
        st = torch.load(ck)
        te.load_state_dict(st["te"])
        un.load_state_dict(st["unet"])
        opt.load_state_dict(st["opt"])
        ema = st["ema"]
        step, elapsed, hist, vhist = st["step"], st["elapsed"], st["hist"], st.get("vhist", [])
        log("unet: resumed at step %d (%.0f s)" % (step, elapsed))
    else:
        if a.init_from:
            init_from(a, te, un)
        elif os.path.exists(os.path.join(a.out, "unet", "diffusion_pytorch_model.safetensors")):
            log("unet: note: %s already holds a model; this run trains from scratch over it (--init-from to continue)" % a.out)
        ema = [p.detach().clone() for p in params]
    ac = shp.alphas_cumprod()
    snr = ac / (1 - ac)
    g = torch.Generator().manual_seed(a.seed + 5 + step)
    budget = a.unet_minutes * 60
    if a.unet_stop_at:
        budget = min(budget, elapsed + a.unet_stop_at - time.time())
    t_start = time.time() - elapsed
    t_log, t_export = time.time(), time.time()

    def checkpoint():
        torch.save({"te": te.state_dict(), "unet": un.state_dict(), "opt": opt.state_dict(), "ema": ema,
                    "step": step, "elapsed": time.time() - t_start, "hist": hist, "vhist": vhist}, ck + ".tmp")
        os.replace(ck + ".tmp", ck)

    def val_loss():
        gv = torch.Generator().manual_seed(99)
        with torch.no_grad():
            tot = 0.0
            for i in range(0, len(val_ix), 64):
                ix = val_ix[i:i + 64]
                z0 = (lmean[ix].float() + lstd[ix].float() * torch.randn(lmean[ix].shape, generator=gv)) * scale
                t = torch.randint(0, 1000, (len(ix),), generator=gv)
                noise = torch.randn(z0.shape, generator=gv)
                acb = ac[t][:, None, None, None]
                pred = un(acb.sqrt() * z0 + (1 - acb).sqrt() * noise, t.float(), te(ids_all[ix]))
                tot += F.mse_loss(pred, noise, reduction="sum").item()
        return tot / (len(val_ix) * z0[0].numel())

    while time.time() - t_start < budget:
        B = a.batch
        gi = torch.randint(0, len(groups), (B,), generator=g).tolist()
        vi = torch.randint(0, 1 << 30, (B,), generator=g).tolist()
        idx = torch.tensor([groups[x][y % len(groups[x])] for x, y in zip(gi, vi)])
        z0 = (lmean[idx].float() + lstd[idx].float() * torch.randn(lmean[idx].shape, generator=g)) * scale
        ids = ids_all[idx].clone()
        ids[torch.rand(B, generator=g) < 0.1] = empty
        t = torch.randint(0, 1000, (B,), generator=g)
        noise = torch.randn(z0.shape, generator=g)
        acb = ac[t][:, None, None, None]
        zt = acb.sqrt() * z0 + (1 - acb).sqrt() * noise
        lr = shp.unet_lr(a, step, (time.time() - t_start) / budget, opt)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bool(a.bf16)):  # AVX512_BF16: 3.7x (text encoder)
            pred = un(zt, t.float(), te(ids)).float()                       # and ~3x (U-Net) faster here
        w = torch.clamp(snr[t], max=a.min_snr) / snr[t]  # min-SNR-gamma weighting (Hang et al. 2023), epsilon form
        per = ((pred - noise) ** 2).mean(dim=(1, 2, 3))
        loss = (w * per).mean()
        step = shp.unet_update(a, opt, params, ema, loss, step)
        hist.append(per.mean().item())
        if time.time() - t_log > 60 or step in (5, 50):
            el = time.time() - t_start
            log("unet step %d %.0f s %.3f steps/s lr %.2e loss(avg100, unweighted) %.4f"
                % (step, el, step / max(el, 1e-9), lr, float(np.mean(hist[-100:]))))
            t_log = time.time()
        if time.time() - t_export > a.export_minutes * 60:
            vhist.append((step, val_loss()))
            log("unet step %d val loss %.4f" % vhist[-1])
            checkpoint()
            export(a, tok, te_cfg, ema, te, un, scale, step, time.time() - t_start, hist, vhist)
            t_export = time.time()
    vhist.append((step, val_loss()))
    log("unet step %d val loss %.4f" % vhist[-1])
    checkpoint()
    export(a, tok, te_cfg, ema, te, un, scale, step, time.time() - t_start, hist, vhist)
    log("unet done: %d steps, %.0f s, final loss(avg200) %.4f" % (step, time.time() - t_start,
                                                                    float(np.mean(hist[-200:]))))


# ------------------------------------------------------------------ export (tools/shapes/pretrain.py's, with this recipe)
SOURCE = "tools/emoji/pretrain.py"


def check_path(a):
    """The test's golden for the shipped model only; a run with another --out keeps its own in WORK."""
    default_out = os.path.normpath(a.out) == os.path.join(ROOT, "models", "emoji64")
    return os.path.join(os.path.join(ROOT, "tests", "data") if default_out else a.work, "emoji64_check.safetensors")


def export(a, tok, te_cfg, ema, te, un, scale, step, seconds, hist, vhist):
    shp.export(a, tok, te_cfg, ema, te, un, scale, step, seconds, hist, recipe=sys.modules[__name__],
               extra={"val_loss": vhist})


def stage_export(a):
    tok = clip_tokenizer_ref.Tok(os.path.join(a.out, "tokenizer"))
    te_cfg, te, un = make_models(a, len(tok.vocab))
    st = torch.load(os.path.join(a.work, "unet.pt"))
    te.load_state_dict(st["te"])
    un.load_state_dict(st["unet"])
    scale = torch.load(os.path.join(a.work, "latents.pt"))["scaling_factor"]
    export(a, tok, te_cfg, st["ema"], te, un, scale, st["step"], st["elapsed"], st["hist"], st.get("vhist", []))


def stage_judge(a):
    judge = _load("emoji_judge", os.path.join(HERE, "judge.py"))
    judge.train(a, load_data(a), log)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("stage", choices=["data", "bpe", "vae", "unet", "judge", "export", "all"])
    ap.add_argument("--package", default=os.path.join(ROOT, "build", "emoji-cache", "package"))
    ap.add_argument("--out", default=os.path.join(ROOT, "models", "emoji64"))
    ap.add_argument("--work", default="/tmp/emoji64_work")
    ap.add_argument("--init-from", default="", help="an exported models/emoji64 to start the unet stage from")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--merges", type=int, default=2000)
    ap.add_argument("--vae-minutes", type=float, default=15)
    ap.add_argument("--vae-batch", type=int, default=16)
    ap.add_argument("--vae-lr", type=float, default=1e-3)
    ap.add_argument("--vae-kl", type=float, default=1e-6)
    ap.add_argument("--unet-minutes", type=float, default=100)
    ap.add_argument("--unet-stop-at", type=float, default=0, help="epoch seconds; stop the unet stage by then")
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--lr", type=float, default=5e-4)
    ap.add_argument("--warmup", type=int, default=100)
    ap.add_argument("--min-snr", type=float, default=5.0)
    ap.add_argument("--ema", type=float, default=0.998)
    ap.add_argument("--bf16", type=int, default=1, help="1: text encoder and U-Net under CPU bf16 autocast "
                    "(fp32 weights, optimizer and EMA; norms in fp32); 0: all fp32")
    ap.add_argument("--export-minutes", type=float, default=15)
    ap.add_argument("--judge-minutes", type=float, default=12)
    ap.add_argument("--threads", type=int, default=2)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    torch.manual_seed(a.seed)
    random.seed(a.seed)
    os.makedirs(a.work, exist_ok=True)
    stages = ["data", "bpe", "vae", "judge", "unet"] if a.stage == "all" else [a.stage]
    for s in stages:
        {"data": stage_data, "bpe": stage_bpe, "vae": stage_vae, "unet": stage_unet, "judge": stage_judge,
         "export": stage_export}[s](a)


if __name__ == "__main__":
    main()
