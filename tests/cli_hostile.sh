#!/usr/bin/env bash
# cli_hostile.sh - hostile files through the real program: pickle checkpoints
# (.ckpt/.pt/.pth/.bin) refused by inspect, sample and train with a message that
# says how to convert; model folders whose U-Net / VAE / text-encoder /
# scheduler config has a wrong type or an absurd size (one-line error naming the
# file and the key); hostile safetensors, images and adapters from
# tests/data/regress; output paths that are FIFOs, device nodes, folders or
# empty, refused before any work and left as they were; non-finite and absurd
# numbers and --lora weights (exit 2 for option values); --help and hints that
# name only flags that exist. Every case: exit code 1 (or 2), one stderr line,
# no crash (no sanitizer report, no signal). SL_HOSTILE_ALL=1 runs every config
# file of tests/data/regress through `sample` (default: three per parser).
set -u
bin=${SL_STYLORA:?}; shared=${SL_SHARED_DIR:?}; src=${SL_SOURCE_DIR:?}
reg=$src/tests/data/regress
tmp=${SL_BINARY_DIR:-.}/tmp_cli_hostile; rm -rf "$tmp"; mkdir -p "$tmp"
fails=0; checks=0
ok()   { checks=$((checks+1)); echo "ok   $1"; }
bad()  { checks=$((checks+1)); fails=$((fails+1)); echo "FAIL $1"; }
expect_err_rc() { # rc, name, needle..., --, command...: exit rc, one stderr line containing every needle
  local want=$1 name=$2; shift 2
  local needles=()
  while [[ $1 != -- ]]; do needles+=("$1"); shift; done; shift
  # timeout: a writer that opens a FIFO blocks forever (the bug these cases catch)
  local err; err=$(timeout 120 "$@" 2>&1 >/dev/null); local rc=$?
  local lines; lines=$(printf '%s\n' "$err" | grep -c .)
  local miss="" needle
  for needle in "${needles[@]}"; do [[ "$err" == *"$needle"* ]] || miss="$miss '$needle'"; done
  if [[ $rc -eq $want && -z "$miss" && $lines -eq 1 ]]; then ok "$name"
  else bad "$name (rc $rc, $lines lines, missing:$miss): $err"; fi
}
expect_err() { expect_err_rc 1 "$@"; } # name, needle..., --, command...: exit 1

# ---- pickle checkpoints ----
mkdir -p "$tmp/data"
cp "$src/tests/data/image_opaque_gif.png" "$tmp/data/a.png"
echo "a cat" > "$tmp/data/a.txt"
for ext in ckpt pt pth bin; do
  printf 'PK\003\004 pickle data' > "$tmp/model.$ext"
  expect_err "inspect .$ext refused" "model.$ext" "convert it to .safetensors" -- "$bin" inspect "$tmp/model.$ext"
done
expect_err "sample --model .ckpt refused" "model.ckpt" "convert it to .safetensors" -- \
  "$bin" sample --model "$tmp/model.ckpt" --prompt "a cat" --out "$tmp/o" --quiet
expect_err "train --model .ckpt refused" "model.ckpt" "convert it to .safetensors" -- \
  "$bin" train --model "$tmp/model.ckpt" --data "$tmp/data" --out "$tmp/o.safetensors" --steps 1 --quiet
expect_err "sample --lora .pt refused" "model.pt" "convert it to .safetensors" -- \
  "$bin" sample --model "$shared/golden/tiny-sd1" --lora "$tmp/model.pt" --prompt "a cat" --out "$tmp/o" --steps 1 --quiet
# a diffusers folder holding only pickle weights
mkdir -p "$tmp/pickled"
for p in vae text_encoder scheduler model_index.json; do ln -s "$shared/golden/tiny-sd1/$p" "$tmp/pickled/$p"; done
mkdir -p "$tmp/pickled/unet"
cp "$shared/golden/tiny-sd1/unet/config.json" "$tmp/pickled/unet/"
printf 'PK\003\004' > "$tmp/pickled/unet/diffusion_pytorch_model.bin"
expect_err "folder of .bin weights refused" "unet" "safetensors" -- \
  "$bin" sample --model "$tmp/pickled" --prompt "a cat" --out "$tmp/o" --steps 1 --quiet

