package tracker

import (
	"slices"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
)

var t0 = time.Unix(1700000000, 0)

func id(pid int, ticks uint64) Identity { return Identity{PID: pid, StartTicks: ticks} }

// live and zombie build scan entries.
func live(pid, ppid int, ticks uint64) Entry {
	return Entry{PID: pid, PPID: ppid, StartTicks: ticks, Live: true, State: 'S'}
}
func zombie(pid, ppid int, ticks uint64) Entry {
	return Entry{PID: pid, PPID: ppid, StartTicks: ticks, State: 'Z'}
}

// step is one input to the tracker and what must hold after it.
type step struct {
	scan   []Entry
	repair bool
	fork   *[3]int // parent, child, child ticks
	exit   *[2]int // pid, status
	// expectations
	pids    []int
	added   []Identity // of Take, when take is set
	removed []Identity
	exits   []Exit
	trunc   bool
	repairs int
	take    bool
}

func fork(parent, child, ticks int) *[3]int { return &[3]int{parent, child, ticks} }
func exit(pid, status int) *[2]int          { return &[2]int{pid, status} }

func run(t *testing.T, cfg Config, root Identity, steps []step) *Tracker {
	t.Helper()
	tr := New(root, cfg, t0)
	for i, s := range steps {
		at := t0.Add(time.Duration(i+1) * time.Second)
		switch {
		case s.scan != nil:
			tr.ApplyScan(s.scan, at, ScanOptions{Repair: s.repair})
		case s.fork != nil:
			tr.Fork(s.fork[0], id(s.fork[1], uint64(s.fork[2])), false, at, 0, nil)
		case s.exit != nil:
			tr.ExitTask(s.exit[0], s.exit[0], 0, uint32(s.exit[1]), at, 0)
		}
		if got := tr.PIDs(nil); !slices.Equal(got, s.pids) {
			t.Fatalf("step %d: PIDs = %v, want %v", i, got, s.pids)
		}
		if !s.take {
			continue
		}
		c := tr.Take()
		if diff := cmp.Diff(s.added, c.Added, cmpopts.EquateEmpty()); diff != "" {
			t.Errorf("step %d: Added (-want +got):\n%s", i, diff)
		}
		if diff := cmp.Diff(s.removed, c.Removed, cmpopts.EquateEmpty()); diff != "" {
			t.Errorf("step %d: Removed (-want +got):\n%s", i, diff)
		}
		if s.exits != nil {
			if diff := cmp.Diff(s.exits, c.Exits, cmpopts.IgnoreFields(Exit{}, "Time")); diff != "" {
				t.Errorf("step %d: Exits (-want +got):\n%s", i, diff)
			}
		}
		if c.Truncated != s.trunc || c.Repairs != s.repairs {
			t.Errorf("step %d: Truncated=%v Repairs=%d, want %v %d", i, c.Truncated, c.Repairs, s.trunc, s.repairs)
		}
	}
	return tr
}

func TestScanLineage(t *testing.T) {
	root := id(100, 1000)
	base := []Entry{live(1, 0, 1), live(100, 1, 1000), live(200, 1, 900)}
	tr := run(t, Config{}, root, []step{
		{scan: base, pids: []int{}, take: true},
		// A child and grandchild appear, the grandchild listed first (PID
		// wrapped), plus an unrelated process and a zombie child.
		{scan: append(slices.Clone(base), live(90, 101, 1200), live(101, 100, 1100), live(201, 200, 950), zombie(102, 100, 1150)),
			pids: []int{90, 101}, added: []Identity{id(101, 1100), id(90, 1200)}, take: true},
	})
	// The added processes are returned as indexes into the scan.
	scan := append(slices.Clone(base), live(90, 101, 1200), live(101, 100, 1100), live(77, 90, 1250))
	if got := tr.ApplyScan(scan, t0, ScanOptions{}).Added; !slices.Equal(got, []int{5}) {
		t.Errorf("ApplyScan added indexes %v, want [5]", got)
	}
	if i, ok := tr.IndexOf(101); !ok || i != 4 {
		t.Errorf("IndexOf(101) = %d, %v", i, ok)
	}
	run(t, Config{}, root, []step{
		{scan: append(slices.Clone(base), live(90, 101, 1200), live(101, 100, 1100), live(201, 200, 950), zombie(102, 100, 1150)),
			pids: []int{90, 101}, added: []Identity{id(101, 1100), id(90, 1200)}, take: true},
		// The child exits; the grandchild is reparented to init and stays.
		{scan: append(slices.Clone(base), live(90, 1, 1200)), pids: []int{90},
			removed: []Identity{id(101, 1100)}, exits: []Exit{{ID: id(101, 1100)}}, take: true},
		// The orphan forks: its child is a member too.
		{scan: append(slices.Clone(base), live(90, 1, 1200), live(91, 90, 1300)), pids: []int{90, 91},
			added: []Identity{id(91, 1300)}, take: true},
		// PID 91 is reused by an unrelated process: the old one is removed,
		// the new one is not adopted.
		{scan: append(slices.Clone(base), live(90, 1, 1200), live(91, 200, 1400)), pids: []int{90},
			removed: []Identity{id(91, 1300)}, take: true},
	})
}

