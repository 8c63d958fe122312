//go:build linux

package connector

import (
	"errors"
	"os"
	"os/exec"
	"testing"
	"time"
)

// TestIntegrationBlockingReads covers the blocking read strategy that
// BenchmarkReaderCPU compares: it delivers, a deadline set during a
// blocked read takes effect, and Close unblocks a read and closes the
// socket.
func TestIntegrationBlockingReads(t *testing.T) {
	if os.Geteuid() != 0 {
		if os.Getenv("CI") == "true" {
			t.Fatal("privileged test skipped under CI")
		}
		t.Skip("skipping: needs root (CI runs it as root)")
	}
	c, err := Dial(&Config{reader: readStrategy{set: true, blocking: true}})
	if err != nil {
		t.Fatal(err)
	}
	if !c.sock.(*nlSocket).Blocking() {
		t.Fatal("blocking mode not in force")
	}
	cmd := exec.Command("/bin/true")
	if err := cmd.Run(); err != nil {
		t.Fatal(err)
	}
	if err := c.Mark(1); err != nil {
		t.Fatal(err)
	}
	var evs []Event
	for len(evs) == 0 || evs[len(evs)-1].What != WhatMark {
		if evs, err = c.Receive(evs); err != nil {
			t.Fatal(err)
		}
	}
	if i := indexOfFork(evs, cmd.Process.Pid); i < 0 {
		t.Errorf("fork of %d not received", cmd.Process.Pid)
	}

	// A deadline set while a read blocks ends it.
	errc := make(chan error, 1)
	go func() {
		_, err := c.Receive(make([]Event, 0, 1))
		for err == nil {
			_, err = c.Receive(make([]Event, 0, 1)) // host events may come first
		}
		errc <- err
	}()
	for !c.sock.(*nlSocket).ReadBlocked() {
		time.Sleep(time.Millisecond) // until the read blocks: a state, not a guess
	}
	if err := c.SetReadDeadline(time.Now().Add(-time.Second)); err != nil {
		t.Fatal(err)
	}
	if err := <-errc; !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("blocked Receive after a past deadline = %v", err)
	}
	_ = c.SetReadDeadline(time.Time{})

	// Close ends a blocked read.
	go func() {
		var err error
		for err == nil {
			_, err = c.Receive(make([]Event, 0, 1))
		}
		errc <- err
	}()
	for !c.sock.(*nlSocket).ReadBlocked() {
		time.Sleep(time.Millisecond)
	}
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	if err := <-errc; !errors.Is(err, ErrClosed) {
		t.Errorf("blocked Receive after Close = %v, want ErrClosed", err)
	}
}

func indexOfFork(evs []Event, pid int) int {
	for i, ev := range evs {
		if ev.What == WhatFork && ev.PID == int32(pid) {
			return i
		}
	}
	return -1
}
