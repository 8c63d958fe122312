//go:build linux && (amd64 || arm64)

package main

import (
	"bytes"
	"fmt"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"syscall"
	"time"

	"github.com/process-watchman/watchman/internal/workload"
)

// stormRun is one fork storm (opt.stormK concurrent ForkOnly workloads of
// opt.stormN children each, no rate limit) under one watcher child.
type stormRun struct {
	args     watcherArgs // Roots and Inside are filled in by run
	inside   int         // how many storm trees are watched (the first ones)
	extra    []int       // roots besides the storm's (idle processes)
	forkstat bool        // run forkstat -q beside the watcher
}

type stormResult struct {
	rep       watcherReport
	records   int // ground-truth processes of the storm
	captured  int // of those, in the inside watchers' Added
	insideRec int // ground-truth processes of the inside trees
	storm     time.Duration
	forkstat  *forkstatResult
}

type forkstatResult struct {
	cpu    time.Duration
	events uint64 // as forkstat's own statistics count them, if parsed
	out    string
}

func (r stormRun) run() (stormResult, error) {
	var sr stormResult
	ps := make([]*workload.Process, opt.stormK)
	for i := range ps {
		p, err := startWorkload(workload.Spec{Storm: &workload.Storm{Count: opt.stormN}, Timeout: 5 * time.Minute})
		if err != nil {
			for _, q := range ps[:i] {
				kill(q)
			}
			return sr, err
		}
		ps[i] = p
	}
	a := r.args
	a.Roots, a.Inside, a.WaitDone = nil, r.inside, true
	for _, p := range ps[:r.inside] {
		a.Roots = append(a.Roots, p.PID())
	}
	a.Roots = append(a.Roots, r.extra...)
	wp, err := startWatcher(a)
	if err != nil {
		for _, p := range ps {
			kill(p)
		}
		return sr, err
	}
	var fs *exec.Cmd
	var fsOut bytes.Buffer
	var fs0 time.Duration
	if r.forkstat {
		if path, err := exec.LookPath("forkstat"); err == nil {
			fs = exec.Command(path, "-q")
			fs.Stdout, fs.Stderr = &fsOut, &fsOut
			if err := fs.Start(); err != nil {
				fs = nil
			} else {
				time.Sleep(300 * time.Millisecond)
				fs0, _ = cpuOf(fs.Process.Pid)
			}
		}
	}
	wp.send("go")
	t0 := time.Now()
	for _, p := range ps {
		p.Go()
	}
	var firstErr error
	var results []*workload.Result
	for _, p := range ps {
		res, err := finish(p)
		if err != nil && firstErr == nil {
			firstErr = err
		}
		if res != nil {
			results = append(results, res)
		}
	}
	sr.storm = time.Since(t0)
	rep, err := wp.finish()
	if err != nil && firstErr == nil {
		firstErr = err
	}
	sr.rep = rep
	if fs != nil {
		// Let forkstat drain what is queued, as the watcher did.
		time.Sleep(200 * time.Millisecond)
		fs1, _ := cpuOf(fs.Process.Pid)
		fs.Process.Signal(syscall.SIGINT)
		done := make(chan struct{})
		go func() { fs.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(5 * time.Second):
			fs.Process.Kill()
			<-done
		}
		sr.forkstat = &forkstatResult{cpu: fs1 - fs0, out: fsOut.String()}
		sr.forkstat.events = parseForkstat(sr.forkstat.out)
	}
	seen := idSet{}
	seen.addAll(rep.Added)
	for i, res := range results {
		sr.records += len(res.Records)
		if i < r.inside {
			sr.insideRec += len(res.Records)
			sr.captured += captured(res.Records, seen)
		}
	}
	return sr, firstErr
}

// parseForkstat sums the counts of forkstat -S's statistics table
// ("Fork", "Exec", "Exit", ... lines ending in a count).
var forkstatLine = regexp.MustCompile(`(?m)^\s*(Fork|Exec|Exit|Core Dump|Comm|Clone|Ptrace|UID|SID|GID|Coredump)\s+(\d+)`)

func parseForkstat(out string) uint64 {
	var n uint64
	for _, m := range forkstatLine.FindAllStringSubmatch(out, -1) {
		v, _ := strconv.ParseUint(m[2], 10, 64)
		n += v
	}
	return n
}

func profilePath(name string) string {
	if opt.profile == "" {
		return ""
	}
	return filepath.Join(opt.profile, name+".pprof")
}

