//go:build linux && (amd64 || arm64)

package main

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"runtime"
	"runtime/pprof"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/process-watchman/watchman"
	"github.com/process-watchman/watchman/connector"
)

// The watcher role: this binary re-executed with envRole set runs watchers
// in its own process, so that its CPU (getrusage RUSAGE_SELF) is the
// watchers' alone. The protocol on stdin/stdout is line based: the child
// attaches and prints "ready"; on "go" it starts the measured window; on
// "stop" it waits until its hub is drained, ends the window and prints one
// JSON report line.
const (
	envRole = "BENCHSUITE_ROLE"
	envArgs = "BENCHSUITE_ARGS"
)

type watcherArgs struct {
	// Roots gets one Watcher each, all on one shared Hub (connector mode).
	// The first Inside of them are the trees whose additions are reported.
	Roots  []int
	Inside int
	// Strategy is "connector" or "poll"; Interval the ReconcileInterval
	// (0: the default).
	Strategy string
	Interval time.Duration
	// Profile, if set, is where the window's CPU profile goes.
	Profile string
	// Memory: measure the heap and RSS around Attach.
	Memory bool
	// WaitDone: at stop, wait until the Inside trees are over (storms).
	WaitDone bool
	// Filter is the hub's HubConfig.FilterEntries (connector mode): 0 the
	// default (the kernel-side tree filter on), negative off.
	Filter int
	// Coalesce is the hub's HubConfig.Coalesce (connector mode).
	Coalesce time.Duration
	// Subscribe: the Inside watchers' events are read from Subscribe
	// (counted in Delivered) during the window.
	Subscribe bool
	// Polls, in polling mode: after "go", call Poll on the first watcher
	// this many times; the window is those polls.
	Polls int
	// CaptureUsage is every watcher's Config.CaptureUsage (taskstats
	// records joined to the exits).
	CaptureUsage bool
	// Procs, when positive, is the watcher process's GOMAXPROCS (as
	// pwatch sets 1 for itself).
	Procs int
}

type watcherReport struct {
	Attach     time.Duration // time to attach every watcher
	CPU        time.Duration // RUSAGE_SELF user+system over the window
	Wall       time.Duration // the window
	Hub        watchman.HubStats
	Overruns   uint64 // sum of the watchers' Stats().Overruns over the window
	Reconciles uint64 // over the window, all watchers
	FullScans  uint64
	Added      []watchman.Identity // additions of the Inside watchers over the window
	Members    int                 // live members of the Inside watchers at the end... of attach with Memory
	HeapBefore uint64
	HeapAfter  uint64
	RSSBefore  int64
	RSSAfter   int64
	// Receives counts the Receive calls that returned events (the raw
	// baseline only): about one per wakeup of the reader.
	Receives uint64
	// Delivered counts the events read from the subscriptions (Subscribe),
	// DeliveredForks the forks among them; SubLost the events they lost.
	Delivered, DeliveredForks, SubLost uint64
	// Polls is how many Polls the window held (Config.Polls).
	Polls int
	// UsageMatched and UsageMissing are the watchers' WatcherStats
	// counts over the window (CaptureUsage); UsageReason why there is no
	// usage at all, Usage where it comes from (from ModeReason).
	UsageMatched, UsageMissing uint64
	UsageReason, Usage         string
	Err                        string
}

func runRole(role string) int {
	if role != "watcher" {
		fmt.Fprintf(os.Stderr, "benchsuite: unknown role %q\n", role)
		return 2
	}
	var a watcherArgs
	if err := json.Unmarshal([]byte(os.Getenv(envArgs)), &a); err != nil {
		fmt.Fprintln(os.Stderr, "benchsuite watcher:", err)
		return 2
	}
	if a.Procs > 0 {
		runtime.GOMAXPROCS(a.Procs)
	}
	var rep watcherReport
	if a.Strategy == "raw" {
		rep = rawRole(a, bufio.NewReader(os.Stdin), os.Stdout)
	} else {
		rep = watchRole(a, bufio.NewReader(os.Stdin), os.Stdout)
	}
	b, _ := json.Marshal(rep)
	fmt.Fprintf(os.Stdout, "%s\n", b)
	return 0
}

