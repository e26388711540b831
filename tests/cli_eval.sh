#!/usr/bin/env bash
# cli_eval.sh - `stylora eval` through the real program: scoring a folder of plain
# renders against a style (fidelity high, distance above the style's own noise floor),
# an unparseable caption skipped and counted, a missing folder named in the error, and
# the sampling mode on the shipped model with adapter weight 0 (base and adapter
# images, hence every figure, identical; grid and image folders written; the last four
# lines are the issue's figures in order).
set -u
bin=${SL_STYLORA:?}; src=${SL_SOURCE_DIR:?}
tmp=${SL_BINARY_DIR:-.}/tmp_cli_eval; rm -rf "$tmp"; mkdir -p "$tmp"
export OMP_WAIT_POLICY=${OMP_WAIT_POLICY:-passive}
fails=0; checks=0
ok()  { checks=$((checks+1)); echo "ok   $1"; }
bad() { checks=$((checks+1)); fails=$((fails+1)); echo "FAIL $1"; }
val() { grep "^$1: " <<<"$2" | tail -1 | cut -d' ' -f2; }   # name, output
if ! "$bin" eval --help >/dev/null 2>&1; then
  echo "FAIL 'stylora eval' is not registered in tools/stylora.c"; exit 1
fi
style=$src/tests/data/shapes64_styles/outline
out=$("$bin" eval --images "$src/tests/data/eval" --style-dir "$style" 2>&1); rc=$?
if [[ $rc -eq 0 ]]; then ok "eval --images runs"; else bad "eval --images (rc $rc): $out"; fi
fid=$(val prompt_fidelity "$out"); sd=$(val style_distance "$out"); floor=$(val reference_halves "$out")
if awk -v f="$fid" 'BEGIN{exit !(f >= 0.9)}'; then ok "plain fixtures fidelity $fid >= 0.9"; else bad "plain fixtures fidelity '$fid'"; fi
if awk -v d="$sd" -v h="$floor" 'BEGIN{exit !(d > 2*h && h > 0)}'; then ok "plain vs outline $sd > 2 x halves $floor"; else bad "distance '$sd' vs halves '$floor'"; fi
mkdir -p "$tmp/imgs"
for i in 000 001 002; do cp "$src/tests/data/eval/$i.png" "$src/tests/data/eval/$i.txt" "$tmp/imgs/"; done
echo "a photo of a dog" > "$tmp/imgs/001.txt"
out=$("$bin" eval --images "$tmp/imgs" --style-dir "$style" 2>&1)
if [[ "$(val fidelity_skipped "$out")" == 1 && "$(val n_images "$out")" == 3 ]]; then ok "bad caption skipped and counted"; else bad "bad caption: $out"; fi
err=$("$bin" eval --images "$tmp/nope" --style-dir "$style" 2>&1 >/dev/null); rc=$?
if [[ $rc -eq 1 && "$err" == *"$tmp/nope"* ]]; then ok "missing folder named"; else bad "missing folder (rc $rc): $err"; fi
model=$src/models/shapes64
if [[ -f $model/unet/diffusion_pytorch_model.safetensors ]]; then
  "$bin" train --model "$model" --data "$style" --out "$tmp/a.safetensors" --steps 2 --rank 2 --quiet >/dev/null 2>&1 \
    && ok "tiny adapter trained" || bad "train failed"
  out=$("$bin" eval --model "$model" --lora "$tmp/a.safetensors:0" --style-dir "$style" --n 2 --steps 3 --out "$tmp/run" 2>/dev/null); rc=$?
  if [[ $rc -eq 0 ]]; then ok "eval --model runs"; else bad "eval --model (rc $rc): $out"; fi
  last=$(tail -4 <<<"$out" | cut -d: -f1 | tr '\n' ' ')
  if [[ "$last" == "style_distance_base style_distance_adapter prompt_fidelity_base prompt_fidelity_adapter " ]]; then
    ok "last four lines"; else bad "last four lines: '$last'"; fi
  if [[ "$(val style_distance_base "$out")" == "$(val style_distance_adapter "$out")" && \
        "$(val prompt_fidelity_base "$out")" == "$(val prompt_fidelity_adapter "$out")" ]]; then
    ok "weight 0: same figures"; else bad "weight 0 figures differ: $out"; fi
  if cmp -s "$tmp/run/base/000.png" "$tmp/run/adapter/000.png" && cmp -s "$tmp/run/base/001.png" "$tmp/run/adapter/001.png"; then
    ok "weight 0: same images"; else bad "weight 0 images differ"; fi
  if [[ -f $tmp/run/grid.png ]]; then ok "grid written"; else bad "no grid.png"; fi
  "$bin" eval --model "$model" --lora "$tmp/a.safetensors" --style-dir "$style" --n 1 --steps 3 --out "$tmp/run1" >/dev/null 2>&1
  if [[ -f $tmp/run1/adapter/000.png ]] && ! cmp -s "$tmp/run1/base/000.png" "$tmp/run1/adapter/000.png"; then
    ok "weight 1: the adapter changes the image"; else bad "weight 1: adapter image missing or equal to the base"; fi
  if cmp -s "$tmp/run1/base/000.png" "$tmp/run/base/000.png"; then ok "base images do not depend on the adapter run"; else bad "base image differs between runs"; fi
else
  echo "note: $model has no U-Net weights; sampling mode not exercised"
fi
echo "cli_eval: $checks checks, $fails failed"
[[ $fails -eq 0 ]]
