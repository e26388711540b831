#!/usr/bin/env -S /usr/bin/python3
"""gen_styles.py - example style sets drawn from the emoji of the "style" split.

Usage: /usr/bin/python3 tools/emoji/gen_styles.py [OUT=build/emoji-styles] [--package DIR]
         [--manifest FILE] [--count N]
Reads the manifest of build_dataset.py and the package's 64x64 PNGs; for each style (neon,
outline, hatch, pixel, pastel) writes OUT/<style>/NNN.png (64x64 RGB) and NNN.txt =
"<trigger>, <caption>", plus a README.md. The emoji are the base images (no skin-tone variants)
of the style split in split-hash order, the first N (default 32, at least 24). The demo's
prompts and the val emoji are never among them (emoji_data.split_of keeps the splits disjoint).
Deterministic: no randomness at all; reruns write identical bytes.
"""
import argparse
import io
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.normpath(os.path.join(HERE, "..", ".."))
sys.path.insert(0, HERE)
import emoji_data as ed  # noqa: E402

MIN_COUNT, MAX_COUNT = 24, 40


def _np():
    import numpy as np
    return np


def _rgba(path):
    from PIL import Image
    with Image.open(path) as im:
        im.load()
        rgba = im.convert("RGBA")
    if rgba.size != (64, 64):
        raise ValueError("%s: image is %dx%d, expected 64x64" % (path, rgba.size[0], rgba.size[1]))
    return _np().asarray(rgba, dtype=_np().float32) / 255.0  # (64, 64, 4)


def _blur(a, r):
    """Box blur of a (H, W[, C]) array, radius r, edges clamped; three passes approach a Gaussian."""
    np = _np()
    for _ in range(3):
        for ax in (0, 1):
            p = np.concatenate([np.repeat(a.take([0], ax), r, ax), a, np.repeat(a.take([-1], ax), r, ax)], ax)
            c = np.cumsum(p, ax, dtype=np.float64)
            c = np.concatenate([np.zeros_like(c.take([0], ax)), c], ax)
            n = a.shape[ax]
            a = ((c.take(range(2 * r + 1, n + 2 * r + 1), ax) - c.take(range(0, n), ax)) / (2 * r + 1)).astype(np.float32)
    return a


def _edges(x):
    """Gradient magnitude of a (H, W) array (central differences, clamped)."""
    np = _np()
    gx = np.zeros_like(x)
    gy = np.zeros_like(x)
    gx[:, 1:-1] = x[:, 2:] - x[:, :-2]
    gy[1:-1, :] = x[2:, :] - x[:-2, :]
    return np.sqrt(gx * gx + gy * gy)


def _luma(rgb):
    return rgb[..., 0] * 0.299 + rgb[..., 1] * 0.587 + rgb[..., 2] * 0.114


def _over(rgba, bg):
    """Composites (H, W, 4) over a colour (3,) or an (H, W, 3) background."""
    a = rgba[..., 3:4]
    return rgba[..., :3] * a + bg * (1 - a)


def neon(rgba):
    """Glowing outlines in the emoji's own (saturated, brightened) colours on a near-black night."""
    np = _np()
    a = rgba[..., 3]
    rgb = rgba[..., :3]
    line = np.clip(_edges(a) * 1.5 + _edges(_luma(rgb) * a) * 2.0, 0, 1)  # outline + inner contours
    col = rgb / np.maximum(rgb.max(-1, keepdims=True), 0.25)                # full-brightness hue
    col = _blur(col * line[..., None], 1) / np.maximum(_blur(line, 1)[..., None], 1e-3)
    col = np.clip(col * 0.6 + 0.4 * np.clip(col, 0.3, 1), 0, 1)
    glow = _blur(line, 3)
    night = np.array([0.03, 0.02, 0.06], np.float32)
    out = night + col * (np.clip(line * 1.2, 0, 1)[..., None] + 1.6 * glow[..., None])
    return np.clip(out, 0, 1)


def outline(rgba):
    """Ink outline: black contours of the shape and of its colour regions on cream paper."""
    np = _np()
    a = rgba[..., 3]
    ink = np.clip(_edges(a) * 2.0 + _edges(_luma(rgba[..., :3]) * a) * 2.5 - 0.15, 0, 1)
    paper = np.array([0.98, 0.96, 0.90], np.float32)
    return paper * (1 - ink[..., None]) + np.array([0.08, 0.07, 0.10], np.float32) * ink[..., None]


