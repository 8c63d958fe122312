package integration

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"runtime"
	"runtime/debug"
	"runtime/pprof"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/process-watchman/watchman"
	"github.com/process-watchman/watchman/internal/workload"
	"github.com/process-watchman/watchman/tracker"
)

// A watcher process is this test binary re-executed (envWatchProc holds its
// watchProcSpec as JSON) to watch a tree from a process of its own, so a
// test can stop it with SIGSTOP, or measure its memory apart from the
// test's bookkeeping. It speaks lines: on stdout "READY", then, with
// Stream, "A w pid start" for each identity watcher w added and
// "X w pid start known code signal" for each exit, and "R {json}" (a
// procReport) for each "report" or "rss" line on stdin; "quit" (or the end
// of stdin) closes the watchers and exits.
const envWatchProc = "PWATCH_TEST_WATCHPROC"

// watchProcSpec configures a watcher process.
type watchProcSpec struct {
	Root       int
	ReadBuffer int // HubConfig.ReadBuffer of every hub
	Watchers   int
	Shared     int  // the first Shared watchers share one hub; the others have one each
	Stream     bool // write A and X lines
	// SubBuffer is the capacity of each watcher's draining subscription
	// (0: the library's default). A channel's ring buffer is touched
	// page by page as events cycle through it, so a large one adds to the
	// RSS until it has been cycled once.
	SubBuffer int
	// LiveOnly makes reports read LivePIDs alone, with no Poll (and no
	// periodic Poll): the lightest view, for timing a watcher's catch-up.
	LiveOnly bool
}

// watcherReport is one watcher's view in a procReport.
type watcherReport struct {
	Live      []int
	RootAlive bool
	// SnapOverruns and Repairs sum Snapshot.Overruns and Repairs over every
	// Poll; Added counts the identities in Delta.Added.
	SnapOverruns, Repairs, Added int
	Stats                        watchman.WatcherStats
	Hub                          int // index in procReport.Hubs
	// OverrunMarkers counts the EventLost{Overrun} events a subscriber that
	// drains its channel at once received; MarkerLost sums their Lost.
	OverrunMarkers, MarkerLost uint64
	// SubLost is that subscriber's Lost(): events it missed because its
	// channel was full.
	SubLost uint64
	// PreSub brackets the subscription: the watcher's overruns and its
	// hub's lost events read just before Subscribe ([0]) and just after
	// ([1]). Overruns before it reach no subscriber: with a small buffer
	// the host's events may overrun the socket in the moment between the
	// hub's subscription to the connector and its kernel filter (seen
	// with a benchmark's storm running beside: 405 events lost before
	// Subscribe).
	PreSubOverruns, PreSubLost [2]uint64
	// AttachHubOverruns is the hub's overrun count read just after
	// Attach returned. A watcher is told of every overrun from its
	// attach on; those the hub had before (its socket overran between
	// opening and the attach: seen with other test loops' storms beside)
	// are the hub's alone, and the watcher's initial scan came after them.
	AttachHubOverruns uint64
}

// procReport is what a watcher process reports.
type procReport struct {
	Watchers []watcherReport
	Hubs     []watchman.HubStats
	// RSSKiB is VmRSS; with "rss" it is read after a GC that returns
	// free memory to the system. HeapInuse is the Go heap in use.
	RSSKiB    int
	HeapInuse uint64
}

