//go:build linux

package connector

import (
	"bufio"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// readerVariants are the read strategies BenchmarkReaderCPU compares:
// waiting in the runtime's poller (netpoll) or in a blocking recvmmsg on
// the reading thread (blocking), without or with coalescing (coalN/D:
// after a read of N datagrams or more that came at 5,000/s or faster, wait
// D before the next). "default" is defaultStrategy (netpoll+coal4/5ms).
var readerVariants = map[string]readStrategy{
	"netpoll":            {set: true},
	"blocking":           {set: true, blocking: true},
	"netpoll+coal4/1ms":  {set: true, coalesce: time.Millisecond, minBatch: 4, minRate: 5000},
	"netpoll+coal4/2ms":  {set: true, coalesce: 2 * time.Millisecond, minBatch: 4, minRate: 5000},
	"default":            func() readStrategy { s := defaultStrategy(); s.set = true; return s }(),
	"blocking+coal4/5ms": {set: true, blocking: true, coalesce: 5 * time.Millisecond, minBatch: 4, minRate: 5000},
	// Config.Coalesce's waits at any rate (coal1: after every read that
	// was not a full batch), in the poller or out of it (blocking, what a
	// positive Config.Coalesce chooses): in the poller every datagram of
	// a wait wakes the thread that waits in epoll_wait for a timer.
	"netpoll+coal1/5ms":   {set: true, coalesce: 5 * time.Millisecond, minBatch: 1},
	"netpoll+coal1/20ms":  {set: true, coalesce: 20 * time.Millisecond, minBatch: 1},
	"blocking+coal1/5ms":  {set: true, blocking: true, coalesce: 5 * time.Millisecond, minBatch: 1},
	"blocking+coal1/20ms": {set: true, blocking: true, coalesce: 20 * time.Millisecond, minBatch: 1},
	treeInside:            {},
	treeOutside:           {},
}

// The tree filter variants: the default strategy with a TreeFilter whose
// only member is the storm's root (every storm event passes, the host's
// other events do not), or a PID that no process has (no storm event
// reaches the socket).
const (
	treeInside  = "default+tree(inside)"
	treeOutside = "default+tree(outside)"
)

const readerHelperPrefix = "reader:"

// runReaderHelper is a listener process: it dials with the variant's
// strategy, says "ready", reads the storm root's pid from stdin, says
// "armed", counts events until the parent says the storm has ended (then
// up to a barrier) and prints its own CPU time (getrusage), the events
// and reads of that window, and its overruns.
func runReaderHelper(mode string) (int, bool) {
	name, ok := strings.CutPrefix(mode, readerHelperPrefix)
	if !ok {
		return 0, false
	}
	c, err := Dial(&Config{reader: readerVariants[name]})
	if err != nil {
		fmt.Println("error:", err)
		return 1, true
	}
	defer c.Close()
	var tree *TreeFilter
	if name == treeInside || name == treeOutside {
		if tree, err = c.AttachTreeFilter(1 << 16); err != nil {
			fmt.Println("error:", err)
			return 1, true
		}
		if name == treeOutside {
			_ = tree.Add(1 << 30) // no such process: every storm event is dropped
		}
	}
	var root atomic.Int32
	var start unix.Rusage
	var startEvents atomic.Uint64
	var events atomic.Uint64
	var reads, startReads atomic.Uint64
	fmt.Println("ready")
	in := bufio.NewReader(os.Stdin)
	line, _ := in.ReadString('\n')
	p, _ := strconv.Atoi(strings.TrimSpace(line))
	if name == treeInside {
		_ = tree.Add(uint32(p))
	}
	go func() {
		_ = unix.Getrusage(unix.RUSAGE_SELF, &start)
		startEvents.Store(events.Load())
		startReads.Store(reads.Load())
		root.Store(int32(p))
		fmt.Println("armed")
		_, _ = in.ReadString('\n') // the storm has ended
		_ = c.Mark(1)
	}()
	buf := make([]Event, 0, MaxBatch)
	for {
		evs, err := c.Receive(buf[:0])
		if err != nil && err != ErrOverrun {
			fmt.Println("error:", err)
			return 1, true
		}
		events.Add(uint64(len(evs)))
		reads.Add(1)
		for _, ev := range evs {
			if root.Load() != 0 && ev.What == WhatMark {
				var end unix.Rusage
				_ = unix.Getrusage(unix.RUSAGE_SELF, &end)
				cpu := time.Duration(end.Utime.Nano()+end.Stime.Nano()-start.Utime.Nano()-start.Stime.Nano()) * time.Nanosecond
				fmt.Printf("%d %d %d %d\n", cpu.Microseconds(), events.Load()-startEvents.Load(), c.Stats().Overruns, reads.Load()-startReads.Load())
				return 0, true
			}
		}
	}
}

// procCPU returns a process's user+system CPU time from /proc (clock
// ticks of 10 ms).
func procCPU(pid int) (time.Duration, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, err
	}
	s := string(b)
	f := strings.Fields(s[strings.LastIndexByte(s, ')')+2:])
	ut, _ := strconv.Atoi(f[11])
	st, _ := strconv.Atoi(f[12])
	return time.Duration(ut+st) * 10 * time.Millisecond, nil
}

