package main

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"os"
	"time"

	"golang.org/x/sys/unix"

	"github.com/process-watchman/watchman"
)

// subscribeBuffer is the capacity of pwatch's subscription: large, so that
// a burst of forks does not outrun the writers.
const subscribeBuffer = 1 << 16

// flushEvery bounds how long a line of --events or --trace stays in
// pwatch's buffer: what pwatch learned is on disk within this time, and a
// killed pwatch loses at most that much.
const flushEvery = 50 * time.Millisecond

// session follows one attached tree: it consumes the event stream, keeps
// the record, and feeds the outputs (JSON Lines, trace, human lines,
// metrics). It is used by one goroutine.
type session struct {
	a    *app
	out  *outputFlags
	w    *watchman.Watcher
	sub  *watchman.Subscription
	evc  <-chan watchman.Event // sub.C, nil once closed
	rec  *recorder
	mode watchman.Mode

	events  *jsonlWriter  // --events, or nil
	evFile  *os.File      // the file under events, or nil for stdout
	trace   *traceWriter  // --trace, or nil
	trFile  *os.File      // the file under trace
	human   *bufio.Writer // watch's human lines, or nil
	line    []byte        // the human line being written, reused
	stdJSON *jsonlWriter  // watch's --json lines on stdout, or nil
	metrics *metrics      // --metrics-addr, or nil

	flush      *time.Timer // fires flushEvery after the first unwritten line
	flushArmed bool
	// liveStdout: stdout is a terminal, and its lines are written at the
	// end of each batch of events. Otherwise (a file, a pipe, /dev/null)
	// they are written like the files', within flushEvery: a write per
	// batch cost a system call per event or two in a storm.
	liveStdout bool

	kids *children // pwatch run's children (COMMAND and adopted orphans), or nil

	begin     time.Time
	truncated bool // a Poll said limits kept processes out
	warned    map[string]bool
	// writeErr is the first write of a record (--events, --trace, stdout)
	// that failed.
	writeErr error
}

// newSession prepares a session on w; nothing is opened yet.
func newSession(a *app, out *outputFlags, w *watchman.Watcher, rec *recorder) *session {
	t := time.NewTimer(time.Hour)
	t.Stop()
	rec.polling = w.Mode() == watchman.ModePoll
	return &session{a: a, out: out, w: w, rec: rec, mode: w.Mode(), warned: map[string]bool{}, flush: t,
		liveStdout: isTerminal(a.stdout)}
}

// openFiles creates (or truncates) the output files. It is called once
// every flag has been checked. On error nothing is left open.
func (s *session) openFiles() error {
	if s.out.events != "" && s.out.events != "-" {
		f, err := os.Create(s.out.events)
		if err != nil {
			return fmt.Errorf("--events: %w", err)
		}
		s.evFile, s.events = f, newJSONLWriter(f)
	}
	if s.out.trace != "" {
		f, err := os.Create(s.out.trace)
		if err != nil {
			s.closeFiles()
			return fmt.Errorf("--trace: %w", err)
		}
		s.trFile = f
	}
	return nil
}

// sayMode prints the mode line once on stderr.
func (s *session) sayMode() {
	late := ""
	if d := s.out.coalescing(); d > 0 && s.mode == watchman.ModeConnector {
		late = fmt.Sprintf("; events read in batches, up to %v late (--coalesce)", d)
	}
	fmt.Fprintf(s.a.stderr, "pwatch: %s mode: %s%s\n", s.mode, escape(s.w.ModeReason()), late)
}

// start subscribes and records the members present now as of at.
func (s *session) start(at time.Time) error {
	s.sub = s.w.Subscribe(subscribeBuffer)
	s.evc = s.sub.C
	snap, err := s.w.Poll()
	if err != nil {
		return err
	}
	s.begin = at
	s.truncated = snap.Truncated
	s.rec.seed(snap.Processes, at)
	return nil
}

