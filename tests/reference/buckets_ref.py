"""Golden bucket lists and selections for tests/test_buckets.c.

A short re-statement of kohya-ss/sd-scripts' aspect-ratio bucketing
(library/model_util.py make_bucket_resolutions; library/train_util.py
BucketManager.select_bucket with upscaling, and the centre trim of
trim_and_resize_if_required), run for a few resolutions and image sizes.
Writes tests/data/buckets_golden.json. Run: /usr/bin/python3 tests/reference/buckets_ref.py
"""
import json
import math
import os

import numpy as np


def bucket_sizes(reso, lo, hi, step):
    area = reso * reso
    sizes = {(int(math.sqrt(area) // step) * step,) * 2}
    w = lo
    while w <= hi:
        h = min(hi, int((area // w) // step) * step)
        if h >= lo:
            sizes.add((w, h))
            sizes.add((h, w))
        w += step
    return sorted(sizes)


def choose(sizes, iw, ih):
    ar = iw / ih
    if (iw, ih) in set(sizes):
        bw, bh = iw, ih
    else:
        ratios = np.array([w / h for w, h in sizes])
        bw, bh = sizes[int(np.abs(ratios - ar).argmin())]
    scale = bh / ih if ar > bw / bh else bw / iw
    rw, rh = int(iw * scale + 0.5), int(ih * scale + 0.5)
    return sizes.index((bw, bh)), rw, rh, (rw - bw) // 2, (rh - bh) // 2


IMAGES = [(1024, 512), (512, 1024), (640, 480), (100, 100), (1000, 333), (333, 1000), (512, 512),
          (704, 320), (37, 91), (1920, 1080), (80, 48), (128, 64), (64, 32), (3, 700)]
CASES = [(512, 256, 1024, 64), (64, 32, 128, 16), (96, 48, 192, 16), (32, 16, 64, 4), (768, 384, 1536, 64)]

out = []
for reso, lo, hi, step in CASES:
    sizes = bucket_sizes(reso, lo, hi, step)
    sel = [[iw, ih, *choose(sizes, iw, ih)] for iw, ih in IMAGES]
    out.append({"resolution": reso, "min": lo, "max": hi, "step": step,
                "buckets": [list(s) for s in sizes], "select": sel})
path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "data", "buckets_golden.json")
with open(path, "w") as f:
    json.dump({"source": "tests/reference/buckets_ref.py (kohya-ss/sd-scripts bucketing)",
               "select_fields": ["img_w", "img_h", "bucket", "resized_w", "resized_h", "crop_x", "crop_y"],
               "cases": out}, f, indent=0)
print("wrote", path)
