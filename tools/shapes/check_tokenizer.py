#!/usr/bin/env -S /usr/bin/python3
"""check_tokenizer.py - the C tokenizer against the Python one on scene captions.

Usage: /usr/bin/python3 tools/shapes/check_tokenizer.py STYLORA_BINARY [MODEL_DIR] [N]
Runs `STYLORA tokenize --model MODEL_DIR --all TEXT` for N captions (default 200, seeded,
plus a few prompts with style trigger words and odd spacing) and compares with
tests/reference/clip_tokenizer_ref.py on the same tokenizer folder. Exit 1 on any mismatch.
"""
import os
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.normpath(os.path.join(HERE, "..", ".."))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(ROOT, "tests", "reference"))
import clip_tokenizer_ref as ctr  # noqa: E402
import scene  # noqa: E402


def main():
    exe = sys.argv[1]
    model = sys.argv[2] if len(sys.argv) > 2 else os.path.join(ROOT, "models", "shapes64")
    n = int(sys.argv[3]) if len(sys.argv) > 3 else 200
    tok = ctr.Tok(os.path.join(model, "tokenizer"))
    texts = [c for _, c in scene.make_dataset(n, 99)]
    texts += ["olnstyle, two small red circles above a medium blue square on a yellow background",
              "HCHSTYLE,  a Large GREEN star!", "neonstyle", "", "a 3d photo of 12 cats"]
    bad = 0
    for t in texts:
        r = subprocess.run([exe, "tokenize", "--model", model, "--all", t], capture_output=True, text=True)
        got = [int(v) for v in r.stdout.split()]
        want = tok.encode(t)[0]
        if got != want:
            bad += 1
            print("MISMATCH %r\n  C  %s\n  py %s" % (t, got[:24], want[:24]))
    print("%d/%d texts tokenized identically (vocab %d)" % (len(texts) - bad, len(texts), len(tok.vocab)))
    sys.exit(1 if bad else 0)


if __name__ == "__main__":
    main()
