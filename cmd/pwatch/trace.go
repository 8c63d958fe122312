package main

import (
	"fmt"
	"io"
	"strconv"
	"time"

	"github.com/process-watchman/watchman"
)

// traceEvent is one event of the Chrome Trace Event Format, which Perfetto
// and chrome://tracing open. The JSON names are those of the format;
// appendTraceEvent writes it.
type traceEvent struct {
	Name string    `json:"name"`
	Cat  string    `json:"cat,omitempty"`
	Ph   string    `json:"ph"`
	TS   float64   `json:"ts"` // µs since the start of the trace
	Dur  *float64  `json:"dur,omitempty"`
	PID  int       `json:"pid"`
	TID  int       `json:"tid"`
	S    string    `json:"s,omitempty"`
	Args traceArgs `json:"args,omitempty"`
}

// traceArgs are an event's "args" object, written with its keys sorted
// (as encoding/json writes a map), each key once.
type traceArgs []traceArg

// traceArg is one argument: a string, a signed or unsigned integer, or a
// boolean.
type traceArg struct {
	key  string
	kind byte // 's', 'i', 'u' or 'b'
	s    string
	i    int64
	u    uint64
}

func strArg(k, v string) traceArg       { return traceArg{key: k, kind: 's', s: v} }
func intArg(k string, v int64) traceArg { return traceArg{key: k, kind: 'i', i: v} }
func uintArg(k string, v uint64) traceArg {
	return traceArg{key: k, kind: 'u', u: v}
}
func boolArg(k string, v bool) traceArg {
	a := traceArg{key: k, kind: 'b'}
	if v {
		a.u = 1
	}
	return a
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
	t.emit(traceEvent{Name: "pwatch", Ph: "i", S: "g", Args: traceArgs{
		strArg("tool", "pwatch"), intArg("root_pid", int64(rootPID)), strArg("mode", mode), strArg("start", jsonTime(begin)),
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
	if t.started {
		t.out.buf = append(t.out.buf, "\n,"...)
	} else {
		t.out.buf, t.started = append(t.out.buf, '['), true
	}
	t.out.buf = appendTraceEvent(t.out.buf, &ev)
	t.out.flushFull()
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
		args := addUsageArgs(traceArgs{strArg("exit", exitText(&p.exit, " "))}, p.exit.Usage)
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
			Args: traceArgs{strArg("name", escape(label))}})
	}
	t.emit(traceEvent{Name: "thread_name", Ph: "M", PID: p.ppid, TID: p.id.PID,
		Args: traceArgs{strArg("name", escape(p.name+" "+strconv.Itoa(p.id.PID)))}})
	// Room for every arg a span has: one allocation.
	args := append(make(traceArgs, 0, 24),
		intArg("pid", int64(p.id.PID)), intArg("ppid", int64(p.ppid)), uintArg("start_ticks", p.id.StartTicks),
		strArg("cmdline", escape(commandText(p.name, p.cmdline))), intArg("depth", int64(p.depth)))
	if !p.exactStart {
		args = append(args, strArg("started", jsonTime(p.started)))
	}
	ev := traceEvent{Name: escape(p.name), Cat: "process", Ph: ph, TS: t.us(t.start(p)), PID: p.ppid, TID: p.id.PID}
	p.traced = traceBegun
	if ph == "X" {
		if p.exited {
			end = p.end
		}
		dur := float64(t.end(p, end).Sub(t.start(p)).Nanoseconds()) / 1e3
		ev.Dur = &dur
		if p.exited {
			args = addUsageArgs(append(args, strArg("exit", exitText(&p.exit, " "))), p.exit.Usage)
		} else {
			args = append(args, boolArg("alive_at_end", true))
		}
		p.traced = traceDone
	}
	ev.Args = args
	t.emit(ev)
}

// addUsageArgs adds u's fields to a span's args, under the names of the
// JSON Lines "usage" object (durations in ns), with "usage_source" for
// its source; nothing when u is nil.
func addUsageArgs(args traceArgs, u *watchman.Usage) traceArgs {
	if u == nil {
		return args
	}
	args = append(args,
		intArg("user_cpu_ns", int64(u.UserCPU)), intArg("system_cpu_ns", int64(u.SystemCPU)), intArg("wall_ns", int64(u.Wall)),
		uintArg("peak_rss_bytes", u.PeakRSS), uintArg("read_bytes", u.ReadBytes), uintArg("write_bytes", u.WriteBytes),
		uintArg("voluntary_switches", u.VoluntarySwitches), uintArg("involuntary_switches", u.InvoluntarySwitches),
		intArg("cpu_delay_ns", int64(u.CPUDelay)), intArg("blkio_delay_ns", int64(u.BlkioDelay)),
		intArg("swapin_delay_ns", int64(u.SwapinDelay)), strArg("usage_source", u.Source))
	if u.Threads > 0 {
		args = append(args, intArg("threads", int64(u.Threads)))
	}
	if u.Command != "" {
		args = append(args, strArg("usage_command", escape(u.Command)))
	}
	return args
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
				PID: p.ppid, TID: p.id.PID, Args: traceArgs{boolArg("alive_at_end", true)}})
			p.traced = traceDone
		}
	}
	if !t.started {
		t.emit(traceEvent{Name: "pwatch", Ph: "i", S: "g"})
	}
	t.out.add([]byte("\n]\n"))
	return t.flush()
}
