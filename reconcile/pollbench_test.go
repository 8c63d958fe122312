package reconcile

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// BenchmarkPollPass compares, on one host and one tree, the two ways a
// polling watcher can learn its tree each pass:
//
//   - walk: Scanner.Walk of the known members (each one's stat and its
//     threads' children files), which finds new children too;
//   - scan: Scanner.Scan of the whole host, then the descendants of the
//     root picked out by parent PID (what a host-scanning poll does);
//   - psutil: scripts/pollbench.py, psutil.Process(root).children(
//     recursive=True) and create_time() of each, in a python3 process
//     (skipped where python3-psutil is missing).
//
// Each reports cpu-ms/pass: the CPU time (getrusage: user + system) that
// the process spent per pass, which other load on a shared machine
// inflates less than wall time. procs is the number of processes /proc
// listed, members the tree's size, load1 the one-minute load average at
// the start.
//
// Sizes come from PWATCH_POLLBENCH_HOSTS (default "1000") and
// PWATCH_POLLBENCH_TREES (default "10,100,1000"), comma-separated; the
// host is filled with idle sleep processes up to each size, and they are
// all ended when the benchmark ends. scripts/pollbench.sh runs the full
// matrix.
func BenchmarkPollPass(b *testing.B) {
	fs, err := NewFS("")
	if err != nil {
		b.Skipf("no /proc: %v", err)
	}
	if !fs.HasChildrenFiles() {
		b.Skip("kernel has no children files")
	}
	hosts := sizesFromEnv(b, "PWATCH_POLLBENCH_HOSTS", "1000")
	trees := sizesFromEnv(b, "PWATCH_POLLBENCH_TREES", "10,100,1000")
	fill := &filler{}
	b.Cleanup(fill.stop)
	for _, host := range hosts {
		for _, tree := range trees {
			b.Run(fmt.Sprintf("host=%d/tree=%d", host, tree), func(b *testing.B) {
				benchPollPass(b, fs, fill, host, tree)
			})
		}
	}
}

func benchPollPass(b *testing.B, fs *FS, fill *filler, host, size int) {
	root := startTree(b, fs, size)
	sc := fs.NewScanner()
	rootStart := startTicksOf(b, fs, root)
	members := discoverTree(b, sc, root, rootStart, size)
	// procs and load are read before each measurement, after the host
	// is topped up to its size (other work on the machine comes and goes).
	var procs int
	var load float64
	top := func(b *testing.B) {
		fill.to(b, fs, host)
		procs, load = countProcs(b, sc), loadavg()
	}

	b.Run("walk", func(b *testing.B) {
		top(b)
		var w Walk
		b.ReportAllocs()
		cpu := cpuTime()
		for b.Loop() {
			if err := sc.Walk(&w, members); err != nil {
				b.Fatal(err)
			}
			if len(w.Results) != size {
				b.Fatalf("walk found %d processes, want %d", len(w.Results), size)
			}
		}
		reportPass(b, cpuTime()-cpu, procs, size, load)
	})
	b.Run("scan", func(b *testing.B) {
		top(b)
		var s Scan
		memo := map[int]int8{}
		byPID := map[int]int{}
		b.ReportAllocs()
		cpu := cpuTime()
		for b.Loop() {
			if err := sc.Scan(&s); err != nil {
				b.Fatal(err)
			}
			if n := descendants(&s, root, rootStart, byPID, memo); n != size {
				b.Fatalf("scan found %d processes in the tree, want %d", n, size)
			}
		}
		reportPass(b, cpuTime()-cpu, procs, size, load)
	})
	b.Run("psutil", func(b *testing.B) {
		script := filepath.Join("..", "scripts", "pollbench.py")
		if _, err := os.Stat(script); err != nil {
			b.Skipf("skipping: %v", err)
		}
		python := psutilPython()
		if python == "" {
			b.Skip("skipping: no python3 with psutil (apt-get install python3-psutil; PWATCH_PYTHON names the interpreter)")
		}
		top(b)
		// One run of the script times at least 20 polls after a warm-up
		// poll: its start-up is not part of a poll, so b.N alone, which
		// counts whole runs, would time one poll.
		var out bytes.Buffer
		c := exec.Command(python, script, "--pid", strconv.Itoa(root), "--polls", strconv.Itoa(max(b.N, 20)))
		c.Stdout, c.Stderr = &out, os.Stderr
		if err := c.Run(); err != nil {
			b.Fatalf("%s: %v\n%s", script, err, out.String())
		}
		var r struct {
			Members      int     `json:"members"`
			CPUMsPerPoll float64 `json:"cpu_ms_per_poll"`
		}
		if err := json.Unmarshal(out.Bytes(), &r); err != nil {
			b.Fatalf("%s said %q: %v", script, out.String(), err)
		}
		if r.Members != size {
			b.Errorf("psutil found %d processes in the tree, want %d", r.Members, size)
		}
		b.ReportMetric(r.CPUMsPerPoll, "cpu-ms/pass")
		b.ReportMetric(float64(procs), "procs")
		b.ReportMetric(float64(size), "members")
		b.ReportMetric(load, "load1")
	})
}

// psutilPython returns a Python interpreter that has psutil: $PWATCH_PYTHON,
// python3 on PATH, or Debian's /usr/bin/python3; "" if none has it.
func psutilPython() string {
	for _, p := range []string{os.Getenv("PWATCH_PYTHON"), "python3", "/usr/bin/python3"} {
		if p != "" && exec.Command(p, "-c", "import psutil").Run() == nil {
			return p
		}
	}
	return ""
}

