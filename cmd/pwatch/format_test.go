package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/process-watchman/watchman"
)

// fixedEvents is a small tree's life, with fixed times (UTC).
func fixedEvents() (root watchman.Identity, begin time.Time, evs []watchman.Event) {
	begin = time.Date(2025, 3, 1, 12, 0, 0, 0, time.UTC)
	at := func(us int) time.Time { return begin.Add(time.Duration(us) * time.Microsecond) }
	root = watchman.Identity{PID: 100, StartTicks: 5000}
	id := func(pid int) watchman.Identity { return watchman.Identity{PID: pid, StartTicks: 5001} }
	sh := []string{"sh", "-c", "make all; exit 2"}
	exit := func(pid, code, sig int, known bool, us int) *watchman.Exit {
		return &watchman.Exit{Identity: id(pid), StatusKnown: known, Code: code, Signal: sig, Time: at(us)}
	}
	ccUsage := &watchman.Usage{UserCPU: 800 * time.Microsecond, SystemCPU: 150 * time.Microsecond, Wall: 1050 * time.Microsecond,
		PeakRSS: 110 << 20, ReadBytes: 4096, WriteBytes: 10 << 20, VoluntarySwitches: 3, InvoluntarySwitches: 2,
		CPUDelay: 12 * time.Microsecond, BlkioDelay: 5 * time.Microsecond, Threads: 2, Source: watchman.UsageTaskstats}
	makeUsage := &watchman.Usage{UserCPU: 1500 * time.Microsecond, SystemCPU: 500 * time.Microsecond, Wall: 2000 * time.Microsecond,
		PeakRSS: 3 << 20, Threads: 1, Source: watchman.UsageTaskstats}
	evs = []watchman.Event{
		{Type: watchman.EventExec, Time: at(10), Process: root, PPID: 99, Name: "sh", Cmdline: sh},
		{Type: watchman.EventFork, Time: at(100), Process: id(101), PPID: 100, Name: "sh", Cmdline: sh, Depth: 1},
		{Type: watchman.EventExec, Time: at(150), Process: id(101), PPID: 100, Name: "make", Cmdline: []string{"make", "all"}, Depth: 1},
		{Type: watchman.EventFork, Time: at(200), Process: id(102), PPID: 101, Name: "make", Cmdline: []string{"make", "all"}, Depth: 2},
		{Type: watchman.EventExec, Time: at(250), Process: id(102), PPID: 101, Name: "cc", Cmdline: []string{"cc", "-o", "a b", "it's.c"}, Depth: 2},
		{Type: watchman.EventExit, Time: at(1250), Process: id(102), PPID: 101, Name: "cc", Cmdline: []string{"cc", "-o", "a b", "it's.c"}, Depth: 2,
			Exit: withUsage(exit(102, -1, 9, true, 1250), ccUsage)},
		{Type: watchman.EventLost, Time: at(1300), Lost: 12, Overrun: true},
		{Type: watchman.EventFork, Time: at(1400), Process: id(103), PPID: 101, Name: "weird\nname", Depth: 2, Synthetic: true},
		{Type: watchman.EventExit, Time: at(2100), Process: id(101), PPID: 100, Name: "make", Cmdline: []string{"make", "all"}, Depth: 1,
			Exit: withUsage(exit(101, 2, 0, true, 2100), makeUsage)},
		{Type: watchman.EventExit, Time: at(2200), Process: id(103), PPID: 1, Name: "weird\nname", Depth: 2, Synthetic: true,
			Exit: exit(103, -1, 0, false, 2200)},
		{Type: watchman.EventLost, Time: at(2300), Lost: 3},
		{Type: watchman.EventFork, Time: at(2400), Process: id(104), PPID: 100, Name: "sleep", Cmdline: []string{"sleep", "100"}, Depth: 1},
		{Type: watchman.EventExit, Time: at(3000), Process: root, PPID: 99, Name: "sh", Cmdline: sh,
			Exit: &watchman.Exit{Identity: root, StatusKnown: true, Code: 2, Time: at(3000)}},
	}
	return root, begin, evs
}

// withUsage gives x the usage u.
func withUsage(x *watchman.Exit, u *watchman.Usage) *watchman.Exit {
	x.Usage = u
	return x
}

