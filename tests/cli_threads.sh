#!/usr/bin/env bash
# cli_threads.sh - the program's thread set-up (issue 18): with OMP_WAIT_POLICY and
# GOMP_SPINCOUNT unset it runs with a short spin, GOMP_SPINCOUNT 3000 (it runs itself
# again with the variable set, since libgomp reads it before main; a setenv in main left
# workers spinning 300000), and a user's own OMP_WAIT_POLICY or GOMP_SPINCOUNT is kept.
# libgomp's OMP_DISPLAY_ENV=verbose shows the spin count in effect.
set -u
bin=${SL_STYLORA:?}
fails=0; checks=0
ok()   { checks=$((checks+1)); echo "ok   $1"; }
bad()  { checks=$((checks+1)); fails=$((fails+1)); echo "FAIL $1"; }
# the GOMP_SPINCOUNT of the last environment display: the process that did the work
spin() { "$@" 2>&1 >/dev/null | sed -n "s/^ *GOMP_SPINCOUNT = '\([0-9]*\)'.*/\1/p" | tail -1; }
s=$(spin env -u OMP_WAIT_POLICY -u GOMP_SPINCOUNT OMP_DISPLAY_ENV=verbose "$bin" --help)
[[ -n "$s" ]] || { echo "skip: this OpenMP runtime does not display GOMP_SPINCOUNT (not libgomp)"; exit 77; }
if [[ "$s" == 3000 ]]; then ok "unset OMP_WAIT_POLICY runs with a short spin (3000)"; else bad "unset OMP_WAIT_POLICY: spin count $s, want 3000"; fi
s=$(spin env -u GOMP_SPINCOUNT OMP_WAIT_POLICY=passive OMP_DISPLAY_ENV=verbose "$bin" --help)
if [[ "$s" == 0 ]]; then ok "a user's OMP_WAIT_POLICY=passive is kept (spin 0)"; else bad "OMP_WAIT_POLICY=passive: spin count '$s'"; fi
s=$(spin env -u OMP_WAIT_POLICY GOMP_SPINCOUNT=77 OMP_DISPLAY_ENV=verbose "$bin" --help)
if [[ "$s" == 77 ]]; then ok "a user's GOMP_SPINCOUNT is kept"; else bad "GOMP_SPINCOUNT=77: spin count '$s'"; fi
s=$(spin env OMP_WAIT_POLICY=active OMP_DISPLAY_ENV=verbose "$bin" --help)
if [[ -n "$s" && "$s" != 0 ]]; then ok "a user's OMP_WAIT_POLICY=active is kept (spin $s)"; else bad "OMP_WAIT_POLICY=active: spin count '$s'"; fi
n=$(env -u OMP_WAIT_POLICY -u GOMP_SPINCOUNT OMP_DISPLAY_ENV=true "$bin" --help 2>&1 >/dev/null | grep -c "OPENMP DISPLAY ENVIRONMENT BEGIN")
if [[ "$n" -le 2 ]]; then ok "runs itself again at most once ($n starts)"; else bad "started $n times"; fi
echo "cli_threads: $checks checks, $fails failures"
[[ $fails -eq 0 ]]
