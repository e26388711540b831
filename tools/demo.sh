#!/usr/bin/env bash
# demo.sh - the README's main-job command: installs what is missing, builds,
# and runs the main job.
#
# The main job is: train a style adapter on a shipped example style with the
# shipped model, then sample before/after images. The shipped model and the
# trainer do not exist yet (issues 7 and 10), so for now this demo runs the
# parts that exist and says so.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
bash tools/deps.sh
bash tools/build.sh build
bin=build/stylora
echo
echo "== stylora demo =="
echo "Not yet available: the shipped model (models/), training and sampling."
echo "What exists now: model loading checks and the inspect/probe commands."
echo
shared="$root/../shared"
if [[ -d "$shared/sd15" ]]; then
  "$bin" inspect "$shared/sd15"
  [[ -d "$shared/golden/tiny-sd1" ]] && "$bin" inspect "$shared/golden/tiny-sd1"
else
  echo "(no ../shared/sd15 beside the checkout: nothing to inspect)"
  "$bin" --help
fi