// startTrace starts the trace with what is recorded so far, once the root
// is known.
func (s *session) startTrace() {
	if s.trFile == nil {
		return
	}
	parent := -1
	if p := s.rec.procs[s.rec.root]; p != nil {
		parent = p.ppid
	}
	s.trace = newTraceWriter(s.trFile, s.begin, s.rec.root.PID, parent, string(s.mode))
	for _, p := range s.rec.order {
		s.trace.update(p)
	}
	s.armFlush()
}

// handle processes one event.
func (s *session) handle(ev *watchman.Event) {
	if s.rec.launcherExec(ev) {
		return
	}
	p := s.rec.apply(ev)
	if p == nil && ev.Type != watchman.EventLost {
		return // pwatch itself
	}
	var lifetime time.Duration
	if p != nil && ev.Type == watchman.EventExit {
		lifetime = p.lifetime(ev.Time)
	}
	name, cmdline := s.rec.eventView(ev)
	depth := s.rec.depth(ev.Process, ev.Depth)
	if s.events != nil || s.stdJSON != nil {
		l := newEventLine(ev, name, cmdline, depth, lifetime)
		if s.events != nil {
			s.events.write(&l)
		}
		if s.stdJSON != nil {
			s.stdJSON.write(&l)
		}
	}
	if s.trace != nil && p != nil {
		s.trace.update(p)
	}
	if s.human != nil {
		s.line = append(appendEvent(s.line[:0], ev, name, cmdline, depth, lifetime), '\n')
		s.human.Write(s.line) // a failure sticks in s.human, reported by its Flush
	}
	if s.metrics != nil {
		s.metrics.observe(ev)
	}
	if p != nil {
		s.countUsage(p)
	}
	s.armFlush()
}

// countUsage gives the metrics p's usage, once it is known, once.
func (s *session) countUsage(p *proc) {
	if s.metrics == nil || p.usageSeen || p.exit.Usage == nil {
		return
	}
	p.usageSeen = true
	s.metrics.observeUsage(p.exit.Usage)
}

// handleBatch handles ev and what else is already queued, then flushes
// the live output.
func (s *session) handleBatch(ev watchman.Event) {
	s.handle(&ev)
	s.drainQueued()
	s.flushLive()
}

// drainQueued handles the events already in the channel, without waiting.
func (s *session) drainQueued() {
	for {
		select {
		case ev, ok := <-s.evc:
			if !ok {
				s.evc = nil
				return
			}
			s.handle(&ev)
		default:
			return
		}
	}
}

// flushLive writes out the stdout output when stdout is a terminal, so
// that a reader sees events as they happen; otherwise the flush timer
// writes it (armFlush).
func (s *session) flushLive() {
	if !s.liveStdout {
		s.armFlush()
		return
	}
	s.flushStdout()
}

// flushStdout writes out what stdout's writer holds.
func (s *session) flushStdout() {
	if s.stdJSON != nil {
		s.wrote("stdout", s.stdJSON.flush())
	}
	if s.human != nil {
		s.wrote("stdout", s.human.Flush())
	}
}

// armFlush makes sure what the files' buffers hold (and stdout's, when
// it is no terminal) is written within flushEvery.
func (s *session) armFlush() {
	if s.flushArmed {
		return
	}
	if (s.events != nil && s.events.buffered()) || (s.trace != nil && s.trace.dirty()) || s.stdoutWaits() {
		s.flush.Reset(flushEvery)
		s.flushArmed = true
	}
}

// flushDue is the channel that says the files are due for a flush, or nil.
func (s *session) flushDue() <-chan time.Time {
	if s.flushArmed {
		return s.flush.C
	}
	return nil
}

// stdoutWaits says whether stdout, no terminal, holds unwritten lines.
func (s *session) stdoutWaits() bool {
	if s.liveStdout {
		return false
	}
	return (s.stdJSON != nil && s.stdJSON.buffered()) || (s.human != nil && s.human.Buffered() > 0)
}

// flushFiles writes out --events and --trace, and stdout when it is no
// terminal.
func (s *session) flushFiles() {
	s.flushArmed = false
	if !s.liveStdout {
		s.flushStdout()
	}
	if s.events != nil {
		s.wrote("--events", s.events.flush())
	}
	if s.trace != nil {
		s.wrote("--trace", s.trace.flush())
	}
}

