#!/usr/bin/env -S /usr/bin/python3
"""pretrain.py - pretrains stylora's shipped model models/shapes64 on CPU with PyTorch.

Stages (each resumable; `all` runs them in order):
  data   seeded scene dataset (tools/shapes/scene.py): images [N,64,64,3] u8 + captions, in WORK
  vae    AutoencoderKL (tests/reference/vae_ref.py modules, diffusers names; no mid-block
         attention, so fully convolutional), L1+L2 + tiny KL, on 32x32 crops; then caches latent mean/std of every image and sets
         scaling_factor = 1/std(latents) as SD did
  unet   CLIP text encoder (tests/reference/clip_text_ref.py semantics, transformers names)
         trained jointly from scratch with a UNet2DConditionModel (tests/reference/unet_ref.py)
         on SD's epsilon DDPM loss (scaled_linear 0.00085..0.012, 1000 steps), 10% empty
         captions for classifier-free guidance, AdamW, EMA; stops by wall time; exports the EMA
         weights to OUT every --export-minutes, so an interrupted run leaves a usable model
  export writes OUT in the diffusers layout (F16 weights) and tests/data/shapes64_check.safetensors
         (fp32 math on the F16-rounded weights: token ids, text encoder output, U-Net output,
         VAE decode) for tests/test_shipped_model.c
The tokenizer (tools/shapes/train_bpe.py) must already be in OUT/tokenizer.
Needs torch (tools/deps.sh --torch), numpy, PIL; run with /usr/bin/python3. Uses 2 threads.
"""
import argparse
import json
import math
import os
import random
import sys
import time

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # spinning OpenMP threads crawl on a shared CPU
import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn as nn
import torch.nn.functional as F

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.normpath(os.path.join(HERE, "..", ".."))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(ROOT, "tests", "reference"))
import clip_text_ref  # noqa: E402
import clip_tokenizer_ref  # noqa: E402
import scene  # noqa: E402
import unet_ref  # noqa: E402
import vae_ref  # noqa: E402

# ------------------------------------------------------------------ configs
VAE_CFG = {
    "_class_name": "AutoencoderKL", "_diffusers_version": "0.30.2", "act_fn": "silu",
    "block_out_channels": [16, 32, 64], "down_block_types": ["DownEncoderBlock2D"] * 3,
    "up_block_types": ["UpDecoderBlock2D"] * 3, "in_channels": 3, "out_channels": 3, "latent_channels": 4,
    "layers_per_block": 1, "norm_num_groups": 8, "sample_size": 64, "scaling_factor": 0.18215,
    "shift_factor": None, "force_upcast": True, "latents_mean": None, "latents_std": None,
    "mid_block_add_attention": False, "use_quant_conv": True, "use_post_quant_conv": True,
}
TE_CFG = {
    "_name_or_path": "stylora/shapes64", "architectures": ["CLIPTextModel"], "attention_dropout": 0.0,
    "bos_token_id": 0, "dropout": 0.0, "eos_token_id": 2, "hidden_act": "quick_gelu", "hidden_size": 128,
    "initializer_factor": 1.0, "initializer_range": 0.02, "intermediate_size": 256, "layer_norm_eps": 1e-05,
    "max_position_embeddings": 77, "model_type": "clip_text_model", "num_attention_heads": 4,
    "num_hidden_layers": 3, "pad_token_id": 1, "projection_dim": 128, "torch_dtype": "float16",
    "transformers_version": "4.45.0", "vocab_size": None,
}
UNET_CFG = dict(unet_ref.BASE, **{
    "_diffusers_version": "0.30.2", "addition_embed_type_num_heads": 64, "addition_time_embed_dim": None,
    "attention_head_dim": 4, "attention_type": "default", "block_out_channels": [32, 64, 128],
    "class_embeddings_concat": False, "cross_attention_dim": 128, "cross_attention_norm": None,
    "down_block_types": ["DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"],
    "dropout": 0.0, "encoder_hid_dim": None, "encoder_hid_dim_type": None, "layers_per_block": 1,
    "mid_block_only_cross_attention": None, "norm_num_groups": 16, "num_class_embeds": None,
    "projection_class_embeddings_input_dim": None, "resnet_out_scale_factor": 1.0,
    "resnet_skip_time_act": False, "reverse_transformer_layers_per_block": None, "sample_size": 16,
    "time_embedding_act_fn": None, "time_embedding_dim": None, "time_embedding_type": "positional",
    "timestep_post_act": None, "transformer_layers_per_block": 1,
    "up_block_types": ["CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"],
    "use_linear_projection": False, "num_attention_heads": None,
})
SCHED_CFG = {
    "_class_name": "EulerAncestralDiscreteScheduler", "_diffusers_version": "0.30.2",
    "beta_end": 0.012, "beta_schedule": "scaled_linear", "beta_start": 0.00085, "clip_sample": False,
    "num_train_timesteps": 1000, "prediction_type": "epsilon", "rescale_betas_zero_snr": False,
    "set_alpha_to_one": False, "skip_prk_steps": True, "steps_offset": 1, "timestep_spacing": "leading",
    "trained_betas": None,
}
MODEL_INDEX = {
    "_class_name": "StableDiffusionPipeline", "_diffusers_version": "0.30.2",
    "feature_extractor": [None, None], "image_encoder": [None, None], "requires_safety_checker": False,
    "safety_checker": [None, None], "scheduler": ["diffusers", "EulerAncestralDiscreteScheduler"],
    "text_encoder": ["transformers", "CLIPTextModel"], "tokenizer": ["transformers", "CLIPTokenizer"],
    "unet": ["diffusers", "UNet2DConditionModel"], "vae": ["diffusers", "AutoencoderKL"],
}
CHECK_PROMPTS = ["two small red circles above a medium blue square on a yellow background",
                 "a large green star in the center on a white background"]


