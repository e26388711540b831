#!/usr/bin/env -S /usr/bin/python3
"""build_dataset.py - the captioned, split emoji set from emoji-datasource-google (tools/emoji/fetch.sh).

Usage: /usr/bin/python3 tools/emoji/build_dataset.py [--package DIR] [--manifest FILE] [--out DIR]
  --package DIR    the unpacked npm package (default build/emoji-cache/package)
  --manifest FILE  TSV manifest to write (default build/emoji-data/manifest.tsv): one line per
                   image that exists, columns file, caption, category, subcategory, split,
                   unified, base, tone; and demo_prompts.txt beside it (the demo's 32 prompts)
  --out DIR        also write DIR/<split>/NAME.png (64x64 RGB) with NAME.txt captions, the
                   image-and-caption layout kohya's sd-scripts reads (caption_extension .txt)
Captions and splits: tools/emoji/emoji_data.py. Deterministic: reruns write identical bytes.
Prints the counts per split and per category. Exits 1 with a message naming the file on bad input.
"""
import argparse
import collections
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.normpath(os.path.join(HERE, "..", ".."))
sys.path.insert(0, HERE)
import emoji_data as ed  # noqa: E402

N_DEMO_PROMPTS = 32
SIZE = 64
# Noto's PNGs are RGBA with transparent surroundings. Read as plain RGB (kohya's load_image does
# Image.convert("RGB"), library/train_util.py) the transparent pixels keep whatever colour they
# store, often black; so the alpha is composited here, on white: the same as stylora's own loader
# (pipeline/data.c flattens RGBA on white), so these files and the raw PNGs train alike; it is the
# page colour emoji are drawn for (their dark outlines assume it); and it leaves the neon style's
# black night a real change for the adapter to learn.
BACKGROUND = (255, 255, 255)


def to_rgb(path):
    """Returns the 64x64 RGB image at path, alpha composited on BACKGROUND; ValueError naming the
    file when it is not a 64x64 image."""
    from PIL import Image
    try:
        with Image.open(path) as im:
            im.load()
            rgba = im.convert("RGBA")
    except (OSError, ValueError) as e:
        raise ValueError("%s: cannot read image: %s" % (path, e))
    if rgba.size != (SIZE, SIZE):
        raise ValueError("%s: image is %dx%d, expected %dx%d" % (path, rgba.size[0], rgba.size[1], SIZE, SIZE))
    bg = Image.new("RGBA", rgba.size, BACKGROUND + (255,))
    return Image.alpha_composite(bg, rgba).convert("RGB")


def demo_prompts(recs):
    """The demo's prompts: the N_DEMO_PROMPTS base emoji of the demo split with the smallest split
    hash (a new emoji can displace at most one), in that order."""
    base = [r for r in recs if r["split"] == "demo" and not r["tone"]]
    base.sort(key=lambda r: (ed.split_hash(r["base"]), r["base"]))
    return [r["caption"] for r in base[:N_DEMO_PROMPTS]]


def build(package, manifest, out=None, log=print):
    """Builds the manifest (and with out the image folders); returns the records."""
    js = os.path.join(package, "emoji.json")
    img_dir = os.path.join(package, "img", "google", "64")
    if not os.path.isdir(img_dir):
        raise ValueError("%s: no such folder (run tools/emoji/fetch.sh first)" % img_dir)
    recs = ed.records(ed.load_entries(js), img_dir)
    if not recs:
        raise ValueError("%s: no image of %s exists there" % (img_dir, js))
    ed.write_atomic(manifest, ed.manifest_text(recs))
    ed.write_atomic(os.path.join(os.path.dirname(os.path.abspath(manifest)), "demo_prompts.txt"),
                    "".join(c + "\n" for c in demo_prompts(recs)))
    if out:
        import io
        for r in recs:
            im = to_rgb(os.path.join(img_dir, r["file"]))
            stem = os.path.splitext(r["file"])[0]
            buf = io.BytesIO()
            im.save(buf, format="PNG")
            ed.write_atomic(os.path.join(out, r["split"], stem + ".png"), buf.getvalue())
            ed.write_atomic(os.path.join(out, r["split"], stem + ".txt"), r["caption"] + "\n")
    by_split = collections.Counter(r["split"] for r in recs)
    base_split = collections.Counter(r["split"] for r in recs if not r["tone"])
    log("images %d, emoji %d (skin-tone variations %d)" % (len(recs), sum(base_split.values()),
                                                            len(recs) - sum(base_split.values())))
    for s in ed.SPLITS:
        log("split %-6s images %5d  emoji %5d" % (s, by_split[s], base_split[s]))
    cats = collections.Counter(r["category"] for r in recs)
    cat_base = collections.Counter(r["category"] for r in recs if not r["tone"])
    for c in sorted(cats):
        per = collections.Counter(r["split"] for r in recs if r["category"] == c and not r["tone"])
        log("category %-18s images %5d  emoji %5d  (%s)" % (c, cats[c], cat_base[c],
                                                             " ".join("%s %d" % (s, per[s]) for s in ed.SPLITS)))
    return recs


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--package", default=os.path.join(ROOT, "build", "emoji-cache", "package"))
    ap.add_argument("--manifest", default=os.path.join(ROOT, "build", "emoji-data", "manifest.tsv"))
    ap.add_argument("--out")
    a = ap.parse_args()
    try:
        build(a.package, a.manifest, a.out)
    except ValueError as e:
        print("build_dataset.py: %s" % e, file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
