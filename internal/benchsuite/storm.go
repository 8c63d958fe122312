//go:build linux && (amd64 || arm64)

package main

import (
	"bufio"
	"bytes"
	"cmp"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/process-watchman/watchman/internal/cstorm"
)

// The kernel-side tree filter's two settings (HubConfig.FilterEntries).
const (
	filterOn  = 0  // the default
	filterOff = -1 // events filtered in user space
)

func filterName(f int) string {
	if f < 0 {
		return "filter off"
	}
	return "filter on"
}

// cStormRun is one C storm (internal/cstorm: a root that forks
// bs.opt.children children that exit at once, flat out) under one watcher
// child, with forkstat -q listening at the same time if asked.
type cStormRun struct {
	args     watcherArgs // Roots, Inside and WaitDone are filled in by run
	inside   bool        // the first watcher watches the storm's root
	extra    []int       // roots besides the storm's (idle processes)
	forkstat bool
}

type cStormResult struct {
	rep      watcherReport
	children int
	forked   time.Duration // the root's fork loop, from its gate to its last fork
	fsCPU    time.Duration // forkstat -q's CPU over the window (0: not run)
	fsErr    error
}

// stormEvents is the kernel events of a storm: a fork and an exit per child.
func stormEvents(children int) uint64 { return 2 * uint64(children) }

func (r cStormResult) perEvent() time.Duration { return perEvent(r.rep.CPU, stormEvents(r.children)) }

func (r cStormResult) rate() float64 {
	if r.forked <= 0 {
		return 0
	}
	return float64(r.children) / r.forked.Seconds()
}

// captured is the share of the storm's children in the inside watcher's
// Added (the storm's children are its only new members).
func (r cStormResult) captured() string {
	return pct(min(len(r.rep.Added), r.children), r.children)
}

func (bs *suite) startStorm(n, rate int) (*cstorm.Storm, func(), error) {
	st, err := cstorm.Start(bs.bin, n, rate)
	if err != nil {
		return nil, nil, err
	}
	return st, bs.live.track(st.Kill), nil
}

// startForkstat starts forkstat -q (the anchor: it hears every event of
// the host and prints nothing) and gives it time to start.
func (bs *suite) startForkstat() (*exec.Cmd, func(), error) {
	path, err := exec.LookPath("forkstat")
	if err != nil {
		return nil, nil, fmt.Errorf("forkstat is not installed (apt-get install -y forkstat)")
	}
	fs := exec.Command(path, "-q")
	if err := fs.Start(); err != nil {
		return nil, nil, err
	}
	forget := bs.live.track(func() { _ = fs.Process.Kill(); _ = fs.Wait() })
	time.Sleep(300 * time.Millisecond) // its start-up is not part of the window
	return fs, forget, nil
}

// stopForkstat ends forkstat (SIGINT, as a user would) and reaps it.
func stopForkstat(fs *exec.Cmd) {
	_ = fs.Process.Signal(syscall.SIGINT)
	done := make(chan struct{})
	go func() { _ = fs.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		_ = fs.Process.Kill()
		<-done
	}
}

func (r cStormRun) run(bs *suite) (cStormResult, error) {
	res := cStormResult{children: bs.opt.children}
	st, forget, err := bs.startStorm(bs.opt.children, 0)
	if err != nil {
		return res, err
	}
	defer forget()
	a := r.args
	a.Roots, a.Inside, a.WaitDone = nil, 0, true
	if r.inside {
		a.Roots, a.Inside = []int{st.PID()}, 1
	}
	a.Roots = append(a.Roots, r.extra...)
	wp, err := startWatcher(a)
	if err != nil {
		st.Kill()
		return res, err
	}
	var fs *exec.Cmd
	var fs0 time.Duration
	if r.forkstat {
		var forgetFS func()
		fs, forgetFS, err = bs.startForkstat()
		if err != nil {
			res.fsErr = err
		} else {
			defer forgetFS()
			fs0, _ = cstorm.ProcCPU(fs.Process.Pid)
		}
	}
	wp.send("go")
	if err := st.Go(); err != nil {
		st.Kill()
		wp.finish()
		return res, err
	}
	res.forked, err = st.Wait()
	rep, werr := wp.finish()
	res.rep = rep
	if fs != nil {
		time.Sleep(100 * time.Millisecond) // forkstat drains what is queued, as the watcher did
		fs1, _ := cstorm.ProcCPU(fs.Process.Pid)
		stopForkstat(fs)
		res.fsCPU = fs1 - fs0
	}
	if err == nil {
		err = werr
	}
	return res, err
}

