#!/usr/bin/env bash
# side_by_side.sh - an alias of bench/run.sh, the issue-11 harness that replaced it (same
# options: --quick, --sd15-full, --update-readme). The single-model benchmarks it used to run
# are still there on their own: bench_textenc --torch, bench_vae + tests/reference/bench_vae_torch.py,
# bench_unet [--full] + tests/reference/bench_unet_torch.py.
exec "$(dirname "$0")/run.sh" "$@"
