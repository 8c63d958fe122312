#!/usr/bin/env bash
# Fuzz: scripts/fuzz.sh [SECONDS]   (default 20)
#
# Runs each native fuzz target for SECONDS, one after the other, starting
# from its checked-in seed corpus (testdata/fuzz/<Target>), and prints the
# executions of each. A crasher fails the run; Go writes it to the
# package's testdata/fuzz/<Target>/, where it becomes a regular test case
# once committed (go test runs the corpus as tests).
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${1:-20}
targets=(
	"./connector FuzzDecode"
	"./connector FuzzReceive"
	"./reconcile FuzzParseStat"
	"./tracker FuzzTracker"
)
log=$(mktemp)
trap 'rm -f "$log"' EXIT
summary=()
status=0
for t in "${targets[@]}"; do
	read -r pkg name <<<"$t"
	echo "== $name ($pkg, ${secs}s)"
	if ! go test -run '^$' -fuzz "^${name}\$" -fuzztime "${secs}s" "$pkg" 2>&1 | tee "$log"; then
		status=1
		summary+=("$name FAILED (see testdata/fuzz/$name in $pkg)")
		continue
	fi
	execs=$(grep -o 'execs: [0-9]*' "$log" | tail -1 | awk '{print $2}')
	summary+=("$name ${execs:-?} executions, no crasher")
done
echo "== fuzz summary (${secs}s each)"
printf '%s\n' "${summary[@]}"
exit $status