# ---- model folders with one hostile config ----
# part (folder name), config file name, regress prefix
check_configs() {
  local part=$1 file=$2 kind=$3 f n=0
  for f in "$reg"/config_"$kind"_*__*.json; do
    # three per parser keeps this test short; test_regress checks every file (and key) in C
    n=$((n+1)); [[ $n -gt 3 && "${SL_HOSTILE_ALL:-0}" != 1 ]] && break
    local base; base=$(basename "$f" .json); local key=${base#*__}
    local m="$tmp/m_$base"
    mkdir -p "$m"
    for p in unet vae text_encoder scheduler tokenizer; do
      [[ $p == "$part" ]] && continue
      if [[ $p == tokenizer ]]; then ln -s "$shared/sd15/tokenizer" "$m/tokenizer"
      else ln -s "$shared/golden/tiny-sd1/$p" "$m/$p"; fi
    done
    cp "$shared/golden/tiny-sd1/model_index.json" "$m/"
    mkdir -p "$m/$part"
    for w in "$shared/golden/tiny-sd1/$part"/*.safetensors; do [[ -e $w ]] && ln -s "$w" "$m/$part/"; done
    cp "$f" "$m/$part/$file"
    expect_err "sample: $part config with bad $key" "$part/$file" "$key" -- \
      "$bin" sample --model "$m" --prompt "a cat" --out "$tmp/o" --steps 1 --quiet
  done
}
check_configs unet config.json unet
check_configs vae config.json vae
check_configs text_encoder config.json clip
check_configs scheduler scheduler_config.json sched

# ---- hostile safetensors / images / adapters ----
for f in "$reg"/st_*.safetensors; do
  expect_err "inspect $(basename "$f")" "$(basename "$f")" -- "$bin" inspect --tensors "$f"
done
for f in "$reg"/adapter_{kohya_wrong_in,locon_on_linear,dora_wrong_mag,nan,meta_alpha_inf,not_safetensors}.safetensors; do
  expect_err "sample --lora $(basename "$f")" "$(basename "$f")" -- \
    "$bin" sample --model "$shared/golden/tiny-sd1" --lora "$f" --prompt "a cat" --out "$tmp/o" --steps 1 --quiet
done
# a training folder whose only images are hostile: skipped with warnings, then "no readable images"
mkdir -p "$tmp/baddata"
for f in "$reg"/image_*; do cp "$f" "$tmp/baddata/"; done
out=$("$bin" train --model "$shared/golden/tiny-sd1" --data "$tmp/baddata" --out "$tmp/bad.safetensors" \
      --steps 1 --resolution 32 --quiet 2>&1); rc=$?
if [[ $rc -eq 1 && "$out" != *"runtime error"* && "$out" != *"AddressSanitizer"* ]]; then ok "train on hostile images: exit 1"
else bad "train on hostile images (rc $rc): $out"; fi

# ---- output paths (issue 21 items 1, 5): refused up front, before the model loads ----
# The shipped model trains in about a second, so a late failure shows as step lines and
# leftovers (<out>.csv, <out>.state) that these checks look for. Runs without --quiet:
# the one line of stderr must be the error, with nothing about steps before it.
shp=$src/models/shapes64; neon=$src/tests/data/shapes64_styles/neon
train_fast=("$bin" train --model "$shp" --data "$neon" --steps 2 --rank 2 --seed 1)
mkdir -p "$tmp/outs/dir"
mkfifo "$tmp/outs/fifo"
node=""; mknod "$tmp/outs/null" c 1 3 2>/dev/null && node="$tmp/outs/null" # as /dev/null; never write to /dev itself
no_leftovers() { # name, out: the run created neither <out>.csv nor <out>.state
  if [[ ! -e "$2.csv" && ! -e "$2.state" ]]; then ok "$1: nothing written"; else bad "$1: left $(ls -d "$2".* 2>/dev/null)"; fi
}
expect_err "train --out FIFO" "--out $tmp/outs/fifo" "not a regular file (FIFO)" -- "${train_fast[@]}" --out "$tmp/outs/fifo"
if [[ -p "$tmp/outs/fifo" ]]; then ok "train --out FIFO: still a FIFO"; else bad "train --out FIFO: replaced"; mkfifo "$tmp/outs/fifo.2"; fi
no_leftovers "train --out FIFO" "$tmp/outs/fifo"
if [[ -n $node ]]; then
  expect_err "train --out device node" "--out $node" "not a regular file (character device)" -- "${train_fast[@]}" --out "$node"
  if [[ -c $node ]]; then ok "train --out device node: still a device"; else bad "train --out device node: replaced"; fi
else echo "skip train --out device node (mknod not permitted)"; fi
expect_err "train --out existing folder" "--out $tmp/outs/dir" "not a regular file (directory)" -- "${train_fast[@]}" --out "$tmp/outs/dir"
no_leftovers "train --out existing folder" "$tmp/outs/dir"
mkdir -p "$tmp/outs/cwd"
err=$(cd "$tmp/outs/cwd" && timeout 120 "${train_fast[@]}" --out "" 2>&1 >/dev/null); rc=$?
if [[ $rc -eq 1 && "$err" == *"--out"*"empty path"* && "$err" != *step* ]]; then ok "train --out \"\""; else bad "train --out \"\" (rc $rc): $err"; fi
if [[ -z "$(ls -A "$tmp/outs/cwd")" ]]; then ok "train --out \"\": no ./.csv or ./.state"; else bad "train --out \"\": left $(ls -A "$tmp/outs/cwd")"; fi
expect_err "train --out in a missing folder" "--out $tmp/outs/nope/a.safetensors" "does not exist" -- "${train_fast[@]}" --out "$tmp/outs/nope/a.safetensors"
expect_err "train --out under a FIFO" "$tmp/outs/fifo is not a folder" -- "${train_fast[@]}" --out "$tmp/outs/fifo/a.safetensors"
expect_err "train --log FIFO" "--log $tmp/outs/fifo" "FIFO" -- "${train_fast[@]}" --out "$tmp/outs/b.safetensors" --log "$tmp/outs/fifo"
no_leftovers "train --log FIFO" "$tmp/outs/b.safetensors"
mkdir -p "$tmp/outs/c.safetensors.state"
expect_err "train: <out>.state is a folder" "checkpoint of --out" "c.safetensors.state" "directory" -- "${train_fast[@]}" --out "$tmp/outs/c.safetensors"
mkdir -p "$tmp/outs/d.safetensors.csv"
expect_err "train: <out>.csv is a folder" "CSV log of --out" "d.safetensors.csv" -- "${train_fast[@]}" --out "$tmp/outs/d.safetensors"
[[ -e "$tmp/outs/d.safetensors.state" ]] && bad "train: <out>.csv is a folder: left a .state" || ok "train: <out>.csv is a folder: nothing written"
# names only known during training (sample images) reach the PNG writer's own check
mkdir -p "$tmp/outs/t"; mkfifo "$tmp/outs/t/sample-step000001-0.png"
expect_err "train: a sample image's name taken by a FIFO" "sample-step000001-0.png" "not a regular file (FIFO)" -- \
  "${train_fast[@]}" --steps 1 --sample-every 1 --sample-prompt "a circle" --sample-steps 1 --out "$tmp/outs/t/a.safetensors" --quiet
if [[ -p "$tmp/outs/t/sample-step000001-0.png" ]]; then ok "train: the FIFO is still a FIFO"; else bad "train: the FIFO was replaced"; fi
# an adapter for the other commands (and for the --lora cases below)
"${train_fast[@]}" --out "$tmp/outs/style.safetensors" --quiet >/dev/null 2>&1 || bad "train a small adapter"
expect_err "lora convert --out FIFO" "--out $tmp/outs/fifo" "FIFO" -- "$bin" lora convert "$tmp/outs/style.safetensors" --to peft --out "$tmp/outs/fifo" --quiet
if [[ -p "$tmp/outs/fifo" ]]; then ok "lora convert --out FIFO: still a FIFO"; else bad "lora convert --out FIFO: replaced"; fi
expect_err "probe --out FIFO" "--out $tmp/outs/fifo" "FIFO" -- "$bin" probe vae-decode --model "$shp" --in "$tmp/outs/style.safetensors" --out "$tmp/outs/fifo"
expect_err "sample --out FIFO" "--out $tmp/outs/fifo" "not a folder (FIFO)" -- "$bin" sample --model "$shp" --prompt "a circle" --steps 1 --out "$tmp/outs/fifo" --quiet
mkdir -p "$tmp/outs/s"; mkfifo "$tmp/outs/s/00000-42.png"
expect_err "sample: an image name taken by a FIFO" "--out $tmp/outs/s/00000-42.png" "FIFO" -- "$bin" sample --model "$shp" --prompt "a circle" --steps 1 --out "$tmp/outs/s"
if [[ -p "$tmp/outs/s/00000-42.png" ]]; then ok "sample: the FIFO is still a FIFO"; else bad "sample: the FIFO was replaced"; fi
expect_err "lora merge --out FIFO" "--out $tmp/outs/fifo" "not a folder (FIFO)" -- "$bin" lora merge --model "$shp" --lora "$tmp/outs/style.safetensors" --out "$tmp/outs/fifo" --quiet
expect_err "quantize --out FIFO" "--out $tmp/outs/fifo" "not a folder (FIFO)" -- "$bin" quantize --model "$shp" --out "$tmp/outs/fifo" --quiet
mkdir -p "$tmp/outs/q/vae"
expect_err "quantize --out with a folder for a link" "--out $tmp/outs/q/vae" "folder" -- "$bin" quantize --model "$shp" --out "$tmp/outs/q" --quiet
[[ -e "$tmp/outs/q/unet" ]] && bad "quantize --out with a folder for a link: wrote q/unet" || ok "quantize --out with a folder for a link: nothing written"

# ---- numeric options (issue 21 item 6): non-finite and absurd values refused with the range ----
for v in inf nan 1e30 0 -1; do
  expect_err_rc 2 "train --lr $v" "--lr" "(0, 1]" "'$v'" -- "${train_fast[@]}" --out "$tmp/outs/n.safetensors" --lr "$v"
done
for o in "--adam-beta2 1" "--noise-offset nan" "--dropout 1" "--min-snr-gamma inf" "--weight-decay 1e30" "--adam-eps 0" \
         "--caption-dropout 2" "--alpha -1" "--grad-clip inf" "--sample-cfg 1e30"; do
  set -- $o
  expect_err_rc 2 "train $o" "$1 expects a finite number in" -- "${train_fast[@]}" --out "$tmp/outs/n.safetensors" "$1" "$2"
done
no_leftovers "train with bad numbers" "$tmp/outs/n.safetensors"
for v in inf 1e30 -5; do
  expect_err_rc 2 "sample --cfg $v" "--cfg" "[0, 100]" -- "$bin" sample --model "$shp" --prompt "a circle" --cfg "$v" --out "$tmp/outs/o"
done
expect_err_rc 2 "sample --eta 5" "--eta" "[0, 1]" -- "$bin" sample --model "$shp" --prompt "a circle" --eta 5 --out "$tmp/outs/o"
expect_err_rc 2 "sample --lora-alpha inf" "--lora-alpha" -- "$bin" sample --model "$shp" --prompt "a circle" --lora-alpha inf --out "$tmp/outs/o"
expect_err_rc 2 "eval --cfg 1e30" "--cfg" "[0, 100]" -- "$bin" eval --model "$shp" --lora "$tmp/outs/style.safetensors" --style-dir "$neon" --cfg 1e30 --out "$tmp/outs/e"
expect_err_rc 2 "lora convert --alpha nan" "--alpha" -- "$bin" lora convert "$tmp/outs/style.safetensors" --to peft --out "$tmp/outs/p.safetensors" --alpha nan
printf 'a circle\n--prompt "a square" --cfg_scale 1e30\n' > "$tmp/outs/prompts.txt"
expect_err "prompts file --cfg_scale 1e30" "prompts.txt:2" "--cfg_scale" "[0, 100]" -- "$bin" sample --model "$shp" --prompts "$tmp/outs/prompts.txt" --out "$tmp/outs/o"

# ---- --lora FILE:WEIGHT (issue 21 items 6, 7): a number after the last ':' is the weight ----
for w in nan inf 1e300 1e30 -11; do
  expect_err "sample --lora FILE:$w" "--lora $tmp/outs/style.safetensors:$w" "bad weight" "[-10, 10]" -- \
    "$bin" sample --model "$shp" --prompt "a circle" --lora "$tmp/outs/style.safetensors:$w" --steps 1 --out "$tmp/outs/o" --quiet
done
expect_err "lora merge --lora FILE:nan" "--lora $tmp/outs/style.safetensors:nan" "bad weight" -- \
  "$bin" lora merge --model "$shp" --lora "$tmp/outs/style.safetensors:nan" --out "$tmp/outs/m" --quiet
expect_err "eval --lora FILE:1e300" "--lora $tmp/outs/style.safetensors:1e300" "bad weight" -- \
  "$bin" eval --model "$shp" --lora "$tmp/outs/style.safetensors:1e300" --style-dir "$neon" --out "$tmp/outs/e"
expect_err "sample --lora :0.5 (no name)" "--lora :0.5" "no file name" -- \
  "$bin" sample --model "$shp" --prompt "a circle" --lora ":0.5" --steps 1 --out "$tmp/outs/o" --quiet
expect_err "sample <lora:style:nan>" "<lora:style:nan>" "[-10, 10]" -- \
  "$bin" sample --model "$shp" --prompt "a circle <lora:style:nan>" --lora-dir "$tmp/outs" --steps 1 --out "$tmp/outs/o" --quiet
cp "$tmp/outs/style.safetensors" "$tmp/outs/a:b.safetensors"
for arg in "a:b.safetensors" "a:b.safetensors:0.5"; do
  if "$bin" sample --model "$shp" --prompt "a circle" --lora "$tmp/outs/$arg" --steps 1 --out "$tmp/outs/colon" --quiet >/dev/null 2>&1
  then ok "sample --lora $arg (a ':' in the path)"; else bad "sample --lora $arg (a ':' in the path)"; fi
done

# ---- hints name flags that exist (issue 21) ----
# every --flag a command's --help mentions is one of its options (prompts-file keys such
# as --cfg_scale are file syntax, not flags, and are skipped by the trailing-'_' check)
for c in train sample "lora convert" "lora merge" quantize probe eval inspect tokenize; do
  h=$($bin $c --help 2>&1); opts=$(printf '%s\n' "$h" | grep -oE '^  --[a-z0-9-]+' | tr -d ' ')
  miss=""
  for f in $(printf '%s\n' "$h" | grep -oE -- '--[a-z0-9-]+[_]?' | grep -v '_$' | sort -u); do
    printf '%s\n' "$opts" | grep -qx -- "$f" || miss="$miss $f"
  done
  if [[ -z $miss ]]; then ok "$c --help: every flag it names exists"; else bad "$c --help names$miss, not options of $c"; fi
done
# a library message naming a flag: the single-file hint is read by sample, train and probe users
hdr='{"model.diffusion_model.x":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}'
while (( ${#hdr} % 8 )); do hdr="$hdr "; done
{ printf "$(printf '\\x%02x' ${#hdr})\\0\\0\\0\\0\\0\\0\\0"; printf '%s' "$hdr"; printf '\0\0\0\0'; } > "$tmp/outs/single.safetensors"
err=$("$bin" sample --model "$tmp/outs/single.safetensors" --prompt "a circle" --out "$tmp/outs/o" 2>&1 >/dev/null)
flag=$(printf '%s\n' "$err" | grep -oE -- '--[a-z-]+ DIR' | head -1 | cut -d' ' -f1)
if [[ -n $flag ]] && "$bin" sample --help | grep -q -- "^  $flag DIR " && "$bin" train --help | grep -q -- "^  $flag DIR " &&
   "$bin" probe --help | grep -q -- "^  $flag DIR "
then ok "single-file hint names $flag, an option of sample, train and probe"; else bad "single-file hint '${flag:-none}' ($err)"; fi
echo "$((checks-fails)) passed, $fails failed"
[[ $fails -eq 0 ]]
