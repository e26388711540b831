#!/usr/bin/env -S /usr/bin/python3
"""vae_ref.py - plain-PyTorch AutoencoderKL (diffusers semantics) and golden files.

Run as `/usr/bin/python3 tests/reference/vae_ref.py` from the repo root (torch
only: diffusers is not installed). It

1. rebuilds AutoencoderKL from diffusers' vae.py / resnet.py / unet_2d_blocks.py
   / attention_processor.py as plain torch modules whose state_dict keys equal
   diffusers' (load_state_dict(strict=True) checks that), and checks it against
   the shared golden (/work/shared/golden/tiny-sd1, made by the real diffusers);
2. for a few further tiny configs writes, under tests/data/:
     vae_<name>/config.json
     vae_<name>/diffusion_pytorch_model.safetensors   diffusers names
     vae_<name>_ldm.safetensors   the same weights under `first_stage_model.`
                                  with original LDM names (attention as [C,C,1,1])
     vae_<name>_io.safetensors    in.image, enc.mean, enc.logvar, in.latents, dec.sample
The LDM names are derived here with the replacement rules of diffusers'
scripts/convert_diffusers_to_original_stable_diffusion.py (vae_conversion_map),
independently of the C table in vae/vae_load.c.
"""
import json
import math
import os
import struct
import sys

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SHARED = os.environ.get("SL_SHARED_DIR", os.path.join(os.path.dirname(ROOT), "shared"))


# ---------------- safetensors (no package needed) ----------------

def st_read(path):
    with open(path, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        hdr = json.loads(f.read(n))
        data = f.read()
    out = {}
    dt = {"F32": np.float32, "F16": np.float16, "I64": np.int64, "BF16": None}
    for k, v in hdr.items():
        if k == "__metadata__":
            continue
        b, e = v["data_offsets"]
        a = np.frombuffer(data[b:e], dtype=dt[v["dtype"]]).reshape(v["shape"])
        out[k] = torch.from_numpy(a.astype(np.float32).copy())
    return out


def st_write(path, tensors):
    names = sorted(tensors)
    hdr, off, blobs = {}, 0, []
    for k in names:
        a = tensors[k].detach().contiguous().float().numpy().astype("<f4")
        b = a.tobytes()
        hdr[k] = {"dtype": "F32", "shape": list(a.shape), "data_offsets": [off, off + len(b)]}
        off += len(b)
        blobs.append(b)
    h = json.dumps(hdr, separators=(",", ":")).encode()
    h += b" " * ((8 - len(h) % 8) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)))
        f.write(h)
        for b in blobs:
            f.write(b)


# ---------------- model ----------------

class Resnet(nn.Module):  # ResnetBlock2D, temb None, eps 1e-6, output_scale_factor 1
    def __init__(self, ci, co, groups):
        super().__init__()
        self.norm1 = nn.GroupNorm(groups, ci, eps=1e-6)
        self.conv1 = nn.Conv2d(ci, co, 3, padding=1)
        self.norm2 = nn.GroupNorm(groups, co, eps=1e-6)
        self.conv2 = nn.Conv2d(co, co, 3, padding=1)
        self.conv_shortcut = nn.Conv2d(ci, co, 1) if ci != co else None

    def forward(self, x):
        h = self.conv1(F.silu(self.norm1(x)))
        h = self.conv2(F.silu(self.norm2(h)))
        if self.conv_shortcut is not None:
            x = self.conv_shortcut(x)
        return x + h


class Attn(nn.Module):  # Attention(heads=1, dim_head=C, norm_num_groups, residual, rescale 1)
    def __init__(self, c, groups):
        super().__init__()
        self.group_norm = nn.GroupNorm(groups, c, eps=1e-6)
        self.to_q = nn.Linear(c, c)
        self.to_k = nn.Linear(c, c)
        self.to_v = nn.Linear(c, c)
        self.to_out = nn.ModuleList([nn.Linear(c, c)])

    def forward(self, x):
        b, c, h, w = x.shape
        n = self.group_norm(x).view(b, c, h * w).transpose(1, 2)
        q, k, v = self.to_q(n), self.to_k(n), self.to_v(n)
        s = torch.softmax((q @ k.transpose(1, 2)) / math.sqrt(c), dim=-1)
        o = self.to_out[0](s @ v)
        return o.transpose(1, 2).reshape(b, c, h, w) + x


class Mid(nn.Module):
    def __init__(self, c, groups, attn):
        super().__init__()
        self.resnets = nn.ModuleList([Resnet(c, c, groups), Resnet(c, c, groups)])
        self.attentions = nn.ModuleList([Attn(c, groups)]) if attn else nn.ModuleList([])

    def forward(self, x):
        x = self.resnets[0](x)
        for a in self.attentions:
            x = a(x)
        return self.resnets[1](x)