// durations parses a comma-separated list of durations ("" is none).
func durations(s string) ([]time.Duration, error) {
	var ds []time.Duration
	for _, f := range strings.Split(s, ",") {
		if f = strings.TrimSpace(f); f == "" {
			continue
		}
		d, err := time.ParseDuration(f)
		if err != nil {
			return nil, err
		}
		ds = append(ds, d)
	}
	return ds, nil
}

// median is the middle value (the upper one of an even count).
func median[T cmp.Ordered](v []T) T {
	s := slices.Clone(v)
	slices.Sort(s)
	if len(s) == 0 {
		var zero T
		return zero
	}
	return s[len(s)/2]
}

func ratios(v []float64) string {
	parts := make([]string, len(v))
	for i, x := range v {
		parts[i] = fmt.Sprintf("%.2f", x)
	}
	return strings.Join(parts, ", ")
}

// stormVariant is one watcher setup of section 3, run once a round.
type stormVariant struct {
	name    string
	run     cStormRun
	target  float64 // the ratio to forkstat, or to base's CPU when base is set
	base    *stormVariant
	results []cStormResult
	loads   []string
	err     error // its first failure: it is not run again
}

// sectionStormCPU: CPU per kernel event during a C storm of
// bs.opt.children children, against forkstat -q on the same storms: the
// library inside the tree (events read from Subscribe) and outside every
// tree, with the kernel-side tree filter on and off, in the same run as
// forkstat; the inside watcher with Config.CaptureUsage against the same
// watcher without it; then the CLI (pwatch watch, pwatch run) alternated
// with forkstat on identical storms.
func (bs *suite) sectionStormCPU(t *table) error {
	idle, stopIdle, err := bs.hold(1)
	if err != nil {
		return err
	}
	defer stopIdle()
	con := watcherArgs{Strategy: "connector"}
	withProf := func(a watcherArgs, name string) watcherArgs { a.Profile = profilePath(bs.opt.profile, name); return a }
	vs := []*stormVariant{}
	for _, f := range []int{filterOn, filterOff} {
		in := con
		in.Filter, in.Subscribe = f, true
		out := con
		out.Filter = f
		tag := strings.ReplaceAll(filterName(f), " ", "-")
		vIn := &stormVariant{name: "library, Watcher on the storm's root, events from Subscribe (inside), " + filterName(f),
			run: cStormRun{args: withProf(in, "storm-inside-"+tag), inside: true, forkstat: true}, target: 0.5}
		vs = append(vs, vIn)
		if f == filterOn {
			// Resource accounting at exit (Config.CaptureUsage): the
			// taskstats record of every exit read and joined to it,
			// against the same watcher without it, run right after it
			// in each round so that the two see about the same load.
			u := in
			u.CaptureUsage = true
			vs = append(vs, &stormVariant{name: "library, Watcher on the storm's root, events from Subscribe (inside), filter on, Config.CaptureUsage",
				run: cStormRun{args: withProf(u, "storm-inside-usage"), inside: true, forkstat: true}, target: 1.3, base: vIn})
		}
		if f == filterOn {
			// The same watcher on one P (GOMAXPROCS=1, pwatch's
			// default): no other thread woken at each handoff.
			p := in
			p.Procs = 1
			vs = append(vs, &stormVariant{name: "library, Watcher on the storm's root, events from Subscribe (inside), filter on, GOMAXPROCS=1",
				run: cStormRun{args: withProf(p, "storm-inside-procs1"), inside: true, forkstat: true}, target: 0.5})
		}
		vs = append(vs, &stormVariant{name: "library, Watcher on a sleeping process (outside every tree), " + filterName(f),
			run: cStormRun{args: withProf(out, "storm-outside-"+tag), extra: []int{idle.PID()}, forkstat: true}, target: 0.1})
	}
	// Latency traded for CPU (HubConfig.Coalesce): the reader holds events
	// up to 2 or 5 ms after each read, at any rate.
	ds, err := durations(bs.opt.coalesce)
	if err != nil {
		return fmt.Errorf("-coalesce: %w", err)
	}
	for _, d := range ds {
		in := con
		in.Filter, in.Subscribe, in.Coalesce = filterOn, true, d
		vs = append(vs, &stormVariant{name: fmt.Sprintf("library, Watcher on the storm's root, events from Subscribe (inside), filter on, HubConfig.Coalesce %v", d),
			run: cStormRun{args: withProf(in, fmt.Sprintf("storm-inside-coalesce-%v", d)), inside: true, forkstat: true}, target: 0.5})
	}
	if bs.opt.only != "" {
		// A kept variant keeps its base, which it is compared with.
		keep := map[*stormVariant]bool{}
		for _, v := range vs {
			if strings.Contains(v.name, bs.opt.only) {
				keep[v] = true
				if v.base != nil {
					keep[v.base] = true
				}
			}
		}
		vs = slices.DeleteFunc(vs, func(v *stormVariant) bool { return !keep[v] })
	}
	// Round robin over the variants, so that a change of the machine's
	// load touches all of them alike. A variant that fails is reported in
	// its row and left out of the later rounds.
	for round := range bs.opt.rounds {
		for _, v := range vs {
			if v.err != nil {
				continue
			}
			t.markLoad()
			logf("storm %d/%d: %s (load %s)", round+1, bs.opt.rounds, v.name, t.load)
			r, err := v.run.run(bs)
			if r.fsErr != nil {
				return r.fsErr
			}
			if err != nil {
				logf("storm %d/%d: %s: %v", round+1, bs.opt.rounds, v.name, err)
				v.err = fmt.Errorf("round %d: %w", round+1, err)
				v.loads = append(v.loads, t.load)
				continue
			}
			v.results = append(v.results, r)
			v.loads = append(v.loads, t.load)
		}
	}
	var fsPer []time.Duration
	var failed []string
	for _, v := range vs {
		if v.err != nil {
			failed = append(failed, v.name)
		}
		t.load = strings.Join(v.loads, "/")
		if len(v.results) == 0 {
			t.add(3, v.name, fmt.Sprintf("failed: %v", v.err), targetOf(v), "**FAILED**")
			continue
		}
		var cpus, fsCPUs []time.Duration
		var rs []float64
		for _, r := range v.results {
			cpus = append(cpus, r.rep.CPU)
			fsCPUs = append(fsCPUs, r.fsCPU)
			fsPer = append(fsPer, perEvent(r.fsCPU, stormEvents(r.children)))
			rs = append(rs, float64(r.rep.CPU)/float64(max(r.fsCPU, 1)))
		}
		ratio := median(rs)
		ev := stormEvents(bs.opt.children)
		mid := v.results[len(v.results)/2]
		val := fmt.Sprintf("**%s per event** (median CPU %s over %d storm events); forkstat -q beside it %s per event; ",
			us(perEvent(median(cpus), ev)), ms(median(cpus)), ev, us(perEvent(median(fsCPUs), ev)))
		ok := ratio <= v.target
		if v.base == nil {
			val += fmt.Sprintf("**%.2fx forkstat** (median of %s); ", ratio, ratios(rs))
		} else {
			baseVal, baseOK := baseRatio(v)
			val += fmt.Sprintf("%.2fx forkstat (median of %s); %s; ", ratio, ratios(rs), baseVal)
			ok = baseOK
		}
		val += fmt.Sprintf("the hub heard %d events, %d overruns, %d lost; %s", hubEvents(mid.rep.Hub), mid.rep.Hub.Overruns, mid.rep.Hub.Lost, filterState(mid.rep.Hub))
		if v.run.inside {
			val += fmt.Sprintf("; Subscribe delivered %d events (%d forks, %d lost); captured %s", mid.rep.Delivered, mid.rep.DeliveredForks, mid.rep.SubLost, mid.captured())
		}
		if v.run.args.CaptureUsage {
			s, got := usageShare(mid.rep)
			val += "; " + s
			ok = ok && got
		}
		val += fmt.Sprintf("; storm: %d children forked at %.0f/s", mid.children, mid.rate())
		if v.err != nil {
			val += fmt.Sprintf("; then failed (left out of the later rounds): %v", v.err)
		}
		t.add(3, v.name, val, targetOf(v), verdict(ok))
	}
	t.add(3, "anchor: forkstat -q beside the library rows (utime+stime from /proc, 10 ms ticks)",
		fmt.Sprintf("**%s per event** (median of %d storms, %d storm events each)", us(median(fsPer)), len(fsPer), stormEvents(bs.opt.children)), "(the anchor)", "—")
	err = bs.stormCLI(t)
	if len(failed) > 0 {
		// Each failed variant's row says why; the section counts as failed.
		err = errors.Join(err, fmt.Errorf("%d of %d storm variants failed: %s", len(failed), len(vs), strings.Join(failed, "; ")))
	}
	return err
}