func sumStats(ws []*watchman.Watcher) (st watchman.WatcherStats) {
	for _, w := range ws {
		s := w.Stats()
		st.Overruns += s.Overruns
		st.Reconciles += s.Reconciles
		st.FullScans += s.FullScans
		st.UsageMatched += s.UsageMatched
		st.UsageMissing += s.UsageMissing
		if st.UsageReason == "" {
			st.UsageReason = s.UsageReason
		}
	}
	return st
}

func hubStats(h *watchman.Hub) watchman.HubStats {
	if h == nil {
		return watchman.HubStats{}
	}
	return h.Stats()
}

func hubDelta(a, b watchman.HubStats) watchman.HubStats {
	return watchman.HubStats{Forks: b.Forks - a.Forks, Execs: b.Execs - a.Execs, Exits: b.Exits - a.Exits,
		Other: b.Other - a.Other, Overruns: b.Overruns - a.Overruns, Lost: b.Lost - a.Lost,
		KernelFilter: b.KernelFilter, FilterReason: b.FilterReason, FilterOpen: b.FilterOpen,
		FilterFailOpens: b.FilterFailOpens - a.FilterFailOpens, FilterErrors: b.FilterErrors - a.FilterErrors,
		UsageOverruns: b.UsageOverruns - a.UsageOverruns}
}

func hubEvents(s watchman.HubStats) uint64 { return s.Forks + s.Execs + s.Exits + s.Other }

// filterState describes the hub's kernel-side filter as its stats say.
func filterState(s watchman.HubStats) string {
	st := "kernel filter attached"
	if !s.KernelFilter {
		st = "no kernel filter"
	}
	if s.FilterReason != "" {
		st += " (" + s.FilterReason + ")"
	}
	if s.FilterFailOpens > 0 || s.FilterErrors > 0 {
		st += fmt.Sprintf(", %d fail-opens, %d map errors", s.FilterFailOpens, s.FilterErrors)
	}
	return st
}

