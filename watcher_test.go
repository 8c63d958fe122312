package watchman

import (
	"errors"
	"os"
	"slices"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
	"github.com/process-watchman/watchman/internal/fakeproc"
)

func fakeHost(t *testing.T) *fakeproc.Tree {
	tr := fakeproc.New(t)
	tr.Set(
		fakeproc.Proc{PID: 1, PPID: 0, Comm: "init", StartTicks: 1},
		fakeproc.Proc{PID: 100, PPID: 1, Comm: "bash", StartTicks: 1000, Cmdline: []string{"bash", "-c", "make all"}},
		fakeproc.Proc{PID: 101, PPID: 100, Comm: "make", StartTicks: 1100, Cmdline: []string{"make", "all"}},
		fakeproc.Proc{PID: 200, PPID: 1, Comm: "sshd", StartTicks: 500},
	)
	return tr
}

func pollCfg(root string) *Config {
	return &Config{Strategy: StrategyPoll, ProcRoot: root, CaptureCmdline: true}
}

func mustAttach(t *testing.T, pid int, cfg *Config) *Watcher {
	t.Helper()
	w, err := Attach(pid, cfg)
	if err != nil {
		t.Fatalf("Attach(%d): %v", pid, err)
	}
	t.Cleanup(func() { w.Close() })
	return w
}

func mustPoll(t *testing.T, w *Watcher) Snapshot {
	t.Helper()
	s, err := w.Poll()
	if err != nil {
		t.Fatalf("Poll: %v", err)
	}
	return s
}

func ids(pairs ...int) []Identity {
	var out []Identity
	for i := 0; i+1 < len(pairs); i += 2 {
		out = append(out, Identity{PID: pairs[i], StartTicks: uint64(pairs[i+1])})
	}
	return out
}

func TestPollLifecycle(t *testing.T) {
	host := fakeHost(t)
	w := mustAttach(t, 100, pollCfg(host.Root()))
	if w.Mode() != ModePoll || w.ModeReason() == "" {
		t.Errorf("Mode = %q (%q)", w.Mode(), w.ModeReason())
	}
	if got := w.Root(); got != (Identity{100, 1000}) {
		t.Errorf("Root = %v", got)
	}

	s := mustPoll(t, w)
	want := []ProcessInfo{{
		Identity: Identity{101, 1100}, PPID: 100, Parent: 100, Name: "make", Cmdline: []string{"make", "all"},
		State: "S", Depth: 1, Started: time.Unix(fakeproc.BootTime+11, 0),
	}}
	if diff := cmp.Diff(want, s.Processes); diff != "" {
		t.Errorf("first Poll processes (-want +got):\n%s", diff)
	}
	if !s.RootAlive || s.Mode != ModePoll || s.Truncated {
		t.Errorf("snapshot flags: %+v", s)
	}
	if diff := cmp.Diff(Delta{Added: ids(101, 1100), Removed: []Identity{}, Exited: []Exit{}}, s.Delta); diff != "" {
		t.Errorf("first Delta (-want +got):\n%s", diff)
	}

	// make forks cc, which forks as; then make exits: as and cc stay
	// (reparented to init), by lineage.
	host.Set(
		fakeproc.Proc{PID: 102, PPID: 101, Comm: "cc", StartTicks: 1200},
		fakeproc.Proc{PID: 103, PPID: 102, Comm: "as", StartTicks: 1300},
	)
	s = mustPoll(t, w)
	if got := s.Delta.AddedPIDs(); !slices.Equal(got, []int{102, 103}) {
		t.Errorf("Added = %v", got)
	}
	host.Remove(101)
	host.Set(fakeproc.Proc{PID: 102, PPID: 1, Comm: "cc", StartTicks: 1200})
	s = mustPoll(t, w)
	if got := s.PIDs(); !slices.Equal(got, []int{102, 103}) {
		t.Errorf("after make exits: %v", got)
	}
	if got := s.Delta.RemovedPIDs(); !slices.Equal(got, []int{101}) {
		t.Errorf("Removed = %v", got)
	}
	if len(s.Delta.Exited) != 1 || s.Delta.Exited[0].StatusKnown || s.Delta.Exited[0].Code != -1 {
		t.Errorf("polling-mode exit = %+v", s.Delta.Exited)
	}
	if got := w.LivePIDs(); !slices.Equal(got, []int{102, 103}) {
		t.Errorf("LivePIDs = %v", got)
	}
	if s.Processes[0].PPID != 1 || s.Processes[0].Depth != 2 {
		t.Errorf("reparented member: %+v", s.Processes[0])
	}

	// A quiet poll has an empty delta.
	if s = mustPoll(t, w); !s.Delta.Empty() {
		t.Errorf("quiet Poll delta = %+v", s.Delta)
	}

	// The root exits and its PID is reused by an unrelated process with a
	// child: RootAlive is false and nothing is adopted.
	host.Remove(100)
	host.Set(
		fakeproc.Proc{PID: 100, PPID: 200, Comm: "impostor", StartTicks: 9000},
		fakeproc.Proc{PID: 150, PPID: 100, Comm: "impkid", StartTicks: 9100},
	)
	s = mustPoll(t, w)
	if s.RootAlive || !slices.Equal(s.PIDs(), []int{102, 103}) {
		t.Errorf("after root reuse: alive=%v pids=%v", s.RootAlive, s.PIDs())
	}
	if len(s.Delta.Exited) != 1 || s.Delta.Exited[0].Identity != (Identity{100, 1000}) {
		t.Errorf("root exit = %+v", s.Delta.Exited)
	}

	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	if err := w.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
	if _, err := w.Poll(); !errors.Is(err, ErrClosed) {
		t.Errorf("Poll after Close = %v", err)
	}
	if w.LivePIDs() != nil {
		t.Error("LivePIDs after Close is not nil")
	}
}