def log(msg):
    print("[%s] %s" % (time.strftime("%H:%M:%S"), msg), flush=True)


def alphas_cumprod():
    betas = torch.linspace(0.00085 ** 0.5, 0.012 ** 0.5, 1000, dtype=torch.float64) ** 2
    return torch.cumprod(1.0 - betas, 0).float()


# ------------------------------------------------------------------ text encoder as a module
class TextEncoder(nn.Module):
    """Parameters under transformers' names; forward = clip_text_ref.clip_text_forward."""

    def __init__(self, cfg, seed):
        super().__init__()
        self.cfg = cfg
        g = torch.Generator().manual_seed(seed)
        D, Fh, L, V = cfg["hidden_size"], cfg["intermediate_size"], cfg["num_hidden_layers"], cfg["vocab_size"]
        shapes = {"text_model.embeddings.token_embedding.weight": (V, D),
                  "text_model.embeddings.position_embedding.weight": (cfg["max_position_embeddings"], D),
                  "text_model.final_layer_norm.weight": (D,), "text_model.final_layer_norm.bias": (D,)}
        for i in range(L):
            p = "text_model.encoder.layers.%d." % i
            for n in ("layer_norm1", "layer_norm2"):
                shapes[p + n + ".weight"] = (D,)
                shapes[p + n + ".bias"] = (D,)
            for n in ("q_proj", "k_proj", "v_proj", "out_proj"):
                shapes[p + "self_attn." + n + ".weight"] = (D, D)
                shapes[p + "self_attn." + n + ".bias"] = (D,)
            shapes[p + "mlp.fc1.weight"] = (Fh, D)
            shapes[p + "mlp.fc1.bias"] = (Fh,)
            shapes[p + "mlp.fc2.weight"] = (D, Fh)
            shapes[p + "mlp.fc2.bias"] = (D,)
        self.names = list(shapes)
        self.params = nn.ParameterList()
        for k, s in shapes.items():  # transformers' CLIP init scales (factor 1)
            if k.endswith("norm.weight") or ".layer_norm" in k and k.endswith(".weight") or \
                    k.endswith("final_layer_norm.weight"):
                t = torch.ones(s)
            elif len(s) == 1:
                t = torch.zeros(s)
            elif "embedding" in k:
                t = torch.randn(s, generator=g) * 0.02
            elif "fc2" in k:
                t = torch.randn(s, generator=g) * (2 * D) ** -0.5
            elif "out_proj" in k:
                t = torch.randn(s, generator=g) * D ** -0.5 * (2 * L) ** -0.5
            else:
                t = torch.randn(s, generator=g) * D ** -0.5 * (2 * L) ** -0.5 if "proj" in k else \
                    torch.randn(s, generator=g) * (2 * D) ** -0.5 * (2 * L) ** -0.5
            self.params.append(nn.Parameter(t))

    def sd(self):
        return dict(zip(self.names, self.params))

    def load_sd(self, sd):
        with torch.no_grad():
            for k, p in zip(self.names, self.params):
                p.copy_(sd[k])

    def forward(self, ids):
        return clip_text_ref.clip_text_forward(self.sd(), self.cfg, ids)[0]


