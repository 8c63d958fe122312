#!/bin/sh
# pollbench.sh: CPU per polling pass, walk of the tree (reconcile.Scanner.Walk)
# against a full host scan and the Python library's approach (psutil,
# scripts/pollbench.py), for trees of 10, 100 and 1,000 processes on hosts of
# 1,000, 5,000 and 20,000 processes, all in one run on the same host and trees.
#
#   scripts/pollbench.sh [HOSTS [TREES]]     defaults: 1000,5000,20000 10,100,1000
#
# Needs python3-psutil for the psutil column (apt-get install python3-psutil;
# PWATCH_PYTHON names the interpreter). The host is filled with idle sleep
# processes, which the benchmark ends; pid_max must leave room for them.
# Figures are CPU time (getrusage / time.process_time) per pass; load1 is
# the one-minute load average read before each of the three measurements,
# since other work on a shared machine still inflates them; procs listed is
# what /proc listed before the last. The raw benchmark
# output is kept in $OUT (default /tmp/pollbench.txt).
set -eu
cd "$(dirname "$0")/.."
HOSTS=${1:-1000,5000,20000}
TREES=${2:-10,100,1000}
OUT=${OUT:-/tmp/pollbench.txt}
echo "# $(date -u +%FT%TZ) $(uname -r) $(nproc) cores; before: $(uptime)"
PWATCH_POLLBENCH_HOSTS=$HOSTS PWATCH_POLLBENCH_TREES=$TREES \
	go test -run '^$' -bench '^BenchmarkPollPass$' -benchtime "${BENCHTIME:-1s}" -timeout 60m ./reconcile/ >"$OUT" 2>&1 || {
	cat "$OUT"
	exit 1
}
echo "# after: $(uptime)"
awk '
/^BenchmarkPollPass\// {
	split($1, p, "/"); host = p[2]; tree = p[3]; m = p[4]; sub(/-[0-9]+$/, "", m)
	for (i = 3; i < NF; i++) {
		if ($(i+1) == "cpu-ms/pass") cpu[host, tree, m] = $i
		if ($(i+1) == "procs") procs[host, tree] = $i
		if ($(i+1) == "load1") load[host, tree] = load[host, tree] (load[host, tree] == "" ? "" : "/") $i
		if ($(i+1) == "members") members[host, tree] = $i
	}
	if (!((host, tree) in seen)) { seen[host, tree] = 1; order[++n] = host SUBSEP tree }
}
END {
	print "| host (target) | procs listed | tree | walk cpu-ms/pass | host scan cpu-ms/pass | psutil cpu-ms/poll | scan/walk | psutil/walk | load1 (walk/scan/psutil) |"
	print "|---|---|---|---|---|---|---|---|---|"
	for (k = 1; k <= n; k++) {
		split(order[k], hk, SUBSEP); h = hk[1]; t = hk[2]
		w = cpu[h, t, "walk"]; s = cpu[h, t, "scan"]; ps = cpu[h, t, "psutil"]
		sub(/host=/, "", h); sub(/tree=/, "", t)
		printf "| %s | %d | %d | %.3f | %.2f | %s | %s | %s | %s |\n", h, procs[hk[1], hk[2]], members[hk[1], hk[2]], w, s,
			(ps == "" ? "n/a" : sprintf("%.2f", ps)), (w > 0 ? sprintf("%.0fx", s / w) : "-"),
			(w > 0 && ps != "" ? sprintf("%.0fx", ps / w) : "-"), load[hk[1], hk[2]]
	}
}' "$OUT"
