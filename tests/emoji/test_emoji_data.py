#!/usr/bin/env -S /usr/bin/python3
"""test_emoji_data.py - tools/emoji/ without network: captions, splits, manifest, images, styles, fetch.

Run by tests/cli_emoji_data.sh (CTest). Builds fake packages in a temp dir: the 20 real
emoji.json entries of tests/data/emoji/emoji_subset.json (copied from emoji-datasource-google
16.0.0) with generated 64x64 RGBA PNGs, and a synthetic 2,000-entry package in the same schema
for the split statistics. Exits 1 on any failure, 77 when numpy or PIL is missing.
"""
import copy
import hashlib
import io
import json
import os
import random
import subprocess
import sys
import tempfile

try:
    import numpy as np
    from PIL import Image
except ImportError as e:
    print("skip: %s (tools/deps.sh --test installs python3-numpy python3-pil)" % e)
    sys.exit(77)

SRC = os.environ.get("SL_SOURCE_DIR") or os.path.normpath(os.path.join(os.path.dirname(__file__), "..", ".."))
sys.path.insert(0, os.path.join(SRC, "tools", "emoji"))
import emoji_data as ed  # noqa: E402
import build_dataset as bd  # noqa: E402
import gen_styles as gs  # noqa: E402

fails = 0
checks = 0


def check(cond, what):
    global fails, checks
    checks += 1
    print(("ok   " if cond else "FAIL ") + what)
    if not cond:
        fails += 1


def png(path, seed, size=64, opaque=False):
    """A seeded RGBA test image: a coloured disc with a darker ring on a transparent field."""
    rng = random.Random(seed)
    yy, xx = np.mgrid[0:size, 0:size]
    r = np.hypot(xx - size / 2 + 0.5, yy - size / 2 + 0.5)
    col = np.array([rng.randrange(40, 256) for _ in range(3)], np.uint8)
    px = np.zeros((size, size, 4), np.uint8)
    disc = r < size * 0.4
    px[disc, :3] = col
    px[(r >= size * 0.3) & disc, :3] = col // 3
    px[..., 3] = 255 if opaque else np.where(disc, 255, 0)
    Image.fromarray(px, "RGBA").save(path)


def package(root, entries, images=None):
    """Writes root/package/{emoji.json, img/google/64/*.png}; images: the file names to draw
    (default: every base and variation image)."""
    pkg = os.path.join(root, "package")
    img = os.path.join(pkg, "img", "google", "64")
    os.makedirs(img, exist_ok=True)
    with open(os.path.join(pkg, "emoji.json"), "w", encoding="utf-8") as f:
        json.dump(entries, f)
    if images is None:
        images = [e["image"] for e in entries] + [v["image"] for e in entries
                                                  for v in (e.get("skin_variations") or {}).values()]
    for i, name in enumerate(sorted(images)):
        png(os.path.join(img, name), i)
    return pkg


def quiet(*_):
    pass


REAL = json.load(open(os.path.join(SRC, "tests", "data", "emoji", "emoji_subset.json"), encoding="utf-8"))

# Golden captions of real entries: the three examples, flags (with and without "the",
# accents folded, a subdivision), plurals without an article, "an", a single word with its
# category, "X: Y" qualifiers, and the two "MAN IN TUXEDO" entries told apart by short_name.
GOLDEN = {
    "1F34E": "a red apple",
    "1F600": "a grinning face",
    "1F680": "a rocket, travel",
    "1F1EB-1F1F7": "the flag of france",
    "1F1FA-1F1F8": "the flag of the united states",
    "1F1E8-1F1EE": "the flag of cote d'ivoire",
    "1F3F4-E0067-E0062-E0065-E006E-E0067-E007F": "the flag of england",
    "2728": "sparkles, activities",
    "1F495": "two hearts",
    "1F38C": "crossed flags",
    "231B": "an hourglass, travel",
    "1F47B": "a ghost, smileys",
    "1F468-200D-1F9B0": "a man, red hair",
    "1F469-200D-2764-FE0F-200D-1F468": "a couple with heart, woman, man",
    "002A-FE0F-20E3": "a keycap, asterisk",
    "1F3CB-FE0F": "a person lifting weights",
    "1F385": "a father christmas",
    "1F935": "a person in tuxedo",
    "1F935-200D-2642-FE0F": "a man in tuxedo",
    "1F3FC": "an emoji modifier fitzpatrick type-3",
}
GOLDEN_TONES = {  # image unified -> caption
    "1F385-1F3FD": "a father christmas, medium skin tone",
    "1F468-1F3FF-200D-1F9B0": "a man, red hair, dark skin tone",
    "1F469-1F3FB-200D-2764-FE0F-200D-1F468-1F3FF": "a couple with heart, woman, man, light skin tone, dark skin tone",
    "1F469-1F3FC-200D-2764-FE0F-200D-1F468-1F3FC": "a couple with heart, woman, man, medium-light skin tone",
}


