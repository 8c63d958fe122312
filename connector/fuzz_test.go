package connector_test

import (
	"errors"
	"testing"

	"github.com/process-watchman/watchman/connector"
	"github.com/process-watchman/watchman/connector/connectortest"
)

// FuzzDecode checks that Decode never panics, that every error is a
// *DecodeError matching exactly one sentinel, and that a decoded event
// survives a round trip through the connectortest encoder. The seed corpus
// is in testdata/fuzz/FuzzDecode.
func FuzzDecode(f *testing.F) {
	for _, ev := range []connector.Event{
		{What: connector.WhatFork, ParentPID: 1, ParentTGID: 1, PID: 2, TGID: 2},
		{What: connector.WhatExit, PID: 2, TGID: 2, ExitStatus: 256, ExitSignal: 17},
		{What: connector.WhatNone, Ack: 8, Err: 1},
	} {
		f.Add(connectortest.Encode(ev))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		var ev connector.Event
		err := connector.Decode(b, &ev)
		if err != nil {
			var de *connector.DecodeError
			if !errors.As(err, &de) {
				t.Fatalf("error %v is not a *DecodeError", err)
			}
			n := 0
			for _, s := range []error{connector.ErrTruncated, connector.ErrForeign, connector.ErrMalformed} {
				if errors.Is(err, s) {
					n++
				}
			}
			if n != 1 {
				t.Fatalf("error %v matches %d sentinels", err, n)
			}
			if ev != (connector.Event{}) {
				t.Fatalf("event not cleared after an error: %+v", ev)
			}
			return
		}
		if len(b) < connector.CnMsgLen+connector.ProcEventHeaderLen {
			t.Fatalf("accepted %d bytes", len(b))
		}
		var again connector.Event
		if err := connector.Decode(connectortest.Encode(ev), &again); err != nil {
			t.Fatalf("re-encoded event does not decode: %v", err)
		}
		if again != ev {
			t.Fatalf("round trip changed the event:\n%+v\n%+v", ev, again)
		}
	})
}

// FuzzReceive feeds arbitrary datagrams, from the kernel's port or not,
// through a Conn on the fake kernel: Receive must never panic, must return
// only events that pass the filter and came from port 0, and must go on
// to deliver the next well-formed event.
func FuzzReceive(f *testing.F) {
	f.Add(uint32(0), connectortest.EncodeMessage(connector.Event{What: connector.WhatExec, PID: 5, TGID: 5}))
	f.Add(uint32(9), connectortest.EncodeMessage(connector.Event{What: connector.WhatFork, PID: 5, TGID: 5}))
	f.Add(uint32(0), []byte{76, 0, 0, 0, 3, 0})
	f.Fuzz(func(t *testing.T, port uint32, b []byte) {
		k := connectortest.NewKernel()
		c, err := k.Dial(nil)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		k.EmitRaw(port, b)
		const marker = 0x7fff0000
		k.Emit(connector.Event{What: connector.WhatExit, PID: marker, TGID: marker})
		var got []connector.Event
		for len(got) == 0 || got[len(got)-1].PID != marker {
			got, err = c.Receive(got)
			if err != nil {
				t.Fatal(err)
			}
		}
		for _, ev := range got[:len(got)-1] {
			if port != 0 || ev.What&connector.DefaultEvents == 0 {
				t.Fatalf("delivered %+v from port %d", ev, port)
			}
		}
		st := c.Stats()
		if st.Received != uint64(len(got)) {
			t.Fatalf("Received = %d, returned %d", st.Received, len(got))
		}
	})
}
