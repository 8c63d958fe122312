package tracker

import (
	"testing"
	"time"
)

// Annotate sets the caller's data on an exit wherever the tracker keeps
// it; a later upgrade of a provisional exit keeps it.
func TestAnnotate(t *testing.T) {
	tr := New(id(100, 1), Config{Tombstones: 4}, t0)
	tr.Fork(100, id(101, 10), false, t0, 0, nil)
	tr.ApplyScan([]Entry{live(100, 1, 1)}, t0, ScanOptions{Repair: true}) // 101 gone, provisionally
	tr.DrainChanges(nil)
	if tr.Annotate(id(102, 10), "x", "") {
		t.Error("Annotate found the exit of a process that never was a member")
	}
	if !tr.Annotate(id(101, 10), "usage", "") {
		t.Fatal("Annotate did not find the exit")
	}
	tr.ExitTask(101, 101, 0, 3<<8, t0.Add(time.Second), 5)
	ch := tr.DrainChanges(nil)
	if len(ch) != 1 || ch[0].Kind != Upgraded {
		t.Fatalf("changes %+v, want one upgrade", ch)
	}
	c := tr.Take()
	if len(c.Exits) != 1 || c.Exits[0].Data != "usage" || c.Exits[0].Code() != 3 {
		t.Errorf("pending exits %+v: want the upgraded exit with the annotation", c.Exits)
	}
	if len(c.Tombstones) != 1 || c.Tombstones[0].Exit.Data != "usage" {
		t.Errorf("pending tombstones %+v: want the annotation", c.Tombstones)
	}
	if ts := tr.Tombstones(nil); len(ts) != 1 || ts[0].Exit.Data != "usage" || ts[0].Exit.Code() != 3 {
		t.Errorf("tombstones %+v: want the upgraded exit with the annotation", ts)
	}
}

// A tombstone without a name (the exec's was lost) takes the one given
// at the exit; a named one keeps its own.
func TestAnnotateName(t *testing.T) {
	tr := New(id(100, 1), Config{Tombstones: 4}, t0)
	tr.Fork(100, id(101, 10), false, t0, 0, nil)
	tr.Fork(100, id(102, 11), false, t0, 0, nil)
	gone := Observation{PID: 101, Seen: SeenGone, At: t0}
	tr.Exec(101, &gone, t0, 1) // the new image's name is lost
	seen := Observation{PID: 102, Seen: SeenAlive, StartTicks: 11, Comm: "sleep", At: t0}
	tr.Exec(102, &seen, t0, 1)
	tr.ExitTask(101, 101, 100, 0, t0, 2)
	tr.ExitTask(102, 102, 100, 0, t0, 3)
	tr.Annotate(id(101, 10), "u", "true")
	tr.Annotate(id(102, 11), "u", "other")
	for _, ts := range tr.Tombstones(nil) {
		switch ts.Proc.ID.PID {
		case 101:
			if ts.Proc.Name != "true" || !ts.Proc.NamedAtExit {
				t.Errorf("nameless tombstone %+v: want the name given at the exit", ts.Proc)
			}
		case 102:
			if ts.Proc.Name != "sleep" || ts.Proc.NamedAtExit {
				t.Errorf("named tombstone %+v took the name given at the exit", ts.Proc)
			}
		}
	}
}
