package taskstats_test

import (
	"errors"
	"syscall"
	"testing"
	"time"

	"github.com/process-watchman/watchman/connector"
)

// BenchmarkIntegrationStorm measures the listener's CPU per record on a
// storm of 5,000 children that fork and exit at once (raw clones of a
// workload root, a separate process): the CPU of the goroutine that
// receives and aggregates (locked to its thread), and the CPU of this
// whole test process (rusage: it includes the workload harness, which
// reads the 5,000 children's ground truth) during the storm, divided by
// the records read (every exiting task on the host counts). For scale, a
// bare proc connector receive loop (fork, exec and exit events) runs
// beside it, measured the same way. Other processes share the machine:
// the load average is logged with each run. The sub-benchmarks set
// Config.MinReadInterval (0, 1 ms, 10 ms), which trades delay for records
// per wakeup.
func BenchmarkIntegrationStorm(b *testing.B) {
	for _, interval := range []time.Duration{0, time.Millisecond, 10 * time.Millisecond} {
		b.Run("interval="+interval.String(), func(b *testing.B) { benchStorm(b, interval, false) })
	}
	b.Run("filtered-out", func(b *testing.B) { benchStorm(b, 0, true) })
}

// benchStorm runs the storms with Config.MinReadInterval set to interval
// (0: a reader woken by every record it can). With filtered, a socket
// filter passes only the records of PID 1, so the kernel drops the storm's
// before they wake the reader (the cost for a tree the storm is outside).
func benchStorm(b *testing.B, interval time.Duration, filtered bool) {
	requireTaskstats(b)
	var thread, proc, cnThread time.Duration
	var records, reads, children, withUsage, events int
	for b.Loop() {
		cn := receiveConnector(b)
		before := rusage(b)
		sr, c := runStormFiltered(b, 5000, interval, filtered)
		proc += rusage(b) - before
		cnCPU, cnEvents := cn.stop()
		thread += c.threadCPU
		records += sr.records
		reads += int(c.l.Stats().Reads)
		children += sr.children
		withUsage += sr.withUsage
		cnThread += cnCPU
		events += cnEvents
		b.Logf("storm: %d children, %d with a usage, %d records in %d reads, receiver %v; %d overruns, %d drops; "+
			"connector %d events, receiver %v; load %s",
			sr.children, sr.withUsage, sr.records, c.l.Stats().Reads, c.threadCPU, sr.overruns, sr.drops,
			cnEvents, cnCPU, loadavg())
	}
	b.ReportMetric(float64(thread.Nanoseconds())/float64(max(children, 1)), "receiver-ns/child")
	if !filtered { // per record is meaningless when none arrive
		b.ReportMetric(float64(thread.Nanoseconds())/float64(max(records, 1)), "receiver-ns/record")
		b.ReportMetric(float64(records)/float64(max(reads, 1)), "records/read")
		b.ReportMetric(float64(proc.Nanoseconds())/float64(max(records, 1)), "process-ns/record")
	}
	b.ReportMetric(float64(cnThread.Nanoseconds())/float64(max(events, 1)), "connector-ns/event")
	b.ReportMetric(float64(cnThread.Nanoseconds())/float64(max(children, 1)), "connector-ns/child")
	if !filtered {
		b.ReportMetric(float64(withUsage)/float64(max(children, 1)), "usage/child")
	}
}

// cnReceiver is a bare proc connector receive loop on a locked thread.
type cnReceiver struct {
	c      *connector.Conn
	done   chan struct{}
	cpu    time.Duration
	events int
}

func receiveConnector(tb testing.TB) *cnReceiver {
	c, err := connector.Dial(nil)
	if err != nil {
		tb.Fatalf("proc connector: %v", err)
	}
	r := &cnReceiver{c: c, done: make(chan struct{})}
	go func() {
		defer close(r.done)
		lockThread()
		start := threadCPU()
		buf := make([]connector.Event, 0, connector.MaxBatch)
		for {
			evs, err := c.Receive(buf[:0])
			r.events += len(evs)
			r.cpu = threadCPU() - start
			if err != nil && !errors.Is(err, connector.ErrOverrun) {
				return
			}
		}
	}()
	return r
}

// stop closes the connector and returns the loop's CPU and event count.
func (r *cnReceiver) stop() (time.Duration, int) {
	_ = r.c.Close()
	<-r.done
	return r.cpu, r.events
}

// rusage returns the user and system CPU of this process.
func rusage(tb testing.TB) time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		tb.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
