package watchman

import (
	"errors"
	"os/exec"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/process-watchman/watchman/connector"
	"github.com/process-watchman/watchman/connector/connectortest"
	"github.com/process-watchman/watchman/internal/fakeproc"
	"github.com/process-watchman/watchman/tracker"
	"golang.org/x/sys/unix"
)

// Regression tests for the interleavings a busy host produces: the bugs
// the review of commit 84a08d8 reproduced (issue 9), on the fake kernel
// and /proc, without waits on time: repairs are run synchronously
// (Watcher.reconcile), and the hub applies them behind a marker.

// A thread other than the first execs and the new image exits 7; the hub
// handles the first thread's exit only after the process is gone from
// /proc. The exit carries 7, and the process's child stays tracked.
func TestExecFromThreadWhileHubLags(t *testing.T) {
	fw := newFakeWorld(t)
	w := fw.attach(Config{ReconcileInterval: -1})
	mustPoll(t, w)
	t110 := ticks()
	fw.host.Set(fakeproc.Proc{PID: 110, PPID: 101, Comm: "gate", StartTicks: t110})
	fw.emit(forkEv(101, 110), threadEv(110, 111))
	waitFor(t, "the fork", hasPIDs(w, 101, 110))
	// By the time the hub gets to them, 110 exec'd from thread 111 (the
	// kernel ends the first thread with status 0, then reports the exec),
	// forked 112, exited 7 and was reaped.
	w.mu.Lock() // the hub lags
	fw.host.Set(fakeproc.Proc{PID: 112, PPID: 1, Comm: "sleep", StartTicks: ticks()})
	fw.host.Remove(110)
	fw.emit(exitEv(110, 110, 0), execEv(110), forkEv(110, 112), exitEv(110, 110, 7<<8))
	w.mu.Unlock()
	fw.sync()
	waitFor(t, "the exit", hasPIDs(w, 101, 112))
	s := mustPoll(t, w)
	i := slices.IndexFunc(s.Delta.Exited, func(x Exit) bool { return x.PID == 110 })
	if i < 0 || s.Delta.Exited[i].Code != 7 || !s.Delta.Exited[i].StatusKnown {
		t.Errorf("exit of 110: %+v, want code 7", s.Delta.Exited)
	}
}

// A repair scan finds 105, a child of member 101 whose fork event was
// dropped; 101's exit is queued before the scan is applied, and 105 is
// reparented to init. 105 was forked by a member: it joins.
func TestRepairKeepsLineageWhenParentExits(t *testing.T) {
	fw := newFakeWorld(t)
	w := fw.attach(Config{ReconcileInterval: -1})
	mustPoll(t, w)
	t105 := ticks()
	fw.host.Set(fakeproc.Proc{PID: 105, PPID: 101, Comm: "x", StartTicks: t105})
	// The hub's writer is held up in an event of the tree, so the repair's
	// marker is queued after 101's exit.
	var unlock sync.Once
	w.mu.Lock()
	defer unlock.Do(w.mu.Unlock)
	fw.emit(execEv(101))
	waitFor(t, "the writer to hold the event", func() bool { return fw.kernel.Queued() == 0 })
	done := make(chan error, 1)
	go func() { done <- w.reconcile(true, 0) }()
	waitFor(t, "the scan", func() bool {
		w.run.rep.scanMu.Lock()
		defer w.run.rep.scanMu.Unlock()
		return w.run.rep.last != nil && slices.ContainsFunc(w.run.rep.last.entries, func(e tracker.Entry) bool { return e.PID == 105 })
	})
	fw.host.Remove(101)
	fw.host.Set(fakeproc.Proc{PID: 105, PPID: 1, Comm: "x", StartTicks: t105})
	fw.emit(exitEv(101, 101, 0))
	unlock.Do(w.mu.Unlock)
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if got := w.LivePIDs(); !slices.Equal(got, []int{105}) {
		t.Errorf("live %v, want [105]: forked by member 101, seen by the scan", got)
	}
	s := mustPoll(t, w)
	for _, p := range s.Processes {
		if p.PID == 105 && (p.Depth != 2 || p.Parent != 101) {
			t.Errorf("105 at depth %d under %d, want 2 under 101", p.Depth, p.Parent)
		}
	}
}