func TestRootReuse(t *testing.T) {
	root := id(100, 1000)
	tr := run(t, Config{IncludeRoot: true}, root, []step{
		{scan: []Entry{live(100, 1, 1000), live(101, 100, 1100)}, pids: []int{100, 101},
			added: []Identity{root, id(101, 1100)}, take: true},
		// Root exits and PID 100 is reused with a child of its own: the
		// impostor and its child are never adopted; the old child stays.
		{scan: []Entry{live(100, 1, 5000), live(101, 1, 1100), live(300, 100, 5100)}, pids: []int{101},
			removed: []Identity{root}, exits: []Exit{{ID: root}}, take: true},
	})
	if tr.RootAlive() {
		t.Error("RootAlive after PID reuse")
	}
}

func TestZombieRootIsDead(t *testing.T) {
	tr := run(t, Config{}, id(100, 1000), []step{
		{scan: []Entry{zombie(100, 1, 1000), live(101, 1, 1100)}, pids: []int{}, take: true},
	})
	if tr.RootAlive() {
		t.Error("a zombie root counts as alive")
	}
}

func TestLimits(t *testing.T) {
	chain := []Entry{live(100, 1, 1), live(101, 100, 2), live(102, 101, 3), live(103, 102, 4), live(110, 100, 5)}
	run(t, Config{MaxDepth: 2}, id(100, 1), []step{
		{scan: chain, pids: []int{101, 102, 110}, added: []Identity{id(101, 2), id(102, 3), id(110, 5)}, trunc: true, take: true},
		// A fork below the limit is refused too.
		{fork: fork(102, 120, 9), pids: []int{101, 102, 110}, trunc: true, take: true},
	})
	run(t, Config{MaxMembers: 2}, id(100, 1), []step{
		{scan: chain, pids: []int{101, 102}, added: []Identity{id(101, 2), id(102, 3)}, trunc: true, take: true},
		{exit: exit(102, 0), pids: []int{101}, removed: []Identity{id(102, 3)}, take: true},
		// Room again: the next scan fills it (103 was 102's child, now
		// reparented, so it is out; 110 joins).
		{scan: []Entry{live(100, 1, 1), live(101, 100, 2), live(103, 1, 4), live(110, 100, 5)},
			pids: []int{101, 110}, added: []Identity{id(110, 5)}, take: true},
	})
}

func TestEvents(t *testing.T) {
	root := id(100, 1000)
	run(t, Config{}, root, []step{
		{fork: fork(100, 101, 1100), pids: []int{101}},
		{fork: fork(101, 102, 1101), pids: []int{101, 102}},
		{fork: fork(555, 556, 1102), pids: []int{101, 102}}, // outside the tree
		{exit: exit(101, 0), pids: []int{102}},
		// Born and gone before the Take: in both Added and Removed.
		{fork: fork(102, 103, 1103), pids: []int{102, 103}},
		{exit: exit(103, 256), pids: []int{102},
			added:   []Identity{id(101, 1100), id(102, 1101), id(103, 1103)},
			removed: []Identity{id(101, 1100), id(103, 1103)},
			exits:   []Exit{{ID: id(101, 1100), Known: true}, {ID: id(103, 1103), Status: 256, Known: true}}, take: true},
		{exit: exit(556, 0), pids: []int{102}, take: true},
		// The orphan 102 outlives root.
		{exit: exit(100, 9), pids: []int{102}, exits: []Exit{{ID: root, Status: 9, Known: true}}, take: true},
		{fork: fork(102, 104, 1104), pids: []int{102, 104}, added: []Identity{id(104, 1104)}, take: true},
	})
}

