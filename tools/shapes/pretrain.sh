#!/usr/bin/env bash
# pretrain.sh - rebuilds the shipped model models/shapes64 and the example styles from scratch.
#
# Needs PyTorch, numpy, regex and PIL for /usr/bin/python3 (install with `tools/deps.sh --torch`;
# this script installs nothing). Seeded and CPU-only; takes about 2 hours on 2 cores:
#   1. tools/shapes/train_bpe.py   tokenizer (CLIP-format byte-level BPE) from the scene captions
#   2. tools/shapes/pretrain.py    scene data -> VAE -> VAE decoder fine-tune on varied looks ->
#                                  text encoder + U-Net, export (F16) and
#                                  tests/data/shapes64_check.safetensors (the C test's golden)
#   3. tools/shapes/gen_styles.py  tests/data/shapes64_styles/{outline,hatch,neon}
# Scratch files (dataset, latents, checkpoints, log) go to $WORK (default /tmp/shapes64_work);
# a killed run resumes from its checkpoints when started again with the same $WORK.
# Extra arguments go to pretrain.py (e.g. --unet-minutes 60, --threads 2).
set -euo pipefail
cd "$(dirname "$0")/../.."
PY=${PYTHON:-/usr/bin/python3}
if ! "$PY" -c 'import torch, numpy, regex, PIL' 2>/dev/null; then
    echo "pretrain.sh: $PY lacks torch/numpy/regex/PIL: run tools/deps.sh --torch" >&2
    exit 1
fi
WORK=${WORK:-/tmp/shapes64_work}
mkdir -p "$WORK"
"$PY" tools/shapes/train_bpe.py models/shapes64/tokenizer
"$PY" tools/shapes/pretrain.py all --work "$WORK" "$@" 2>&1 | tee -a "$WORK/train.log"
"$PY" tools/shapes/gen_styles.py tests/data/shapes64_styles
echo "pretrain.sh: done; check with: $PY tools/shapes/sample.py --out /tmp/shapes64_samples.png"