// Member 130's exit event is dropped and a stranger (a child of 200) takes
// its PID and forks 131. Neither is adopted.
func TestStrangerNotAdoptedThroughReusedPID(t *testing.T) {
	fw := newFakeWorld(t)
	w := fw.attach(Config{ReconcileInterval: -1})
	mustPoll(t, w)
	fw.host.Set(fakeproc.Proc{PID: 130, PPID: 101, Comm: "a", StartTicks: ticks()})
	fw.emit(forkEv(101, 130))
	waitFor(t, "fork", hasPIDs(w, 101, 130))
	fw.host.Remove(130)
	later := ticks() + 5 // a reused PID starts later
	fw.host.Set(fakeproc.Proc{PID: 130, PPID: 200, Comm: "stranger", StartTicks: later},
		fakeproc.Proc{PID: 131, PPID: 130, Comm: "strangerkid", StartTicks: later})
	// Both with the stranger's own fork, and without it (dropped too).
	fw.kernel.Overrun()
	fw.emit(forkEv(200, 130), forkEv(130, 131))
	fw.sync()
	if got := w.LivePIDs(); slices.Contains(got, 131) || slices.Contains(got, 130) {
		t.Errorf("live %v: the stranger or its child was adopted", got)
	}
	fw.host.Set(fakeproc.Proc{PID: 140, PPID: 101, Comm: "b", StartTicks: ticks()})
	fw.emit(forkEv(101, 140))
	waitFor(t, "fork", hasPIDs(w, 101, 140))
	fw.host.Remove(140)
	fw.host.Set(fakeproc.Proc{PID: 140, PPID: 200, Comm: "stranger", StartTicks: later + 5},
		fakeproc.Proc{PID: 141, PPID: 140, Comm: "strangerkid", StartTicks: later + 5})
	fw.kernel.Overrun()
	fw.emit(forkEv(140, 141))
	fw.sync()
	if got := w.LivePIDs(); slices.Contains(got, 141) {
		t.Errorf("live %v: the child of a stranger under a member's PID was adopted", got)
	}
}

// stallSocket holds a ReadBatch that got datagrams for a while, as a
// preemption of the writer between the kernel's dequeue and the events'
// application would.
type stallSocket struct {
	*connectortest.Kernel
	stall atomic.Int64 // ns; consumed by the next non-empty read
}

func (s *stallSocket) ReadBatch(ds []connector.Datagram) (int, error) {
	n, err := s.Kernel.ReadBatch(ds)
	if n > 0 {
		if d := s.stall.Swap(0); d > 0 {
			time.Sleep(time.Duration(d))
		}
	}
	return n, err
}

// A repair that sees a member gone while its exit event is dequeued but
// not applied yet waits for it: the exit keeps the kernel's status.
func TestRepairWaitsForDequeuedExit(t *testing.T) {
	host := fakeHost(t)
	k := connectortest.NewKernel()
	sock := &stallSocket{Kernel: k}
	hub := NewHub(&HubConfig{ProcRoot: host.Root(), Dial: func(cfg *connector.Config) (*connector.Conn, error) {
		return connector.NewConn(sock, cfg)
	}})
	w := mustAttach(t, 100, &Config{Hub: hub, ProcRoot: host.Root(), Strategy: StrategyConnector, ReconcileInterval: -1})
	mustPoll(t, w)
	sock.stall.Store(int64(300 * time.Millisecond))
	host.Remove(101)
	k.Emit(exitEv(101, 101, 3<<8))
	for range 3 {
		if err := w.reconcile(false, 0); err != nil {
			t.Fatal(err)
		}
		if err := w.reconcile(true, 0); err != nil {
			t.Fatal(err)
		}
	}
	s := mustPoll(t, w)
	if len(s.Delta.Exited) != 1 || !s.Delta.Exited[0].StatusKnown || s.Delta.Exited[0].Code != 3 || s.Repairs != 0 {
		t.Errorf("exit %+v repairs %d: want the kernel's status 3, no repair", s.Delta.Exited, s.Repairs)
	}
}