func targetOf(v *stormVariant) string {
	if v.base != nil {
		return fmt.Sprintf("≤ %.1fx the connector alone (the inside row, filter on)", v.target)
	}
	return fmt.Sprintf("≤ %.1fx forkstat", v.target)
}

// baseRatio compares v's CPU with its base's, round by round (the rounds
// are round robin, so each pair ran under about the same load), and says
// whether the median ratio is within v.target.
func baseRatio(v *stormVariant) (string, bool) {
	n := min(len(v.results), len(v.base.results))
	if n == 0 {
		return fmt.Sprintf("no ratio to the connector alone: its row failed (%v)", v.base.err), false
	}
	rs := make([]float64, n)
	for i := range n {
		rs[i] = float64(v.results[i].rep.CPU) / float64(max(v.base.results[i].rep.CPU, 1))
	}
	r := median(rs)
	return fmt.Sprintf("**%.2fx the connector alone** (the inside row, filter on, in the same rounds: median of %s, %+.0f%%)", r, ratios(rs), 100*(r-1)), r <= v.target
}

// usageShare says how many of a CaptureUsage watcher's exits got a Usage,
// and whether any did (none: the row cannot say what usage costs).
func usageShare(rep watcherReport) (string, bool) {
	all := rep.UsageMatched + rep.UsageMissing
	s := fmt.Sprintf("Exit.Usage on **%s** of exits (%d matched, %d missing; %d taskstats overruns; %s)",
		pct(int(rep.UsageMatched), int(all)), rep.UsageMatched, rep.UsageMissing, rep.Hub.UsageOverruns, rep.Usage)
	if rep.UsageReason != "" {
		s += "; no usage: " + rep.UsageReason
	}
	return s, rep.UsageMatched > 0
}

