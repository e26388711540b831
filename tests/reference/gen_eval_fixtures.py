#!/usr/bin/env -S /usr/bin/python3
"""gen_eval_fixtures.py - plain (unstyled) shape scenes for tests/test_eval.c.

Usage: /usr/bin/python3 tests/reference/gen_eval_fixtures.py [OUT_DIR=tests/data/eval] [N=48] [SEED=9100]
Writes N seeded 64x64 plain renders NNN.png with captions NNN.txt (the scene grammar, no
trigger word) from tools/shapes/scene.py. The seed differs from gen_styles.py's (5000+k), so
the fixtures are scenes the example style sets do not contain. Deterministic.
"""
import os
import random
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.normpath(os.path.join(HERE, "..", ".."))
sys.path.insert(0, os.path.join(ROOT, "tools", "shapes"))
import scene  # noqa: E402


def main():
    out = sys.argv[1] if len(sys.argv) > 1 else os.path.join(ROOT, "tests", "data", "eval")
    n = int(sys.argv[2]) if len(sys.argv) > 2 else 48
    seed = int(sys.argv[3]) if len(sys.argv) > 3 else 9100
    style = sys.argv[4] if len(sys.argv) > 4 else "plain"
    os.makedirs(out, exist_ok=True)
    rng = random.Random(seed)
    for i in range(n):
        s = scene.sample_scene(rng)
        scene.render(s, style, seed=seed + i).save(os.path.join(out, "%03d.png" % i), optimize=True)
        with open(os.path.join(out, "%03d.txt" % i), "w") as f:
            f.write(scene.caption(s) + "\n")
    print("%d %s scenes -> %s" % (n, style, out))


if __name__ == "__main__":
    main()