func watchRole(a watcherArgs, in *bufio.Reader, out io.Writer) (rep watcherReport) {
	cfg := watchman.Config{Strategy: watchman.Strategy(a.Strategy), ReconcileInterval: a.Interval, CaptureUsage: a.CaptureUsage}
	var hub *watchman.Hub
	if cfg.Strategy == watchman.StrategyConnector {
		hub = watchman.NewHub(&watchman.HubConfig{FilterEntries: a.Filter, Coalesce: a.Coalesce})
		cfg.Hub = hub
	}
	if a.Memory {
		runtime.GC()
		runtime.GC()
		var m runtime.MemStats
		runtime.ReadMemStats(&m)
		rep.HeapBefore, rep.RSSBefore = m.HeapAlloc, rssSelf()
	}
	t0 := time.Now()
	ws := make([]*watchman.Watcher, 0, len(a.Roots))
	defer func() {
		for _, w := range ws {
			w.Close()
		}
	}()
	for _, pid := range a.Roots {
		w, err := watchman.Attach(pid, &cfg)
		if err != nil {
			rep.Err = fmt.Sprintf("attach %d: %v", pid, err)
			fmt.Fprintln(out, "ready")
			return rep
		}
		ws = append(ws, w)
	}
	rep.Attach = time.Since(t0)
	if a.Memory {
		runtime.GC()
		runtime.GC()
		var m runtime.MemStats
		runtime.ReadMemStats(&m)
		rep.HeapAfter, rep.RSSAfter = m.HeapAlloc, rssSelf()
		runtime.KeepAlive(ws)
	}
	// Members alive now, and the Delta so far cleared.
	for _, w := range ws[:a.Inside] {
		s, err := w.Poll()
		if err != nil {
			rep.Err = err.Error()
		}
		rep.Members += len(s.Processes)
	}
	var delivered, forks, subLost atomic.Uint64
	var readers sync.WaitGroup
	if a.Subscribe {
		for _, w := range ws[:a.Inside] {
			sub := w.Subscribe(1 << 16)
			defer sub.Close()
			readers.Go(func() {
				for ev := range sub.C {
					delivered.Add(1)
					switch ev.Type {
					case watchman.EventFork:
						forks.Add(1)
					case watchman.EventLost:
						subLost.Add(ev.Lost)
					}
				}
			})
		}
	}
	runtime.GC()
	fmt.Fprintln(out, "ready")
	if line, _ := in.ReadString('\n'); strings.TrimSpace(line) != "go" {
		rep.Err = "no go"
		return rep
	}
	if a.Profile != "" {
		if f, err := os.Create(a.Profile); err == nil {
			pprof.StartCPUProfile(f)
			defer f.Close()
		}
	}
	st0, h0, c0, w0 := sumStats(ws), hubStats(hub), cpuSelf(), time.Now()
	if a.Polls > 0 && len(ws) > 0 {
		for range a.Polls {
			s, err := ws[0].Poll()
			if err != nil {
				rep.Err = err.Error()
				break
			}
			rep.Members = len(s.Processes)
			rep.Polls++
		}
		rep.CPU, rep.Wall = cpuSelf()-c0, time.Since(w0)
		in.ReadString('\n')
		return rep
	}
	if line, _ := in.ReadString('\n'); strings.TrimSpace(line) != "stop" {
		rep.Err = "no stop"
	}
	// Drain: the inside trees are over, and the hub's counters have
	// settled (host background events may trickle on; give up after 3 s).
	deadline := time.Now().Add(3 * time.Second)
	for _, w := range ws[:a.Inside] {
		if cfg.Strategy != watchman.StrategyConnector || !a.WaitDone {
			break
		}
		select {
		case <-w.Done():
		case <-time.After(time.Until(deadline)):
		}
	}
	prev := hubEvents(hubStats(hub))
	for hub != nil && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
		n := hubEvents(hubStats(hub))
		if n == prev {
			break
		}
		prev = n
	}
	c1, w1 := cpuSelf(), time.Now()
	if a.Profile != "" {
		pprof.StopCPUProfile()
	}
	st1 := sumStats(ws)
	rep.CPU, rep.Wall = c1-c0, w1.Sub(w0)
	rep.Hub = hubDelta(h0, hubStats(hub))
	rep.Overruns = st1.Overruns - st0.Overruns
	rep.Reconciles = st1.Reconciles - st0.Reconciles
	rep.FullScans = st1.FullScans - st0.FullScans
	if a.CaptureUsage {
		rep.UsageMatched = st1.UsageMatched - st0.UsageMatched
		rep.UsageMissing = st1.UsageMissing - st0.UsageMissing
		rep.UsageReason = st1.UsageReason
		if len(ws) > 0 {
			rep.Usage = usageSource(ws[0].ModeReason())
		}
	}
	rep.Delivered, rep.DeliveredForks, rep.SubLost = delivered.Load(), forks.Load(), subLost.Load()
	for _, w := range ws[:a.Inside] {
		s, err := w.Poll()
		if err != nil {
			rep.Err = err.Error()
			continue
		}
		rep.Added = append(rep.Added, s.Delta.Added...)
	}
	return rep
}

// usageSource picks where Exit.Usage comes from out of a Watcher's
// ModeReason ("per-process usage from taskstats, filtered in the kernel").
func usageSource(modeReason string) string {
	for _, part := range strings.Split(modeReason, "; ") {
		if strings.Contains(part, "usage") {
			return part
		}
	}
	return "(ModeReason says nothing of usage)"
}

