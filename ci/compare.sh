#!/usr/bin/env bash
# Compares a gate's report with a baseline, as a pull request's CI does, and prints the
# delta table (Markdown with --markdown). Exit 1 when a scenario regressed.
#   usage: ci/compare.sh BASELINE [REPORT_DIR] [--markdown]
#   BASELINE  a baseline name (under target/leakgate/baselines), a baseline directory,
#             or another report
#   REPORT_DIR  default: target/leakgate/gate
set -euo pipefail
[ $# -ge 1 ] || { echo "usage: $0 BASELINE [REPORT_DIR] [--markdown]" >&2; exit 2; }
# Paths as the caller gave them, before moving to the workspace.
absolute() { case "$1" in /*) echo "$1" ;; *) echo "$PWD/$1" ;; esac; }
base=$1; shift
[ ! -e "$base" ] || base=$(absolute "$base")
report=""
if [ $# -gt 0 ] && [ "$1" != --markdown ]; then report=$(absolute "$1"); shift; fi
cd "$(dirname "$0")/.."
report=${report:-$PWD/target/leakgate/gate}
baselines=${LEAKGATE_BASELINE_DIR:-${CARGO_TARGET_DIR:-$PWD/target}/leakgate/baselines}
cargo run --quiet -p leakgate-cli -- compare "$base" "$report" --baseline-dir "$baselines" "$@"
