#!/usr/bin/env bash
# Keeps every core busy with a CPU hog while a command runs, to show that
# the timing-sensitive tests do not depend on an idle machine:
#   scripts/hog.sh RUNS COMMAND...
# runs COMMAND RUNS times in a row under the hog and stops at the first
# failure. The hog is one busy loop per core (nice 0, like the tests).
set -uo pipefail
runs=$1; shift
hogs=()
for _ in $(seq 1 "$(nproc)"); do
	( while :; do :; done ) &
	hogs+=($!)
done
trap 'kill "${hogs[@]}" 2>/dev/null' EXIT
# Each run's output goes to a log of its own loop (named at the start), so
# that two loops can run at once; the failing run's tail is printed.
log=$(mktemp /tmp/pwatch-hog.XXXXXX.log)
echo "hog: $(nproc) busy loops; runs of '$*' log to $log"
for i in $(seq 1 "$runs"); do
	start=$(date +%s)
	if ! "$@" >"$log" 2>&1; then
		echo "run $i of $runs FAILED under the hog after $(($(date +%s) - start)) s:"; tail -40 "$log"
		exit 1
	fi
	echo "run $i of $runs passed under the hog ($(($(date +%s) - start)) s, $(date -u +%H:%M:%S) UTC)"
done
