#!/usr/bin/env bash
# Builds ci/user-crate as a user would (outside this repository, so none of its cargo
# configuration applies: no frame pointers, DWARF site capture) and checks that
#  - the Box::leak scenario fails with `remember_request` as its top site,
#  - the bounded cache and the lazy static pass,
#  - a pinned SIGSEGV and a pinned stack overflow pass, located in their functions,
#  - `cargo test` and `cargo nextest run` give the same verdicts,
#  - `--list`, a name filter and `--exact` select scenarios like libtest.
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cp -r "$repo/ci/user-crate" "$work/"
crate="$work/user-crate"
sed -i "s|path = \"../../harness\"|path = \"$repo/harness\"|" "$crate/Cargo.toml"
# One target dir for both crates built outside the repository's configuration
# (ci/user-crate-check.sh, ci/engine-crate-check.sh): the same flags and mostly the same
# dependencies, so jemalloc and most of the rest are built once, not once per crate.
export CARGO_TARGET_DIR="$repo/target/outside"
unset RUSTFLAGS
cd "$crate"

verdicts() { # report directory -> "name verdict findings crash top-frame" lines, sorted
  python3 - "$1" "$repo/ci" <<'PY'
import sys
sys.path.insert(0, sys.argv[2])
from leakgate_report import load
report = load(sys.argv[1])
assert report["format_version"] == 2, report["format_version"]
for s in sorted(report["scenarios"], key=lambda s: s["name"]):
    sites = [site for f in s["findings"] for site in f["sites"]]
    stack = (s.get("crash") or {}).get("stack") or []
    frames = sites[0]["frames"] if sites else stack
    top = frames[0]["function"] if frames else "-"
    findings = ",".join(f["resource"] for f in s["findings"]) or "-"
    crash = (s.get("crash") or {}).get("cause", "-")
    print(s["name"], s["verdict"], findings, crash, top)
PY
}

echo "== cargo test (one child process per scenario)"
rm -rf "$work/cargo-test"
status=0
LEAKGATE_REPORT_DIR="$work/cargo-test" cargo test --test leaks >"$work/cargo-test.log" 2>&1 || status=$?
# Its output holds a deliberate FAILED line: shown only when this check fails.
trap 'cat "$work/cargo-test.log" "$work/nextest.log" 2>/dev/null; rm -rf "$work"' EXIT
[ "$status" -eq 101 ] || { echo "FAIL: cargo test exited $status, not 101 (the leaky scenario failing)"; exit 1; }
verdicts "$work/cargo-test" | tee "$work/cargo-test.verdicts"
expected="user/bounded_cache pass - - -
user/lazy_static pass - - -
user/pinned_overflow pass - stack_overflow leakgate_user_example::count_pages
user/pinned_segfault pass - signal leakgate_user_example::read_page
user/remember_requests fail heap - leakgate_user_example::remember_request"
diff <(echo "$expected") "$work/cargo-test.verdicts" || { echo "FAIL: unexpected verdicts or attribution"; exit 1; }

command -v cargo-nextest >/dev/null 2>&1 || { echo "FAIL: cargo-nextest is not installed (cargo install cargo-nextest --locked)"; exit 1; }
echo "== cargo nextest run (one process per test, each scenario in a child of it)"
status=0
LEAKGATE_REPORT_DIR="$work/nextest" cargo nextest run --test leaks --no-fail-fast >"$work/nextest.log" 2>&1 || status=$?
[ "$status" -eq 100 ] || { echo "FAIL: nextest exited $status, not 100 (the leaky scenario failing)"; exit 1; }
verdicts "$work/nextest" > "$work/nextest.verdicts"
diff "$work/cargo-test.verdicts" "$work/nextest.verdicts" || { echo "FAIL: cargo test and nextest disagree"; exit 1; }
echo "cargo test and cargo nextest run agree"

echo "== libtest arguments"
# Captured first: `grep -q` closing the pipe early would fail the pipeline under pipefail.
listing=$(cargo test -q --test leaks -- --list 2>/dev/null)
grep -qx "user/lazy_static: test" <<<"$listing" || { echo "FAIL: --list"; exit 1; }
filtered=$(cargo test -q --test leaks -- user/b 2>&1)
grep -q "1 passed; 0 failed; 0 ignored; 0 measured; 4 filtered out" <<<"$filtered" || { echo "FAIL: filter"; exit 1; }
exact=$(cargo test -q --test leaks -- --exact user/lazy_static 2>&1)
grep -q "1 passed; 0 failed" <<<"$exact" || { echo "FAIL: --exact"; exit 1; }
trap 'rm -rf "$work"' EXIT
echo "user crate: all checks passed"
