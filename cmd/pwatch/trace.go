package main

import (
	"encoding/json"
	"fmt"
	"io"
	"time"

	"github.com/process-watchman/watchman"
)

// traceEvent is one event of the Chrome Trace Event Format, which Perfetto
// and chrome://tracing open.
type traceEvent struct {
	Name string         `json:"name"`
	Cat  string         `json:"cat,omitempty"`
	Ph   string         `json:"ph"`
	TS   float64        `json:"ts"` // µs since the start of the trace
	Dur  *float64       `json:"dur,omitempty"`
	PID  int            `json:"pid"`
	TID  int            `json:"tid"`
	S    string         `json:"s,omitempty"`
	Args map[string]any `json:"args,omitempty"`
}

// traceState is how far the trace has written one process.
type traceState uint8

const (
	traceNone  traceState = iota // nothing yet
	traceBegun                   // its "B" event
	traceDone                    // its "X", or its "B" and "E"
)

// traceWriter writes the trace as it goes, in the JSON Array Format of the
// Trace Event Format: "[" and one event per line, each line after the first
// starting with ",". Whatever has been flushed is a valid trace once "]"
// is appended, and viewers accept it without the bracket, so a trace
// survives a killed pwatch.
//
// Each process is a track of its own (tid = its PID) grouped under the
// process that forked it (pid = that PID). A process that ends before the
// next flush is one complete ("X") event, with its last name; one that
// lives on gets a "B" event at the flush and an "E" event when it ends.
// Times are µs since begin.
type traceWriter struct {
	out     recordWriter
	begin   time.Time
	started bool         // "[" and the first event are written
	groups  map[int]bool // groups whose name is written
	// rootPID is the root's PID, rootParent its parent's (the group of
	// the root, and of the orphans that come back to pwatch run).
	rootPID, rootParent int
	pending             []*proc // joined, nothing written yet
}

func newTraceWriter(w io.Writer, begin time.Time, rootPID, rootParent int, mode string) *traceWriter {
	t := &traceWriter{out: recordWriter{w: w}, begin: begin, groups: map[int]bool{}, rootPID: rootPID, rootParent: rootParent}
	t.emit(traceEvent{Name: "pwatch", Ph: "i", S: "g", Args: map[string]any{
		"tool": "pwatch", "root_pid": rootPID, "mode": mode, "start": jsonTime(begin),
	}})
	return t
}

func (t *traceWriter) us(at time.Time) float64 {
	return float64(at.Sub(t.begin).Nanoseconds()) / 1e3
}

// emit writes one event.
func (t *traceWriter) emit(ev traceEvent) {
	if t.out.err != nil {
		return
	}
	b, err := json.Marshal(ev)
	if err != nil {
		t.out.err = err
		return
	}
	sep := "\n,"
	if !t.started {
		sep, t.started = "[", true
	}
	t.out.add(append([]byte(sep), b...))
}

// update records what changed of p: it joined, exec'd or ended.
func (t *traceWriter) update(p *proc) {
	switch {
	case p.traced == traceNone && !p.exited:
		if len(t.pending) == 0 || t.pending[len(t.pending)-1] != p {
			t.pending = append(t.pending, p)
		}
	case p.traced == traceNone:
		t.span(p, "X", p.end)
	case p.traced == traceBegun && p.exited:
		args := map[string]any{"exit": exitText(&p.exit, " ")}
		addUsageArgs(args, p.exit.Usage)
		t.emit(traceEvent{Name: escape(p.name), Cat: "process", Ph: "E", TS: t.us(t.end(p, p.end)),
			PID: p.ppid, TID: p.id.PID, Args: args})
		p.traced = traceDone
	}
}

// end is when p's span ends: at, but not before it starts.
func (t *traceWriter) end(p *proc, at time.Time) time.Time {
	if s := t.start(p); at.Before(s) {
		return s
	}
	return at
}

// start is when p's span starts: when it joined, but not before the
// trace.
func (t *traceWriter) start(p *proc) time.Time {
	if p.start.Before(t.begin) {
		return t.begin
	}
	return p.start
}

