#!/usr/bin/env bash
# The overrun target of RELIABILITY.md: a watcher process stopped (SIGSTOP)
# for 2.5 s while a root forks 15,000 long-lived children at 3,000 a
# second, then continued; how long after SIGCONT its live set is exact.
# Runs the measurement N times (default 10) and prints each figure and the
# worst. Needs root (the proc connector). BUFFER (bytes) sets the
# watcher's receive buffer: the default 4 MiB holds a 2.5 s stop at this
# VM's fork rate (the watcher only catches up); BUFFER=262144 makes the
# stop overrun it, so that the figure is a repair's:
#   scripts/overrun.sh 10; BUFFER=262144 scripts/overrun.sh 10
set -euo pipefail
cd "$(dirname "$0")/.."
n=${1:-10}
go test -c -o /tmp/pwatch-integration.test ./integration
for i in $(seq 1 "$n"); do
	PWATCH_OVERRUN_STOP=1 PWATCH_OVERRUN_BUFFER=${BUFFER:-} /tmp/pwatch-integration.test -test.run 'TestIntegrationOverrunStopRecovery$' -test.v -test.count=1 2>&1 |
		grep -o 'recovered in .*' || { echo "run $i failed"; exit 1; }
done | tee /tmp/pwatch-overrun.txt
awk '{v=$3; u=v; sub(/[0-9.]+/,"",u); sub(/[a-zµ]+:?$/,"",v); if(u ~ /^ms/) v/=1000; if (v>m) m=v} END {printf "worst: %.3fs over %d runs\n", m, NR}' /tmp/pwatch-overrun.txt
