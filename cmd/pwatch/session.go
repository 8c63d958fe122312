package main

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"os"
	"time"

	"github.com/process-watchman/watchman"
)

// subscribeBuffer is the capacity of pwatch's subscription: large, so that
// a burst of forks does not outrun the writers.
const subscribeBuffer = 1 << 16

// session follows one attached tree: it consumes the event stream, keeps
// the record, and feeds the outputs (JSON Lines, human lines, metrics). It
// is used by one goroutine.
type session struct {
	a    *app
	out  *outputFlags
	w    *watchman.Watcher
	sub  *watchman.Subscription
	rec  *recorder
	mode watchman.Mode

	events  *jsonlWriter  // --events, or nil
	evFile  *os.File      // the file under events, or nil for stdout
	human   *bufio.Writer // watch's human lines, or nil
	stdJSON *jsonlWriter  // watch's --json lines on stdout, or nil
	metrics *metrics      // --metrics-addr, or nil

	begin     time.Time
	truncated bool // a Poll said limits kept processes out
	warned    map[string]bool
}

// newSession opens the outputs for w. On error nothing is left open.
func newSession(a *app, out *outputFlags, w *watchman.Watcher) (*session, error) {
	s := &session{a: a, out: out, w: w, rec: newRecorder(w.Root()), mode: w.Mode(), warned: map[string]bool{}}
	if out.events != "" && out.events != "-" {
		f, err := os.Create(out.events)
		if err != nil {
			return nil, usageError{fmt.Errorf("--events: %w", err)}
		}
		s.evFile, s.events = f, newJSONLWriter(f)
	}
	if out.trace != "" {
		// Fail now, not after a long run.
		f, err := os.OpenFile(out.trace, os.O_WRONLY|os.O_CREATE, 0o666)
		if err != nil {
			s.closeFiles()
			return nil, usageError{fmt.Errorf("--trace: %w", err)}
		}
		f.Close()
	}
	if out.metricsAddr != "" {
		s.metrics = newMetrics(w)
		if err := s.metrics.serve(out.metricsAddr, a.stderr); err != nil {
			s.metrics = nil
			s.closeFiles()
			return nil, err
		}
	}
	return s, nil
}

// sayMode prints the mode line once on stderr.
func (s *session) sayMode() {
	fmt.Fprintf(s.a.stderr, "pwatch: %s mode: %s\n", s.mode, s.w.ModeReason())
}

// start subscribes and records the members present now as of at.
func (s *session) start(at time.Time) error {
	s.sub = s.w.Subscribe(subscribeBuffer)
	snap, err := s.w.Poll()
	if err != nil {
		return err
	}
	s.begin = at
	s.rec.seed(snap.Processes, at)
	return nil
}

// handle processes one event.
func (s *session) handle(ev *watchman.Event) {
	p := s.rec.apply(ev)
	var lifetime time.Duration
	if p != nil && ev.Type == watchman.EventExit {
		lifetime = p.lifetime(ev.Time)
	}
	if s.events != nil || s.stdJSON != nil {
		l := newEventLine(ev, lifetime)
		if s.events != nil {
			s.events.write(&l)
		}
		if s.stdJSON != nil {
			s.stdJSON.write(&l)
		}
	}
	if s.human != nil {
		fmt.Fprintln(s.human, formatEvent(ev, lifetime))
	}
	if s.metrics != nil {
		s.metrics.observe(ev)
	}
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
		case ev, ok := <-s.sub.C:
			if !ok {
				return
			}
			s.handle(&ev)
		default:
			return
		}
	}
}

// flushLive writes out the stdout output so that a reader sees events as
// they happen.
func (s *session) flushLive() {
	if s.stdJSON != nil {
		s.warn("writing to stdout", s.stdJSON.flush())
	}
	if s.human != nil {
		s.warn("writing to stdout", s.human.Flush())
	}
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
		s.rec.tombstone(&snap.Tombstones[i])
	}
	s.truncated = s.truncated || snap.Truncated
	return snap, true
}

// warn prints a warning once per kind.
func (s *session) warn(kind string, err error) {
	if err == nil || s.warned[kind] {
		return
	}
	s.warned[kind] = true
	fmt.Fprintf(s.a.stderr, "pwatch: warning: %v\n", err)
}

// finish closes the Watcher, handles the events still queued, writes the
// trace, and closes every output. It returns the first error writing
// them.
func (s *session) finish(end time.Time) error {
	s.w.Close()
	if s.sub != nil {
		for ev := range s.sub.C {
			s.handle(&ev)
		}
	}
	var errs []error
	if s.stdJSON != nil {
		errs = append(errs, s.stdJSON.flush())
	}
	if s.human != nil {
		errs = append(errs, s.human.Flush())
	}
	if s.events != nil {
		if err := s.events.flush(); err != nil {
			errs = append(errs, fmt.Errorf("--events: %w", err))
		}
	}
	errs = append(errs, s.closeFiles())
	if s.out.trace != "" {
		doc := buildTrace(s.rec, s.begin, end, string(s.mode))
		if err := writeFileWith(s.out.trace, func(w io.Writer) error { return writeTrace(w, &doc) }); err != nil {
			errs = append(errs, fmt.Errorf("--trace: %w", err))
		}
	}
	s.metrics.close()
	return errors.Join(errs...)
}

func (s *session) closeFiles() error {
	if s.evFile == nil {
		return nil
	}
	err := s.evFile.Close()
	s.evFile = nil
	if err != nil {
		return fmt.Errorf("--events: %w", err)
	}
	return nil
}

// writeFileWith creates path and writes it with write.
func writeFileWith(path string, write func(io.Writer) error) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	if err := write(f); err != nil {
		f.Close()
		return err
	}
	return f.Close()
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
	}
}
