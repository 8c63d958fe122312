package tracker

import (
	"slices"
	"time"

	"github.com/process-watchman/watchman/internal/waitstatus"
)

// Identity names one process for its whole life: its PID and its start time
// in clock ticks since boot. A PID reused by a later process gives another
// Identity.
type Identity struct {
	PID        int
	StartTicks uint64
}

// Proc is what the tracker knows of one member.
type Proc struct {
	ID Identity
	// PPID is the parent as last observed: the forking process, or the
	// parent a scan showed (after a reparent, init or a subreaper).
	PPID int
	// Parent is the member that forked the process, as first observed
	// (0 for the root); unlike PPID it does not change on a reparent.
	Parent int
	// Depth is the number of fork generations below the root (root = 0).
	Depth int
	// Name is the command name (comm) as last observed.
	Name string
	// NamedAtExit says Name was given at the exit (Annotate), the one
	// learnt at the last exec having been lost.
	NamedAtExit bool
	// Cmdline is the command line as last captured, or nil.
	Cmdline []string
	// CmdlineTruncated says Cmdline was cut to a size limit.
	CmdlineTruncated bool
	// State is the /proc state letter as last observed, or 0 if unknown.
	State byte
	// Approx means StartTicks was derived from the fork event's timestamp
	// because /proc no longer showed the process; it may be a tick off.
	Approx bool
	// Threaded says the process has had more than one thread, so its
	// first thread's exit may not be the end of it.
	Threaded bool
	// FirstSeen is when the tracker learnt of the process.
	FirstSeen time.Time
	// InfoAt is when Name and Cmdline were learnt: a scan that started
	// earlier does not overwrite them.
	InfoAt time.Time

	// lastExit is the status of the last task exit of a process whose
	// first thread has exited while it may run on (see ExitTask);
	// leaderExit says the first thread's exit was seen.
	lastExit   *Exit
	leaderExit bool
	// byEvent says a fork event added the member (not a scan).
	byEvent bool
	// confirmed is the overrun epoch at which the member was last known
	// alive (see Overrun).
	confirmed uint64
}

// ChangeKind names a kind of Change.
type ChangeKind uint8

// The kinds of Change.
const (
	// Added: Proc joined the tree.
	Added ChangeKind = iota + 1
	// Execed: member Proc replaced its program; Proc has the new name.
	Execed
	// Removed: member Proc (its last state) left the tree; Exit says how.
	Removed
	// Upgraded: the kernel's exit status came for Proc.ID after it was
	// removed on a scan's or an inference's word; Exit is the new one.
	Upgraded
)

// Change is one mutation of the tree, in the order they happened. The
// caller drains them (DrainChanges) after each call and publishes them in
// one place: its index of members, its subscribers.
type Change struct {
	Kind ChangeKind
	// At is when it happened: the event's time, or when a scan noticed.
	At   time.Time
	Proc Proc
	Exit Exit
	// Repair says no kernel event reported it: a scan or a check of /proc
	// found it.
	Repair bool
	// Provisional says a Removed exit may be upgraded later (Upgraded):
	// the kernel's exit event for the process may still come.
	Provisional bool
	// Kernel is the kernel timestamp (CLOCK_MONOTONIC) of the event that
	// caused it, or 0.
	Kernel time.Duration
}

// Exit records the end of a member.
type Exit struct {
	ID Identity
	// Status is the raw wait status the kernel reported (256 = exit 1), valid
	// when Known.
	Status uint32
	// Known is false when the exit was inferred by a scan (the process
	// vanished) rather than reported by the kernel.
	Known bool
	// Time is when the exit happened (kernel timestamp) or was noticed.
	Time time.Time
	// Kernel is the kernel's CLOCK_MONOTONIC timestamp of the exit event,
	// or 0.
	Kernel time.Duration
	// Data is the caller's annotation of the exit (Annotate), carried
	// with it into pending exits and tombstones; the tracker never reads
	// it.
	Data any
}

// Code returns the exit code (0-255) of a normal exit, or -1 if the process
// was killed by a signal or the status is unknown.
func (e Exit) Code() int {
	if !e.Known {
		return -1
	}
	code, _, _ := waitstatus.Decode(e.Status)
	return code
}

// Signal returns the number of the signal that killed the process, or 0.
func (e Exit) Signal() int {
	if !e.Known {
		return 0
	}
	_, sig, _ := waitstatus.Decode(e.Status)
	return sig
}

