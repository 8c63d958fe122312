package connectortest_test

import (
	"encoding/binary"
	"errors"
	"net"
	"os"
	"syscall"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/process-watchman/watchman/connector"
	"github.com/process-watchman/watchman/connector/connectortest"
)

func TestEncodeRoundTrip(t *testing.T) {
	comm := connector.Event{What: connector.WhatComm, PID: 3, TGID: 2}
	copy(comm.Comm[:], "kworker")
	for _, ev := range []connector.Event{
		{What: connector.WhatNone, Seq: 1, Ack: 2, Err: 22, CPU: 1, Timestamp: 5},
		{What: connector.WhatFork, ParentPID: 1, ParentTGID: 1, PID: 2, TGID: 2, Timestamp: 6},
		{What: connector.WhatExec, PID: 2, TGID: 2},
		{What: connector.WhatUID, PID: 2, TGID: 2, RUID: 1000, EUID: 0},
		{What: connector.WhatGID, PID: 2, TGID: 2, RGID: 100, EGID: 1000},
		{What: connector.WhatSID, PID: 2, TGID: 2},
		{What: connector.WhatPtrace, PID: 2, TGID: 2, TracerPID: 9, TracerTGID: 8},
		comm,
		{What: connector.WhatCoredump, PID: 2, TGID: 2, ParentPID: 1, ParentTGID: 1},
		{What: connector.WhatExit, PID: 2, TGID: 2, ExitStatus: 0x8b, ExitSignal: -1, ParentPID: 1, ParentTGID: 1},
		{What: 0x400, Seq: 77},
	} {
		t.Run(ev.What.String(), func(t *testing.T) {
			var got connector.Event
			if err := connector.Decode(connectortest.Encode(ev), &got); err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(ev, got); diff != "" {
				t.Errorf("round trip (-want +got):\n%s", diff)
			}
			msg := connectortest.EncodeMessage(ev)
			if len(msg) != connectortest.MessageLen || binary.NativeEndian.Uint32(msg) != connectortest.MessageLen {
				t.Errorf("message length %d, nlmsg_len %d", len(msg), binary.NativeEndian.Uint32(msg))
			}
			if err := connector.Decode(msg[16:], &got); err != nil || got != ev {
				t.Errorf("message payload decodes to %+v, %v", got, err)
			}
		})
	}
}

func slots(n int) []connector.Datagram {
	ds := make([]connector.Datagram, n)
	for i := range ds {
		ds[i].Buf = make([]byte, 128)
	}
	return ds
}

func control(op uint32, events connector.What, ack uint32) []byte {
	n := 4
	if events != 0 {
		n = 8
	}
	b := make([]byte, 20+n)
	ne := binary.NativeEndian
	ne.PutUint32(b[0:], 1)
	ne.PutUint32(b[4:], 1)
	ne.PutUint32(b[12:], ack)
	ne.PutUint16(b[16:], uint16(n))
	ne.PutUint32(b[20:], op)
	if n == 8 {
		ne.PutUint32(b[24:], uint32(events))
	}
	return b
}

func read(t *testing.T, k *connectortest.Kernel) []connector.Event {
	t.Helper()
	if err := k.SetReadDeadline(time.Now().Add(-time.Second)); err != nil {
		t.Fatal(err)
	}
	var out []connector.Event
	ds := slots(16)
	for {
		n, err := k.ReadBatch(ds)
		if errors.Is(err, os.ErrDeadlineExceeded) {
			return out
		}
		if err != nil {
			t.Fatal(err)
		}
		for _, d := range ds[:n] {
			var ev connector.Event
			if err := connector.Decode(d.Buf[16:d.N], &ev); err != nil {
				t.Fatal(err)
			}
			out = append(out, ev)
		}
	}
}

