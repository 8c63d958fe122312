package connector_test

import (
	"errors"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/process-watchman/watchman/connector"
	"github.com/process-watchman/watchman/connector/connectortest"
)

func mark(token uint32) connector.Event {
	return connector.Event{What: connector.WhatMark, Ack: token}
}

func TestMarkOrderedWithEvents(t *testing.T) {
	k := connectortest.NewKernel()
	c := dial(t, k, nil)
	if !c.CanMark() {
		t.Fatal("CanMark = false on a privileged fake socket")
	}
	base := c.Stats()
	k.Emit(fork(1, 2), fork(2, 3))
	if err := c.Mark(7); err != nil {
		t.Fatal(err)
	}
	k.Emit(exit(3, 0))
	if err := c.Mark(8); err != nil {
		t.Fatal(err)
	}
	if err := c.Mark(8); err != nil { // tokens need not be unique
		t.Fatal(err)
	}
	k.Emit(exit(2, 256))
	got := receive(t, c, 7)
	want := []connector.Event{fork(1, 2), fork(2, 3), mark(7), exit(3, 0), mark(8), mark(8), exit(2, 256)}
	if diff := cmp.Diff(want, got, ignoreSeq); diff != "" {
		t.Errorf("events (-want +got):\n%s", diff)
	}
	st := c.Stats()
	if st.Marks-base.Marks != 3 || st.Received-base.Received != 4 || st.Spoofed != base.Spoofed || st.Filtered != base.Filtered {
		t.Errorf("stats %+v -> %+v, want 3 more marks, 4 more events, nothing spoofed or filtered", base, st)
	}
}

func TestMarkIgnoresTheEventMask(t *testing.T) {
	k := connectortest.NewKernel()
	c := dial(t, k, &connector.Config{Events: connector.WhatExec})
	if err := c.Mark(3); err != nil {
		t.Fatal(err)
	}
	if got := receive(t, c, 1); got[0] != mark(3) {
		t.Errorf("got %+v, want the marker", got)
	}
	for _, r := range k.Requests() {
		if r.Events&connector.WhatMark != 0 {
			t.Errorf("WhatMark sent to the kernel: %+v", r)
		}
	}
	if _, err := k.Dial(&connector.Config{Events: connector.WhatMark}); err == nil {
		t.Error("Config.Events accepted WhatMark")
	}
}

func TestMarkRefusedWhenUnprivileged(t *testing.T) {
	k := connectortest.NewKernel()
	k.SetUnprivileged(true)
	c := dial(t, k, nil)
	if c.CanMark() {
		t.Fatal("CanMark = true on an unprivileged socket")
	}
	err := c.Mark(1)
	if !errors.Is(err, connector.ErrPermission) {
		t.Fatalf("Mark = %v, want ErrPermission", err)
	}
	if k.Queued() != 0 {
		t.Errorf("%d datagrams queued by a refused Mark", k.Queued())
	}
	// The Conn works without markers.
	k.Emit(fork(1, 2))
	if got := receive(t, c, 1); got[0].PID != 2 {
		t.Errorf("got %+v", got)
	}
}

func TestMarkQueueFullAndClosed(t *testing.T) {
	k := connectortest.NewKernel()
	k.SetCapacity(4)
	c := dial(t, k, nil)
	k.Emit(fork(1, 2), fork(1, 3), fork(1, 4), fork(1, 5))
	if err := c.Mark(1); !errors.Is(err, connector.ErrQueueFull) {
		t.Errorf("Mark on a full queue = %v, want ErrQueueFull", err)
	}
	receive(t, c, 4)
	if err := c.Mark(2); err != nil {
		t.Errorf("Mark after draining = %v", err)
	}
	if got := receive(t, c, 1); got[0] != mark(2) {
		t.Errorf("got %+v, want mark 2", got)
	}
	_ = c.Close()
	if err := c.Mark(3); !errors.Is(err, connector.ErrClosed) {
		t.Errorf("Mark after Close = %v, want ErrClosed", err)
	}
}

// spySocket records what a Conn sends to itself.
type spySocket struct {
	*connectortest.Kernel
	sent [][]byte
}

func (s *spySocket) SendToSelf(msg []byte) error {
	s.sent = append(s.sent, append([]byte(nil), msg...))
	return s.Kernel.SendToSelf(msg)
}

// TestForgedMarkIsSpoofed replays another Conn's marker (another nonce),
// from this Conn's own port and from others: none is returned.
func TestForgedMarkIsSpoofed(t *testing.T) {
	k := connectortest.NewKernel()
	c := dial(t, k, nil)

	spy := &spySocket{Kernel: connectortest.NewKernel()}
	oc, err := connector.NewConn(spy, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer oc.Close()
	if err := oc.Mark(5); err != nil {
		t.Fatal(err)
	}
	if len(spy.sent) != 2 { // the subscription's probe and Mark(5)
		t.Fatalf("other Conn sent %d markers, want 2", len(spy.sent))
	}
	forged := spy.sent[1]
	if oc.PortID() != c.PortID() {
		t.Fatalf("port ids differ: %d, %d", oc.PortID(), c.PortID())
	}
	zeroNonce := append([]byte(nil), forged...)
	clear(zeroNonce[52:])

	base := c.Stats()
	k.EmitRaw(c.PortID(), forged)      // own port, another Conn's nonce
	k.EmitRaw(c.PortID(), zeroNonce)   // own port, zero nonce
	k.EmitRaw(c.PortID(), forged[:40]) // own port, truncated
	k.EmitRaw(4242, forged)            // another port
	k.EmitRaw(0, forged)               // the kernel's port, but a user nlmsg pid
	if err := c.Mark(6); err != nil {
		t.Fatal(err)
	}
	got := receive(t, c, 1)
	if diff := cmp.Diff([]connector.Event{mark(6)}, got); diff != "" {
		t.Errorf("events (-want +got):\n%s", diff)
	}
	st := c.Stats()
	if st.Spoofed-base.Spoofed != 5 || st.Marks-base.Marks != 1 || st.Filtered != base.Filtered {
		t.Errorf("Spoofed +%d, Filtered +%d, Marks +%d; want +5, +0, +1", st.Spoofed-base.Spoofed, st.Filtered-base.Filtered, st.Marks-base.Marks)
	}
}
