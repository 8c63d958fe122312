package tracker

import "time"

// Seen says what /proc showed of a process.
type Seen int8

// The values of Seen.
const (
	// SeenUnknown: /proc could not be read (EMFILE, EACCES under hidepid,
	// EIO...). Nothing is decided on it: a member stays a member.
	SeenUnknown Seen = iota
	// SeenAlive: /proc shows a live process with that PID (see
	// Observation.StartTicks for whether it is the same process).
	SeenAlive
	// SeenGone: /proc has no such PID (ENOENT/ESRCH), or shows it a zombie
	// or dead. Only this means gone.
	SeenGone
)

// Observation is what /proc showed of one process at one time. The caller
// reads it before it takes any lock and hands it to the tracker, which
// decides from values alone.
type Observation struct {
	PID  int
	Seen Seen
	// At is when the read started: information read then is newer than
	// what was learnt before At, and older than what was learnt after.
	At time.Time
	// The rest is valid when Seen is SeenAlive.
	StartTicks uint64
	PPID       int
	State      byte
	Threads    int
	// Comm is the command name; HasCmdline says Cmdline was read (a
	// process with an empty command line has HasCmdline and a nil
	// Cmdline).
	Comm             string
	Cmdline          []string
	CmdlineTruncated bool
	HasCmdline       bool
	// Err is the read error of SeenUnknown.
	Err error
}

// Is reports whether the observation shows the process id is alive, with
// the start-time tolerance of approx identities.
func (o *Observation) Is(id Identity, approx bool) bool {
	return o != nil && o.Seen == SeenAlive && o.PID == id.PID && SameStart(id.StartTicks, o.StartTicks, approx)
}

// Overrun records that the kernel dropped events: from now on every member
// is unconfirmed (its exit may have been missed and its PID reused) until
// a scan or walk that started after this call shows it alive. A fork from
// an unconfirmed member is checked against its start time (Fork's parent
// observation; see NeedsParentCheck).
func (t *Tracker) Overrun() { t.epoch++ }

// Epoch returns the overrun count; a scan records it when it starts
// (ScanOptions.Epoch).
func (t *Tracker) Epoch() uint64 { return t.epoch }

// NeedsParentCheck reports whether a fork from pid must come with an
// observation of pid: pid is a member whose exit may have been missed.
func (t *Tracker) NeedsParentCheck(pid int) bool {
	p, ok := t.members[pid]
	return ok && p.confirmed < t.epoch
}

// Fork applies the kernel's report that process parentTGID forked a new
// process child (not a thread: see Thread). If the parent is a member, the
// child joins with the parent's name and command line (a fork runs the
// parent's image until it calls exec) and Fork returns it; otherwise nil.
//
// approx marks a start time derived from the event's timestamp because
// /proc no longer showed the child. parent is an observation of the parent
// made before the call, required where NeedsParentCheck says so (else it
// may be nil): a live parent with another start time means the member
// exited unseen and a stranger forked under its PID, so the stranger's
// child is refused and the member removed. A parent gone by then cannot be
// checked, and its child is taken.
func (t *Tracker) Fork(parentTGID int, child Identity, approx bool, at time.Time, kernel time.Duration, parent *Observation) *Proc {
	if child.PID == parentTGID || child.PID <= 0 {
		return nil
	}
	if old, ok := t.members[child.PID]; ok {
		if SameStart(old.ID.StartTicks, child.StartTicks, approx || old.Approx) {
			return nil // a scan found it first
		}
		// The PID was reused, so its old holder exited unseen.
		t.remove(old, Exit{Time: at}, true)
	}
	p, ok := t.members[parentTGID]
	if !ok {
		return nil
	}
	if p.confirmed < t.epoch && parent != nil && parent.Seen == SeenAlive {
		if !parent.Is(p.ID, p.Approx) {
			t.remove(p, Exit{Time: at}, true)
			return nil
		}
		p.confirmed = t.epoch
	}
	if !t.canAdd(p.Depth + 1) {
		return nil
	}
	c := &Proc{
		ID:               child,
		PPID:             parentTGID,
		Parent:           parentTGID,
		Depth:            p.Depth + 1,
		Name:             p.Name,
		Cmdline:          p.Cmdline,
		CmdlineTruncated: p.CmdlineTruncated,
		State:            'R',
		Approx:           approx,
		FirstSeen:        at,
		InfoAt:           at,
		byEvent:          true,
	}
	t.add(c, false, kernel)
	return c
}

