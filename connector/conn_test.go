package connector_test

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"os"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"go.uber.org/goleak"

	"github.com/process-watchman/watchman/connector"
	"github.com/process-watchman/watchman/connector/connectortest"
)

func TestMain(m *testing.M) {
	if os.Getenv(helperEnv) != "" {
		os.Exit(runHelper())
	}
	goleak.VerifyTestMain(m)
}

// helperEnv makes the test binary, re-executed by a test, run runHelper
// instead of the tests.
const helperEnv = "CONNECTOR_TEST_HELPER"

// runHelper dials and prints the outcome: "ok" or the error and its kinds.
// In mode "mark" it then reports CanMark and what Mark returns.
func runHelper() int {
	if code, ok := runProcessHelper(os.Getenv(helperEnv)); ok {
		return code
	}
	if code, ok := connector.RunReaderHelper(os.Getenv(helperEnv)); ok {
		return code
	}
	c, err := connector.Dial(&connector.Config{AckTimeout: 2 * time.Second})
	if err != nil {
		fmt.Printf("error notsupported=%v permission=%v: %v\n",
			errors.Is(err, connector.ErrNotSupported), errors.Is(err, connector.ErrPermission), err)
		return 0
	}
	switch os.Getenv(helperEnv) {
	case "mark":
		err := c.Mark(1)
		fmt.Printf("canmark=%v permission=%v: %v\n", c.CanMark(), errors.Is(err, connector.ErrPermission), err)
	case "forkstarts":
		forkStartsHelper(c)
	case "tree":
		f, err := c.AttachTreeFilter(16)
		fmt.Printf("tree permission=%v notsupported=%v: %v\n", errors.Is(err, connector.ErrPermission), errors.Is(err, connector.ErrNotSupported), err)
		if f != nil {
			_ = f.Close()
		}
	default:
		fmt.Println("ok")
	}
	if err := c.Close(); err != nil {
		fmt.Println("close:", err)
		return 1
	}
	return 0
}

func fork(parent, child int32) connector.Event {
	return connector.Event{What: connector.WhatFork, ParentPID: parent, ParentTGID: parent, PID: child, TGID: child}
}

func exit(pid int32, status uint32) connector.Event {
	return connector.Event{What: connector.WhatExit, PID: pid, TGID: pid, ExitStatus: status, ExitSignal: 17, ParentPID: 1, ParentTGID: 1}
}

func dial(t *testing.T, k *connectortest.Kernel, cfg *connector.Config) *connector.Conn {
	t.Helper()
	c, err := k.Dial(cfg)
	if err != nil {
		t.Fatalf("Dial: %v", err)
	}
	t.Cleanup(func() { _ = c.Close() })
	return c
}

// receive reads until n events arrived, failing after a generous
// deadline instead of hanging.
func receive(t *testing.T, c *connector.Conn, n int) []connector.Event {
	t.Helper()
	if err := c.SetReadDeadline(time.Now().Add(10 * time.Second)); err != nil {
		t.Fatal(err)
	}
	var got []connector.Event
	for len(got) < n {
		var err error
		got, err = c.Receive(got)
		if err != nil {
			t.Fatalf("Receive after %d of %d events: %v", len(got), n, err)
		}
	}
	return got
}

// ignoreSeq compares events without the sequence numbers the fake assigns.
var ignoreSeq = cmp.FilterPath(func(p cmp.Path) bool { return p.Last().String() == ".Seq" }, cmp.Ignore())

func TestDialSubscribesAndCloseUnsubscribes(t *testing.T) {
	k := connectortest.NewKernel()
	c, err := k.Dial(nil)
	if err != nil {
		t.Fatalf("Dial: %v", err)
	}
	if got := k.ReadBuffer(); got != connector.DefaultReadBuffer {
		t.Errorf("read buffer = %d, want %d", got, connector.DefaultReadBuffer)
	}
	if got := c.Events(); got != connector.DefaultEvents {
		t.Errorf("Events() = %v, want %v", got, connector.DefaultEvents)
	}
	if got := c.PortID(); got != connectortest.DefaultPortID {
		t.Errorf("PortID() = %d, want %d", got, connectortest.DefaultPortID)
	}
	reqs := k.Requests()
	if len(reqs) != 2 {
		t.Fatalf("requests = %+v, want LISTEN then LISTEN with a filter", reqs)
	}
	if reqs[0].Op != connector.OpListen || reqs[0].Len != 4 {
		t.Errorf("first request = %+v, want a 4-byte LISTEN", reqs[0])
	}
	if reqs[1].Op != connector.OpListen || reqs[1].Len != 8 || reqs[1].Events != connector.DefaultEvents {
		t.Errorf("second request = %+v, want a proc_input LISTEN for %v", reqs[1], connector.DefaultEvents)
	}
	if st := c.Stats(); st.Acks != 1 {
		t.Errorf("Acks = %d, want 1 (the second LISTEN's ack is filtered by the kernel)", st.Acks)
	}

	if err := c.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if err := c.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
	reqs = k.Requests()
	if last := reqs[len(reqs)-1]; len(reqs) != 3 || last.Op != connector.OpIgnore {
		t.Errorf("requests after Close = %+v, want a final IGNORE", reqs)
	}
	if !k.Closed() {
		t.Error("socket not closed")
	}
	if _, err := c.Receive(nil); !errors.Is(err, connector.ErrClosed) || !errors.Is(err, net.ErrClosed) {
		t.Errorf("Receive after Close = %v, want ErrClosed", err)
	}
}

