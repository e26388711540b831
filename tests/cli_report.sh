#!/usr/bin/env bash
# cli_report.sh - issue 22's "Done when" for the report: a short run of the shipped
# model on the neon style (20 steps, a checkpoint and samples every 10, two prompts)
# writes <out>.html; headless Chromium renders it (screenshot + DOM), and the DOM has
# the sections loss and memory and the checkpoint grids ckpt-10 and ckpt-20; every
# image the page references is a data: URI (or a file) that stylora's own reader
# decodes (test_report --decode); each grid row has a style distance; the page has no script and no network reference;
# each grid row carries `stylora eval`'s style distance to the training images (a number in [0, 2])
for id in ckpt-base ckpt-10 ckpt-20; do
  d=$(grep -o "<tr id=\"$id\">.*" "$dom" | sed 's#</tr>.*##' | grep -o 'class="num style">[^<]*' | sed 's/.*>//')
  if awk -v d="$d" 'BEGIN{exit !(d != "" && d+0 > 0 && d+0 < 2)}'; then ok "#$id: style distance $d"; else bad "#$id: style distance '$d'"; fi
done
# the screenshot decodes and is not blank; the run printed the report's path;
# a resume's page still has every step's point; --no-report writes none, and
# the adapter's bytes are those of a run without report or samples. Exits 77 without chromium (tools/deps.sh --test installs it).
set -u
bin=${SL_STYLORA:?}; src=${SL_SOURCE_DIR:?}; bdir=${SL_BINARY_DIR:-.}
decode=$bdir/test_report
tmp=$bdir/tmp_cli_report; rm -rf "$tmp"; mkdir -p "$tmp"
export OMP_WAIT_POLICY=${OMP_WAIT_POLICY:-passive}
chromium=$(command -v chromium || command -v chromium-browser || true)
if [[ -z "$chromium" ]]; then echo "SKIP: no chromium (apt-get install chromium; tools/deps.sh --test)"; exit 77; fi
if [[ ! -x "$decode" ]]; then echo "FAIL: $decode (the image decoder) is not built"; exit 1; fi
fails=0; checks=0
ok()  { checks=$((checks+1)); echo "ok   $1"; }
bad() { checks=$((checks+1)); fails=$((fails+1)); echo "FAIL $1"; }
# Chromium with nothing that talks to the network or a desktop session
render() { # url, then --screenshot=... / --dump-dom
  timeout 180 "$chromium" --headless --no-sandbox --disable-gpu --disable-background-networking \
    --disable-component-update --disable-sync --no-first-run --user-data-dir="$(mktemp -d "$tmp/chrome.XXXXXX")" \
    --window-size=1200,3000 "${@:2}" "$1" 2>>"$tmp/chromium.log"
}

out=$tmp/neon.safetensors
err=$("$bin" train --model "$src/models/shapes64" --data "$src/tests/data/shapes64_styles/neon" --out "$out" \
  --steps 20 --save-every 10 --sample-every 10 --sample-steps 8 --seed 3 \
  --sample-prompt "neonstyle, a large red circle" --sample-prompt "neonstyle, two small squares & a star" 2>&1 >/dev/null); rc=$?