// CoreDumped reports whether the killed process dumped core.
func (e Exit) CoreDumped() bool {
	_, _, core := waitstatus.Decode(e.Status)
	return e.Known && core
}

// Tombstone is the last state of a removed member.
type Tombstone struct {
	Proc Proc
	// Removed is when the process was removed from the tree.
	Removed time.Time
	// Exit is its exit record.
	Exit Exit
}

// Changes is what happened since the previous Take.
type Changes struct {
	// Added lists members added, in the order they were added.
	Added []Identity
	// Removed lists members removed, in the order they were removed. A
	// process added and removed since the previous Take is in both.
	Removed []Identity
	// Exits lists the exit of every removed member, and of the root.
	Exits []Exit
	// Tombstones holds the last state of every removed member when
	// Config.Tombstones is set.
	Tombstones []Tombstone
	// Truncated is set when MaxDepth or MaxMembers kept a process out.
	Truncated bool
	// Repairs counts the corrections a scan made to the event-driven set:
	// members found missing, vanished members, identities fixed.
	Repairs int
	// Compacted counts the processes dropped from Added, Removed, Exits and
	// Tombstones because Take was not called before Config.MaxPending
	// changes piled up. Only processes that were both added and removed are
	// dropped from Added and Removed, so the live set still follows from
	// them; their exits and tombstones are lost.
	Compacted int
}

// Config bounds the tracker.
type Config struct {
	// MaxDepth is the deepest generation tracked (root = 0); 0 means no
	// limit.
	MaxDepth int
	// MaxMembers caps the number of members besides the root; 0 means no
	// limit.
	MaxMembers int
	// IncludeRoot reports the root among Added, Removed and Members.
	IncludeRoot bool
	// Tombstones is how many tombstones Tombstones keeps (oldest dropped
	// first); 0 keeps none.
	Tombstones int
	// GoneMemory is how long removed identities are remembered, so that
	// a scan read before a removal and applied after it does not add the
	// process back (and so that its lineage holds); the tracker forgets
	// older ones itself once many piled up. 0 means only PruneGone
	// forgets them.
	GoneMemory time.Duration
	// MaxPending bounds the changes kept between two Takes (Added plus
	// Removed); past it, the processes born and gone in between are
	// dropped (Changes.Compacted). 0 means no bound.
	MaxPending int
}

// Tracker holds the membership of one tree. It is not safe for concurrent
// use.
type Tracker struct {
	cfg       Config
	root      Identity
	rootAlive bool
	members   map[int]*Proc // by PID, the root included while it lives
	nonRoot   int           // members besides the root
	leaders   int           // members with a pending first-thread exit
	repairs   uint64        // all repairs, Take or not
	epoch     uint64        // overruns seen (see Overrun)
	pruned    time.Time     // the last self-prune of gone
	log       []Change      // mutations not drained yet

	// provisional holds members removed without the kernel's exit status
	// (or with an inferred one), by PID, so that a late exit event can
	// upgrade it; pruned with gone.
	provisional map[int]provisional

	pending    Changes
	tombstones []Tombstone // ring of the last cfg.Tombstones
	tombNext   int

	// gone holds the identities removed while /proc may still show them
	// (a process is reported by its exit event while it is still in
	// do_exit, and shows as running for a moment), so that a scan does not
	// add them back, with when they were removed. ApplyScan forgets those
	// /proc no longer shows, PruneGone those removed long enough ago.
	gone map[Identity]goneRec

	// scan scratch, reused
	index  map[int]int32
	status map[int]int8
	chain  []int32
	result ScanResult
}

// New returns a tracker whose root is the given live process, found at time
// at. The root counts as added on the first Take when IncludeRoot is set.
func New(root Identity, cfg Config, at time.Time) *Tracker {
	t := &Tracker{
		cfg:       cfg,
		root:      root,
		rootAlive: true,
		members:   make(map[int]*Proc),
		index:     make(map[int]int32),
		status:    make(map[int]int8),
		gone:      make(map[Identity]goneRec),

		provisional: make(map[int]provisional),
	}
	t.members[root.PID] = &Proc{ID: root, FirstSeen: at}
	if cfg.IncludeRoot {
		t.pending.Added = append(t.pending.Added, root)
	}
	return t
}

