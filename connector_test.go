package watchman

import (
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/process-watchman/watchman/connector"
	"github.com/process-watchman/watchman/connector/connectortest"
	"github.com/process-watchman/watchman/internal/fakeproc"
	"go.uber.org/goleak"
	"golang.org/x/sys/unix"
)

// fakeWorld is a fake kernel and a fake /proc that agree with each other,
// and a hub over both.
type fakeWorld struct {
	t      *testing.T
	host   *fakeproc.Tree
	kernel *connectortest.Kernel
	hub    *Hub
	dials  int
	mu     sync.Mutex
	sent   uint64
}

// emit queues events in the fake kernel.
func (fw *fakeWorld) emit(evs ...connector.Event) {
	fw.sent += uint64(len(evs))
	fw.kernel.Emit(evs...)
}

// sync waits until the hub has applied every emitted event.
func (fw *fakeWorld) sync() {
	fw.t.Helper()
	waitFor(fw.t, "the hub to apply the events", func() bool {
		st := fw.hub.Stats()
		return st.Forks+st.Execs+st.Exits+st.Other >= fw.sent
	})
}

// ticks returns the start time, in ticks since boot, of a process forked
// now: what the fake /proc must show for the fork events emitted now to
// match it, as on a real host.
func ticks() uint64 {
	var ts unix.Timespec
	_ = unix.ClockGettime(unix.CLOCK_BOOTTIME, &ts)
	return uint64(ts.Nano()) / 1e7
}

func newFakeWorld(t *testing.T) *fakeWorld {
	fw := &fakeWorld{t: t, host: fakeHost(t), kernel: connectortest.NewKernel()}
	fw.hub = NewHub(&HubConfig{ProcRoot: fw.host.Root(), Dial: func(cfg *connector.Config) (*connector.Conn, error) {
		fw.mu.Lock()
		fw.dials++
		fw.mu.Unlock()
		return fw.kernel.Dial(cfg)
	}})
	return fw
}

func (fw *fakeWorld) attach(cfg Config) *Watcher {
	fw.t.Helper()
	cfg.ProcRoot = fw.host.Root()
	cfg.Hub = fw.hub
	cfg.Strategy = StrategyConnector
	return mustAttach(fw.t, 100, &cfg)
}

func now() uint64 {
	var ts unix.Timespec
	_ = unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts)
	return uint64(ts.Nano())
}

func forkEv(parent, child int) connector.Event {
	return connector.Event{What: connector.WhatFork, Timestamp: now(), ParentPID: int32(parent), ParentTGID: int32(parent),
		PID: int32(child), TGID: int32(child)}
}

func threadEv(tgid, tid int) connector.Event {
	return connector.Event{What: connector.WhatFork, Timestamp: now(), ParentPID: int32(tgid), ParentTGID: int32(tgid),
		PID: int32(tid), TGID: int32(tgid)}
}

func execEv(pid int) connector.Event {
	return connector.Event{What: connector.WhatExec, Timestamp: now(), PID: int32(pid), TGID: int32(pid)}
}

func exitEv(tid, tgid int, status uint32) connector.Event {
	sig := int32(17)
	if tid != tgid {
		sig = -1
	}
	return connector.Event{What: connector.WhatExit, Timestamp: now(), PID: int32(tid), TGID: int32(tgid),
		ExitStatus: status, ExitSignal: sig, ParentPID: 1, ParentTGID: 1}
}

// waitFor polls cond until it holds; tests never assert on time, so the
// deadline only bounds a broken run.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second) // at load 200 a 20-child shell took over 10 s
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(time.Millisecond)
	}
}

func hasPIDs(w *Watcher, want ...int) func() bool {
	return func() bool { return slices.Equal(w.LivePIDs(), want) }
}

