#!/usr/bin/env bash
# cli_lora.sh - `stylora lora convert` and `stylora lora merge` through the real
# program on the tiny golden adapter: PEFT -> kohya -> PEFT round trip (kohya names
# resolved with --model and with the built-in table must give identical files),
# a merge of the same adapter split 0.8 + 0.2 (a pipeline folder; a U-Net folder from a
# U-Net folder; a single-file checkpoint, see test_merge_export.c for its numbers), and
# errors that name the file.
# Alpha (issue 20): the golden PEFT file (no alpha stored) converts at alpha = rank with
# one info line; --lora-alpha overrides a file's own .alpha; a PEFT output carries
# diffusers' lora_adapter_metadata with its lora_alpha and r and no stale
# ss_network_alpha; every --lora-alpha hint names an option of probe, sample and lora.
set -u
bin=${SL_STYLORA:?}; shared=${SL_SHARED_DIR:?}
g=$shared/golden/tiny-sd1
tmp=${SL_BINARY_DIR:-.}/tmp_cli_lora; rm -rf "$tmp"; mkdir -p "$tmp"
fails=0; checks=0
ok()   { checks=$((checks+1)); echo "ok   $1"; }
bad()  { checks=$((checks+1)); fails=$((fails+1)); echo "FAIL $1"; }
expect_ok() { # name, needle, command...
  local name=$1 needle=$2; shift 2
  local out; out=$("$@" 2>&1); local rc=$?
  if [[ $rc -eq 0 && "$out" == *"$needle"* ]]; then ok "$name"; else bad "$name (rc $rc): $out"; fi
}
expect_err() { # name, needle, command...: exit code 1 and needle in the error line
  local name=$1 needle=$2; shift 2
  local err; err=$("$@" 2>&1 >/dev/null); local rc=$?
  if [[ $rc -eq 1 && "$err" == *"$needle"* ]]; then ok "$name"; else bad "$name (rc $rc): $err"; fi
}
expect_ok "lora --help" "convert" "$bin" lora --help
expect_ok "peft -> kohya" "(kohya, F32): 32 modules" "$bin" lora convert "$g/lora/pytorch_lora_weights.safetensors" --to kohya --alpha 8 --out "$tmp/k.safetensors"
expect_ok "kohya file recognized" "kohya format" "$bin" inspect "$tmp/k.safetensors"
expect_ok "kohya -> peft (model names)" "32 modules" "$bin" lora convert "$tmp/k.safetensors" --to peft --model "$g" --out "$tmp/p_model.safetensors"
expect_ok "kohya -> peft (built-in names)" "32 modules" "$bin" lora convert "$tmp/k.safetensors" --to peft --out "$tmp/p_table.safetensors"
if cmp -s "$tmp/p_model.safetensors" "$tmp/p_table.safetensors"; then ok "model and table name resolution agree"; else bad "model and table name resolution differ"; fi
expect_ok "peft -> peft keeps alpha" "32 modules" "$bin" lora convert "$tmp/p_table.safetensors" --to peft --dtype f16 --out "$tmp/p16.safetensors"
expect_ok "merge 0.8 + 0.2" "merged 2 adapter(s)" "$bin" lora merge --model "$g" --lora "$tmp/k.safetensors:0.8" --lora "$tmp/p_table.safetensors:0.2" --out "$tmp/merged"
if [[ -f "$tmp/merged/model_index.json" && -f "$tmp/merged/unet/config.json" && -f "$tmp/merged/unet/diffusion_pytorch_model.safetensors" ]]; then ok "merged pipeline written"; else bad "merged pipeline missing"; fi
expect_ok "merged weights recognized" "diffusers U-Net weights" "$bin" inspect "$tmp/merged/unet/diffusion_pytorch_model.safetensors"
expect_ok "merge into a U-Net folder writes a U-Net folder" "(U-Net folder, source dtypes)" "$bin" lora merge --model "$g/unet" --lora "$tmp/k.safetensors" --out "$tmp/merged_unet"
if [[ -f "$tmp/merged_unet/config.json" && -f "$tmp/merged_unet/diffusion_pytorch_model.safetensors" ]]; then ok "merged U-Net folder written"; else bad "merged U-Net folder missing"; fi
expect_ok "merge --to single-file (fp16 default)" "(single-file checkpoint, F16)" "$bin" lora merge --model "$g" --lora "$tmp/k.safetensors" --to single-file --out "$tmp/merged.safetensors"
expect_ok "merge --to single-file --dtype bf16" "(single-file checkpoint, BF16)" "$bin" lora merge --model "$g" --lora "$tmp/k.safetensors" --to single-file --dtype bf16 --out "$tmp/merged_bf16.safetensors"
expect_ok "bf16 single-file holds BF16 only" "data: 1.92 MiB (BF16 1.92 MiB)" "$bin" inspect "$tmp/merged_bf16.safetensors"
expect_ok "single-file recognized" "single-file Stable Diffusion checkpoint (U-Net, VAE, text encoder)" "$bin" inspect "$tmp/merged.safetensors"
# errors
# alpha: a file without one means alpha = rank; --lora-alpha overrides; PEFT outputs carry lora_adapter_metadata
expect_ok "PEFT without alpha: alpha = rank" "alpha = rank (scale 1)" "$bin" lora convert "$g/lora/pytorch_lora_weights.safetensors" --to kohya --out "$tmp/r.safetensors"
expect_ok "... stored as .alpha 4 (scale 1)" "rank: 4, alpha: 4 " "$bin" inspect "$tmp/r.safetensors"
expect_ok "--lora-alpha overrides .alpha" "overrides the alpha the file stores" "$bin" lora convert "$tmp/k.safetensors" --to peft --lora-alpha 2 --out "$tmp/p2.safetensors"
expect_ok "... alpha 2 read back from lora_adapter_metadata" "rank: 4, alpha: 2 " "$bin" inspect "$tmp/p2.safetensors"
hdr=$(head -c 20000 "$tmp/p_table.safetensors" | tr -d '\000')
if [[ "$hdr" == *'"lora_adapter_metadata":"{\"unet.alpha_pattern\":{},\"unet.lora_alpha\":8,\"unet.r\":4,'* && "$hdr" != *ss_network_alpha* ]]; then
  ok "PEFT output: lora_adapter_metadata unet.lora_alpha 8, unet.r 4, no ss_network_alpha"
