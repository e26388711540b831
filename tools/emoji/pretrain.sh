#!/usr/bin/env bash
# pretrain.sh - rebuilds the shipped model models/emoji64 (with its fidelity judge), the example
# styles and the demo's prompts from scratch: one command (issue 19).
#
# Needs PyTorch, numpy, regex and PIL for /usr/bin/python3 (install with `tools/deps.sh --torch`;
# this script installs nothing) and npm (for the data). Seeded, CPU-only, 2 threads:
#   1. tools/emoji/fetch.sh           Noto Color Emoji from npm, sha256-checked (74 MB, once)
#   2. tools/emoji/build_dataset.py   captions, splits, examples/demo_prompts.txt
#   3. tools/emoji/gen_styles.py      examples/styles/{neon,outline,hatch,pixel,pastel}
#   4. tools/emoji/pretrain.py all    data -> tokenizer -> VAE (15 min) -> judge (8 min) ->
#                                     text encoder + U-Net (95 min), exports models/emoji64 (F16)
#                                     and tests/data/emoji64_check.safetensors
# Scratch files (arrays, checkpoints, log) go to $WORK (default /tmp/emoji64_work); a killed run
# resumes from its checkpoints when started again with the same $WORK. On another machine, a
# further U-Net run can start from the shipped weights: pretrain.py unet --init-from models/emoji64
# (with the same $WORK's data/vae stages rerun first; they are deterministic).
# Extra arguments go to pretrain.py (e.g. --unet-minutes 60).
set -euo pipefail
cd "$(dirname "$0")/../.."
PY=${PYTHON:-/usr/bin/python3}
if ! "$PY" -c 'import torch, numpy, regex, PIL' 2>/dev/null; then
    echo "pretrain.sh: $PY lacks torch/numpy/regex/PIL: run tools/deps.sh --torch" >&2
    exit 1
fi
WORK=${WORK:-/tmp/emoji64_work}
mkdir -p "$WORK"
bash tools/emoji/fetch.sh
"$PY" tools/emoji/build_dataset.py
cp build/emoji-data/demo_prompts.txt examples/demo_prompts.txt
"$PY" tools/emoji/gen_styles.py examples/styles
"$PY" tools/emoji/pretrain.py all --work "$WORK" "$@" 2>&1 | tee -a "$WORK/train.log"
echo "pretrain.sh: done; try: tools/demo.sh"