// recordFixed feeds the fixed events to a recorder, as a run would.
func recordFixed() (*recorder, time.Time, []watchman.Event) {
	root, begin, evs := fixedEvents()
	r := newRecorder(root)
	r.seed([]watchman.ProcessInfo{{Identity: root, PPID: 99, Name: "pwatch", Started: begin}}, begin)
	r.procs[root].exactStart = true
	return r, begin, evs
}

func TestEventLinesGolden(t *testing.T) {
	r, _, evs := recordFixed()
	var text, js bytes.Buffer
	jw := newJSONLWriter(&js)
	for i := range evs {
		p := r.apply(&evs[i])
		var lifetime time.Duration
		if p != nil && evs[i].Type == watchman.EventExit {
			lifetime = p.lifetime(evs[i].Time)
		}
		name, cmdline := r.eventView(&evs[i])
		depth := r.depth(evs[i].Process, evs[i].Depth)
		fmt.Fprintln(&text, formatEvent(&evs[i], name, cmdline, depth, lifetime))
		l := newEventLine(&evs[i], name, cmdline, depth, lifetime)
		jw.write(&l)
	}
	snap := watchman.Snapshot{Time: evs[0].Time, RootAlive: true, Processes: []watchman.ProcessInfo{
		{Identity: watchman.Identity{PID: 100}}, {Identity: watchman.Identity{PID: 104}},
	}}
	fmt.Fprintln(&text, formatSnapshot(&snap))
	l := snapshotLine(&snap)
	jw.write(&l)
	if err := jw.flush(); err != nil {
		t.Fatal(err)
	}
	golden(t, "events.golden", text.Bytes())
	golden(t, "events.jsonl.golden", js.Bytes())
	// Every line is an object with time and type.
	for i, line := range bytes.Split(bytes.TrimSpace(js.Bytes()), []byte("\n")) {
		var m map[string]any
		if err := json.Unmarshal(line, &m); err != nil || m["time"] == nil || m["type"] == nil {
			t.Errorf("line %d: %v %s", i, err, line)
		}
	}
}

func TestSummaryGolden(t *testing.T) {
	r, begin, evs := recordFixed()
	for i := range evs {
		r.apply(&evs[i])
	}
	end := begin.Add(3 * time.Millisecond)
	var b bytes.Buffer

	b.WriteString("--- run, waited and killed\n")
	s := &summary{Verb: "run", Root: r.procs[r.root], RootEnded: true, Wall: end.Sub(begin),
		Processes: len(r.order), AtStart: r.atStart, Peak: r.peak, Failed: r.failures(),
		Unknown: r.unknown, Lost: r.lost, Markers: r.markers, Overrun: r.overrun,
		Left:   []leftProc{{PID: 104, Age: 600 * time.Microsecond, Command: "sleep 100"}},
		Waited: true, Killed: "sent SIGTERM to 1, then SIGKILL to 1 still alive after 5s",
		Alive: 1, Stopped: "stopped waiting on SIGINT(2)",
	}
	writeSummary(&b, s)

	b.WriteString("--- run, clean\n")
	writeSummary(&b, &summary{Verb: "run", Root: &proc{id: watchman.Identity{PID: 7}, name: "true", exited: true,
		exactStart: true, start: begin, end: begin.Add(1500 * time.Millisecond), exit: watchman.Exit{StatusKnown: true}},
		RootEnded: true, Wall: 1500 * time.Millisecond, Processes: 1, Peak: 1})

	b.WriteString("--- watch, interrupted\n")
	writeSummary(&b, &summary{Verb: "watch", Root: &proc{id: watchman.Identity{PID: 7}, name: "server", cmdline: []string{"server", "-v"}},
		Wall: 90 * time.Second, Processes: 12, AtStart: 3, Peak: 5, Alive: 4, Stopped: "stopped by SIGINT(2)"})

	b.WriteString("--- run, capped at 2, 60 columns, hostile command lines\n")
	var failed []*proc
	for i := range 4 {
		failed = append(failed, &proc{id: watchman.Identity{PID: 200 + i}, name: "sh", exited: true,
			cmdline: []string{"sh", "-c", "exit 1", "x\nFAKE: 0 failed\x1b[2J\u202e" + strings.Repeat("z", 80)},
			exit:    watchman.Exit{StatusKnown: true, Code: 1}})
	}
	writeSummary(&b, &summary{Verb: "run", Root: failed[0], RootEnded: true, Wall: time.Second, Processes: 5, Peak: 2,
		Failed: failed, Limit: 2, Width: 60, Events: "run.jsonl",
		Left:  []leftProc{{PID: 300, Command: "a"}, {PID: 301, Command: "b"}, {PID: 302, Command: "c\rd"}},
		Notes: []string{"cgroup: CPU 1s (user 1s, system 0s)", "a note\nwith a newline"}})
	golden(t, "summary.golden", b.Bytes())
	for _, line := range strings.Split(b.String(), "\n") {
		if strings.HasPrefix(line, "FAKE") || strings.ContainsAny(line, "\x1b\r\u202e") {
			t.Errorf("unescaped line %q", line)
		}
	}
}