else bad "PEFT output metadata: ${hdr:0:400}"; fi
for c in "probe" "sample" "lora convert" "lora merge"; do
  expect_ok "$c --help lists --lora-alpha" "--lora-alpha" "$bin" $c --help
done
expect_err "not an adapter" "not an adapter file" "$bin" lora convert "$g/unet/diffusion_pytorch_model.safetensors" --to kohya --out "$tmp/x.safetensors"
expect_err "missing adapter file" "nothere.safetensors" "$bin" lora merge --model "$g" --lora "$tmp/nothere.safetensors" --out "$tmp/m2"
expect_err "model without unet" "no unet" "$bin" lora merge --model "$tmp" --lora "$tmp/k.safetensors" --out "$tmp/m3"
cp -r "$g" "$tmp/sd2"; sed -i 's/"quick_gelu"/"gelu"/' "$tmp/sd2/text_encoder/config.json"
expect_err "single-file of an SD 2.x text encoder refused" "SD 1.x layout" "$bin" lora merge --model "$tmp/sd2" --lora "$tmp/k.safetensors" --to single-file --out "$tmp/sd2.safetensors"
"$bin" lora merge --model "$g" --lora "$tmp/k.safetensors" --dtype f64 --out "$tmp/m4" >/dev/null 2>&1; rc=$?
if [[ $rc -eq 2 ]]; then ok "bad --dtype is a usage error"; else bad "bad --dtype gave rc $rc"; fi
"$bin" lora convert x --to onnx --out y >/dev/null 2>&1; rc=$?
if [[ $rc -eq 2 ]]; then ok "bad --to is a usage error"; else bad "bad --to gave rc $rc"; fi
echo "cli_lora: $checks checks, $fails failed"
[[ $fails -eq 0 ]]
