package main

import (
	"strings"
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
	// reaped says pwatch reaped the process (COMMAND, or an orphan that
	// came back to pwatch), which gives its wait status and rusage.
	reaped bool
	rusage rusage
	// usageSeen says the metrics have counted exit.Usage.
	usageSeen bool
	// traced is how far the trace has written the process.
	traced traceState
	// killed says pwatch signalled the process to end it.
	killed bool
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
	if p.killed && p.exit.Signal > 0 {
		// pwatch killed it (--kill-left, --timeout): the summary says
		// that on a line of its own.
		return false
	}
	return p.exited && p.exit.StatusKnown && (p.exit.Code > 0 || p.exit.Signal > 0)
}

// recorder follows the tree from its events: every process seen, how many
// live at once, what was lost. It is used by one goroutine.
type recorder struct {
	root watchman.Identity
	// self is pwatch run itself, the Watcher's root, which is not part of
	// the record (zero for watch).
	self watchman.Identity
	// command is COMMAND's argument vector, exact (run), and commandName
	// its name: what the root shows while it is pwatch's launcher.
	command     []string
	commandName string
	// noCmdline is --no-cmdline: command lines are not recorded.
	noCmdline bool
	// launcherName is the command name of pwatch's own binary, which the
	// root has until it execs COMMAND.
	launcherName string
	// polling says the Watcher scans /proc: its fork events come from
	// scans, whatever their Synthetic says, and their times are not the
	// forks'.
	polling bool
	// depthOff is subtracted from the Watcher's depths: 1 in run, where
	// the Watcher's root is pwatch itself and COMMAND its child.
	depthOff int

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
		if m.Identity == r.self {
			continue
		}
		p := r.add(m.Identity, at)
		p.ppid, p.depth, p.started = m.PPID, r.depth(m.Identity, m.Depth), m.Started
		p.name, p.cmdline = r.view(m.Identity, m.Name, m.Cmdline)
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
	p.ppid, p.depth = ev.PPID, r.depth(ev.Process, ev.Depth)
	p.name, p.cmdline = r.view(ev.Process, ev.Name, ev.Cmdline)
	return p
}

// depth is the depth pwatch reports for a Watcher depth d: 0 for the root
// only.
func (r *recorder) depth(id watchman.Identity, d int) int {
	d -= r.depthOff
	if id == r.root {
		return 0
	}
	// In polling mode an orphan first seen as pwatch's child has lost its
	// lineage; it is below the root all the same.
	return max(d, 1)
}

// view is what pwatch shows of a process's name and command line: the
// event's, except for the root of a run while it is pwatch's launcher
// (then COMMAND's, exactly as given), or when the event's command line is
// COMMAND's (then the exact one, which keeps trailing empty and
// non-UTF-8 arguments).
func (r *recorder) view(id watchman.Identity, name string, cmdline []string) (string, []string) {
	if r.command == nil || id != r.root {
		return name, cmdline
	}
	launcher := r.isLauncher(name, cmdline) || len(cmdline) == 0 && (name == "" || name == r.commandName)
	if launcher || sameCommand(cmdline, r.command) {
		if launcher {
			name = r.commandName
		}
		if r.noCmdline {
			return name, nil
		}
		return name, r.command
	}
	return name, cmdline
}

// isLauncher says whether name and cmdline are those of pwatch's launcher
// before it execs COMMAND: a copy of pwatch (pwatch's name, and pwatch's
// command line or its own).
func (r *recorder) isLauncher(name string, cmdline []string) bool {
	return r.command != nil && (name == r.launcherName || len(cmdline) > 1 && cmdline[1] == gateArg)
}

// launcherExec says whether ev is the exec of pwatch's launcher (pwatch
// re-executing itself before it execs COMMAND), which is not COMMAND's.
func (r *recorder) launcherExec(ev *watchman.Event) bool {
	return ev.Type == watchman.EventExec && ev.Process == r.root && r.isLauncher(ev.Name, ev.Cmdline)
}

// sameCommand says whether got is exact, as the kernel's command line
// reads back through the library (which drops trailing empty arguments
// and may have cut the line).
func sameCommand(got, exact []string) bool {
	n := len(exact)
	for n > 0 && exact[n-1] == "" {
		n--
	}
	if len(got) == 0 || len(got) > n {
		return false
	}
	for i, g := range got {
		if g == exact[i] {
			continue
		}
		// A cut line ends in a prefix of the argument.
		return i == len(got)-1 && strings.HasPrefix(exact[i], g)
	}
	return len(got) == n
}

