#!/usr/bin/env bash
# tsan/run.sh - ThreadSanitizer run of the threaded kernels: builds the library
# and test_nn_forward, test_nn_grad, test_train with clang -fsanitize=thread
# (CMake's SL_SANITIZE=thread, in $SL_TSAN_BUILD, default ./build-tsan) and runs
# them with 2 OpenMP threads. LLVM's libomp is not built with TSan, so its own
# barriers and task queues look like races; the Archer OMPT tool (libarcher.so
# from libomp-14-dev) tells TSan about OpenMP's happens-before edges, which
# removes those false reports. OpenBLAS runs single-threaded (its pthread pool is
# not instrumented; our code calls it from inside OpenMP regions anyway).
# gcc's libtsan exists here too, but libgomp is not TSan-aware and has no Archer.
# Exit: 0 clean, 1 a race or a test failure, 77 no clang/TSan available.
set -u
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
src=$(cd "$here/../.." && pwd)
build=${SL_TSAN_BUILD:-$PWD/build-tsan}
shared=${SL_SHARED_DIR:-$src/../shared}
cc=${CC:-$(command -v clang-14 || command -v clang || true)}
[[ -n "$cc" ]] || { echo "SKIPPED tsan: no clang"; exit 77; }
tests=${SL_TSAN_TESTS:-"test_nn_forward test_nn_grad test_train"}
cmake -S "$src" -B "$build" -DCMAKE_C_COMPILER="$cc" -DCMAKE_BUILD_TYPE=RelWithDebInfo \
  -DSL_SANITIZE=thread -DSL_SHARED_DIR="$shared" >/dev/null || exit 1
cmake --build "$build" -j"${SL_TSAN_JOBS:-2}" --target $tests stylora >/dev/null || { echo "tsan: build failed"; exit 1; }
archer=""
for a in /usr/lib/llvm-14/lib/libarcher.so "$(dirname "$(readlink -f "$cc")")/../lib/libarcher.so"; do
  [[ -f "$a" ]] && { archer=$a; break; }
done
[[ -n "$archer" ]] || echo "tsan: libarcher.so not found: OpenMP-internal false positives are likely"
export OMP_TOOL_LIBRARIES=$archer OMP_NUM_THREADS=2 OMP_WAIT_POLICY=passive OPENBLAS_NUM_THREADS=1
export TSAN_OPTIONS="halt_on_error=1 second_deadlock_stack=1 history_size=4 suppressions=$here/tsan.supp"
export SL_SHARED_DIR=$shared SL_SOURCE_DIR=$src SL_BINARY_DIR=$build SL_STYLORA=$build/stylora
fail=0
for t in $tests; do
  start=$(date +%s)
  if (cd "$build" && "./$t" >"$build/$t.tsan.log" 2>&1); then
    echo "ok   $t under TSan ($(( $(date +%s) - start )) s)"
  else
    echo "FAIL $t under TSan: see $build/$t.tsan.log"
    grep -m5 -E "WARNING: ThreadSanitizer|FAIL|SUMMARY" "$build/$t.tsan.log" | sed 's/^/     /'
    fail=1
  fi
done
exit $fail
