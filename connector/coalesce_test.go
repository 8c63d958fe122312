package connector_test

import (
	"testing"

	"github.com/process-watchman/watchman/connector"
	"github.com/process-watchman/watchman/connector/connectortest"
)

// TestCoalesceOnlyUnderLoad: reads of fewer than 4 datagrams never wait;
// a read of 4 or more makes the next read wait once; a small buffer turns
// coalescing off.
func TestCoalesceOnlyUnderLoad(t *testing.T) {
	k := connectortest.NewKernel()
	c := dial(t, k, nil)
	if !c.Coalescing() {
		t.Fatal("coalescing off by default")
	}
	buf := make([]connector.Event, 0, connector.MaxBatch)
	pid := int32(100)
	emit := func(n int) {
		for range n {
			pid++
			k.Emit(fork(1, pid))
		}
	}
	for i := range 6 { // a listener that keeps up
		emit(1 + i%3)
		if _, err := c.Receive(buf); err != nil {
			t.Fatal(err)
		}
	}
	if n := c.Coalesced(); n != 0 {
		t.Fatalf("%d waits at low rate, want 0", n)
	}
	emit(5)
	if got, err := c.Receive(buf); err != nil || len(got) != 5 {
		t.Fatalf("Receive = %d events, %v", len(got), err)
	}
	emit(1)
	if _, err := c.Receive(buf); err != nil || c.Coalesced() != 1 {
		t.Fatalf("after a read of 5: %d waits, %v; want 1", c.Coalesced(), err)
	}
	emit(1)
	if _, err := c.Receive(buf); err != nil || c.Coalesced() != 1 {
		t.Fatalf("after a read of 1: %d waits, %v; want still 1", c.Coalesced(), err)
	}

	small := connectortest.NewKernel()
	small.SetCapacity(64)
	if cs := dial(t, small, nil); cs.Coalescing() {
		t.Error("coalescing on with a 64-datagram queue")
	}
}
