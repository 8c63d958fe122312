package main

import (
	"encoding/json"
	"io"
	"testing"
	"time"

	"github.com/process-watchman/watchman"
)

// benchEvents are a fork, an exec and an exit of one short process, as a
// build's storm brings them.
func benchEvents() []watchman.Event {
	at := time.Date(2025, 3, 1, 12, 0, 0, 0, time.UTC)
	id := watchman.Identity{PID: 4242, StartTicks: 123456}
	sh := []string{"/bin/sh", "-c", "cc -c -O2 -Wall -o main.o main.c"}
	cc := []string{"cc", "-c", "-O2", "-Wall", "-o", "main.o", "main.c"}
	return []watchman.Event{
		{Type: watchman.EventFork, Time: at, Process: id, PPID: 4200, Name: "sh", Cmdline: sh, Depth: 2},
		{Type: watchman.EventExec, Time: at.Add(300 * time.Microsecond), Process: id, PPID: 4200, Name: "cc", Cmdline: cc, Depth: 2},
		{Type: watchman.EventExit, Time: at.Add(2 * time.Millisecond), Process: id, PPID: 4200, Name: "cc", Cmdline: cc, Depth: 2,
			Exit: &watchman.Exit{Identity: id, StatusKnown: true, Time: at.Add(2 * time.Millisecond),
				Usage: &watchman.Usage{UserCPU: time.Millisecond, SystemCPU: 400 * time.Microsecond, Wall: 2 * time.Millisecond,
					PeakRSS: 5 << 20, VoluntarySwitches: 2, InvoluntarySwitches: 1, Threads: 1, Source: watchman.UsageTaskstats}}},
	}
}

// BenchmarkEncodeLine is the encoder alone: one event's line, encoded
// and buffered, by encoding/json (what pwatch used before) and by
// appendEventLine.
func BenchmarkEncodeLine(b *testing.B) {
	evs := benchEvents()
	lines := make([]eventLine, len(evs))
	for i := range evs {
		lines[i] = newEventLine(&evs[i], evs[i].Name, evs[i].Cmdline, evs[i].Depth, 2*time.Millisecond)
	}
	b.Run("encoding-json", func(b *testing.B) {
		w := newJSONLWriter(io.Discard)
		b.ReportAllocs()
		for i := 0; b.Loop(); i++ {
			buf, err := json.Marshal(&lines[i%len(lines)])
			if err != nil {
				b.Fatal(err)
			}
			w.add(append(buf, '\n'))
		}
	})
	b.Run("append", func(b *testing.B) {
		w := newJSONLWriter(io.Discard)
		b.ReportAllocs()
		for i := 0; b.Loop(); i++ {
			w.write(&lines[i%len(lines)])
		}
	})
}

// BenchmarkHandle is pwatch's whole work for one event of the tree with
// --events: the record, the line, the buffer.
func BenchmarkHandle(b *testing.B) {
	evs := benchEvents()
	s := &session{rec: newRecorder(watchman.Identity{PID: 1}), out: &outputFlags{}, events: newJSONLWriter(io.Discard)}
	s.flush = time.NewTimer(time.Hour)
	s.flush.Stop()
	b.ReportAllocs()
	for i := 0; b.Loop(); i++ {
		ev := evs[i%len(evs)]
		pid := 1000 + i/len(evs)
		ev.Process.PID = pid
		if ev.Exit != nil {
			x := *ev.Exit
			x.PID = pid
			ev.Exit = &x
		}
		s.handle(&ev)
		if len(s.rec.order) > 1<<14 {
			s.rec = newRecorder(watchman.Identity{PID: 1})
		}
	}
}

// BenchmarkTraceProcess is the trace's work for one short process (its
// name and its complete span, two events of the Trace Event Format),
// for comparison with the JSON Lines encoder: a process brings two
// kernel events (fork and exit).
func BenchmarkTraceProcess(b *testing.B) {
	begin := time.Date(2025, 3, 1, 12, 0, 0, 0, time.UTC)
	evs := benchEvents()
	tw := newTraceWriter(io.Discard, begin, 1, 0, "connector")
	b.ReportAllocs()
	for i := 0; b.Loop(); i++ {
		p := &proc{id: watchman.Identity{PID: 1000 + i%50000, StartTicks: 1}, ppid: 4200, depth: 2, name: "cc", cmdline: evs[1].Cmdline,
			start: begin, exactStart: true, exited: true, end: begin.Add(time.Millisecond), exit: *evs[2].Exit}
		tw.update(p)
	}
}

// BenchmarkHumanLine is pwatch watch's human line for one event
// (appendEvent into a reused buffer), beside BenchmarkEncodeLine's JSON
// line: watch writes both for every event when --events is given.
func BenchmarkHumanLine(b *testing.B) {
	evs := benchEvents()
	var buf []byte
	b.ReportAllocs()
	for i := 0; b.Loop(); i++ {
		ev := &evs[i%len(evs)]
		buf = append(appendEvent(buf[:0], ev, ev.Name, ev.Cmdline, ev.Depth, 2*time.Millisecond), '\n')
	}
}