// A look finds a member reaped before the kernel queued its exit event
// (do_exit wakes the parent, which reaps, before it sends the event): the
// repair waits (exitGrace) before it queues its barrier, so the event
// sent meanwhile is applied first and the exit keeps the kernel's status.
// Both looks: the tree-local walk and the host scan.
func TestRepairWaitsForExitSentAfterReap(t *testing.T) {
	for _, full := range []bool{false, true} {
		fw := newFakeWorld(t)
		w := fw.attach(Config{ReconcileInterval: -1})
		mustPoll(t, w)
		reached, release := make(chan struct{}), make(chan struct{})
		w.run.rep.graceHook = func() { close(reached); <-release }
		fw.host.Remove(101)
		done := make(chan error, 1)
		go func() { done <- w.reconcile(full, 0) }()
		select {
		case <-reached: // the look saw 101 gone; its barrier is not queued
		case err := <-done:
			t.Fatalf("full %v: the repair applied its look without waiting for a late exit event (%v)", full, err)
		}
		fw.emit(exitEv(101, 101, 5<<8))
		close(release)
		if err := <-done; err != nil {
			t.Fatal(err)
		}
		fw.sync()
		s := mustPoll(t, w)
		if len(s.Delta.Exited) != 1 || !s.Delta.Exited[0].StatusKnown || s.Delta.Exited[0].Code != 5 || s.Repairs != 0 {
			t.Errorf("full %v: exit %+v repairs %d: want the kernel's status 5, no repair", full, s.Delta.Exited, s.Repairs)
		}
	}
}

// A look sees 105 alive under member 101 (its fork event was lost); 105
// exits, and its exit event is applied (to no tree: 105 is no member yet)
// before the look is. The look must not leave 105 a member that is gone:
// it joins and exits with the kernel's status. Both looks.
func TestLookAppliedAfterChildExit(t *testing.T) {
	for _, full := range []bool{false, true} {
		fw := newFakeWorld(t)
		w := fw.attach(Config{ReconcileInterval: -1})
		mustPoll(t, w)
		t105 := ticks()
		fw.host.Set(fakeproc.Proc{PID: 105, PPID: 101, Comm: "x", StartTicks: t105})
		w.run.rep.beforeBarrier = func() {
			fw.host.Remove(105)
			fw.emit(exitEv(105, 105, 6<<8))
			fw.sync()
		}
		if err := w.reconcile(full, 0); err != nil {
			t.Fatal(err)
		}
		fw.sync()
		s := mustPoll(t, w)
		if slices.Contains(s.PIDs(), 105) {
			t.Fatalf("full %v: 105 exited before the look was applied, yet it is live: %v", full, s.PIDs())
		}
		i := slices.IndexFunc(s.Delta.Exited, func(x Exit) bool { return x.PID == 105 })
		if !slices.ContainsFunc(s.Delta.Added, func(id Identity) bool { return id.PID == 105 }) || i < 0 ||
			!s.Delta.Exited[i].StatusKnown || s.Delta.Exited[i].Code != 6 {
			t.Errorf("full %v: added %v, exited %+v; want 105 added and exited with the kernel's code 6", full, s.Delta.Added, s.Delta.Exited)
		}
	}
}

// With no descriptors left (EMFILE), the tree-local check cannot read
// /proc: the members and the root stay, and the check says how many it
// could not read.
func TestUnreadableIsNotGone(t *testing.T) {
	fw := newFakeWorld(t)
	w := fw.attach(Config{ReconcileInterval: -1})
	mustPoll(t, w)
	var old unix.Rlimit
	if err := unix.Getrlimit(unix.RLIMIT_NOFILE, &old); err != nil {
		t.Fatal(err)
	}
	lim := old
	lim.Cur = 64
	if err := unix.Setrlimit(unix.RLIMIT_NOFILE, &lim); err != nil {
		t.Fatal(err)
	}
	var fds []int
	for {
		fd, err := unix.Open("/dev/null", unix.O_RDONLY|unix.O_CLOEXEC, 0)
		if err != nil {
			break
		}
		fds = append(fds, fd)
	}
	checkErr := w.reconcile(false, 0)
	st := w.Stats()
	for _, fd := range fds {
		unix.Close(fd)
	}
	if err := unix.Setrlimit(unix.RLIMIT_NOFILE, &old); err != nil {
		t.Fatal(err)
	}
	if checkErr != nil {
		t.Fatal(checkErr)
	}
	select {
	case <-w.RootExited():
		t.Fatal("root declared exited on EMFILE")
	default:
	}
	if got := w.LivePIDs(); !slices.Equal(got, []int{101}) {
		t.Errorf("live %v after EMFILE, want [101]", got)
	}
	if st.Unreadable != 2 {
		t.Errorf("Unreadable = %d, want 2 (the member and the root)", st.Unreadable)
	}
	if err := w.reconcile(false, 0); err != nil {
		t.Fatal(err)
	}
	if s := mustPoll(t, w); s.Unreadable != 0 || s.Repairs != 0 {
		t.Errorf("after the descriptors came back: unreadable %d, repairs %d", s.Unreadable, s.Repairs)
	}
}

