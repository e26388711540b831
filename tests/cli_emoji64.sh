#!/usr/bin/env bash
# cli_emoji64.sh - the shipped default model, models/emoji64, end to end through the real program,
# at toy sizes (tools/demo.sh does the real run): a short LoRA on the neon example style, then
# `eval` with the model's own judge (models/emoji64/judge) on three demo prompts with the
# trigger word: every figure line is printed and in range, no prompt is skipped (the judge finds
# each prompt's emoji behind the trigger), and the grid has the requested layout
# (--grid-cols 2 --grid-scale 2: 2 x 64 x 2 = 256 px wide, two row pairs of 2 x 64 x 2 = 512 px).
set -u
bin=${SL_STYLORA:?}; src=${SL_SOURCE_DIR:?}
tmp=${SL_BINARY_DIR:-.}/tmp_cli_emoji64; rm -rf "$tmp"; mkdir -p "$tmp"
export OMP_WAIT_POLICY=${OMP_WAIT_POLICY:-passive}
fails=0; checks=0
ok()  { checks=$((checks+1)); echo "ok   $1"; }
bad() { checks=$((checks+1)); fails=$((fails+1)); echo "FAIL $1"; }
val() { grep "^$1: " <<<"$2" | tail -1 | cut -d' ' -f2; }
model=$src/models/emoji64; style=$src/examples/styles/neon
for f in unet/diffusion_pytorch_model.safetensors judge/model.safetensors; do
  [[ -f $model/$f ]] || { echo "FAIL $model/$f missing"; exit 1; }
done

out=$("$bin" train --model "$model" --data "$style" --out "$tmp/neon.safetensors" --steps 6 --batch 2 --rank 4 \
  --seed 1 --cache-dir "$tmp/cache" --no-report 2>&1); rc=$?
if [[ $rc -eq 0 && -s $tmp/neon.safetensors ]]; then ok "train 6 steps on emoji64"; else bad "train (rc $rc): $out"; fi

head -3 "$src/examples/demo_prompts.txt" | sed 's/^/nenmoji, /' > "$tmp/prompts.txt"
out=$("$bin" eval --model "$model" --lora "$tmp/neon.safetensors" --style-dir "$style" --prompts "$tmp/prompts.txt" \
  --n 3 --steps 4 --seed 1 --grid-cols 2 --grid-scale 2 --out "$tmp/eval" 2>&1); rc=$?
if [[ $rc -eq 0 ]]; then ok "eval runs"; else bad "eval (rc $rc): $out"; fi
last=$(tail -4 <<<"$out" | cut -d: -f1 | tr '\n' ' ')
if [[ "$last" == "style_distance_base style_distance_adapter prompt_fidelity_base prompt_fidelity_adapter " ]]; then
  ok "the last four lines"; else bad "last lines: $last"; fi
for k in prompt_fidelity_base prompt_fidelity_adapter prompt_fidelity_top1_base prompt_fidelity_top1_adapter; do
  v=$(val $k "$out")
  if [[ -n "$v" ]] && awk -v v="$v" 'BEGIN { exit !(v >= 0 && v <= 1) }'; then ok "$k = $v in [0, 1]"
  else bad "$k: '$v'"; fi
done
if [[ "$(val fidelity_skipped "$out")" == 0 ]]; then ok "no prompt skipped"; else bad "skipped: $out"; fi
dims=$(file "$tmp/eval/grid.png" 2>/dev/null | grep -o '[0-9]* x [0-9]*')
if [[ "$dims" == "256 x 512" ]]; then ok "grid 256 x 512"; else bad "grid dims '$dims'"; fi

echo "cli_emoji64: $((checks - fails))/$checks checks passed"
[[ $fails -eq 0 ]]
