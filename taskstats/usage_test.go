package taskstats_test

import (
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/process-watchman/watchman/taskstats"
	"github.com/process-watchman/watchman/taskstats/taskstatstest"
)

// receiveN reads n records from l.
func receiveN(t *testing.T, l *taskstats.Listener, n int) []taskstats.Record {
	t.Helper()
	var got []taskstats.Record
	buf := make([]taskstats.Record, 0, 2*taskstats.MaxBatch)
	for len(got) < n {
		recs, err := l.Receive(buf[:0])
		if err != nil {
			t.Fatal(err)
		}
		got = append(got, recs...)
	}
	return got
}

// aggregate feeds recs to a and returns the usages it completes.
func aggregate(a *taskstats.Aggregator, recs []taskstats.Record) []taskstats.Usage {
	var out []taskstats.Usage
	for i := range recs {
		if u, ok := a.Add(&recs[i]); ok {
			out = append(out, u)
		}
	}
	return out
}

func thread(pid int32, utime time.Duration, rss, wbytes uint64) taskstats.Record {
	return taskstats.Record{
		Kind: taskstats.KindPID, Version: 16, PID: pid, PPID: 1, Comm: comm("app"),
		UserCPU: utime, SystemCPU: utime / 10, CPURunVirtual: utime*11/10 + time.Microsecond, PeakRSS: rss, WriteBytes: wbytes, ReadBytes: 1024,
		MinorFaults: 3, VoluntarySwitches: 2, InvoluntarySwitches: 1, CPUDelay: time.Millisecond,
		BlkioDelay: 2 * time.Millisecond, Elapsed: time.Second, ProcessElapsed: 2 * time.Second,
	}
}

func TestAggregatorProcesses(t *testing.T) {
	k := taskstatstest.NewKernel()
	k.SetTime(1000 * time.Second)
	l := listenFake(t, k, &taskstats.Config{CPUs: "0"})

	single := thread(10, 5*time.Millisecond, 4<<20, 8192)
	k.ExitProcess(10, []taskstats.Record{single})
	multi := []taskstats.Record{
		thread(21, 100*time.Millisecond, 10<<20, 4096),
		thread(22, 100*time.Millisecond, 30<<20, 0),
		thread(20, 50*time.Millisecond, 30<<20, 1<<20),
	}
	multi[2].ExitStatus = 3 << 8
	k.ExitProcess(20, multi)

	recs := receiveN(t, l, 5)
	var a taskstats.Aggregator
	got := aggregate(&a, recs)
	tick := func(d time.Duration) uint64 { return uint64(d / taskstats.ClockTick) }
	want := []taskstats.Usage{{
		PID: 10, PPID: 1, StartTicks: tick(998 * time.Second), Comm: comm("app"),
		Flags: taskstats.FlagGroupDead, Threads: 1, Wall: 2 * time.Second,
		UserCPU: 5 * time.Millisecond, SystemCPU: 500 * time.Microsecond, Runtime: 5501 * time.Microsecond, PeakRSS: 4 << 20,
		ReadBytes: 1024, WriteBytes: 8192, MinorFaults: 3, VoluntarySwitches: 2, InvoluntarySwitches: 1,
		CPUDelay: time.Millisecond, BlkioDelay: 2 * time.Millisecond,
	}, {
		PID: 20, PPID: 1, StartTicks: tick(998 * time.Second), Comm: comm("app"), ExitStatus: 768,
		Flags: taskstats.FlagGroupDead, Threads: 3, KernelAggregate: true, Wall: 2 * time.Second,
		UserCPU: 250 * time.Millisecond, SystemCPU: 25 * time.Millisecond, Runtime: 275003 * time.Microsecond, PeakRSS: 30 << 20,
		ReadBytes: 3072, WriteBytes: 4096 + 1<<20, MinorFaults: 9, VoluntarySwitches: 6, InvoluntarySwitches: 3,
		CPUDelay: 3 * time.Millisecond, BlkioDelay: 6 * time.Millisecond,
	}}
	if d := cmp.Diff(want, got); d != "" {
		t.Errorf("usages (-want +got):\n%s", d)
	}
	if a.Pending() != 0 || a.Strays() != 0 {
		t.Errorf("pending %d, strays %d", a.Pending(), a.Strays())
	}
	// The single-threaded record alone is the process; the others are not.
	if u, ok := recs[0].ProcessUsage(); !ok || u.PID != 10 || u.Threads != 1 {
		t.Errorf("ProcessUsage of a single-threaded record: %v %+v", ok, u)
	}
	for _, i := range []int{1, 2, 3, 4} {
		if _, ok := recs[i].ProcessUsage(); ok {
			t.Errorf("ProcessUsage of record %d (%v, pid %d) claims a whole process", i, recs[i].Kind, recs[i].PID)
		}
	}
}

// TestAggregatorLostThread checks that the kernel's aggregate supplies the
// CPU of a thread whose record was lost, and that without it (a kernel
// whose aggregate has only delays) the sum of the records received is
// used.
func TestAggregatorLostThread(t *testing.T) {
	last := thread(30, 10*time.Millisecond, 1<<20, 0)
	last.TGID, last.Flags, last.WithGroup = 30, taskstats.FlagGroupDead, true
	group := taskstats.Record{Kind: taskstats.KindTGID, Version: 16, TGID: 30,
		UserCPU: 110 * time.Millisecond, CPUDelay: 5 * time.Millisecond}
	var a taskstats.Aggregator
	u := aggregate(&a, []taskstats.Record{last, group})
	if len(u) != 1 || u[0].UserCPU != 110*time.Millisecond || u[0].CPUDelay != 5*time.Millisecond || !u[0].KernelAggregate {
		t.Errorf("with a 6.18 aggregate: %+v", u)
	}
	old := group
	old.Version, old.UserCPU = 0, 0
	u = aggregate(&a, []taskstats.Record{last, old})
	if len(u) != 1 || u[0].UserCPU != 10*time.Millisecond || u[0].CPUDelay != 5*time.Millisecond {
		t.Errorf("with a delay-only aggregate: %+v", u)
	}
}

