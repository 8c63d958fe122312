//go:build linux && (amd64 || arm64)

// Command benchsuite measures every performance claim of process-watchman
// side by side, on this machine, in one run, and prints one table with the
// targets marked met or missed. scripts/bench.sh builds and runs it (it
// needs root, for the proc connector).
//
// The ground truth comes from internal/workload (each process's PID and
// start ticks, recorded by a subreaper root), never from the watcher. The
// CPU figures come from a watcher running in its own process (this binary
// re-executed in a watcher role), so the workload's CPU is not counted.
//
// Sections (see BENCHMARKS.md for what each figure means):
//
//  1. capture rate by shape and child lifetime, connector against polling
//  2. fork-to-delivery latency through Watcher.Subscribe
//  3. watcher CPU per kernel event during a fork storm, inside and outside
//     the tree, against polling at 100 ms and forkstat
//  4. reconcile cost: full host scans, tree-local reconcile on a 5,000
//     process host
//  5. idle CPU, RSS, bytes per member with 10,000 members
//  6. 1 to 1,000 Watchers on one Hub during the same storm
package main

import (
	"flag"
	"fmt"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/process-watchman/watchman/internal/workload"
)

type options struct {
	quick    bool          // smaller counts, for a smoke run
	idle     time.Duration // idle CPU window
	gobench  string        // go test -bench output to include
	profile  string        // directory for CPU profiles of the storm watchers
	sections string        // which sections to run
	stormN   int           // children per storm workload
	stormK   int           // concurrent storm workloads
}

var opt options

func main() {
	workload.MaybeRun()
	if role := os.Getenv(envRole); role != "" {
		os.Exit(runRole(role))
	}
	flag.BoolVar(&opt.quick, "quick", false, "smaller counts and windows (a smoke run; figures are not the reference ones)")
	flag.DurationVar(&opt.idle, "idle", 30*time.Second, "idle CPU window")
	flag.StringVar(&opt.gobench, "gobench", "", "file with `go test -bench` output to include in the table")
	flag.StringVar(&opt.profile, "profile", "", "write CPU profiles of the storm watcher processes into this `dir`")
	flag.StringVar(&opt.sections, "sections", "1,2,3,4,5,6", "comma-separated sections to run")
	flag.IntVar(&opt.stormN, "storm", 6000, "children per storm workload")
	flag.IntVar(&opt.stormK, "storm-workloads", 2, "concurrent storm workloads")
	flag.Parse()
	if opt.quick {
		opt.idle = min(opt.idle, 5*time.Second)
		opt.stormN = min(opt.stormN, 1500)
	}
	if os.Geteuid() != 0 {
		fmt.Fprintln(os.Stderr, "benchsuite: needs root (the proc connector, SO_RCVBUFFORCE, 10,000 processes)")
		os.Exit(2)
	}
	if opt.profile != "" {
		if err := os.MkdirAll(opt.profile, 0o755); err != nil {
			fatalf("%v", err)
		}
	}
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM)
	go func() {
		s := <-sigs
		fmt.Fprintf(os.Stderr, "benchsuite: %v: killing the workloads\n", s)
		killAll()
		os.Exit(1)
	}()
	code := run()
	killAll()
	os.Exit(code)
}

func want(section int) bool {
	for _, s := range strings.Split(opt.sections, ",") {
		if strings.TrimSpace(s) == fmt.Sprint(section) {
			return true
		}
	}
	return false
}

func run() int {
	t := &table{}
	start := time.Now()
	m := describeMachine()
	logf("machine: %s", m.String())
	steps := []struct {
		n  int
		fn func(*table) error
	}{
		{1, sectionCapture},
		{2, sectionLatency},
		{5, sectionIdle}, // on the quiet host, before the pools
		{3, sectionStormCPU},
		{6, sectionManyWatchers},
		{4, sectionReconcile},
		{55, sectionMembers}, // section 5's 10,000 members, last: it needs the most processes
	}
	failed := false
	for _, s := range steps {
		n := s.n
		if n == 55 {
			n = 5
		}
		if !want(n) {
			continue
		}
		if err := s.fn(t); err != nil {
			logf("section %d: %v", n, err)
			t.add(n, "section failed", err.Error(), "", "")
			failed = true
		}
	}
	if opt.gobench != "" {
		if err := includeGoBench(t, opt.gobench); err != nil {
			logf("go benchmarks: %v", err)
		}
	}
	end := describeMachine()
	fmt.Println()
	fmt.Printf("process-watchman benchmark suite — %s\n", time.Now().UTC().Format("2006-01-02 15:04 UTC"))
	fmt.Printf("machine: %s\n", m.String())
	fmt.Printf("load average at start %s, at end %s; suite wall time %v\n", m.Load, end.Load, time.Since(start).Round(time.Second))
	if opt.quick {
		fmt.Println("QUICK RUN: smaller counts and windows; not reference figures")
	}
	fmt.Println()
	t.print(os.Stdout)
	if failed {
		return 1
	}
	return 0
}

func logf(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "benchsuite: "+format+"\n", args...)
}

func fatalf(format string, args ...any) {
	logf(format, args...)
	killAll()
	os.Exit(1)
}