// Root returns the root identity.
func (t *Tracker) Root() Identity { return t.root }

// RootAlive reports whether the root is still running.
func (t *Tracker) RootAlive() bool { return t.rootAlive }

// Len returns the number of members besides the root.
func (t *Tracker) Len() int { return t.nonRoot }

// Member returns the member with this PID, the root included while it lives.
// The Proc must not be modified.
func (t *Tracker) Member(pid int) (*Proc, bool) {
	p, ok := t.members[pid]
	return p, ok
}

// IsMember reports whether pid is a live member or the live root. It is the
// per-event question, so it is one map lookup.
func (t *Tracker) IsMember(pid int) bool {
	_, ok := t.members[pid]
	return ok
}

// Members appends the members to dst in PID order: the root first if
// IncludeRoot is set and it lives.
func (t *Tracker) Members(dst []*Proc) []*Proc {
	start := len(dst)
	for _, p := range t.members {
		if p.ID == t.root && !t.cfg.IncludeRoot {
			continue
		}
		dst = append(dst, p)
	}
	slices.SortFunc(dst[start:], func(a, b *Proc) int { return a.ID.PID - b.ID.PID })
	return dst
}

// Copies appends copies of the members to dst, unsorted, with the same
// root rule as Members: a caller that holds a lock around the tracker
// copies under it and works on the copies after.
func (t *Tracker) Copies(dst []Proc) []Proc {
	for _, p := range t.members {
		if p.ID == t.root && !t.cfg.IncludeRoot {
			continue
		}
		dst = append(dst, *p)
	}
	return dst
}

// PIDs appends the member PIDs to dst, sorted, with the same root rule as
// Members.
func (t *Tracker) PIDs(dst []int) []int {
	start := len(dst)
	for pid, p := range t.members {
		if p.ID == t.root && !t.cfg.IncludeRoot {
			continue
		}
		dst = append(dst, pid)
	}
	slices.Sort(dst[start:])
	return dst
}

// Describe fills in what obs shows of member id: its name and command line
// (if read), unless they were learnt after obs was read (Proc.InfoAt), and
// its state, parent and threads. It does nothing if obs does not show the
// member alive.
func (t *Tracker) Describe(id Identity, obs *Observation) {
	p, ok := t.members[id.PID]
	if !ok || p.ID != id || !obs.Is(p.ID, p.Approx) {
		return
	}
	p.State, p.PPID = obs.State, obs.PPID
	p.Threaded = p.Threaded || obs.Threads > 1
	if obs.At.Before(p.InfoAt) {
		return
	}
	p.InfoAt = obs.At
	if obs.Comm != "" {
		p.Name = obs.Comm
	}
	if obs.HasCmdline {
		p.Cmdline, p.CmdlineTruncated = obs.Cmdline, obs.CmdlineTruncated
	}
}

// DrainChanges appends the changes since the previous call to dst, in
// order, and forgets them.
func (t *Tracker) DrainChanges(dst []Change) []Change {
	dst = append(dst, t.log...)
	clear(t.log)
	t.log = t.log[:0]
	return dst
}

// Take returns the changes since the previous Take and starts afresh.
func (t *Tracker) Take() Changes {
	c := t.pending
	t.pending = Changes{}
	t.repairs += uint64(c.Repairs)
	return c
}

// TotalRepairs counts every repair since New, taken or not.
func (t *Tracker) TotalRepairs() uint64 { return t.repairs + uint64(t.pending.Repairs) }

// Tombstones appends the kept tombstones to dst, oldest first.
func (t *Tracker) Tombstones(dst []Tombstone) []Tombstone {
	n := len(t.tombstones)
	if n < t.cfg.Tombstones {
		return append(dst, t.tombstones...)
	}
	dst = append(dst, t.tombstones[t.tombNext:]...)
	return append(dst, t.tombstones[:t.tombNext]...)
}

// canAdd checks the limits for a new member at depth; a refusal marks the
// changes truncated.
func (t *Tracker) canAdd(depth int) bool {
	if (t.cfg.MaxDepth > 0 && depth > t.cfg.MaxDepth) ||
		(t.cfg.MaxMembers > 0 && t.nonRoot >= t.cfg.MaxMembers) {
		t.pending.Truncated = true
		return false
	}
	return true
}