def test_captions(tmp):
    pkg = package(os.path.join(tmp, "real"), REAL)
    recs = ed.records(ed.load_entries(os.path.join(pkg, "emoji.json")), os.path.join(pkg, "img", "google", "64"))
    base = {r["unified"]: r["caption"] for r in recs if not r["tone"]}
    for u, want in GOLDEN.items():
        check(base.get(u) == want, "caption %s = '%s' (got '%s')" % (u, want, base.get(u)))
    alltones = {r["unified"]: r["caption"] for r in recs}
    for u, want in GOLDEN_TONES.items():
        check(alltones.get(u) == want, "skin-tone caption %s = '%s' (got '%s')" % (u, want, alltones.get(u)))
    n_var = sum(len(e.get("skin_variations") or {}) for e in REAL)
    check(len(recs) == len(REAL) + n_var, "one record per image: %d = %d base + %d variations" % (len(recs), len(REAL), n_var))
    caps = [r["caption"] for r in recs]
    check(len(set(caps)) == len(caps), "captions unique (%d)" % len(caps))
    clean = all(c == c.lower() and c == c.strip() and c.isascii() and not c.endswith((",", ".", "-"))
                and "  " not in c and "\t" not in c for c in caps)
    check(clean, "captions lower-case ASCII, no doubled spaces, no trailing punctuation")
    check(all(r["split"] == next(b["split"] for b in recs if b["unified"] == r["base"]) for r in recs),
          "skin-tone variations share their base emoji's split")
    # Only images that exist become records.
    drop = {"1f34e.png", "1f385-1f3fd.png"}
    images = [r["file"] for r in recs if r["file"] not in drop]
    pkg2 = package(os.path.join(tmp, "real2"), REAL, images)
    recs2 = ed.records(ed.load_entries(os.path.join(pkg2, "emoji.json")), os.path.join(pkg2, "img", "google", "64"))
    check(len(recs2) == len(recs) - 2 and not drop & {r["file"] for r in recs2}, "missing images give no record")


def synthetic(n, seed=1):
    """n entries in emoji.json's schema with synthetic codes; every 9th is a flag, every 50th a
    component, every 7th has five skin variations."""
    rng = random.Random(seed)
    cats = ["Smileys & Emotion", "Objects", "Food & Drink", "Animals & Nature", "Travel & Places"]
    out = []
    for i in range(n):
        u = "E%04X" % i
        cat = "Flags" if i % 9 == 0 else "Component" if i % 50 == 1 else cats[i % len(cats)]
        e = {"name": "THING NUMBER %d" % i if cat != "Flags" else "Land %d Flag" % i, "unified": u,
             "image": u.lower() + ".png", "short_name": "thing_%d" % i, "short_names": ["thing_%d" % i],
             "category": cat, "subcategory": "country-flag" if cat == "Flags" else "misc",
             "sort_order": rng.randrange(100000), "has_img_google": True}
        if i % 7 == 0 and cat not in ("Flags", "Component"):
            e["skin_variations"] = {t: {"unified": u + "-" + t, "image": (u + "-" + t).lower() + ".png",
                                        "has_img_google": True} for t in ed.SKIN_TONES}
        out.append(e)
    return out


