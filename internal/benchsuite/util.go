//go:build linux && (amd64 || arm64)

package main

import (
	"bufio"
	"fmt"
	"io"
	"os"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/process-watchman/watchman"
	"github.com/process-watchman/watchman/internal/cstorm"
	"github.com/process-watchman/watchman/internal/workload"
	"github.com/process-watchman/watchman/reconcile"
	"github.com/process-watchman/watchman/tracker"
	"golang.org/x/sys/unix"
)

// ---- the table ----

type row struct {
	section                               int
	measure, value, target, verdict, load string
}

// goSection is the section number of the Go micro-benchmarks' rows.
const goSection = 99

type table struct {
	rows []row
	// load is the 1-minute load average when the current measurement
	// began (markLoad); each row added carries it.
	load string
}

// markLoad notes the load average now, for the rows added next.
func (t *table) markLoad() { t.load = load1() }

func (t *table) add(section int, measure, value, target, verdict string) {
	t.rows = append(t.rows, row{section, measure, value, target, verdict, t.load})
	logf("[%d] %s: %s  (target %s) %s (load %s)", section, measure, value, target, verdict, t.load)
}

func (t *table) print(w io.Writer) {
	fmt.Fprintln(w, "| # | Measure | Result | Target | Verdict | Load |")
	fmt.Fprintln(w, "|---|---|---|---|---|---|")
	rows := slices.Clone(t.rows)
	slices.SortStableFunc(rows, func(a, b row) int { return a.section - b.section })
	for _, r := range rows {
		sec := strconv.Itoa(r.section)
		if r.section == goSection {
			sec = "go"
		}
		fmt.Fprintf(w, "| %s | %s | %s | %s | %s | %s |\n", sec, r.measure, r.value, r.target, r.verdict, r.load)
	}
}

// load1 is the 1-minute load average, and the tasks runnable at this
// instant (/proc/loadavg's fourth field, before the slash): the average
// lags a change by minutes.
func load1() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "?"
	}
	f := strings.Fields(string(b))
	if len(f) < 4 {
		return "?"
	}
	running, _, _ := strings.Cut(f[3], "/")
	return f[0] + " (" + running + " run)"
}

func verdict(ok bool) string {
	if ok {
		return "met"
	}
	return "**MISSED**"
}

// ---- the machine ----

type machine struct {
	Cores  int
	Model  string
	Kernel string
	Procs  int
	MemMB  int
	Load   string
	Go     string
}

func describeMachine() machine {
	m := machine{Cores: runtime.NumCPU(), Go: runtime.Version(), Procs: procCount()}
	var u unix.Utsname
	if unix.Uname(&u) == nil {
		m.Kernel = unix.ByteSliceToString(u.Release[:])
	}
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for _, l := range strings.Split(string(b), "\n") {
			if k, v, ok := strings.Cut(l, ":"); ok && strings.TrimSpace(k) == "model name" {
				m.Model = strings.TrimSpace(v)
				break
			}
		}
	}
	if b, err := os.ReadFile("/proc/meminfo"); err == nil {
		var kb int
		fmt.Sscanf(string(b), "MemTotal: %d kB", &kb)
		m.MemMB = kb / 1024
	}
	if b, err := os.ReadFile("/proc/loadavg"); err == nil {
		f := strings.Fields(string(b))
		if len(f) >= 3 {
			m.Load = strings.Join(f[:3], " ")
		}
	}
	return m
}

func (m machine) String() string {
	return fmt.Sprintf("%d cores (%s), Linux %s, %d MiB RAM, %d processes on the host, %s", m.Cores, m.Model, m.Kernel, m.MemMB, m.Procs, m.Go)
}

// procCount is the number of processes on the host.
func procCount() int {
	fs, err := reconcile.NewFS("")
	if err != nil {
		return -1
	}
	pids, err := fs.NewScanner().ListPIDs(nil)
	if err != nil {
		return -1
	}
	return len(pids)
}

// children returns the PIDs whose parent is ppid.
func children(ppid int) []int {
	fs, err := reconcile.NewFS("")
	if err != nil {
		return nil
	}
	var s reconcile.Scan
	if err := fs.NewScanner().Scan(&s); err != nil {
		return nil
	}
	var out []int
	for _, e := range s.Entries {
		if e.PPID == ppid {
			out = append(out, e.PID)
		}
	}
	return out
}

// ---- CPU and memory of this process ----

func cpuSelf() time.Duration {
	var ru unix.Rusage
	if err := unix.Getrusage(unix.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// rssSelf is this process's resident set in bytes.
func rssSelf() int64 {
	f, err := os.Open("/proc/self/status")
	if err != nil {
		return 0
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "VmRSS:"); ok {
			kb, _ := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
			return kb * 1024
		}
	}
	return 0
}

func monoNow() time.Duration {
	var ts unix.Timespec
	_ = unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts)
	return time.Duration(ts.Nano())
}