func TestDeltaChainsToLiveSet(t *testing.T) {
	host := fakeHost(t)
	w := mustAttach(t, 100, &Config{Strategy: StrategyPoll, ProcRoot: host.Root(), IncludeRoot: true})
	live := map[Identity]bool{}
	steps := []func(){
		func() {},
		func() { host.Set(fakeproc.Proc{PID: 110, PPID: 100, Comm: "x", StartTicks: 2000}) },
		func() { host.Remove(101) },
		func() { host.Set(fakeproc.Proc{PID: 111, PPID: 110, Comm: "y", StartTicks: 2100}) },
		func() { host.Remove(110) },
		func() { host.Set(fakeproc.Proc{PID: 101, PPID: 111, Comm: "z", StartTicks: 2200}) },
		func() { host.Remove(100) },
	}
	for i, step := range steps {
		step()
		s := mustPoll(t, w)
		for _, id := range s.Delta.Added {
			live[id] = true
		}
		for _, id := range s.Delta.Removed {
			delete(live, id)
		}
		var got []Identity
		for _, p := range s.Processes {
			got = append(got, p.Identity)
		}
		var fromDelta []Identity
		for id := range live {
			fromDelta = append(fromDelta, id)
		}
		if diff := cmp.Diff(got, fromDelta, cmpopts.SortSlices(func(a, b Identity) bool { return a.PID < b.PID }), cmpopts.EquateEmpty()); diff != "" {
			t.Errorf("step %d: Processes vs previous+Added-Removed (-procs +delta):\n%s", i, diff)
		}
	}
	if got := w.LivePIDs(); !slices.Equal(got, []int{101, 111}) {
		t.Errorf("final LivePIDs = %v", got)
	}
}

func TestLimitsAndTruncation(t *testing.T) {
	host := fakeHost(t)
	host.Set(
		fakeproc.Proc{PID: 102, PPID: 101, Comm: "cc", StartTicks: 1200},
		fakeproc.Proc{PID: 103, PPID: 102, Comm: "as", StartTicks: 1300},
		fakeproc.Proc{PID: 104, PPID: 100, Comm: "sleep", StartTicks: 1400},
	)
	w := mustAttach(t, 100, &Config{Strategy: StrategyPoll, ProcRoot: host.Root(), MaxDepth: 2})
	s := mustPoll(t, w)
	if !slices.Equal(s.PIDs(), []int{101, 102, 104}) || !s.Truncated {
		t.Errorf("MaxDepth 2: pids %v truncated %v", s.PIDs(), s.Truncated)
	}
	w2 := mustAttach(t, 100, &Config{Strategy: StrategyPoll, ProcRoot: host.Root(), MaxDescendants: 2})
	if s := mustPoll(t, w2); len(s.Processes) != 2 || !s.Truncated {
		t.Errorf("MaxDescendants 2: pids %v truncated %v", s.PIDs(), s.Truncated)
	}
	w3 := mustAttach(t, 100, &Config{Strategy: StrategyPoll, ProcRoot: host.Root()})
	if s := mustPoll(t, w3); len(s.Processes) != 4 || s.Truncated {
		t.Errorf("no limits: pids %v truncated %v", s.PIDs(), s.Truncated)
	}
}