# ------------------------------------------------------------------ safetensors
def save_st(path, tensors, dtype, meta=None):
    out = {}
    for k, v in tensors.items():
        v = v.detach().cpu()
        out[k] = v if not v.is_floating_point() else v.to(dtype)
    tmp = path + ".tmp"
    clip_text_ref.st_save(tmp, out, meta)
    os.replace(tmp, path)


def load_st(path):
    return {k: v.float() if v.is_floating_point() else v for k, v in clip_text_ref.st_load(path).items()}


# ------------------------------------------------------------------ stage: data
def stage_data(a):
    path = os.path.join(a.work, "data.npz")
    if os.path.exists(path):
        log("data: %s exists" % path)
        return
    t0 = time.time()
    data = scene.make_dataset(a.n_scenes, a.seed)
    imgs = np.zeros((len(data), 64, 64, 3), np.uint8)
    for i, (s, _) in enumerate(data):
        imgs[i] = np.asarray(scene.render(s, "plain", a.seed * 1000003 + i))
    caps = np.array([c for _, c in data])
    np.savez(path + ".tmp.npz", images=imgs, captions=caps)
    os.replace(path + ".tmp.npz", path)
    log("data: %d scenes in %.0f s -> %s" % (len(data), time.time() - t0, path))


def load_data(a):
    d = np.load(os.path.join(a.work, "data.npz"))
    return d["images"], [str(c) for c in d["captions"]]