func TestConnectorForkExecExit(t *testing.T) {
	fw := newFakeWorld(t)
	w := fw.attach(Config{CaptureCmdline: true})
	if w.Mode() != ModeConnector {
		t.Fatalf("mode %s: %s", w.Mode(), w.ModeReason())
	}
	sub := w.Subscribe(0)
	s := mustPoll(t, w)
	if !slices.Equal(s.Delta.AddedPIDs(), []int{101}) {
		t.Fatalf("initial members: %v", s.Delta.AddedPIDs())
	}

	// make (101) forks cc (102), which execs; cc forks a thread (ignored)
	// and exits 1; an unrelated process forks too.
	t1200 := ticks()
	fw.host.Set(fakeproc.Proc{PID: 102, PPID: 101, Comm: "make", StartTicks: t1200, Cmdline: []string{"make", "all"}})
	fw.emit(forkEv(101, 102), forkEv(200, 201))
	waitFor(t, "fork", hasPIDs(w, 101, 102))
	fw.host.Set(fakeproc.Proc{PID: 102, PPID: 101, Comm: "cc", StartTicks: t1200, Cmdline: []string{"cc", "-c", "x.c"}})
	fw.emit(execEv(102), threadEv(102, 103))
	fw.sync()
	fw.host.Remove(102)
	fw.emit(exitEv(102, 102, 1<<8))
	waitFor(t, "exit", hasPIDs(w, 101))

	s = mustPoll(t, w)
	if !slices.Equal(s.Delta.AddedPIDs(), []int{102}) || !slices.Equal(s.Delta.RemovedPIDs(), []int{102}) {
		t.Errorf("delta %+v", s.Delta)
	}
	if len(s.Delta.Exited) != 1 || s.Delta.Exited[0].Code != 1 || !s.Delta.Exited[0].StatusKnown {
		t.Errorf("exited %+v", s.Delta.Exited)
	}
	var got []string
	for len(got) < 3 {
		ev := <-sub.C
		got = append(got, string(ev.Type)+" "+ev.Name)
		if ev.Type == EventExec && !slices.Equal(ev.Cmdline, []string{"cc", "-c", "x.c"}) {
			t.Errorf("exec cmdline %v", ev.Cmdline)
		}
		if ev.Type == EventExit && (ev.Exit == nil || ev.Exit.Code != 1 || ev.KernelTime == 0) {
			t.Errorf("exit event %+v", ev)
		}
	}
	if want := []string{"fork make", "exec cc", "exit cc"}; !slices.Equal(got, want) {
		t.Errorf("events %q, want %q", got, want)
	}
}

func TestConnectorExitBeforeForkProcessed(t *testing.T) {
	// The child is gone from /proc by the time its fork event is read: its
	// start is derived from the event's timestamp and marked approximate,
	// and it is still in both Added and Removed, with its exit status.
	fw := newFakeWorld(t)
	w := fw.attach(Config{})
	mustPoll(t, w)
	fw.emit(forkEv(101, 150), exitEv(150, 150, 9))
	fw.sync()
	s := mustPoll(t, w)
	if !slices.Equal(s.Delta.AddedPIDs(), []int{150}) || !slices.Equal(s.Delta.RemovedPIDs(), []int{150}) {
		t.Fatalf("delta %+v", s.Delta)
	}
	x := s.Delta.Exited[0]
	if x.Signal != 9 || x.Code != -1 || x.StartTicks == 0 {
		t.Errorf("exit %+v", x)
	}
	// Two reconciles later nothing came back or churned.
	for range 2 {
		if err := w.reconcile(true, 0); err != nil {
			t.Fatal(err)
		}
	}
	if s := mustPoll(t, w); !s.Delta.Empty() || s.Repairs != 0 {
		t.Errorf("after reconcile: %+v", s)
	}
}

