#!/usr/bin/env bash
# fetch.sh - fetches Google's Noto Color Emoji as 64x64 PNGs with names from the npm
# registry (emoji-datasource-google, pinned version and sha256) and unpacks only what
# the dataset needs: package/img/google/64/*.png, package/emoji.json, README and LICENSE.
#   tools/emoji/fetch.sh [--cache DIR] [--tarball FILE]
#     --cache DIR     where the tarball and the unpacked package go (default build/emoji-cache)
#     --tarball FILE  use this tarball instead of `npm pack` (it is checked the same way;
#                     the tests use it to prove a wrong hash is refused)
# Idempotent: when DIR/package/.unpacked names the pinned sha256 it does nothing.
# A tarball whose sha256 differs from the pinned one is refused (exit 2) and never unpacked;
# a downloaded one is renamed FILE.bad (kept for inspection, and the next run downloads again),
# one given with --tarball is left where it is.
set -euo pipefail
PKG=emoji-datasource-google
VER=16.0.0
SHA=fb5fd131b362aab7a55542d2a147a79708cce0a8b1c1bbacd470172708b5c438
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(cd "$here/../.." && pwd)
cache=$root/build/emoji-cache
tarball=
given=0
while [[ $# -gt 0 ]]; do
  case "$1" in
    --cache) cache=${2:?--cache needs a folder}; shift 2 ;;
    --tarball) tarball=${2:?--tarball needs a file}; given=1; shift 2 ;;
    -h|--help) sed -n '2,12p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "fetch.sh: unknown option '$1' (see --help)" >&2; exit 1 ;;
  esac
done
mkdir -p "$cache"
cache=$(cd "$cache" && pwd)
stamp=$cache/package/.unpacked
if [[ -f "$stamp" && "$(cat "$stamp")" == "$SHA" ]]; then
  echo "fetch.sh: $cache/package is up to date ($PKG@$VER, sha256 $SHA)"
  exit 0
fi
if [[ -z "$tarball" ]]; then
  tarball=$cache/$PKG-$VER.tgz
  if [[ ! -f "$tarball" ]]; then
    command -v npm >/dev/null || { echo "fetch.sh: npm not found (apt-get install npm)" >&2; exit 1; }
    echo "fetch.sh: npm pack $PKG@$VER into $cache (about 74 MB)"
    # npm pack writes the tarball into the current directory; --pack-destination needs npm >= 7.
    (cd "$cache" && npm pack --silent "$PKG@$VER" >/dev/null)
    [[ -f "$tarball" ]] || { echo "fetch.sh: npm pack did not produce $tarball" >&2; exit 1; }
  fi
fi
[[ -f "$tarball" ]] || { echo "fetch.sh: $tarball: no such file" >&2; exit 1; }
got=$(sha256sum "$tarball" | cut -d' ' -f1)
if [[ "$got" != "$SHA" ]]; then
  kept="left in place"
  if [[ $given -eq 0 ]]; then mv -f "$tarball" "$tarball.bad"; kept="moved to $tarball.bad"; fi
  echo "fetch.sh: REFUSED $tarball: sha256 is $got, expected $SHA for $PKG@$VER;" \
       "$kept, nothing unpacked" >&2
  exit 2
fi
# Unpack into a scratch folder and rename, so an interrupted run never leaves a half package.
tmp=$(mktemp -d "$cache/.unpack.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
tar -xzf "$tarball" -C "$tmp" --no-same-owner --wildcards \
  'package/emoji.json' 'package/README*' 'package/LICENSE*' 'package/package.json' \
  'package/img/google/64/*.png'
n=$(find "$tmp/package/img/google/64" -name '*.png' | wc -l)
echo "$SHA" > "$tmp/package/.unpacked"
rm -rf "$cache/package"
mv "$tmp/package" "$cache/package"
echo "fetch.sh: unpacked $n images and emoji.json into $cache/package ($PKG@$VER)"
