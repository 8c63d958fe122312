package reconcile

import (
	"os"
	"os/exec"
	"strconv"
	"testing"

	"github.com/process-watchman/watchman/internal/benchref"
	"github.com/prometheus/procfs"
)

// benchHostProcs is how many processes the scan benchmarks make the host
// hold at least, by starting idle sleepers (PWATCH_BENCH_PROCS overrides).
func benchHostProcs() int {
	if n, err := strconv.Atoi(os.Getenv("PWATCH_BENCH_PROCS")); err == nil && n >= 0 {
		return n
	}
	return 2000
}

// withHostProcs starts idle children until the host has at least n
// processes, and stops them when the benchmark ends. It returns the number of
// processes on the host.
func withHostProcs(b *testing.B, n int) int {
	b.Helper()
	fs, err := NewFS("")
	if err != nil {
		b.Skipf("no /proc: %v", err)
	}
	sc := fs.NewScanner()
	pids, err := sc.ListPIDs(nil)
	if err != nil {
		b.Fatal(err)
	}
	var cmds []*exec.Cmd
	for have := len(pids); have < n; have++ {
		c := exec.Command("sleep", "3600")
		if err := c.Start(); err != nil {
			b.Fatalf("starting sleeper %d: %v", have, err)
		}
		cmds = append(cmds, c)
	}
	b.Cleanup(func() {
		for _, c := range cmds {
			_ = c.Process.Kill()
			_ = c.Wait()
		}
	})
	pids, _ = sc.ListPIDs(pids[:0])
	return len(pids)
}

func reportPer1000(b *testing.B, procs int) {
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/float64(procs)*1000/1e6, "ms/1000procs")
	b.ReportMetric(float64(procs), "procs")
}

// BenchmarkScan compares the host scan with prometheus/procfs and with the
// plainest raw loop, on the same host in the same run.
func BenchmarkScan(b *testing.B) {
	procs := withHostProcs(b, benchHostProcs())
	fs, err := NewFS("")
	if err != nil {
		b.Fatal(err)
	}
	b.Run("scanner", func(b *testing.B) {
		sc := fs.NewScanner()
		var s Scan
		b.ReportAllocs()
		for b.Loop() {
			if err := sc.Scan(&s); err != nil {
				b.Fatal(err)
			}
		}
		reportPer1000(b, procs)
	})
	b.Run("rawloop", func(b *testing.B) {
		// The reference: Readdirnames, then open/read/close of every
		// /proc/PID/stat into one reused buffer, no parsing beyond the name.
		buf := make([]byte, 4096)
		b.ReportAllocs()
		for b.Loop() {
			if err := benchref.RawLoop(buf); err != nil {
				b.Fatal(err)
			}
		}
		reportPer1000(b, procs)
	})
	b.Run("procfs", func(b *testing.B) {
		pfs, err := procfs.NewFS("/proc")
		if err != nil {
			b.Fatal(err)
		}
		b.ReportAllocs()
		for b.Loop() {
			all, err := pfs.AllProcs()
			if err != nil {
				b.Fatal(err)
			}
			for _, p := range all {
				_, _ = p.Stat()
			}
		}
		reportPer1000(b, procs)
	})
}

// BenchmarkReadStat is the cost of reading one process, as a tree-local
// reconcile does for each member.
func BenchmarkReadStat(b *testing.B) {
	fs, err := NewFS("")
	if err != nil {
		b.Skip(err)
	}
	sc := fs.NewScanner()
	pid := os.Getpid()
	b.ReportAllocs()
	for b.Loop() {
		if _, _, ok, err := sc.Lookup(pid); !ok || err != nil {
			b.Fatal(ok, err)
		}
	}
}

// BenchmarkListPIDs is the cost of listing /proc alone.
func BenchmarkListPIDs(b *testing.B) {
	procs := withHostProcs(b, benchHostProcs())
	fs, err := NewFS("")
	if err != nil {
		b.Fatal(err)
	}
	sc := fs.NewScanner()
	var pids []int
	b.ReportAllocs()
	for b.Loop() {
		pids, err = sc.ListPIDs(pids[:0])
		if err != nil {
			b.Fatal(err)
		}
	}
	reportPer1000(b, procs)
}