func TestDialAllEventsSendsNoFilter(t *testing.T) {
	k := connectortest.NewKernel()
	c := dial(t, k, &connector.Config{Events: connector.WhatAll, ReadBuffer: -1})
	if reqs := k.Requests(); len(reqs) != 1 {
		t.Errorf("requests = %+v, want one plain LISTEN", reqs)
	}
	if got := k.ReadBuffer(); got != 0 {
		t.Errorf("read buffer set to %d with ReadBuffer < 0", got)
	}
	k.Emit(connector.Event{What: connector.WhatUID, PID: 3, TGID: 3, RUID: 1000})
	if got := receive(t, c, 1); got[0].What != connector.WhatUID || got[0].RUID != 1000 {
		t.Errorf("got %+v", got)
	}
}

func TestAckMatchingIgnoresForeignAcks(t *testing.T) {
	k := connectortest.NewKernel()
	k.SetListen(connectortest.ListenBehavior{ForeignAcks: 3})
	c := dial(t, k, nil)
	if st := c.Stats(); st.Acks != 4 || st.Received != 0 {
		t.Errorf("stats = %+v, want 4 acks and no events", st)
	}
	k.Emit(fork(1, 2))
	got := receive(t, c, 1)
	if diff := cmp.Diff([]connector.Event{fork(1, 2)}, got, ignoreSeq); diff != "" {
		t.Errorf("events (-want +got):\n%s", diff)
	}
}

func TestEventsBeforeAckAreKept(t *testing.T) {
	k := connectortest.NewKernel()
	before := []connector.Event{
		fork(1, 10),
		{What: connector.WhatUID, PID: 10, TGID: 10}, // outside the mask
		{What: connector.WhatExec, PID: 10, TGID: 10},
	}
	k.SetListen(connectortest.ListenBehavior{Before: before, ForeignAcks: 1})
	c := dial(t, k, nil)
	k.Emit(exit(10, 0))
	got := receive(t, c, 3)
	want := []connector.Event{before[0], before[2], exit(10, 0)}
	if diff := cmp.Diff(want, got, ignoreSeq); diff != "" {
		t.Errorf("events (-want +got):\n%s", diff)
	}
	if st := c.Stats(); st.Filtered != 1 || st.Received != 3 {
		t.Errorf("stats = %+v, want Filtered 1, Received 3", st)
	}
}

func TestAckTimeout(t *testing.T) {
	k := connectortest.NewKernel()
	k.SetListen(connectortest.ListenBehavior{Silent: true})
	k.Emit(fork(1, 2)) // events do not stand in for the ack
	_, err := k.Dial(&connector.Config{AckTimeout: 20 * time.Millisecond})
	if !errors.Is(err, connector.ErrNotSupported) || errors.Is(err, connector.ErrPermission) {
		t.Fatalf("Dial = %v, want ErrNotSupported", err)
	}
	if !k.Closed() {
		t.Error("NewConn did not close the socket after failing")
	}
}

// TestAckLostToOverrun: on a busy host a small queue can fill before the
// kernel's acknowledgement of LISTEN is queued, which is then dropped.
// Events reached the socket, so the connector works: Dial succeeds, and
// the first Receive reports the drop with the events that fit. A kernel
// that stays silent without dropping anything is still ErrNotSupported
// (TestAckTimeout).
func TestAckLostToOverrun(t *testing.T) {
	for _, noENOBUFS := range []bool{true, false} {
		k := connectortest.NewKernel()
		k.SetCapacity(4)
		var before []connector.Event
		for i := range 10 {
			before = append(before, fork(1, int32(100+i)))
		}
		k.SetListen(connectortest.ListenBehavior{Before: before})
		c, err := k.Dial(&connector.Config{AckTimeout: 20 * time.Millisecond, NoENOBUFS: noENOBUFS})
		if err != nil {
			t.Fatalf("NoENOBUFS %v: Dial = %v, want success: the acknowledgement was lost to an overrun", noENOBUFS, err)
		}
		evs, err := c.Receive(make([]connector.Event, 0, connector.MaxBatch))
		if !errors.Is(err, connector.ErrOverrun) || len(evs) != 4 {
			t.Errorf("NoENOBUFS %v: first Receive = %d events, %v; want the 4 that fit and ErrOverrun", noENOBUFS, len(evs), err)
		}
		c.Close()
	}
}

