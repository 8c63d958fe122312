package tracker

import (
	"strings"
	"testing"
	"time"
)

// Regression tests for the interleavings a busy host produces (issue 9's
// review at commit 84a08d8).

// A member a scan added with its exact start time is reported again by its
// fork event, whose derived start time is a tick later: the same process,
// not a PID reuse (the tolerance applies both ways).
func TestApproxForkOfScannedMemberIsSameProcess(t *testing.T) {
	tr := New(id(1, 1), Config{}, t0)
	tr.ApplyScan([]Entry{live(1, 0, 1), live(150, 1, 1000)}, t0, ScanOptions{})
	tr.Take()
	if p := tr.Fork(1, id(150, 1001), true, t0, 0, nil); p != nil {
		c := tr.Take()
		t.Errorf("same process counted twice: added %v removed %v repairs %d", c.Added, c.Removed, c.Repairs)
	}
	if p := tr.Fork(1, id(150, 990), true, t0, 0, nil); p == nil {
		t.Error("a start time far off is another process, and was not taken")
	}
}

// The first thread exits because a thread other than the first execs; the
// exec and the new image's exit (status 7) follow. The exit carries 7.
func TestExecFromNonFirstThreadKeepsRealStatus(t *testing.T) {
	tr := New(id(100, 1), Config{}, t0)
	tr.Fork(100, id(110, 10), false, t0, 0, nil)
	tr.Thread(110)
	check := tr.ExitTask(110, 110, 0, 0, t0, 0)
	gone := Observation{PID: 110, Seen: SeenGone, At: t0} // read late: already reaped
	tr.Exec(110, &gone, t0, 0)
	tr.ExitTask(110, 110, 0, 7<<8, t0, 0)
	if check {
		tr.ConfirmExits([]Observation{gone}, t0)
	}
	c := tr.Take()
	if len(c.Exits) != 1 || c.Exits[0].Code() != 7 || !c.Exits[0].Known {
		t.Errorf("exits %+v, want one with code 7", c.Exits)
	}
	// The exec's name was lost: unknown, not the old one.
	if len(c.Removed) != 1 {
		t.Fatalf("removed %v", c.Removed)
	}
}

// A repair scan finds 105 under member 101; 101 exits before the
// confirmation and 105 is reparented. 105 was forked by a member: it joins
// at the depth the scan saw.
func TestRepairKeepsLineageOfScan(t *testing.T) {
	tr := New(id(100, 1), Config{}, t0)
	tr.Fork(100, id(101, 10), false, t0, 0, nil)
	// The scan read 101 and its child 105; 101's exit event is applied
	// before the scan.
	scan := []Entry{live(100, 1, 1), live(101, 100, 10), live(105, 101, 15)}
	tr.ExitTask(101, 101, 0, 0, t0.Add(time.Second), 0)
	tr.ApplyScan(scan, t0, ScanOptions{Repair: true, Since: t0})
	p, ok := tr.Member(105)
	if !ok || p.Depth != 2 || p.Parent != 101 {
		t.Fatalf("105 after its parent exited: %+v %v", p, ok)
	}
}

// Member 130's exit was lost in an overrun and a stranger took its PID: the
// stranger's fork is checked against 130's start time and refused.
func TestForkFromReusedPIDOfUnconfirmedMember(t *testing.T) {
	tr := New(id(100, 1), Config{}, t0)
	tr.Fork(100, id(130, 10), false, t0, 0, nil)
	tr.Overrun()
	if !tr.NeedsParentCheck(130) {
		t.Fatal("a member is not unconfirmed after an overrun")
	}
	stranger := Observation{PID: 130, Seen: SeenAlive, StartTicks: 50, At: t0}
	if p := tr.Fork(130, id(131, 51), false, t0, 0, &stranger); p != nil {
		t.Error("a stranger's child was adopted through a reused PID")
	}
	if tr.IsMember(130) {
		t.Error("the member whose PID another process holds is still a member")
	}
	// A confirmed member's forks need no check.
	tr.Fork(100, id(140, 60), false, t0, 0, nil)
	if tr.NeedsParentCheck(140) {
		t.Error("a member that joined after the overrun needs a check")
	}
	self := Observation{PID: 100, Seen: SeenAlive, StartTicks: 1, At: t0}
	if p := tr.Fork(100, id(141, 61), false, t0, 0, &self); p == nil || tr.NeedsParentCheck(100) {
		t.Error("a checked parent's child was refused, or the parent stays unconfirmed")
	}
}

