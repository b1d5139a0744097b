#!/usr/bin/env bash
# The nightly regression run: the self-tests and every engine, RocksDB included (Debian's
# libclang-dev for bindgen; about 16 minutes to build on two cores), with the measured
# iterations multiplied (LEAKGATE_ITERATIONS_SCALE, default 10).
#   LEAKGATE_REPORT_DIR  where the report goes (default: target/leakgate/nightly)
set -euo pipefail
cd "$(dirname "$0")/.."
if ! dpkg -s libclang-dev >/dev/null 2>&1; then
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq libclang-dev
fi
out="${LEAKGATE_REPORT_DIR:-$PWD/target/leakgate/nightly}"
rm -rf "$out"
status=0
LEAKGATE_ITERATIONS_SCALE="${LEAKGATE_ITERATIONS_SCALE:-10}" LEAKGATE_REPORT_DIR="$out" \
  cargo test -p leakgate-scenarios --features rocksdb --test selftest --test engines || status=$?
echo
echo "leakgate nightly: report $out/report.json"
exit "$status"