func loadAvg() string {
	b, _ := os.ReadFile("/proc/loadavg")
	f := strings.Fields(string(b))
	if len(f) < 3 {
		return "?"
	}
	return strings.Join(f[:3], " ")
}

// BenchmarkReaderCPU measures the CPU per kernel event of each read
// strategy side by side with forkstat -q, on the same storm in the same
// run: every listener (one process each) and forkstat hear the same
// events. The storm root, testdata/storm.c built with gcc, forks
// STORM_CHILDREN (default 20,000) children that exit at once. Run it as
//
//	go test -run '^$' -bench ReaderCPU -benchtime 1x ./connector/
//
// Each iteration is one storm; the figures are the median of the
// iterations: µs of CPU (user+system) per event the listener received,
// and the ratio of its CPU to forkstat's; each storm's table is printed,
// with the load average. Needs root, gcc and forkstat.
func BenchmarkReaderCPU(b *testing.B) {
	if os.Geteuid() != 0 {
		b.Skip("skipping: needs root")
	}
	forkstat, err := exec.LookPath("forkstat")
	if err != nil {
		b.Skip("skipping: forkstat not installed (apt-get install forkstat)")
	}
	storm := filepath.Join(b.TempDir(), "storm")
	if out, err := exec.Command("gcc", "-O2", "-o", storm, "testdata/storm.c").CombinedOutput(); err != nil {
		b.Skipf("skipping: cannot build the storm with gcc: %v\n%s", err, out)
	}
	children := 20000
	if v, err := strconv.Atoi(os.Getenv("STORM_CHILDREN")); err == nil && v > 0 {
		children = v
	}
	names := make([]string, 0, len(readerVariants))
	for n := range readerVariants {
		names = append(names, n)
	}
	sort.Strings(names)
	perEvent := map[string][]float64{}
	ratio := map[string][]float64{}
	for i := 0; i < b.N; i++ {
		b.StopTimer()
		load := loadAvg()
		type listener struct {
			cmd   *exec.Cmd
			stdin *os.File
			out   *bufio.Reader
		}
		ls := map[string]*listener{}
		for _, n := range names {
			cmd := exec.Command(os.Args[0])
			cmd.Env = append(os.Environ(), "CONNECTOR_TEST_HELPER="+readerHelperPrefix+n)
			pr, pw, _ := os.Pipe()
			cmd.Stdin = pr
			stdout, _ := cmd.StdoutPipe()
			if err := cmd.Start(); err != nil {
				b.Fatal(err)
			}
			pr.Close()
			l := &listener{cmd: cmd, stdin: pw, out: bufio.NewReader(stdout)}
			if line, _ := l.out.ReadString('\n'); line != "ready\n" {
				b.Fatalf("%s: %q", n, line)
			}
			ls[n] = l
		}
		fs := exec.Command(forkstat, "-q")
		if err := fs.Start(); err != nil {
			b.Fatal(err)
		}
		time.Sleep(500 * time.Millisecond) // forkstat's start-up (it reads /proc) is not measured
		fsStart, err := procCPU(fs.Process.Pid)
		if err != nil {
			b.Fatal(err)
		}
		st := exec.Command(storm, strconv.Itoa(children), "wait")
		go2, err := st.StdinPipe()
		if err != nil {
			b.Fatal(err)
		}
		if err := st.Start(); err != nil {
			b.Fatal(err)
		}
		for n, l := range ls {
			fmt.Fprintf(l.stdin, "%d\n", st.Process.Pid)
			if line, _ := l.out.ReadString('\n'); line != "armed\n" {
				b.Fatalf("%s: %q", n, line)
			}
		}
		b.StartTimer()
		_, _ = go2.Write([]byte{'\n'})
		if err := st.Wait(); err != nil {
			b.Fatal(err)
		}
		for _, l := range ls {
			fmt.Fprintln(l.stdin, "done")
		}
		type result struct {
			cpu    time.Duration
			events int
			reads  int
		}
		res := map[string]result{}
		maxEvents := 0
		for n, l := range ls {
			line, _ := l.out.ReadString('\n')
			var us, ev, ov, rd int
			if _, err := fmt.Sscan(line, &us, &ev, &ov, &rd); err != nil {
				b.Fatalf("%s: %q", n, line)
			}
			_ = l.cmd.Wait()
			l.stdin.Close()
			res[n] = result{time.Duration(us) * time.Microsecond, ev, rd}
			maxEvents = max(maxEvents, ev)
			if ov != 0 {
				b.Logf("%s: %d overruns", n, ov)
			}
		}
		b.StopTimer()
		fsEnd, _ := procCPU(fs.Process.Pid)
		_ = fs.Process.Signal(syscall.SIGINT)
		fsOut, _ := fs.CombinedOutput()
		_ = fsOut
		_ = fs.Wait()
		fsCPU := fsEnd - fsStart
		fmt.Printf("storm %d/%d: %d children (%d events heard by the busiest listener), load %s (1/5/15 min); forkstat -q %v CPU, %.1f µs/event\n",
			i+1, b.N, children, maxEvents, load, fsCPU, float64(fsCPU.Microseconds())/float64(maxEvents))
		// µs per event are per event the listener heard; for the tree
		// variants, per event the busiest listener heard (what the
		// kernel sent), so that the figures compare.
		for _, n := range names {
			r := res[n]
			pe := float64(r.cpu.Microseconds()) / float64(r.events)
			if n == treeInside || n == treeOutside {
				pe = float64(r.cpu.Microseconds()) / float64(maxEvents)
			}
			rt := float64(r.cpu) / float64(fsCPU)
			perEvent[n] = append(perEvent[n], pe)
			ratio[n] = append(ratio[n], rt)
			fmt.Printf("  %-22s %10v CPU, %6d events in %6d reads, %6.2f µs/event, %.4fx forkstat\n", n, r.cpu, r.events, r.reads, pe, rt)
		}
		b.StartTimer()
	}
	for _, n := range names {
		b.ReportMetric(median(perEvent[n]), "µs/event-"+n)
		b.ReportMetric(median(ratio[n]), "x-forkstat-"+n)
	}
}

