#!/usr/bin/env -S /usr/bin/python3
"""unet_ref.py - a plain-PyTorch UNet2DConditionModel (diffusers semantics) and golden files.

No diffusers needed: modules are written here with diffusers' attribute names, so
state_dict keys are diffusers keys. Semantics follow diffusers 0.30
(unet_2d_condition.py, unet_2d_blocks.py, resnet.py, transformer_2d.py,
attention.py, attention_processor.py, embeddings.py).

Usage:
  /usr/bin/python3 tests/reference/unet_ref.py --check-golden ../shared/golden/tiny-sd1
  /usr/bin/python3 tests/reference/unet_ref.py --write tests/data
The second writes, per tiny config NAME:
  tests/data/unet_NAME.config.json        diffusers config
  tests/data/unet_NAME.weights.safetensors diffusers keys
  tests/data/unet_NAME.expected.safetensors in.sample, in.timesteps (F32), in.ehs, in.target,
      out, loss, grad.in.sample, grad.in.ehs, grad.<every parameter key> (F.mse_loss mean)
and, for conv3, a single-file checkpoint unet_conv3.ldm.safetensors ("model.diffusion_model.*" names,
written from the LDM naming of diffusers' convert_ldm_unet_checkpoint).
"""
import argparse
import json
import math
import os
import struct
import sys

import torch
import torch.nn as nn
import torch.nn.functional as F

# ----------------------------------------------------------------------------- safetensors
DT = {"F32": torch.float32, "F16": torch.float16, "I64": torch.int64, "BF16": torch.bfloat16}
DT_INV = {torch.float32: "F32", torch.int64: "I64"}


def st_read(path):
    with open(path, "rb") as f:
        b = f.read()
    n = struct.unpack("<Q", b[:8])[0]
    h = json.loads(b[8:8 + n])
    out = {}
    for k, v in h.items():
        if k == "__metadata__":
            continue
        s, e = v["data_offsets"]
        t = torch.frombuffer(bytearray(b[8 + n + s:8 + n + e]), dtype=DT[v["dtype"]]).reshape(v["shape"])
        out[k] = t.clone()
    return out


def st_write(path, tensors, meta=None):
    header, off, blobs = {}, 0, []
    for k in sorted(tensors):
        t = tensors[k].detach().contiguous().cpu()
        data = t.numpy().tobytes()
        header[k] = {"dtype": DT_INV[t.dtype], "shape": list(t.shape), "data_offsets": [off, off + len(data)]}
        off += len(data)
        blobs.append(data)
    if meta:
        header["__metadata__"] = meta
    hb = json.dumps(header, separators=(",", ":")).encode()
    hb += b" " * ((8 - len(hb) % 8) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(hb)))
        f.write(hb)
        for d in blobs:
            f.write(d)


# ----------------------------------------------------------------------------- modules
def timestep_embedding(t, dim, flip_sin_to_cos, shift, max_period=10000):
    half = dim // 2
    exponent = -math.log(max_period) * torch.arange(half, dtype=torch.float32) / (half - shift)
    emb = t[:, None].float() * torch.exp(exponent)[None, :]
    emb = torch.cat([torch.sin(emb), torch.cos(emb)], dim=-1)
    if flip_sin_to_cos:
        emb = torch.cat([emb[:, half:], emb[:, :half]], dim=-1)
    if dim % 2 == 1:
        emb = F.pad(emb, (0, 1, 0, 0))
    return emb


class TimestepEmbedding(nn.Module):
    def __init__(self, cin, dim):
        super().__init__()
        self.linear_1 = nn.Linear(cin, dim)
        self.linear_2 = nn.Linear(dim, dim)

    def forward(self, x):
        return self.linear_2(F.silu(self.linear_1(x)))


class ResnetBlock2D(nn.Module):
    def __init__(self, cin, cout, temb, groups, eps):
        super().__init__()
        self.norm1 = nn.GroupNorm(groups, cin, eps=eps)
        self.conv1 = nn.Conv2d(cin, cout, 3, padding=1)
        self.time_emb_proj = nn.Linear(temb, cout)
        self.norm2 = nn.GroupNorm(groups, cout, eps=eps)
        self.conv2 = nn.Conv2d(cout, cout, 3, padding=1)
        self.conv_shortcut = nn.Conv2d(cin, cout, 1) if cin != cout else None

    def forward(self, x, temb):
        h = self.conv1(F.silu(self.norm1(x)))
        h = h + self.time_emb_proj(F.silu(temb))[:, :, None, None]
        h = self.conv2(F.silu(self.norm2(h)))
        if self.conv_shortcut is not None:
            x = self.conv_shortcut(x)
        return x + h