// Thread records that member tgid started a thread: its first thread's
// exit may no longer be the end of it.
func (t *Tracker) Thread(tgid int) {
	if p, ok := t.members[tgid]; ok {
		p.Threaded = true
	}
}

// Exec applies the kernel's report that member pid replaced its program.
// The new image has a single thread, so a first-thread exit seen before
// (the kernel ends the first thread when another one execs) is forgotten.
// obs, read after the event, gives the new name and command line when it
// shows the same process; otherwise the name is unknown (empty): the old
// one would be wrong. It reports whether pid was a member.
func (t *Tracker) Exec(pid int, obs *Observation, at time.Time, kernel time.Duration) bool {
	p, ok := t.members[pid]
	if !ok {
		return false
	}
	t.clearLeader(p)
	p.Threaded = false
	p.InfoAt = at
	if obs.Is(p.ID, p.Approx) {
		p.Name, p.State = obs.Comm, obs.State
		p.Cmdline, p.CmdlineTruncated = nil, false
		if obs.HasCmdline {
			p.Cmdline, p.CmdlineTruncated = obs.Cmdline, obs.CmdlineTruncated
		}
		p.InfoAt = obs.At
	} else {
		p.Name, p.Cmdline, p.CmdlineTruncated = "", nil, false
	}
	t.log = append(t.log, Change{Kind: Execed, At: at, Proc: *p, Kernel: kernel})
	return true
}

// ExecImage applies the kernel's report that member pid exec'd, with the
// new image's name and command line as the kernel recorded them at the
// exec (hasCmdline false: no command line is kept), instead of an
// observation read from /proc later, when a short-lived process may be
// gone. The exec event's TGID is the member's only while its exit cannot
// have been missed: after an overrun, until a look confirms it, the PID
// may have passed to another process, whose exec this would be. ExecImage
// then applies nothing and returns false, and so for a non-member; the
// caller observes /proc and calls Exec.
func (t *Tracker) ExecImage(pid int, comm string, cmdline []string, truncated, hasCmdline bool, at time.Time, kernel time.Duration) bool {
	p, ok := t.members[pid]
	if !ok || p.confirmed < t.epoch {
		return false
	}
	obs := Observation{PID: pid, Seen: SeenAlive, At: at, StartTicks: p.ID.StartTicks, PPID: p.PPID, State: p.State,
		Comm: comm, Cmdline: cmdline, CmdlineTruncated: truncated, HasCmdline: hasCmdline}
	return t.Exec(pid, &obs, at, kernel)
}

// ExitTask applies the kernel's report that task tid of process tgid
// exited with the wait status status; ppid is the parent at exit (0 if
// unknown).
//
// A single-threaded member's exit removes it at once. The first thread's
// exit of a process that has had other threads is not the end of it: the
// other threads may run on, or a thread other than the first is calling
// exec (the kernel ends the first thread, then reports the exec, and the
// caller takes over the PID). ExitTask then returns true: the caller
// observes the process in /proc, lets every event queued until then be
// applied, and calls ConfirmExits with the observation. A later thread exit
// of such a process returns true again, with its status kept as the
// process's (a group exit gives every thread the same status).
//
// The exit of a PID that is not a member may be the kernel's report of a
// member that a scan already declared gone: its status then upgrades the
// one recorded (Change Upgraded).
func (t *Tracker) ExitTask(tid, tgid, ppid int, status uint32, at time.Time, kernel time.Duration) (check bool) {
	p, ok := t.members[tgid]
	if ok && ppid > 0 && tid == tgid {
		p.PPID = ppid // the parent at exit; reparents send no event
	}
	if !ok {
		if tid == tgid {
			t.upgrade(tgid, Exit{Status: status, Known: true, Time: at, Kernel: kernel})
		}
		return false
	}
	x := Exit{Status: status, Known: true, Time: at, Kernel: kernel}
	if tid == tgid && !p.Threaded && p.lastExit == nil {
		t.remove(p, x, false)
		return false
	}
	if tid != tgid && p.lastExit == nil {
		return false // a thread of a running process
	}
	if p.lastExit == nil {
		t.leaders++
	}
	p.lastExit = &x
	if tid == tgid {
		p.leaderExit = true
	}
	return true
}

