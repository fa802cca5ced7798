#!/usr/bin/env bash
# Render an HTML page (default: the demo report) in headless Chromium and save
# a PNG screenshot, to check that the page shows its figures without a network.
#   scripts/screenshot.sh [page.html] [out.png]
# Needs Debian's chromium (apt-get install -y chromium).
set -euo pipefail
page=${1:-report/index.html}
out=${2:-report/screenshot.png}
[ -f "$page" ] || { echo "no page at $page (run 'make demo' first)" >&2; exit 2; }
profile=$(mktemp -d)
trap 'rm -rf "$profile"' EXIT
chromium --headless --no-sandbox --disable-gpu --disable-quic --no-first-run \
  --disable-background-networking --disable-component-update --disable-sync \
  --user-data-dir="$profile" --window-size=1200,3000 \
  --screenshot="$out" "file://$(realpath "$page")" 2>/dev/null
echo "wrote $out"
