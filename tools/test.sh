#!/usr/bin/env bash
# test.sh - the README's test command: installs what is missing, builds, and
# runs every test; then builds with AddressSanitizer + UndefinedBehaviorSanitizer
# and runs the whole suite again. Exits non-zero if anything fails.
#   tools/test.sh            everything
#   tools/test.sh --fast     skip the sanitizer pass
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
bash tools/deps.sh --test
jobs=$(nproc)
echo "== release build =="
bash tools/build.sh build
ntests=$(cd build && ctest -N | awk '/Total Tests:/ {print $3}')
if [[ "${ntests:-0}" -eq 0 ]]; then echo "stylora: no tests were found: treating as a failure" >&2; exit 1; fi
(cd build && ctest --output-on-failure -j"$jobs")
echo "== MPI build (data-parallel training, 2 ranks) =="
bash tests/mpi/run.sh
if [[ "${1:-}" != "--fast" ]]; then
  echo "== sanitizer build (address,undefined) =="
  bash tools/build.sh build-asan -DSL_SANITIZE=address,undefined -DCMAKE_BUILD_TYPE=RelWithDebInfo
  # Leak checking stays on; OpenBLAS/OpenMP thread pools are process-lifetime.
  (cd build-asan && SL_SANITIZER_BUILD=1 ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 \
     UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 ctest --output-on-failure -j"$jobs")
fi
echo "stylora: all tests passed"
