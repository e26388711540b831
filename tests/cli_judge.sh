#!/usr/bin/env bash
# cli_judge.sh - `stylora eval` with the fidelity judge (pipeline/judge.h), through the real program,
# on the tiny judge of tests/reference/judge_ref.py and its four captioned images
# (tests/data/judge_tiny_images: image 0 names its top-1 class, image 1 its third, image 2 its
# ninth, image 3 no class), so top-5 fidelity is 2/3, top-1 1/3, one prompt skipped:
#   --images with --judge alone, with --style-dir too, and with a model folder holding judge/;
#   every caption without a class; a missing and a damaged judge named in the error;
#   the sampling mode on the shipped model with --judge and prompts that name classes
#   (adapter weight 0: equal figures; the top-1 lines and the last four lines).
set -u
bin=${SL_STYLORA:?}; src=${SL_SOURCE_DIR:?}
tmp=${SL_BINARY_DIR:-.}/tmp_cli_judge; rm -rf "$tmp"; mkdir -p "$tmp"
export OMP_WAIT_POLICY=${OMP_WAIT_POLICY:-passive}
fails=0; checks=0
ok()  { checks=$((checks+1)); echo "ok   $1"; }
bad() { checks=$((checks+1)); fails=$((fails+1)); echo "FAIL $1"; }
val() { grep "^$1: " <<<"$2" | tail -1 | cut -d' ' -f2; }   # name, output
judge=$src/tests/data/judge_tiny; imgs=$src/tests/data/judge_tiny_images; style=$src/examples/styles/outline
for f in config.json model.safetensors classes.tsv; do
  [[ -f $judge/$f ]] || { echo "skip: $judge/$f missing (run tests/reference/judge_ref.py)"; exit 77; }
done

out=$("$bin" eval --images "$imgs" --judge "$judge" 2>&1); rc=$?
if [[ $rc -eq 0 ]]; then ok "eval --images --judge runs"; else bad "eval --images --judge (rc $rc): $out"; fi
if [[ "$(val prompt_fidelity "$out")" == 0.6667 && "$(val prompt_fidelity_top1 "$out")" == 0.3333 ]]; then
  ok "top-5 2/3, top-1 1/3"; else bad "figures: $out"; fi
if [[ "$(val fidelity_skipped "$out")" == 1 && "$(val n_images "$out")" == 4 ]]; then ok "one prompt skipped and counted"
else bad "skipped count: $out"; fi
if [[ "$(tail -1 <<<"$out" | cut -d: -f1)" == prompt_fidelity ]] && ! grep -q "^count_accuracy\|^style_distance" <<<"$out"; then
  ok "no style or count lines without --style-dir; prompt_fidelity last"; else bad "lines: $out"; fi

out=$("$bin" eval --images "$imgs" --judge "$judge" --style-dir "$style" 2>&1); rc=$?
last=$(tail -2 <<<"$out" | cut -d: -f1 | tr '\n' ' ')
if [[ $rc -eq 0 && "$last" == "style_distance prompt_fidelity " && "$(val prompt_fidelity "$out")" == 0.6667 ]]; then
  ok "with --style-dir: style_distance, prompt_fidelity last"; else bad "with --style-dir (rc $rc): $out"; fi
if grep -q "^style .*(0 scored, 32 skipped)" <<<"$out"; then ok "the style's own captions name no class: skipped"
else bad "style row: $out"; fi

mkdir -p "$tmp/model" "$tmp/imgs"
cp -r "$judge" "$tmp/model/judge"
cp "$imgs"/*.png "$imgs"/*.txt "$tmp/imgs/"
out=$("$bin" eval --images "$imgs" --model "$tmp/model" 2>&1)
if [[ "$(val prompt_fidelity "$out")" == 0.6667 && "$out" == *"$tmp/model/judge"* ]]; then ok "MODEL/judge found without --judge"
else bad "model judge: $out"; fi

for i in 0 1 2; do echo "olnmoji, a photo of a cat" > "$tmp/imgs/00$i.txt"; done
out=$("$bin" eval --images "$tmp/imgs" --judge "$judge" 2>&1)
if [[ "$(val fidelity_skipped "$out")" == 4 && "$(val prompt_fidelity "$out")" == nan ]]; then ok "no class anywhere: all skipped, nan"
else bad "all skipped: $out"; fi

err=$("$bin" eval --images "$imgs" --judge "$tmp/nope" 2>&1 >/dev/null); rc=$?
if [[ $rc -eq 1 && "$err" == *"$tmp/nope"* ]]; then ok "missing judge named"; else bad "missing judge (rc $rc): $err"; fi
cp -r "$judge" "$tmp/broken"
head -n 5 "$judge/classes.tsv" > "$tmp/broken/classes.tsv"
err=$("$bin" eval --images "$imgs" --judge "$tmp/broken" 2>&1 >/dev/null); rc=$?
if [[ $rc -eq 1 && "$err" == *"$tmp/broken/classes.tsv"* ]]; then ok "short classes.tsv named"; else bad "short classes.tsv (rc $rc): $err"; fi
"$bin" eval --images "$imgs" >/dev/null 2>&1; rc=$?
if [[ $rc -eq 2 ]]; then ok "--images needs --style-dir or a judge (usage)"; else bad "--images alone: rc $rc"; fi

model=$src/models/shapes64
if [[ -f $model/unet/diffusion_pytorch_model.safetensors ]]; then
  "$bin" train --model "$model" --data "$style" --out "$tmp/a.safetensors" --steps 2 --rank 2 --quiet >/dev/null 2>&1 \
    && ok "tiny adapter trained" || bad "train failed"
  printf 'olnmoji, a grinning face\nolnmoji, a photo of a cat\nan electric light bulb\n' > "$tmp/prompts.txt"
  out=$("$bin" eval --model "$model" --lora "$tmp/a.safetensors:0" --style-dir "$style" --judge "$judge" \
        --prompts "$tmp/prompts.txt" --n 3 --steps 3 --out "$tmp/run" 2>/dev/null); rc=$?
  if [[ $rc -eq 0 ]]; then ok "eval --model --judge runs"; else bad "eval --model --judge (rc $rc): $out"; fi
  last=$(tail -4 <<<"$out" | cut -d: -f1 | tr '\n' ' ')
  if [[ "$last" == "style_distance_base style_distance_adapter prompt_fidelity_base prompt_fidelity_adapter " ]]; then
    ok "last four lines"; else bad "last four lines: '$last'"; fi
  b1=$(val prompt_fidelity_top1_base "$out"); a1=$(val prompt_fidelity_top1_adapter "$out")
  b5=$(val prompt_fidelity_base "$out"); a5=$(val prompt_fidelity_adapter "$out")
  if [[ -n "$b1" && "$b1" == "$a1" && "$b5" == "$a5" && "$b5" != nan ]] && awk -v a="$b1" -v b="$b5" 'BEGIN{exit !(a <= b)}'; then
    ok "weight 0: top-1 $b1 <= top-5 $b5, equal for base and adapter"; else bad "judge figures: $out"; fi
  if [[ "$(val fidelity_skipped "$out")" == 1 ]] && ! grep -q "^count_accuracy" <<<"$out"; then ok "sampling: one prompt skipped, no count lines"
  else bad "sampling skipped/count: $out"; fi
else
  echo "note: $model has no U-Net weights; sampling mode not exercised"
fi
echo "cli_judge: $checks checks, $fails failed"
[[ $fails -eq 0 ]]
