#!/usr/bin/env bash
# side_by_side.sh - runs a stylora benchmark and its PyTorch twin in one run and
# prints both, so the figures come from the same machine state (these
# machines are noisy: compare ratios). Needs python3-torch (tools/deps.sh --torch).
#   bench/side_by_side.sh textenc        CLIP-L forward, 1x77 tokens
#   bench/side_by_side.sh vae            SD-size VAE: encode 256^2, decode 32^2 latents
#   bench/side_by_side.sh unet [--full]  SD-1.5 U-Net forward+backward, 32x32 latents, batch 1
# Build first (tools/build.sh). Threads: OMP_NUM_THREADS (default: all cores),
# PyTorch uses the same count. This is the seed of the issue-11 harness
# (bench/run.sh), which will add ratios, the SGEMM reference rate and name: value lines.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
b=${BUILD:-$root/build}
export SL_SHARED_DIR=${SL_SHARED_DIR:-$root/../shared} SL_SOURCE_DIR=$root
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-$(nproc)} OMP_WAIT_POLICY=${OMP_WAIT_POLICY:-passive}
what=${1:?usage: side_by_side.sh textenc|vae|unet [--full]}
shift
case "$what" in
  textenc) "$b/bench_textenc" --torch ;;
  vae)
    echo "== stylora =="; "$b/bench_vae"
    echo "== PyTorch =="; /usr/bin/python3 "$root/tests/reference/bench_vae_torch.py" ;;
  unet)
    echo "== stylora =="; "$b/bench_unet" "$@"
    echo "== PyTorch =="; /usr/bin/python3 "$root/tests/reference/bench_unet_torch.py" "$@" ;;
  *) echo "side_by_side.sh: unknown benchmark '$what'" >&2; exit 2 ;;
esac