func median(v []float64) float64 {
	s := append([]float64(nil), v...)
	sort.Float64s(s)
	if len(s) == 0 {
		return 0
	}
	return s[len(s)/2]
}

// BenchmarkReaderLatency measures the delivery latency of the read
// strategies at a low rate, where coalescing must not kick in: a storm
// root (testdata/storm.c) forks 1,000 children a second (2,000 events a
// second, as the latency target states them), for 2 seconds per
// strategy, with a tree filter rooted at the storm (where it can be had)
// so that the host's other events do not count. The latency of an event
// is the time from the kernel's
// timestamp (CLOCK_MONOTONIC) to the return of the Receive that delivered
// it; p50, p99 and the maximum are reported, with the load average.
func BenchmarkReaderLatency(b *testing.B) {
	if os.Geteuid() != 0 {
		b.Skip("skipping: needs root")
	}
	storm := filepath.Join(b.TempDir(), "storm")
	if out, err := exec.Command("gcc", "-O2", "-o", storm, "testdata/storm.c").CombinedOutput(); err != nil {
		b.Skipf("skipping: cannot build the storm with gcc: %v\n%s", err, out)
	}
	for _, name := range []string{"netpoll", "default"} {
		b.Run(name, func(b *testing.B) {
			var lat []time.Duration
			for range b.N {
				lat = append(lat, pacedLatencies(b, storm, readerVariants[name])...)
			}
			sort.Slice(lat, func(i, j int) bool { return lat[i] < lat[j] })
			if len(lat) == 0 {
				b.Fatal("no events")
			}
			q := func(p float64) float64 { return float64(lat[int(p*float64(len(lat)-1))].Microseconds()) }
			fmt.Printf("%s: %d events, p50 %.0f µs, p99 %.0f µs, max %.0f µs, load %s\n", name, len(lat), q(0.5), q(0.99), q(1), loadAvg())
			b.ReportMetric(q(0.5), "µs-p50")
			b.ReportMetric(q(0.99), "µs-p99")
		})
	}
}

// pacedLatencies runs one paced storm and returns the latencies of its
// fork and exit events.
func pacedLatencies(b *testing.B, storm string, s readStrategy) []time.Duration {
	c, err := Dial(&Config{reader: s})
	if err != nil {
		b.Fatal(err)
	}
	defer c.Close()
	st := exec.Command(storm, "2000", "wait", "1000")
	release, err := st.StdinPipe()
	if err != nil {
		b.Fatal(err)
	}
	if err := st.Start(); err != nil {
		b.Fatal(err)
	}
	root := int32(st.Process.Pid)
	// Only the storm's events reach the socket where a tree filter can
	// be had: the host's other events (other work on a shared machine)
	// would make load of their own.
	if tree, err := c.AttachTreeFilter(1 << 14); err == nil {
		_ = tree.Add(uint32(root))
	} else {
		fmt.Printf("  (no tree filter: %v)\n", err)
	}
	_, _ = release.Write([]byte{'\n'})
	go func() {
		_ = st.Wait()
		_ = c.Mark(1) // the end: a barrier behind the storm's events
	}()
	children := map[int32]bool{}
	var lat []time.Duration
	buf := make([]Event, 0, MaxBatch)
	reads := 0
	for {
		evs, err := c.Receive(buf[:0])
		reads++
		var ts unix.Timespec
		_ = unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts)
		now := uint64(ts.Nano())
		if err != nil && err != ErrOverrun {
			b.Fatal(err)
		}
		for _, ev := range evs {
			switch {
			case ev.What == WhatFork && ev.ParentTGID == root:
				children[ev.TGID] = true
			case ev.What == WhatExit && children[ev.TGID]:
			case ev.What == WhatMark:
				fmt.Printf("  (%d coalescing waits, %d reads)\n", c.coalesced, reads)
				return lat
			default:
				continue
			}
			lat = append(lat, time.Duration(now-ev.Timestamp))
		}
	}
}