// wrote records the outcome of writing an output: the first failure is
// reported at once, and makes pwatch's exit status exitOwnFailure.
func (s *session) wrote(what string, err error) {
	if err == nil {
		return
	}
	err = fmt.Errorf("%s: %w", what, err)
	if s.writeErr == nil {
		s.writeErr = err
	}
	s.warn("write "+what, err)
}

// poll asks the Watcher for the current tree (which, in polling mode,
// scans /proc and sends the changes as events), and records the
// tombstones it reports. Background errors are reported once.
func (s *session) poll() (watchman.Snapshot, bool) {
	snap, err := s.w.Poll()
	if err != nil {
		if !errors.Is(err, watchman.ErrClosed) {
			s.warn(err.Error(), err)
		}
		return snap, false
	}
	for i := range snap.Tombstones {
		p := s.rec.tombstone(&snap.Tombstones[i])
		if p == nil {
			continue
		}
		if s.trace != nil {
			s.trace.update(p)
		}
		s.countUsage(p)
	}
	s.truncated = s.truncated || snap.Truncated
	s.armFlush()
	return snap, true
}

// others counts the live members besides pwatch itself.
func (s *session) others() int {
	n := 0
	for _, pid := range s.w.LivePIDs() {
		if pid != s.rec.self.PID {
			n++
		}
	}
	return n
}

// warn prints a warning once per kind.
func (s *session) warn(kind string, err error) {
	if err == nil || s.warned[kind] {
		return
	}
	s.warned[kind] = true
	fmt.Fprintf(s.a.stderr, "pwatch: warning: %s\n", escape(err.Error()))
}

// finish closes the Watcher, handles the events still queued, ends the
// trace, and closes every output. Write failures are in s.writeErr.
func (s *session) finish(end time.Time) {
	s.w.Close()
	if s.sub != nil {
		for ev := range s.sub.C {
			s.handle(&ev)
		}
	}
	s.reapChildren()
	s.flush.Stop()
	s.flushArmed = false
	s.flushStdout()
	if s.events != nil {
		s.wrote("--events", s.events.flush())
	}
	if s.trace != nil {
		s.wrote("--trace", s.trace.close(s.rec, end))
	}
	s.closeFiles()
	s.metrics.close()
}

// closeFiles closes the output files.
func (s *session) closeFiles() {
	if s.evFile != nil {
		s.wrote("--events", s.evFile.Close())
		s.evFile = nil
	}
	if s.trFile != nil {
		s.wrote("--trace", s.trFile.Close())
		s.trFile = nil
	}
}

// usageSummary sums the usage of the exits, or is nil without --usage.
func (s *session) usageSummary() *usageSummary {
	if !s.out.usage {
		return nil
	}
	return summarizeUsage(s.rec.order, s.w.Stats().UsageReason)
}

// summary fills the parts of the summary that the record holds.
func (s *session) summary(verb string, end time.Time) *summary {
	r := s.rec
	alive := 0
	for _, p := range r.order {
		if !p.exited {
			alive++
		}
	}
	return &summary{
		Verb:      verb,
		Root:      r.procs[r.root],
		Wall:      end.Sub(s.begin),
		Processes: len(r.order),
		AtStart:   r.atStart,
		Peak:      r.peak,
		Failed:    r.failures(),
		Alive:     alive,
		Unknown:   r.unknown,
		Lost:      r.lost,
		Markers:   r.markers,
		Overrun:   r.overrun,
		Truncated: s.truncated,
		Usage:     s.usageSummary(),
		Limit:     s.out.listMax,
		Width:     summaryWidth(s.a.stderr),
		Events:    s.out.events,
	}
}

// isTerminal says whether w is an *os.File open on a terminal.
func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	sc, err := f.SyscallConn()
	if err != nil {
		return false
	}
	tty := false
	if err := sc.Control(func(fd uintptr) {
		_, terr := unix.IoctlGetTermios(int(fd), unix.TCGETS)
		tty = terr == nil
	}); err != nil {
		return false
	}
	return tty
}
