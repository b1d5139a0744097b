#!/usr/bin/env bash
# Checks what a user depending on leakgate meets:
#  - `cargo package` succeeds for the published crates (leakgate, leakgate-reports,
#    leakgate-cli, leakgate-scenarios), and
#    each packaged crate builds on its own;
#  - leakgate builds with every direct dependency at the lowest version it declares
#    (cargo's direct-minimal-versions), so a crate pinned to an older serde can add it.
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
cd "$repo"
echo "-- cargo package -p leakgate-reports -p leakgate -p leakgate-cli -p leakgate-scenarios"
# Packaging several workspace crates verifies each against the others through a local
# overlay of crates.io. Cargo treats registry crates as immutable: it unpacks the overlay
# copy into its registry cache and compiles it once per name and version, and reuses
# both on later runs. A copy from an earlier run would then stand in for today's code,
# so drop the unpacked copies and the builds of them first. None of these crates is on
# crates.io, so nothing else lives under these names; the builds go to their own target
# dir so that the workspace's own builds stay untouched.
cargo_home=${CARGO_HOME:-$HOME/.cargo}
package_target="$repo/target/package-check"
rm -rf "$cargo_home"/registry/src/*/leakgate-reports-* "$cargo_home"/registry/src/*/leakgate-[0-9]* \
  "$cargo_home"/registry/cache/*/leakgate-reports-* "$cargo_home"/registry/cache/*/leakgate-[0-9]* \
  "$package_target"/debug/.fingerprint/leakgate-reports-* "$package_target"/debug/deps/*leakgate_reports-*
CARGO_TARGET_DIR="$package_target" cargo package -p leakgate-reports -p leakgate -p leakgate-cli \
  -p leakgate-scenarios --allow-dirty

echo "-- leakgate at its lowest declared dependency versions"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
git ls-files -z | xargs -0 -I{} cp --parents {} "$work"
cd "$work"
# Only the published crates: the scenarios' engines are not a user's dependencies.
sed -i 's/^members = .*/members = ["harness", "reports"]/' Cargo.toml
rm -f Cargo.lock
# direct-minimal-versions is unstable in cargo; RUSTC_BOOTSTRAP lets a stable cargo use
# it for this resolution only.
RUSTC_BOOTSTRAP=1 cargo update -Z direct-minimal-versions --quiet
CARGO_TARGET_DIR="$repo/target/minimal-versions" cargo check -p leakgate -p leakgate-reports --all-features --quiet
echo "leakgate builds at its lowest declared versions"