func TestCmdlineCapture(t *testing.T) {
	host := fakeHost(t)
	cfg := pollCfg(host.Root())
	cfg.CmdlineMaxChars = 6
	cfg.IncludeRoot = true
	w := mustAttach(t, 100, cfg)
	s := mustPoll(t, w)
	got := map[int][]string{}
	trunc := map[int]bool{}
	for _, p := range s.Processes {
		got[p.PID] = p.Cmdline
		trunc[p.PID] = p.CmdlineTruncated
	}
	want := map[int][]string{100: {"bash", "-"}, 101: {"make", "a"}}
	if diff := cmp.Diff(want, got); diff != "" || !trunc[100] || !trunc[101] {
		t.Errorf("truncated cmdlines (-want +got):\n%s%v", diff, trunc)
	}
	// Without capture, nothing is read.
	w2 := mustAttach(t, 100, &Config{Strategy: StrategyPoll, ProcRoot: host.Root()})
	if s := mustPoll(t, w2); s.Processes[0].Cmdline != nil || s.Processes[0].Name != "make" {
		t.Errorf("no capture: %+v", s.Processes[0])
	}
}

func TestExecRenamesMember(t *testing.T) {
	host := fakeHost(t)
	w := mustAttach(t, 100, pollCfg(host.Root()))
	mustPoll(t, w)
	host.Set(fakeproc.Proc{PID: 101, PPID: 100, Comm: "ld", StartTicks: 1100, Cmdline: []string{"ld", "-o", "a.out"}})
	s := mustPoll(t, w)
	if p := s.Processes[0]; p.Name != "ld" || !slices.Equal(p.Cmdline, []string{"ld", "-o", "a.out"}) || !s.Delta.Empty() {
		t.Errorf("after exec: %+v, delta %+v", p, s.Delta)
	}
}

func TestTombstones(t *testing.T) {
	host := fakeHost(t)
	w := mustAttach(t, 100, &Config{Strategy: StrategyPoll, ProcRoot: host.Root(), KeepTombstones: true, TombstoneLimit: 2})
	mustPoll(t, w)
	for pid := 110; pid < 114; pid++ {
		host.Set(fakeproc.Proc{PID: pid, PPID: 100, Comm: "t", StartTicks: uint64(pid * 10)})
		mustPoll(t, w)
		host.Remove(pid)
		s := mustPoll(t, w)
		if len(s.Tombstones) != 1 || s.Tombstones[0].PID != pid || s.Tombstones[0].Name != "t" {
			t.Fatalf("snapshot tombstones = %+v", s.Tombstones)
		}
	}
	var got []int
	for _, ts := range w.Tombstones() {
		got = append(got, ts.PID)
	}
	if !slices.Equal(got, []int{112, 113}) {
		t.Errorf("Tombstones = %v, want the last two", got)
	}
	w2 := mustAttach(t, 100, &Config{Strategy: StrategyPoll, ProcRoot: host.Root()})
	mustPoll(t, w2)
	host.Remove(101)
	if s := mustPoll(t, w2); len(s.Tombstones) != 0 || len(w2.Tombstones()) != 0 || len(s.Delta.Removed) != 1 {
		t.Errorf("tombstones kept without KeepTombstones: %+v", s)
	}
}

