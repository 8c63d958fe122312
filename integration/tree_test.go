package integration

import (
	"slices"
	"testing"
	"time"

	"github.com/process-watchman/watchman"
	"github.com/process-watchman/watchman/internal/workload"
	"github.com/process-watchman/watchman/tracker"
)

// observed is everything a watcher reported over a workload's run.
type observed struct {
	added   map[watchman.Identity]bool
	exits   map[watchman.Identity]watchman.Exit
	tombs   map[watchman.Identity]watchman.Tombstone
	forks   map[int]watchman.Event // by PID, last fork event
	execs   map[int]watchman.Event
	lost    int
	repairs int
	snap    watchman.Snapshot
}

// watchWorkload attaches to a held workload root, runs it, and collects
// what the watcher saw until the workload is over and every exit is in.
// The strategy is cfg's, connector mode if it is not set.
func watchWorkload(t *testing.T, spec workload.Spec, cfg watchman.Config) (*workload.Result, *observed) {
	t.Helper()
	if spec.Timeout == 0 {
		// A bound for a broken run, not a measure: under -race on a
		// machine loaded by other storms, a storm of 1,000 can take
		// more than the default minute.
		spec.Timeout = 10 * time.Minute
	}
	p, err := workload.Start(spec)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Strategy == "" {
		cfg.Strategy = watchman.StrategyConnector
	}
	cfg.KeepTombstones = true
	cfg.TombstoneLimit = 1 << 20
	w, err := watchman.Attach(p.PID(), &cfg)
	if err != nil {
		p.Kill()
		t.Fatal(err)
	}
	defer w.Close()
	sub := w.Subscribe(1 << 20)
	obs := &observed{
		added: map[watchman.Identity]bool{}, exits: map[watchman.Identity]watchman.Exit{},
		tombs: map[watchman.Identity]watchman.Tombstone{}, forks: map[int]watchman.Event{}, execs: map[int]watchman.Event{},
	}
	collect := func() {
		s, err := w.Poll()
		if err != nil {
			t.Fatal(err)
		}
		for _, id := range s.Delta.Added {
			obs.added[id] = true
		}
		for _, x := range s.Delta.Exited {
			obs.exits[x.Identity] = x
		}
		for _, ts := range s.Tombstones {
			obs.tombs[ts.Identity] = ts
		}
		obs.repairs += s.Repairs
		obs.snap = s
	}
	collect()
	if err := p.Go(); err != nil {
		t.Fatal(err)
	}
	res, err := p.Wait()
	if err != nil {
		t.Fatalf("workload: %v", err)
	}
	// The root has exited; wait until its exit, the last event, is in.
	deadline := time.Now().Add(20 * time.Second)
	for {
		collect()
		if !obs.snap.RootAlive && len(obs.snap.Processes) == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the watcher still sees root alive=%v members %v", obs.snap.RootAlive, obs.snap.PIDs())
		}
		time.Sleep(5 * time.Millisecond)
	}
	for len(sub.C) > 0 {
		ev := <-sub.C
		switch ev.Type {
		case watchman.EventFork:
			obs.forks[ev.Process.PID] = ev
		case watchman.EventExec:
			obs.execs[ev.Process.PID] = ev
		case watchman.EventLost:
			obs.lost++
		}
	}
	return res, obs
}

// match finds the identity the watcher gave to a ground-truth record:
// exact, or derived from the fork timestamp within the tolerance.
func (o *observed) match(r workload.Record) (watchman.Identity, bool, bool) {
	id := watchman.Identity{PID: r.PID, StartTicks: r.StartTicks}
	if o.added[id] {
		return id, true, true
	}
	for d := -tracker.ApproxTolerance; d <= tracker.ApproxTolerance; d++ {
		alt := watchman.Identity{PID: r.PID, StartTicks: uint64(int64(r.StartTicks) + int64(d))}
		if o.added[alt] {
			return alt, true, false
		}
	}
	return id, false, false
}

// checkAll asserts that every process of the workload was seen, with the
// right exit, and nothing else.
func checkAll(t *testing.T, res *workload.Result, obs *observed) {
	t.Helper()
	approx := 0
	for _, r := range res.Records {
		id, ok, exact := obs.match(r)
		if !ok {
			t.Errorf("missed %s #%d: pid %d start %d", r.Kind, r.Index, r.PID, r.StartTicks)
			continue
		}
		if !exact {
			approx++
		}
		x, ok := obs.exits[id]
		switch {
		case !ok:
			t.Errorf("no exit for %s pid %d", r.Kind, r.PID)
		case !x.StatusKnown || x.Code != r.Code || x.Signal != int(r.Signal):
			t.Errorf("%s pid %d: exit code %d signal %d known %v, want code %d signal %d", r.Kind, r.PID, x.Code, x.Signal, x.StatusKnown, r.Code, r.Signal)
		}
	}
	if extra := len(obs.added) - len(res.Records); extra != 0 {
		t.Errorf("%d processes added beyond the workload's %d", extra, len(res.Records))
	}
	if obs.lost != 0 || obs.repairs != 0 {
		t.Errorf("lost markers %d, repairs %d: the stream was not complete", obs.lost, obs.repairs)
	}
	t.Logf("%d processes, all seen (%d with a start time derived from the fork timestamp)", len(res.Records), approx)
}