// A scan declares a member gone; the kernel's exit event arrives after the
// confirmation: it upgrades the recorded status.
func TestLateExitEventUpgradesStatus(t *testing.T) {
	tr := New(id(100, 1), Config{Tombstones: 4}, t0)
	tr.Fork(100, id(101, 10), false, t0, 0, nil)
	tr.ApplyScan([]Entry{live(100, 1, 1)}, t0, ScanOptions{Repair: true})
	tr.DrainChanges(nil)
	tr.ExitTask(101, 101, 0, 3<<8, t0.Add(time.Second), 5)
	ch := tr.DrainChanges(nil)
	if len(ch) != 1 || ch[0].Kind != Upgraded || ch[0].Exit.Code() != 3 || ch[0].Proc.ID != id(101, 10) {
		t.Fatalf("changes %+v, want one upgrade to code 3", ch)
	}
	c := tr.Take()
	if len(c.Exits) != 1 || c.Exits[0].Code() != 3 || len(c.Tombstones) != 1 || c.Tombstones[0].Exit.Code() != 3 {
		t.Errorf("exits %+v tombstones %+v", c.Exits, c.Tombstones)
	}
	// Only once.
	tr.ExitTask(101, 101, 0, 5<<8, t0, 0)
	if ch := tr.DrainChanges(nil); len(ch) != 0 {
		t.Errorf("a second exit upgraded again: %+v", ch)
	}
}

// A name learnt from an exec is not replaced by a scan that started before
// the exec.
func TestOlderScanKeepsNewerName(t *testing.T) {
	tr := New(id(100, 1), Config{}, t0)
	tr.Fork(100, id(101, 10), false, t0, 0, nil)
	tr.Exec(101, &Observation{PID: 101, Seen: SeenAlive, StartTicks: 10, Comm: "cc", At: t0.Add(2 * time.Second)}, t0.Add(2*time.Second), 0)
	tr.Describe(id(101, 10), &Observation{PID: 101, Seen: SeenAlive, StartTicks: 10, Comm: "make", At: t0.Add(time.Second)})
	if p, _ := tr.Member(101); p.Name != "cc" {
		t.Errorf("name %q after an older scan, want cc", p.Name)
	}
	tr.Describe(id(101, 10), &Observation{PID: 101, Seen: SeenAlive, StartTicks: 10, Comm: "ld", At: t0.Add(3 * time.Second)})
	if p, _ := tr.Member(101); p.Name != "ld" {
		t.Errorf("name %q after a newer scan, want ld", p.Name)
	}
}

// A scan applied after events that came after it started does not judge
// the members those events added: it could not see them.
func TestScanDoesNotJudgeLaterForks(t *testing.T) {
	tr := New(id(100, 1), Config{}, t0)
	tr.Fork(100, id(101, 10), false, t0.Add(2*time.Second), 0, nil)
	tr.ApplyScan([]Entry{live(100, 1, 1)}, t0.Add(time.Second), ScanOptions{Repair: true, Since: t0.Add(time.Second)})
	if !tr.IsMember(101) {
		t.Error("a member forked after the scan started was removed by it")
	}
	tr.ApplyScan([]Entry{live(100, 1, 1)}, t0.Add(3*time.Second), ScanOptions{Repair: true, Since: t0.Add(3 * time.Second)})
	if tr.IsMember(101) {
		t.Error("a member missing from a later scan stayed")
	}
}

// The kernel's record of an exec image applies to a member whose exit
// cannot have been missed; after an overrun it does not (the PID may be a
// stranger's now) until the member is confirmed again.
func TestExecImageOnlyForConfirmedMembers(t *testing.T) {
	tr := New(id(100, 1), Config{}, t0)
	tr.Fork(100, id(150, 10), false, t0, 0, nil)
	tr.DrainChanges(nil)
	if !tr.ExecImage(150, "cc", []string{"cc", "-c", "a.c"}, false, true, t0.Add(time.Millisecond), 5) {
		t.Fatal("the image of a confirmed member's exec was refused")
	}
	p, _ := tr.Member(150)
	if p.Name != "cc" || strings.Join(p.Cmdline, " ") != "cc -c a.c" || p.ID != id(150, 10) || !p.InfoAt.Equal(t0.Add(time.Millisecond)) {
		t.Errorf("after the image: %+v", p)
	}
	if chs := tr.DrainChanges(nil); len(chs) != 1 || chs[0].Kind != Execed || chs[0].Proc.Name != "cc" || chs[0].Kernel != 5 {
		t.Errorf("changes %+v, want one Execed with the image", chs)
	}
	if tr.ExecImage(99, "x", nil, false, true, t0, 0) {
		t.Error("an image applied to a non-member")
	}
	tr.Overrun()
	if tr.ExecImage(150, "stranger", nil, false, true, t0, 0) {
		t.Error("an image applied to a member whose exit may have been missed")
	}
	if p, _ := tr.Member(150); p.Name != "cc" {
		t.Errorf("a refused image changed the member: %q", p.Name)
	}
	// A fork checked against the member's start time confirms it.
	self := Observation{PID: 150, Seen: SeenAlive, StartTicks: 10, At: t0}
	tr.Fork(150, id(151, 11), false, t0, 0, &self)
	if !tr.ExecImage(150, "ld", []string{"ld"}, false, true, t0, 0) {
		t.Error("the image of a member confirmed again was refused")
	}
}