func perEvent(cpu time.Duration, events uint64) time.Duration {
	if events == 0 {
		return 0
	}
	return cpu / time.Duration(events)
}

func coreShare(cpu, wall time.Duration) string {
	if wall <= 0 {
		return "n/a"
	}
	return fmt.Sprintf("%.1f%% of a core", 100*float64(cpu)/float64(wall))
}

// sectionStormCPU: the watcher's CPU per kernel event during the fastest
// fork storm this machine sustains, inside the tree and outside it, in
// connector mode and in polling mode at 100 ms, with forkstat beside the
// outside run, and a bare connector.Receive loop as the floor.
func sectionStormCPU(t *table) error {
	idle, err := startPool(1)
	if err != nil {
		return err
	}
	defer idle.stop()
	con := watcherArgs{Strategy: "connector"}
	poll := watcherArgs{Strategy: "poll", Interval: 100 * time.Millisecond}
	withProf := func(a watcherArgs, name string) watcherArgs { a.Profile = profilePath(name); return a }
	all := opt.stormK
	runs := []struct {
		name string
		run  stormRun
	}{
		{"connector, inside the tree", stormRun{args: withProf(con, "storm-inside"), inside: all}},
		{"connector, outside the tree", stormRun{args: withProf(con, "storm-outside"), extra: idle.pids, forkstat: true}},
		{"poll 100 ms, inside the tree", stormRun{args: poll, inside: all}},
		{"poll 100 ms, outside the tree", stormRun{args: poll, extra: idle.pids}},
		{"floor: bare connector.Receive loop", stormRun{args: withProf(watcherArgs{Strategy: "raw"}, "storm-raw")}},
	}
	res := make([]stormResult, len(runs))
	for i, c := range runs {
		logf("storm: %s", c.name)
		r, err := c.run.run()
		if err != nil {
			return fmt.Errorf("%s: %w", c.name, err)
		}
		res[i] = r
	}
	targets := []time.Duration{15 * time.Microsecond, 3 * time.Microsecond}
	raw := res[4]
	rawPer := perEvent(raw.rep.CPU, hubEvents(raw.rep.Hub))
	for i, c := range runs {
		r := res[i]
		ev := hubEvents(r.rep.Hub)
		rate := float64(r.records) / r.storm.Seconds()
		desc := fmt.Sprintf("%s CPU over %.2f s (%s); storm of %d processes at %.0f/s", ms(r.rep.CPU), r.rep.Wall.Seconds(),
			coreShare(r.rep.CPU, r.rep.Wall), r.records, rate)
		if c.run.inside > 0 {
			desc += fmt.Sprintf(", captured %s", pct(r.captured, r.insideRec))
		}
		switch {
		case i < 2:
			per := perEvent(r.rep.CPU, ev)
			desc = fmt.Sprintf("**%s per event** (%d kernel events, %d overruns, %d lost); ", us(per), ev, r.rep.Hub.Overruns, r.rep.Hub.Lost) + desc
			p := res[i+2]
			ratio := float64(r.rep.CPU) / float64(r.rep.Wall) / (float64(p.rep.CPU) / float64(p.rep.Wall))
			desc += fmt.Sprintf("; %.1fx the CPU rate of polling at 100 ms; %.1fx the floor", ratio, float64(per)/float64(rawPer))
			t.add(3, "watcher CPU in a fork storm: "+c.name, desc, "≤ "+us(targets[i])+" per event", verdict(per <= targets[i]))
		case i < 4:
			desc += fmt.Sprintf("; %d scans", r.rep.FullScans)
			t.add(3, "watcher CPU in a fork storm: "+c.name, desc, "(reference)", "—")
		default:
			desc = fmt.Sprintf("**%s per event** (%d events in %d reads: %.2f events per wakeup, %d overruns); ", us(rawPer), ev, r.rep.Receives,
				float64(ev)/float64(max(r.rep.Receives, 1)), r.rep.Hub.Overruns) + desc
			t.add(3, c.name+" (no /proc reads, no tracking)", desc, "(what a wakeup costs here)", "—")
		}
	}
	out := res[1]
	if f := out.forkstat; f != nil {
		ev := hubEvents(out.rep.Hub)
		per := perEvent(f.cpu, ev)
		ours := perEvent(out.rep.CPU, ev)
		val := fmt.Sprintf("%s CPU over the same storm, **%s per kernel event** (our hub's count, %d)", ms(f.cpu), us(per), ev)
		if f.events > 0 {
			val += fmt.Sprintf("; forkstat counted %d events itself", f.events)
		}
		val += fmt.Sprintf("; the watcher outside the tree costs %.2fx forkstat", float64(ours)/float64(per))
		t.add(3, "forkstat -q beside the outside run (utime+stime, 10 ms ticks)", val, "watcher well under forkstat (≤ 0.5x)", verdict(ours*2 <= per))
	} else {
		t.add(3, "forkstat -q", "not installed (apt-get install -y forkstat)", "", "—")
	}
	return nil
}

