#!/usr/bin/env bash
# valgrind/run.sh - memcheck of a short `stylora train` (3 steps, checkpoint
# every step, then --resume to 4) and `stylora sample` (2 steps, the trained
# adapter applied) on the tiny fixture model (written by test_faults --fixture).
# Every run: --error-exitcode=1, definite leaks are errors, the suppressions in
# tests/valgrind.supp (each explained there) hide only libgomp / OpenBLAS
# thread-pool noise. OMP_NUM_THREADS=1 and OPENBLAS_NUM_THREADS=1 keep the run
# short and deterministic. It makes its own portable build ($1, default
# ./build-valgrind, -DSL_NATIVE=OFF): valgrind 3.19 cannot decode AVX-512, which
# -march=native emits on such CPUs (OpenBLAS picks its kernels by CPUID, which
# valgrind reports without AVX-512, so it needs nothing).
# Exit: 0 clean, 1 an error, 77 no valgrind.
set -u
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
src=$(cd "$here/../.." && pwd)
command -v valgrind >/dev/null || { echo "SKIPPED valgrind: not installed"; exit 77; }
build=${1:-$PWD/build-valgrind}
cmake -S "$src" -B "$build" -DSL_NATIVE=OFF -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null || exit 1
cmake --build "$build" -j"${SL_VALGRIND_JOBS:-2}" --target stylora test_faults >/dev/null || { echo "valgrind: build failed"; exit 1; }
build=$(cd "$build" && pwd)
export SL_SHARED_DIR=${SL_SHARED_DIR:-$src/../shared} OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 OMP_WAIT_POLICY=passive
tmp=$build/tmp_valgrind; rm -rf "$tmp"; mkdir -p "$tmp"
"$build/test_faults" --fixture "$tmp" || exit 1
vg=(valgrind --tool=memcheck --error-exitcode=1 --leak-check=full --errors-for-leak-kinds=definite
    --show-leak-kinds=definite --track-origins=yes --num-callers=30 --suppressions="$src/tests/valgrind.supp"
    --gen-suppressions=all)
common=(--model "$tmp/model" --data "$tmp/data" --out "$tmp/a.safetensors" --resolution 32 --rank 4 --batch 2
        --steps 4 --seed 7 --save-every 1 --quiet)
fail=0
run() { # name, command...
  local name=$1; shift
  local start; start=$(date +%s)
  if "${vg[@]}" --log-file="$tmp/$name.vg.log" "$@" >"$tmp/$name.out" 2>&1; then
    echo "ok   valgrind $name ($(( $(date +%s) - start )) s): $(grep -m1 'ERROR SUMMARY' "$tmp/$name.vg.log" | sed 's/^==[0-9]*== //')"
  else
    echo "FAIL valgrind $name: see $tmp/$name.vg.log"
    grep -m3 -E 'ERROR SUMMARY|definitely lost|Invalid|uninitialised' "$tmp/$name.vg.log" | sed 's/^/     /'
    fail=1
  fi
}
# a whole run (checkpoint every step), then --resume of the finished run (reads the state
# file, saves again), then sampling with the trained adapter
run train "$build/stylora" train "${common[@]}"
run resume "$build/stylora" train "${common[@]}" --resume
run sample "$build/stylora" sample --model "$tmp/model" --lora "$tmp/a.safetensors:0.8" --prompt "a red square" \
  --steps 2 --width 32 --height 32 --out "$tmp/samples" --seed 3 --quiet
exit $fail
