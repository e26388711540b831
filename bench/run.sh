#!/usr/bin/env bash
# run.sh - the issue-11 benchmark: stylora and the PyTorch reference side by side in ONE run.
#
#   bench/run.sh [--quick] [--sd15-full] [--update-readme]
#     --quick          the shipped model (models/shapes64, its real weights) only: ~1-2 minutes
#     (default)        also SD-1.5 shape (configs in $SL_SHARED_DIR/sd15, seeded random weights,
#                      256x256 images = 32x32 latents, batch 1): several minutes, ~7 GB peak
#     --sd15-full      also full fine-tuning at SD-1.5 shape (~14 GB per side; runs one at a time)
#     --update-readme  writes the table into bench/README.md between its run.sh markers
#   Environment: BUILD (default build/, made by tools/build.sh), THREADS (default nproc),
#   SL_SHARED_DIR (default ../shared), TORCH_OMP_WAIT_POLICY (default passive, see below),
#   ONLY (an extended regex over LABEL.SIDE, e.g. 'sd15' or 'vae|text|\.stylora$': runs only those),
#   SD15_ITERS (timed calls per SD-1.5 benchmark after the warm-up, default 2).
#
# Benchmarks (each side of each one is its own process, so peak RSS is per process):
#   lora_train_step   forward, MSE, backward into LoRA A/B (rank 8, alpha 8, to_q/to_k/to_v/to_out.0),
#                     AdamW                       bench_train          / bench_torch.py train
#   lora_nf4_train_step  the LoRA step on an NF4 frozen base (QLoRA; `stylora train --base nf4`:
#                     attn,ff,proj linears in NF4), stylora only (no NF4 twin on the torch side)
#                                                 bench_train --base nf4
#   lora_fp16_train_step  the LoRA step on a binary16 frozen base (`stylora train --base fp16`:
#                     every U-Net linear and conv weight in binary16), stylora only; report.py
#                     sets it beside the fp32 LoRA twin (RSS and time ratios)
#                                                 bench_train --base fp16
#   lora_bf16_train_step  the same on a bfloat16 base (`--base bf16`: the frozen products on the
#                     bf16 GEMM kernel, LoRA and AdamW in fp32), stylora only, beside the fp32 twin
#                                                 bench_train --base bf16
#   full_train_step   the same with every U-Net weight trainable (shapes64; SD-1.5 with --sd15-full)
#   sample_step       one guided step: U-Net on batch 2 + CFG + Euler update; base, adapter merged,
#                     adapter unmerged           bench_sample --mode   / bench_torch.py sample --mode
#   sample_bf16_step  the base and unmerged steps on a bfloat16 base, stylora only, beside the
#                     fp32 twin                   bench_sample --mode --base bf16
#   vae_decode        one latent (16x16 shapes64, 32x32 SD)  bench_infer vae / bench_torch.py vae
#   text_encoder      77 tokens, B=1              bench_infer textenc / bench_torch.py textenc
#   sgemm             OpenBLAS SGEMM 1024^3 with THREADS threads (the reference rate)  bench_sgemm
#   contended         last, after the table: bench/bench_contended.sh 300 (the demo's training
#                     idle, beside a busy loop, two at once; prints train_contended_ratio)
# Threads: OMP_NUM_THREADS=THREADS for stylora, torch.set_num_threads(THREADS) for PyTorch.
# OMP_WAIT_POLICY=passive for both sides: on this shared machine (other jobs keep the cores
# busy) PyTorch's default spinning OpenMP workers are up to 50x slower on small ops, which
# would flatter stylora; set TORCH_OMP_WAIT_POLICY=active to measure PyTorch's default.
# SD-1.5-size runs hold the /tmp/sd15.lock flock (other jobs use it to share the 24 GiB).
# Output: progress on stderr, then the table and one `name: value` line per figure on stdout.
# FLOPs: see bench/README.md (counted from layer shapes by the C programs).
set -uo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
b=${BUILD:-$root/build}
[[ "$b" = /* ]] || b="$root/$b"
quick=0 sd15_full=0 update=0
for a in "$@"; do
  case "$a" in
    --quick) quick=1 ;;
    --sd15-full) sd15_full=1 ;;
    --update-readme) update=1 ;;
    -h|--help) sed -n '2,30p' "$0"; exit 0 ;;
    *) echo "run.sh: unknown option '$a'" >&2; exit 2 ;;
  esac
done
for p in bench_sgemm bench_train bench_sample bench_infer; do
  [[ -x "$b/$p" ]] || { echo "run.sh: $b/$p not built (tools/build.sh, or BUILD=dir)" >&2; exit 1; }
done
[[ -x /usr/bin/python3 ]] && /usr/bin/python3 -c 'import torch' 2>/dev/null ||
  { echo "run.sh: needs /usr/bin/python3 with torch (tools/deps.sh --torch)" >&2; exit 1; }
shared=${SL_SHARED_DIR:-$root/../shared}
threads=${THREADS:-$(nproc)}
export OMP_NUM_THREADS=$threads
c_env=(env OMP_WAIT_POLICY=passive)
t_env=(env OMP_WAIT_POLICY="${TORCH_OMP_WAIT_POLICY:-passive}")
torch_py=(/usr/bin/python3 "$root/tests/reference/bench_torch.py")
ship=$root/models/shapes64
sd15=$shared/sd15
out=$(mktemp -d /tmp/stylora-bench.XXXXXX)
res=$out/results.txt
: >"$res"
started=$(date -u '+%Y-%m-%d %H:%M UTC')
load0=$(cut -d' ' -f1-3 /proc/loadavg)
t_start=$SECONDS

# run LABEL SIDE [--lock] CMD...: runs CMD, keeps its RESULT lines as "LABEL SIDE RESULT ...".
run() {
  local label=$1 side=$2 lock=()
  shift 2
  [[ -z "${ONLY:-}" || "$label.$side" =~ $ONLY || "$label" == sgemm* ]] || return 0
  if [[ "$1" == --lock ]]; then lock=(flock /tmp/sd15.lock); shift; fi
  local log="$out/$label.$side.log" t0=$SECONDS
  printf '%-34s %-8s ' "$label" "$side" >&2
  if "${lock[@]}" "$@" >"$log" 2>&1; then
    grep '^RESULT ' "$log" | sed "s/^/$label $side /" >>"$res"
    echo "ok ($((SECONDS - t0)) s)" >&2
  else
    echo "FAILED ($((SECONDS - t0)) s): $(tail -n 2 "$log" | tr '\n' ' ')" >&2
  fi
}

# both LABEL LOCK "C ARGS" "TORCH ARGS": the stylora program and its PyTorch twin.
both() {
  local label=$1 lock=$2 cargs=$3 targs=$4
  # shellcheck disable=SC2086
  run "$label" stylora $lock "${c_env[@]}" $cargs
  # shellcheck disable=SC2086
  run "$label" torch $lock "${t_env[@]}" "${torch_py[@]}" $targs --threads "$threads"
}

echo "bench/run.sh: $threads threads, build $b, logs in $out" >&2
run sgemm stylora "${c_env[@]}" "$b/bench_sgemm" --threads "$threads" --iters 20

suite() { # suite SIZE LOCK MODELARGS TRAIN_ITERS ITERS
  local size=$1 lock=$2 m=$3 ti=$4 it=$5
  both "lora_train_step.$size" "$lock" "$b/bench_train $m --iters $ti" "train $m --iters $ti"
  # shellcheck disable=SC2086
  run "lora_nf4_train_step.$size" stylora $lock "${c_env[@]}" "$b/bench_train" $m --iters "$ti" --base nf4
  # shellcheck disable=SC2086
  run "lora_fp16_train_step.$size" stylora $lock "${c_env[@]}" "$b/bench_train" $m --iters "$ti" --base fp16
  # shellcheck disable=SC2086
  run "lora_bf16_train_step.$size" stylora $lock "${c_env[@]}" "$b/bench_train" $m --iters "$ti" --base bf16
  if [[ $size == shapes64 || $sd15_full == 1 ]]; then
    both "full_train_step.$size" "$lock" "$b/bench_train $m --iters $ti --full" "train $m --iters $ti --full"
  else # the full fine-tuning memory plan without allocating it
    run "full_train_step.$size" stylora "${c_env[@]}" "$b/bench_train" $m --full --plan-only
  fi
  for mode in base merged unmerged; do
    both "sample_step.$size.$mode" "$lock" "$b/bench_sample $m --iters $it --mode $mode" \
      "sample $m --iters $it --mode $mode"
  done
  for mode in base unmerged; do
    # shellcheck disable=SC2086
    run "sample_bf16_step.$size.$mode" stylora $lock "${c_env[@]}" "$b/bench_sample" $m --iters "$it" --mode $mode --base bf16
  done
  both "vae_decode.$size" "$lock" "$b/bench_infer vae $m --iters $it" "vae $m --iters $it"
  both "text_encoder.$size" "$lock" "$b/bench_infer textenc $m --iters $((it * 2))" "textenc $m --iters $((it * 2))"
}

suite shapes64 "" "--model $ship" 10 20
if [[ $quick == 0 ]]; then
  si=${SD15_ITERS:-2}
  suite sd15 --lock "--model $sd15 --random --res 256" "$si" "$si"
fi
# the reference rate again at the end (the machine is shared: report.py takes the better of the two)
run sgemm_end stylora "${c_env[@]}" "$b/bench_sgemm" --threads "$threads" --iters 20

{
  echo "started=$started"
  echo "load_start=$load0"
  echo "load_end=$(cut -d' ' -f1-3 /proc/loadavg)"
  echo "wall_s=$((SECONDS - t_start))"
  echo "threads=$threads"
  echo "cpu=$(lscpu | sed -n 's/^Model name:[[:space:]]*//p' | head -n1)"
  echo "nproc=$(nproc)"
  echo "command=bench/run.sh $*"
  echo "torch=$(/usr/bin/python3 -c 'import torch; print(torch.__version__)' 2>/dev/null)"
  echo "torch_wait_policy=${TORCH_OMP_WAIT_POLICY:-passive}"
} >"$out/meta.txt"
args=("$res" "$out/meta.txt")
[[ $update == 1 ]] && args+=(--readme "$root/bench/README.md")
python3 "$root/bench/report.py" "${args[@]}"
# issue 18's "Under load": the demo's training idle, beside a busy loop, and two at once
# (train_contended_ratio, train_pair_ratio), measured in this same run
if [[ -z "${ONLY:-}" || "contended" =~ $ONLY ]]; then
  echo "bench/run.sh: the demo's training under load (bench/bench_contended.sh 300)" >&2
  bash "$root/bench/bench_contended.sh" 300
fi