// forger is a socket on which a user-space process answers every request
// with a forged acknowledgement carrying the right ack number.
type forger struct{ *connectortest.Kernel }

func (f forger) Send(p []byte) error {
	ack := connector.Event{What: connector.WhatNone, Ack: binary.NativeEndian.Uint32(p[12:]) + 1}
	f.EmitRaw(4242, connectortest.EncodeMessage(ack))
	msg := connectortest.EncodeMessage(ack)
	connectortest.PutHeader(msg, uint32(len(msg)), 0, 4242) // kernel source port, forged nlmsg pid
	f.EmitRaw(0, msg)
	return f.Kernel.Send(p)
}

func TestForgedAckIsNotAccepted(t *testing.T) {
	k := connectortest.NewKernel()
	k.SetListen(connectortest.ListenBehavior{Silent: true})
	_, err := connector.NewConn(forger{k}, &connector.Config{AckTimeout: 20 * time.Millisecond})
	if !errors.Is(err, connector.ErrNotSupported) {
		t.Fatalf("NewConn with forged acks only = %v, want ErrNotSupported", err)
	}
}

func TestAckError(t *testing.T) {
	k := connectortest.NewKernel()
	k.SetListen(connectortest.ListenBehavior{Err: uint32(syscall.EPERM)})
	_, err := k.Dial(nil)
	for _, target := range []error{connector.ErrPermission, connector.ErrNotSupported, os.ErrPermission} {
		if !errors.Is(err, target) {
			t.Errorf("Dial = %v, does not match %v", err, target)
		}
	}
	var op *connector.OpError
	if !errors.As(err, &op) || op.Op != "listen" {
		t.Errorf("Dial error %#v is not a listen *OpError", err)
	}
}

func TestInvalidEvents(t *testing.T) {
	k := connectortest.NewKernel()
	if _, err := k.Dial(&connector.Config{Events: 0x400}); err == nil {
		t.Fatal("Dial accepted an unknown event bit")
	}
	if !k.Closed() || len(k.Requests()) != 0 {
		t.Error("socket not closed, or requests sent, after a config error")
	}
}

func TestFilter(t *testing.T) {
	for _, legacy := range []bool{false, true} {
		name := "kernel 6.6+"
		if legacy {
			name = "kernel before 6.6"
		}
		t.Run(name, func(t *testing.T) {
			k := connectortest.NewKernel()
			k.SetLegacy(legacy)
			c := dial(t, k, &connector.Config{Events: connector.WhatFork | connector.WhatNonzeroExit})
			k.Emit(
				fork(1, 2),
				connector.Event{What: connector.WhatExec, PID: 2, TGID: 2},
				exit(2, 0),
				connector.Event{What: connector.WhatComm, PID: 2, TGID: 2},
				exit(3, 256),
				exit(4, 9),
			)
			got := receive(t, c, 3)
			want := []connector.Event{fork(1, 2), exit(3, 256), exit(4, 9)}
			if diff := cmp.Diff(want, got, ignoreSeq); diff != "" {
				t.Errorf("events (-want +got):\n%s", diff)
			}
			st := c.Stats()
			wantFiltered := uint64(0) // the fake kernel filtered them
			if legacy {
				wantFiltered = 3
			}
			if st.Filtered != wantFiltered {
				t.Errorf("Filtered = %d, want %d", st.Filtered, wantFiltered)
			}
			if legacy && len(k.Requests()) != 1 {
				t.Errorf("a legacy kernel recorded %+v", k.Requests())
			}
		})
	}
}

