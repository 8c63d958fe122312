package connector_test

import (
	"errors"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/process-watchman/watchman/connector"
	"github.com/process-watchman/watchman/connector/connectortest"
)

func TestNoENOBUFSDropsAreReportedAndDeliveryGoesOn(t *testing.T) {
	k := connectortest.NewKernel()
	k.SetCapacity(8)
	c := dial(t, k, &connector.Config{NoENOBUFS: true})
	if !k.NoENOBUFS() {
		t.Fatal("NETLINK_NO_ENOBUFS not set")
	}
	for i := range 20 {
		k.Emit(fork(1, int32(100+i)))
	}
	buf := make([]connector.Event, 0, connector.MaxBatch)
	got, err := c.Receive(buf)
	var de *connector.DropError
	if !errors.Is(err, connector.ErrOverrun) || !errors.As(err, &de) || de.Dropped != 12 {
		t.Fatalf("Receive = %d events, %v; want a *DropError of 12 matching ErrOverrun", len(got), err)
	}
	// The batch is bounded by the queue's capacity (8 datagrams of
	// DatagramTruesize): 7, then the last one.
	if len(got) != 7 || got[0].PID != 100 {
		t.Errorf("first batch = %+v, want the 7 oldest events", got)
	}
	got, err = c.Receive(got)
	if err != nil || len(got) != 8 || got[7].PID != 107 {
		t.Fatalf("second Receive = %d events, %v; want the 8th, no error", len(got), err)
	}
	// Delivery goes on at once: no ENOBUFS, no deaf period.
	k.Emit(exit(100, 0))
	if err := c.Mark(1); err != nil {
		t.Fatal(err)
	}
	got = receive(t, c, 2)
	if diff := cmp.Diff([]connector.Event{exit(100, 0), mark(1)}, got, ignoreSeq); diff != "" {
		t.Errorf("after the drops (-want +got):\n%s", diff)
	}
	if st := c.Stats(); st.Dropped != 12 || st.Overruns != 0 {
		t.Errorf("Dropped = %d, Overruns = %d; want 12 and 0", st.Dropped, st.Overruns)
	}
}

// burstAfterFirstRead emits a burst right after the subscription's first
// read, while NewConn has not returned yet.
type burstAfterFirstRead struct {
	*connectortest.Kernel
	burst int
}

func (b *burstAfterFirstRead) ReadBatch(ds []connector.Datagram) (int, error) {
	n, err := b.Kernel.ReadBatch(ds)
	for ; b.burst > 0; b.burst-- {
		b.Emit(fork(1, int32(1000+b.burst)))
	}
	return n, err
}

func TestNoENOBUFSDropsDuringSubscription(t *testing.T) {
	k := connectortest.NewKernel()
	k.SetCapacity(4)
	c, err := connector.NewConn(&burstAfterFirstRead{Kernel: k, burst: 10}, &connector.Config{NoENOBUFS: true})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	got, err := c.Receive(nil)
	var de *connector.DropError
	if !errors.As(err, &de) || de.Dropped != 6 || len(got) != 0 {
		t.Fatalf("first Receive = %+v, %v; want the 6 drops of the subscription", got, err)
	}
	if got := receive(t, c, 4); got[0].PID != 1010 {
		t.Errorf("then %+v, want the 4 events that fit", got)
	}
	if st := c.Stats(); st.Dropped != 6 {
		t.Errorf("Stats.Dropped = %d, want 6", st.Dropped)
	}
}

// TestENOBUFSCongestionOnFake checks the fake kernel's default overrun:
// ENOBUFS once, then deaf until a read empties the queue.
func TestENOBUFSCongestionOnFake(t *testing.T) {
	k := connectortest.NewKernel()
	k.SetCapacity(4)
	c := dial(t, k, nil)
	for i := range 6 {
		k.Emit(fork(1, int32(10+i)))
	}
	buf := make([]connector.Event, 0, 2)
	if _, err := c.Receive(buf); !errors.Is(err, connector.ErrOverrun) {
		t.Fatalf("Receive = %v, want ErrOverrun", err)
	}
	got, _ := c.Receive(buf)        // two of the four queued
	k.Emit(fork(1, 20))             // dropped: congested until drained
	got2, _ := c.Receive(buf[:0:2]) // the other two: drained
	k.Emit(fork(1, 21))
	got3 := receive(t, c, 1)
	if len(got) != 2 || len(got2) != 2 || got3[0].PID != 21 {
		t.Errorf("batches %+v, %+v, %+v; want 2 + 2 old events, then only pid 21", got, got2, got3)
	}
	if mi, _ := c.MemInfo(); mi.Drops != 3 {
		t.Errorf("Drops = %d, want 3", mi.Drops)
	}
}

// memInfoCounter counts SO_MEMINFO reads.
type memInfoCounter struct {
	*connectortest.Kernel
	calls int
}

func (m *memInfoCounter) MemInfo() (connector.MemInfo, error) {
	m.calls++
	return m.Kernel.MemInfo()
}

// TestDropCounterReadOnlyUnderLoad checks the cost rule of NoENOBUFS: the
// drop counter is read after a full batch and after the first batch that
// follows one, never while reads return partial batches.
func TestDropCounterReadOnlyUnderLoad(t *testing.T) {
	k := connectortest.NewKernel()
	m := &memInfoCounter{Kernel: k}
	c, err := connector.NewConn(m, &connector.Config{NoENOBUFS: true})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	base := m.calls
	buf := make([]connector.Event, 0, connector.MaxBatch)
	for i := range 10 { // a listener that keeps up
		k.Emit(fork(1, int32(i+2)))
		if got, err := c.Receive(buf); err != nil || len(got) != 1 {
			t.Fatalf("Receive = %d events, %v", len(got), err)
		}
	}
	if m.calls != base {
		t.Fatalf("%d SO_MEMINFO reads for partial batches, want 0", m.calls-base)
	}
	for i := range connector.MaxBatch + 1 {
		k.Emit(fork(1, int32(i+100)))
	}
	for _, want := range []struct{ events, calls int }{
		{connector.MaxBatch, 1}, // full
		{1, 2},                  // the first partial one after a full one
	} {
		got, err := c.Receive(buf)
		if err != nil || len(got) != want.events || m.calls-base != want.calls {
			t.Fatalf("Receive = %d events, %v, after %d reads; want %d events, %d reads", len(got), err, m.calls-base, want.events, want.calls)
		}
	}
	k.Emit(fork(1, 999))
	if _, err := c.Receive(buf); err != nil || m.calls-base != 2 {
		t.Errorf("a partial batch after a partial one read the counter (%d reads), %v", m.calls-base, err)
	}
}
