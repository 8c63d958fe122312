package main

import (
	"encoding/json"
	"fmt"
	"io"
	"sort"
	"time"
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

// traceDoc is the JSON object form of a trace.
type traceDoc struct {
	TraceEvents     []traceEvent   `json:"traceEvents"`
	DisplayTimeUnit string         `json:"displayTimeUnit"`
	OtherData       map[string]any `json:"otherData,omitempty"`
}

// buildTrace lays out every recorded process as one complete ("X") event
// from the start of its life (or of the watch) to its end (or end, for
// those still alive), on a track of its own (tid = its PID) grouped under
// its parent (pid = the parent's PID), with metadata naming the groups and
// tracks. Times are in µs since begin.
func buildTrace(r *recorder, begin, end time.Time, mode string) traceDoc {
	us := func(t time.Time) float64 { return float64(t.Sub(begin).Nanoseconds()) / 1e3 }
	doc := traceDoc{DisplayTimeUnit: "ms", OtherData: map[string]any{
		"tool": "pwatch", "root_pid": r.root.PID, "mode": mode, "start": jsonTime(begin),
	}}
	names := make(map[int]string) // PID → name of the latest process with it
	groups := make(map[int]bool)
	for _, p := range r.order {
		names[p.id.PID] = p.name
		groups[p.ppid] = true
	}
	gs := make([]int, 0, len(groups))
	for g := range groups {
		gs = append(gs, g)
	}
	sort.Ints(gs)
	for _, g := range gs {
		label := fmt.Sprintf("children of %d", g)
		if n, ok := names[g]; ok {
			label = fmt.Sprintf("children of %s (%d)", n, g)
		}
		if g == r.procs[r.root].ppid {
			label = fmt.Sprintf("root %d", r.root.PID)
		}
		doc.TraceEvents = append(doc.TraceEvents, traceEvent{Name: "process_name", Ph: "M", PID: g, TID: g,
			Args: map[string]any{"name": sanitize(label)}})
	}
	for _, p := range r.order {
		start, stop := p.start, end
		if p.exited {
			stop = p.end
		}
		if start.Before(begin) {
			start = begin
		}
		if stop.Before(start) {
			stop = start
		}
		dur := float64(stop.Sub(start).Nanoseconds()) / 1e3
		args := map[string]any{
			"pid": p.id.PID, "ppid": p.ppid, "start_ticks": p.id.StartTicks,
			"cmdline": commandText(p.name, p.cmdline), "depth": p.depth,
		}
		switch {
		case p.exited:
			args["exit"] = exitText(&p.exit, " ")
		default:
			args["alive_at_end"] = true
		}
		if !p.exactStart {
			args["started"] = jsonTime(p.started)
		}
		doc.TraceEvents = append(doc.TraceEvents,
			traceEvent{Name: "thread_name", Ph: "M", PID: p.ppid, TID: p.id.PID,
				Args: map[string]any{"name": sanitize(fmt.Sprintf("%s %d", p.name, p.id.PID))}},
			traceEvent{Name: sanitize(p.name), Cat: "process", Ph: "X", TS: us(start), Dur: &dur,
				PID: p.ppid, TID: p.id.PID, Args: args})
	}
	return doc
}

func writeTrace(w io.Writer, doc *traceDoc) error {
	enc := json.NewEncoder(w)
	return enc.Encode(doc)
}
