#!/usr/bin/env bash
# Merges the reports of a sharded gate (one report directory per shard, as
# ci/gate.sh writes them with PARTITION set) into one report and renders it; exits 1
# when a scenario of any shard failed.
#   usage: ci/merge-shards.sh SHARDS_DIR OUT_DIR
set -euo pipefail
[ $# -eq 2 ] || { echo "usage: $0 SHARDS_DIR OUT_DIR" >&2; exit 2; }
cd "$(dirname "$0")/.."
shards=("$1"/*/)
[ -e "${shards[0]}" ] || { echo "ci/merge-shards.sh: no shard reports in $1" >&2; exit 2; }
leakgate() { cargo run --quiet -p leakgate-cli -- "$@"; }
rm -f "$2/report.json"
if [ "${#shards[@]}" -eq 1 ]; then
  mkdir -p "$2" && cp "${shards[0]}/report.json" "$2/report.json" 2>/dev/null \
    || leakgate render "${shards[0]}" --out "$2"
else
  leakgate merge "${shards[@]}" -o "$2"
fi
leakgate render "$2"
leakgate summary --check "$2"
