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
(cd "$bdir" && ctest -R '^(test_dist|cli_mpi)$' --output-on-failure)
