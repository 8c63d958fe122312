package main

import (
	"time"

	"github.com/process-watchman/watchman"
)

// proc is what pwatch learned of one process of the tree.
type proc struct {
	id      watchman.Identity
	ppid    int // the forking parent, or the parent at attach
	name    string
	cmdline []string
	depth   int
	// start is when the process joined: its fork event, or the start of
	// the watch for a process that was already there (then started holds
	// its real start time).
	start      time.Time
	started    time.Time
	exactStart bool // start is exact: a fork event, or pwatch started it
	exited     bool
	end        time.Time
	exit       watchman.Exit
}

// lifetime is how long the process lived (or has lived by at).
func (p *proc) lifetime(at time.Time) time.Duration {
	if p.exited {
		at = p.end
	}
	if p.exactStart {
		return max(at.Sub(p.start), 0)
	}
	if p.exited && p.exit.Lifetime > 0 {
		return p.exit.Lifetime
	}
	return max(at.Sub(p.started), 0)
}

// failed reports whether the process ended with a non-zero exit code or was
// killed by a signal.
func (p *proc) failed() bool {
	return p.exited && p.exit.StatusKnown && (p.exit.Code > 0 || p.exit.Signal > 0)
}

// recorder follows the tree from its events: every process seen, how many
// live at once, what was lost. It is used by one goroutine.
type recorder struct {
	root  watchman.Identity
	procs map[watchman.Identity]*proc
	order []*proc // in order of appearance
	live  int
	peak  int
	// atStart counts the members present when the watch began.
	atStart int
	// lost counts the events lost (as lost markers said), markers the
	// markers, overrun whether the kernel dropped events.
	lost    uint64
	markers int
	overrun bool
	// unknown counts exits whose status nobody reported (found by a /proc
	// scan).
	unknown int
}

func newRecorder(root watchman.Identity) *recorder {
	return &recorder{root: root, procs: make(map[watchman.Identity]*proc)}
}

// seed records the members present when the watch begins, as joining at
// at.
func (r *recorder) seed(members []watchman.ProcessInfo, at time.Time) {
	for i := range members {
		m := &members[i]
		p := r.add(m.Identity, at)
		p.ppid, p.name, p.cmdline, p.depth, p.started = m.PPID, m.Name, m.Cmdline, m.Depth, m.Started
		if m.Started.IsZero() || m.Started.After(at) {
			p.started = at
		}
	}
	r.atStart = len(r.order)
}

func (r *recorder) add(id watchman.Identity, at time.Time) *proc {
	p := &proc{id: id, start: at, started: at}
	r.procs[id] = p
	r.order = append(r.order, p)
	r.live++
	r.peak = max(r.peak, r.live)
	return p
}

// get returns the record of id, making one that starts at at if there is
// none.
func (r *recorder) get(ev *watchman.Event) *proc {
	if p := r.procs[ev.Process]; p != nil {
		return p
	}
	p := r.add(ev.Process, ev.Time)
	p.ppid, p.name, p.cmdline, p.depth = ev.PPID, ev.Name, ev.Cmdline, ev.Depth
	return p
}

// apply records one event and returns the process it is about (nil for a
// lost marker).
func (r *recorder) apply(ev *watchman.Event) *proc {
	switch ev.Type {
	case watchman.EventFork:
		if p := r.procs[ev.Process]; p != nil {
			return p
		}
		p := r.get(ev)
		p.exactStart = true
		return p
	case watchman.EventExec:
		p := r.get(ev)
		p.name, p.cmdline = ev.Name, ev.Cmdline
		return p
	case watchman.EventExit:
		p := r.get(ev)
		if ev.Name != "" {
			p.name = ev.Name
		}
		if ev.Cmdline != nil {
			p.cmdline = ev.Cmdline
		}
		if ev.Exit != nil {
			r.ended(p, *ev.Exit, ev.Time)
		}
		return p
	case watchman.EventLost:
		r.lost += ev.Lost
		r.markers++
		r.overrun = r.overrun || ev.Overrun
	}
	return nil
}

// ended records how p ended, once.
func (r *recorder) ended(p *proc, x watchman.Exit, at time.Time) {
	if p.exited {
		// A tombstone came first; the event's status and time are the
		// kernel's.
		if x.StatusKnown && !p.exit.StatusKnown {
			r.unknown--
			p.exit, p.end = x, at
		}
		return
	}
	p.exited, p.exit, p.end = true, x, at
	if !x.StatusKnown {
		r.unknown++
	}
	r.live = max(r.live-1, 0)
}

// tombstone records a removed member that Poll reported, for the case that
// its events were lost.
func (r *recorder) tombstone(ts *watchman.Tombstone) {
	p := r.procs[ts.Identity]
	if p == nil {
		p = r.add(ts.Identity, ts.Started)
		p.ppid, p.name, p.cmdline, p.depth, p.started = ts.PPID, ts.Name, ts.Cmdline, ts.Depth, ts.Started
	}
	if !p.exited {
		at := ts.Exit.Time
		if at.IsZero() {
			at = ts.Removed
		}
		r.ended(p, ts.Exit, at)
	}
}

// failures returns the processes that failed, in order of appearance.
func (r *recorder) failures() []*proc {
	var out []*proc
	for _, p := range r.order {
		if p.failed() {
			out = append(out, p)
		}
	}
	return out
}
