#!/usr/bin/env bash
# deps.sh - installs the Debian 12 packages stylora needs to build and test,
# only those missing. As root it runs apt-get; as another user it prints the
# command to run and exits 1.
#   tools/deps.sh            build dependencies
#   tools/deps.sh --test     also what the tests need (Open MPI, clang + libFuzzer,
#                            chromium + file for tests/cli_report.sh, python3-numpy +
#                            python3-pil for tests/cli_emoji_data.sh)
#   tools/deps.sh --torch    also python3-torch (only for tests/reference/*.py
#                            and the model pretraining scripts; never at run time)
set -euo pipefail
pkgs=(build-essential cmake pkg-config libopenblas-dev libstb-dev libpng-dev zlib1g-dev libcjson-dev libpcre2-dev)
# tests only: Open MPI (tests/mpi/run.sh), clang's libFuzzer and OpenMP (tests/cli_fuzz.sh),
# headless Chromium and file(1) (tests/cli_report.sh renders the training report),
# numpy and PIL (tests/cli_emoji_data.sh checks tools/emoji/)
if [[ "${1:-}" == "--test" || "${1:-}" == "--torch" ]]; then pkgs+=(libopenmpi-dev openmpi-bin clang-14 libclang-rt-14-dev libomp-14-dev chromium file python3-numpy python3-pil); fi
if [[ "${1:-}" == "--torch" ]]; then pkgs+=(python3-torch python3-regex); fi  # numpy and PIL come with --test's list
missing=()
for p in "${pkgs[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then missing+=("$p"); fi
done
if [[ ${#missing[@]} -eq 0 ]]; then exit 0; fi
echo "stylora: installing missing packages: ${missing[*]}"
if [[ $(id -u) -ne 0 ]]; then
  echo "stylora: not root; run:  sudo apt-get update && sudo apt-get install -y ${missing[*]}" >&2
  exit 1
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