// A full scan that another watcher of the hub made before an exec does not
// put back the name the member had before it.
func TestSharedScanKeepsNewerName(t *testing.T) {
	fw := newFakeWorld(t)
	w1 := fw.attach(Config{ReconcileInterval: -1})
	w2 := fw.attach(Config{ReconcileInterval: -1})
	if err := w1.reconcile(true, 0); err != nil { // the hub scans: 101 is "make"
		t.Fatal(err)
	}
	fw.host.Set(fakeproc.Proc{PID: 101, PPID: 100, Comm: "cc", StartTicks: 1100})
	fw.emit(execEv(101))
	fw.sync()
	if err := w2.reconcile(true, time.Hour); err != nil { // takes the older scan
		t.Fatal(err)
	}
	for _, p := range mustPoll(t, w2).Processes {
		if p.PID == 101 && p.Name != "cc" {
			t.Errorf("101 is %q after its exec to cc", p.Name)
		}
	}
}

// A scan finds a member gone before its exit event: the synthetic exit is
// upgraded, in the Delta and by an Upgrade event, when the event comes.
func TestLateExitUpgradesSyntheticExit(t *testing.T) {
	fw := newFakeWorld(t)
	w := fw.attach(Config{ReconcileInterval: -1, KeepTombstones: true})
	sub := w.Subscribe(0)
	mustPoll(t, w)
	fw.host.Remove(101)
	if err := w.reconcile(true, 0); err != nil {
		t.Fatal(err)
	}
	fw.emit(exitEv(101, 101, 4<<8))
	fw.sync()
	s := mustPoll(t, w)
	if len(s.Delta.Exited) != 1 || !s.Delta.Exited[0].StatusKnown || s.Delta.Exited[0].Code != 4 ||
		len(s.Tombstones) != 1 || s.Tombstones[0].Exit.Code != 4 {
		t.Errorf("exits %+v tombstones %+v, want the kernel's code 4", s.Delta.Exited, s.Tombstones)
	}
	a, b := next(t, sub), next(t, sub)
	if a.Type != EventExit || !a.Synthetic || b.Type != EventExit || !b.Upgrade || b.Exit.Code != 4 || b.Process != a.Process {
		t.Errorf("events %+v then %+v, want a synthetic exit and its upgrade", a, b)
	}
}

// Misuse gets a typed error or works: a zero Hub, a thread's ID, an
// interval that would take a core.
func TestMisuseIsTyped(t *testing.T) {
	requireConnector(t)
	var hub Hub
	w, err := Attach(1, &Config{Hub: &hub, ReconcileInterval: -1})
	if err != nil {
		t.Fatalf("zero Hub: %v", err)
	}
	if w.Mode() != ModeConnector {
		t.Errorf("zero Hub: mode %s (%s)", w.Mode(), w.ModeReason())
	}
	w.Close()

	tid := unix.Gettid()
	if tid != unix.Getpid() {
		_, err := Attach(tid, &Config{Strategy: StrategyPoll})
		var pe *PIDError
		if !errors.As(err, &pe) || !errors.Is(err, ErrInvalidPID) {
			t.Errorf("thread ID: %v", err)
		}
	}

	_, err = Attach(1, &Config{ReconcileInterval: time.Nanosecond})
	var ce *ConfigError
	if !errors.As(err, &ce) || ce.Field != "ReconcileInterval" {
		t.Errorf("1 ns interval: %v", err)
	}
}

