#!/usr/bin/env bash
# Pushes the PNG charts of a report's failing scenarios to the `leakgate-charts` branch,
# under PREFIX/, so a pull-request comment can show them (comments cannot show artifact
# files). Prints `url=<base URL of the charts>` to $GITHUB_OUTPUT when that is set.
#   usage: ci/publish-charts.sh REPORT_DIR PREFIX
set -euo pipefail
[ $# -eq 2 ] || { echo "usage: $0 REPORT_DIR PREFIX" >&2; exit 2; }
report=$(cd "$1" && pwd)
prefix=$2
repo_dir=$(cd "$(dirname "$0")/.." && pwd)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cd "$repo_dir"
# A branch of its own, started empty (orphan), never from the pull request's code.
if git fetch --quiet origin leakgate-charts:leakgate-charts 2>/dev/null; then
  git worktree add --quiet "$work/charts" leakgate-charts
else
  git worktree add --quiet --detach "$work/charts"
  git -C "$work/charts" checkout --quiet --orphan leakgate-charts
  git -C "$work/charts" rm -rf --quiet .
fi
mkdir -p "$work/charts/$prefix"
# Only the failing scenarios' charts: those are the ones the comment shows.
cargo run --quiet -p leakgate-cli -- chart "$report" --failing -o "$work/charts/$prefix"
cd "$work/charts"
git add -A "$prefix"
git -c user.name=leakgate -c user.email=leakgate@users.noreply.github.com \
  commit --quiet -m "charts for $prefix" || true
# Pull requests publish at the same time: on a rejected push, rebase and try again.
for attempt in 1 2 3; do
  git push --quiet origin HEAD:leakgate-charts && break
  [ "$attempt" -lt 3 ] || { echo "ci/publish-charts.sh: could not push the charts" >&2; exit 1; }
  git pull --quiet --rebase origin leakgate-charts
done
cd "$repo_dir" && git worktree remove --force "$work/charts"
url="https://raw.githubusercontent.com/${GITHUB_REPOSITORY:-owner/repo}/leakgate-charts/$prefix"
echo "url=$url" >> "${GITHUB_OUTPUT:-/dev/null}"
echo "charts published at $url"
