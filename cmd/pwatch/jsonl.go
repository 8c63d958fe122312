package main

import (
	"encoding/base64"
	"io"
	"time"
	"unicode/utf8"

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
	// CommBase64 and CmdlineBase64 hold the exact bytes (standard base64,
	// one string per argument) when comm or an argument is not valid
	// UTF-8, which JSON strings cannot carry: comm and cmdline then show
	// each invalid byte as U+FFFD.
	CommBase64    string   `json:"comm_base64,omitempty"`
	CmdlineBase64 []string `json:"cmdline_base64,omitempty"`
	Depth         *int     `json:"depth,omitempty"`
	Synthetic     *bool    `json:"synthetic,omitempty"`
	// Upgrade marks an exit that gives the kernel's status for a process
	// an earlier synthetic exit line reported (watchman.Event.Upgrade).
	Upgrade bool `json:"upgrade,omitempty"`
	// NameFromUsage says comm comes from the kernel's accounting at the
	// exit (usage.command): the name of the process's last exec was lost,
	// and its command line is empty (watchman.Event.NameFromUsage).
	NameFromUsage bool `json:"name_from_usage,omitempty"`

	// Exit events: exit_code for a normal exit, signal for a killing
	// signal, neither when the status is unknown.
	ExitCode   *int  `json:"exit_code,omitempty"`
	Signal     int   `json:"signal,omitempty"`
	CoreDumped bool  `json:"core_dumped,omitempty"`
	LifetimeNS int64 `json:"lifetime_ns,omitempty"`
	// Rusage is on reap lines: the resources the process used, as wait4
	// reported them.
	Rusage *rusage `json:"rusage,omitempty"`
	// Usage is on exit lines, what the process used over its whole life
	// when the kernel's taskstats record came (--usage, as root); and on
	// reap lines, what wait4 reported (source "wait4").
	Usage *watchman.Usage `json:"usage,omitempty"`

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
func newEventLine(ev *watchman.Event, name string, cmdline []string, depth int, lifetime time.Duration) eventLine {
	l := eventLine{Time: jsonTime(ev.Time), Type: string(ev.Type)}
	if ev.Type == watchman.EventLost {
		lost, over := ev.Lost, ev.Overrun
		l.Lost, l.Overrun = &lost, &over
		return l
	}
	syn := ev.Synthetic
	l.PID, l.PPID, l.StartTicks = ev.Process.PID, ev.PPID, ev.Process.StartTicks
	l.Synthetic, l.Upgrade, l.NameFromUsage = &syn, ev.Upgrade, ev.NameFromUsage
	l.setProcess(name, cmdline, depth)
	if ev.Exit != nil {
		l.setExit(ev.Exit)
		l.Usage = ev.Exit.Usage
	}
	if ev.Type == watchman.EventExit && lifetime > 0 {
		l.LifetimeNS = int64(lifetime)
	}
	return l
}

// setProcess fills the fields that describe a process.
func (l *eventLine) setProcess(name string, cmdline []string, depth int) {
	l.Comm, l.Cmdline, l.Depth = name, cmdline, &depth
	if !utf8.ValidString(name) {
		l.CommBase64 = base64.StdEncoding.EncodeToString([]byte(name))
	}
	for _, a := range cmdline {
		if !utf8.ValidString(a) {
			l.CmdlineBase64 = make([]string, len(cmdline))
			for i, a := range cmdline {
				l.CmdlineBase64[i] = base64.StdEncoding.EncodeToString([]byte(a))
			}
			break
		}
	}
}

// setExit fills exit_code or signal from a known status.
func (l *eventLine) setExit(x *watchman.Exit) {
	if !x.StatusKnown {
		return
	}
	if x.Signal > 0 {
		l.Signal, l.CoreDumped = x.Signal, x.CoreDumped
	} else {
		code := x.Code
		l.ExitCode = &code
	}
}

// reapLine is the line of a process pwatch reaped: COMMAND, or an orphan
// of its tree that came back to pwatch, with its wait status, rusage, and
// u, the Usage that wait4 gave.
func reapLine(p *proc, u *watchman.Usage) eventLine {
	l := eventLine{Time: jsonTime(p.end), Type: "reap", PID: p.id.PID, PPID: p.ppid, StartTicks: p.id.StartTicks}
	l.setProcess(p.name, p.cmdline, p.depth)
	l.setExit(&p.exit)
	ru := p.rusage
	l.Rusage, l.Usage = &ru, u
	return l
}

// snapshotLine is the line of a periodic snapshot.
func snapshotLine(s *watchman.Snapshot) eventLine {
	live, alive := len(s.Processes), s.RootAlive
	return eventLine{Time: jsonTime(s.Time), Type: "snapshot", Live: &live, RootAlive: &alive, PIDs: s.PIDs()}
}

// rusage is what wait4 reports of a reaped process's resources.
type rusage struct {
	// UserNS and SystemNS are the CPU time in user and kernel mode.
	UserNS   int64 `json:"user_ns"`
	SystemNS int64 `json:"system_ns"`
	// MaxRSSKiB is the peak resident set size.
	MaxRSSKiB int64 `json:"max_rss_kib"`
}

// recordBuffer is how much a recordWriter holds before it writes without
// being asked.
const recordBuffer = 64 << 10

// recordWriter buffers whole records (JSON lines, trace events) and writes
// them out whole, so that what is on disk always ends at the end of a
// record, whenever pwatch is killed (bufio would cut a record at its
// buffer's edge). The first error sticks.
type recordWriter struct {
	w   io.Writer
	buf []byte
	err error
}

// add buffers one record.
func (r *recordWriter) add(rec []byte) {
	if r.err != nil {
		return
	}
	r.buf = append(r.buf, rec...)
	r.flushFull()
}

// flushFull writes out the buffer once it holds recordBuffer bytes.
func (r *recordWriter) flushFull() {
	if len(r.buf) >= recordBuffer {
		r.flush()
	}
}

// buffered says whether records wait to be written.
func (r *recordWriter) buffered() bool { return len(r.buf) > 0 }

// flush writes out what is buffered and returns the first error.
func (r *recordWriter) flush() error {
	if r.err == nil && len(r.buf) > 0 {
		_, r.err = r.w.Write(r.buf)
		r.buf = r.buf[:0]
	}
	return r.err
}

// jsonlWriter writes JSON Lines, buffered, whole lines at a time.
type jsonlWriter struct{ recordWriter }

func newJSONLWriter(w io.Writer) *jsonlWriter { return &jsonlWriter{recordWriter{w: w}} }

// write buffers l as one line (appendEventLine: encoding/json's bytes).
func (j *jsonlWriter) write(l *eventLine) {
	if j.err != nil {
		return
	}
	j.buf = append(appendEventLine(j.buf, l), '\n')
	j.flushFull()
}
