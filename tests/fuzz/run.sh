#!/usr/bin/env bash
# run.sh [seconds] - builds every libFuzzer target in tests/fuzz/ against the
# library sources with clang (-fsanitize=fuzzer,address,undefined) and runs
# each for N seconds (default 20) on a copy of its seed corpus
# (tests/fuzz/corpus/<target>/). Exits non-zero if a target crashes, leaks,
# hangs (over 10 s on one input) or fails to build; the crashing input is left
# in $SL_FUZZ_OUT/crashes/<target>/ (copy it to tests/data/regress/).
#
# Environment: CC (default clang-14, else clang), SL_FUZZ_OUT (build + work
# folder, default ./fuzz-build), SL_SHARED_DIR (default <repo>/../shared, else
# <repo>/tests/data/shared),
# SL_FUZZ_TARGETS (space-separated subset), SL_FUZZ_JOBS (parallel compiles, 2).
# Exit 77 when the compiler cannot build a libFuzzer binary (cli_fuzz.sh skips).
set -u
secs=${1:-20}
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
src=$(cd "$here/../.." && pwd)
out=${SL_FUZZ_OUT:-$PWD/fuzz-build}
if [[ -z "${SL_SHARED_DIR:-}" ]]; then
  if [[ -e $src/../shared/golden/tiny-sd1/model_index.json ]]; then shared=$src/../shared; else shared=$src/tests/data/shared; fi
else shared=$SL_SHARED_DIR; fi
jobs=${SL_FUZZ_JOBS:-2}
export OMP_WAIT_POLICY=passive OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1
if [[ -z "${CC:-}" ]]; then
  if command -v clang-14 >/dev/null; then CC=clang-14; elif command -v clang >/dev/null; then CC=clang; else
    echo "run.sh: no clang found"; exit 77; fi
fi
mkdir -p "$out/obj" "$out/bin" "$out/crashes" "$out/work"
# Can this compiler link a libFuzzer binary?
printf '#include <stdint.h>\n#include <stddef.h>\nint LLVMFuzzerTestOneInput(const uint8_t *d, size_t n) { (void)d; (void)n; return 0; }\n' > "$out/probe.c"
if ! $CC -fsanitize=fuzzer "$out/probe.c" -o "$out/probe" >/dev/null 2>&1; then
  echo "run.sh: $CC cannot build libFuzzer binaries (install clang-14 libclang-rt-14-dev)"; exit 77
fi
# ... with OpenMP? (clang-14 finds omp.h only with Debian's libomp-14-dev)
printf '#include <omp.h>\nint main(void) { return omp_get_max_threads() < 1; }\n' > "$out/probe_omp.c"
if ! $CC -fopenmp "$out/probe_omp.c" -o "$out/probe_omp" >/dev/null 2>&1; then
  echo "run.sh: $CC cannot build OpenMP programs: omp.h or libomp missing (install libomp-14-dev)"; exit 77
fi
san="-fsanitize=address,undefined -fno-sanitize-recover=all -fno-omit-frame-pointer"
cflags="-std=gnu11 -O1 -g -fopenmp $san -Wall -Wextra -Wno-unknown-pragmas -Wno-pass-failed -I$src -I/usr/include/stb
 $(pkg-config --cflags openblas libcjson libpcre2-8 libpng) -DSL_FUZZ_SHARED_DEFAULT=\"$shared\""
libs="$(pkg-config --libs openblas libcjson libpcre2-8 libpng) -lz -lm"

# Library objects, rebuilt when the source or a header it includes changed.
stale() { # obj src dep
  [[ -f "$1" && -f "$3" ]] || return 0
  [[ "$2" -nt "$1" ]] && return 0
  local f
  for f in $(sed -e 's/^[^:]*://' -e 's/\\$//' "$3"); do [[ "$f" -nt "$1" ]] && return 0; done
  return 1
}
todo=()
objs=()
for s in "$src"/{core,nn,textenc,vae,unet,styles,pipeline}/*.c; do
  o="$out/obj/$(echo "${s#$src/}" | tr / _).o"
  objs+=("$o")
  stale "$o" "$s" "${o%.o}.d" && todo+=("$s:$o")
done
if ((${#todo[@]})); then
  echo "run.sh: compiling ${#todo[@]} library sources with $CC"
  export CC cflags
  printf '%s\n' "${todo[@]}" | xargs -P "$jobs" -I{} bash -c 's=${1%%:*}; o=${1#*:}; $CC $cflags -fsanitize=fuzzer-no-link -MMD -MF "${o%.o}.d" -c "$s" -o "$o" || { rm -f "$o"; exit 1; }' _ {} \
    || { echo "run.sh: library build failed"; exit 1; }
fi
rm -f "$out/libsl_fuzz.a"
ar rcs "$out/libsl_fuzz.a" "${objs[@]}" || exit 1

targets=${SL_FUZZ_TARGETS:-$(cd "$here" && ls fuzz_*.c | sed 's/\.c$//')}
fail=0
for t in $targets; do
  if ! $CC $cflags -fsanitize=fuzzer "$here/$t.c" "$out/libsl_fuzz.a" $libs -o "$out/bin/$t"; then
    echo "FAIL $t: build"; fail=1; continue
  fi
done
((fail)) && exit 1
for t in $targets; do
  work="$out/work/$t"; crash="$out/crashes/$t"
  rm -rf "$work"; mkdir -p "$work" "$crash"
  [[ -d "$here/corpus/$t" ]] && cp -r "$here/corpus/$t/." "$work/"
  dict=(); [[ -f "$here/$t.dict" ]] && dict=(-dict="$here/$t.dict")
  start=$(date +%s)
  SL_SHARED_DIR=$shared SL_FUZZ_TMP="$out/work" "$out/bin/$t" "$work" "${dict[@]}" ${SL_FUZZ_SEED:+-seed=$SL_FUZZ_SEED} -max_total_time="$secs" \
    -timeout=10 -rss_limit_mb=2048 -max_len=65536 -artifact_prefix="$crash/" -print_final_stats=1 \
    >"$out/$t.log" 2>&1
  rc=$?
  execs=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$out/$t.log" | grep -o '[0-9]*$')
  cov=$(grep -o 'cov: [0-9]*' "$out/$t.log" | tail -1)
  if ((rc)); then
    echo "FAIL $t (rc $rc, $(( $(date +%s) - start )) s): see $out/$t.log; input in $crash/"
    grep -m3 -E 'ERROR|runtime error|SUMMARY' "$out/$t.log" | sed 's/^/     /'
    fail=1
  else
    echo "ok   $t: $(( $(date +%s) - start )) s, ${execs:-?} runs, ${cov:-cov ?}"
  fi
done
exit $fail
