#!/usr/bin/env bash
# The README's quick start, checked as a user would meet it: a crate outside the
# workspace (ci/engine-crate, copied out so none of the repository's cargo configuration
# applies) implements `Engine` for a toy store and runs three templates with
# `leakgate-scenarios` at `default-features = false`. It must pass, and `cargo tree` must
# show that no bundled engine (SQLite, LMDB, redb, fjall, RocksDB) is compiled.
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cp -r "$repo/ci/engine-crate" "$work/toykv"
sed -i "s|path = \"../../|path = \"$repo/|" "$work/toykv/Cargo.toml"
cd "$work/toykv"
# The target dir of ci/user-crate-check.sh, which says why.
export CARGO_TARGET_DIR="$repo/target/outside"
unset RUSTFLAGS
bundled=$(cargo tree --edges normal,dev --prefix none --format '{p}' \
  | grep -E '^(rusqlite|libsqlite3-sys|heed|lmdb-master-sys|redb|fjall|rocksdb|librocksdb-sys) ' || true)
if [ -n "$bundled" ]; then
  echo "FAIL: the quick start compiles bundled engines:"; echo "$bundled"; exit 1
fi
echo "cargo tree: no bundled engine among toykv's dependencies"
LEAKGATE_REPORT_DIR="$work/report" cargo test --test leaks
echo "toykv: three templates pass without a bundled engine"