func TestEscape(t *testing.T) {
	for in, want := range map[string]string{
		"plain text, é and 日本":  "plain text, é and 日本",
		"a\nb\tc\rd":            `a\nb\tc\rd`,
		"\x1b[31mred\x7f":       `\x1b[31mred\x7f`,
		"bad \xff\xfe utf-8":    `bad \xff\xfe utf-8`,
		"c1 \u0085 bidi \u202e": `c1 \u0085 bidi \u202e`,
		"isolate \u2066x\u2069": `isolate \u2066x\u2069`,
	} {
		if got := escape(in); got != want {
			t.Errorf("escape(%q) = %q, want %q", in, got, want)
		}
	}
	if got := cut("abcdef", 4); got != "abc…" {
		t.Errorf("cut: %q", got)
	}
}

func TestTraceLayout(t *testing.T) {
	r, begin, evs := recordFixed()
	var b bytes.Buffer
	tw := newTraceWriter(&b, begin, r.root.PID, 99, "connector")
	for _, p := range r.order {
		tw.update(p)
	}
	var afterFlush []int
	for i := range evs {
		if p := r.apply(&evs[i]); p != nil {
			tw.update(p)
		}
		if i == 3 {
			// make (101) and the root live on: they get "B" events.
			if err := tw.flush(); err != nil {
				t.Fatal(err)
			}
			afterFlush = append(afterFlush, b.Len())
		}
	}
	if err := tw.flush(); err != nil {
		t.Fatal(err)
	}
	// What a killed pwatch leaves is a trace once "]" is appended.
	var partial []decodedTrace
	if err := json.Unmarshal(append(bytes.Clone(b.Bytes()), ']'), &partial); err != nil {
		t.Fatalf("flushed trace plus ] does not parse: %v\n%s", err, b.Bytes())
	}
	end := begin.Add(5 * time.Millisecond)
	if err := tw.close(r, end); err != nil {
		t.Fatal(err)
	}
	golden(t, "trace.golden", b.Bytes())

	var back []decodedTrace
	if err := json.Unmarshal(b.Bytes(), &back); err != nil {
		t.Fatal(err)
	}
	type span struct{ begin, end float64 }
	spans := map[int]*span{}
	for _, e := range back {
		switch e.Ph {
		case "X":
			if _, dup := spans[e.TID]; dup {
				t.Errorf("two spans for %d", e.TID)
			}
			spans[e.TID] = &span{e.TS, e.TS + *e.Dur}
		case "B":
			spans[e.TID] = &span{begin: e.TS, end: -1}
		case "E":
			if sp := spans[e.TID]; sp == nil || sp.end != -1 {
				t.Errorf("E without B for %d", e.TID)
			} else {
				sp.end = e.TS
			}
		}
	}
	if len(spans) != len(r.order) {
		t.Fatalf("%d spans for %d processes", len(spans), len(r.order))
	}
	// cc (102) lived 250 µs .. 1250 µs... from its fork at 200 µs.
	if cc := spans[102]; cc.begin != 200 || cc.end != 1250 {
		t.Errorf("cc span: %+v", *cc)
	}
	// sleep (104) is alive at the end: its span runs to the end.
	if sl := spans[104]; sl.end != 5000 {
		t.Errorf("sleep span: %+v", *sl)
	}
	if len(afterFlush) != 1 || afterFlush[0] == 0 {
		t.Errorf("nothing written at the first flush")
	}
}