class Attention(nn.Module):
    def __init__(self, dim, kv_dim, heads):
        super().__init__()
        self.heads = heads
        self.to_q = nn.Linear(dim, dim, bias=False)
        self.to_k = nn.Linear(kv_dim, dim, bias=False)
        self.to_v = nn.Linear(kv_dim, dim, bias=False)
        self.to_out = nn.ModuleList([nn.Linear(dim, dim), nn.Dropout(0.0)])

    def forward(self, x, ctx=None):
        ctx = x if ctx is None else ctx
        B, Tq, C = x.shape
        Tk = ctx.shape[1]
        hd = C // self.heads
        q = self.to_q(x).view(B, Tq, self.heads, hd).transpose(1, 2)
        k = self.to_k(ctx).view(B, Tk, self.heads, hd).transpose(1, 2)
        v = self.to_v(ctx).view(B, Tk, self.heads, hd).transpose(1, 2)
        a = torch.softmax(q @ k.transpose(-1, -2) * hd ** -0.5, dim=-1)
        o = (a @ v).transpose(1, 2).reshape(B, Tq, C)
        return self.to_out[0](o)


class GEGLU(nn.Module):
    def __init__(self, dim, inner):
        super().__init__()
        self.proj = nn.Linear(dim, inner * 2)

    def forward(self, x):
        h, g = self.proj(x).chunk(2, dim=-1)
        return h * F.gelu(g)


class FeedForward(nn.Module):
    def __init__(self, dim):
        super().__init__()
        self.net = nn.ModuleList([GEGLU(dim, 4 * dim), nn.Dropout(0.0), nn.Linear(4 * dim, dim)])

    def forward(self, x):
        for m in self.net:
            x = m(x)
        return x


class BasicTransformerBlock(nn.Module):
    def __init__(self, dim, cross, heads):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn1 = Attention(dim, dim, heads)
        self.norm2 = nn.LayerNorm(dim)
        self.attn2 = Attention(dim, cross, heads)
        self.norm3 = nn.LayerNorm(dim)
        self.ff = FeedForward(dim)

    def forward(self, x, ctx):
        x = self.attn1(self.norm1(x)) + x
        x = self.attn2(self.norm2(x), ctx) + x
        return self.ff(self.norm3(x)) + x


class Transformer2DModel(nn.Module):
    def __init__(self, heads, C, cross, groups, n_layers, linear):
        super().__init__()
        self.linear = linear
        self.norm = nn.GroupNorm(groups, C, eps=1e-6)
        self.proj_in = nn.Linear(C, C) if linear else nn.Conv2d(C, C, 1)
        self.transformer_blocks = nn.ModuleList([BasicTransformerBlock(C, cross, heads) for _ in range(n_layers)])
        self.proj_out = nn.Linear(C, C) if linear else nn.Conv2d(C, C, 1)

    def forward(self, x, ctx):
        B, C, H, W = x.shape
        res = x
        h = self.norm(x)
        if not self.linear:
            h = self.proj_in(h)
            h = h.permute(0, 2, 3, 1).reshape(B, H * W, C)
        else:
            h = h.permute(0, 2, 3, 1).reshape(B, H * W, C)
            h = self.proj_in(h)
        for b in self.transformer_blocks:
            h = b(h, ctx)
        if self.linear:
            h = self.proj_out(h)
            h = h.reshape(B, H, W, C).permute(0, 3, 1, 2)
        else:
            h = h.reshape(B, H, W, C).permute(0, 3, 1, 2)
            h = self.proj_out(h)
        return h + res


class Downsample2D(nn.Module):
    def __init__(self, C):
        super().__init__()
        self.conv = nn.Conv2d(C, C, 3, stride=2, padding=1)

    def forward(self, x):
        return self.conv(x)


class Upsample2D(nn.Module):
    def __init__(self, C):
        super().__init__()
        self.conv = nn.Conv2d(C, C, 3, padding=1)

    def forward(self, x):
        return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))


class Block(nn.Module):
    pass