// watcherProc is a running watcher child.
type watcherProc struct {
	cmd *exec.Cmd
	in  io.WriteCloser
	out *bufio.Reader
}

// startWatcher re-executes this binary in the watcher role and waits until
// it has attached.
func startWatcher(a watcherArgs) (*watcherProc, error) {
	exe, err := os.Executable()
	if err != nil {
		return nil, err
	}
	js, _ := json.Marshal(a)
	cmd := exec.Command(exe)
	cmd.Env = append(os.Environ(), envRole+"=watcher", envArgs+"="+string(js))
	cmd.Stderr = os.Stderr
	in, err := cmd.StdinPipe()
	if err != nil {
		return nil, err
	}
	outR, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	wp := &watcherProc{cmd: cmd, in: in, out: bufio.NewReaderSize(outR, 1<<20)}
	line, err := wp.out.ReadString('\n')
	if err != nil || strings.TrimSpace(line) != "ready" {
		cmd.Process.Kill()
		cmd.Wait()
		return nil, fmt.Errorf("watcher child: %q, %v", line, err)
	}
	return wp, nil
}

func (wp *watcherProc) send(s string) { fmt.Fprintln(wp.in, s) }

// runWatcher starts a watcher child, lets it go, optionally waits, and
// returns its report.
func runWatcher(a watcherArgs, wait time.Duration) (watcherReport, error) {
	wp, err := startWatcher(a)
	if err != nil {
		return watcherReport{}, err
	}
	wp.send("go")
	time.Sleep(wait)
	return wp.finish()
}

// finish sends stop (after go) and returns the report.
func (wp *watcherProc) finish() (watcherReport, error) {
	wp.send("stop")
	line, err := wp.out.ReadString('\n')
	wp.in.Close()
	wp.cmd.Wait()
	var rep watcherReport
	if err != nil {
		return rep, fmt.Errorf("watcher child report: %v", err)
	}
	if err := json.Unmarshal([]byte(line), &rep); err != nil {
		return rep, fmt.Errorf("watcher child report: %v", err)
	}
	if rep.Err != "" {
		return rep, fmt.Errorf("watcher child: %s", rep.Err)
	}
	return rep, nil
}

// rawRole is the floor of the event path: a bare connector.Conn whose
// Receive loop only counts what it gets, no /proc reads, no tracking.
func rawRole(a watcherArgs, in *bufio.Reader, out io.Writer) (rep watcherReport) {
	c, err := connector.Dial(nil)
	if err != nil {
		rep.Err = err.Error()
		fmt.Fprintln(out, "ready")
		return rep
	}
	var events, receives, overruns atomic.Uint64
	done := make(chan struct{})
	go func() {
		defer close(done)
		buf := make([]connector.Event, 0, connector.MaxBatch)
		for {
			evs, err := c.Receive(buf[:0])
			if len(evs) > 0 {
				events.Add(uint64(len(evs)))
				receives.Add(1)
			}
			if errors.Is(err, connector.ErrOverrun) {
				overruns.Add(1)
			} else if err != nil {
				return
			}
		}
	}()
	defer func() { c.Close(); <-done }()
	runtime.GC()
	fmt.Fprintln(out, "ready")
	if line, _ := in.ReadString('\n'); strings.TrimSpace(line) != "go" {
		rep.Err = "no go"
		return rep
	}
	e0, r0, c0, w0 := events.Load(), receives.Load(), cpuSelf(), time.Now()
	in.ReadString('\n')
	prev := events.Load()
	for deadline := time.Now().Add(3 * time.Second); time.Now().Before(deadline); {
		time.Sleep(20 * time.Millisecond)
		n := events.Load()
		if n == prev {
			break
		}
		prev = n
	}
	rep.CPU, rep.Wall = cpuSelf()-c0, time.Since(w0)
	rep.Hub.Other = events.Load() - e0
	rep.Receives = receives.Load() - r0
	rep.Hub.Overruns = overruns.Load()
	return rep
}
