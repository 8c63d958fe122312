#!/usr/bin/env bash
# The project's benchmark command (named in the README and BENCHMARKS.md).
#
# Builds everything, runs the Go micro-benchmarks (decoder, tracker,
# scanner), then the benchmark suite (internal/benchsuite): capture rate,
# latency, CPU per event, reconcile cost, idle cost and memory, many
# watchers — all on this machine, in this run — and prints one table with
# the machine's description and the targets marked met or missed.
#
# Needs root (the proc connector, SO_RCVBUFFORCE, 10,000 processes) and
# takes about 5 minutes. Progress goes to stderr, the table to stdout.
#
#   scripts/bench.sh                 # the full run
#   scripts/bench.sh -quick          # a smoke run with smaller counts
#   scripts/bench.sh -profile DIR    # also CPU profiles of the storm watchers
#   scripts/bench.sh -sections 1,3   # some sections only (1-6)
#
# Environment: BENCH_MAX_LOAD (default 0.5): wait up to BENCH_WAIT seconds
# (default 300) for the 1-minute load average to fall below it first, since
# the machine may be shared; BENCH_GOBENCH=0 skips the Go benchmarks.
set -euo pipefail
cd "$(dirname "$0")/.."

if [[ $(id -u) -ne 0 ]]; then
	echo "bench.sh: needs root (the proc connector); try: sudo $0 $*" >&2
	exit 2
fi

max_load=${BENCH_MAX_LOAD:-0.5}
wait_s=${BENCH_WAIT:-300}
load() { cut -d' ' -f1 /proc/loadavg; }
for ((i = 0; i < wait_s; i += 5)); do
	awk -v l="$(load)" -v m="$max_load" 'BEGIN { exit !(l < m) }' && break
	((i % 30 == 0)) && echo "bench.sh: load average $(load) >= $max_load, waiting (up to ${wait_s}s)..." >&2
	sleep 5
done
if ! awk -v l="$(load)" -v m="$max_load" 'BEGIN { exit !(l < m) }'; then
	echo "bench.sh: WARNING: load average $(load) is still >= $max_load: the figures will be noisy" >&2
fi

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

echo "bench.sh: building" >&2
go build ./...
go build -o "$tmp/benchsuite" ./internal/benchsuite

gobench=()
if [[ ${BENCH_GOBENCH:-1} != 0 ]]; then
	# One package at a time, each with a timeout, so that a benchmark
	# that fails or hangs costs its own figures only.
	: >"$tmp/gobench.txt"
	for pkg in ./connector ./tracker ./reconcile; do
		echo "bench.sh: go test -run XXX -bench . -benchmem $pkg" >&2
		ok=1
		go test -run XXX -bench . -benchmem -timeout 2m "$pkg" >"$tmp/pkg.txt" 2>&1 || ok=0
		grep -E '^(pkg:|cpu:|Benchmark|PASS|FAIL|ok|panic:|\*\*\*)' "$tmp/pkg.txt" >&2 || true
		if ((!ok)); then
			echo "bench.sh: WARNING: the benchmarks of $pkg failed or timed out; their figures are partial" >&2
			sed -n '/^panic:/,/^$/p' "$tmp/pkg.txt" | head -20 >&2 || true
		fi
		grep -E '^(pkg:|Benchmark)' "$tmp/pkg.txt" >>"$tmp/gobench.txt" || true
	done
	gobench=(-gobench "$tmp/gobench.txt")
fi

echo "bench.sh: benchmark suite (load average $(load))" >&2
"$tmp/benchsuite" "${gobench[@]}" "$@"
