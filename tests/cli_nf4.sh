#!/usr/bin/env bash
# cli_nf4.sh - an NF4 model from `stylora quantize` through the real program on the
# shipped shapes64 model: it loads as NF4 without --base nf4 (the same PNG bytes as
# --base nf4 on the fp32 model), --base fp32 dequantizes it with a warning, training and
# sample --merge work on it, and `lora merge` re-quantizes (reporting the error) or, with
# --dequantize, writes dense weights; the re-quantized merged model samples.
set -u
bin=${SL_STYLORA:?}; src=${SL_SOURCE_DIR:?}
M=$src/models/shapes64
tmp=${SL_BINARY_DIR:-.}/tmp_cli_nf4; rm -rf "$tmp"; mkdir -p "$tmp"
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
expect_no() { # name, needle that must NOT appear, command... (exit 0)
  local name=$1 needle=$2; shift 2
  local out; out=$("$@" 2>&1); local rc=$?
  if [[ $rc -eq 0 && "$out" != *"$needle"* ]]; then ok "$name"; else bad "$name (rc $rc): $out"; fi
}
P="a large red circle in the center on a white background"
S=(--steps 3 --seed 7 --threads 1)
# the quantized model keeps the basename so the PNG's "Model:" field matches
mkdir -p "$tmp/q"
expect_ok "quantize shapes64" "quantized 84 U-Net linears" "$bin" quantize --model "$M" --out "$tmp/q/shapes64" --dtype fp16
expect_ok "stylora.quant metadata" "stylora.quant = nf4" "$bin" inspect "$tmp/q/shapes64/unet/diffusion_pytorch_model.safetensors"
expect_ok "sample the NF4 model, no --base" "pre-quantized U-Net" "$bin" sample --model "$tmp/q/shapes64" --prompt "$P" "${S[@]}" --out "$tmp/auto"
expect_ok "sample --base nf4 on fp32" "" "$bin" sample --model "$M" --base nf4 --prompt "$P" "${S[@]}" --out "$tmp/nf4"
expect_ok "sample fp32" "" "$bin" sample --model "$M" --prompt "$P" "${S[@]}" --out "$tmp/fp32"
if cmp -s "$tmp/auto/00000-7.png" "$tmp/nf4/00000-7.png"; then ok "pre-quantized == --base nf4 (same PNG bytes)"; else bad "pre-quantized and --base nf4 differ"; fi
if ! cmp -s "$tmp/auto/00000-7.png" "$tmp/fp32/00000-7.png"; then ok "NF4 differs from fp32"; else bad "NF4 gave the fp32 bytes: not quantized?"; fi
expect_ok "--base fp32 dequantizes with a warning" "dequantized to fp32" "$bin" sample --model "$tmp/q/shapes64" --base fp32 --prompt "$P" "${S[@]}" --out "$tmp/deq"
# an adapter trained on the NF4 model (no --base)
mkdir -p "$tmp/data"
cp "$tmp/fp32/00000-7.png" "$tmp/data/a.png"; echo "a large red circle" > "$tmp/data/a.txt"
expect_ok "train on the NF4 model" "pre-quantized U-Net" "$bin" train --model "$tmp/q/shapes64" --data "$tmp/data" --steps 2 --rank 4 --threads 1 --out "$tmp/l.safetensors"
expect_err "train --full on the NF4 model refused" "held in NF4" "$bin" train --model "$tmp/q/shapes64" --data "$tmp/data" --steps 1 --full --threads 1 --out "$tmp/full.safetensors"
expect_ok "sample --merge on NF4 dequantizes the touched layers" "dequantized to fp32 for merging" "$bin" sample --model "$tmp/q/shapes64" --prompt "$P" --lora "$tmp/l.safetensors" --merge "${S[@]}" --out "$tmp/merge"
expect_ok "sample --lora (runtime) on NF4" "" "$bin" sample --model "$tmp/q/shapes64" --prompt "$P" --lora "$tmp/l.safetensors" "${S[@]}" --out "$tmp/rt"
# lora merge into the NF4 model: re-quantized, or dense with --dequantize
expect_ok "lora merge re-quantizes and reports" "re-quantized 56 merged NF4 linears: weight relative error" "$bin" lora merge --model "$tmp/q/shapes64" --lora "$tmp/l.safetensors" --out "$tmp/mq"
expect_ok "re-quantized merge is NF4" "stylora.quant = nf4" "$bin" inspect "$tmp/mq/unet/diffusion_pytorch_model.safetensors"
expect_ok "lora merge --dequantize" "merged 1 adapter(s)" "$bin" lora merge --model "$tmp/q/shapes64" --lora "$tmp/l.safetensors" --dequantize --out "$tmp/md"
expect_no "dequantized merge is dense" "stylora.quant" "$bin" inspect "$tmp/md/unet/diffusion_pytorch_model.safetensors"
expect_err "no single-file from an NF4 model" "cannot hold" "$bin" lora merge --model "$tmp/q/shapes64" --lora "$tmp/l.safetensors" --to single-file --out "$tmp/nf4.safetensors"
# the merge wrote a whole pipeline (text encoder, VAE, tokenizer, scheduler copied): it samples by itself
expect_ok "the re-quantized merged model samples as NF4" "84 NF4 linears" "$bin" sample --model "$tmp/mq" --prompt "$P" --steps 2 --threads 1 --out "$tmp/mmo"
echo "cli_nf4: $checks checks, $fails failed"
[[ $fails -eq 0 ]]
