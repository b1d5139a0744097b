#!/usr/bin/env bash
# The leak gate over the bundled scenarios (the pull-request gate): leakgate's seeded
# self-test scenarios and the templates over real engines (SQLite, redb), each scenario
# in its own process, into one report.
#   LEAKGATE_REPORT_DIR  where the report goes (default: target/leakgate/gate)
# Exit status: 0 when every scenario passed (seeded leaks must be found to pass).
set -euo pipefail
cd "$(dirname "$0")/.."
out="${LEAKGATE_REPORT_DIR:-$PWD/target/leakgate/gate}"
rm -rf "$out"
status=0
LEAKGATE_REPORT_DIR="$out" cargo test -p leakgate-scenarios --test selftest --test engines || status=$?
echo
echo "leakgate gate: report $out/report.json"
exit "$status"