// ---- workloads ----

// liveSet remembers what the suite started and has not ended yet (Go
// workloads, C storms and trees, forkstat, pwatch), so that an interrupt
// ends them all.
type liveSet struct {
	mu    sync.Mutex
	next  int
	stops map[int]func()
}

// track remembers stop; the returned func forgets it.
func (l *liveSet) track(stop func()) (forget func()) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.stops == nil {
		l.stops = map[int]func(){}
	}
	l.next++
	id := l.next
	l.stops[id] = stop
	return func() {
		l.mu.Lock()
		delete(l.stops, id)
		l.mu.Unlock()
	}
}

// stopAll runs every remembered stop, concurrently.
func (l *liveSet) stopAll() {
	l.mu.Lock()
	stops := make([]func(), 0, len(l.stops))
	for _, f := range l.stops {
		stops = append(stops, f)
	}
	l.stops = nil
	l.mu.Unlock()
	var wg sync.WaitGroup
	for _, f := range stops {
		wg.Go(f)
	}
	wg.Wait()
}

// workloadProc is a Go workload the suite tracks.
type workloadProc struct {
	*workload.Process
	forget func()
}

// startWorkload starts a held workload and remembers it for killAll.
func (bs *suite) startWorkload(spec workload.Spec) (*workloadProc, error) {
	p, err := workload.Start(spec)
	if err != nil {
		return nil, err
	}
	return &workloadProc{Process: p, forget: bs.live.track(func() { p.Kill() })}, nil
}

// finish waits for a workload and forgets it.
func (bs *suite) finish(p *workloadProc) (*workload.Result, error) {
	res, err := p.Wait()
	p.forget()
	return res, err
}

func (bs *suite) kill(p *workloadProc) {
	p.Kill()
	p.forget()
}

func (bs *suite) killAll() { bs.live.stopAll() }

// hold starts a C tree of n idle processes (cstorm.StartHold) and tracks it.
func (bs *suite) hold(n int) (*cstorm.Hold, func(), error) {
	h, err := cstorm.StartHold(bs.bin, n)
	if err != nil {
		return nil, nil, err
	}
	forget := bs.live.track(h.Stop)
	return h, func() { h.Stop(); forget() }, nil
}

// pool is a C tree of idle processes (cstorm hold): a root and its n
// sleeping children, to attach to or to fill the host.
type pool struct {
	root int
	pids []int // the children
	stop func()
}

// startPool starts a pool of n children.
func (bs *suite) startPool(n int) (*pool, error) {
	h, stop, err := bs.hold(n + 1)
	if err != nil {
		return nil, err
	}
	kids := children(h.PID())
	if len(kids) != n {
		stop()
		return nil, fmt.Errorf("pool of %d: %d children listed", n, len(kids))
	}
	return &pool{root: h.PID(), pids: kids, stop: stop}, nil
}

// ---- capture ----

type idSet map[watchman.Identity]bool

func (s idSet) addAll(ids []watchman.Identity) {
	for _, id := range ids {
		s[id] = true
	}
}

// captured counts the records whose identity is in seen, exactly or
// within tracker.ApproxTolerance ticks.
func captured(recs []workload.Record, seen idSet) int {
	n := 0
	for _, r := range recs {
		if _, ok := lookupApprox(seen, r); ok {
			n++
		}
	}
	return n
}

// lookupApprox finds r's process in m by its identity, exactly or within
// tracker.ApproxTolerance ticks (a start derived from the fork's
// timestamp), the nearest first.
func lookupApprox[T any](m map[watchman.Identity]T, r workload.Record) (T, bool) {
	for d := 0; d <= 2*tracker.ApproxTolerance; d++ {
		// 0, -1, +1, -2, +2
		off := int64((d + 1) / 2)
		if d%2 == 1 {
			off = -off
		}
		if v, ok := m[watchman.Identity{PID: r.PID, StartTicks: uint64(int64(r.StartTicks) + off)}]; ok {
			return v, true
		}
	}
	var zero T
	return zero, false
}

func pct(n, of int) string {
	if of == 0 {
		return "n/a"
	}
	return fmt.Sprintf("%.1f%%", 100*float64(n)/float64(of))
}

// percentile of sorted durations.
func percentile(sorted []time.Duration, p float64) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	i := int(p / 100 * float64(len(sorted)-1))
	return sorted[i]
}

func us(d time.Duration) string {
	return fmt.Sprintf("%.1f µs", float64(d)/1e3)
}

func ms(d time.Duration) string {
	return fmt.Sprintf("%.2f ms", float64(d)/1e6)
}
