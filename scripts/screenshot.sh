#!/usr/bin/env bash
# Render an HTML page (default: the demo report) in headless Chromium and save
# a PNG screenshot of the whole page, to check that it shows its figures
# without a network.
#   scripts/screenshot.sh [page.html] [out.png] [width]
# The page's height is measured first (the page is loaded in a frame of the
# same width and its scrollHeight read back), so the screenshot is never cut.
# Needs Debian's chromium (apt-get install -y chromium).
set -euo pipefail
page=${1:-report/index.html}
out=${2:-report/screenshot.png}
width=${3:-1200}
[ -f "$page" ] || { echo "no page at $page (run 'make demo' first)" >&2; exit 2; }
url="file://$(realpath "$page")"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
flags=(--headless --no-sandbox --disable-gpu --disable-quic --no-first-run
  --disable-background-networking --disable-component-update --disable-sync)

cat > "$work/measure.html" <<HTML
<!DOCTYPE html><html><body style="margin:0">
<iframe src="$url" style="width:${width}px;height:100px;border:0"
  onload="document.getElementById('h').textContent =
    'PAGE_HEIGHT=' + this.contentDocument.documentElement.scrollHeight"></iframe>
<p id="h"></p></body></html>
HTML
height=$(chromium "${flags[@]}" --user-data-dir="$work/measure-profile" \
  --allow-file-access-from-files --dump-dom "file://$work/measure.html" \
  2>/dev/null | grep -o 'PAGE_HEIGHT=[0-9][0-9]*' | tail -1 | cut -d= -f2 || true)
if [ -z "$height" ] || [ "$height" -lt 100 ]; then
  echo "could not measure the page height of $page" >&2
  exit 1
fi
chromium "${flags[@]}" --user-data-dir="$work/shot-profile" \
  --window-size="$width,$height" --hide-scrollbars \
  --screenshot="$out" "$url" 2>/dev/null
echo "wrote $out (${width}x${height})"