func TestKernelAnswersLikeCnProc(t *testing.T) {
	k := connectortest.NewKernel()
	// Plain LISTEN: acknowledged with ack+1.
	if err := k.Send(control(connector.OpListen, 0, 41)); err != nil {
		t.Fatal(err)
	}
	got := read(t, k)
	if len(got) != 1 || got[0].What != connector.WhatNone || got[0].Ack != 42 || got[0].Err != 0 {
		t.Fatalf("after LISTEN: %+v", got)
	}
	// A filter for forks: its own acknowledgement is filtered away.
	if err := k.Send(control(connector.OpListen, connector.WhatFork, 50)); err != nil {
		t.Fatal(err)
	}
	k.Emit(connector.Event{What: connector.WhatExec, PID: 2, TGID: 2}, connector.Event{What: connector.WhatFork, PID: 3, TGID: 3})
	if got := read(t, k); len(got) != 1 || got[0].What != connector.WhatFork {
		t.Fatalf("with a fork filter: %+v", got)
	}
	// An unknown op is acknowledged with EINVAL once everything passes.
	if err := k.Send(control(connector.OpListen, connector.WhatAll, 60)); err != nil {
		t.Fatal(err)
	}
	if err := k.Send(control(7, 0, 70)); err != nil {
		t.Fatal(err)
	}
	if got := read(t, k); len(got) != 2 || got[1].Ack != 71 || got[1].Err != uint32(syscall.EINVAL) {
		t.Fatalf("after op 7: %+v", got)
	}
	// IGNORE silences the socket.
	if err := k.Send(control(connector.OpIgnore, 0, 80)); err != nil {
		t.Fatal(err)
	}
	k.Emit(connector.Event{What: connector.WhatFork})
	if got := read(t, k); len(got) != 0 {
		t.Fatalf("after IGNORE: %+v", got)
	}
	want := []connector.What{connector.WhatAll, connector.WhatFork, connector.WhatAll, connector.WhatAll, connector.WhatAll}
	reqs := k.Requests()
	if len(reqs) != len(want) {
		t.Fatalf("requests %+v", reqs)
	}
	for i, r := range reqs {
		if r.Events != want[i] {
			t.Errorf("request %d events %v, want %v", i, r.Events, want[i])
		}
	}
}

func TestLegacyKernelIgnoresProcInput(t *testing.T) {
	k := connectortest.NewKernel()
	k.SetLegacy(true)
	if err := k.Send(control(connector.OpListen, connector.WhatFork, 1)); err != nil {
		t.Fatal(err)
	}
	if got := read(t, k); len(got) != 0 || len(k.Requests()) != 0 {
		t.Fatalf("legacy kernel answered a proc_input: %+v", got)
	}
	if err := k.Send(control(connector.OpListen, 0, 1)); err != nil {
		t.Fatal(err)
	}
	k.Emit(connector.Event{What: connector.WhatExec})
	if got := read(t, k); len(got) != 2 {
		t.Fatalf("legacy kernel after LISTEN: %+v", got)
	}
}

func TestKernelOverrunCloseAndTruncation(t *testing.T) {
	k := connectortest.NewKernel()
	k.EmitRaw(7, make([]byte, 300))
	k.Overrun()
	ds := slots(4)
	if _, err := k.ReadBatch(ds); !errors.Is(err, syscall.ENOBUFS) {
		t.Fatalf("ReadBatch after Overrun = %v, want ENOBUFS", err)
	}
	n, err := k.ReadBatch(ds)
	if err != nil || n != 1 || ds[0].N != 128 || !ds[0].Truncated || ds[0].Port != 7 {
		t.Fatalf("ReadBatch = %d, %v, %+v; want one truncated datagram from port 7", n, err, ds[0])
	}
	errc := make(chan error, 1)
	go func() {
		_, err := k.ReadBatch(ds)
		errc <- err
	}()
	if err := k.Close(); err != nil {
		t.Fatal(err)
	}
	if err := <-errc; !errors.Is(err, net.ErrClosed) {
		t.Errorf("blocked ReadBatch after Close = %v", err)
	}
	if err := k.Close(); !errors.Is(err, net.ErrClosed) {
		t.Errorf("second Close = %v", err)
	}
	if err := k.Send(control(connector.OpListen, 0, 1)); !errors.Is(err, net.ErrClosed) {
		t.Errorf("Send after Close = %v", err)
	}
}
