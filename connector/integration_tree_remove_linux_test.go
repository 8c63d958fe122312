package connector_test

import (
	"testing"

	"golang.org/x/sys/unix"
)

func monoNow(t *testing.T) uint64 {
	t.Helper()
	var ts unix.Timespec
	if err := unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts); err != nil {
		t.Fatal(err)
	}
	return uint64(ts.Nano())
}

// TestIntegrationTreeFilterRemoveOlder: RemoveOlder deletes an entry
// inserted before the given time and keeps one inserted at or after it
// (a PID the kernel inserted again after the exit that is being removed).
func TestIntegrationTreeFilterRemoveOlder(t *testing.T) {
	requirePrivileged(t)
	_, f := attachTree(t, 64)
	mustAdd(t, f, 100001)
	between := monoNow(t)
	mustAdd(t, f, 100002)

	if ok, err := f.RemoveOlder(100002, between); err != nil || ok {
		t.Errorf("RemoveOlder of an entry inserted after the time = %v, %v; want false, nil", ok, err)
	}
	if !contains(t, f, 100002) {
		t.Error("RemoveOlder deleted an entry inserted after the time")
	}
	if ok, err := f.RemoveOlder(100001, between); err != nil || !ok {
		t.Errorf("RemoveOlder of an entry inserted before the time = %v, %v; want true, nil", ok, err)
	}
	if contains(t, f, 100001) {
		t.Error("RemoveOlder kept an entry inserted before the time")
	}
	if ok, err := f.RemoveOlder(100003, monoNow(t)); err != nil || ok {
		t.Errorf("RemoveOlder of a missing entry = %v, %v; want false, nil", ok, err)
	}
}