// cliRun is one pwatch (or forkstat) run on one storm.
type cliRun struct {
	cpu    time.Duration
	forked time.Duration
	forks  int    // fork lines in the events file (pwatch)
	mode   string // pwatch's "mode:" line
	load   string
}

// modeLine is pwatch's line that says its mode and why ("pwatch: connector
// mode: ...").
func modeLine(stderr string) string {
	for _, l := range strings.Split(stderr, "\n") {
		if strings.HasPrefix(l, "pwatch: ") && strings.Contains(l, " mode: ") {
			return strings.TrimPrefix(l, "pwatch: ")
		}
	}
	return "(no mode line)"
}

// stormCLI alternates forkstat -q alone, pwatch watch, forkstat -q alone
// and pwatch run on identical storms, bs.opt.rounds times, and compares
// the medians.
func (bs *suite) stormCLI(t *table) error {
	if bs.opt.pwatch == "" {
		t.add(3, "pwatch watch / pwatch run", "not measured: no -pwatch binary", "", "—")
		return nil
	}
	if _, err := exec.LookPath("forkstat"); err != nil {
		t.add(3, "pwatch watch / pwatch run", "not measured: forkstat is not installed (apt-get install -y forkstat)", "", "—")
		return nil
	}
	var fs, watch, run, noUsage []cliRun
	for round := range bs.opt.rounds {
		for _, step := range []struct {
			name string
			fn   func() (cliRun, error)
			dst  *[]cliRun
		}{
			{"forkstat -q alone", bs.forkstatAlone, &fs},
			{"pwatch watch", func() (cliRun, error) { return bs.pwatchWatch() }, &watch},
			{"forkstat -q alone", bs.forkstatAlone, &fs},
			{"pwatch run", bs.pwatchRun, &run},
			// The closest variant: pwatch without taskstats usage (on by
			// default), the one feature it adds to the library's path.
			{"pwatch watch --usage=false", func() (cliRun, error) { return bs.pwatchWatch("--usage=false") }, &noUsage},
		} {
			l := load1()
			logf("storm %d/%d: %s (load %s)", round+1, bs.opt.rounds, step.name, l)
			r, err := step.fn()
			if err != nil {
				return fmt.Errorf("%s: %w", step.name, err)
			}
			r.load = l
			*step.dst = append(*step.dst, r)
		}
	}
	ev := stormEvents(bs.opt.children)
	med := func(rs []cliRun) (time.Duration, []string, string) {
		var c []time.Duration
		var s, loads []string
		for _, r := range rs {
			c = append(c, r.cpu)
			s = append(s, ms(r.cpu))
			loads = append(loads, r.load)
		}
		return median(c), s, strings.Join(loads, "/")
	}
	fsMed, fsAll, fsLoads := med(fs)
	t.load = fsLoads
	t.add(3, "anchor: forkstat -q alone on the storm (wait4 rusage over its life)",
		fmt.Sprintf("**%s per event** (median CPU %s of %d runs: %s)", us(perEvent(fsMed, ev)), ms(fsMed), len(fs), strings.Join(fsAll, ", ")), "(the anchor)", "—")
	for _, c := range []struct {
		name string
		rs   []cliRun
	}{
		{"`pwatch watch --events FILE ROOT` (CLI, alternated with forkstat)", watch},
		{"`pwatch run --events FILE --trace FILE -- STORM` (CLI, alternated with forkstat)", run},
		{"`pwatch watch --usage=false --events FILE ROOT` (CLI, the closest variant: no taskstats usage)", noUsage},
	} {
		m, all, loads := med(c.rs)
		ratio := float64(m) / float64(max(fsMed, 1))
		mid := c.rs[len(c.rs)/2]
		var forks []string
		for _, r := range c.rs {
			forks = append(forks, strconv.Itoa(r.forks))
		}
		t.load = loads
		t.add(3, c.name, fmt.Sprintf("**%s per event** (median CPU %s of %d runs: %s; own CPU from /proc of its zombie, its whole life); **%.2fx forkstat**; fork lines in the events file: %s of %d; storm at %.0f forks/s; %s",
			us(perEvent(m, ev)), ms(m), len(c.rs), strings.Join(all, ", "), ratio, strings.Join(forks, ", "), bs.opt.children, float64(bs.opt.children)/max(mid.forked.Seconds(), 1e-9), mid.mode),
			"≤ 0.5x forkstat", verdict(ratio <= 0.5))
	}
	return nil
}

