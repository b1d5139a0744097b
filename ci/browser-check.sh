#!/usr/bin/env bash
# Looks at a rendered report the way a reviewer would, in headless Chromium:
#  - index.html loads and every chart on it draws (the page's own check sets
#    <body data-charts="ok N">), and a screenshot is taken (screenshot.png);
#  - every DHAT file loads in DHAT's viewer (dh_view.js from Debian's valgrind) and
#    shows its sites.
# Installs chromium and valgrind when missing (with sudo when not root).
#   usage: ci/browser-check.sh REPORT_DIR
set -euo pipefail
[ $# -eq 1 ] && [ -f "$1/index.html" ] || { echo "usage: $0 REPORT_DIR (with index.html, from leakgate render)" >&2; exit 2; }
dir=$(cd "$1" && pwd)
viewer=/usr/libexec/valgrind/dh_view.js

as_root() {
  if [ "$(id -u)" -eq 0 ]; then "$@"
  elif command -v sudo >/dev/null 2>&1; then sudo "$@"
  else echo "browser-check: need root (or sudo) to run: $*" >&2; return 1
  fi
}
browser=$(command -v chromium || command -v chromium-browser || true)
if [ -z "$browser" ] || [ ! -f "$viewer" ]; then
  as_root apt-get update -qq
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium valgrind >/dev/null
  browser=$(command -v chromium)
fi
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
# A profile of its own, so runs never share (or lock) one.
headless() {
  "$browser" --headless --no-sandbox --disable-gpu --user-data-dir="$work/profile" \
    --virtual-time-budget=15000 "$@" 2>"$work/browser.log"
}

state=$(headless --dump-dom "file://$dir/index.html" | grep -o 'data-charts="[^"]*"' || true)
case "$state" in
  'data-charts="ok '*) echo "browser-check: index.html: ${state}" ;;
  *) echo "FAIL: index.html: charts ${state:-not checked: the page did not load or its script did not run}"
     grep -v -i dbus "$work/browser.log" | tail -5; exit 1 ;;
esac
headless --screenshot="$dir/screenshot.png" --window-size=1280,2400 "file://$dir/index.html" >/dev/null
[ -s "$dir/screenshot.png" ] || { echo "FAIL: no screenshot of index.html"; exit 1; }
echo "browser-check: screenshot $dir/screenshot.png"

checked=0
for data in "$dir"/dhat/*.json; do
  [ -e "$data" ] || continue
  # DHAT's viewer reads a file the user picks; here the page hands it the data directly
  # and asks it to build and show the tree, as its Load button would.
  {
    echo "<!DOCTYPE html><html><head><meta charset=\"UTF-8\"><script src=\"file://$viewer\"></script></head>"
    echo "<body onload=\"onLoad(); check()\"><script>"
    printf 'const DATA = %s;\n' "$(cat "$data")"
    cat <<'JS'
function check() {
  try {
    gData = DATA; buildTree(); displayTree(0, 0, 0);
    const text = document.body.innerText;
    const frame = DATA.ftbl.length > 1 ? DATA.ftbl[1].split(' (')[0] : '';
    const ok = !document.querySelector('.error') && text.includes(frame);
    document.body.setAttribute('data-dhat', ok ? 'ok' : 'missing ' + frame);
  } catch (e) { document.body.setAttribute('data-dhat', 'error ' + e); }
}
JS
    echo "</script></body></html>"
  } >"$work/view.html"
  result=$(headless --allow-file-access-from-files --dump-dom "file://$work/view.html" | grep -o 'data-dhat="[^"]*"' || true)
  [ "$result" = 'data-dhat="ok"' ] || { echo "FAIL: $data in DHAT's viewer: ${result:-page did not load}"; exit 1; }
  checked=$((checked + 1))
done
echo "browser-check: $checked DHAT files load in dh_view"
