//go:build linux

package connector_test

import (
	"encoding/binary"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/process-watchman/watchman/connector"
)

// indexOf returns the index of the first event in evs that matches.
func indexOf(evs []connector.Event, match func(connector.Event) bool) int {
	for i, ev := range evs {
		if match(ev) {
			return i
		}
	}
	return -1
}

func isMark(token uint32) func(connector.Event) bool {
	return func(ev connector.Event) bool { return ev.What == connector.WhatMark && ev.Ack == token }
}

func isForkOf(pid int) func(connector.Event) bool {
	return func(ev connector.Event) bool { return ev.What == connector.WhatFork && ev.PID == int32(pid) }
}

// barrier queues a marker, reading while the queue is full, and reads up
// to it; it returns the events read. Overruns are tolerated.
func barrier(t *testing.T, c *connector.Conn, token uint32) []connector.Event {
	t.Helper()
	var evs []connector.Event
	for {
		err := c.Mark(token)
		if err == nil {
			break
		}
		if !errors.Is(err, connector.ErrQueueFull) {
			t.Fatalf("Mark: %v", err)
		}
		got, err := c.Receive(make([]connector.Event, 0, connector.MaxBatch))
		if err != nil && !errors.Is(err, connector.ErrOverrun) {
			t.Fatalf("Receive: %v", err)
		}
		evs = append(evs, got...)
	}
	return append(evs, collectUntil(t, c, func(evs []connector.Event) bool { return indexOf(evs, isMark(token)) >= 0 })...)
}

// barrierExit reads up to a marker and on until the exit of pid: the
// kernel queues an exit event after it has notified the parent
// (exit_notify precedes proc_exit_connector in do_exit), so a process
// reaped before Mark may have its exit event queued just after the marker.
func barrierExit(t *testing.T, c *connector.Conn, token uint32, pid int) []connector.Event {
	t.Helper()
	evs := barrier(t, c, token)
	if _, ok := exitOf(evs, pid); ok {
		return evs
	}
	return append(evs, collectUntil(t, c, func(evs []connector.Event) bool { _, ok := exitOf(evs, pid); return ok })...)
}

// TestIntegrationMarkIsABarrier interleaves processes and markers: every
// process started before Mark has its fork and exec before the marker,
// and every process started after it has its events after it. (Exits may
// trail a marker: see barrierExit.)
func TestIntegrationMarkIsABarrier(t *testing.T) {
	requirePrivileged(t)
	c := dialReal(t, nil)
	if !c.CanMark() {
		t.Fatal("CanMark = false as root")
	}
	const rounds = 20
	pids := make([]int, rounds)
	for i := range rounds {
		pids[i] = run(t, "/bin/true") // reaped: its exit event is queued
		if err := c.Mark(uint32(i + 1)); err != nil {
			t.Fatalf("Mark(%d): %v", i+1, err)
		}
	}
	evs := collectUntil(t, c, func(evs []connector.Event) bool { return indexOf(evs, isMark(rounds)) >= 0 })
	prev := -1
	for i, pid := range pids {
		m := indexOf(evs, isMark(uint32(i+1)))
		f := indexOf(evs, isForkOf(pid))
		x := indexOf(evs, func(ev connector.Event) bool { return ev.What == connector.WhatExec && ev.PID == int32(pid) })
		if m < 0 || f < 0 || x < 0 {
			t.Fatalf("round %d: marker at %d, fork of %d at %d, exec at %d", i+1, m, pid, f, x)
		}
		if !(prev < f && f < x && x < m) {
			t.Errorf("round %d: previous marker %d, fork %d, exec %d, marker %d; want them in this order", i+1, prev, f, x, m)
		}
		prev = m
	}
	if st := c.Stats(); st.Marks != rounds || st.Spoofed != 0 {
		t.Errorf("Marks = %d, Spoofed = %d; want %d and 0", st.Marks, st.Spoofed, rounds)
	}
}

// TestIntegrationForgedMarkFromOwnPort sends marker-shaped datagrams from
// the Conn's own port without its nonce: they are counted as spoofed.
func TestIntegrationForgedMarkFromOwnPort(t *testing.T) {
	requirePrivileged(t)
	c := dialReal(t, nil)
	forged := make([]byte, 68)
	ne := binary.NativeEndian
	ne.PutUint32(forged[0:], 68)
	ne.PutUint16(forged[4:], 3)
	ne.PutUint32(forged[12:], c.PortID())
	ne.PutUint32(forged[16:], connector.IdxProc)
	ne.PutUint32(forged[20:], connector.ValProc)
	ne.PutUint32(forged[28:], 9)
	ne.PutUint16(forged[32:], 32)
	ne.PutUint32(forged[36:], uint32(connector.WhatMark))
	if err := c.SendToSelf(forged); err != nil {
		t.Fatalf("sendto own port: %v", err)
	}
	if err := c.Mark(10); err != nil {
		t.Fatal(err)
	}
	evs := collectUntil(t, c, func(evs []connector.Event) bool { return indexOf(evs, isMark(10)) >= 0 })
	if i := indexOf(evs, isMark(9)); i >= 0 {
		t.Errorf("forged marker delivered: %+v", evs[i])
	}
	if st := c.Stats(); st.Spoofed != 1 || st.Marks != 1 {
		t.Errorf("Spoofed = %d, Marks = %d; want 1 and 1", st.Spoofed, st.Marks)
	}
}

// TestIntegrationMarkUnprivileged runs the test binary as nobody: the
// kernel lets it listen (Linux >= 6.6) but refuses its send to its own
// port, so CanMark is false and Mark fails with ErrPermission.
func TestIntegrationMarkUnprivileged(t *testing.T) {
	requirePrivileged(t)
	if got := runAsNobody(t, "mark"); !strings.HasPrefix(got, "canmark=false permission=true") {
		t.Errorf("as nobody: %q, want CanMark false and Mark failing with ErrPermission", got)
	}
}

// runAsNobody runs the test binary's helper mode as uid 65534 and returns
// its report. It skips where the kernel does not let nobody listen
// (before Linux 6.6): the fake kernel covers the refusals there.
func runAsNobody(t *testing.T, mode string) string {
	t.Helper()
	cmd := exec.Command(copyTestBinary(t))
	cmd.Env = append(os.Environ(), helperEnv+"="+mode, "GORACE=atexit_sleep_ms=0")
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534}}
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("helper: %v\n%s", err, out)
	}
	got := strings.TrimSpace(string(out))
	t.Logf("as uid 65534: %s", got)
	if strings.HasPrefix(got, "error notsupported=true permission=true") {
		t.Skip("skipping: this kernel does not let an unprivileged socket listen (before Linux 6.6)")
	}
	return got
}

// copyTestBinary copies the test binary where uid 65534 can run it.
func copyTestBinary(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	bin := filepath.Join(dir, "connector.test")
	data, err := os.ReadFile(os.Args[0])
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(bin, data, 0o755); err != nil {
		t.Fatal(err)
	}
	for _, d := range []string{dir, filepath.Dir(dir)} { // t.TempDir makes both 0700
		if err := os.Chmod(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	return bin
}