// watchProcMain runs a watcher process; TestMain calls it when
// envWatchProc is set.
func watchProcMain() int {
	var spec watchProcSpec
	if err := json.Unmarshal([]byte(os.Getenv(envWatchProc)), &spec); err != nil {
		fmt.Fprintln(os.Stderr, "watchproc:", err)
		return 2
	}
	out := bufio.NewWriterSize(os.Stdout, 1<<16)
	if path := os.Getenv("PWATCH_WATCHPROC_CPUPROFILE"); path != "" {
		f, err := os.Create(path)
		if err == nil && pprof.StartCPUProfile(f) == nil {
			defer pprof.StopCPUProfile()
		}
	}
	if v := os.Getenv("PWATCH_WATCHPROC_NICE"); v != "" {
		// Every thread (Linux nice is per thread; new threads inherit it).
		n, _ := strconv.Atoi(v)
		ents, _ := os.ReadDir("/proc/self/task")
		for _, e := range ents {
			if tid, err := strconv.Atoi(e.Name()); err == nil {
				syscall.Setpriority(syscall.PRIO_PROCESS, tid, n)
			}
		}
	}
	var hubs []*watchman.Hub
	shared := watchman.NewHub(&watchman.HubConfig{ReadBuffer: spec.ReadBuffer})
	type state struct {
		w                   *watchman.Watcher
		rep                 watcherReport
		markers, markerLost atomic.Uint64
		sub                 *watchman.Subscription
	}
	ws := make([]*state, spec.Watchers)
	var drainers sync.WaitGroup
	for i := range ws {
		hub, hubIdx := shared, 0
		if i >= spec.Shared {
			hub = watchman.NewHub(&watchman.HubConfig{ReadBuffer: spec.ReadBuffer})
		}
		if i == 0 || i >= spec.Shared {
			hubs = append(hubs, hub)
		}
		for j, h := range hubs {
			if h == hub {
				hubIdx = j
			}
		}
		w, err := watchman.Attach(spec.Root, &watchman.Config{
			Strategy: watchman.StrategyConnector, Hub: hub,
			KeepTombstones: i%2 == 1, CaptureCmdline: i%2 == 1,
		})
		if err != nil {
			fmt.Fprintln(os.Stderr, "watchproc: attach:", err)
			return 1
		}
		st := &state{w: w}
		st.rep.AttachHubOverruns = hub.Stats().Overruns
		st.rep.PreSubOverruns[0], st.rep.PreSubLost[0] = w.Stats().Overruns, hub.Stats().Lost
		st.sub = w.Subscribe(spec.SubBuffer)
		st.rep.PreSubOverruns[1], st.rep.PreSubLost[1] = w.Stats().Overruns, hub.Stats().Lost
		st.rep.Hub = hubIdx
		ws[i] = st
		drainers.Add(1)
		go func() {
			defer drainers.Done()
			for ev := range st.sub.C {
				if ev.Type == watchman.EventLost && ev.Overrun {
					st.markers.Add(1)
					st.markerLost.Add(ev.Lost)
				}
			}
		}()
	}
	cmds := make(chan string)
	go func() {
		sc := bufio.NewScanner(os.Stdin)
		for sc.Scan() {
			cmds <- sc.Text()
		}
		close(cmds)
	}()
	fmt.Fprintln(out, "READY")
	out.Flush()

	poll := func() error {
		for i, st := range ws {
			s, err := st.w.Poll()
			if err != nil {
				return err
			}
			for _, id := range s.Delta.Added {
				st.rep.Added++
				if spec.Stream {
					fmt.Fprintf(out, "A %d %d %d\n", i, id.PID, id.StartTicks)
				}
			}
			if spec.Stream {
				for _, x := range s.Delta.Exited {
					fmt.Fprintf(out, "X %d %d %d %t %d %d\n", i, x.PID, x.StartTicks, x.StatusKnown, x.Code, x.Signal)
				}
			}
			st.rep.SnapOverruns += s.Overruns
			st.rep.Repairs += s.Repairs
			st.rep.Live, st.rep.RootAlive = s.PIDs(), s.RootAlive
		}
		return nil
	}
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	code := 0
loop:
	for {
		select {
		case <-tick.C:
			if spec.LiveOnly {
				continue
			}
			if err := poll(); err != nil {
				fmt.Fprintln(os.Stderr, "watchproc: poll:", err)
				code = 1
				break loop
			}
		case c, ok := <-cmds:
			if !ok || c == "quit" {
				break loop
			}
			if spec.LiveOnly {
				for _, st := range ws {
					st.rep.Live = st.w.LivePIDs()
				}
			} else if err := poll(); err != nil {
				fmt.Fprintln(os.Stderr, "watchproc: poll:", err)
				code = 1
				break loop
			}
			var rep procReport
			for _, st := range ws {
				r := st.rep
				r.Stats = st.w.Stats()
				r.OverrunMarkers, r.MarkerLost = st.markers.Load(), st.markerLost.Load()
				r.SubLost = st.sub.Lost()
				rep.Watchers = append(rep.Watchers, r)
			}
			for _, h := range hubs {
				rep.Hubs = append(rep.Hubs, h.Stats())
			}
			if c == "rss" {
				runtime.GC()
				debug.FreeOSMemory()
			}
			var ms runtime.MemStats
			runtime.ReadMemStats(&ms)
			rep.HeapInuse = ms.HeapInuse
			rep.RSSKiB = selfRSS()
			b, _ := json.Marshal(rep)
			fmt.Fprintf(out, "R %s\n", b)
		}
		out.Flush()
	}
	out.Flush()
	for _, st := range ws {
		st.w.Close()
	}
	drainers.Wait()
	return code
}

// selfRSS returns this process's VmRSS in KiB, or -1.
func selfRSS() int {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return -1
	}
	for _, l := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(l, "VmRSS:"); ok {
			var n int
			if _, err := fmt.Sscanf(strings.TrimSpace(v), "%d", &n); err == nil {
				return n
			}
		}
	}
	return -1
}

// exitLine is an X line.
type exitLine struct {
	Known        bool
	Code, Signal int
}

// watchProc is the test's side of a watcher process.
type watchProc struct {
	cmd     *exec.Cmd
	stdin   io.WriteCloser
	reports chan procReport
	ready   chan struct{}
	readErr chan error

	mu      sync.Mutex
	history map[int][]string // every A and X line of each PID, with when it came, for failure messages
	added   []map[watchman.Identity]bool
	exits   []map[watchman.Identity]exitLine
}