func TestConnectorThreadsAndLeaderExit(t *testing.T) {
	fw := newFakeWorld(t)
	w := fw.attach(Config{})
	t1500 := ticks()
	fw.host.Set(fakeproc.Proc{PID: 110, PPID: 101, Comm: "java", StartTicks: t1500})
	fw.emit(forkEv(101, 110), threadEv(110, 111), threadEv(110, 112))
	waitFor(t, "fork", hasPIDs(w, 101, 110))
	// The main thread exits; two threads run on (the leader is a zombie).
	fw.host.Set(fakeproc.Proc{PID: 110, PPID: 101, Comm: "java", StartTicks: t1500, State: 'Z', Threads: 3})
	fw.emit(exitEv(110, 110, 0))
	fw.sync()
	if !slices.Contains(w.LivePIDs(), 110) {
		t.Fatal("a process whose first thread exited was removed while its threads run")
	}
	// One thread exits: one left, still live.
	fw.host.Set(fakeproc.Proc{PID: 110, PPID: 101, Comm: "java", StartTicks: t1500, State: 'Z', Threads: 2})
	fw.emit(exitEv(111, 110, 0))
	fw.sync()
	if !slices.Contains(w.LivePIDs(), 110) {
		t.Fatal("removed with a thread still running")
	}
	// The last thread exits with the group's status.
	fw.host.Set(fakeproc.Proc{PID: 110, PPID: 101, Comm: "java", StartTicks: t1500, State: 'Z', Threads: 1})
	fw.emit(exitEv(112, 110, 3<<8))
	waitFor(t, "group exit", hasPIDs(w, 101))
	// The removal may come from a look at /proc (the group is a zombie
	// now) before the last thread's exit event is applied, with the
	// first thread's status, provisional; the event then upgrades it.
	// Wait until it is applied (a hog run polled in between: code 0).
	fw.sync()
	s := mustPoll(t, w)
	for _, x := range s.Delta.Exited {
		if x.PID == 110 && (x.Code != 3 || !x.StatusKnown) {
			t.Errorf("group exit %+v", x)
		}
	}
}

func TestConnectorLeaderExitConfirmedByReconcile(t *testing.T) {
	// The last thread's exit event was lost: the check after the leader's
	// exit finds the process gone and removes it with the leader's status.
	fw := newFakeWorld(t)
	w := fw.attach(Config{})
	t1500 := ticks()
	fw.host.Set(fakeproc.Proc{PID: 110, PPID: 101, Comm: "java", StartTicks: t1500, State: 'Z', Threads: 2})
	fw.emit(forkEv(101, 110), threadEv(110, 111), exitEv(110, 110, 5<<8))
	waitFor(t, "fork", func() bool { return slices.Contains(w.LivePIDs(), 110) })
	fw.host.Remove(110)
	waitFor(t, "confirmation", hasPIDs(w, 101))
	s := mustPoll(t, w)
	if len(s.Delta.Exited) != 1 || s.Delta.Exited[0].Code != 5 {
		t.Errorf("exit %+v", s.Delta.Exited)
	}
}

func TestConnectorPIDReuse(t *testing.T) {
	fw := newFakeWorld(t)
	w := fw.attach(Config{})
	mustPoll(t, w)
	t2000 := ticks()
	fw.host.Set(fakeproc.Proc{PID: 130, PPID: 101, Comm: "a", StartTicks: t2000})
	fw.emit(forkEv(101, 130))
	waitFor(t, "fork", hasPIDs(w, 101, 130))
	// 130's exit event is lost; the PID is reused by another fork of 101.
	time.Sleep(30 * time.Millisecond) // a reused PID starts later
	t2500 := ticks()
	fw.host.Set(fakeproc.Proc{PID: 130, PPID: 101, Comm: "b", StartTicks: t2500})
	fw.emit(forkEv(101, 130))
	waitFor(t, "reuse", func() bool {
		w.mu.Lock()
		defer w.mu.Unlock()
		p, ok := w.tr.Member(130)
		return ok && p.ID.StartTicks == t2500
	})
	s := mustPoll(t, w)
	want := []Identity{{130, t2000}, {130, t2500}}
	if !slices.Equal(s.Delta.Added, want) || !slices.Equal(s.Delta.Removed, want[:1]) || s.Repairs != 1 {
		t.Errorf("delta %+v repairs %d", s.Delta, s.Repairs)
	}
	// A reused root PID: the root exits, its PID goes to a stranger.
	fw.host.Remove(100)
	fw.host.Set(fakeproc.Proc{PID: 100, PPID: 200, Comm: "stranger", StartTicks: 9000})
	fw.emit(exitEv(100, 100, 0), forkEv(200, 100), forkEv(100, 140))
	waitFor(t, "root exit", func() bool { s, _ := w.Poll(); return !s.RootAlive })
	if slices.Contains(w.LivePIDs(), 100) || slices.Contains(w.LivePIDs(), 140) {
		t.Errorf("the stranger was adopted: %v", w.LivePIDs())
	}
}

