#!/usr/bin/env python3
"""CPU per poll of the Python library's approach to a process tree.

Each poll does what a psutil-based watcher (the Python process-watchman)
does to learn a tree: psutil.Process(root).children(recursive=True), which
reads the parent of every process on the host, then create_time() of each
descendant, the identity that survives PID reuse.

The CPU time of this process (time.process_time: user + system) is measured
around each poll; wall time is reported too, but other load on a shared
machine inflates it more. Prints one JSON object:

  {"polls": N, "members": M, "host_procs": H, "cpu_ms_per_poll": C,
   "wall_ms_per_poll": W, "load1": L, "psutil": "5.9.8"}

members counts the root and its descendants found by the last poll.

Usage: pollbench.py --pid ROOT [--polls N]
(BenchmarkPollPass in reconcile/ runs it on the same host and tree as the
Go passes; scripts/pollbench.sh runs the whole table.)
"""

import argparse
import json
import os
import sys
import time

import psutil


def poll(root):
    p = psutil.Process(root)
    kids = p.children(recursive=True)
    ids = [(p.pid, p.create_time())]
    for c in kids:
        try:
            ids.append((c.pid, c.create_time()))
        except psutil.NoSuchProcess:
            pass
    return ids


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pid", type=int, required=True, help="root of the tree")
    ap.add_argument("--polls", type=int, default=20, help="polls to time")
    args = ap.parse_args()
    polls = max(args.polls, 1)
    poll(args.pid)  # warm up: imports, caches
    cpu = wall = 0.0
    ids = []
    for _ in range(polls):
        c0, w0 = time.process_time(), time.perf_counter()
        ids = poll(args.pid)
        cpu += time.process_time() - c0
        wall += time.perf_counter() - w0
    json.dump({
        "polls": polls,
        "members": len(ids),
        "host_procs": len(psutil.pids()),
        "cpu_ms_per_poll": cpu / polls * 1e3,
        "wall_ms_per_poll": wall / polls * 1e3,
        "load1": os.getloadavg()[0],
        "psutil": psutil.__version__,
    }, sys.stdout)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