// forkstatAlone: forkstat -q started, a storm, forkstat stopped; its CPU
// from wait4 over its life (it has no children).
func (bs *suite) forkstatAlone() (cliRun, error) {
	var r cliRun
	st, forget, err := bs.startStorm(bs.opt.children, 0)
	if err != nil {
		return r, err
	}
	defer forget()
	fs, forgetFS, err := bs.startForkstat()
	if err != nil {
		st.Kill()
		return r, err
	}
	defer forgetFS()
	if err := st.Go(); err != nil {
		st.Kill()
		stopForkstat(fs)
		return r, err
	}
	r.forked, err = st.Wait()
	time.Sleep(100 * time.Millisecond)
	stopForkstat(fs)
	if ps := fs.ProcessState; ps != nil {
		r.cpu = ps.UserTime() + ps.SystemTime()
	}
	return r, err
}

// countForks counts the fork events in a pwatch --events file.
func countForks(path string) int {
	f, err := os.Open(path)
	if err != nil {
		return -1
	}
	defer f.Close()
	n := 0
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 1<<16), 1<<24)
	for sc.Scan() {
		if bytes.Contains(sc.Bytes(), []byte(`"type":"fork"`)) {
			n++
		}
	}
	return n
}

// waitPwatch waits for pwatch to exit, reads its own CPU from its zombie
// and reaps it; it kills pwatch if it has not exited within limit.
func waitPwatch(cmd *exec.Cmd, limit time.Duration) (time.Duration, error) {
	timer := time.AfterFunc(limit, func() { _ = cmd.Process.Kill() })
	defer timer.Stop()
	cpu, zerr := cstorm.ZombieCPU(cmd.Process.Pid)
	err := cmd.Wait()
	if zerr != nil {
		return 0, zerr
	}
	if err != nil {
		return cpu, fmt.Errorf("pwatch: %v", err)
	}
	return cpu, nil
}