func TestConnectorOverrunRepairs(t *testing.T) {
	fw := newFakeWorld(t)
	w := fw.attach(Config{})
	sub := w.Subscribe(0)
	mustPoll(t, w)
	// While the events were dropped: 101 exited, 105 (a child of 101,
	// reparented) and 106 (its child) appeared.
	fw.host.Remove(101)
	t3000 := ticks()
	t3100 := ticks()
	t3200 := ticks()
	fw.host.Set(
		fakeproc.Proc{PID: 105, PPID: 1, Comm: "x", StartTicks: t3000},
		fakeproc.Proc{PID: 106, PPID: 105, Comm: "y", StartTicks: t3100},
		fakeproc.Proc{PID: 107, PPID: 100, Comm: "z", StartTicks: t3200},
	)
	fw.kernel.Overrun()
	fw.emit(forkEv(200, 201)) // the stream goes on
	waitFor(t, "repair", hasPIDs(w, 107))
	s := mustPoll(t, w)
	if s.Overruns != 1 || s.Repairs != 2 || !slices.Equal(s.Delta.AddedPIDs(), []int{107}) || !slices.Equal(s.Delta.RemovedPIDs(), []int{101}) {
		t.Errorf("after overrun: overruns %d repairs %d delta %+v", s.Overruns, s.Repairs, s.Delta)
	}
	// 105 and 106 cannot be told from strangers (their parent link to the
	// tree was lost with the events), so they are not members.
	var types []string
	for len(types) < 3 {
		ev := <-sub.C
		types = append(types, string(ev.Type))
		if ev.Type != EventLost && !ev.Synthetic {
			t.Errorf("repair event not synthetic: %+v", ev)
		}
	}
	if !slices.Equal(types, []string{"lost", "exit", "fork"}) && !slices.Equal(types, []string{"lost", "fork", "exit"}) {
		t.Errorf("events %v", types)
	}
}

func TestConnectorSlowSubscriberGetsLostMarker(t *testing.T) {
	fw := newFakeWorld(t)
	w := fw.attach(Config{})
	sub := w.Subscribe(2)
	for pid := 300; pid < 310; pid++ {
		fw.host.Set(fakeproc.Proc{PID: pid, PPID: 101, Comm: "s", StartTicks: ticks()})
		fw.emit(forkEv(101, pid))
	}
	waitFor(t, "forks", func() bool { return len(w.LivePIDs()) == 11 })
	if n := sub.Lost(); n != 8 {
		t.Errorf("Lost = %d, want 8", n)
	}
	a, b := <-sub.C, <-sub.C
	if a.Process.PID != 300 || b.Process.PID != 301 {
		t.Errorf("first events %v %v", a.Process, b.Process)
	}
	fw.host.Remove(300)
	fw.emit(exitEv(300, 300, 0))
	if ev := <-sub.C; ev.Type != EventLost || ev.Lost != 8 {
		t.Errorf("marker %+v", ev)
	}
	if ev := <-sub.C; ev.Type != EventExit || ev.Process.PID != 300 {
		t.Errorf("after marker %+v", ev)
	}
	// Poll stays exact.
	if s := mustPoll(t, w); len(s.Delta.Added) != 11 || len(s.Processes) != 10 {
		t.Errorf("poll: added %d, live %d", len(s.Delta.Added), len(s.Processes))
	}
	sub.Close()
	sub.Close()
	if _, ok := <-sub.C; ok {
		t.Error("channel open after Close")
	}
}