func TestAggregatorInterleaved(t *testing.T) {
	a := func(pid, tgid int32, last bool) taskstats.Record {
		r := thread(pid, time.Millisecond, 0, 0)
		r.TGID = tgid
		if last {
			r.Flags = taskstats.FlagGroupDead
		}
		return r
	}
	recs := []taskstats.Record{a(41, 40, false), a(51, 50, false), a(60, 60, true), a(50, 50, true), a(42, 40, false), a(40, 40, true)}
	var ag taskstats.Aggregator
	got := aggregate(&ag, recs)
	var pids []int32
	var threads []int
	for _, u := range got {
		pids = append(pids, u.PID)
		threads = append(threads, u.Threads)
	}
	if d := cmp.Diff([]int32{60, 50, 40}, pids); d != "" {
		t.Errorf("processes (-want +got):\n%s", d)
	}
	if d := cmp.Diff([]int{1, 2, 3}, threads); d != "" {
		t.Errorf("threads (-want +got):\n%s", d)
	}
}

func TestAggregatorStraysAndEviction(t *testing.T) {
	ag := taskstats.Aggregator{MaxPending: 2}
	stray := taskstats.Record{Kind: taskstats.KindTGID, Version: 16, TGID: 9}
	if _, ok := ag.Add(&stray); ok || ag.Strays() != 1 {
		t.Errorf("a lone aggregate: ok %v, strays %d", ok, ag.Strays())
	}
	announced := thread(8, 0, 0, 0)
	announced.TGID, announced.Flags, announced.WithGroup = 8, taskstats.FlagGroupDead, true
	next := thread(7, 0, 0, 0)
	next.TGID, next.Flags = 7, taskstats.FlagGroupDead
	ag.Add(&announced)
	if u, ok := ag.Add(&next); !ok || u.PID != 7 || ag.Strays() != 2 {
		t.Errorf("after a missing aggregate: %v %+v, strays %d", ok, u, ag.Strays())
	}
	for _, tgid := range []int32{100, 200, 300} {
		r := thread(tgid+1, 0, 0, 0)
		r.TGID = tgid
		ag.Add(&r)
	}
	if ag.Pending() != 2 || ag.Evicted() != 1 {
		t.Errorf("pending %d, evicted %d; want 2, 1", ag.Pending(), ag.Evicted())
	}
	ag.Reset()
	if ag.Pending() != 0 {
		t.Errorf("pending %d after Reset", ag.Pending())
	}
}

func TestAggregatorOldVersions(t *testing.T) {
	r := thread(70, time.Millisecond, 0, 0)
	r.Version, r.ProcessElapsed = 11, 0
	var ag taskstats.Aggregator
	if u, ok := ag.Add(&r); !ok || u.PID != 70 || u.Wall != time.Second {
		t.Errorf("version 11 record: %v %+v", ok, u)
	}
}

func TestStartTicks(t *testing.T) {
	r := taskstats.Record{Kind: taskstats.KindPID, Version: 16, Elapsed: time.Second, ProcessElapsed: 3 * time.Second}
	if got := r.StartTicks(); got != 0 {
		t.Errorf("StartTicks without Received: %d", got)
	}
	r.Received = 10*time.Second + 5*time.Millisecond
	if got := r.StartTicks(); got != 700 {
		t.Errorf("StartTicks: %d, want 700", got)
	}
	if got := r.StartTicksAt(2 * time.Second); got != 0 {
		t.Errorf("StartTicksAt before the start: %d", got)
	}
	r.Version, r.ProcessElapsed = 11, 0 // before version 12: Elapsed
	if got := r.StartTicks(); got != 900 {
		t.Errorf("StartTicks of version 11: %d, want 900", got)
	}
	g := taskstats.Record{Kind: taskstats.KindTGID, Received: time.Hour}
	if got := g.StartTicks(); got != 0 {
		t.Errorf("StartTicks of an aggregate: %d", got)
	}
}

func TestRecordHelpers(t *testing.T) {
	r := taskstats.Record{Comm: comm("sh"), ExitStatus: 9, PID: 5, TGID: 4}
	if r.CommString() != "sh" {
		t.Errorf("CommString %q", r.CommString())
	}
	if c, s := r.ExitCode(); c != -1 || s != 9 {
		t.Errorf("ExitCode %d %d", c, s)
	}
	r.ExitStatus = 3 << 8
	if c, s := r.ExitCode(); c != 3 || s != 0 {
		t.Errorf("ExitCode %d %d", c, s)
	}
	if !r.IsThread() {
		t.Error("IsThread false for pid 5 of tgid 4")
	}
	var full taskstats.Record
	for i := range full.Comm {
		full.Comm[i] = 'x'
	}
	if len(full.CommString()) != 32 {
		t.Errorf("CommString of a full comm: %q", full.CommString())
	}
	if taskstats.KindPID.String() != "pid" || taskstats.KindTGID.String() != "tgid" || taskstats.Kind(9).String() != "Kind(9)" {
		t.Error("Kind.String")
	}
}
