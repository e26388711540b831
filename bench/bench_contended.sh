#!/usr/bin/env bash
# bench_contended.sh - the demo's training under load, idle and loaded back to back in ONE run
# (issue 18, "Under load"): how much of its idle speed `stylora train` keeps when another
# CPU-bound process shares the machine.
#
#   bench/bench_contended.sh [STEPS]        (default 300; the pair runs STEPS/3 steps each)
#   Environment: BUILD (default build/), THREADS (default: unset, stylora's own choice),
#   NICE (e.g. -10, needs root: every process of the bench, the busy loop too, at that
#   niceness, so that other jobs on a shared machine weigh less against them)
#
# Three runs of tools/demo.sh's training command (models/shapes64, tests/data/shapes64_styles/neon,
# batch 4, no samples or checkpoints), after one warm-up run that fills the latent cache:
#   idle       alone;
#   contended  beside one busy loop (`sh -c 'while :; do :; done'`), which is killed after;
#   pair       two trainings at once (each its own output), no busy loop.
# A rate is the trainer's own final `it/s` (steps / elapsed training time, excluding loading).
# Output: progress on stderr; on stdout one `name: value` line per figure:
#   train_idle_its, train_contended_its, train_contended_ratio (contended / idle),
#   train_pair_its (the slower of the two), train_pair_ratio (that / idle),
#   and load_before / load_after (/proc/loadavg's 1-minute figure): the machine is shared,
#   so the idle figure is only as idle as the machine was; ratios measured in one run are
#   what to compare.
set -uo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
b=${BUILD:-$root/build}
[[ "$b" = /* ]] || b="$root/$b"
steps=${1:-300}
[[ "$steps" =~ ^[1-9][0-9]*$ ]] || { echo "bench_contended.sh: STEPS must be a positive integer, got '$steps'" >&2; exit 2; }
bin=$b/stylora
[[ -x "$bin" ]] || { echo "bench_contended.sh: $bin not built (tools/build.sh, or BUILD=dir)" >&2; exit 1; }
[[ -n "${THREADS:-}" ]] && export OMP_NUM_THREADS=$THREADS
if [[ -n "${NICE:-}" ]]; then
  renice -n "$NICE" -p $$ >/dev/null || { echo "bench_contended.sh: cannot renice to NICE=$NICE" >&2; exit 1; }
fi
work=$(mktemp -d /tmp/stylora-contended.XXXXXX)
busy=
cleanup() { [[ -n "$busy" ]] && kill "$busy" 2>/dev/null; rm -rf "$work"; }
trap cleanup EXIT
trap 'exit 130' INT TERM

# train NAME STEPS: the demo's training command; prints the final it/s.
train() {
  "$bin" train --model "$root/models/shapes64" --data "$root/tests/data/shapes64_styles/neon" --out "$work/$1.safetensors" \
    --steps "$2" --batch 4 --rank 8 --lr 1e-3 --targets attn,proj,ff,resnet --seed 1 --cache-dir "$work/cache" \
    --noise-offset 0.3 --caption-dropout 0.1 --min-snr-gamma 5 >"$work/$1.log" 2>&1 ||
    { echo "bench_contended.sh: training '$1' failed, log:" >&2; cat "$work/$1.log" >&2; return 1; }
  # the last progress line's rate: `X it/s`, or `X s/it` below one step a second
  tr '\r' '\n' <"$work/$1.log" | grep -E '^train +[0-9]+/' | tail -1 |
    awk '{ for (i = 2; i <= NF; i++) if ($i == "it/s") print $(i - 1); else if ($i == "s/it") print 1 / $(i - 1) }'
}
load() { cut -d' ' -f1 /proc/loadavg; }

load_before=$(load)
echo "bench_contended.sh: warm-up (fills the latent cache)" >&2
train warm 5 >/dev/null || exit 1
echo "bench_contended.sh: idle, $steps steps" >&2
idle=$(train idle "$steps") || exit 1
echo "bench_contended.sh: beside one busy loop, $steps steps" >&2
sh -c 'while :; do :; done' &
busy=$!
cont=$(train contended "$steps") || exit 1
kill "$busy"
wait "$busy" 2>/dev/null
busy=
psteps=$(( (steps + 2) / 3 ))
echo "bench_contended.sh: two trainings at once, $psteps steps each" >&2
train pair1 "$psteps" >"$work/pair1.its" &
p1=$!
p2its=$(train pair2 "$psteps") || exit 1
wait "$p1" || exit 1
p1its=$(cat "$work/pair1.its")
pair=$(awk -v a="$p1its" -v b="$p2its" 'BEGIN { print (a < b ? a : b) }')
load_after=$(load)
awk -v i="$idle" -v c="$cont" -v p="$pair" -v p1="$p1its" -v p2="$p2its" -v s="$steps" -v lb="$load_before" \
  -v la="$load_after" -v n="$(nproc)" -v ni="${NICE:-0}" 'BEGIN {
  printf "steps: %d\ncpus: %d\nnice: %s\nload_before: %s\nload_after: %s\n", s, n, ni, lb, la
  printf "train_idle_its: %.2f\ntrain_contended_its: %.2f\ntrain_contended_ratio: %.3f\n", i, c, c / i
  printf "train_pair_its: %.2f (%.2f and %.2f)\ntrain_pair_ratio: %.3f\n", p, p1, p2, p / i }'
