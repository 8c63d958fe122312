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
	requireRoot(t)
	c, err := Dial(&Config{reader: readStrategy{set: true, blocking: true}})
	if err != nil {
		t.Fatal(err)
	}
	if !c.sock.(*nlSocket).Blocking() {
		t.Fatal("blocking mode not in force")
	}
	receiveChild(t, c)

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

// TestIntegrationCoalesceBlocking checks the read mode that Config.Coalesce
// chooses on a real socket: a positive Coalesce reads in blocking mode
// (the socket out of the runtime's poller; internal/nlsock's tests check
// the epoll set), and still delivers events and markers and ends a
// blocked Receive on Close; zero, a negative value, or a wait capped to
// nothing by a small buffer keep the poller.
func TestIntegrationCoalesceBlocking(t *testing.T) {
	requireRoot(t)
	for _, tc := range []struct {
		name     string
		cfg      Config
		blocking bool
	}{
		{"default", Config{}, false},
		{"never", Config{Coalesce: -1}, false},
		{"coalesce 20ms", Config{Coalesce: 20 * time.Millisecond}, true},
		{"coalesce 5ms", Config{Coalesce: 5 * time.Millisecond}, true},
		// 16 KiB (32 KiB charged) hold 32 datagrams: 160 µs at 50,000/s,
		// below the 500 µs floor, so no wait and no reason to block.
		{"coalesce capped to none", Config{Coalesce: 20 * time.Millisecond, ReadBuffer: 16 << 10}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, err := Dial(&tc.cfg)
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			s := c.sock.(*nlSocket)
			if !c.CanMark() {
				t.Skip("skipping: the socket cannot send to itself")
			}
			if s.Blocking() != tc.blocking || c.strategy.blocking != tc.blocking {
				t.Fatalf("blocking mode %v (strategy %v), want %v", s.Blocking(), c.strategy.blocking, tc.blocking)
			}
			if got := s.Conn() == nil; got != tc.blocking {
				t.Errorf("socket detached from its netlink Conn: %v, want %v", got, tc.blocking)
			}
			receiveChild(t, c)

			// Close ends a blocked Receive.
			errc := make(chan error, 1)
			go func() {
				var err error
				for err == nil || errors.Is(err, ErrOverrun) {
					_, err = c.Receive(make([]Event, 0, 1))
				}
				errc <- err
			}()
			if tc.blocking {
				for !s.ReadBlocked() {
					time.Sleep(time.Millisecond) // until the read blocks: a state, not a guess
				}
			}
			if err := c.Close(); err != nil {
				t.Fatal(err)
			}
			select {
			case err := <-errc:
				if !errors.Is(err, ErrClosed) {
					t.Errorf("Receive during Close = %v, want ErrClosed", err)
				}
			case <-time.After(10 * time.Second):
				t.Fatal("Receive did not return within 10 s of Close")
			}
		})
	}
}

// receiveChild runs a child, then receives up to a marker behind its
// events, and checks that its fork came (unless the kernel dropped events
// meanwhile: a storm of other tests on the host).
func receiveChild(t *testing.T, c *Conn) {
	t.Helper()
	cmd := exec.Command("/bin/true")
	if err := cmd.Run(); err != nil {
		t.Fatal(err)
	}
	forked, overrun := false, false
	buf := make([]Event, 0, MaxBatch)
	receive := func() []Event {
		evs, err := c.Receive(buf[:0])
		switch {
		case errors.Is(err, ErrOverrun):
			overrun = true
		case err != nil:
			t.Fatal(err)
		}
		forked = forked || indexOfFork(evs, cmd.Process.Pid) >= 0
		return evs
	}
	// A small buffer fills with the host's events: Mark then says
	// ErrQueueFull, and is tried again once a batch is read.
	for {
		err := c.Mark(7)
		if err == nil {
			break
		}
		if !errors.Is(err, ErrQueueFull) {
			t.Fatal(err)
		}
		receive()
	}
	for {
		evs := receive()
		for _, ev := range evs {
			if ev.What != WhatMark {
				continue
			}
			if ev.Ack != 7 {
				t.Errorf("marker %d, want 7", ev.Ack)
			}
			if !forked && !overrun {
				t.Errorf("fork of %d not received", cmd.Process.Pid)
			}
			return
		}
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

// requireRoot skips the test unless it runs as root, and fails it under
// CI, which runs as root.
func requireRoot(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		if os.Getenv("CI") == "true" {
			t.Fatal("privileged test skipped under CI")
		}
		t.Skip("skipping: needs root (CI runs it as root)")
	}
}