def per_block(v, n):
    return list(v) if isinstance(v, (list, tuple)) else [v] * n


class UNet(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.cfg = cfg
        boc = cfg["block_out_channels"]
        nb = len(boc)
        g, eps = cfg.get("norm_num_groups", 32), cfg.get("norm_eps", 1e-5)
        cross = cfg["cross_attention_dim"]
        lin = cfg.get("use_linear_projection", False)
        assert cfg.get("num_attention_heads") is None
        heads = per_block(cfg.get("attention_head_dim", 8), nb)  # diffusers: attention_head_dim = number of heads
        lpb = per_block(cfg.get("layers_per_block", 2), nb)
        tlpb = per_block(cfg.get("transformer_layers_per_block", 1), nb)
        td = boc[0] * 4
        self.time_embedding = TimestepEmbedding(boc[0], td)
        self.conv_in = nn.Conv2d(cfg["in_channels"], boc[0], 3, padding=1)
        self.down_blocks = nn.ModuleList()
        ch = boc[0]
        for i, t in enumerate(cfg["down_block_types"]):
            b = Block()
            co = boc[i]
            b.resnets = nn.ModuleList()
            b.attentions = nn.ModuleList() if t == "CrossAttnDownBlock2D" else None
            for j in range(lpb[i]):
                b.resnets.append(ResnetBlock2D(ch if j == 0 else co, co, td, g, eps))
                if b.attentions is not None:
                    b.attentions.append(Transformer2DModel(heads[i], co, cross, g, tlpb[i], lin))
            b.downsamplers = nn.ModuleList([Downsample2D(co)]) if i < nb - 1 else None
            ch = co
            self.down_blocks.append(b)
        if cfg.get("mid_block_type", "UNetMidBlock2DCrossAttn") is not None:
            m = Block()
            m.resnets = nn.ModuleList([ResnetBlock2D(ch, ch, td, g, eps), ResnetBlock2D(ch, ch, td, g, eps)])
            m.attentions = nn.ModuleList([Transformer2DModel(heads[-1], ch, cross, g, tlpb[-1], lin)])
            self.mid_block = m
        else:
            self.mid_block = None
        self.up_blocks = nn.ModuleList()
        rboc, rheads, rlpb, rt = boc[::-1], heads[::-1], lpb[::-1], tlpb[::-1]
        prev = rboc[0]
        for i, t in enumerate(cfg["up_block_types"]):
            b = Block()
            co = rboc[i]
            cin = rboc[min(i + 1, nb - 1)]
            nl = rlpb[i] + 1
            b.resnets = nn.ModuleList()
            b.attentions = nn.ModuleList() if t == "CrossAttnUpBlock2D" else None
            for j in range(nl):
                skip = cin if j == nl - 1 else co
                rin = prev if j == 0 else co
                b.resnets.append(ResnetBlock2D(rin + skip, co, td, g, eps))
                if b.attentions is not None:
                    b.attentions.append(Transformer2DModel(rheads[i], co, cross, g, rt[i], lin))
            b.upsamplers = nn.ModuleList([Upsample2D(co)]) if i < nb - 1 else None
            prev = co
            self.up_blocks.append(b)
        self.conv_norm_out = nn.GroupNorm(g, boc[0], eps=eps)
        self.conv_out = nn.Conv2d(boc[0], cfg["out_channels"], 3, padding=1)

    def forward(self, sample, t, ehs):
        cfg = self.cfg
        temb = self.time_embedding(timestep_embedding(t, cfg["block_out_channels"][0], cfg.get("flip_sin_to_cos", True),
                                                      cfg.get("freq_shift", 0)))
        x = self.conv_in(sample)
        skips = [x]
        for b in self.down_blocks:
            for j, r in enumerate(b.resnets):
                x = r(x, temb)
                if b.attentions is not None:
                    x = b.attentions[j](x, ehs)
                skips.append(x)
            if b.downsamplers is not None:
                x = b.downsamplers[0](x)
                skips.append(x)
        if self.mid_block is not None:
            x = self.mid_block.resnets[0](x, temb)
            x = self.mid_block.attentions[0](x, ehs)
            x = self.mid_block.resnets[1](x, temb)
        for b in self.up_blocks:
            for j, r in enumerate(b.resnets):
                x = torch.cat([x, skips.pop()], dim=1)
                x = r(x, temb)
                if b.attentions is not None:
                    x = b.attentions[j](x, ehs)
            if b.upsamplers is not None:
                x = b.upsamplers[0](x)
        return self.conv_out(F.silu(self.conv_norm_out(x)))


# ----------------------------------------------------------------------------- LDM names
def ldm_name(cfg, key):
    """diffusers key -> original LDM key (without model.diffusion_model.), as convert_ldm_unet_checkpoint inverts."""
    nb = len(cfg["block_out_channels"])
    lpb = per_block(cfg.get("layers_per_block", 2), nb)
    top = {"time_embedding.linear_1": "time_embed.0", "time_embedding.linear_2": "time_embed.2",
           "conv_in": "input_blocks.0.0", "conv_norm_out": "out.0", "conv_out": "out.2"}
    res = {"norm1": "in_layers.0", "conv1": "in_layers.2", "time_emb_proj": "emb_layers.1",
           "norm2": "out_layers.0", "conv2": "out_layers.3", "conv_shortcut": "skip_connection"}
    p = key.split(".")
    for k, v in top.items():
        if key.startswith(k + "."):
            return v + key[len(k):]
    if p[0] == "down_blocks":
        i = int(p[1])
        start = 1 + sum(lpb[k] + 1 for k in range(i))  # each earlier block: layers + one downsampler
        if p[2] == "downsamplers":
            return "input_blocks.%d.0.op.%s" % (start + lpb[i], ".".join(p[5:]))
        j = int(p[3])
        if p[2] == "resnets":
            return "input_blocks.%d.0.%s.%s" % (start + j, res[p[4]], ".".join(p[5:]))
        return "input_blocks.%d.1.%s" % (start + j, ".".join(p[4:]))
    if p[0] == "mid_block":
        j = int(p[2])
        if p[1] == "resnets":
            return "middle_block.%d.%s.%s" % (0 if j == 0 else 2, res[p[3]], ".".join(p[4:]))
        return "middle_block.1.%s" % ".".join(p[3:])
    if p[0] == "up_blocks":
        i = int(p[1])
        rl = lpb[::-1]
        start = sum(rl[k] + 1 for k in range(i))
        if p[2] == "upsamplers":
            has_attn = cfg["up_block_types"][i] == "CrossAttnUpBlock2D"
            return "output_blocks.%d.%d.conv.%s" % (start + rl[i], 2 if has_attn else 1, ".".join(p[5:]))
        j = int(p[3])
        if p[2] == "resnets":
            return "output_blocks.%d.0.%s.%s" % (start + j, res[p[4]], ".".join(p[5:]))
        return "output_blocks.%d.1.%s" % (start + j, ".".join(p[4:]))
    raise KeyError(key)


# ----------------------------------------------------------------------------- configs
BASE = {"_class_name": "UNet2DConditionModel", "in_channels": 4, "out_channels": 4, "flip_sin_to_cos": True,
        "freq_shift": 0, "norm_eps": 1e-5, "act_fn": "silu", "resnet_time_scale_shift": "default",
        "mid_block_type": "UNetMidBlock2DCrossAttn", "num_attention_heads": None, "class_embed_type": None,
        "addition_embed_type": None, "upcast_attention": False, "only_cross_attention": False,
        "dual_cross_attention": False, "center_input_sample": False, "downsample_padding": 1,
        "mid_block_scale_factor": 1, "conv_in_kernel": 3, "conv_out_kernel": 3, "time_cond_proj_dim": None}

CONFIGS = {
    # linear projections, per-block head list, 2 resnets per block, 2 transformer layers, mid block
    "lin2": dict(BASE, block_out_channels=[8, 16], down_block_types=["CrossAttnDownBlock2D", "DownBlock2D"],
                 up_block_types=["UpBlock2D", "CrossAttnUpBlock2D"], layers_per_block=2, norm_num_groups=4,
                 attention_head_dim=[2, 4], transformer_layers_per_block=2, use_linear_projection=True,
                 cross_attention_dim=12, freq_shift=1, flip_sin_to_cos=False),
    # conv projections, 3 blocks, no mid block, per-block layers_per_block and heads
    "conv3": dict(BASE, block_out_channels=[8, 16, 16],
                  down_block_types=["CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"],
                  up_block_types=["UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"],
                  layers_per_block=[1, 2, 1], norm_num_groups=4, attention_head_dim=[1, 2, 2],
                  transformer_layers_per_block=1, use_linear_projection=False, cross_attention_dim=6,
                  mid_block_type=None),
}


def randomize(model, seed):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for k, p in model.named_parameters():
            if p.dim() == 1 and ("norm" in k):
                base = 1.0 if k.endswith("weight") else 0.0
                p.copy_(base + 0.1 * torch.randn(p.shape, generator=g))
            elif p.dim() == 1:
                p.copy_(0.1 * torch.randn(p.shape, generator=g))
            else:
                fan = p[0].numel()
                p.copy_(torch.randn(p.shape, generator=g) / math.sqrt(fan))


def write_config(name, cfg, out_dir, write_ldm, B=2, H=8, W=8, T=5, seed=0):
    torch.manual_seed(seed)
    m = UNet(cfg)
    randomize(m, seed + 1)
    sd = {k: v for k, v in m.state_dict().items()}
    g = torch.Generator().manual_seed(seed + 2)
    sample = torch.randn(B, cfg["in_channels"], H, W, generator=g)
    ts = torch.tensor([7.0, 613.0][:B])
    ehs = torch.randn(B, T, cfg["cross_attention_dim"], generator=g)
    target = torch.randn(B, cfg["out_channels"], H, W, generator=g)
    sample.requires_grad_(True)
    ehs.requires_grad_(True)
    out = m(sample, ts, ehs)
    loss = F.mse_loss(out, target)
    loss.backward()
    exp = {"in.sample": sample.detach(), "in.timesteps": ts, "in.ehs": ehs.detach(), "in.target": target,
           "out": out.detach(), "loss": loss.detach().reshape(1), "grad.in.sample": sample.grad, "grad.in.ehs": ehs.grad}
    for k, p in m.named_parameters():
        exp["grad." + k] = p.grad
    with open(os.path.join(out_dir, "unet_%s.config.json" % name), "w") as f:
        json.dump(cfg, f, indent=1)
    st_write(os.path.join(out_dir, "unet_%s.weights.safetensors" % name), sd, {"format": "pt"})
    st_write(os.path.join(out_dir, "unet_%s.expected.safetensors" % name), exp, {"oracle": "unet_ref.py"})
    print("%s: %d params (%d floats), loss %.6f, out max %.4f" % (name, len(sd), sum(v.numel() for v in sd.values()),
                                                                 loss.item(), out.abs().max().item()))
    if not write_ldm:
        return
    ldm = {"model.diffusion_model." + ldm_name(cfg, k): v for k, v in sd.items()}
    assert len(ldm) == len(sd)
    st_write(os.path.join(out_dir, "unet_%s.ldm.safetensors" % name), ldm, {"format": "pt"})


def check_golden(d):
    cfg = json.load(open(os.path.join(d, "unet", "config.json")))
    m = UNet(cfg)
    sd = st_read(os.path.join(d, "unet", "diffusion_pytorch_model.safetensors"))
    missing, unexpected = m.load_state_dict(sd, strict=True), None
    ex = st_read(os.path.join(d, "expected.safetensors"))
    with torch.no_grad():
        out = m(ex["unet.in.sample"], ex["unet.in.timesteps"], ex["unet.in.encoder_hidden_states"])
    err = (out - ex["unet.out"]).abs().max().item()
    print("golden unet.out max abs err %.3g (scale %.3g)" % (err, ex["unet.out"].abs().max().item()))
    # single-file names against the SD 1.5 layout
    sd15 = json.load(open(os.path.join(d, "..", "..", "sd15", "unet", "config.json")))
    for k in ["down_blocks.3.resnets.1.norm1.weight", "down_blocks.2.downsamplers.0.conv.weight",
              "up_blocks.0.upsamplers.0.conv.bias", "up_blocks.1.upsamplers.0.conv.bias",
              "up_blocks.3.attentions.2.proj_out.weight", "mid_block.resnets.1.conv2.weight"]:
        print("  %s -> %s" % (k, ldm_name(sd15, k)))
    return err <= 1e-4 * ex["unet.out"].abs().max().item()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--check-golden")
    ap.add_argument("--write")
    a = ap.parse_args()
    torch.set_num_threads(1)
    ok = True
    if a.check_golden:
        ok = check_golden(a.check_golden)
    if a.write:
        for name, cfg in CONFIGS.items():
            write_config(name, cfg, a.write, name == "conv3")
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
