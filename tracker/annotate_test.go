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
	if tr.Annotate(id(102, 10), "x") {
		t.Error("Annotate found the exit of a process that never was a member")
	}
	if !tr.Annotate(id(101, 10), "usage") {
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