// eventView is the name and command line of an event as pwatch reports
// them.
func (r *recorder) eventView(ev *watchman.Event) (string, []string) {
	return r.view(ev.Process, ev.Name, ev.Cmdline)
}

// apply records one event and returns the process it is about (nil for a
// lost marker).
func (r *recorder) apply(ev *watchman.Event) *proc {
	if ev.Type != watchman.EventLost && ev.Process == r.self {
		return nil
	}
	switch ev.Type {
	case watchman.EventFork:
		if p := r.procs[ev.Process]; p != nil {
			return p
		}
		p := r.get(ev)
		// A scan found it (polling mode, a repair): it started before,
		// when its start ticks say.
		p.exactStart = !ev.Synthetic && !r.polling
		// (CreateTime reads two clocks: only where it is needed.)
		if !p.exactStart && ev.Process.StartTicks > 0 {
			if ct := ev.Process.CreateTime(); ct.Before(ev.Time) {
				p.started = ct
			}
		}
		return p
	case watchman.EventExec:
		p := r.get(ev)
		if name, cmdline := r.eventView(ev); name != "" || cmdline != nil {
			// (Neither: the new image was gone before it could be read.)
			p.name, p.cmdline = name, cmdline
		}
		return p
	case watchman.EventExit:
		p := r.get(ev)
		name, cmdline := r.eventView(ev)
		if name != "" {
			p.name = name
		}
		if cmdline != nil {
			p.cmdline = cmdline
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

// ended records how p ended, once; a later report adds what it knows
// better (the kernel's status, a taskstats Usage).
func (r *recorder) ended(p *proc, x watchman.Exit, at time.Time) {
	if p.exited {
		u := betterUsage(p.exit.Usage, x.Usage)
		// A tombstone came first; the event's status and time are the
		// kernel's.
		if x.StatusKnown && !p.exit.StatusKnown {
			r.unknown--
			p.exit, p.end = x, at
		}
		p.exit.Usage = u
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
func (r *recorder) tombstone(ts *watchman.Tombstone) *proc {
	if ts.Identity == r.self {
		return nil
	}
	p := r.procs[ts.Identity]
	if p == nil {
		p = r.add(ts.Identity, ts.Started)
		p.ppid, p.depth, p.started = ts.PPID, r.depth(ts.Identity, ts.Depth), ts.Started
		p.name, p.cmdline = r.view(ts.Identity, ts.Name, ts.Cmdline)
	}
	if !p.exited {
		at := ts.Exit.Time
		if at.IsZero() {
			at = ts.Removed
		}
		r.ended(p, ts.Exit, at)
	}
	return p
}

// betterUsage is the Usage to keep of two reports of one exit: the
// kernel's taskstats record over wait4's (which counts the children the
// process waited for, and the launcher's memory), else the first.
func betterUsage(have, got *watchman.Usage) *watchman.Usage {
	if have == nil || got != nil && got.Source == watchman.UsageTaskstats && have.Source != watchman.UsageTaskstats {
		return got
	}
	return have
}

// latest returns the record of the live process with pid, or nil.
func (r *recorder) latest(pid int) *proc {
	for i := len(r.order) - 1; i >= 0; i-- {
		if p := r.order[i]; p.id.PID == pid {
			if p.exited && p.exit.StatusKnown {
				return nil
			}
			return p
		}
	}
	return nil
}

// reaped records what wait4 said of a process pwatch reaped: id (its
// start ticks zero when they could not be read), with comm and ppid from
// /proc. It returns the record, made if the process was never seen (a
// short-lived orphan in polling mode).
func (r *recorder) reaped(id watchman.Identity, comm string, ppid int, x watchman.Exit, ru rusage) *proc {
	p := r.procs[id]
	if p == nil {
		p = r.latest(id.PID)
	}
	if p == nil {
		p = r.add(id, x.Time)
		p.ppid, p.depth = ppid, r.depth(id, r.depthOff+1)
		p.name, p.cmdline = r.view(id, comm, nil)
	}
	if comm != "" && id != r.root {
		// The zombie's name is the last one (an exec no event reported,
		// in polling mode).
		p.name = comm
	}
	p.reaped, p.rusage = true, ru
	r.ended(p, x, x.Time)
	return p
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
