#!/usr/bin/env bash
# cli_emoji_data.sh - runs tests/emoji/test_*.py: tools/emoji/'s captions (golden strings of real
# emoji.json entries), deterministic and stable splits, manifest and image folders, example
# styles, and fetch.sh's sha256 refusal, all offline on fake packages. Exits 77 when
# /usr/bin/python3, numpy or PIL is missing (tools/deps.sh --test installs them).
set -u
src=${SL_SOURCE_DIR:-$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)}
py=/usr/bin/python3
if [[ ! -x $py ]] || ! $py -c 'import numpy, PIL' 2>/dev/null; then
  echo "skip: $py with numpy and PIL not found (tools/deps.sh --test)"; exit 77
fi
rc=0
for t in "$src"/tests/emoji/test_*.py; do
  SL_SOURCE_DIR=$src $py "$t" || { echo "FAIL $t"; rc=1; }
done
exit $rc