def test_splits(tmp):
    ents = synthetic(2000)
    files = [e["image"] for e in ents] + [v["image"] for e in ents for v in (e.get("skin_variations") or {}).values()]
    img = os.path.join(tmp, "syn", "img")
    os.makedirs(img)
    for f in files:
        open(os.path.join(img, f), "wb").close()  # records() only needs the names
    recs = ed.records(ents, img)
    by = {}
    for r in recs:
        by.setdefault(r["split"], set()).add(r["base"])
    sizes = {s: len(by.get(s, ())) for s in ed.SPLITS}
    # Expected emoji per band out of 2,000 (demo and style only for the ~1,740 nameable): 44, 44, 60.
    check(30 <= sizes["demo"] <= 60 and 30 <= sizes["style"] <= 60 and 40 <= sizes["val"] <= 85,
          "split sizes near their bands: %s" % sizes)
    check(all(not (by.get(a, set()) & by.get(b, set())) for a in ed.SPLITS for b in ed.SPLITS if a < b),
          "splits disjoint by base emoji")
    cat = {e["unified"]: e["category"] for e in ents}
    check(not any(cat[u] in ed.NOT_NAMEABLE for s in ("demo", "style") for u in by[s]),
          "no flag or component among demo and style emoji")
    prompts = bd.demo_prompts(recs)
    demo_caps = {r["caption"] for r in recs if r["split"] == "demo"}
    style_caps = {r["caption"] for r in recs if r["split"] in ("style", "val")}
    check(len(prompts) == 32 and set(prompts) <= demo_caps and not set(prompts) & style_caps,
          "32 demo prompts, all from the demo split, none a style or val caption")
    src = gs.style_sources(recs, 32)
    check(len(src) == 32 and all(r["split"] == "style" and not r["tone"] for r in src),
          "style sources: 32 base images of the style split")
    # Same input, same bytes; JSON order does not matter (records sort by sort_order).
    text = ed.manifest_text(recs)
    shuffled = ents[:]
    random.Random(5).shuffle(shuffled)
    check(ed.manifest_text(ed.records(copy.deepcopy(shuffled), img)) == text, "manifest bytes independent of JSON order")
    # Adding emoji moves nobody: old records keep their split and caption; demo prompts lose at most as many as were added.
    more = synthetic(2040)
    for e in more[2000:]:
        for f in [e["image"]] + [v["image"] for v in (e.get("skin_variations") or {}).values()]:
            open(os.path.join(img, f), "wb").close()
    recs2 = ed.records(more, img)
    old = {r["file"]: (r["split"], r["caption"]) for r in recs}
    new = {r["file"]: (r["split"], r["caption"]) for r in recs2}
    check(all(new[f] == v for f, v in old.items()), "adding 40 emoji moves no existing record")
    kept = len(set(prompts) & set(bd.demo_prompts(recs2)))
    n_new_demo = len({r["base"] for r in recs2 if r["split"] == "demo"} - by["demo"])
    check(kept >= 32 - n_new_demo, "demo prompts kept %d of 32 (%d new demo emoji)" % (kept, n_new_demo))
    # The hash is the documented one (a silent change of salt or digits would reshuffle every split).
    u = "1F600"
    want = int(hashlib.sha256(b"emoji-split-v1:1F600").hexdigest()[:8], 16) / 2.0 ** 32
    check(ed.split_hash(u) == want and ed.split_hash("1f600") == want, "split hash = sha256('emoji-split-v1:' + unified)")
    return ents


