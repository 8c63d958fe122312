package connector_test

import (
	"testing"
	"time"

	"github.com/process-watchman/watchman/connector"
	"github.com/process-watchman/watchman/connector/connectortest"
)

// TestCoalesceOnlyUnderLoad: reads of fewer than 4 datagrams never wait;
// a read of 4 or more, but not a full batch, that came fast makes the next
// read wait once, one that came slowly does not, and a full batch does not
// (a backlog drains at full speed); a small buffer turns coalescing off. The
// clock is a fake one that moves only when the test says.
func TestCoalesceOnlyUnderLoad(t *testing.T) {
	k := connectortest.NewKernel()
	c := dial(t, k, nil)
	if !c.Coalescing() {
		t.Fatal("coalescing off by default")
	}
	read := newFeeder(t, k, c).read
	for i := range 6 { // 1 to 8 events every 10 ms: at most 800/s
		read(1+i%8, 10*time.Millisecond)
	}
	read(8, 10*time.Millisecond)
	if n := c.Coalesced(); n != 0 {
		t.Fatalf("%d waits at low rates, want 0", n)
	}
	read(64, 10*time.Millisecond) // 6,400/s: load, but a full batch: more is queued
	read(40, 0)                   // so this read did not wait; a partial batch under load
	if n := c.Coalesced(); n != 0 {
		t.Fatalf("%d waits after a full batch, want 0 (a backlog drains at full speed)", n)
	}
	read(1, 0) // this read waited first
	if n := c.Coalesced(); n != 1 {
		t.Fatalf("%d waits after a fast partial batch, want 1", n)
	}
	read(1, 0) // a read of 1 ended it
	if n := c.Coalesced(); n != 1 {
		t.Fatalf("%d waits after a read of 1, want still 1", n)
	}
	read(8, 20*time.Millisecond) // 10 events over 20 ms: 500/s, load over
	read(1, 0)
	if n := c.Coalesced(); n != 1 {
		t.Fatalf("%d waits once the rate fell, want still 1", n)
	}

	small := connectortest.NewKernel()
	small.SetCapacity(64)
	if cs := dial(t, small, nil); cs.Coalescing() {
		t.Error("coalescing on with a 64-datagram queue")
	}
}

// TestCoalesceAlways: with Config.Coalesce set, every read that returned
// events but not a full batch makes the next read wait, at any rate; a
// full batch does not (a backlog drains at full speed). With a negative
// Coalesce no read waits, even under load.
func TestCoalesceAlways(t *testing.T) {
	k := connectortest.NewKernel()
	c := dial(t, k, &connector.Config{Coalesce: time.Millisecond})
	if !c.Coalescing() {
		t.Fatal("Coalesce 1 ms: not coalescing")
	}
	read := newFeeder(t, k, c).read
	read(1, time.Second) // 1 event a second
	if n := c.Coalesced(); n != 0 {
		t.Fatalf("%d waits before the first read, want 0", n)
	}
	read(1, time.Second)
	read(1, time.Second)
	if n := c.Coalesced(); n != 2 {
		t.Fatalf("%d waits after two reads of one event a second apart, want 2", n)
	}
	read(64, 0) // waited (after a read of 1); a full batch
	read(3, 0)  // so this one did not wait
	if n := c.Coalesced(); n != 3 {
		t.Fatalf("%d waits after a full batch, want 3", n)
	}

	k2 := connectortest.NewKernel()
	never := dial(t, k2, &connector.Config{Coalesce: -1})
	if never.Coalescing() {
		t.Fatal("Coalesce < 0: coalescing")
	}
	readNever := newFeeder(t, k2, never).read
	for range 5 {
		readNever(40, 0) // 40 at once, again and again: load
	}
	if n := never.Coalesced(); n != 0 {
		t.Fatalf("Coalesce < 0: %d waits under load, want 0", n)
	}
}

// feeder emits forks into a fake kernel and reads them back through a
// Conn whose clock it moves.
type feeder struct {
	t     *testing.T
	k     *connectortest.Kernel
	c     *connector.Conn
	clock time.Time
	pid   int32
	buf   []connector.Event
}

func newFeeder(t *testing.T, k *connectortest.Kernel, c *connector.Conn) *feeder {
	f := &feeder{t: t, k: k, c: c, clock: time.Unix(1000, 0), pid: 100, buf: make([]connector.Event, 0, connector.MaxBatch)}
	c.SetClock(func() time.Time { return f.clock })
	return f
}

// read emits events forks, moves the clock by over, and reads them all
// with one Receive.
func (f *feeder) read(events int, over time.Duration) {
	f.t.Helper()
	for range events {
		f.pid++
		f.k.Emit(fork(1, f.pid))
	}
	f.clock = f.clock.Add(over)
	if got, err := f.c.Receive(f.buf); err != nil || len(got) != events {
		f.t.Fatalf("Receive = %d events, %v; want %d", len(got), err, events)
	}
}
