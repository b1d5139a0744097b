#!/usr/bin/env bash
# The leak gate over the bundled scenarios (the pull-request gate): runs every scenario
# target of leakgate-scenarios, each scenario in its own process, and writes one report.
#   LEAKGATE_REPORT_DIR  where the report goes (default: target/leakgate/gate)
# Exit status: 0 when every scenario passed (seeded leaks must be found to pass).
set -euo pipefail
cd "$(dirname "$0")/.."
out="${LEAKGATE_REPORT_DIR:-$PWD/target/leakgate/gate}"
rm -rf "$out"
status=0
LEAKGATE_REPORT_DIR="$out" cargo test -p leakgate-scenarios --test selftest || status=$?
echo
echo "leakgate gate: report $out/report.json"
exit "$status"
