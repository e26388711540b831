#!/usr/bin/env bash
# demo.sh - the README's main-job command: installs what is missing, builds,
# then trains a style adapter on a shipped example style with a shipped model and
# measures it: the same prompts and seeds are sampled with and without the adapter,
# a side-by-side grid is written, and the last lines printed are the figures as
# `name: value`. The run's HTML report (loss curve, memory, a sample grid at each fifth
# of the run under the base model's row) is <out>/<style>.safetensors.html; its path is
# printed before the figures.
#
#   tools/demo.sh                          models/shapes64, its neon style (the default
#                                          until emoji64 meets issue 19's bar; README)
#   MODEL=models/emoji64 tools/demo.sh     the emoji model: examples/styles/neon, the 32
#                                          prompts of examples/demo_prompts.txt (emoji no
#                                          example style shows) with the style's trigger
#                                          word, the grid 8 prompts a row pair at 2x
#   STYLE=outline STEPS=2000 tools/demo.sh another style, another length
# Training settings (README "The demo" says why): LoRA rank 8 on attention, projections,
# feed-forward and resnet convs; noise offset 0.3 (the neon style's black night is a
# shift of the whole image's mean, which plain noise schedules barely teach), caption
# dropout 0.1 and min-SNR-gamma 5 (as kohya's users set them).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
bash tools/deps.sh
bash tools/build.sh build
bin=build/stylora
style=${STYLE:-neon}
model=${MODEL:-models/shapes64}
out=out/demo
mkdir -p "$out"
if [[ ! -f "$model/unet/diffusion_pytorch_model.safetensors" ]]; then
  echo "stylora demo: $model is missing (models/: $(ls models | tr '\n' ' '))" >&2
  exit 1
fi
if [[ "$(basename "$model")" == shapes64 ]]; then
  data=tests/data/shapes64_styles/$style; steps=${STEPS:-1500}
else
  data=examples/styles/$style; steps=${STEPS:-800}
fi
[[ -d "$data" ]] || { echo "stylora demo: no style $data (styles: $(ls "$(dirname "$data")" | tr '\n' ' '))" >&2; exit 1; }
trigger=$(head -1 "$data/000.txt" | cut -d, -f1) # the style's trigger word
eval_args=()
if [[ "$(basename "$model")" == shapes64 ]]; then  # prompts: the style's own captions
  sample_prompts=("$trigger, a large red circle on a white background" "$trigger, two small blue squares on a yellow background")
else  # the demo's prompts, each with the trigger word, the same for base and adapter
  grep -v '^\s*\(#\|$\)' "${PROMPTS:-examples/demo_prompts.txt}" | sed "s/^/$trigger, /" >"$out/prompts.txt"
  sample_prompts=("$(sed -n 1p "$out/prompts.txt")" "$(sed -n 2p "$out/prompts.txt")")
  eval_args=(--prompts "$out/prompts.txt" --grid-cols 8 --grid-scale 2)
fi
echo "model: $(basename "$model")"
echo
echo "== 1. train a LoRA on $data ($(ls "$data"/*.png | wc -l) images, $steps steps) =="
"$bin" train --model "$model" --data "$data" --out "$out/$style.safetensors" \
  --steps "$steps" --batch 4 --rank 8 --lr 1e-3 --targets attn,proj,ff,resnet --seed 1 --cache-dir "$out/cache" \
  --noise-offset 0.3 --caption-dropout 0.1 --min-snr-gamma 5 \
  --save-every $(( (steps + 4) / 5 )) --sample-every $(( (steps + 4) / 5 )) --sample-steps 20 \
  --sample-prompt "${sample_prompts[0]}" --sample-prompt "${sample_prompts[1]}"
echo
echo "== 2. sample the same prompts and seeds without and with it, and measure =="
"$bin" eval --model "$model" --lora "$out/$style.safetensors" --style-dir "$data" \
  --n 32 --seed 1 "${eval_args[@]}" --out "$out/eval" | tee "$out/figures.txt"
echo
echo "model: $model"
echo "adapter: $out/$style.safetensors (inspect it with: $bin inspect $out/$style.safetensors)"
echo "grid (top: base model, bottom: with the adapter): $out/eval/grid.png"
echo "report (loss, memory, samples during training): $out/$style.safetensors.html"
tail -4 "$out/figures.txt"
