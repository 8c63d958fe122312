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
//  1. capture rate by shape and child lifetime, connector against polling;
//     names of fork+exec children at exit, Config.CaptureUsage off and on
//  2. fork-to-delivery latency through Watcher.Subscribe
//  3. watcher CPU per kernel event during a fork storm, inside and outside
//     the tree, against polling at 100 ms and forkstat; the cost of
//     Config.CaptureUsage against the same watcher without it
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

	"github.com/process-watchman/watchman/internal/cstorm"
	"github.com/process-watchman/watchman/internal/workload"
)

type options struct {
	quick    bool          // smaller counts, for a smoke run
	idle     time.Duration // idle CPU window
	gobench  string        // go test -bench output to include
	profile  string        // directory for CPU profiles of the storm watchers
	sections string        // which sections to run
	only     string        // section 3: run only the library variants whose name contains it
	coalesce string        // section 3: the HubConfig.Coalesce values of the coalescing rows
	children int           // children of a C storm (sections 3 and 6)
	rounds   int           // storms per row in section 3 (the median is kept)
	pwatch   string        // the pwatch binary (section 3's CLI rows)
	pollPy   string        // scripts/pollbench.py (section 7)
	python   string        // the interpreter with psutil (section 7)
	hosts    string        // host sizes of section 7
	commit   string        // the commit measured, for the header
	sched    string        // how the run was scheduled (bench.sh: its autogroup and nice), for the header
}

// suite is one run of the benchmark suite.
type suite struct {
	opt  options
	live liveSet
	// idleShare is the idle CPU share of one watcher (section 5), for
	// section 6's steady state.
	idleShare float64
	// bin is the C storm (internal/cstorm), built at the start in tmp.
	bin string
	tmp string
}

func main() {
	workload.MaybeRun()
	if role := os.Getenv(envRole); role != "" {
		os.Exit(runRole(role))
	}
	bs := &suite{}
	o := &bs.opt
	flag.BoolVar(&o.quick, "quick", false, "smaller counts and windows (a smoke run; figures are not the reference ones)")
	flag.DurationVar(&o.idle, "idle", 30*time.Second, "idle CPU window")
	flag.StringVar(&o.gobench, "gobench", "", "file with `go test -bench` output to include in the table")
	flag.StringVar(&o.profile, "profile", "", "write CPU profiles of the storm watchers into this `dir`")
	flag.StringVar(&o.sections, "sections", "1,2,3,4,5,6,7", "comma-separated sections to run")
	flag.StringVar(&o.only, "only", "", "section 3: run only the library variants whose name contains this `text` (the anchor runs beside each)")
	flag.StringVar(&o.coalesce, "coalesce", "2ms,5ms", "section 3: comma-separated HubConfig.Coalesce `durations` of the coalescing rows")
	flag.IntVar(&o.children, "storm", 20000, "children of a C storm root")
	flag.IntVar(&o.rounds, "rounds", 3, "storms per row of section 3 (the median is kept)")
	flag.StringVar(&o.pwatch, "pwatch", "", "the pwatch `binary` for section 3's CLI rows (go build ./cmd/pwatch); none: the rows are skipped")
	flag.StringVar(&o.pollPy, "pollpy", "scripts/pollbench.py", "the psutil poll script for section 7")
	flag.StringVar(&o.python, "python", "/usr/bin/python3", "the Python with psutil (Debian's python3-psutil) for section 7")
	flag.StringVar(&o.hosts, "hosts", "1000,5000,20000", "host sizes (processes) of section 7")
	flag.StringVar(&o.commit, "commit", "", "the commit measured (printed in the header)")
	flag.StringVar(&o.sched, "sched", "", "how the run was scheduled (printed in the header)")
	flag.Parse()
	if o.quick {
		o.idle = min(o.idle, 5*time.Second)
		o.children = min(o.children, 2000)
		o.rounds = 1
		o.hosts = "1000"
	}
	if os.Geteuid() != 0 {
		fmt.Fprintln(os.Stderr, "benchsuite: needs root (the proc connector, SO_RCVBUFFORCE, 20,000 processes)")
		os.Exit(2)
	}
	if o.profile != "" {
		if err := os.MkdirAll(o.profile, 0o755); err != nil {
			bs.fatalf("%v", err)
		}
	}
	tmp, err := os.MkdirTemp("", "benchsuite")
	if err != nil {
		bs.fatalf("%v", err)
	}
	bs.tmp = tmp
	if bs.bin, err = cstorm.Build(tmp); err != nil {
		os.RemoveAll(tmp)
		bs.fatalf("%v", err)
	}
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM)
	go func() {
		s := <-sigs
		fmt.Fprintf(os.Stderr, "benchsuite: %v: killing the workloads\n", s)
		bs.killAll()
		os.RemoveAll(tmp)
		os.Exit(1)
	}()
	code := bs.run()
	bs.killAll()
	os.RemoveAll(tmp)
	os.Exit(code)
}

func (bs *suite) want(section int) bool {
	for _, s := range strings.Split(bs.opt.sections, ",") {
		if strings.TrimSpace(s) == fmt.Sprint(section) {
			return true
		}
	}
	return false
}

func (bs *suite) run() int {
	t := &table{}
	start := time.Now()
	m := describeMachine()
	logf("machine: %s", m.String())
	steps := []struct {
		n  int
		fn func(*table) error
	}{
		{1, bs.sectionCapture},
		{2, bs.sectionLatency},
		{5, bs.sectionIdle}, // on the quiet host, before the pools
		{3, bs.sectionStormCPU},
		{6, bs.sectionManyWatchers},
		{4, bs.sectionReconcile},
		{55, bs.sectionMembers}, // section 5's 10,000 members: it needs many processes
		{7, bs.sectionPollCost}, // last: it fills the host to 20,000 processes
	}
	failed := false
	for _, s := range steps {
		n := s.n
		if n == 55 {
			n = 5
		}
		if !bs.want(n) {
			continue
		}
		t.markLoad()
		logf("section %d: load average %s", n, t.load)
		if err := s.fn(t); err != nil {
			logf("section %d: %v", n, err)
			t.add(n, "section failed", err.Error(), "", "")
			failed = true
		}
	}
	if bs.opt.gobench != "" {
		if err := includeGoBench(t, bs.opt.gobench); err != nil {
			logf("go benchmarks: %v", err)
		}
	}
	end := describeMachine()
	fmt.Println()
	fmt.Printf("process-watchman benchmark suite — %s\n", time.Now().UTC().Format("2006-01-02 15:04 UTC"))
	fmt.Printf("machine: %s\n", m.String())
	if bs.opt.commit != "" {
		fmt.Printf("code: commit %s\n", bs.opt.commit)
	}
	if bs.opt.sched != "" {
		fmt.Printf("scheduling: %s\n", bs.opt.sched)
	}
	fmt.Printf("load average at start %s, at end %s; suite wall time %v\n", m.Load, end.Load, time.Since(start).Round(time.Second))
	if bs.opt.quick {
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

func (bs *suite) fatalf(format string, args ...any) {
	logf(format, args...)
	bs.killAll()
	os.Exit(1)
}