func TestSpoofedAndMalformedAreDropped(t *testing.T) {
	k := connectortest.NewKernel()
	c := dial(t, k, nil)
	base := c.Stats()

	good := connectortest.EncodeMessage(fork(1, 99))
	withPID := connectortest.EncodeMessage(fork(1, 98))
	connectortest.PutHeader(withPID, uint32(len(withPID)), 0, 31337)
	foreignIdx := connectortest.EncodeMessage(fork(1, 97))
	binary.NativeEndian.PutUint32(foreignIdx[16:], 5) // cn_msg.idx
	wrongType := connectortest.EncodeMessage(fork(1, 96))
	binary.NativeEndian.PutUint16(wrongType[4:], 2) // NLMSG_ERROR
	longLen := connectortest.EncodeMessage(fork(1, 95))
	binary.NativeEndian.PutUint32(longLen[0:], 200) // nlmsg_len beyond the datagram
	shortCn := connectortest.EncodeMessage(fork(1, 94))
	binary.NativeEndian.PutUint16(shortCn[32:], 8) // cn_msg.len 8: then 32 stray bytes
	huge := make([]byte, connector.DatagramSize+100)
	copy(huge, good)

	k.EmitRaw(4242, good)                // user-space sender
	k.EmitRaw(0, withPID)                // kernel port, forged nlmsg pid
	k.EmitRaw(0, foreignIdx)             // another connector
	k.EmitRaw(0, wrongType)              // another message type
	k.EmitRaw(0, good[:10])              // shorter than nlmsghdr
	k.EmitRaw(0, longLen)                // inconsistent nlmsg_len
	k.EmitRaw(0, good[:60])              // nlmsg_len beyond the datagram
	k.EmitRaw(0, shortCn)                // inconsistent cn_msg.len
	k.EmitRaw(0, huge)                   // truncated by the receive slot
	k.Emit(connector.Event{What: 0x400}) // unknown type, in no mask
	k.Emit(exit(99, 0))

	got := receive(t, c, 1)
	if diff := cmp.Diff([]connector.Event{exit(99, 0)}, got, ignoreSeq); diff != "" {
		t.Errorf("events (-want +got):\n%s", diff)
	}
	st := c.Stats()
	delta := connector.Stats{
		Datagrams: st.Datagrams - base.Datagrams,
		Received:  st.Received - base.Received,
		Spoofed:   st.Spoofed - base.Spoofed,
		Foreign:   st.Foreign - base.Foreign,
		Malformed: st.Malformed - base.Malformed,
		Filtered:  st.Filtered - base.Filtered,
	}
	// The unknown type never reaches the socket: the kernel filter drops it.
	want := connector.Stats{Datagrams: 10, Received: 1, Spoofed: 2, Foreign: 2, Malformed: 5}
	if diff := cmp.Diff(want, delta); diff != "" {
		t.Errorf("stats delta (-want +got):\n%s", diff)
	}
}

func TestSeveralMessagesInOneDatagram(t *testing.T) {
	k := connectortest.NewKernel()
	c := dial(t, k, nil)
	a := connectortest.EncodeMessage(fork(1, 2))
	b := connectortest.EncodeMessage(exit(2, 0))
	k.EmitRaw(0, append(append([]byte{}, a...), b...))
	got := receive(t, c, 2)
	if diff := cmp.Diff([]connector.Event{fork(1, 2), exit(2, 0)}, got, ignoreSeq); diff != "" {
		t.Errorf("events (-want +got):\n%s", diff)
	}
	if st := c.Stats(); st.Malformed != 0 {
		t.Errorf("Malformed = %d", st.Malformed)
	}
}

func TestOverrunIsReportedAndStreamContinues(t *testing.T) {
	k := connectortest.NewKernel()
	c := dial(t, k, nil)
	k.Emit(fork(1, 2), fork(1, 3))
	k.Overrun()
	buf := make([]connector.Event, 0, 8)
	got, err := c.Receive(buf)
	if !errors.Is(err, connector.ErrOverrun) {
		t.Fatalf("Receive = %v, %v; want ErrOverrun", got, err)
	}
	if st := c.Stats(); st.Overruns != 1 {
		t.Errorf("Overruns = %d, want 1", st.Overruns)
	}
	k.Emit(exit(2, 0))
	got = receive(t, c, 3)
	want := []connector.Event{fork(1, 2), fork(1, 3), exit(2, 0)}
	if diff := cmp.Diff(want, got, ignoreSeq); diff != "" {
		t.Errorf("events after the overrun (-want +got):\n%s", diff)
	}
}

func TestOverrunDuringSubscription(t *testing.T) {
	k := connectortest.NewKernel()
	k.SetListen(connectortest.ListenBehavior{Before: []connector.Event{fork(1, 2)}})
	k.Overrun()
	c := dial(t, k, nil)
	got, err := c.Receive(nil)
	if !errors.Is(err, connector.ErrOverrun) {
		t.Fatalf("first Receive = %v, %v; want ErrOverrun", got, err)
	}
	if diff := cmp.Diff([]connector.Event{fork(1, 2)}, got, ignoreSeq); diff != "" {
		t.Errorf("events (-want +got):\n%s", diff)
	}
}

