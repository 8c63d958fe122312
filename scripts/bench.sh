#!/usr/bin/env bash
# The project's benchmark command (named in the README and BENCHMARKS.md).
#
# Builds everything (the library, pwatch, the benchmark suite, and the C
# storm with gcc), runs the Go micro-benchmarks (decoder, reader variants,
# tracker, scanner), then the benchmark suite (internal/benchsuite): capture
# rate, latency, CPU per kernel event against forkstat -q on C fork storms
# (library and CLI), reconcile cost, idle cost and memory, many watchers,
# and polling cost against psutil — all on this machine, in this run — and
# prints one table with the machine's description, the load average each
# row ran under, and the targets marked met or missed.
#
# Needs root (the proc connector, SO_RCVBUFFORCE, eBPF, 20,000 processes),
# gcc, forkstat and Debian's python3-psutil (installed with apt-get if
# missing; where that fails the rows that need them say they were skipped).
# The full run took 23 minutes on the 2-vCPU VM of BENCHMARKS.md (2 min of
# Go benchmarks, 21 of suite, 14-15 of them section 3's 24 storms of 20,000
# children: a fork costs about 1 ms of CPU on that paravirtualised guest,
# so a storm runs at 500-700 forks/s); `-rounds 1` (one storm per row
# instead of a median of 3) or `-storm 5000` shorten it. Progress goes to
# stderr, the table to stdout.
#
#   scripts/bench.sh                 # the full run
#   scripts/bench.sh -quick          # a smoke run with smaller counts (not reference figures)
#   scripts/bench.sh -profile DIR    # also CPU profiles of the storm watchers
#   scripts/bench.sh -sections 3,7   # some sections only (1-7)
#
# Environment: BENCH_MAX_LOAD (default 0.5): wait up to BENCH_WAIT seconds
# (default 300) for the 1-minute load average to fall below it first, since
# the machine may be shared; BENCH_GOBENCH=0 skips the Go benchmarks;
# BENCH_COMMIT names the commit when the tree is an export (git archive
# COMMIT | tar -x), the way to measure one commit while others edit the
# working tree; BENCH_NICE (above) gives the run a session of its own with
# that autogroup nice.
set -euo pipefail
cd "$(dirname "$0")/.."

if [[ $(id -u) -ne 0 ]]; then
	echo "bench.sh: needs root (the proc connector); try: sudo $0 $*" >&2
	exit 2
fi

# BENCH_NICE: run the whole benchmark in a session of its own whose
# autogroup has this nice value (-20..19). With autogroup scheduling (the
# default here), a process's own nice only ranks it within its session, so
# this is the way to give the benchmark (storm, watchers, forkstat, pwatch
# alike) the CPU on a machine busy with other sessions' work. Opt-in: it
# slows the others; the table's header says it was used.
if [[ -n ${BENCH_NICE:-} && -z ${BENCH_NICED:-} ]]; then
	export BENCH_NICED=$BENCH_NICE
	exec setsid -w bash -c 'echo "$BENCH_NICE" >/proc/self/autogroup && exec "$0" "$@"' "$0" "$@"
fi

quick=0
for a in "$@"; do
	[[ $a == -quick || $a == --quick ]] && quick=1
done

# The anchors: forkstat (section 3) and Debian's python3-psutil (section 7).
python=/usr/bin/python3
need=()
command -v forkstat >/dev/null || need+=(forkstat)
"$python" -c 'import psutil' 2>/dev/null || need+=(python3-psutil)
command -v gcc >/dev/null || need+=(gcc)
if ((${#need[@]})); then
	echo "bench.sh: installing ${need[*]} (apt-get)" >&2
	if ! { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}"; } >&2; then
		echo "bench.sh: WARNING: could not install ${need[*]}: the rows that need them are skipped" >&2
	fi
fi

# pid_max: section 7 raises it for its filler and restores it; restore it
# here too if the suite dies first.
pid_max=$(cat /proc/sys/kernel/pid_max)
tmp=$(mktemp -d)
cleanup() {
	[[ $(cat /proc/sys/kernel/pid_max) == "$pid_max" ]] || echo "$pid_max" >/proc/sys/kernel/pid_max
	rm -rf "$tmp"
}
trap cleanup EXIT

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

echo "bench.sh: building (load average $(load))" >&2
go build ./...
go build -o "$tmp/benchsuite" ./internal/benchsuite
go build -o "$tmp/pwatch" ./cmd/pwatch
if [[ -n ${BENCH_COMMIT:-} ]]; then
	commit=$BENCH_COMMIT
elif commit=$(git rev-parse --short HEAD 2>/dev/null); then
	git diff --quiet HEAD -- . 2>/dev/null || commit+=" plus uncommitted changes of the working tree"
else
	commit="unknown (not a git checkout; set BENCH_COMMIT)"
fi
echo "bench.sh: code of commit $commit" >&2

gobench=()
if [[ ${BENCH_GOBENCH:-1} != 0 ]]; then
	# One package at a time, each with a timeout, so that a benchmark
	# that fails or hangs costs its own figures only. The reader variants
	# (BenchmarkReaderCPU: every variant and forkstat -q on one C storm;
	# BenchmarkReaderLatency) run once each; the polling pass is section 7.
	storm_children=20000
	((quick)) && storm_children=2000
	: >"$tmp/gobench.txt"
	runbench() {
		local pkg=$1
		shift
		echo "bench.sh: go test -run XXX -benchmem $* $pkg (load average $(load))" >&2
		local ok=1
		STORM_CHILDREN=$storm_children go test -run XXX -benchmem -timeout 3m "$@" "$pkg" >"$tmp/pkg.txt" 2>&1 || ok=0
		grep -E '^(pkg:|cpu:|Benchmark|PASS|FAIL|ok|panic:|\*\*\*|storm|  )' "$tmp/pkg.txt" >&2 || true
		if ((!ok)); then
			echo "bench.sh: WARNING: the benchmarks of $pkg ($*) failed or timed out; their figures are partial" >&2
			sed -n '/^panic:/,/^$/p' "$tmp/pkg.txt" | head -20 >&2 || true
		fi
		grep -E '^(pkg:|Benchmark)' "$tmp/pkg.txt" >>"$tmp/gobench.txt" || true
	}
	runbench ./connector -bench . -skip 'ReaderCPU|ReaderLatency'
	runbench ./connector -bench 'ReaderCPU' -benchtime 1x
	runbench ./connector -bench 'ReaderLatency' -benchtime 1x
	runbench ./tracker -bench .
	runbench ./reconcile -bench . -skip PollPass
	gobench=(-gobench "$tmp/gobench.txt")
fi

echo "bench.sh: benchmark suite (load average $(load))" >&2
echo "bench.sh: code of commit $commit" >&2
sched="autogroup $(tr -s ' ' <"/proc/self/autogroup")"
echo "bench.sh: scheduling: $sched" >&2
"$tmp/benchsuite" -sched "$sched" -commit "$commit" -pwatch "$tmp/pwatch" -pollpy scripts/pollbench.py -python "$python" "${gobench[@]}" "$@"
