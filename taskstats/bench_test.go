package taskstats_test

import (
	"testing"

	"github.com/process-watchman/watchman/taskstats"
	"github.com/process-watchman/watchman/taskstats/taskstatstest"
)

// BenchmarkDecodeMessage decodes the captured message of a multi-threaded
// process's last task (its record and the per-TGID aggregate).
func BenchmarkDecodeMessage(b *testing.B) {
	msg := readFixture(b, "v16-group.genl")
	dst := make([]taskstats.Record, 0, 2)
	b.SetBytes(int64(len(msg)))
	b.ReportAllocs()
	for b.Loop() {
		if _, err := taskstats.DecodeMessage(msg, dst[:0]); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkAggregator feeds the record of a single-threaded process.
func BenchmarkAggregator(b *testing.B) {
	recs, err := taskstats.DecodeMessage(readFixture(b, "v16-single.genl"), nil)
	if err != nil {
		b.Fatal(err)
	}
	var ag taskstats.Aggregator
	b.ReportAllocs()
	for b.Loop() {
		if _, ok := ag.Add(&recs[0]); !ok {
			b.Fatal("no usage")
		}
	}
}

// BenchmarkListenerFake measures Receive over the fake kernel: datagram
// parsing, validation and decoding of batches of 32 records (the fake's
// queue costs are included).
func BenchmarkListenerFake(b *testing.B) {
	k := taskstatstest.NewKernel()
	l, err := k.Listen(&taskstats.Config{CPUs: "0"})
	if err != nil {
		b.Fatal(err)
	}
	defer l.Close()
	r := taskstats.Record{Kind: taskstats.KindPID, Version: 16, PID: 5, TGID: 5, Flags: taskstats.FlagGroupDead}
	raw := taskstatstest.EncodeDatagram(taskstatstest.DefaultFamily, 0, 0, 0, taskstatstest.EncodeMessage(&r, nil))
	buf := make([]taskstats.Record, 0, 2*taskstats.MaxBatch)
	b.ReportAllocs()
	for b.Loop() {
		for range taskstats.MaxBatch {
			k.EmitRaw(0, raw)
		}
		n := 0
		for n < taskstats.MaxBatch {
			recs, err := l.Receive(buf[:0])
			if err != nil {
				b.Fatal(err)
			}
			n += len(recs)
		}
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*taskstats.MaxBatch), "ns/record")
}
