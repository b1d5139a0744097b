#!/usr/bin/env bash
# The leak gate over the bundled scenarios (the pull-request gate): leakgate's seeded
# self-test scenarios and the templates over real engines (SQLite, redb, fjall, LMDB),
# each scenario in its own process, into one report; then `leakgate render` writes next
# to it index.html, summary.md, junit.xml, a chart per scenario and DHAT files.
#   LEAKGATE_REPORT_DIR  where the report goes (default: target/leakgate/gate)
#   RUNNER               `cargo test` (default) or `cargo nextest run`
#   PROFILE_ARGS         extra cargo arguments, such as --release
#   PARTITION            with nextest, run one shard: count:K/N (see ci/merge-shards.sh)
#   LEAKGATE_BASELINE    compare with a baseline (LEAKGATE_SAVE_BASELINE saves one)
#   TMPDIR               where scenarios' scratch directories go; unset, a RAM disk
#                        (/dev/shm, see ci/ram-disk.sh) when there is one, else /tmp;
#                        directories kept by LEAKGATE_KEEP_DIRS stay there
# Exit status: 0 when every scenario passed (seeded leaks must be found to pass).
set -euo pipefail
cd "$(dirname "$0")/.."
out="${LEAKGATE_REPORT_DIR:-$PWD/target/leakgate/gate}"
# Only the files this script's run writes; the directory may be the user's.
rm -f "$out/report.json" "$out/report.jsonl" "$out/report.lock" \
  "$out/index.html" "$out/summary.md" "$out/junit.xml"
rm -f "$out"/charts/*.svg "$out"/charts/*.png "$out"/dhat/*.json
if [ -z "${TMPDIR:-}" ] && ram_disk=$(bash ci/ram-disk.sh); then
  export TMPDIR="$ram_disk"
fi
status=0
read -r -a profile <<<"${PROFILE_ARGS:-}"
profile+=(-p leakgate-scenarios)
if [ -n "${PARTITION:-}" ] && [ "${RUNNER:-cargo test}" != "cargo nextest run" ]; then
  echo "ci/gate.sh: PARTITION needs RUNNER='cargo nextest run'" >&2
  exit 2
fi
case "${RUNNER:-cargo test}" in
  "cargo test")
    LEAKGATE_REPORT_DIR="$out" cargo test "${profile[@]}" --no-fail-fast --test selftest --test engines || status=$?
    ;;
  "cargo nextest run")
    partition=()
    [ -z "${PARTITION:-}" ] || partition=(--partition "$PARTITION")
    LEAKGATE_REPORT_DIR="$out" cargo nextest run "${profile[@]}" --test selftest --test engines \
      --no-fail-fast "${partition[@]}" || status=$?
    ;;
  *)
    echo "ci/gate.sh: RUNNER=${RUNNER} is neither 'cargo test' nor 'cargo nextest run'" >&2
    exit 2
    ;;
esac
# Rendered whatever the verdicts: a failing run is the one people need to look at.
read -r -a render_profile <<<"${PROFILE_ARGS:-}"
cargo run --quiet "${render_profile[@]}" -p leakgate-cli -- render "$out" || status=$?
cargo run --quiet "${render_profile[@]}" -p leakgate-cli -- summary "$out" >&2 || status=$?
echo
echo "leakgate gate: report $out/report.json, page $out/index.html"
exit "$status"