// TestConnectorLostMarkerWithoutLaterEvent: a subscriber that missed the
// last events of a burst is told so once it has room, though no later
// event comes to carry the marker.
func TestConnectorLostMarkerWithoutLaterEvent(t *testing.T) {
	fw := newFakeWorld(t)
	w := fw.attach(Config{})
	sub := w.Subscribe(2)
	for pid := 300; pid < 310; pid++ {
		fw.host.Set(fakeproc.Proc{PID: pid, PPID: 101, Comm: "s", StartTicks: ticks()})
		fw.emit(forkEv(101, pid))
	}
	waitFor(t, "forks", func() bool { return len(w.LivePIDs()) == 11 })
	<-sub.C
	<-sub.C
	select {
	case ev := <-sub.C:
		if ev.Type != EventLost || ev.Lost != 8 || ev.Overrun {
			t.Errorf("marker %+v, want EventLost with Lost 8", ev)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the lost marker never came")
	}
}

func TestHubSharedAndReleased(t *testing.T) {
	fw := newFakeWorld(t)
	w1 := fw.attach(Config{})
	cfg := Config{IncludeRoot: true}
	w2 := fw.attach(cfg)
	if fw.dials != 1 {
		t.Errorf("%d dials for two watchers, want 1", fw.dials)
	}
	t4000 := ticks()
	fw.host.Set(fakeproc.Proc{PID: 160, PPID: 101, Comm: "s", StartTicks: t4000})
	fw.emit(forkEv(101, 160))
	waitFor(t, "both", func() bool {
		return slices.Contains(w1.LivePIDs(), 160) && slices.Contains(w2.LivePIDs(), 160)
	})
	run := w2.run
	w1.Close()
	if fw.kernel.Closed() {
		t.Fatal("socket closed while a watcher uses it")
	}
	var stale []int
	run.doWait(func(wr *writer) {
		for pid, ws := range wr.idx {
			if slices.Contains(ws, w1) {
				stale = append(stale, pid)
			}
		}
	})
	if len(stale) != 0 {
		t.Errorf("index still holds the closed watcher for %v", stale)
	}
	w2.Close()
	if !fw.kernel.Closed() {
		t.Fatal("socket still open after the last watcher closed")
	}
	var ignored bool
	for _, r := range fw.kernel.Requests() {
		ignored = ignored || r.Op == connector.OpIgnore
	}
	if !ignored {
		t.Error("no PROC_CN_MCAST_IGNORE on close")
	}
}

func TestStrategyFallback(t *testing.T) {
	host := fakeHost(t)
	refuse := func(*connector.Config) (*connector.Conn, error) {
		return nil, &connector.OpError{Op: "dial", Kind: connector.ErrNotSupported, Detail: "not in the initial PID namespace"}
	}
	hub := NewHub(&HubConfig{ProcRoot: host.Root(), Dial: refuse})
	w := mustAttach(t, 100, &Config{ProcRoot: host.Root(), Hub: hub})
	if w.Mode() != ModePoll || !strings.Contains(w.ModeReason(), "not in the initial PID namespace") {
		t.Errorf("auto: mode %s (%s)", w.Mode(), w.ModeReason())
	}
	if s := mustPoll(t, w); s.Mode != ModePoll || len(s.Processes) != 1 {
		t.Errorf("poll snapshot %+v", s)
	}
	_, err := Attach(100, &Config{ProcRoot: host.Root(), Hub: hub, Strategy: StrategyConnector})
	if !errors.Is(err, ErrConnectorUnavailable) || !errors.Is(err, connector.ErrNotSupported) {
		t.Errorf("connector strategy: %v", err)
	}
	_, err = Attach(100, &Config{ProcRoot: host.Root(), Strategy: StrategyConnector})
	if !errors.Is(err, ErrInvalidConfig) {
		t.Errorf("connector strategy with a custom proc root and no hub: %v", err)
	}
}

func TestAttachCloseCyclesLeakNothing(t *testing.T) {
	fw := newFakeWorld(t)
	for i := 0; i < 100; i++ {
		fw.kernel = connectortest.NewKernel()
		w := fw.attach(Config{})
		sub := w.Subscribe(1)
		if err := w.Close(); err != nil {
			t.Fatal(err)
		}
		if _, ok := <-sub.C; ok {
			t.Fatal("subscription open after Close")
		}
		if !fw.kernel.Closed() {
			t.Fatalf("cycle %d: socket left open", i)
		}
	}
	if fw.dials != 100 {
		t.Errorf("%d dials, want 100", fw.dials)
	}
	goleak.VerifyNone(t)
}

func TestConnectorDoneAndExecOfVanishedProcess(t *testing.T) {
	fw := newFakeWorld(t)
	w := fw.attach(Config{CaptureCmdline: true})
	select {
	case <-w.RootExited():
		t.Fatal("RootExited closed while the root lives")
	default:
	}
	// 101 execs but is gone before /proc can be read: its new name is
	// unknown, not its old one.
	fw.host.Remove(101)
	fw.emit(execEv(101))
	fw.sync()
	w.mu.Lock()
	p, _ := w.tr.Member(101)
	name, cmd := p.Name, p.Cmdline
	w.mu.Unlock()
	if name != "" || cmd != nil {
		t.Errorf("after an unreadable exec: name %q cmdline %q", name, cmd)
	}
	fw.emit(exitEv(100, 100, 0))
	<-w.RootExited()
	select {
	case <-w.Done():
		t.Fatal("Done closed while a member lives")
	default:
	}
	fw.emit(exitEv(101, 101, 0))
	<-w.Done()
	if st := w.Stats(); st.Reconciles < 1 || st.FullScans < 1 {
		t.Errorf("stats %+v", st)
	}
}

func TestConcurrentClose(t *testing.T) {
	fw := newFakeWorld(t)
	w := fw.attach(Config{})
	var wg sync.WaitGroup
	for i := 0; i < 8; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := w.Close(); err != nil {
				t.Error(err)
			}
		}()
	}
	wg.Wait()
	if !fw.kernel.Closed() {
		t.Error("socket left open")
	}
}

