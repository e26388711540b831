#!/usr/bin/env bash
# build.sh - configures and builds stylora into build/ (or $1 with extra CMake args after it).
#   tools/build.sh                       release build in build/
#   tools/build.sh build-asan -DSL_SANITIZE=address,undefined
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
dir=${1:-build}
shift || true
[[ "$dir" = /* ]] || dir="$root/$dir"
cmake -S "$root" -B "$dir" -DCMAKE_BUILD_TYPE=Release "$@" >/dev/null
cmake --build "$dir" -j"$(nproc)"