def test_build(tmp):
    pkg = package(os.path.join(tmp, "b"), REAL)
    man1, man2 = os.path.join(tmp, "m1", "manifest.tsv"), os.path.join(tmp, "m2", "manifest.tsv")
    out = os.path.join(tmp, "imgs")
    bd.build(pkg, man1, out, log=quiet)
    bd.build(pkg, man2, None, log=quiet)
    b1, b2 = open(man1, "rb").read(), open(man2, "rb").read()
    check(b1 == b2 and len(b1) > 0, "manifest bytes identical across runs (%d bytes)" % len(b1))
    rows = ed.read_manifest(man1)
    check(len(rows) == len(REAL) + sum(len(e.get("skin_variations") or {}) for e in REAL), "manifest rows = images")
    r = next(x for x in rows if x["unified"] == "1F34E")
    stem = os.path.join(out, r["split"], "1f34e")
    with Image.open(stem + ".png") as im:
        px = np.asarray(im)
        mode, size = im.mode, im.size
    check(mode == "RGB" and size == (64, 64), "image written as 64x64 RGB (%s %s)" % (mode, size))
    check(tuple(px[0, 0]) == (255, 255, 255), "transparent corner composited on white (%s)" % (tuple(px[0, 0]),))
    with Image.open(os.path.join(pkg, "img", "google", "64", "1f34e.png")) as im:
        src = np.asarray(im.convert("RGBA"))
    check(np.array_equal(px[32, 32], src[32, 32, :3]), "opaque centre keeps its colour")
    check(open(stem + ".txt").read() == "a red apple\n", "NAME.txt holds the caption")
    # Bad input is named.
    bad = os.path.join(tmp, "bad")
    pkgb = package(bad, REAL[:2])
    png(os.path.join(pkgb, "img", "google", "64", REAL[0]["image"]), 1, size=32)
    try:
        bd.build(pkgb, os.path.join(bad, "m.tsv"), os.path.join(bad, "o"), log=quiet)
        check(False, "a 32x32 image is refused")
    except ValueError as e:
        check(REAL[0]["image"] in str(e) and "32x32" in str(e), "a 32x32 image is refused by name: %s" % e)
    with open(os.path.join(pkgb, "emoji.json"), "w") as f:
        f.write('[{"unified": "1F600"}]')
    try:
        bd.build(pkgb, os.path.join(bad, "m.tsv"), None, log=quiet)
        check(False, "an entry without image is refused")
    except ValueError as e:
        check("emoji.json" in str(e) and "'image'" in str(e), "an entry without 'image' is refused: %s" % e)


def test_styles(tmp):
    # A package whose style split has >= 32 base emoji: synthetic entries, images for the style
    # split and a few others.
    ents = synthetic(2000, seed=2)
    keep = [e for e in ents if ed.split_of(e["unified"], e["category"]) == "style"] + ents[:20]
    pkg = package(os.path.join(tmp, "s"), keep)
    man = os.path.join(tmp, "s", "manifest.tsv")
    bd.build(pkg, man, None, log=quiet)
    a = gs.generate(pkg, man, os.path.join(tmp, "st1"), 32, log=quiet)
    b = gs.generate(pkg, man, os.path.join(tmp, "st2"), 32, log=quiet)
    check(sorted(a) == sorted(s[0] for s in gs.STYLES) and len(a) >= 4, "%d styles written" % len(a))
    check(a == b, "styles deterministic: identical PNG bytes and captions across runs")
    names = {s[0]: s[1] for s in gs.STYLES}
    caps_ok = all(len(v) == 32 and all(c.startswith(names[k] + ", ") for _, c in v) for k, v in a.items())
    check(caps_ok, "32 images per style, captions '<trigger>, <caption>'")
    files_ok = all(open(os.path.join(tmp, "st1", k, "%03d.txt" % i)).read() == c + "\n"
                   for k, v in a.items() for i, (_, c) in enumerate(v))
    check(files_ok, "NNN.txt files match")
    def arr(style, i):
        return np.asarray(Image.open(io.BytesIO(a[style][i][0])).convert("RGB"), np.float32) / 255
    neon = np.mean([arr("neon", i).mean() for i in range(32)])
    paper = np.mean([arr("outline", i).mean() for i in range(32)])
    check(neon < 0.35 and paper > 0.7, "neon is dark (mean %.3f < 0.35), ink outline on pale paper (%.3f > 0.7)" % (neon, paper))
    p = arr("pixel", 0)
    blocks = p.reshape(16, 4, 16, 4, 3)
    check(np.all(blocks == blocks[:, :1, :, :1, :]), "pixel style is 16x16 blocks of 4x4 equal pixels")
    try:
        gs.generate(pkg, man, os.path.join(tmp, "st3"), 50, log=quiet)
        check(False, "--count 50 refused")
    except ValueError as e:
        check("24 to 40" in str(e), "--count 50 refused: %s" % e)