// pwatchWatch: a storm root held at its gate, pwatch watch --events FILE
// (and the flags given) on it; the gate opens once pwatch says it is
// watching; pwatch ends by itself when the tree is gone.
func (bs *suite) pwatchWatch(flags ...string) (cliRun, error) {
	var r cliRun
	st, forget, err := bs.startStorm(bs.opt.children, 0)
	if err != nil {
		return r, err
	}
	defer forget()
	events := filepath.Join(bs.tmp, "watch-events.jsonl")
	cmd := exec.Command(bs.opt.pwatch, append(append([]string{"watch"}, flags...), "--events", events, strconv.Itoa(st.PID()))...)
	var stderr bytes.Buffer
	pr, pw, err := os.Pipe()
	if err != nil {
		st.Kill()
		return r, err
	}
	cmd.Stderr = pw
	if err := cmd.Start(); err != nil {
		pw.Close()
		pr.Close()
		st.Kill()
		return r, err
	}
	pw.Close()
	forgetCmd := bs.live.track(func() { _ = cmd.Process.Kill() })
	defer forgetCmd()
	ready := make(chan bool, 1)
	copied := make(chan struct{})
	go func() {
		defer close(copied)
		sc := bufio.NewScanner(pr)
		said := false
		for sc.Scan() {
			stderr.Write(sc.Bytes())
			stderr.WriteByte('\n')
			if !said && strings.HasPrefix(sc.Text(), "pwatch: watching") {
				said = true
				ready <- true
			}
		}
		if !said {
			ready <- false
		}
	}()
	select {
	case ok := <-ready:
		if !ok {
			st.Kill()
			_, _ = waitPwatch(cmd, time.Second)
			<-copied
			return r, fmt.Errorf("pwatch watch did not start: %s", stderr.String())
		}
	case <-time.After(30 * time.Second):
		st.Kill()
		_, _ = waitPwatch(cmd, time.Second)
		return r, fmt.Errorf("pwatch watch: not watching after 30 s")
	}
	if err := st.Go(); err != nil {
		st.Kill()
		_, _ = waitPwatch(cmd, time.Second)
		return r, err
	}
	r.forked, err = st.Wait()
	if err != nil {
		_, _ = waitPwatch(cmd, time.Second)
		return r, err
	}
	r.cpu, err = waitPwatch(cmd, 2*time.Minute)
	<-copied
	pr.Close()
	if err != nil {
		return r, fmt.Errorf("%v: %s", err, lastLines(stderr.String(), 5))
	}
	r.forks = countForks(events)
	r.mode = modeLine(stderr.String())
	os.Remove(events)
	return r, nil
}

