package taskstats_test

import (
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/process-watchman/watchman/connector"
	"github.com/process-watchman/watchman/taskstats"
)

// exitWatch records the proc connector's exit timestamps by task id, to
// give Record.StartTicksAt an exit time from the kernel (converted to
// CLOCK_BOOTTIME) instead of the time the record was read.
type exitWatch struct {
	c    *connector.Conn
	off  time.Duration
	done chan struct{}

	mu      sync.Mutex
	ts      map[int32][]exitEvent // exits by task id, in order
	changed chan struct{}         // closed and replaced after each batch
}

func watchExits(t testing.TB) *exitWatch {
	t.Helper()
	c, err := connector.Dial(&connector.Config{Events: connector.WhatExit})
	if err != nil {
		t.Fatalf("proc connector: %v", err)
	}
	off, err := taskstats.BoottimeOffset()
	if err != nil {
		t.Fatal(err)
	}
	w := &exitWatch{c: c, off: off, done: make(chan struct{}), ts: make(map[int32][]exitEvent),
		changed: make(chan struct{})}
	go func() {
		defer close(w.done)
		buf := make([]connector.Event, 0, connector.MaxBatch)
		for {
			evs, err := c.Receive(buf[:0])
			w.mu.Lock()
			for _, ev := range evs {
				if ev.What == connector.WhatExit {
					w.ts[ev.PID] = append(w.ts[ev.PID], exitEvent{at: time.Duration(ev.Timestamp) + off, status: ev.ExitStatus, parent: ev.ParentTGID})
				}
			}
			close(w.changed)
			w.changed = make(chan struct{})
			w.mu.Unlock()
			if err != nil && !errors.Is(err, connector.ErrOverrun) {
				return
			}
		}
	}()
	t.Cleanup(w.stop)
	return w
}

func (w *exitWatch) stop() {
	_ = w.c.Close()
	<-w.done
}

// exitEvent is one exit the proc connector reported.
type exitEvent struct {
	at     time.Duration // CLOCK_BOOTTIME
	status uint32        // wait status
	parent int32         // the parent's TGID; 0 if the parent reaped it before the event was sent
}

// exits returns the exits seen for task id pid, in order.
func (w *exitWatch) exits(pid int32) []exitEvent {
	w.mu.Lock()
	defer w.mu.Unlock()
	return append([]exitEvent(nil), w.ts[pid]...)
}

// exitOf returns the last exit time of task pid, waiting for the
// connector's event (the kernel sends it after the taskstats record, and
// may send it after the parent's wait returned). The timeout only guards
// against a lost event.
func (w *exitWatch) exitOf(t testing.TB, pid int32) time.Duration {
	t.Helper()
	timeout := time.After(30 * time.Second)
	for {
		w.mu.Lock()
		ts, changed := w.ts[pid], w.changed
		w.mu.Unlock()
		if len(ts) > 0 {
			return ts[len(ts)-1].at
		}
		select {
		case <-changed:
		case <-w.done:
			t.Fatalf("the proc connector stopped before the exit of task %d", pid)
		case <-timeout:
			t.Fatalf("no exit event for task %d", pid)
		}
	}
}