func TestForkOfReusedPIDRemovesStaleMember(t *testing.T) {
	run(t, Config{}, id(100, 1), []step{
		{fork: fork(100, 101, 10), pids: []int{101}},
		// 101's exit was dropped; a new 101 is forked by the root.
		{fork: fork(100, 101, 20), pids: []int{101}, added: []Identity{id(101, 10), id(101, 20)},
			removed: []Identity{id(101, 10)}, repairs: 1, take: true},
		// The same fork again (a scan saw it first) changes nothing.
		{fork: fork(100, 101, 20), pids: []int{101}, take: true},
	})
}

func TestRepairCounts(t *testing.T) {
	run(t, Config{}, id(100, 1), []step{
		{fork: fork(100, 101, 10), pids: []int{101}, added: []Identity{id(101, 10)}, take: true},
		// The scan shows 101 gone (exit dropped) and 102 present (fork
		// dropped): two repairs.
		{scan: []Entry{live(100, 1, 1), live(102, 100, 11)}, repair: true, pids: []int{102},
			added: []Identity{id(102, 11)}, removed: []Identity{id(101, 10)}, repairs: 2, take: true},
		// A consistent scan repairs nothing.
		{scan: []Entry{live(100, 1, 1), live(102, 100, 11)}, repair: true, pids: []int{102}, take: true},
	})
}

func TestApproxIdentitySurvivesScan(t *testing.T) {
	tr := New(id(100, 1), Config{}, t0)
	tr.Fork(100, id(101, 50), true, t0, 0, nil)
	tr.Take()
	// /proc says 51: within tolerance, so the member is neither removed nor
	// re-added, and keeps the identity it was reported with.
	tr.ApplyScan([]Entry{live(100, 1, 1), live(101, 100, 51)}, t0, ScanOptions{Repair: true})
	c := tr.Take()
	if len(c.Added)+len(c.Removed)+c.Repairs != 0 {
		t.Errorf("approximate identity churned: %+v", c)
	}
	if p, _ := tr.Member(101); p.ID != id(101, 50) || !p.Approx {
		t.Errorf("member = %+v", p)
	}
	// Far off: another process.
	tr.ApplyScan([]Entry{live(100, 1, 1), live(101, 100, 90)}, t0, ScanOptions{Repair: true})
	c = tr.Take()
	if !slices.Equal(c.Removed, []Identity{id(101, 50)}) || !slices.Equal(c.Added, []Identity{id(101, 90)}) {
		t.Errorf("reused PID not told apart: %+v", c)
	}
}

func TestLeaderExit(t *testing.T) {
	tr := New(id(100, 1), Config{}, t0)
	tr.Fork(100, id(101, 10), false, t0, 0, nil)
	tr.Thread(101)
	if !tr.ExitTask(101, 101, 0, 0, t0, 0) {
		t.Fatal("the first thread's exit of a threaded process asked for no check")
	}
	if !tr.IsMember(101) {
		t.Fatal("a process whose first thread exited was dropped")
	}
	if got := tr.PendingExits(nil); !slices.Equal(got, []Identity{id(101, 10)}) {
		t.Errorf("PendingExits = %v", got)
	}
	// Another thread exits: still pending, its status kept.
	if !tr.ExitTask(102, 101, 0, 3<<8, t0, 0) {
		t.Error("a thread exit after the first thread's asked for no check")
	}
	// /proc shows it running: it stays.
	tr.ConfirmExits([]Observation{{PID: 101, Seen: SeenAlive, StartTicks: 10}}, t0)
	if !tr.IsMember(101) {
		t.Fatal("removed while /proc shows it running")
	}
	// Unreadable /proc decides nothing.
	tr.ConfirmExits([]Observation{{PID: 101, Seen: SeenUnknown}}, t0)
	if !tr.IsMember(101) {
		t.Fatal("removed on an unreadable /proc")
	}
	tr.ConfirmExits([]Observation{{PID: 101, Seen: SeenGone}}, t0)
	if got := tr.PendingExits(nil); len(got) != 0 || tr.leaders != 0 || tr.IsMember(101) {
		t.Errorf("after the confirmation: pending %v (count %d), member %v", got, tr.leaders, tr.IsMember(101))
	}
	c := tr.Take()
	if len(c.Exits) != 1 || c.Exits[0].Code() != 3 {
		t.Errorf("exits = %+v", c.Exits)
	}
}