// PendingExits appends the members whose first thread has exited while the
// process may run on: each awaits an observation (ConfirmExits).
func (t *Tracker) PendingExits(dst []Identity) []Identity {
	if t.leaders == 0 {
		return dst
	}
	for _, p := range t.members {
		if p.lastExit != nil {
			dst = append(dst, p.ID)
		}
	}
	return dst
}

// ConfirmExits decides the members awaiting an observation (ExitTask) from
// observations read before every event queued at the time was applied: one
// that /proc showed gone, or under its PID another process, is removed
// with the status of its last task's exit; one still running stays, and
// its later thread exits ask again. An exit decided this way may still be
// upgraded by a kernel exit event that comes later (ExitTask).
func (t *Tracker) ConfirmExits(obs []Observation, at time.Time) {
	for i := range obs {
		o := &obs[i]
		p, ok := t.members[o.PID]
		if !ok || p.lastExit == nil || o.Seen == SeenUnknown || o.Is(p.ID, p.Approx) {
			continue
		}
		x := *p.lastExit
		if x.Time.IsZero() {
			x.Time = at
		}
		t.remove(p, x, false)
	}
}

// clearLeader forgets a pending first-thread exit.
func (t *Tracker) clearLeader(p *Proc) {
	if p.lastExit != nil {
		p.lastExit, p.leaderExit = nil, false
		t.leaders--
	}
}

// upgrade gives a member removed without the kernel's word (a scan found
// it gone, or its threads' exits were inferred) the kernel's exit status.
// Annotate sets Data on the exit of id wherever the tracker keeps it: in
// the pending exits and tombstones, and in the tombstone record; name, if
// not empty, becomes the name of a tombstone that has none (NamedAtExit).
// Changes already drained are the caller's to update. It reports whether
// id's exit was found.
func (t *Tracker) Annotate(id Identity, data any, name string) bool {
	found := false
	for i := range t.pending.Exits {
		if t.pending.Exits[i].ID == id {
			t.pending.Exits[i].Data, found = data, true
		}
	}
	name1 := func(p *Proc) {
		if p.Name == "" && name != "" {
			p.Name, p.NamedAtExit = name, true
		}
	}
	for i := range t.pending.Tombstones {
		if ts := &t.pending.Tombstones[i]; ts.Proc.ID == id {
			ts.Exit.Data, found = data, true
			name1(&ts.Proc)
		}
	}
	for i := range t.tombstones {
		if ts := &t.tombstones[i]; ts.Proc.ID == id {
			ts.Exit.Data, found = data, true
			name1(&ts.Proc)
		}
	}
	return found
}

func (t *Tracker) upgrade(pid int, x Exit) {
	pr, ok := t.provisional[pid]
	if !ok {
		return
	}
	delete(t.provisional, pid)
	id := pr.proc.ID
	x.ID = id
	// The new word on the exit keeps the caller's annotation.
	keep := func(old *Exit) {
		d := old.Data
		*old = x
		if old.Data == nil {
			old.Data = d
		}
	}
	for i := range t.pending.Exits {
		if t.pending.Exits[i].ID == id {
			keep(&t.pending.Exits[i])
		}
	}
	for i := range t.pending.Tombstones {
		if t.pending.Tombstones[i].Proc.ID == id {
			keep(&t.pending.Tombstones[i].Exit)
		}
	}
	for i := range t.tombstones {
		if t.tombstones[i].Proc.ID == id {
			keep(&t.tombstones[i].Exit)
		}
	}
	t.log = append(t.log, Change{Kind: Upgraded, At: x.Time, Proc: pr.proc, Exit: x, Kernel: x.Kernel})
}
