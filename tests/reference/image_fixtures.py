#!/usr/bin/env -S /usr/bin/python3
"""image_fixtures.py - JPEG and GIF fixtures for tests/test_image.c.

Writes with PIL (libjpeg) a small smooth RGB image as a baseline 4:2:0 JPEG,
a progressive JPEG and a grayscale JPEG, plus libjpeg's own decoding of each
as binary PPM/PGM, so the C test can compare stb_image's decode against
libjpeg's. The source pattern is the one test_image.c builds (48x40).
Also two small GIFs (opaque, and with a transparent palette index) with
PIL's RGB / RGBA decoding saved as PNG.
Run: /usr/bin/python3 tests/reference/image_fixtures.py
"""
import math
import os

from PIL import Image

W, H = 48, 40


def pattern():
    im = Image.new("RGB", (W, H))
    px = im.load()
    for y in range(H):
        for x in range(W):
            b = int(128 + 60 * math.sin(x * 0.2) * math.cos(y * 0.15))
            px[x, y] = ((x * 5) & 255, (y * 6) & 255, b & 255)
    return im


def main():
    data = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "data")
    src = pattern()
    jobs = [
        ("image_baseline.jpg", src, dict(quality=90, subsampling=2)),
        ("image_progressive.jpg", src, dict(quality=90, subsampling=0, progressive=True)),
        ("image_gray.jpg", src.convert("L"), dict(quality=90)),
    ]
    for name, im, kw in jobs:
        path = os.path.join(data, name)
        im.save(path, "JPEG", **kw)
        dec = Image.open(path)
        dec.load()
        ref = os.path.join(data, name.replace(".jpg", ".ppm" if dec.mode == "RGB" else ".pgm"))
        dec.save(ref)
        print("wrote", path, os.path.getsize(path), "bytes and", ref)

    pal = [0, 0, 0, 255, 0, 0, 0, 200, 50, 30, 60, 250] + [0] * (3 * 252)
    gif = Image.new("P", (9, 6))
    gif.putpalette(pal)
    gif.putdata([(x * 3 + y) % 4 for y in range(6) for x in range(9)])
    for name, kw, mode in [("image_opaque", {}, "RGB"), ("image_alpha", {"transparency": 2}, "RGBA")]:
        path = os.path.join(data, name + ".gif")
        gif.save(path, "GIF", **kw)
        dec = Image.open(path)
        dec.convert(mode).save(os.path.join(data, name + "_gif.png"))
        print("wrote", path, os.path.getsize(path), "bytes")


if __name__ == "__main__":
    main()