func TestReceiveRespectsCapacity(t *testing.T) {
	k := connectortest.NewKernel()
	c := dial(t, k, nil)
	for i := range 10 {
		k.Emit(fork(1, int32(100+i)))
	}
	buf := make([]connector.Event, 0, 3)
	got, err := c.Receive(buf)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 3 || cap(got) != 3 || &got[0] != &buf[:1][0] {
		t.Errorf("Receive returned %d events, cap %d, same array %v; want 3 in buf", len(got), cap(got), &got[0] == &buf[:1][0])
	}
	got, err = c.Receive(got[:3:3]) // no spare capacity: one datagram, appended
	if err != nil || len(got) != 4 || got[3].PID != 103 {
		t.Errorf("Receive on a full slice = %d events, %v", len(got), err)
	}
	if k.Queued() != 6 {
		t.Errorf("%d datagrams left, want 6", k.Queued())
	}
}

func TestReceiveDeadline(t *testing.T) {
	k := connectortest.NewKernel()
	c := dial(t, k, nil)
	if err := c.SetReadDeadline(time.Now().Add(-time.Second)); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Receive(nil); !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("Receive = %v, want a deadline error", err)
	}
	_ = c.SetReadDeadline(time.Time{})
	k.Emit(fork(1, 2))
	if got := receive(t, c, 1); got[0].PID != 2 {
		t.Errorf("after the deadline: %+v", got)
	}
}

func TestCloseUnblocksReceive(t *testing.T) {
	k := connectortest.NewKernel()
	c, err := k.Dial(nil)
	if err != nil {
		t.Fatal(err)
	}
	errc := make(chan error, 1)
	go func() {
		_, err := c.Receive(nil)
		errc <- err
	}()
	// Close either interrupts the blocked Receive or precedes it; both
	// must yield ErrClosed.
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	if err := <-errc; !errors.Is(err, connector.ErrClosed) {
		t.Fatalf("Receive = %v, want ErrClosed", err)
	}
}

// bareSocket hides the fake kernel's optional methods (SendToSelf,
// MemInfo, SetNoENOBUFS), as a Socket that offers only the interface.
type bareSocket struct{ connector.Socket }

func TestSocketWithoutOptionalMethods(t *testing.T) {
	k := connectortest.NewKernel()
	c, err := connector.NewConn(bareSocket{k}, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := c.MemInfo(); !errors.Is(err, connector.ErrNotSupported) {
		t.Errorf("MemInfo without the method = %v, want ErrNotSupported", err)
	}
	if c.CanMark() {
		t.Error("CanMark without SendToSelf")
	}
	if err := c.Mark(1); !errors.Is(err, connector.ErrPermission) {
		t.Errorf("Mark without SendToSelf = %v, want ErrPermission", err)
	}
	if _, err := connector.NewConn(bareSocket{connectortest.NewKernel()}, &connector.Config{NoENOBUFS: true}); !errors.Is(err, connector.ErrNotSupported) {
		t.Errorf("NoENOBUFS without the methods = %v, want ErrNotSupported", err)
	}
}

func TestConcurrentEmitReceive(t *testing.T) {
	k := connectortest.NewKernel()
	c := dial(t, k, nil)
	const n = 2000
	var wg sync.WaitGroup
	wg.Go(func() {
		for i := range n {
			k.Emit(fork(1, int32(i+2)))
		}
	})
	got := receive(t, c, n)
	wg.Wait()
	for i, ev := range got {
		if ev.PID != int32(i+2) {
			t.Fatalf("event %d has pid %d, want %d (order lost)", i, ev.PID, i+2)
		}
	}
	if st := c.Stats(); st.Received != n {
		t.Errorf("Received = %d, want %d", st.Received, n)
	}
}

func TestPendingRespectsCapacity(t *testing.T) {
	k := connectortest.NewKernel()
	k.SetListen(connectortest.ListenBehavior{Before: []connector.Event{fork(1, 2), fork(1, 3), fork(1, 4)}})
	c := dial(t, k, nil)
	buf := make([]connector.Event, 0, 2)
	got, err := c.Receive(buf)
	if err != nil || len(got) != 2 || cap(got) != 2 {
		t.Fatalf("first Receive = %d events (cap %d), %v; want 2 within buf", len(got), cap(got), err)
	}
	got, err = c.Receive(buf[:0])
	if err != nil || len(got) != 1 || got[0].PID != 4 {
		t.Fatalf("second Receive = %+v, %v; want the third pending event", got, err)
	}
}
