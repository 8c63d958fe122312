package connector_test

import (
	"os/exec"
	"testing"

	"github.com/process-watchman/watchman/taskstats"
)

// TestIntegrationTreeFilterMatchProgram: the member match, attached to a
// taskstats listener, lets through the exit records of members only.
func TestIntegrationTreeFilterMatchProgram(t *testing.T) {
	requirePrivileged(t)
	_, f := attachTree(t, 64)
	l, err := taskstats.Listen(nil)
	if err != nil {
		t.Fatalf("taskstats: %v", err)
	}
	defer l.Close()
	m, err := f.MatchProgram(taskstats.FilterOffsetTGID)
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	if err := l.AttachBPF(m.FD()); err != nil {
		t.Fatal(err)
	}
	// Records queued between Listen and the filter's attachment (other
	// tests' processes) passed unfiltered: drop them.
	if _, err := l.Sync(nil); err != nil {
		t.Fatal(err)
	}
	member := exec.Command("sleep", "60")
	if err := member.Start(); err != nil {
		t.Fatal(err)
	}
	mustAdd(t, f, member.Process.Pid)
	for range 20 {
		if err := exec.Command("/bin/true").Run(); err != nil {
			t.Fatal(err)
		}
	}
	_ = member.Process.Kill()
	_ = member.Wait()
	// A record is queued at the start of the task's exit, so it is there
	// once Wait returned.
	recs, err := l.Sync(nil)
	if err != nil {
		t.Fatal(err)
	}
	if len(recs) != 1 || recs[0].TGID != int32(member.Process.Pid) {
		t.Fatalf("got %d records (%+v), want the member's alone", len(recs), recs)
	}
}
