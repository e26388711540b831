#!/usr/bin/env bash
# bench_mpi.sh - data-parallel scaling on this machine (issue 13): step time,
# images/s and the all-reduce share of the step for 1 and 2 ranks, on the tiny
# fixture model (tests/fixture_tiny.h) at --resolution RES (default 64).
# Needs the -DSL_MPI=ON build (tests/mpi/run.sh) and mpirun.
#   bench/bench_mpi.sh [BUILD_DIR] [STEPS] [RES]
# Environment: MODEL=DIR DATA=DIR train that diffusers folder on those images
# instead of the fixture (e.g. an SD-1.5-shape folder: docs/DISTRIBUTED.md
# "Scaling"); LR (default 1e-3); SUM=0 skips the MPI_SUM row; LOGDIR=DIR keeps
# each row's full log there.
# Rows (the same machine's cores split between ranks, so the fair comparison
# is at equal total threads):
#   1 rank  x batch 2, 2 threads     one process, the whole global batch
#   2 ranks x batch 1, 1 thread each the same global batch, data-parallel
#   1 rank  x batch 1, 1 thread      per-rank work of the row above, no communication
# "ms/step" is the time in the training step (forward, backward, all-reduce,
# AdamW) averaged over the run; "all-reduce" is the time inside the gradient
# reduction, which includes waiting for the slower rank.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
bdir=${1:-$root/build-mpi}; steps=${2:-30}; res=${3:-64}
bin=$bdir/stylora; helper=$bdir/test_dist
export SL_SHARED_DIR=${SL_SHARED_DIR:-$root/../shared} OMP_WAIT_POLICY=passive
[[ -x "$bin" && -x "$helper" ]] || { echo "bench_mpi: build $bdir first (tests/mpi/run.sh)" >&2; exit 1; }
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
model=${MODEL:-$tmp/model}; data=${DATA:-$tmp/data}; logdir=${LOGDIR:-$tmp}
[[ -n "${MODEL:-}" ]] || "$helper" --fixture "$tmp" >/dev/null
common=(--model "$model" --data "$data" --resolution "$res" --rank 8 --steps "$steps" --lr "${LR:-1e-3}" --seed 1 --cache-dir "$tmp/cache")
line() { # label, ranks, threads, batch, mode
  local out
  out=$(STYLORA_ALLREDUCE=$5 mpirun --allow-run-as-root --oversubscribe --bind-to none -np "$2" \
        -x OMP_NUM_THREADS="$3" -x OMP_WAIT_POLICY -x STYLORA_ALLREDUCE \
        "$bin" train "${common[@]}" --batch "$4" --out "$tmp/a_$2_$4.safetensors" 2>&1 | tr '\r' '\n' |
        tee "$logdir/row_$2x$4_$3t_$5.log" | grep 'data-parallel: [0-9]* ranks,' | tail -1)
  # "data-parallel: 2 ranks, 97.9 ms per step, all-reduce 39.40 ms per step (40.3%), 20.44 images/s"
  local ms red pct ips
  ms=$(sed -E 's/.* ranks, ([0-9.]+) ms per step.*/\1/' <<<"$out")
  red=$(sed -E 's/.*all-reduce ([0-9.]+) ms.*/\1/' <<<"$out")
  pct=$(sed -E 's/.*\(([0-9.]+)%\).*/\1/' <<<"$out")
  ips=$(sed -E 's/.*, ([0-9.]+) images\/s.*/\1/' <<<"$out")
  printf "%-34s %9s %12s %8s %9s\n" "$1" "$ms" "$red" "$pct%" "$ips"
}
"$bin" train "${common[@]}" --batch 1 --steps 1 --out "$tmp/warm.safetensors" --quiet >/dev/null # fills the cache
echo "bench_mpi: ${MODEL:-tiny fixture} at ${res}x${res}, LoRA rank 8 on attn, $steps steps, $(nproc) cores"
printf "%-34s %9s %12s %8s %9s\n" "configuration" "ms/step" "all-reduce" "share" "images/s"
line "1 rank  x batch 2, 2 threads" 1 2 2 ordered
line "2 ranks x batch 1, 1 thread each" 2 1 1 ordered
[[ "${SUM:-1}" == 0 ]] || line "2 ranks x batch 1, MPI_SUM" 2 1 1 sum
line "1 rank  x batch 1, 1 thread" 1 1 1 ordered
