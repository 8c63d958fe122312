#!/usr/bin/env bash
# Soak: scripts/soak.sh [DURATION]   (a Go duration; default 60s)
#
# Runs workload.Mixed (short-lived children, orphans, a threaded child, exec
# children) for DURATION against four watchers (two on a shared hub, two on
# private ones) in a process of their own, then checks that every watcher
# saw exactly the workload's processes and exits and has nothing left, and
# that the watcher process's RSS at the end is within 10% of its RSS after
# the first minute (after the first third for runs under 2 minutes). Needs
# root (the proc connector); elsewhere the test skips and says why.
set -euo pipefail
cd "$(dirname "$0")/.."
d=${1:-60s}
# go test's timeout: the soak, plus time to build, drain and check.
secs=$(awk -v d="$d" 'BEGIN {
	n = d + 0; u = substr(d, length(n "") + 1)
	if (u == "h") n *= 3600; else if (u == "m") n *= 60; else if (u == "ms") n /= 1000
	print int(n) }')
if [ "$secs" -le 0 ] 2>/dev/null && [ "$d" != "0s" ]; then
	echo "soak.sh: cannot read duration '$d' (use e.g. 60s, 30m, 2h)" >&2; exit 2
fi
PWATCH_SOAK=$d go test -count=1 -run '^TestIntegrationSoak$' -v -timeout "$((secs * 2 + 600))s" ./integration