// A subscription that is never read learns, when the Watcher closes, how
// many events it missed.
func TestCloseTellsLost(t *testing.T) {
	fw := newFakeWorld(t)
	w := fw.attach(Config{ReconcileInterval: -1})
	sub := w.Subscribe(4)
	for pid := 300; pid < 310; pid++ {
		fw.host.Set(fakeproc.Proc{PID: pid, PPID: 101, Comm: "s", StartTicks: ticks()})
		fw.emit(forkEv(101, pid))
	}
	waitFor(t, "forks", func() bool { return len(w.LivePIDs()) == 11 })
	w.Close()
	var got, told uint64
	for ev := range sub.C {
		if ev.Type == EventLost {
			told += ev.Lost
		} else {
			got++
		}
	}
	if got+told != 10 || told == 0 {
		t.Errorf("received %d events and was told of %d lost, want 10 in all", got, told)
	}
}

// next returns sub's next event; a broken run fails after 10 s.
func next(t *testing.T, sub *Subscription) Event {
	t.Helper()
	select {
	case ev := <-sub.C:
		return ev
	case <-time.After(10 * time.Second):
		t.Fatal("no event")
	}
	return Event{}
}

// In polling mode the root's exit is seen at once, through its pidfd,
// without a Poll: Done closes on its own.
func TestPollRootExitWithoutPoll(t *testing.T) {
	cmd := exec.Command("sleep", "0.3")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go cmd.Wait()
	w := mustAttach(t, cmd.Process.Pid, &Config{Strategy: StrategyPoll})
	if w.rootFD == nil {
		t.Fatalf("no pidfd for the root (%s)", w.ModeReason())
	}
	select {
	case <-w.Done():
	case <-time.After(10 * time.Second):
		t.Fatal("Done still open 10 s after the root (sleep 0.3) exited")
	}
	if s := mustPoll(t, w); s.RootAlive || len(s.Delta.Exited) != 1 {
		t.Errorf("after the exit: root alive %v, exits %+v", s.RootAlive, s.Delta.Exited)
	}
}

// Signal reaches a member by identity, and says why it cannot: gone, or
// never a member.
func TestSignalByIdentity(t *testing.T) {
	cmd := exec.Command("sh", "-c", "sleep 30 & wait")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	w := mustAttach(t, cmd.Process.Pid, &Config{Strategy: StrategyPoll, KeepTombstones: true})
	var kid Identity
	waitFor(t, "the sleep", func() bool {
		s := mustPoll(t, w)
		if len(s.Processes) == 1 {
			kid = s.Processes[0].Identity
		}
		return kid.PID != 0
	})
	if err := w.Signal(kid, unix.SIGTERM); err != nil {
		t.Fatalf("Signal(member): %v", err)
	}
	waitFor(t, "the sleep to go", func() bool { return len(mustPoll(t, w).Processes) == 0 })
	if err := w.Signal(kid, unix.SIGTERM); !errors.Is(err, ErrNoSuchProcess) {
		t.Errorf("Signal(exited member) = %v, want ErrNoSuchProcess", err)
	}
	if err := w.Signal(Identity{PID: 1, StartTicks: 1}, unix.SIGTERM); !errors.Is(err, ErrNotMember) {
		t.Errorf("Signal(init) = %v, want ErrNotMember", err)
	}
}

// The periodic check of a Watcher that joined an open hub runs without
// any other trigger: a member gone without an exit event is removed.
func TestPeriodicCheckOfNewWatcher(t *testing.T) {
	fw := newFakeWorld(t)
	fw.attach(Config{ReconcileInterval: -1}) // opens the hub
	w := fw.attach(Config{ReconcileInterval: 20 * time.Millisecond})
	mustPoll(t, w)
	fw.host.Remove(101)
	waitFor(t, "the periodic check", hasPIDs(w))
	if s := mustPoll(t, w); s.Repairs != 1 || len(s.Delta.Exited) != 1 || s.Delta.Exited[0].StatusKnown {
		t.Errorf("repairs %d exits %+v, want one repair and an exit of unknown status", s.Repairs, s.Delta.Exited)
	}
}