func TestExitDecoding(t *testing.T) {
	tests := []struct {
		e            Exit
		code, signal int
		core         bool
	}{
		{Exit{Known: true, Status: 0}, 0, 0, false},
		{Exit{Known: true, Status: 1 << 8}, 1, 0, false},
		{Exit{Known: true, Status: 255 << 8}, 255, 0, false},
		{Exit{Known: true, Status: 9}, -1, 9, false},
		{Exit{Known: true, Status: 0x80 | 11}, -1, 11, true},
		{Exit{Known: false, Status: 0}, -1, 0, false},
	}
	for _, tt := range tests {
		if tt.e.Code() != tt.code || tt.e.Signal() != tt.signal || tt.e.CoreDumped() != tt.core {
			t.Errorf("%+v: code %d signal %d core %v", tt.e, tt.e.Code(), tt.e.Signal(), tt.e.CoreDumped())
		}
	}
}

func TestTombstones(t *testing.T) {
	tr := New(id(1, 1), Config{Tombstones: 2}, t0)
	for pid := 10; pid < 14; pid++ {
		tr.Fork(1, id(pid, uint64(pid)), false, t0, 0, nil)
		tr.ExitTask(pid, pid, 0, uint32(pid), t0, 0)
	}
	var got []int
	for _, ts := range tr.Tombstones(nil) {
		got = append(got, ts.Proc.ID.PID)
	}
	if !slices.Equal(got, []int{12, 13}) {
		t.Errorf("tombstones = %v, want the last two, oldest first", got)
	}
	if n := len(tr.Take().Tombstones); n != 4 { // every removal since the last Take
		t.Errorf("Take has %d tombstones, want 4", n)
	}
}

func TestMembersSorted(t *testing.T) {
	tr := New(id(5, 1), Config{IncludeRoot: true}, t0)
	for _, pid := range []int{30, 7, 12} {
		tr.Fork(5, id(pid, 2), false, t0, 0, nil)
	}
	var pids []int
	for _, p := range tr.Members(nil) {
		pids = append(pids, p.ID.PID)
	}
	if !slices.Equal(pids, []int{5, 7, 12, 30}) || tr.Len() != 3 {
		t.Errorf("Members = %v, Len %d", pids, tr.Len())
	}
}

func TestExitedProcessNotReaddedByScan(t *testing.T) {
	// The exit event comes while the process is still in do_exit, so a scan
	// right after it may show it running: it must not come back.
	run(t, Config{}, id(100, 1), []step{
		{fork: fork(100, 101, 10), pids: []int{101}},
		{exit: exit(101, 0), pids: []int{}},
		{scan: []Entry{live(100, 1, 1), live(101, 100, 10)}, repair: true, pids: []int{},
			added: []Identity{id(101, 10)}, removed: []Identity{id(101, 10)}, take: true},
		// Once /proc no longer shows it, the PID may be reused by a child.
		{scan: []Entry{live(100, 1, 1)}, repair: true, pids: []int{}, take: true},
		{scan: []Entry{live(100, 1, 1), live(101, 100, 30)}, repair: true, pids: []int{101},
			added: []Identity{id(101, 30)}, repairs: 1, take: true},
	})
}

