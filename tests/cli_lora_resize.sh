#!/usr/bin/env bash
# cli_lora_resize.sh - `stylora lora resize` and `stylora lora merge --to-adapter` through the
# real program on the tiny golden adapter (rank 4, alpha 8): the ranks and alphas written
# (kohya: new alpha = scale * new rank; merge: alpha = rank), output form and dtype, the same
# bytes from two runs, and errors. The numbers are proven in tests/test_styles_resize.c.
set -u
bin=${SL_STYLORA:?}; shared=${SL_SHARED_DIR:?}
g=$shared/golden/tiny-sd1
tmp=${SL_BINARY_DIR:-.}/tmp_cli_lora_resize; rm -rf "$tmp"; mkdir -p "$tmp"
fails=0; checks=0
ok()   { checks=$((checks+1)); echo "ok   $1"; }
bad()  { checks=$((checks+1)); fails=$((fails+1)); echo "FAIL $1"; }
expect_ok() { # name, needle, command...
  local name=$1 needle=$2; shift 2
  local out; out=$("$@" 2>&1); local rc=$?
  if [[ $rc -eq 0 && "$out" == *"$needle"* ]]; then ok "$name"; else bad "$name (rc $rc): $out"; fi
}
expect_rc() { # name, rc, needle, command...: that exit code and needle in stderr
  local name=$1 want=$2 needle=$3; shift 3
  local err; err=$("$@" 2>&1 >/dev/null); local rc=$?
  if [[ $rc -eq $want && "$err" == *"$needle"* ]]; then ok "$name"; else bad "$name (rc $rc): $err"; fi
}
k=$tmp/k.safetensors
"$bin" lora convert "$g/lora/pytorch_lora_weights.safetensors" --to kohya --alpha 8 --out "$k" --quiet >/dev/null 2>&1 || { echo "cannot make the kohya input"; exit 1; }
expect_ok "resize --rank 2" "output ranks 2..2" "$bin" lora resize "$k" --rank 2 --out "$tmp/r2.safetensors"
expect_ok "rank 2 keeps the scale (alpha 4)" "rank: 2, alpha: 4 (scale" "$bin" inspect "$tmp/r2.safetensors"
expect_ok "kohya metadata" "ss_network_dim = 2" "$bin" inspect "$tmp/r2.safetensors"
expect_ok "resize comment" "dimension is resized from 4 to 2" "$bin" inspect "$tmp/r2.safetensors"
expect_ok "resize to own rank" "rank: 4, alpha: 8 (scale" bash -c "'$bin' lora resize '$k' --rank 4 --out '$tmp/r4.safetensors' --quiet && '$bin' inspect '$tmp/r4.safetensors'"
expect_ok "--rank above the input keeps 4" "output ranks 4..4" "$bin" lora resize "$k" --rank 16 --out "$tmp/r16.safetensors"
expect_ok "dynamic sv_fro to peft f16" "(peft, F16)" env OPENBLAS_NUM_THREADS=1 OMP_NUM_THREADS=1 "$bin" lora resize "$k" --dynamic sv_fro:0.9 --to peft --dtype f16 --out "$tmp/d1.safetensors"
expect_ok "dynamic output is peft" "adapter: peft, 32 modules" "$bin" inspect "$tmp/d1.safetensors"
OPENBLAS_NUM_THREADS=2 OMP_NUM_THREADS=2 "$bin" lora resize "$k" --dynamic sv_fro:0.9 --to peft --dtype f16 --out "$tmp/d2.safetensors" --quiet 2>/dev/null
if cmp -s "$tmp/d1.safetensors" "$tmp/d2.safetensors"; then ok "two runs (1 and 2 threads), same bytes"; else bad "two runs differ"; fi
expect_ok "dynamic capped by --rank 1" "output ranks 1..1" "$bin" lora resize "$k" --dynamic sv_ratio:1000 --rank 1 --out "$tmp/d3.safetensors"
# merge --to-adapter
expect_ok "merge two adapters at full rank" "output ranks 6..6" "$bin" lora merge --lora "$k:0.5" --lora "$tmp/r2.safetensors:-1" --to-adapter "$tmp/m.safetensors"
expect_ok "merged: alpha = rank" "rank: 6, alpha: 6 (scale" "$bin" inspect "$tmp/m.safetensors"
expect_ok "merge --rank 3 to peft" "output ranks 3..3" "$bin" lora merge --lora "$k" --lora "$tmp/r2.safetensors:0.3" --to-adapter "$tmp/m3.safetensors" --rank 3 --to peft
expect_ok "merged file loads" "adapter: peft, 32 modules" "$bin" inspect "$tmp/m3.safetensors"
# errors
expect_rc "resize needs --rank or --dynamic" 2 "--rank or --dynamic" "$bin" lora resize "$k" --out "$tmp/x.safetensors"
expect_rc "bad --dynamic" 2 "sv_fro:2" "$bin" lora resize "$k" --dynamic sv_fro:2 --out "$tmp/x.safetensors"
expect_rc "bad --rank" 2 "--rank" "$bin" lora resize "$k" --rank 0 --out "$tmp/x.safetensors"
expect_rc "missing input" 1 "nothere.safetensors" "$bin" lora resize "$tmp/nothere.safetensors" --rank 2 --out "$tmp/x.safetensors"
expect_rc "not an adapter" 1 "not an adapter file" "$bin" lora resize "$g/unet/diffusion_pytorch_model.safetensors" --rank 2 --out "$tmp/x.safetensors"
expect_rc "output is a folder" 1 "--out" "$bin" lora resize "$k" --rank 2 --out "$tmp"
expect_rc "merge: missing adapter" 1 "nothere.safetensors" "$bin" lora merge --lora "$k" --lora "$tmp/nothere.safetensors" --to-adapter "$tmp/x.safetensors"
expect_rc "merge: --to-adapter needs --lora" 2 "--lora" "$bin" lora merge --to-adapter "$tmp/x.safetensors"
if [[ ! -e "$tmp/x.safetensors" ]]; then ok "no output after errors"; else bad "an error left $tmp/x.safetensors"; fi
echo "cli_lora_resize: $checks checks, $fails failed"
[[ $fails -eq 0 ]]
