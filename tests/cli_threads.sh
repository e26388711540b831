#!/usr/bin/env bash
# cli_threads.sh - the program's thread set-up (issue 18): with OMP_WAIT_POLICY unset it
# runs with libgomp's passive policy (it runs itself again with the variable set, since
# libgomp reads it before main; a setenv in main left workers spinning), and a user's
# own OMP_WAIT_POLICY is kept. libgomp's OMP_DISPLAY_ENV=verbose shows the policy in
# effect as GOMP_SPINCOUNT: 0 when passive, 300000 (its default spin) when not.
set -u
bin=${SL_STYLORA:?}
fails=0; checks=0
ok()   { checks=$((checks+1)); echo "ok   $1"; }
bad()  { checks=$((checks+1)); fails=$((fails+1)); echo "FAIL $1"; }
# the GOMP_SPINCOUNT of the last environment display: the process that did the work
spin() { "$@" 2>&1 >/dev/null | sed -n "s/^ *GOMP_SPINCOUNT = '\([0-9]*\)'.*/\1/p" | tail -1; }
s=$(spin env -u OMP_WAIT_POLICY OMP_DISPLAY_ENV=verbose "$bin" --help)
[[ -n "$s" ]] || { echo "skip: this OpenMP runtime does not display GOMP_SPINCOUNT (not libgomp)"; exit 77; }
if [[ "$s" == 0 ]]; then ok "unset OMP_WAIT_POLICY runs passive (spin 0)"; else bad "unset OMP_WAIT_POLICY: spin count $s, want 0"; fi
s=$(spin env OMP_WAIT_POLICY=active OMP_DISPLAY_ENV=verbose "$bin" --help)
if [[ -n "$s" && "$s" != 0 ]]; then ok "a user's OMP_WAIT_POLICY=active is kept (spin $s)"; else bad "OMP_WAIT_POLICY=active: spin count '$s'"; fi
n=$(env -u OMP_WAIT_POLICY OMP_DISPLAY_ENV=true "$bin" --help 2>&1 >/dev/null | grep -c "OPENMP DISPLAY ENVIRONMENT BEGIN")
if [[ "$n" -le 2 ]]; then ok "runs itself again at most once ($n starts)"; else bad "started $n times"; fi
echo "cli_threads: $checks checks, $fails failures"
[[ $fails -eq 0 ]]
