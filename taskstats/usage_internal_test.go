package taskstats

import "testing"

// TestAggregatorOrderBounded checks that the eviction queue does not grow
// with the number of processes completed, and that eviction picks the
// process first seen longest ago.
func TestAggregatorOrderBounded(t *testing.T) {
	a := Aggregator{MaxPending: 3}
	for i := range int32(10000) {
		tgid := 1000 + i
		thread := Record{Kind: KindPID, Version: 16, PID: tgid + 1, TGID: tgid}
		last := Record{Kind: KindPID, Version: 16, PID: tgid, TGID: tgid, Flags: FlagGroupDead}
		a.Add(&thread)
		if _, ok := a.Add(&last); !ok {
			t.Fatalf("process %d not completed", tgid)
		}
		// Compaction runs at inserts: the queue stays within twice the
		// pending processes (at most MaxPending) plus a constant.
		if n := len(a.order) - a.head; n > 2*a.MaxPending+66 {
			t.Fatalf("after %d processes the queue holds %d entries for %d pending", i+1, n, len(a.pending))
		}
	}
	for _, tgid := range []int32{1, 2, 3, 4} {
		r := Record{Kind: KindPID, Version: 16, PID: tgid + 100, TGID: tgid}
		a.Add(&r)
	}
	if _, ok := a.pending[1]; ok || len(a.pending) != 3 || a.Evicted() != 1 {
		t.Errorf("pending %v, evicted %d: want 2, 3, 4 and 1 evicted", a.pending, a.Evicted())
	}
}
