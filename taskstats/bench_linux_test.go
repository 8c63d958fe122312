package taskstats_test

import (
	"syscall"
	"testing"
	"time"
)

// BenchmarkIntegrationStorm measures the listener's CPU per record on a
// storm of 5,000 children that fork and exit at once (raw clones of a
// workload root, a separate process): the CPU of the goroutine that
// receives and aggregates (locked to its thread) and the CPU of this
// whole test process (rusage) during the storm, divided by the records
// read (every exiting task on the host counts). Other processes share the
// machine: the load average is logged with each run.
func BenchmarkIntegrationStorm(b *testing.B) {
	requireTaskstats(b)
	var thread, proc time.Duration
	var records, children, withUsage int
	for b.Loop() {
		before := rusage(b)
		sr, c := runStorm(b, 5000, nil)
		proc += rusage(b) - before
		thread += c.threadCPU
		records += sr.records
		children += sr.children
		withUsage += sr.withUsage
		b.Logf("storm: %d children, %d with a usage, %d records, %d overruns, %d drops; load %s",
			sr.children, sr.withUsage, sr.records, sr.overruns, sr.drops, loadavg())
	}
	b.ReportMetric(float64(thread.Nanoseconds())/float64(max(records, 1)), "receiver-ns/record")
	b.ReportMetric(float64(proc.Nanoseconds())/float64(max(records, 1)), "process-ns/record")
	b.ReportMetric(float64(withUsage)/float64(max(children, 1)), "usage/child")
}

// rusage returns the user and system CPU of this process.
func rusage(tb testing.TB) time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		tb.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