// pwatchRun: pwatch run --events FILE --trace FILE -- STORM, the storm
// root waiting at a FIFO gate that opens once pwatch has started it.
func (bs *suite) pwatchRun() (cliRun, error) {
	var r cliRun
	gate, err := cstorm.NewGate(bs.tmp)
	if err != nil {
		return r, err
	}
	events := filepath.Join(bs.tmp, "run-events.jsonl")
	trace := filepath.Join(bs.tmp, "run-trace.json")
	cmd := exec.Command(bs.opt.pwatch, "run", "--events", events, "--trace", trace, "--",
		bs.bin, "-g", gate.Path(), strconv.Itoa(bs.opt.children))
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Start(); err != nil {
		return r, err
	}
	forgetCmd := bs.live.track(func() { _ = cmd.Process.Kill() })
	defer forgetCmd()
	if err := gate.Open(30 * time.Second); err != nil {
		_ = cmd.Process.Kill()
		_, _ = waitPwatch(cmd, time.Second)
		return r, fmt.Errorf("%v: %s", err, lastLines(stderr.String(), 5))
	}
	r.cpu, err = waitPwatch(cmd, 2*time.Minute)
	if err != nil {
		return r, fmt.Errorf("%v: %s", err, lastLines(stderr.String(), 5))
	}
	if r.forked, err = cstorm.ParseForked(lastLines(stdout.String(), 1)); err != nil {
		return r, err
	}
	r.forks = countForks(events)
	r.mode = modeLine(stderr.String())
	os.Remove(events)
	os.Remove(trace)
	return r, nil
}

func lastLines(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

func profilePath(dir, name string) string {
	if dir == "" {
		return ""
	}
	return filepath.Join(dir, name+".pprof")
}

func perEvent(cpu time.Duration, events uint64) time.Duration {
	if events == 0 {
		return 0
	}
	return cpu / time.Duration(events)
}

// sectionManyWatchers: 1, 10, 100 and 1,000 Watchers in one process on one
// Hub during a C storm. Watcher 0 watches the storm's root; the others
// watch idle processes (one each).
func (bs *suite) sectionManyWatchers(t *table) error {
	ns := []int{1, 10, 100, 1000}
	if bs.opt.quick {
		ns = []int{1, 10, 100}
	}
	idle, err := bs.startPool(ns[len(ns)-1])
	if err != nil {
		return err
	}
	defer idle.stop()
	var base cStormResult
	for _, n := range ns {
		t.markLoad()
		logf("storm: %d watchers (load %s)", n, t.load)
		r, err := cStormRun{
			args:   watcherArgs{Strategy: "connector", Profile: profilePath(bs.opt.profile, fmt.Sprintf("watchers-%d", n))},
			inside: true,
			extra:  idle.pids[:n-1],
		}.run(bs)
		if err != nil {
			return fmt.Errorf("%d watchers: %w", n, err)
		}
		if n == 1 {
			base = r
		}
		lost := r.rep.Hub.Lost + r.rep.Overruns
		ratio := float64(r.rep.CPU) / float64(base.rep.CPU)
		val := fmt.Sprintf("%s CPU (%s per storm event, %.2fx one watcher's), %d overruns, %d lost, captured %s; %d reconciles (%d full scans) in the window; attach %v",
			ms(r.rep.CPU), us(r.perEvent()), ratio, r.rep.Overruns, r.rep.Hub.Lost, r.captured(),
			r.rep.Reconciles, r.rep.FullScans, r.rep.Attach.Round(time.Millisecond))
		target, v := "(informative)", "—"
		if n == ns[len(ns)-1] && n == 1000 {
			target = "≤ 2x one watcher, no lost events"
			v = verdict(ratio <= 2 && lost == 0 && len(r.rep.Added) >= r.children)
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
	if bs.opt.quick {
		window = 3 * time.Second
	}
	t.markLoad()
	logf("steady state: %d idle watchers for %v (load %s)", n, window, t.load)
	rep, err := runWatcher(watcherArgs{Strategy: "connector", Roots: idle.pids}, window)
	if err != nil {
		return err
	}
	share := float64(rep.CPU) / float64(rep.Wall)
	val := fmt.Sprintf("**%.2f%% of a core** (%s CPU over %.0f s: %d reconciles, %d of them full host scans of %d processes); one idle watcher: %.3f%% (section 5)",
		100*share, ms(rep.CPU), rep.Wall.Seconds(), rep.Reconciles, rep.FullScans, procCount(), 100*bs.idleShare)
	ok := bs.idleShare > 0 && share <= 2*bs.idleShare
	t.add(6, fmt.Sprintf("%d idle watchers on one Hub, steady state (no storm)", n), val, "≤ 2x one watcher", verdict(ok))
	return nil
}