func reportPass(b *testing.B, cpu time.Duration, procs, size int, load float64) {
	b.ReportMetric(float64(cpu.Nanoseconds())/float64(b.N)/1e6, "cpu-ms/pass")
	b.ReportMetric(float64(procs), "procs")
	b.ReportMetric(float64(size), "members")
	b.ReportMetric(load, "load1")
}

// descendants counts root and the processes below it in a host scan, by
// following each process's parent PIDs up to root or to a process that is
// not in the tree (memo: 1 in the tree, -1 not).
func descendants(s *Scan, root int, rootStart uint64, byPID map[int]int, memo map[int]int8) int {
	clear(byPID)
	clear(memo)
	for i := range s.Entries {
		byPID[s.Entries[i].PID] = i
	}
	if i, ok := byPID[root]; !ok || s.Entries[i].StartTicks != rootStart {
		return 0
	}
	memo[root] = 1
	n := 0
	var chain [64]int
	for i := range s.Entries {
		pid := s.Entries[i].PID
		depth := 0
		var verdict int8
		for {
			if v, ok := memo[pid]; ok {
				verdict = v
				break
			}
			j, ok := byPID[pid]
			if !ok || pid <= 1 || depth == len(chain) {
				verdict = -1
				break
			}
			chain[depth] = pid
			depth++
			pid = s.Entries[j].PPID
		}
		for _, p := range chain[:depth] {
			memo[p] = verdict
		}
		if memo[s.Entries[i].PID] == 1 {
			n++
		}
	}
	return n
}

// startTree starts a tree of size processes: a shell with k child shells,
// each with m sleeps, where 1 + k + k*m = size. It ends the tree when the
// benchmark ends.
func startTree(b *testing.B, fs *FS, size int) int {
	b.Helper()
	k, m := treeShape(size)
	script := fmt.Sprintf(`for i in $(seq %d); do sh -c 'for j in $(seq %d); do sleep 3600 & done; wait' & done; wait`, k, m)
	if size == 1 {
		script = "exec sleep 3600"
	}
	c := exec.Command("sh", "-c", script)
	c.SysProcAttr = &unix.SysProcAttr{Setpgid: true}
	if err := c.Start(); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() {
		_ = unix.Kill(-c.Process.Pid, unix.SIGKILL)
		_ = c.Wait()
		// The sleeps are reaped by init: wait until the group is gone,
		// so that they do not count in the next host's size.
		for unix.Kill(-c.Process.Pid, 0) == nil {
			time.Sleep(time.Millisecond)
		}
	})
	return c.Process.Pid
}

// treeShape splits size-1 into k shells of m sleeps each (k*(m+1) =
// size-1), with k the divisor nearest the square root.
func treeShape(size int) (k, m int) {
	n := size - 1
	if n <= 0 {
		return 0, 0
	}
	best := 1
	for d := 1; d*d <= n; d++ {
		if n%d == 0 && d > 1 && n/d > 1 {
			best = d
		}
	}
	return best, n/best - 1
}

// discoverTree walks down from the root until the tree has size
// processes, and returns them as members.
func discoverTree(b *testing.B, sc *Scanner, root int, rootStart uint64, size int) []Member {
	b.Helper()
	var w Walk
	for tries := 0; ; tries++ {
		if err := sc.Walk(&w, []Member{{PID: root, StartTicks: rootStart}}); err != nil {
			b.Fatal(err)
		}
		alive := 0
		for _, r := range w.Results {
			if r.Status == StatusAlive {
				alive++
			}
		}
		if alive == size {
			break
		}
		if tries > 3000 {
			b.Fatalf("tree has %d of %d processes after 30 s", alive, size)
		}
		// Waiting for the shells to start their children: a poll of
		// the condition itself.
		time.Sleep(10 * time.Millisecond)
	}
	members := make([]Member, len(w.Results))
	for i, r := range w.Results {
		members[i] = Member{PID: r.PID, StartTicks: r.Entry.StartTicks}
	}
	return members
}

// filler keeps idle sleep processes running to give the host a size.
type filler struct{ cmds []*exec.Cmd }

// to starts sleepers until /proc lists at least n processes.
func (f *filler) to(b *testing.B, fs *FS, n int) {
	b.Helper()
	sc := fs.NewScanner()
	for have := countProcs(b, sc); have < n; have++ {
		c := exec.Command("sleep", "3600")
		if err := c.Start(); err != nil {
			b.Fatalf("starting sleeper %d: %v", have, err)
		}
		f.cmds = append(f.cmds, c)
	}
}

func (f *filler) stop() {
	for _, c := range f.cmds {
		_ = c.Process.Kill()
	}
	for _, c := range f.cmds {
		_ = c.Wait()
	}
	f.cmds = nil
}

func countProcs(b *testing.B, sc *Scanner) int {
	b.Helper()
	pids, err := sc.ListPIDs(nil)
	if err != nil {
		b.Fatal(err)
	}
	return len(pids)
}

func sizesFromEnv(b *testing.B, name, def string) []int {
	b.Helper()
	v := os.Getenv(name)
	if v == "" {
		v = def
	}
	var sizes []int
	for _, f := range strings.Split(v, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil || n < 1 {
			b.Fatalf("%s=%q: want comma-separated sizes", name, v)
		}
		sizes = append(sizes, n)
	}
	return sizes
}

// cpuTime is this process's user plus system CPU time.
func cpuTime() time.Duration {
	var ru unix.Rusage
	_ = unix.Getrusage(unix.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// loadavg is the one-minute load average.
func loadavg() float64 {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return -1
	}
	f, _ := strconv.ParseFloat(strings.Fields(string(b))[0], 64)
	return f
}
