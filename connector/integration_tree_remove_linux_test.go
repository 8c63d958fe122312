package connector_test

import (
	"io"
	"os/exec"
	"testing"

	"github.com/process-watchman/watchman/connector"
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

// TestIntegrationTreeFilterRemoveBatch: RemoveBatch deletes the members
// it is given, skips the non-members among them (first, in the middle,
// last: the kernel's batch stops at each), keeps the others, and counts
// what it deleted.
func TestIntegrationTreeFilterRemoveBatch(t *testing.T) {
	requirePrivileged(t)
	_, f := attachTree(t, 64)
	for p := 100001; p <= 100006; p++ {
		mustAdd(t, f, p)
	}
	n, err := f.RemoveBatch([]uint32{200001, 100001, 100002, 200002, 100004, 100004, 200003})
	if err != nil || n != 3 {
		t.Errorf("RemoveBatch = %d, %v; want 3 deleted, nil", n, err)
	}
	for p := 100001; p <= 100006; p++ {
		want := p == 100003 || p == 100005 || p == 100006
		if got := contains(t, f, p); got != want {
			t.Errorf("after RemoveBatch, contains(%d) = %v, want %v", p, got, want)
		}
	}
	if n, err := f.RemoveBatch(nil); err != nil || n != 0 {
		t.Errorf("RemoveBatch(nil) = %d, %v; want 0, nil", n, err)
	}
	if n, err := f.RemoveBatch([]uint32{100003, 100005, 100006}); err != nil || n != 3 {
		t.Errorf("RemoveBatch of the rest = %d, %v; want 3, nil", n, err)
	}
	if l, err := f.Len(); err != nil || l != 0 {
		t.Errorf("Len after removing every member = %d, %v; want 0", l, err)
	}
}

// TestIntegrationTreeFilterReuseOfMemberPID: a member's exit was lost and
// its PID left in the map; when a stranger forks a process that gets that
// PID, the fork passes (user space must learn that the member is gone)
// but the child is not inserted, and its later events are those of a PID
// still in the map only until user space removes it.
func TestIntegrationTreeFilterReuseOfMemberPID(t *testing.T) {
	requirePrivileged(t)
	c, f := attachTree(t, 1024)
	m := startGated(t, exec.Command("/bin/sh", "-c", "echo ready; read x"))
	pid := m.pid
	mustAdd(t, f, pid)
	_, _ = io.WriteString(m.stdin, "go\n")
	_ = m.cmd.Wait()
	barrierExit(t, c, 1, pid)
	// The entry stays: as if the member's exit event had been lost.
	before := monoNow(t)
	reused, parent := reusePID(t, pid, "/bin/true")
	evs := barrier(t, c, 2)
	// Only the stranger's fork counts: on a busy host (pid_max 32768)
	// another process may hold the PID for a while before, and its fork
	// passes too (every fork of a PID in the map does), which is right.
	forks := 0
	for _, ev := range eventsOf(evs, reused) {
		if ev.What == connector.WhatFork && int(ev.PID) == reused && int(ev.ParentTGID) == parent {
			forks++
		}
	}
	if forks != 1 {
		t.Errorf("the stranger's fork of pid %d, a member's, passed %d times; want once (events %+v)", reused, forks, eventsOf(evs, reused))
	}
	if removed, err := f.RemoveOlder(uint32(pid), before); err != nil || !removed {
		t.Errorf("the old member's entry was replaced (RemoveOlder = %v, %v): the stranger's child was inserted", removed, err)
	}
}