func TestLateScan(t *testing.T) {
	// A scan read before events that the caller applied first: it does
	// not undo them. 102 exited (event) and 104 was forked (event) after
	// the scan read; 105 is a grandchild no event announced; 106 is too
	// deep.
	tr := New(id(100, 1), Config{MaxDepth: 3}, t0)
	tr.Fork(100, id(101, 10), false, t0, 0, nil)
	tr.Fork(100, id(102, 11), false, t0, 0, nil)
	tr.Take()
	read := t0.Add(time.Second)
	scan := []Entry{
		live(100, 1, 1), live(101, 100, 10), live(102, 100, 11),
		live(105, 104, 15), live(104, 101, 14), live(106, 105, 16),
	}
	tr.ExitTask(102, 102, 0, 7<<8, read.Add(time.Second), 0)
	tr.Fork(101, id(104, 14), false, read.Add(time.Second), 0, nil)
	tr.ApplyScan(scan, read, ScanOptions{Repair: true, Since: read})
	if got := tr.PIDs(nil); !slices.Equal(got, []int{101, 104, 105}) {
		t.Fatalf("members %v, want [101 104 105]", got)
	}
	c := tr.Take()
	if c.Repairs != 1 || !c.Truncated || len(c.Exits) != 1 || c.Exits[0].Code() != 7 {
		t.Errorf("changes = %+v, want 105 repaired, 106 truncated, 102's exit 7", c)
	}
	if p, _ := tr.Member(105); p.Depth != 3 {
		t.Errorf("depth of 105 = %d", p.Depth)
	}
}

func TestPruneGone(t *testing.T) {
	tr := New(id(1, 1), Config{}, t0)
	for pid := 10; pid < 20; pid++ {
		tr.Fork(1, id(pid, 5), false, t0, 0, nil)
		tr.ExitTask(pid, pid, 0, 0, t0.Add(time.Duration(pid)*time.Second), 0)
	}
	if tr.GoneLen() != 10 {
		t.Fatalf("GoneLen = %d", tr.GoneLen())
	}
	tr.PruneGone(t0.Add(15 * time.Second))
	if tr.GoneLen() != 5 {
		t.Errorf("after pruning: %d, want the 5 removed at 15 s or later", tr.GoneLen())
	}
}

func TestCompactKeepsLiveSetDerivable(t *testing.T) {
	tr := New(id(1, 1), Config{MaxPending: 100}, t0)
	// 10 long-lived members, then 1,000 short ones: without a Take the
	// changes are compacted, and the survivors are still in Added.
	for pid := 2; pid < 12; pid++ {
		tr.Fork(1, id(pid, 1), false, t0, 0, nil)
	}
	for pid := 100; pid < 1100; pid++ {
		tr.Fork(1, id(pid, 2), false, t0, 0, nil)
		tr.ExitTask(pid, pid, 0, 0, t0, 0)
	}
	c := tr.Take()
	live := map[Identity]bool{}
	for _, x := range c.Added {
		live[x] = true
	}
	for _, x := range c.Removed {
		delete(live, x)
	}
	if len(live) != 10 || c.Compacted == 0 || len(c.Added)+len(c.Removed) > 100 || len(c.Exits) > 100 {
		t.Errorf("live %d, compacted %d, added %d, removed %d, exits %d", len(live), c.Compacted, len(c.Added), len(c.Removed), len(c.Exits))
	}
	for pid := 2; pid < 12; pid++ {
		if !live[id(pid, 1)] {
			t.Errorf("member %d lost from the delta", pid)
		}
	}
}

func TestExecForgetsLeaderExit(t *testing.T) {
	tr := New(id(1, 1), Config{}, t0)
	tr.Fork(1, id(10, 5), false, t0, 0, nil)
	tr.Thread(10)
	// A non-first thread execs: the kernel ends the first thread first.
	tr.ExitTask(10, 10, 0, 9, t0, 0)
	tr.Exec(10, &Observation{PID: 10, Seen: SeenAlive, StartTicks: 5, Comm: "sh", At: t0}, t0, 0)
	if p, _ := tr.Member(10); len(tr.PendingExits(nil)) != 0 || p.Threaded || tr.leaders != 0 || p.Name != "sh" {
		t.Errorf("after exec: pending %v, threaded %v, count %d, name %q", tr.PendingExits(nil), p.Threaded, tr.leaders, p.Name)
	}
	if tr.Exec(99, nil, t0, 0) {
		t.Error("exec of a non-member applied")
	}
}