class Down(nn.Module):  # Downsample2D(padding=0): pad (0,1,0,1), 3x3 stride 2
    def __init__(self, c):
        super().__init__()
        self.conv = nn.Conv2d(c, c, 3, stride=2, padding=0)

    def forward(self, x):
        return self.conv(F.pad(x, (0, 1, 0, 1)))


class Up(nn.Module):  # Upsample2D(use_conv=True): nearest x2, 3x3 conv
    def __init__(self, c):
        super().__init__()
        self.conv = nn.Conv2d(c, c, 3, padding=1)

    def forward(self, x):
        return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))


class Block(nn.Module):
    def __init__(self, resnets, sampler, kind):
        super().__init__()
        self.resnets = nn.ModuleList(resnets)
        if sampler is not None:
            setattr(self, kind, nn.ModuleList([sampler]))
        self.kind = kind if sampler is not None else None

    def forward(self, x):
        for r in self.resnets:
            x = r(x)
        if self.kind:
            x = getattr(self, self.kind)[0](x)
        return x


class Encoder(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        ch, g, lpb = cfg["block_out_channels"], cfg["norm_num_groups"], cfg["layers_per_block"]
        self.conv_in = nn.Conv2d(cfg["in_channels"], ch[0], 3, padding=1)
        blocks, c = [], ch[0]
        for i, co in enumerate(ch):
            res = [Resnet(c if j == 0 else co, co, g) for j in range(lpb)]
            blocks.append(Block(res, Down(co) if i < len(ch) - 1 else None, "downsamplers"))
            c = co
        self.down_blocks = nn.ModuleList(blocks)
        self.mid_block = Mid(ch[-1], g, cfg.get("mid_block_add_attention", True))
        self.conv_norm_out = nn.GroupNorm(g, ch[-1], eps=1e-6)
        self.conv_out = nn.Conv2d(ch[-1], 2 * cfg["latent_channels"], 3, padding=1)

    def forward(self, x):
        x = self.conv_in(x)
        for b in self.down_blocks:
            x = b(x)
        x = self.mid_block(x)
        return self.conv_out(F.silu(self.conv_norm_out(x)))


class Decoder(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        ch, g, lpb = cfg["block_out_channels"], cfg["norm_num_groups"], cfg["layers_per_block"]
        self.conv_in = nn.Conv2d(cfg["latent_channels"], ch[-1], 3, padding=1)
        self.mid_block = Mid(ch[-1], g, cfg.get("mid_block_add_attention", True))
        rev, blocks, c = list(reversed(ch)), [], ch[-1]
        for i, co in enumerate(rev):
            res = [Resnet(c if j == 0 else co, co, g) for j in range(lpb + 1)]
            blocks.append(Block(res, Up(co) if i < len(ch) - 1 else None, "upsamplers"))
            c = co
        self.up_blocks = nn.ModuleList(blocks)
        self.conv_norm_out = nn.GroupNorm(g, ch[0], eps=1e-6)
        self.conv_out = nn.Conv2d(ch[0], cfg["out_channels"], 3, padding=1)

    def forward(self, z):
        x = self.mid_block(self.conv_in(z))
        for b in self.up_blocks:
            x = b(x)
        return self.conv_out(F.silu(self.conv_norm_out(x)))


class AutoencoderKL(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.cfg = cfg
        lc = cfg["latent_channels"]
        self.encoder = Encoder(cfg)
        self.decoder = Decoder(cfg)
        self.quant_conv = nn.Conv2d(2 * lc, 2 * lc, 1) if cfg.get("use_quant_conv", True) else None
        self.post_quant_conv = nn.Conv2d(lc, lc, 1) if cfg.get("use_post_quant_conv", True) else None

    def encode(self, x):  # -> mean, logvar (DiagonalGaussianDistribution)
        h = self.encoder(x)
        if self.quant_conv is not None:
            h = self.quant_conv(h)
        mean, logvar = torch.chunk(h, 2, dim=1)
        return mean, torch.clamp(logvar, -30.0, 20.0)

    def decode(self, z):
        if self.post_quant_conv is not None:
            z = self.post_quant_conv(z)
        return self.decoder(z)


# ---------------- LDM names (convert_diffusers_to_original_stable_diffusion rules) ----------------

def ldm_state_dict(sd, cfg):
    n, lpb = len(cfg["block_out_channels"]), cfg["layers_per_block"]
    conv = [("nin_shortcut", "conv_shortcut"), ("norm_out", "conv_norm_out"),
            ("mid.attn_1.", "mid_block.attentions.0.")]
    for i in range(n):
        for j in range(lpb):
            conv.append((f"encoder.down.{i}.block.{j}.", f"encoder.down_blocks.{i}.resnets.{j}."))
        if i < n - 1:
            conv.append((f"down.{i}.downsample.", f"down_blocks.{i}.downsamplers.0."))
            conv.append((f"up.{n - 1 - i}.upsample.", f"up_blocks.{i}.upsamplers.0."))
        for j in range(lpb + 1):
            conv.append((f"decoder.up.{n - 1 - i}.block.{j}.", f"decoder.up_blocks.{i}.resnets.{j}."))
    for i in range(2):
        conv.append((f"mid.block_{i + 1}.", f"mid_block.resnets.{i}."))
    attn = [("norm.", "group_norm."), ("q.", "to_q."), ("k.", "to_k."), ("v.", "to_v."),
            ("proj_out.", "to_out.0.")]
    out = {}
    for k, v in sd.items():
        name = k
        for sd_part, hf_part in conv:
            name = name.replace(hf_part, sd_part)
        if "attentions" in k:
            for sd_part, hf_part in attn:
                name = name.replace(hf_part, sd_part)
            if v.ndim == 2:
                v = v.reshape(v.shape[0], v.shape[1], 1, 1)
        out["first_stage_model." + name] = v
    return out


# ---------------- tiled encode / decode (the blending documented in vae/vae.h) ----------------

def tile_starts(n, T, O):
    """Evenly spread starts of tiles of size T over n (overlap >= O)."""
    if n <= T:
        return [0]
    cnt = max(2, -(-(n - O) // (T - O)))
    return [int(math.floor(k * (n - T) / (cnt - 1) + 0.5)) for k in range(cnt)]


def tile_ramp(starts, k, size, f):
    """1-D blend weight of tile k in output pixels: ramps over the overlaps."""
    s, L = starts[k] * f, size * f
    p = torch.arange(s, s + L, dtype=torch.float64)
    w = torch.ones(L, dtype=torch.float64)
    if k > 0:
        a, b = s, (starts[k - 1] + size) * f   # overlap with the previous tile: [a, b)
        w = torch.where(p < b, torch.minimum(w, (p - a + 0.5) / (b - a)), w)
    if k < len(starts) - 1:
        a, b = starts[k + 1] * f, s + L         # overlap with the next tile: [a, b)
        w = torch.where(p >= a, torch.minimum(w, (b - p - 0.5) / (b - a)), w)
    return w


def tiled(fn, x, T, O, fin, fout):
    """Runs fn on tiles of x (sizes in latent units) and blends the outputs (a list)."""
    n_h, n_w = x.shape[2] // fin, x.shape[3] // fin
    sy, sx = tile_starts(n_h, T, O), tile_starts(n_w, T, O)
    th, tw = min(T, n_h), min(T, n_w)
    acc, wsum = None, torch.zeros(n_h * fout, n_w * fout, dtype=torch.float64)
    for ky, y in enumerate(sy):
        for kx, xx in enumerate(sx):
            outs = fn(x[:, :, y * fin:(y + th) * fin, xx * fin:(xx + tw) * fin])
            wgt = tile_ramp(sy, ky, th, fout)[:, None] * tile_ramp(sx, kx, tw, fout)[None, :]
            if acc is None:
                acc = [torch.zeros(o.shape[0], o.shape[1], n_h * fout, n_w * fout, dtype=torch.float64) for o in outs]
            sl = (slice(None), slice(None), slice(y * fout, (y + th) * fout), slice(xx * fout, (xx + tw) * fout))
            for a, o in zip(acc, outs):
                a[sl] += o.double() * wgt
            wsum[sl[2:]] += wgt
    return [(a / wsum).float() for a in acc]


# ---------------- golden check and generation ----------------

def check_shared_golden():
    d = os.path.join(SHARED, "golden", "tiny-sd1")
    cfg = json.load(open(os.path.join(d, "vae", "config.json")))
    m = AutoencoderKL(cfg)
    m.load_state_dict(st_read(os.path.join(d, "vae", "diffusion_pytorch_model.safetensors")), strict=True)
    ex = st_read(os.path.join(d, "expected.safetensors"))
    with torch.no_grad():
        mean, logvar = m.encode(ex["vae.in.image"])
        dec = m.decode(ex["vae.in.latents"])
    worst = 0.0
    for name, got in (("vae.enc.mean", mean), ("vae.enc.logvar", logvar), ("vae.dec.sample", dec)):
        ref = ex[name]
        err = (got - ref).abs().max().item() / ref.abs().max().item()
        print(f"shared golden {name}: max abs err / max|ref| = {err:.3g}")
        worst = max(worst, err)
    if worst > 1e-5:
        sys.exit("reference model disagrees with the shared golden")


CONFIGS = {
    # three down blocks, layers_per_block 2, 4 groups, non-square image
    "3blk": dict(block_out_channels=[8, 16, 16], layers_per_block=2, norm_num_groups=4, latent_channels=4,
                 in_channels=3, out_channels=3, image=(2, 24, 40), latent=(2, 6, 10)),
    # four blocks, 2 groups, no quant convs, no mid attention, shift factor, odd image size
    "4blk": dict(block_out_channels=[8, 8, 12, 16], layers_per_block=1, norm_num_groups=2, latent_channels=6,
                 in_channels=3, out_channels=3, use_quant_conv=False, use_post_quant_conv=False,
                 mid_block_add_attention=False, shift_factor=0.1159, scaling_factor=0.3611,
                 image=(1, 30, 34), latent=(1, 3, 5)),
    # two blocks, layers_per_block 3, 8 groups, 1 image channel in, 2 out, latent 2
    "2blk": dict(block_out_channels=[8, 16], layers_per_block=3, norm_num_groups=8, latent_channels=2,
                 in_channels=1, out_channels=2, image=(2, 16, 16), latent=(2, 9, 7)),
}


def make(name, spec, seed, tiles=False):
    torch.manual_seed(seed)
    spec = dict(spec)
    (bi, hi, wi), (bl, hl, wl) = spec.pop("image"), spec.pop("latent")
    n = len(spec["block_out_channels"])
    cfg = {"_class_name": "AutoencoderKL", "act_fn": "silu",
           "down_block_types": ["DownEncoderBlock2D"] * n, "up_block_types": ["UpDecoderBlock2D"] * n,
           "sample_size": 32, "scaling_factor": 0.18215, "shift_factor": None, "force_upcast": True}
    cfg.update(spec)
    m = AutoencoderKL(cfg)
    with torch.no_grad():  # non-trivial norm affine so gamma/beta mix-ups show
        for mod in m.modules():
            if isinstance(mod, nn.GroupNorm):
                mod.weight.uniform_(0.5, 1.5)
                mod.bias.uniform_(-0.3, 0.3)
    sd = {k: v.detach().clone() for k, v in m.state_dict().items()}
    image = torch.rand(bi, cfg["in_channels"], hi, wi) * 2 - 1
    lat = torch.randn(bl, cfg["latent_channels"], hl, wl)
    with torch.no_grad():
        mean, logvar = m.encode(image)
        dec = m.decode(lat)
    out = os.path.join(ROOT, "tests", "data")
    folder = os.path.join(out, f"vae_{name}")
    os.makedirs(folder, exist_ok=True)
    with open(os.path.join(folder, "config.json"), "w") as f:
        json.dump(cfg, f, indent=2)
    st_write(os.path.join(folder, "diffusion_pytorch_model.safetensors"), sd)
    st_write(os.path.join(out, f"vae_{name}_ldm.safetensors"), ldm_state_dict(sd, cfg))
    io = {"in.image": image, "enc.mean": mean, "enc.logvar": logvar, "in.latents": lat, "dec.sample": dec}
    if tiles:  # tiled decode (latent tile 8, overlap 4) and encode (image tile 8f, overlap 4f)
        f = 2 ** (n - 1)
        tl = torch.randn(1, cfg["latent_channels"], 12, 16)
        ti = torch.rand(1, cfg["in_channels"], 12 * f, 16 * f) * 2 - 1
        with torch.no_grad():
            io["tile.in.latents"] = tl
            io["tile.dec"] = tiled(lambda t: [m.decode(t)], tl, 8, 4, 1, f)[0]
            io["tile.in.image"] = ti
            io["tile.enc.mean"], io["tile.enc.logvar"] = tiled(lambda t: list(m.encode(t)), ti, 8, 4, f, 1)
    st_write(os.path.join(out, f"vae_{name}_io.safetensors"), io)
    print(f"vae_{name}: {sum(v.numel() for v in sd.values())} params, mean {tuple(mean.shape)}, "
          f"dec {tuple(dec.shape)}")


def main():
    torch.set_num_threads(2)
    check_shared_golden()
    for i, (name, spec) in enumerate(sorted(CONFIGS.items())):
        make(name, spec, 1000 + i, tiles=(name == "3blk"))


if __name__ == "__main__":
    main()
