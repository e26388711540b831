#!/usr/bin/env bash
# cli_inspect.sh - `stylora inspect` and `stylora probe` through the real
# program: the shared SD 1.5 configs and tokenizer, the tiny golden model, and
# bad files that must give a one-line error naming the file, exit code 1, and
# no crash (under the sanitizer build too).
set -u
bin=${SL_STYLORA:?}; shared=${SL_SHARED_DIR:?}
tmp=${SL_BINARY_DIR:-.}/tmp_cli_inspect; rm -rf "$tmp"; mkdir -p "$tmp"
fails=0; checks=0
ok()   { checks=$((checks+1)); echo "ok   $1"; }
bad()  { checks=$((checks+1)); fails=$((fails+1)); echo "FAIL $1"; }
expect_out() { # name, needle, command...
  local name=$1 needle=$2; shift 2
  local out; out=$("$@" 2>&1); local rc=$?
  if [[ $rc -eq 0 && "$out" == *"$needle"* ]]; then ok "$name"; else bad "$name (rc $rc): $out"; fi
}
expect_err() { # name, needle, command...: exit 1, one stderr line containing needle
  local name=$1 needle=$2; shift 2
  local err; err=$("$@" 2>&1 >/dev/null); local rc=$?
  local lines; lines=$(printf '%s\n' "$err" | grep -c .)
  if [[ $rc -eq 1 && "$err" == *"$needle"* && $lines -eq 1 ]]; then ok "$name"; else bad "$name (rc $rc, $lines lines): $err"; fi
}
expect_out "help lists commands" "inspect" "$bin" --help
expect_out "inspect --help" "--tensors" "$bin" inspect --help
expect_out "sd15 is a diffusers folder" "diffusers pipeline folder" "$bin" inspect "$shared/sd15"
expect_out "sd15 tokenizer counted" "49408 tokens, merges.txt 48894 merges" "$bin" inspect "$shared/sd15"
expect_out "sd15 unet config read" "cross_attention_dim: 768" "$bin" inspect "$shared/sd15"
expect_out "tiny unet weights" "diffusers U-Net weights" "$bin" inspect "$shared/golden/tiny-sd1"
expect_out "peft adapter recognized" "diffusers/PEFT format" "$bin" inspect "$shared/golden/tiny-sd1/lora/pytorch_lora_weights.safetensors"
expect_out "adapter rank and targets" "to_out.0 x8" "$bin" inspect "$shared/golden/tiny-sd1/lora/pytorch_lora_weights.safetensors"
src=${SL_SOURCE_DIR:?}
expect_out "LyCORIS LoHa recognized" "LyCORIS LoHa adapter" "$bin" inspect "$src/tests/data/lycoris_loha.safetensors"
expect_out "LyCORIS LoHa ranks and scales" "rank: 2..8, scale (alpha/rank): 0.25..2" "$bin" inspect "$src/tests/data/lycoris_loha.safetensors"
expect_out "LyCORIS LoKr recognized" "LyCORIS LoKr adapter" "$bin" inspect "$src/tests/data/lycoris_lokr.safetensors"
expect_out "LyCORIS LoKr module kinds" "LyCORIS: 0 LoHa, 5 LoKr modules" "$bin" inspect "$src/tests/data/lycoris_lokr.safetensors"
expect_out "tensor listing" "F32" "$bin" inspect --tensors "$shared/golden/tiny-sd1/expected.safetensors"
# bad inputs
printf 'not a safetensors file' > "$tmp/text.safetensors"
expect_err "garbage file" "text.safetensors" "$bin" inspect "$tmp/text.safetensors"
head -c 100 "$shared/golden/tiny-sd1/vae/diffusion_pytorch_model.safetensors" > "$tmp/trunc.safetensors"
expect_err "truncated file" "trunc.safetensors" "$bin" inspect "$tmp/trunc.safetensors"
printf '{"a": 1,,}' > "$tmp/bad_config.json"
expect_err "malformed config" "bad_config.json" "$bin" inspect "$tmp/bad_config.json"
printf 'PK' > "$tmp/model.ckpt"
expect_err "pickle refused" "convert" "$bin" inspect "$tmp/model.ckpt"
expect_err "missing file" "nothere.safetensors" "$bin" inspect "$tmp/nothere.safetensors"
# probe: unknown component and missing input file
"$bin" probe nosuch --model "$tmp" --in "$tmp/a" --out "$tmp/b" >/dev/null 2>&1; rc=$?
if [[ $rc -eq 2 ]]; then ok "probe unknown component"; else bad "probe unknown component rc $rc"; fi
"$bin" inspect --bogus x >/dev/null 2>&1; rc=$?
if [[ $rc -eq 2 ]]; then ok "unknown option"; else bad "unknown option rc $rc"; fi
echo "$((checks-fails)) passed, $fails failed"
[[ $fails -eq 0 ]]