func TestConnectorExecFromNonLeaderThread(t *testing.T) {
	// A thread other than the first calls exec: the kernel ends the first
	// thread (an exit event for the PID), and the caller takes over the PID
	// and start time. The process must not be reported gone.
	fw := newFakeWorld(t)
	w := fw.attach(Config{})
	t110 := ticks()
	fw.host.Set(fakeproc.Proc{PID: 110, PPID: 101, Comm: "gate", StartTicks: t110})
	fw.emit(forkEv(101, 110), threadEv(110, 111), threadEv(110, 112))
	fw.sync()
	// The exit of the first thread; /proc shows the process running, with
	// one thread (the exec is under way).
	fw.emit(exitEv(110, 110, 0))
	fw.sync()
	if !slices.Contains(w.LivePIDs(), 110) {
		t.Fatal("the exec of a non-first thread was taken for the process's exit")
	}
	fw.host.Set(fakeproc.Proc{PID: 110, PPID: 101, Comm: "sh", StartTicks: t110})
	fw.emit(execEv(110))
	fw.sync()
	fw.host.Remove(110)
	fw.emit(exitEv(110, 110, 7<<8))
	waitFor(t, "the real exit", hasPIDs(w, 101))
	s := mustPoll(t, w)
	i := slices.IndexFunc(s.Delta.Exited, func(x Exit) bool { return x.PID == 110 })
	if i < 0 || s.Delta.Exited[i].Code != 7 {
		t.Errorf("exits %+v", s.Delta.Exited)
	}
}