// span writes p's names and its "X" (ending at end) or "B" event.
func (t *traceWriter) span(p *proc, ph string, end time.Time) {
	if !t.groups[p.ppid] {
		t.groups[p.ppid] = true
		label := fmt.Sprintf("children of %d", p.ppid)
		switch {
		case p.depth == 0 || p.ppid == t.rootParent:
			label = fmt.Sprintf("root %d", t.rootPID)
		case p.ppid == t.rootPID:
			label = fmt.Sprintf("children of root %d", t.rootPID)
		}
		t.emit(traceEvent{Name: "process_name", Ph: "M", PID: p.ppid, TID: p.ppid,
			Args: map[string]any{"name": escape(label)}})
	}
	t.emit(traceEvent{Name: "thread_name", Ph: "M", PID: p.ppid, TID: p.id.PID,
		Args: map[string]any{"name": escape(fmt.Sprintf("%s %d", p.name, p.id.PID))}})
	args := map[string]any{
		"pid": p.id.PID, "ppid": p.ppid, "start_ticks": p.id.StartTicks,
		"cmdline": escape(commandText(p.name, p.cmdline)), "depth": p.depth,
	}
	if !p.exactStart {
		args["started"] = jsonTime(p.started)
	}
	ev := traceEvent{Name: escape(p.name), Cat: "process", Ph: ph, TS: t.us(t.start(p)), PID: p.ppid, TID: p.id.PID, Args: args}
	p.traced = traceBegun
	if ph == "X" {
		if p.exited {
			end = p.end
		}
		dur := float64(t.end(p, end).Sub(t.start(p)).Nanoseconds()) / 1e3
		ev.Dur = &dur
		if p.exited {
			args["exit"] = exitText(&p.exit, " ")
			addUsageArgs(args, p.exit.Usage)
		} else {
			args["alive_at_end"] = true
		}
		p.traced = traceDone
	}
	t.emit(ev)
}

// addUsageArgs adds u's fields to a span's args, under the names of the
// JSON Lines "usage" object (durations in ns), with "usage_source" for
// its source; nothing when u is nil.
func addUsageArgs(args map[string]any, u *watchman.Usage) {
	if u == nil {
		return
	}
	args["user_cpu_ns"] = int64(u.UserCPU)
	args["system_cpu_ns"] = int64(u.SystemCPU)
	args["wall_ns"] = int64(u.Wall)
	args["peak_rss_bytes"] = u.PeakRSS
	args["read_bytes"] = u.ReadBytes
	args["write_bytes"] = u.WriteBytes
	args["voluntary_switches"] = u.VoluntarySwitches
	args["involuntary_switches"] = u.InvoluntarySwitches
	args["cpu_delay_ns"] = int64(u.CPUDelay)
	args["blkio_delay_ns"] = int64(u.BlkioDelay)
	args["swapin_delay_ns"] = int64(u.SwapinDelay)
	if u.Threads > 0 {
		args["threads"] = u.Threads
	}
	args["usage_source"] = u.Source
}

// dirty says whether anything waits to be written.
func (t *traceWriter) dirty() bool { return len(t.pending) > 0 || t.out.buffered() }

// flush writes a "B" event for each process that joined since the last
// flush and lives on, and writes out the buffer.
func (t *traceWriter) flush() error {
	for _, p := range t.pending {
		if p.traced == traceNone && !p.exited {
			t.span(p, "B", time.Time{})
		}
	}
	t.pending = t.pending[:0]
	return t.out.flush()
}

// close ends the spans of the processes still alive at end (complete
// events for those never written), closes the array, and flushes.
func (t *traceWriter) close(r *recorder, end time.Time) error {
	t.pending = t.pending[:0]
	for _, p := range r.order {
		switch {
		case p.traced == traceNone:
			t.span(p, "X", end)
		case p.traced == traceBegun:
			t.emit(traceEvent{Name: escape(p.name), Cat: "process", Ph: "E", TS: t.us(t.end(p, end)),
				PID: p.ppid, TID: p.id.PID, Args: map[string]any{"alive_at_end": true}})
			p.traced = traceDone
		}
	}
	if !t.started {
		t.emit(traceEvent{Name: "pwatch", Ph: "i", S: "g"})
	}
	t.out.add([]byte("\n]\n"))
	return t.flush()
}
