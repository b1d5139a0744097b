#!/usr/bin/env bash
# Prints a RAM-backed directory for the scenarios' scratch files (/dev/shm) when there
# is one, a tmpfs with at least 2 GiB free; exits 1 otherwise. The engines fsync on
# every commit and checkpoint: about 120 ms a call on this machine's disk, most of the
# gate's wall time, and nothing the gate measures (it checks leaks, not durability).
# On a tmpfs an fsync returns at once; files, sizes and descriptors are the same.
set -euo pipefail
dir=/dev/shm
[ -d "$dir" ] && [ -w "$dir" ] || exit 1
[ "$(stat -f -c %T "$dir")" = tmpfs ] || exit 1
free_kib=$(df -Pk "$dir" | awk 'NR == 2 { print $4 }')
[ "$free_kib" -ge $((2 << 20)) ] || exit 1
echo "$dir"