// sectionManyWatchers: 1, 10, 100 and 1,000 Watchers in one process on one
// Hub during the same storm. Watcher 0 watches the first storm workload's
// tree; the others watch idle processes (one each). The other storm
// workloads run unwatched.
func sectionManyWatchers(t *table) error {
	ns := []int{1, 10, 100, 1000}
	if opt.quick {
		ns = []int{1, 10, 100}
	}
	idle, err := startPool(ns[len(ns)-1])
	if err != nil {
		return err
	}
	defer idle.stop()
	var base stormResult
	for _, n := range ns {
		logf("storm: %d watchers", n)
		r, err := stormRun{
			args:   watcherArgs{Strategy: "connector", Profile: profilePath(fmt.Sprintf("watchers-%d", n))},
			inside: 1,
			extra:  idle.pids[:n-1],
		}.run()
		if err != nil {
			return fmt.Errorf("%d watchers: %w", n, err)
		}
		if n == 1 {
			base = r
		}
		ev := hubEvents(r.rep.Hub)
		lost := r.rep.Hub.Lost + r.rep.Overruns
		ratio := float64(r.rep.CPU) / float64(base.rep.CPU)
		val := fmt.Sprintf("%s CPU (%s per event, %.2fx one watcher's), %d overruns, %d lost, captured %s; %d reconciles (%d full scans) in the window; attach %v",
			ms(r.rep.CPU), us(perEvent(r.rep.CPU, ev)), ratio, r.rep.Overruns, r.rep.Hub.Lost, pct(r.captured, r.insideRec),
			r.rep.Reconciles, r.rep.FullScans, r.rep.Attach.Round(time.Millisecond))
		// Each Watcher does its own full host scan at Attach, and every
		// 10th periodic reconcile (every 20 s by default): in steady state
		// n watchers scan the host n/20 times a second.
		scan := r.rep.Attach / time.Duration(n)
		val += fmt.Sprintf("; steady state: %d full host scans every 20 s ≈ %.1f%% of a core (at %s a scan, from the attach)",
			n, 100*float64(scan)*float64(n)/float64(20*time.Second), ms(scan))
		target, v := "(informative)", "—"
		if n == ns[len(ns)-1] && n == 1000 {
			target = "≤ 2x one watcher, no lost events"
			v = verdict(ratio <= 2 && lost == 0 && r.captured == r.insideRec)
		} else if lost > 0 {
			v = "**LOST EVENTS**"
		}
		t.add(6, fmt.Sprintf("%d watchers on one Hub in the storm", n), val, target, v)
	}
	// Steady state: the same watchers on idle trees, no storm, over a
	// window that holds every watcher's first periodic full scan (the 10th
	// reconcile, 20 s after its Attach).
	n := len(idle.pids)
	window := 21 * time.Second
	if opt.quick {
		window = 3 * time.Second
	}
	logf("steady state: %d idle watchers for %v", n, window)
	wp, err := startWatcher(watcherArgs{Strategy: "connector", Roots: idle.pids})
	if err != nil {
		return err
	}
	wp.send("go")
	time.Sleep(window)
	rep, err := wp.finish()
	if err != nil {
		return err
	}
	share := float64(rep.CPU) / float64(rep.Wall)
	val := fmt.Sprintf("**%.2f%% of a core** (%s CPU over %.0f s: %d reconciles, %d of them full host scans of %d processes); one idle watcher: %.3f%% (section 5)",
		100*share, ms(rep.CPU), rep.Wall.Seconds(), rep.Reconciles, rep.FullScans, procCount(), 100*idleShare)
	ok := idleShare > 0 && share <= 2*idleShare
	t.add(6, fmt.Sprintf("%d idle watchers on one Hub, steady state (no storm)", n), val, "≤ 2x one watcher", verdict(ok))
	return nil
}