# ------------------------------------------------------------------ stage: vae
def stage_vae(a, cfg=None, images=None, n_latent=None):
    """images [N,64,64,3] u8 (default: the scene data); latents are cached for the first
    n_latent of them (default all); cfg defaults to VAE_CFG. tools/emoji/pretrain.py reuses this
    stage with its own images (plain emoji followed by random looks) and config."""
    cfg = VAE_CFG if cfg is None else cfg
    ck = os.path.join(a.work, "vae.pt")
    lat_path = os.path.join(a.work, "latents.pt")
    if os.path.exists(lat_path):
        log("vae: %s exists" % lat_path)
        return
    torch.manual_seed(a.seed + 1)
    imgs = load_data(a)[0] if images is None else images
    x_all = torch.from_numpy(imgs).permute(0, 3, 1, 2).contiguous()  # [N,3,64,64] u8
    n_latent = len(x_all) if n_latent is None else n_latent
    vae = vae_ref.AutoencoderKL(cfg)
    opt = torch.optim.AdamW(vae.parameters(), lr=a.vae_lr, weight_decay=0.0)
    step, elapsed = 0, 0.0
    if os.path.exists(ck):
        st = torch.load(ck)
        own = vae.state_dict()
        fits = {k: v for k, v in st["model"].items() if k in own and own[k].shape == v.shape}
        vae.load_state_dict(fits, strict=False)
        if st.get("opt") is not None and len(fits) == len(st["model"]) == len(own):
            opt.load_state_dict(st["opt"])
        else:  # an architecture change (the shipped run dropped the mid attention at 10 min)
            log("vae: checkpoint %d tensors, %d fit the model; fresh optimizer" % (len(st["model"]), len(fits)))
        step, elapsed = st["step"], st["elapsed"]
        log("vae: resumed at step %d (%.0f s)" % (step, elapsed))
    g = torch.Generator().manual_seed(a.seed + 2 + step)
    budget = a.vae_minutes * 60
    t_start, t_last, hist = time.time() - elapsed, time.time(), []
    while time.time() - t_start < budget:
        frac = (time.time() - t_start) / budget
        full = False  # no attention: fully convolutional, 32x32 crops stand for the whole image
        idx = torch.randint(0, len(x_all), (a.vae_batch // (4 if full else 1),), generator=g)
        x = x_all[idx].float() / 127.5 - 1.0
        if not full:  # 32x32 crops on the 4-px latent grid: 4x cheaper, convolutions do not care
            oy, ox = (torch.randint(0, 9, (2,), generator=g) * 4).tolist()
            x = x[:, :, oy:oy + 32, ox:ox + 32]
        for pg in opt.param_groups:
            pg["lr"] = a.vae_lr * min(1.0, (step + 1) / 100) * (0.55 + 0.45 * math.cos(math.pi * min(frac, 1.0)))
        mean, logvar = vae.encode(x)
        z = mean + torch.exp(0.5 * logvar) * torch.randn(mean.shape, generator=g)
        rec = vae.decode(z)
        l1 = (rec - x).abs().mean()
        l2 = ((rec - x) ** 2).mean()
        kl = 0.5 * (mean ** 2 + logvar.exp() - 1.0 - logvar).sum(dim=(1, 2, 3)).mean()
        loss = l1 + l2 + a.vae_kl * kl
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        step += 1
        hist.append((l1.item(), l2.item(), kl.item()))
        if time.time() - t_last > 60 or step == 20:
            h = np.array(hist[-50:]).mean(0)
            el = time.time() - t_start
            log("vae step %d (%s) %.0f s, %.2f steps/s: l1 %.4f l2 %.5f kl %.1f"
                % (step, "64px" if full else "32px crops", el, step / max(el, 1e-9), h[0], h[1], h[2]))
            t_last = time.time()
            torch.save({"model": vae.state_dict(), "opt": opt.state_dict(), "step": step,
                        "elapsed": time.time() - t_start}, ck)
    torch.save({"model": vae.state_dict(), "opt": opt.state_dict(), "step": step,
                "elapsed": time.time() - t_start}, ck)
    # cache latents of every image
    vae.eval()
    means, stds = [], []
    with torch.no_grad():
        for i in range(0, n_latent, 64):
            m, lv = vae.encode(x_all[i:min(i + 64, n_latent)].float() / 127.5 - 1.0)
            means.append(m.half())
            stds.append(torch.exp(0.5 * lv).half())
        mean, std = torch.cat(means), torch.cat(stds)
        z = mean.float() + std.float() * torch.randn(mean.shape, generator=g)
        scale = 1.0 / z.std().item()
        x = x_all[:64].float() / 127.5 - 1.0
        rec = vae.decode(vae.encode(x)[0])
        l1 = (rec - x).abs().mean().item()
    h = np.array(hist[-50:]).mean(0) if hist else np.full(3, np.nan)  # no step this run (taken from a model)
    info = {"steps": step, "seconds": round(time.time() - t_start), "l1": float(h[0]), "l2": float(h[1]),
            "kl": float(h[2]), "eval_l1_full": l1, "latent_std": 1.0 / scale, "scaling_factor": scale,
            "latent_mean": z.mean().item()}
    torch.save({"mean": mean, "std": std, "scaling_factor": scale, "info": info}, lat_path)
    log("vae done: %s" % json.dumps(info))


# ------------------------------------------------------------------ stage: vaedec
def vae_weights(a):
    """The VAE state dict to export: the decoder-tuned one when that stage ran."""
    p = os.path.join(a.work, "vae_dec.pt")
    return torch.load(p if os.path.exists(p) else os.path.join(a.work, "vae.pt"))["model"]


def stage_vaedec(a):
    """Fine-tunes the VAE decoder only (as Stability's ft-MSE VAE did) on the plain scenes mixed
    with as many scenes in random looks (scene.render "varied": outlines, stripes, dark paper,
    glow). The encoder, hence the latent space the U-Net learns, is unchanged; the decoder
    learns to draw thin dark lines and textures the plain scenes never showed it."""
    ck = os.path.join(a.work, "vae_dec.pt")
    vpath = os.path.join(a.work, "varied.npz")
    if not os.path.exists(vpath):
        t0 = time.time()
        rng = random.Random(a.seed + 77)
        v = np.zeros((a.n_varied, 64, 64, 3), np.uint8)
        for i in range(a.n_varied):
            v[i] = np.asarray(scene.render(scene.sample_scene(rng), "varied", a.seed * 7919 + i))
        np.savez(vpath + ".tmp.npz", images=v)
        os.replace(vpath + ".tmp.npz", vpath)
        log("vaedec: %d varied scenes in %.0f s" % (a.n_varied, time.time() - t0))
    imgs, _ = load_data(a)
    x_all = torch.cat([torch.from_numpy(imgs), torch.from_numpy(np.load(vpath)["images"])]).permute(0, 3, 1, 2)
    n_plain = len(imgs)
    vae = vae_ref.AutoencoderKL(VAE_CFG)
    vae.load_state_dict(torch.load(os.path.join(a.work, "vae.pt"))["model"], strict=True)
    dec = list(vae.decoder.parameters()) + (list(vae.post_quant_conv.parameters()) if vae.post_quant_conv is not None else [])
    for p in vae.parameters():
        p.requires_grad_(False)
    for p in dec:
        p.requires_grad_(True)
    opt = torch.optim.AdamW(dec, lr=a.vaedec_lr, weight_decay=0.0)
    step, elapsed = 0, 0.0
    if os.path.exists(ck):
        st = torch.load(ck)
        vae.load_state_dict(st["model"])
        opt.load_state_dict(st["opt"])
        step, elapsed = st["step"], st["elapsed"]
        if st.get("done"):
            log("vaedec: %s done" % ck)
            return
        log("vaedec: resumed at step %d (%.0f s)" % (step, elapsed))
    g = torch.Generator().manual_seed(a.seed + 3 + step)
    budget = a.vaedec_minutes * 60
    t_start, t_last, hist = time.time() - elapsed, time.time(), []

    def save(done=False):
        torch.save({"model": vae.state_dict(), "opt": opt.state_dict(), "step": step,
                    "elapsed": time.time() - t_start, "done": done}, ck + ".tmp")
        os.replace(ck + ".tmp", ck)

    while time.time() - t_start < budget:
        frac = (time.time() - t_start) / budget
        half = a.vae_batch // 2  # half plain scenes, half varied looks
        idx = torch.cat([torch.randint(0, n_plain, (half,), generator=g),
                         torch.randint(n_plain, len(x_all), (a.vae_batch - half,), generator=g)])
        x = x_all[idx].float() / 127.5 - 1.0
        oy, ox = (torch.randint(0, 9, (2,), generator=g) * 4).tolist()
        x = x[:, :, oy:oy + 32, ox:ox + 32]
        for pg in opt.param_groups:
            pg["lr"] = a.vaedec_lr * min(1.0, (step + 1) / 50) * (0.55 + 0.45 * math.cos(math.pi * min(frac, 1.0)))
        with torch.no_grad():
            mean, logvar = vae.encode(x)
            z = mean + torch.exp(0.5 * logvar) * torch.randn(mean.shape, generator=g)
        rec = vae.decode(z)
        l1 = (rec - x).abs().mean()
        l2 = ((rec - x) ** 2).mean()
        loss = l1 + l2
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        step += 1
        hist.append((l1.item(), l2.item()))
        if time.time() - t_last > 60 or step == 20:
            h = np.array(hist[-50:]).mean(0)
            el = time.time() - t_start
            log("vaedec step %d %.0f s, %.2f steps/s: l1 %.4f l2 %.5f" % (step, el, step / max(el, 1e-9), h[0], h[1]))
            t_last = time.time()
            save()
    save(done=True)
    vae.eval()
    with torch.no_grad():
        out = {}
        for name, sl in (("plain", slice(0, 64)), ("varied", slice(n_plain, n_plain + 64))):
            x = x_all[sl].float() / 127.5 - 1.0
            out[name] = (vae.decode(vae.encode(x)[0]) - x).abs().mean().item()
    log("vaedec done: %d steps, eval l1 plain %.4f varied %.4f" % (step, out["plain"], out["varied"]))


# ------------------------------------------------------------------ stage: unet
def unet_paths(a):
    return os.path.join(a.work, "unet.pt")


def make_models(a, vocab_size):
    te_cfg = dict(TE_CFG, vocab_size=vocab_size)
    te = TextEncoder(te_cfg, a.seed + 3)
    torch.manual_seed(a.seed + 4)
    un = unet_ref.UNet(UNET_CFG)
    return te_cfg, te, un


def unet_lr(a, step, frac, opt):
    """Sets and returns the joint stage's learning rate: a.warmup linear steps, then a cosine over
    the wall-clock budget (frac = the share used) from a.lr down to a.lr / 10."""
    lr = a.lr * min(1.0, (step + 1) / a.warmup) * (0.5 * (1 + math.cos(math.pi * min(frac, 1.0))) * 0.9 + 0.1)
    for pg in opt.param_groups:
        pg["lr"] = lr
    return lr


def unet_update(a, opt, params, ema, loss, step):
    """One AdamW step on loss (grad-norm clip 1), then the EMA (decay min(a.ema, (1+s)/(10+s)));
    returns the new step count."""
    opt.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(params, 1.0)
    opt.step()
    step += 1
    d = min(a.ema, (1 + step) / (10 + step))
    with torch.no_grad():
        for e, p in zip(ema, params):
            e.mul_(d).add_(p.detach(), alpha=1 - d)
    return step


def stage_unet(a):
    tok = clip_tokenizer_ref.Tok(os.path.join(a.out, "tokenizer"))
    _, caps = load_data(a)
    lat = torch.load(os.path.join(a.work, "latents.pt"))
    lmean, lstd, scale = lat["mean"], lat["std"], lat["scaling_factor"]
    ids_all = torch.tensor([tok.encode(c)[0] for c in caps], dtype=torch.int64)  # [N,77]
    empty = torch.tensor(tok.encode("")[0], dtype=torch.int64)
    te_cfg, te, un = make_models(a, len(tok.vocab))
    params = list(te.parameters()) + list(un.parameters())
    n_te = sum(p.numel() for p in te.parameters())
    n_un = sum(p.numel() for p in un.parameters())
    log("unet stage: text encoder %d params, unet %d params, %d captions" % (n_te, n_un, len(caps)))
    opt = torch.optim.AdamW(params, lr=a.lr, betas=(0.9, 0.999), weight_decay=0.01)
    ema = [p.detach().clone() for p in params]
    step, elapsed, hist = 0, 0.0, []
    ck = unet_paths(a)
    if os.path.exists(ck):
        st = torch.load(ck)
        te.load_state_dict(st["te"])
        un.load_state_dict(st["unet"])
        opt.load_state_dict(st["opt"])
        ema = st["ema"]
        step, elapsed, hist = st["step"], st["elapsed"], st["hist"]
        log("unet: resumed at step %d (%.0f s)" % (step, elapsed))
    ac = alphas_cumprod()
    g = torch.Generator().manual_seed(a.seed + 5 + step)
    budget = a.unet_minutes * 60
    if a.unet_stop_at:  # a wall-clock limit (epoch seconds) shortens the budget
        budget = min(budget, elapsed + a.unet_stop_at - time.time())
    t_start = time.time() - elapsed
    t_log, t_export = time.time(), time.time()

    def checkpoint():
        torch.save({"te": te.state_dict(), "unet": un.state_dict(), "opt": opt.state_dict(), "ema": ema,
                    "step": step, "elapsed": time.time() - t_start, "hist": hist}, ck + ".tmp")
        os.replace(ck + ".tmp", ck)

    while time.time() - t_start < budget:
        B = a.batch
        idx = torch.randint(0, len(caps), (B,), generator=g)
        z0 = (lmean[idx].float() + lstd[idx].float() * torch.randn((B, 4, 16, 16), generator=g)) * scale
        ids = ids_all[idx].clone()
        drop = torch.rand(B, generator=g) < 0.1
        ids[drop] = empty
        t = torch.randint(0, 1000, (B,), generator=g)
        noise = torch.randn(z0.shape, generator=g)
        acb = ac[t][:, None, None, None]
        zt = acb.sqrt() * z0 + (1 - acb).sqrt() * noise
        lr = unet_lr(a, step, (time.time() - t_start) / budget, opt)
        ehs = te(ids)
        pred = un(zt, t.float(), ehs)
        loss = F.mse_loss(pred, noise)
        step = unet_update(a, opt, params, ema, loss, step)
        hist.append(loss.item())
        if time.time() - t_log > 60 or step in (5, 50):
            el = time.time() - t_start
            log("unet step %d %.0f s %.3f steps/s lr %.2e loss(avg100) %.4f"
                % (step, el, step / max(el, 1e-9), lr, float(np.mean(hist[-100:]))))
            t_log = time.time()
        if time.time() - t_export > a.export_minutes * 60:
            checkpoint()
            export(a, tok, te_cfg, ema, te, un, scale, step, time.time() - t_start, hist)
            t_export = time.time()
    checkpoint()
    export(a, tok, te_cfg, ema, te, un, scale, step, time.time() - t_start, hist)
    log("unet done: %d steps, %.0f s, final loss(avg200) %.4f" % (step, time.time() - t_start,
                                                                    float(np.mean(hist[-200:]))))


# ------------------------------------------------------------------ export
def f16_round(sd):
    return {k: v.detach().half().float() for k, v in sd.items()}


SOURCE = "tools/shapes/pretrain.py"


def check_path(a):
    """Where write_check puts the golden of tests/test_shipped_model.c."""
    return os.path.join(ROOT, "tests", "data", "shapes64_check.safetensors")


def export(a, tok, te_cfg, ema, te, un, scale, step, seconds, hist, recipe=None, extra=None):
    """Writes OUT (EMA weights, F16) and the check file, computed from the F16-rounded weights.
    recipe: the module whose UNET_CFG, VAE_CFG, CHECK_PROMPTS, SOURCE, vae_weights(a) and
    check_path(a) are used (default this one, shapes64; tools/emoji/pretrain.py passes itself);
    extra: more fields for WORK/train_info.json."""
    r = recipe or sys.modules[__name__]
    names_te = list(te.sd().keys())
    n_te = len(names_te)
    te_sd = f16_round(dict(zip(names_te, ema[:n_te])))
    un_keys = [k for k, _ in un.named_parameters()]
    un_sd = f16_round(dict(zip(un_keys, ema[n_te:])))
    vae_sd = f16_round(r.vae_weights(a))
    out = a.out
    for sub in ("text_encoder", "unet", "vae", "scheduler"):
        os.makedirs(os.path.join(out, sub), exist_ok=True)
    meta = {"format": "pt"}
    save_st(os.path.join(out, "text_encoder", "model.safetensors"), te_sd, torch.float16, meta)
    save_st(os.path.join(out, "unet", "diffusion_pytorch_model.safetensors"), un_sd, torch.float16, meta)
    save_st(os.path.join(out, "vae", "diffusion_pytorch_model.safetensors"), vae_sd, torch.float16, meta)

    def dump(obj, *p):
        path = os.path.join(out, *p)
        with open(path + ".tmp", "w") as f:
            json.dump(obj, f, indent=2)
            f.write("\n")
        os.replace(path + ".tmp", path)
    dump(te_cfg, "text_encoder", "config.json")
    dump(r.UNET_CFG, "unet", "config.json")
    dump(dict(r.VAE_CFG, scaling_factor=round(scale, 5)), "vae", "config.json")
    dump(SCHED_CFG, "scheduler", "scheduler_config.json")
    dump(MODEL_INDEX, "model_index.json")
    info = dict({"unet_steps": step, "unet_seconds": round(seconds), "unet_batch": a.batch,
                 "loss_avg_last200": float(np.mean(hist[-200:])) if hist else None,
                 "loss_curve": [[i, float(np.mean(hist[max(0, i - 100):i]))] for i in range(100, len(hist) + 1, 100)]},
                **(extra or {}))
    with open(os.path.join(a.work, "train_info.json"), "w") as f:
        json.dump(info, f)
    write_check(a, tok, te_cfg, te_sd, un_sd, vae_sd, scale, r)
    log("exported step %d to %s" % (step, out))


def write_check(a, tok, te_cfg, te_sd, un_sd, vae_sd, scale, r):
    """Golden values for tests/test_shipped_model.c, fp32 math on the F16-rounded weights."""
    ids = torch.tensor([tok.encode(p)[0] for p in r.CHECK_PROMPTS], dtype=torch.int64)
    un = unet_ref.UNet(r.UNET_CFG)
    un.load_state_dict(un_sd, strict=True)
    vae = vae_ref.AutoencoderKL(dict(r.VAE_CFG, scaling_factor=scale))
    vae.load_state_dict(vae_sd, strict=True)
    g = torch.Generator().manual_seed(1234)
    sample = torch.randn(1, 4, 16, 16, generator=g)
    latent = torch.randn(1, 4, 16, 16, generator=g)
    ts = torch.tensor([500.0])
    with torch.no_grad():
        ehs = clip_text_ref.clip_text_forward(te_sd, te_cfg, ids)[0]
        out = un(sample, ts, ehs[:1])
        dec = vae.decode(latent)
    t = {"in.input_ids": ids, "te.last_hidden_state": ehs, "unet.in.sample": sample, "unet.in.timesteps": ts,
         "unet.out": out, "vae.in.latents": latent, "vae.dec.sample": dec}
    save_st(r.check_path(a), t, torch.float32, {"prompts": json.dumps(r.CHECK_PROMPTS), "source": r.SOURCE,
                                                "unet_ehs": "te.last_hidden_state[0:1]"})


def stage_export(a):
    """Re-exports from the last unet checkpoint (e.g. after an interrupted run)."""
    tok = clip_tokenizer_ref.Tok(os.path.join(a.out, "tokenizer"))
    te_cfg, te, un = make_models(a, len(tok.vocab))
    st = torch.load(unet_paths(a))
    te.load_state_dict(st["te"])
    un.load_state_dict(st["unet"])
    scale = torch.load(os.path.join(a.work, "latents.pt"))["scaling_factor"]
    export(a, tok, te_cfg, st["ema"], te, un, scale, st["step"], st["elapsed"], st["hist"])


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("stage", choices=["data", "vae", "vaedec", "unet", "export", "all"])
    ap.add_argument("--out", default=os.path.join(ROOT, "models", "shapes64"))
    ap.add_argument("--work", default="/tmp/shapes64_work")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--n-scenes", type=int, default=8000)
    ap.add_argument("--vae-minutes", type=float, default=22)
    ap.add_argument("--vae-batch", type=int, default=16)
    ap.add_argument("--vae-lr", type=float, default=1e-3)
    ap.add_argument("--vae-kl", type=float, default=1e-6)
    ap.add_argument("--n-varied", type=int, default=4000)
    ap.add_argument("--vaedec-minutes", type=float, default=12)
    ap.add_argument("--vaedec-lr", type=float, default=3e-4)
    ap.add_argument("--unet-minutes", type=float, default=83)
    ap.add_argument("--unet-stop-at", type=float, default=0, help="epoch seconds; stop the unet stage by then")
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--lr", type=float, default=6e-4)
    ap.add_argument("--warmup", type=int, default=100)
    ap.add_argument("--ema", type=float, default=0.998)
    ap.add_argument("--export-minutes", type=float, default=10)
    ap.add_argument("--threads", type=int, default=2)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    torch.manual_seed(a.seed)
    random.seed(a.seed)
    os.makedirs(a.work, exist_ok=True)
    stages = ["data", "vae", "vaedec", "unet"] if a.stage == "all" else [a.stage]
    for s in stages:
        {"data": stage_data, "vae": stage_vae, "vaedec": stage_vaedec, "unet": stage_unet,
         "export": stage_export}[s](a)


if __name__ == "__main__":
    main()