func TestIntegrationStormOf1000ShortChildren(t *testing.T) {
	requireConnector(t)
	spec := workload.Spec{Storm: &workload.Storm{Count: 1000, Lifetime: time.Millisecond, SignalEvery: 7}}
	res, obs := watchWorkload(t, spec, watchman.Config{})
	checkAll(t, res, obs)
	if len(res.Records) != 1000 {
		t.Fatalf("workload made %d processes", len(res.Records))
	}
}

func TestIntegrationStormForkExec(t *testing.T) {
	requireConnector(t)
	spec := workload.Spec{Storm: &workload.Storm{Count: 200, Mode: workload.ForkExec, SignalEvery: 5, Signal: 15}}
	res, obs := watchWorkload(t, spec, watchman.Config{CaptureCmdline: true})
	checkAll(t, res, obs)
}

func TestIntegrationOrphansStayMembers(t *testing.T) {
	requireConnector(t)
	spec := workload.Spec{Orphans: &workload.Orphans{Count: 40, Lifetime: 300 * time.Millisecond, Code: 3}}
	res, obs := watchWorkload(t, spec, watchman.Config{})
	checkAll(t, res, obs)
	// Each orphan outlived its wrapper and was still a member when it
	// exited: its exit came from the kernel, with its code, at depth 2.
	for _, r := range res.Kind(workload.KindOrphan) {
		id, _, _ := obs.match(r)
		ts, ok := obs.tombs[id]
		if !ok || ts.Depth != 2 || ts.Exit.Code != 3 || !ts.Exit.StatusKnown {
			t.Errorf("orphan %d: tombstone %+v", r.PID, ts)
		}
		wrapper := slices.IndexFunc(res.Records, func(w workload.Record) bool { return w.PID == r.PPID && w.Kind == workload.KindWrapper })
		if wrapper < 0 {
			t.Fatalf("orphan %d has no wrapper", r.PID)
		}
		wid, _, _ := obs.match(res.Records[wrapper])
		if wx := obs.exits[wid]; !wx.Time.Before(ts.Exit.Time) {
			t.Errorf("orphan %d exited at %v, before its wrapper at %v", r.PID, ts.Exit.Time, wx.Time)
		}
	}
}

func TestIntegrationChain200Deep(t *testing.T) {
	requireConnector(t)
	spec := workload.Spec{Chain: &workload.Chain{Depth: 200, Lifetime: 50 * time.Millisecond, Code: 9}}
	res, obs := watchWorkload(t, spec, watchman.Config{})
	checkAll(t, res, obs)
	for _, r := range res.Kind(workload.KindChain) {
		id, _, _ := obs.match(r)
		if ts := obs.tombs[id]; ts.Depth != r.Depth {
			t.Errorf("link %d at depth %d, want %d", r.Index, ts.Depth, r.Depth)
		}
	}
}

func TestIntegrationThreadsCountOnce(t *testing.T) {
	requireConnector(t)
	spec := workload.Spec{Threads: &workload.Threads{Threads: 50, Lifetime: 200 * time.Millisecond, Code: 4}}
	res, obs := watchWorkload(t, spec, watchman.Config{})
	checkAll(t, res, obs)
	rec := res.Kind(workload.KindThreads)
	if len(rec) != 1 || rec[0].Threads < 50 {
		t.Fatalf("threads child: %+v", rec)
	}
}

func TestIntegrationExecUpdatesName(t *testing.T) {
	requireConnector(t)
	spec := workload.Spec{Exec: &workload.Exec{Count: 5, Before: 20 * time.Millisecond, Lifetime: 50 * time.Millisecond}}
	res, obs := watchWorkload(t, spec, watchman.Config{CaptureCmdline: true})
	checkAll(t, res, obs)
	for _, r := range res.Kind(workload.KindExec) {
		id, _, _ := obs.match(r)
		ts := obs.tombs[id]
		ev, ok := obs.execs[r.PID]
		if !ok || ev.Name != "sleep" || ts.Name != "sleep" || len(ts.Cmdline) == 0 || ts.Cmdline[0] != "sleep" {
			t.Errorf("exec child %d: event %+v tombstone name %q cmdline %q", r.PID, ev, ts.Name, ts.Cmdline)
		}
		if fork := obs.forks[r.PID]; fork.Name != r.PreExecComm {
			t.Errorf("exec child %d forked as %q, want %q", r.PID, fork.Name, r.PreExecComm)
		}
	}
}
