#!/usr/bin/env bash
# cli_fuzz.sh - a short libFuzzer run of every target in tests/fuzz/ (10 s each,
# SL_FUZZ_SECONDS to change), through tests/fuzz/run.sh. Needs clang with
# libFuzzer (Debian: clang-14 libclang-rt-14-dev libomp-14-dev); without it this
# says what is missing and exits 77 (CTest shows it as skipped, not passed). Objects are kept in $SL_BINARY_DIR/fuzz-build, so
# only the first run compiles the library (a few minutes on 2 cores).
set -u
src=${SL_SOURCE_DIR:?}
if [[ "${SL_SANITIZER_BUILD:-0}" == 1 ]]; then
  echo "SKIPPED cli_fuzz: the fuzz targets carry their own sanitizers; the release pass runs them"
  exit 77
fi
export SL_FUZZ_OUT=${SL_BINARY_DIR:-.}/fuzz-build
# Every target (SL_FUZZ_TARGETS unset = all), from a fixed seed so CI runs are repeatable
# (libFuzzer's run count within the time still depends on timing).
export SL_FUZZ_SEED=${SL_FUZZ_SEED:-1}
bash "$src/tests/fuzz/run.sh" "${SL_FUZZ_SECONDS:-10}"
rc=$?
if [[ $rc -eq 77 ]]; then
  echo "SKIPPED cli_fuzz: no clang with libFuzzer and OpenMP (install clang-14 libclang-rt-14-dev libomp-14-dev)"
  exit 77
fi
exit $rc
