#!/usr/bin/env bash
# tests/mpi/run.sh - the MPI build and its tests (issue 13): configures
# build-mpi with -DSL_MPI=ON (Open MPI: Debian's libopenmpi-dev + openmpi-bin),
# builds stylora and test_dist, and runs test_dist (simulated ranks, no MPI)
# and cli_mpi (real mpirun, 2 ranks). About a minute on a 2-core machine.
#   tests/mpi/run.sh [BUILD_DIR]     (default: build-mpi)
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
bdir=${1:-$root/build-mpi}
if ! command -v mpirun >/dev/null 2>&1 || ! command -v mpicc >/dev/null 2>&1; then
  echo "tests/mpi/run.sh: mpirun/mpicc not found: install libopenmpi-dev openmpi-bin" >&2
  exit 1
fi
cmake -S "$root" -B "$bdir" -DCMAKE_BUILD_TYPE=Release -DSL_MPI=ON >/dev/null
cmake --build "$bdir" -j"$(nproc)" --target stylora test_dist
log=$(cd "$bdir" && ctest -R '^(test_dist|cli_mpi)$' --output-on-failure 2>&1) || { echo "$log"; exit 1; }
echo "$log"
# Here both must really run: a skip (exit 77) is a failure of this script.
if grep -q "(Skipped)" <<<"$log" || ! grep -q "100% tests passed, 0 tests failed out of 2" <<<"$log"; then
  echo "tests/mpi/run.sh: test_dist and cli_mpi did not both run and pass" >&2; exit 1
fi
