#!/usr/bin/env bash
# The nightly regression run: the self-tests and every engine, RocksDB included (Debian's
# libclang-dev for bindgen; about 16 minutes to build on two cores), with the measured
# iterations multiplied; then its figures go into the history and the trend test runs
# over it, with a chart per scenario.
#   LEAKGATE_REPORT_DIR        where the report goes (default: target/leakgate/nightly)
#   LEAKGATE_ITERATIONS_SCALE  default 10
#   LEAKGATE_HISTORY           the history file (default: target/leakgate/history.jsonl)
# Exit status: that of the run, or 1 when the trend test flags a creep (its lines are in
# REPORT_DIR/trend.txt, and `trend=alert` goes to $GITHUB_OUTPUT when that is set).
set -euo pipefail
cd "$(dirname "$0")/.."
as_root() {
  if [ "$(id -u)" -eq 0 ]; then "$@"
  elif command -v sudo >/dev/null 2>&1; then sudo "$@"
  else echo "ci/nightly.sh: need root (or sudo) to run: $*" >&2; return 1
  fi
}
if ! dpkg -s libclang-dev >/dev/null 2>&1; then
  as_root apt-get update -qq
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq libclang-dev
fi
out="${LEAKGATE_REPORT_DIR:-$PWD/target/leakgate/nightly}"
history="${LEAKGATE_HISTORY:-$PWD/target/leakgate/history.jsonl}"
rm -f "$out/report.json" "$out/report.jsonl" "$out/report.lock" "$out/trend.txt"
status=0
LEAKGATE_ITERATIONS_SCALE="${LEAKGATE_ITERATIONS_SCALE:-10}" LEAKGATE_REPORT_DIR="$out" \
  cargo test -p leakgate-scenarios --features rocksdb --test selftest --test engines || status=$?
leakgate() { cargo run --quiet -p leakgate-cli -- "$@"; }
leakgate render "$out" || status=$?
leakgate history append "$out" --to "$history"
trend=0
leakgate trend "$history" --charts "$out/trend" | tee "$out/trend.txt" || trend=$?
if [ "$trend" -eq 1 ]; then
  echo "trend=alert" >> "${GITHUB_OUTPUT:-/dev/null}"
  [ "$status" -ne 0 ] || status=1
elif [ "$trend" -ne 0 ]; then
  status=$trend
fi
echo
echo "leakgate nightly: report $out/report.json, history $history"
exit "$status"
