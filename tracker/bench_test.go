package tracker

import (
	"testing"
	"time"
)

// hostEntries builds a host of n processes of which members are descendants
// of PID 100 (a chain of shallow trees), the rest unrelated.
func hostEntries(n, members int) []Entry {
	es := make([]Entry, 0, n)
	es = append(es, live(1, 0, 1), live(100, 1, 2))
	for i := 0; len(es) < n; i++ {
		pid := 1000 + i
		ppid := 1
		if i < members {
			ppid = 100
			if i%4 != 0 {
				ppid = pid - 1 // a parent in the tree
			}
		}
		es = append(es, live(pid, ppid, uint64(pid)))
	}
	return es
}

// BenchmarkApplyScan is the tracker's share of a reconcile: a steady-state
// scan of 5,000 host processes with 100 members, in ns per entry.
func BenchmarkApplyScan(b *testing.B) {
	es := hostEntries(5000, 100)
	tr := New(id(100, 2), Config{}, t0)
	tr.ApplyScan(es, t0, ScanOptions{})
	tr.Take()
	b.ReportAllocs()
	for b.Loop() {
		tr.ApplyScan(es, t0, ScanOptions{})
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/float64(len(es)), "ns/entry")
}

// BenchmarkForkExit is the per-event cost of a member forking a child that
// exits, and of a fork outside the tree.
func BenchmarkForkExit(b *testing.B) {
	b.Run("member", func(b *testing.B) {
		tr := New(id(100, 2), Config{}, t0)
		at := time.Unix(1, 0)
		var chs []Change
		b.ReportAllocs()
		i := 0
		for b.Loop() {
			// As the hub's writer does: the changes are drained after
			// each call (else the log grows and copying it is measured).
			pid := 1000 + i%30000
			tr.Fork(100, Identity{PID: pid, StartTicks: uint64(i)}, false, at, 0, nil)
			chs = tr.DrainChanges(chs[:0])
			tr.ExitTask(pid, pid, 0, 0, at, 0)
			chs = tr.DrainChanges(chs[:0])
			i++
			if i%1024 == 0 {
				tr.Take()
			}
		}
	})
	b.Run("outside", func(b *testing.B) {
		tr := New(id(100, 2), Config{}, t0)
		b.ReportAllocs()
		i := 0
		for b.Loop() {
			tr.Fork(7, Identity{PID: 1000 + i%30000, StartTicks: uint64(i)}, false, t0, 0, nil)
			i++
		}
	})
}