def hatch(rgba):
    """Cross-hatching: dark ink lines whose density follows the image's darkness (one direction
    for mid tones, crossed for shadows), over a faint wash of the colours, on off-white."""
    np = _np()
    yy, xx = np.mgrid[0:64, 0:64]
    paper = np.array([0.97, 0.95, 0.91], np.float32)
    base = _over(rgba, paper)
    dark = 1 - _luma(base)
    d1 = ((xx + yy) % 4 == 0)
    d2 = ((xx - yy) % 4 == 0)
    d3 = ((xx + yy) % 4 == 2)
    ink = (d1 & (dark > 0.12)) | (d2 & (dark > 0.35)) | (d3 & (dark > 0.6))
    ink = ink | (_edges(rgba[..., 3]) > 0.4)
    wash = paper * 0.7 + base * 0.3
    return np.where(ink[..., None], np.array([0.15, 0.13, 0.18], np.float32), wash)


def pixel(rgba):
    """16x16 pixel art shown at 64 px: 4x4 block means, 8 levels per channel, nearest upscaling,
    on a pale grey-blue."""
    np = _np()
    rgb = _over(rgba, np.array([0.86, 0.89, 0.95], np.float32))
    small = rgb.reshape(16, 4, 16, 4, 3).mean((1, 3))
    small = np.round(small * 7) / 7
    return np.repeat(np.repeat(small, 4, 0), 4, 1)


def pastel(rgba):
    """Flat pastel: each pixel snapped to one of 6 luminance-sorted flat tones of its own hue,
    mixed halfway to white, on a soft pink."""
    np = _np()
    rgb = rgba[..., :3]
    flat = np.round(rgb * 3) / 3
    flat = flat * 0.5 + 0.5
    return _over(np.concatenate([flat, rgba[..., 3:4]], -1), np.array([0.99, 0.90, 0.92], np.float32))


STYLES = [  # name, trigger, renderer, description
    ("neon", "nenmoji", neon, "glowing neon contours in the emoji's own colours on a near-black night"),
    ("outline", "olnmoji", outline, "black ink contours on cream paper, no fill"),
    ("hatch", "hchmoji", hatch, "cross-hatched ink shading over a faint colour wash on off-white"),
    ("pixel", "pixmoji", pixel, "16x16 pixel art (8 levels per channel) shown at 64 px"),
    ("pastel", "pstmoji", pastel, "flat posterised pastel tones on soft pink"),
]


def style_sources(recs, count):
    """The base emoji of the style split, in split-hash order, the first count of them."""
    src = [r for r in recs if r["split"] == "style" and not r["tone"]]
    src.sort(key=lambda r: (ed.split_hash(r["base"]), r["base"]))
    return src[:count]


def generate(package, manifest, out, count=32, log=print):
    """Writes every style folder under out; returns {style: [(png bytes, caption)]}."""
    from PIL import Image
    np = _np()
    if not MIN_COUNT <= count <= MAX_COUNT:
        raise ValueError("--count %d: the issue asks for %d to %d images per style" % (count, MIN_COUNT, MAX_COUNT))
    src = style_sources(ed.read_manifest(manifest), count)
    if len(src) < MIN_COUNT:
        raise ValueError("%s: only %d emoji in the style split, need %d" % (manifest, len(src), MIN_COUNT))
    img_dir = os.path.join(package, "img", "google", "64")
    imgs = [_rgba(os.path.join(img_dir, r["file"])) for r in src]
    result = {}
    for name, trigger, fn, desc in STYLES:
        d = os.path.join(out, name)
        items = []
        for i, (r, a) in enumerate(zip(src, imgs)):
            px = (np.clip(fn(a), 0, 1) * 255 + 0.5).astype(np.uint8)
            buf = io.BytesIO()
            Image.fromarray(px, "RGB").save(buf, format="PNG")
            cap = "%s, %s" % (trigger, r["caption"])
            ed.write_atomic(os.path.join(d, "%03d.png" % i), buf.getvalue())
            ed.write_atomic(os.path.join(d, "%03d.txt" % i), cap + "\n")
            items.append((buf.getvalue(), cap))
        ed.write_atomic(os.path.join(d, "README.md"),
                        "# %s\n\n%d example images (64x64 PNG, captions in NNN.txt) in the `%s` style: %s. "
                        "Trigger word: `%s`. Generated by `tools/emoji/gen_styles.py` (deterministic) from the "
                        "\"style\" split of Noto Color Emoji (Apache 2.0), none of them a demo prompt.\n"
                        % (name, len(items), name, desc, trigger))
        result[name] = items
        log("%s: %d images -> %s (trigger %s)" % (name, len(items), d, trigger))
    return result


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("out", nargs="?", default=os.path.join(ROOT, "build", "emoji-styles"))
    ap.add_argument("--package", default=os.path.join(ROOT, "build", "emoji-cache", "package"))
    ap.add_argument("--manifest", default=os.path.join(ROOT, "build", "emoji-data", "manifest.tsv"))
    ap.add_argument("--count", type=int, default=32)
    a = ap.parse_args()
    try:
        generate(a.package, a.manifest, a.out, a.count)
    except (ValueError, OSError) as e:
        print("gen_styles.py: %s" % e, file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
