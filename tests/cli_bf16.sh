#!/usr/bin/env bash
# cli_bf16.sh - `--base bf16` (pipeline/half.h: bfloat16 linear and conv weights, their
# products on the bf16 GEMM kernel) through the real program on the shipped shapes64 model
# (its U-Net file is F16: rounded to bfloat16 at load). Sampling and a LoRA run give the same
# bytes with 1 and 2 threads; the run records its base; the adapter is not the fp32 run's (a
# different result, not only different bits) but samples; --merge widens the touched weights;
# --full, DoRA and a pre-quantized NF4 model are refused with the reason.
set -u
bin=${SL_STYLORA:?}; src=${SL_SOURCE_DIR:?}
M=$src/models/shapes64
tmp=${SL_BINARY_DIR:-.}/tmp_cli_bf16; rm -rf "$tmp"; mkdir -p "$tmp"
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
differ() { if cmp -s "$2" "$3"; then bad "$1: $2 and $3 are the same"; else ok "$1"; fi; }
P="a large red circle in the center on a white background"
S=(--steps 3 --seed 7)
expect_ok "sample --base bf16 (1 thread)" "products on the bf16 GEMM kernel" "$bin" sample --model "$M" --base bf16 --prompt "$P" "${S[@]}" --threads 1 --out "$tmp/b1"
expect_ok "sample --base bf16 (2 threads)" "held in bfloat16" "$bin" sample --model "$M" --base bf16 --prompt "$P" "${S[@]}" --threads 2 --out "$tmp/b2"
same "bf16 base: 1 and 2 threads sample the same PNG bytes" "$tmp/b1/00000-7.png" "$tmp/b2/00000-7.png"
expect_ok "sample --base fp32" "" "$bin" sample --model "$M" --base fp32 --prompt "$P" "${S[@]}" --threads 1 --out "$tmp/f"
mkdir -p "$tmp/data"
cp "$tmp/f/00000-7.png" "$tmp/data/a.png"; echo "a large red circle" > "$tmp/data/a.txt"
T=(--data "$tmp/data" --steps 3 --rank 4 --targets attn,resnet --seed 3 --quiet)
expect_ok "train --base bf16 (1 thread)" "" "$bin" train --model "$M" --base bf16 "${T[@]}" --threads 1 --out "$tmp/l1.safetensors"
expect_ok "train --base bf16 (2 threads)" "" "$bin" train --model "$M" --base bf16 "${T[@]}" --threads 2 --out "$tmp/l2.safetensors"
same "bf16 base: 1 and 2 threads train the same adapter bytes" "$tmp/l1.safetensors" "$tmp/l2.safetensors"
expect_ok "train --base fp32" "" "$bin" train --model "$M" --base fp32 "${T[@]}" --threads 1 --out "$tmp/lf.safetensors"
data() { local n; n=$(od -An -t u8 -N8 "$1" | tr -d ' '); tail -c +$((9 + n)) "$1"; }
data "$tmp/l1.safetensors" > "$tmp/l1.data"; data "$tmp/lf.safetensors" > "$tmp/lf.data"
differ "the bf16 base trains another adapter than fp32 (rounded products)" "$tmp/l1.data" "$tmp/lf.data"
expect_ok "the bf16 adapter records its base" "bf16" "$bin" inspect "$tmp/l1.safetensors"
expect_ok "sample --lora (runtime) on bf16" "" "$bin" sample --model "$M" --base bf16 --prompt "$P" --lora "$tmp/l1.safetensors" "${S[@]}" --out "$tmp/rb"
expect_ok "sample --merge on bf16 widens the touched weights" "widened to fp32 for merging" "$bin" sample --model "$M" --base bf16 --prompt "$P" --lora "$tmp/l1.safetensors" --merge "${S[@]}" --out "$tmp/mb"
expect_err "train --full on bf16 refused" "no --full" "$bin" train --model "$M" --base bf16 --full "${T[@]}" --out "$tmp/x.safetensors"
expect_err "train --dora on bf16 refused" "no DoRA" "$bin" train --model "$M" --base bf16 --dora "${T[@]}" --out "$tmp/y.safetensors"
expect_err "an unknown --base names bf16 among the choices" "bf16" "$bin" train --model "$M" --base fp8 "${T[@]}" --out "$tmp/z.safetensors"
mkdir -p "$tmp/q"
expect_ok "quantize shapes64" "" "$bin" quantize --model "$M" --out "$tmp/q/shapes64"
expect_err "--base bf16 on a pre-quantized model refused" "--base bf16 does not apply" "$bin" sample --model "$tmp/q/shapes64" --base bf16 --prompt "$P" "${S[@]}" --out "$tmp/qb"
echo "cli_bf16: $checks checks, $fails failed"
[[ $fails -eq 0 ]]
