package main

import (
	"bufio"
	"encoding/json"
	"io"
	"time"

	"github.com/process-watchman/watchman"
)

// jsonTimeLayout is RFC 3339 with nanoseconds, always nine digits.
const jsonTimeLayout = "2006-01-02T15:04:05.000000000Z07:00"

// eventLine is one line of the JSON Lines output. Its schema is stable:
// fields are only ever added.
type eventLine struct {
	// Time is when the event happened (RFC 3339, nanoseconds, UTC).
	Time string `json:"time"`
	// Type is fork, exec, exit or lost (and snapshot on pwatch watch
	// --json with --interval).
	Type string `json:"type"`

	// Process events (fork, exec, exit).
	PID        int      `json:"pid,omitempty"`
	PPID       int      `json:"ppid,omitempty"`
	StartTicks uint64   `json:"start_ticks,omitempty"`
	Comm       string   `json:"comm,omitempty"`
	Cmdline    []string `json:"cmdline,omitempty"`
	Depth      *int     `json:"depth,omitempty"`
	Synthetic  *bool    `json:"synthetic,omitempty"`

	// Exit events: exit_code for a normal exit, signal for a killing
	// signal, neither when the status is unknown.
	ExitCode   *int  `json:"exit_code,omitempty"`
	Signal     int   `json:"signal,omitempty"`
	CoreDumped bool  `json:"core_dumped,omitempty"`
	LifetimeNS int64 `json:"lifetime_ns,omitempty"`

	// Lost markers.
	Lost    *uint64 `json:"lost,omitempty"`
	Overrun *bool   `json:"overrun,omitempty"`

	// Snapshots.
	Live      *int  `json:"live,omitempty"`
	RootAlive *bool `json:"root_alive,omitempty"`
	PIDs      []int `json:"pids,omitempty"`
}

func jsonTime(t time.Time) string { return t.UTC().Format(jsonTimeLayout) }

// newEventLine converts an event; lifetime is how long an exiting process
// lived, if known.
func newEventLine(ev *watchman.Event, lifetime time.Duration) eventLine {
	l := eventLine{Time: jsonTime(ev.Time), Type: string(ev.Type)}
	if ev.Type == watchman.EventLost {
		lost, over := ev.Lost, ev.Overrun
		l.Lost, l.Overrun = &lost, &over
		return l
	}
	depth, syn := ev.Depth, ev.Synthetic
	l.PID, l.PPID, l.StartTicks = ev.Process.PID, ev.PPID, ev.Process.StartTicks
	l.Comm, l.Cmdline, l.Depth, l.Synthetic = ev.Name, ev.Cmdline, &depth, &syn
	if x := ev.Exit; x != nil && x.StatusKnown {
		if x.Signal > 0 {
			l.Signal, l.CoreDumped = x.Signal, x.CoreDumped
		} else {
			code := x.Code
			l.ExitCode = &code
		}
	}
	if ev.Type == watchman.EventExit && lifetime > 0 {
		l.LifetimeNS = int64(lifetime)
	}
	return l
}

// snapshotLine is the line of a periodic snapshot.
func snapshotLine(s *watchman.Snapshot) eventLine {
	live, alive := len(s.Processes), s.RootAlive
	return eventLine{Time: jsonTime(s.Time), Type: "snapshot", Live: &live, RootAlive: &alive, PIDs: s.PIDs()}
}

// jsonlWriter writes JSON Lines, buffered.
type jsonlWriter struct {
	bw  *bufio.Writer
	err error
}

func newJSONLWriter(w io.Writer) *jsonlWriter { return &jsonlWriter{bw: bufio.NewWriter(w)} }

func (j *jsonlWriter) write(l *eventLine) {
	if j.err != nil {
		return
	}
	b, err := json.Marshal(l)
	if err != nil {
		j.err = err
		return
	}
	b = append(b, '\n')
	_, j.err = j.bw.Write(b)
}

// flush writes out what is buffered and returns the first error.
func (j *jsonlWriter) flush() error {
	if j.err == nil {
		j.err = j.bw.Flush()
	}
	return j.err
}