// add makes p a member; repair says a scan found it.
func (t *Tracker) add(p *Proc, repair bool, kernel time.Duration) {
	p.confirmed = t.epoch
	t.members[p.ID.PID] = p
	delete(t.provisional, p.ID.PID)
	t.nonRoot++
	t.pending.Added = append(t.pending.Added, p.ID)
	if repair {
		t.pending.Repairs++
	}
	t.log = append(t.log, Change{Kind: Added, At: p.FirstSeen, Proc: *p, Repair: repair, Kernel: kernel})
}

// remove takes a member out, records its exit and tombstone; repair says
// no kernel event reported it, so its status is unknown until one does.
func (t *Tracker) remove(p *Proc, exit Exit, repair bool) {
	delete(t.members, p.ID.PID)
	// Without the kernel's word on this process's end, or on the word of
	// its first thread's exit alone, a later exit event may correct it.
	prov := repair || p.lastExit != nil
	t.clearLeader(p)
	if repair {
		t.pending.Repairs++
	}
	if prov {
		t.provisional[p.ID.PID] = provisional{*p, exit.Time}
	}
	isRoot := p.ID == t.root
	if isRoot {
		t.rootAlive = false
	} else {
		t.nonRoot--
	}
	t.gone[p.ID] = goneRec{at: exit.Time, depth: p.Depth}
	if t.cfg.GoneMemory > 0 && len(t.gone) > goneBound && exit.Time.Sub(t.pruned) >= time.Second {
		t.PruneGone(exit.Time.Add(-t.cfg.GoneMemory))
		t.pruned = exit.Time
	}
	exit.ID = p.ID
	t.log = append(t.log, Change{Kind: Removed, At: exit.Time, Proc: *p, Exit: exit, Repair: repair, Provisional: prov, Kernel: exit.Kernel})
	t.pending.Exits = append(t.pending.Exits, exit)
	if isRoot && !t.cfg.IncludeRoot {
		return
	}
	t.pending.Removed = append(t.pending.Removed, p.ID)
	if t.cfg.MaxPending > 0 && len(t.pending.Added)+len(t.pending.Removed) > t.cfg.MaxPending {
		t.compact()
	}
	if t.cfg.Tombstones > 0 {
		ts := Tombstone{Proc: *p, Removed: exit.Time, Exit: exit}
		t.pending.Tombstones = append(t.pending.Tombstones, ts)
		if len(t.tombstones) < t.cfg.Tombstones {
			t.tombstones = append(t.tombstones, ts)
		} else {
			t.tombstones[t.tombNext] = ts
			t.tombNext = (t.tombNext + 1) % t.cfg.Tombstones
		}
	}
}

// compact drops the processes that were both added and removed since the
// last Take from the pending changes, and trims exits and tombstones to the
// same bound. The live set still follows from what is left.
func (t *Tracker) compact() {
	c := &t.pending
	born := make(map[Identity]bool, len(c.Added))
	for _, id := range c.Added {
		born[id] = true
	}
	both := make(map[Identity]bool)
	removed := c.Removed[:0]
	for _, id := range c.Removed {
		if born[id] {
			both[id] = true
			continue
		}
		removed = append(removed, id)
	}
	c.Removed = removed
	added := c.Added[:0]
	for _, id := range c.Added {
		if !both[id] {
			added = append(added, id)
		}
	}
	c.Added = added
	c.Compacted += len(both)
	keep := max(t.cfg.MaxPending/2, 1)
	if n := len(c.Exits) - keep; n > 0 {
		c.Exits = append(c.Exits[:0:0], c.Exits[n:]...)
	}
	if n := len(c.Tombstones) - keep; n > 0 {
		c.Tombstones = append(c.Tombstones[:0:0], c.Tombstones[n:]...)
	}
}

// goneBound is how many removed identities pile up before the tracker
// prunes them itself (Config.GoneMemory).
const goneBound = 4096

// goneRec is a removed member: when, and its depth, so that the
// descendants a scan shows under it keep their lineage.
type goneRec struct {
	at    time.Time
	depth int
}

// provisional is a member removed without the kernel's exit status, and
// when.
type provisional struct {
	proc Proc
	at   time.Time
}

// Provisional reports whether the tracker awaits the kernel's exit event of
// a process with this PID that it removed without it.
func (t *Tracker) Provisional(pid int) bool {
	_, ok := t.provisional[pid]
	return ok
}
