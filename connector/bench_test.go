package connector_test

import (
	"testing"

	"github.com/process-watchman/watchman/connector"
	"github.com/process-watchman/watchman/connector/connectortest"
)

func BenchmarkDecode(b *testing.B) {
	in := connectortest.Encode(connector.Event{
		What: connector.WhatExit, PID: 4242, TGID: 4242, ExitStatus: 256, ExitSignal: 17, ParentPID: 1, ParentTGID: 1,
	})
	var ev connector.Event
	b.ReportAllocs()
	b.SetBytes(int64(len(in)))
	for b.Loop() {
		if err := connector.Decode(in, &ev); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkReceive measures Receive on the fake kernel with full batches
// of MaxBatch datagrams; ns/event is the figure to read.
func BenchmarkReceive(b *testing.B) {
	k := connectortest.NewKernel()
	c, err := k.Dial(nil)
	if err != nil {
		b.Fatal(err)
	}
	defer c.Close()
	msg := connectortest.EncodeMessage(connector.Event{What: connector.WhatFork, ParentPID: 1, ParentTGID: 1, PID: 2, TGID: 2})
	buf := make([]connector.Event, 0, connector.MaxBatch)
	b.ReportAllocs()
	events := 0
	for b.Loop() {
		for range connector.MaxBatch {
			k.EmitRaw(0, msg)
		}
		evs, err := c.Receive(buf[:0])
		if err != nil || len(evs) != connector.MaxBatch {
			b.Fatalf("Receive = %d events, %v", len(evs), err)
		}
		events += len(evs)
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(events), "ns/event")
}