func TestAttachErrors(t *testing.T) {
	host := fakeHost(t)
	host.Set(fakeproc.Proc{PID: 300, PPID: 1, Comm: "zomb", State: 'Z', StartTicks: 3000})
	root := host.Root()
	tests := []struct {
		name   string
		pid    int
		cfg    *Config
		target error
		field  string
	}{
		{"zero pid", 0, pollCfg(root), ErrInvalidPID, ""},
		{"negative pid", -1, pollCfg(root), ErrInvalidPID, ""},
		{"above pid_max", 32768, pollCfg(root), ErrInvalidPID, ""},
		{"no such process", 4242, pollCfg(root), ErrNoSuchProcess, ""},
		{"zombie root", 300, pollCfg(root), ErrNoSuchProcess, ""},
		{"negative MaxDepth", 100, &Config{ProcRoot: root, MaxDepth: -1}, ErrInvalidConfig, "MaxDepth"},
		{"negative MaxDescendants", 100, &Config{ProcRoot: root, MaxDescendants: -5}, ErrInvalidConfig, "MaxDescendants"},
		{"negative CmdlineMaxChars", 100, &Config{ProcRoot: root, CmdlineMaxChars: -1}, ErrInvalidConfig, "CmdlineMaxChars"},
		{"negative TombstoneLimit", 100, &Config{ProcRoot: root, TombstoneLimit: -1}, ErrInvalidConfig, "TombstoneLimit"},
		{"unknown strategy", 100, &Config{ProcRoot: root, Strategy: "psutil"}, ErrInvalidConfig, "Strategy"},
		{"empty dir as proc", 100, &Config{ProcRoot: t.TempDir()}, ErrInvalidConfig, "ProcRoot"},
		{"missing proc", 100, &Config{ProcRoot: "/nonexistent/proc"}, ErrInvalidConfig, "ProcRoot"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			w, err := Attach(tt.pid, tt.cfg)
			if err == nil {
				w.Close()
				t.Fatal("Attach succeeded")
			}
			if !errors.Is(err, tt.target) {
				t.Fatalf("Attach = %v, want %v", err, tt.target)
			}
			var ce *ConfigError
			if tt.field != "" && (!errors.As(err, &ce) || ce.Field != tt.field) {
				t.Errorf("error %v does not name field %s", err, tt.field)
			}
		})
	}
}

func TestBackgroundReconcileKeepsOrphans(t *testing.T) {
	// With a background interval, a grandchild seen by a background scan
	// stays a member after its parent exits, even if no Poll ran between.
	host := fakeHost(t)
	w := mustAttach(t, 100, &Config{Strategy: StrategyPoll, ProcRoot: host.Root(), ReconcileInterval: 10 * time.Millisecond})
	host.Set(fakeproc.Proc{PID: 120, PPID: 101, Comm: "gc", StartTicks: 1500})
	deadline := time.Now().Add(10 * time.Second)
	for !slices.Contains(w.LivePIDs(), 120) {
		if time.Now().After(deadline) {
			t.Fatal("background scan never found the grandchild")
		}
		time.Sleep(time.Millisecond)
	}
	host.Remove(101)
	host.Set(fakeproc.Proc{PID: 120, PPID: 1, Comm: "gc", StartTicks: 1500})
	s := mustPoll(t, w)
	if !slices.Equal(s.PIDs(), []int{120}) || !slices.Equal(s.Delta.AddedPIDs(), []int{101, 120}) {
		t.Errorf("pids %v added %v", s.PIDs(), s.Delta.AddedPIDs())
	}
}

func TestRealProcessTree(t *testing.T) {
	// This process as root: the test binary's own children are members.
	w := mustAttach(t, os.Getppid(), &Config{Strategy: StrategyPoll, CaptureCmdline: true, IncludeRoot: true})
	s := mustPoll(t, w)
	self := os.Getpid()
	var me *ProcessInfo
	for i := range s.Processes {
		if s.Processes[i].PID == self {
			me = &s.Processes[i]
		}
	}
	if me == nil {
		t.Fatalf("this process %d is not among its parent's descendants %v", self, s.PIDs())
	}
	if me.Depth != 1 || len(me.Cmdline) == 0 || me.State == "" {
		t.Errorf("self = %+v", me)
	}
	if ct := me.CreateTime(); ct.IsZero() || ct.After(time.Now()) || time.Since(ct) > 24*time.Hour {
		t.Errorf("CreateTime = %v", ct)
	}
	if d := me.CreateTime().Sub(me.Started); d < -time.Second || d > time.Second {
		t.Errorf("CreateTime %v vs Started %v", me.CreateTime(), me.Started)
	}
}