def test_fetch(tmp):
    sh = os.path.join(SRC, "tools", "emoji", "fetch.sh")
    cache = os.path.join(tmp, "cache")
    os.makedirs(cache)
    fake = os.path.join(cache, "fake.tgz")
    with open(fake, "wb") as f:
        f.write(b"not the emoji package")
    p = subprocess.run(["bash", sh, "--cache", cache, "--tarball", fake], capture_output=True, text=True,
                       env=dict(os.environ, PATH="/usr/bin:/bin"))
    check(p.returncode == 2 and "REFUSED" in p.stderr and "fb5fd131" in p.stderr,
          "fetch.sh refuses a tarball with the wrong sha256 (rc %d): %s" % (p.returncode, p.stderr.strip()))
    check(not os.path.exists(os.path.join(cache, "package")) and os.path.exists(fake),
          "nothing unpacked; a --tarball file is left in place")
    # The same refusal for a tarball already in the cache (npm is not called: the file is there);
    # it is renamed .bad so that the next run downloads again.
    cached = os.path.join(cache, "emoji-datasource-google-16.0.0.tgz")
    os.rename(fake, cached)
    p = subprocess.run(["bash", sh, "--cache", cache], capture_output=True, text=True)
    check(p.returncode == 2 and "REFUSED" in p.stderr and os.path.exists(cached + ".bad") and not os.path.exists(cached)
          and not os.path.exists(os.path.join(cache, "package")),
          "a bad cached tarball is refused and renamed .bad (rc %d)" % p.returncode)
    # Idempotent: a package stamped with the pinned hash is left alone; an npm that records its
    # call stands first on PATH to prove npm is not run.
    os.makedirs(os.path.join(cache, "package"))
    with open(os.path.join(cache, "package", ".unpacked"), "w") as f:
        f.write("fb5fd131b362aab7a55542d2a147a79708cce0a8b1c1bbacd470172708b5c438\n")
    fakebin = os.path.join(tmp, "fakebin")
    os.makedirs(fakebin)
    marker = os.path.join(tmp, "npm_called")
    with open(os.path.join(fakebin, "npm"), "w") as f:
        f.write("#!/bin/sh\ntouch '%s'\nexit 1\n" % marker)
    os.chmod(os.path.join(fakebin, "npm"), 0o755)
    p = subprocess.run(["bash", sh, "--cache", cache], capture_output=True, text=True,
                       env=dict(os.environ, PATH=fakebin + ":/usr/bin:/bin"))
    check(p.returncode == 0 and "up to date" in p.stdout and not os.path.exists(marker),
          "a second run does nothing, npm not called (rc %d): %s%s" % (p.returncode, p.stdout.strip(), p.stderr))
    # Without the stamp it would call npm: the same fake proves the check above can fail.
    os.remove(os.path.join(cache, "package", ".unpacked"))
    p = subprocess.run(["bash", sh, "--cache", cache], capture_output=True, text=True,
                       env=dict(os.environ, PATH=fakebin + ":/usr/bin:/bin"))
    check(p.returncode != 0 and os.path.exists(marker), "without the stamp npm is called (rc %d)" % p.returncode)


def main():
    with tempfile.TemporaryDirectory(prefix="sl_emoji_") as tmp:
        test_captions(tmp)
        test_splits(tmp)
        test_build(tmp)
        test_styles(tmp)
        test_fetch(tmp)
    print("%d checks, %d failed" % (checks, fails))
    return 1 if fails else 0


if __name__ == "__main__":
    sys.exit(main())