// The events of one batch of kernel events are held while the batch is
// applied and reach subscribers together at its end, in order (a
// subscriber wakes once per batch, not once per event), and before the
// Done channels close.
func TestBatchEventsDeliveredTogether(t *testing.T) {
	fw := newFakeWorld(t)
	w := fw.attach(Config{})
	sub := w.Subscribe(64)
	mustPoll(t, w)
	var mu sync.Mutex
	var heldAt []int // the events held after each apply of the watcher
	w.run.doWait(func(wr *writer) {
		wr.applyHook = func(hw *Watcher) {
			if hw == w {
				mu.Lock()
				heldAt = append(heldAt, len(w.outbox))
				mu.Unlock()
			}
		}
	})
	fw.host.Set(fakeproc.Proc{PID: 110, PPID: 101, Comm: "cc", StartTicks: ticks()})
	fw.emit(forkEv(101, 110), forkEv(110, 111), exitEv(111, 111, 0), exitEv(110, 110, 0),
		exitEv(101, 101, 0), exitEv(100, 100, 3<<8))
	<-w.Done()
	// Done closed: every event is in the channel already.
	var got []string
	for len(sub.C) > 0 {
		ev := <-sub.C
		got = append(got, fmt.Sprintf("%s %d", ev.Type, ev.Process.PID))
	}
	want := []string{"fork 110", "fork 111", "exit 111", "exit 110", "exit 101", "exit 100"}
	if !slices.Equal(got, want) {
		t.Errorf("events in the channel when Done closed: %q, want %q", got, want)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(heldAt) != len(want) || slices.Contains(heldAt, 0) {
		t.Errorf("events held after each apply: %v, want %d applies each holding its event until the batch ends", heldAt, len(want))
	}
}

// The periodic checks of a hub's watchers run in batches: the watchers due
// together (or within a quarter of their interval) are looked at one after
// the other and applied behind one barrier, so that many watchers cost the
// writer one barrier an interval, not one each.
func TestPeriodicChecksShareBarriers(t *testing.T) {
	fw := newFakeWorld(t)
	first := fw.attach(Config{ReconcileInterval: -1}) // the repairer idles
	var barriers atomic.Int64
	// Set while the repairer waits (no watcher has a schedule yet); the
	// attaches below reach it through its resync channel.
	first.run.rep.beforeBarrier = func() { barriers.Add(1) }
	const n = 20
	ws := make([]*Watcher, n)
	for i := range ws {
		ws[i] = fw.attach(Config{ReconcileInterval: 50 * time.Millisecond})
	}
	// Each watcher's count is taken from its own baseline: on a busy host
	// the first watchers run checks while the last ones still attach, so a
	// common threshold on the totals would count fewer than four rounds.
	b0 := barriers.Load()
	base := make([]uint64, n)
	for i, w := range ws {
		base[i] = w.Stats().Reconciles
	}
	waitFor(t, "four rounds of checks", func() bool {
		for i, w := range ws {
			if w.Stats().Reconciles < base[i]+4 {
				return false
			}
		}
		return true
	})
	var r uint64
	for i, w := range ws {
		r += w.Stats().Reconciles - base[i]
	}
	// Read after the counts, so that a barrier whose checks are not yet
	// counted is charged: the bound errs on the strict side.
	b := barriers.Load() - b0
	if b*4 > int64(r) {
		t.Errorf("%d periodic checks of %d watchers took %d barriers, want at most a quarter as many", r, n, b)
	}
	t.Logf("%d checks, %d barriers", r, b)
}
