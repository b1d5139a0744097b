#!/usr/bin/env bash
# Compares a gate's report with a baseline, as a pull request's CI does, and prints the
# delta table (Markdown with --markdown). Exit 1 when a scenario regressed.
#   usage: ci/compare.sh BASELINE [REPORT_DIR] [--markdown]
#   BASELINE  a baseline name (under target/leakgate/baselines), a baseline directory,
#             or another report
#   REPORT_DIR  default: target/leakgate/gate
set -euo pipefail
[ $# -ge 1 ] || { echo "usage: $0 BASELINE [REPORT_DIR] [--markdown]" >&2; exit 2; }
cd "$(dirname "$0")/.."
base=$1; shift
report=target/leakgate/gate
if [ $# -gt 0 ] && [ "$1" != --markdown ]; then report=$1; shift; fi
cargo run --quiet -p leakgate-cli -- compare "$base" "$report" "$@"
