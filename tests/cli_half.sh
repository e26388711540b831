#!/usr/bin/env bash
# cli_half.sh - `--base fp16` (pipeline/half.h) through the real program on the shipped
# shapes64 model, whose U-Net file is F16: held in binary16 it must sample the SAME PNG
# bytes as the fp32 base (exact values, bit-identical kernels), with and without an
# adapter; training on it works and writes the same adapter bytes as on fp32 (and a plain
# `train` holds an F16 checkpoint in binary16 by itself, with those bytes again); --merge
# widens the touched weights (warning); --full and DoRA are refused; a pre-quantized NF4
# model refuses --base fp16.
set -u
bin=${SL_STYLORA:?}; src=${SL_SOURCE_DIR:?}
M=$src/models/shapes64
tmp=${SL_BINARY_DIR:-.}/tmp_cli_half; rm -rf "$tmp"; mkdir -p "$tmp"
fails=0; checks=0
ok()   { checks=$((checks+1)); echo "ok   $1"; }
bad()  { checks=$((checks+1)); fails=$((fails+1)); echo "FAIL $1"; }
expect_ok() { # name, needle, command...
  local name=$1 needle=$2; shift 2
  local out; out=$("$@" 2>&1); local rc=$?
  if [[ $rc -eq 0 && "$out" == *"$needle"* ]]; then ok "$name"; else bad "$name (rc $rc): $out"; fi
}
expect_err() { # name, needle, command...: exit code 1 and needle in the output
  local name=$1 needle=$2; shift 2
  local out; out=$("$@" 2>&1); local rc=$?
  if [[ $rc -eq 1 && "$out" == *"$needle"* ]]; then ok "$name"; else bad "$name (rc $rc): $out"; fi
}
same() { if cmp -s "$2" "$3"; then ok "$1"; else bad "$1: $2 and $3 differ"; fi; }
P="a large red circle in the center on a white background"
S=(--steps 3 --seed 7 --threads 1)
expect_ok "sample --base fp16" "0 values rounded" "$bin" sample --model "$M" --base fp16 --prompt "$P" "${S[@]}" --out "$tmp/h"
expect_ok "sample --base fp32" "" "$bin" sample --model "$M" --base fp32 --prompt "$P" "${S[@]}" --out "$tmp/f"
expect_ok "sample (default) holds an F16 checkpoint as stored" "stored F16: held as they are" "$bin" sample --model "$M" --prompt "$P" "${S[@]}" --out "$tmp/d"
same "default == --base fp32 (PNG bytes)" "$tmp/d/00000-7.png" "$tmp/f/00000-7.png"
same "fp16 base == fp32 base on an F16 checkpoint (PNG bytes)" "$tmp/h/00000-7.png" "$tmp/f/00000-7.png"
mkdir -p "$tmp/data"
cp "$tmp/f/00000-7.png" "$tmp/data/a.png"; echo "a large red circle" > "$tmp/data/a.txt"
T=(--data "$tmp/data" --steps 3 --rank 4 --targets attn,resnet --threads 1 --seed 3 --quiet)
expect_ok "train --base fp16" "" "$bin" train --model "$M" --base fp16 "${T[@]}" --out "$tmp/lh.safetensors"
expect_ok "train --base fp32" "" "$bin" train --model "$M" --base fp32 "${T[@]}" --out "$tmp/lf.safetensors"
expect_ok "train (default) holds an F16 checkpoint as stored" "stored F16: held as they are" "$bin" train --model "$M" "${T[@]:0:12}" --out "$tmp/ld.safetensors"
same "the default run == --base fp32 (adapter bytes)" "$tmp/ld.safetensors" "$tmp/lf.safetensors"
# the tensor bytes (the header differs: stylora.train.base = fp16 in one)
data() { local n; n=$(od -An -t u8 -N8 "$1" | tr -d ' '); tail -c +$((9 + n)) "$1"; }
data "$tmp/lh.safetensors" > "$tmp/lh.data"; data "$tmp/lf.safetensors" > "$tmp/lf.data"
same "the same adapter tensor bytes on the fp16 and the fp32 base" "$tmp/lh.data" "$tmp/lf.data"
expect_ok "the fp16 adapter records its base" "fp16" "$bin" inspect "$tmp/lh.safetensors"
expect_ok "sample --lora (runtime) on fp16" "" "$bin" sample --model "$M" --base fp16 --prompt "$P" --lora "$tmp/lh.safetensors" "${S[@]}" --out "$tmp/rh"
expect_ok "sample --lora on fp32" "" "$bin" sample --model "$M" --base fp32 --prompt "$P" --lora "$tmp/lh.safetensors" "${S[@]}" --out "$tmp/rf"
same "runtime adapter: fp16 base == fp32 base (PNG bytes)" "$tmp/rh/00000-7.png" "$tmp/rf/00000-7.png"
expect_ok "sample --merge on fp16 widens the touched weights" "widened to fp32 for merging" "$bin" sample --model "$M" --base fp16 --prompt "$P" --lora "$tmp/lh.safetensors" --merge "${S[@]}" --out "$tmp/mh"
expect_ok "sample --merge on fp32" "" "$bin" sample --model "$M" --base fp32 --prompt "$P" --lora "$tmp/lh.safetensors" --merge "${S[@]}" --out "$tmp/mf"
same "merged adapter: fp16 base == fp32 base (PNG bytes)" "$tmp/mh/00000-7.png" "$tmp/mf/00000-7.png"
expect_err "train --full on fp16 refused" "no --full" "$bin" train --model "$M" --base fp16 --full "${T[@]}" --out "$tmp/x.safetensors"
expect_err "train --dora on fp16 refused" "no DoRA" "$bin" train --model "$M" --base fp16 --dora "${T[@]}" --out "$tmp/y.safetensors"
expect_err "an unknown --base is refused" "fp16" "$bin" train --model "$M" --base fp8 "${T[@]}" --out "$tmp/z.safetensors"
mkdir -p "$tmp/q"
expect_ok "quantize shapes64" "" "$bin" quantize --model "$M" --out "$tmp/q/shapes64"
expect_err "--base fp16 on a pre-quantized model refused" "pre-quantized to NF4" "$bin" sample --model "$tmp/q/shapes64" --base fp16 --prompt "$P" "${S[@]}" --out "$tmp/qh"
echo "cli_half: $checks checks, $fails failed"
[[ $fails -eq 0 ]]