if [[ $rc -eq 0 ]]; then ok "train runs"; else bad "train (rc $rc): $err"; fi
page=$out.html
if [[ -s "$page" ]]; then ok "report written: $page"; else bad "no report at $page"; exit 1; fi
if grep -q "report: $page\$" <<<"$err"; then ok "train printed the report's path"; else bad "report path not printed: $(tail -2 <<<"$err")"; fi
if ls "$tmp"/*.tmp.* >/dev/null 2>&1; then bad "temp files left: $(ls "$tmp"/*.tmp.*)"; else ok "no temp files left"; fi
# self-contained: no script, nothing fetched (the SVG namespace is a name, not a fetch)
if grep -qi "<script" "$page"; then bad "the page has a script"; else ok "no script"; fi
refs=$(grep -oiE '(src|href)="[^"]{0,40}' "$page" | grep -viE '="data:image/png;base64,' || true)
if [[ -z "$refs" ]]; then ok "every src/href is a data: URI"; else bad "references outside the page: $(head -3 <<<"$refs")"; fi

# the DOM as Chromium built it
dom=$tmp/dom.html
render "file://$page" --dump-dom >"$dom"
if [[ -s "$dom" ]] && grep -q "</html>" "$dom"; then ok "chromium --dump-dom"; else bad "no DOM from chromium: $(tail -3 "$tmp/chromium.log")"; fi
for id in settings data loss throughput memory checkpoints ckpt-base ckpt-10 ckpt-20; do
  if grep -q "id=\"$id\"" "$dom"; then ok "DOM has #$id"; else bad "DOM lacks #$id"; fi
done
if grep -q '<polyline id="loss-raw"' "$dom" && grep -q '<polyline id="loss-smooth"' "$dom"; then ok "loss curve raw and smoothed"; else bad "loss curve polylines missing"; fi
if grep -q 'predicted peak' "$dom" && grep -q 'measured peak RSS</th><td class="num">[0-9]' "$dom"; then ok "memory plan and measured peak"; else bad "memory section incomplete"; fi
# every referenced image decodes; each checkpoint row holds one per prompt
n=0; nbad=0; mkdir -p "$tmp/img"
while IFS= read -r s; do
  n=$((n+1)); f=$tmp/img/$n.png
  case "$s" in
    data:image/png\;base64,*) base64 -d <<<"${s#data:image/png;base64,}" >"$f" 2>/dev/null || { nbad=$((nbad+1)); echo "  bad base64 in image $n"; continue; } ;;
    *) f=${s#file://}; [[ "$f" = /* ]] || f=$tmp/$f ;;
  esac
  if ! "$decode" --decode "$f" >/dev/null; then nbad=$((nbad+1)); fi
  if ! file "$f" | grep -q "PNG image data"; then nbad=$((nbad+1)); echo "  image $n: $(file -b "$f")"; fi
done < <(grep -o 'src="[^"]*"' "$dom" | sed 's/^src="//; s/"$//')
# 32 thumbnails + 3 rows (base, 10, 20) x 2 prompts
if [[ $n -eq 38 && $nbad -eq 0 ]]; then ok "all $n images decode"; else bad "$nbad of $n images bad (want 38 images)"; fi
for id in ckpt-base ckpt-10 ckpt-20; do
  k=$(grep -o "<tr id=\"$id\">.*" "$dom" | sed 's#</tr>.*##' | grep -o '<img' | wc -l)
  if [[ $k -eq 2 ]]; then ok "#$id: 2 images"; else bad "#$id: $k images, want 2"; fi
done
# each grid row carries `stylora eval`'s style distance to the training images (a number in [0, 2])
for id in ckpt-base ckpt-10 ckpt-20; do
  d=$(grep -o "<tr id=\"$id\">.*" "$dom" | sed 's#</tr>.*##' | grep -o 'class="num style">[^<]*' | sed 's/.*>//')
  if awk -v d="$d" 'BEGIN{exit !(d != "" && d+0 > 0 && d+0 < 2)}'; then ok "#$id: style distance $d"; else bad "#$id: style distance '$d'"; fi
done
# the screenshot
shot=$tmp/report.png
render "file://$page" --screenshot="$shot" >/dev/null
if out_d=$("$decode" --decode --nonblank "$shot"); then ok "screenshot: $out_d"; else bad "screenshot blank or unreadable: $out_d"; fi

# the curve has a point per step; a resume (here at the last step: only the final save)
# rewrites the page with the earlier steps' points, read back from the log
points() { grep -o '<polyline id="loss-raw"[^>]*' "$1" | sed 's/.*points="//; s/".*//' | wc -w; }
p1=$(points "$page")
"$bin" train --model "$src/models/shapes64" --data "$src/tests/data/shapes64_styles/neon" --out "$out" \
  --steps 20 --save-every 10 --sample-every 10 --sample-steps 8 --seed 3 --resume --quiet \
  --sample-prompt "neonstyle, a large red circle" --sample-prompt "neonstyle, two small squares & a star" >/dev/null 2>&1
p2=$(points "$page")
if [[ $p1 -eq 20 && $p2 -eq 20 ]]; then ok "loss curve: 20 points, 20 after the resume"; else bad "loss curve points: $p1, after resume $p2 (want 20)"; fi
if grep -q 'id="ckpt-20"' "$page"; then ok "resumed page keeps its checkpoints"; else bad "resumed page lost ckpt-20"; fi

# --no-report: no page; and the report (its base-model samples at weight 0, the checkpoint
# samples) leaves training alone: the same adapter bytes as a run with neither
"$bin" train --model "$src/models/shapes64" --data "$src/tests/data/shapes64_styles/neon" --out "$tmp/none.safetensors" \
  --steps 20 --seed 3 --quiet --no-report >/dev/null 2>&1
if [[ -f "$tmp/none.safetensors" && ! -e "$tmp/none.safetensors.html" ]]; then ok "--no-report writes none"; else bad "--no-report"; fi
if cmp -s "$out" "$tmp/none.safetensors"; then ok "same adapter bytes with and without the report and samples"; else bad "the report's sampling changed the adapter"; fi
echo "cli_report: $checks checks, $fails failed"
[[ $fails -eq 0 ]] || exit 1
rm -rf "$tmp"