// startWatchProc starts a watcher process and waits until its watchers
// are attached.
func startWatchProc(t *testing.T, spec watchProcSpec) *watchProc {
	t.Helper()
	js, err := json.Marshal(spec)
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(os.Args[0])
	cmd.Env = append(os.Environ(), envWatchProc+"="+string(js))
	cmd.Stderr = os.Stderr
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	p := &watchProc{
		cmd: cmd, stdin: stdin, reports: make(chan procReport, 1), ready: make(chan struct{}),
		readErr: make(chan error, 1), history: map[int][]string{},
	}
	for range spec.Watchers {
		p.added = append(p.added, map[watchman.Identity]bool{})
		p.exits = append(p.exits, map[watchman.Identity]exitLine{})
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go p.read(stdout)
	t.Cleanup(func() {
		if cmd.ProcessState == nil {
			cmd.Process.Signal(os.Kill)
			cmd.Wait()
		}
	})
	select {
	case <-p.ready:
	case err := <-p.readErr:
		t.Fatalf("watcher process ended before it was ready: %v", err)
	case <-time.After(60 * time.Second):
		t.Fatal("watcher process not ready")
	}
	return p
}

// read parses the watcher process's output until it ends.
func (p *watchProc) read(r io.Reader) {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 1<<16), 1<<26)
	var err error
	for sc.Scan() {
		line := sc.Text()
		if line[0] == 'A' || line[0] == 'X' {
			stamped := time.Now().Format("15:04:05.000 ") + line
			var w, pid int
			fmt.Sscanf(line[2:], "%d %d", &w, &pid)
			p.mu.Lock()
			p.history[pid] = append(p.history[pid], stamped)
			p.mu.Unlock()
		}
		switch {
		case line == "READY":
			close(p.ready)
		case strings.HasPrefix(line, "R "):
			var rep procReport
			if err = json.Unmarshal([]byte(line[2:]), &rep); err != nil {
				break
			}
			p.reports <- rep
		case strings.HasPrefix(line, "A "):
			var w int
			var id watchman.Identity
			if _, err = fmt.Sscanf(line, "A %d %d %d", &w, &id.PID, &id.StartTicks); err != nil {
				break
			}
			p.mu.Lock()
			p.added[w][id] = true
			p.mu.Unlock()
		case strings.HasPrefix(line, "X "):
			var w int
			var id watchman.Identity
			var x exitLine
			if _, err = fmt.Sscanf(line, "X %d %d %d %t %d %d", &w, &id.PID, &id.StartTicks, &x.Known, &x.Code, &x.Signal); err != nil {
				break
			}
			p.mu.Lock()
			p.exits[w][id] = x
			p.mu.Unlock()
		default:
			err = fmt.Errorf("unexpected line %q", line)
		}
		if err != nil {
			break
		}
	}
	if err == nil {
		err = sc.Err()
	}
	if err == nil {
		err = io.EOF
	}
	p.readErr <- err
	io.Copy(io.Discard, r)
}

// report asks for a report ("rss" also settles the heap first).
func (p *watchProc) report(t *testing.T, cmd string) procReport {
	t.Helper()
	if _, err := io.WriteString(p.stdin, cmd+"\n"); err != nil {
		t.Fatalf("watcher process: %v", err)
	}
	select {
	case rep := <-p.reports:
		return rep
	case err := <-p.readErr:
		t.Fatalf("watcher process ended: %v", err)
	case <-time.After(60 * time.Second):
		t.Fatal("watcher process does not report")
	}
	return procReport{}
}

// stop closes the watchers and waits for the process; it must exit 0.
func (p *watchProc) stop(t *testing.T) {
	t.Helper()
	io.WriteString(p.stdin, "quit\n")
	p.stdin.Close()
	if err := <-p.readErr; err != io.EOF {
		t.Errorf("watcher process output: %v", err)
	}
	if err := p.cmd.Wait(); err != nil {
		t.Errorf("watcher process: %v", err)
	}
}

// historyOf returns every A and X line the watcher process wrote of the
// pids.
func (p *watchProc) historyOf(pids []int) map[int][]string {
	p.mu.Lock()
	defer p.mu.Unlock()
	out := make(map[int][]string, len(pids))
	for _, pid := range pids {
		out[pid] = slices.Clone(p.history[pid])
	}
	return out
}

// snapshot returns copies of what watcher w added and saw exit.
func (p *watchProc) snapshot(w int) (map[watchman.Identity]bool, map[watchman.Identity]exitLine) {
	p.mu.Lock()
	defer p.mu.Unlock()
	a := make(map[watchman.Identity]bool, len(p.added[w]))
	for k := range p.added[w] {
		a[k] = true
	}
	x := make(map[watchman.Identity]exitLine, len(p.exits[w]))
	for k, v := range p.exits[w] {
		x[k] = v
	}
	return a, x
}

// matchRecord finds the identity a watcher gave to a ground-truth record:
// exact, or derived from the fork timestamp within the tolerance.
func matchRecord(added map[watchman.Identity]bool, r workload.Record) (watchman.Identity, bool) {
	for _, d := range []int64{0, -1, 1, -2, 2} {
		if d < -tracker.ApproxTolerance || d > tracker.ApproxTolerance {
			continue
		}
		id := watchman.Identity{PID: r.PID, StartTicks: uint64(int64(r.StartTicks) + d)}
		if added[id] {
			return id, true
		}
	}
	return watchman.Identity{}, false
}
