package tracker

import "time"

// Entry is one process of a host scan, as /proc/PID/stat shows it.
type Entry struct {
	PID, PPID  int
	StartTicks uint64
	// Live is false for a zombie or dead process (see reconcile.IsLive).
	Live  bool
	State byte
	// Threaded says the process has more than one thread.
	Threaded bool
}

// ApproxTolerance is how many ticks a start time derived from a fork event's
// timestamp may differ from the one /proc shows for the same process.
const ApproxTolerance = 2

// SameStart reports whether a process whose start time /proc shows as
// ticks is the process known as known. approx says known was derived from
// a fork event's timestamp (Proc.Approx), so either may be up to
// ApproxTolerance ticks off, in either direction. It is the one start-time
// comparison of the project: tracker, hub and CLI all use it.
func SameStart(known, ticks uint64, approx bool) bool {
	if known == ticks {
		return true
	}
	if !approx {
		return false
	}
	d := int64(known) - int64(ticks)
	return d >= -ApproxTolerance && d <= ApproxTolerance
}

// matchesTicks reports whether a process started at ticks is this member.
func (p *Proc) matchesTicks(ticks uint64) bool {
	return SameStart(p.ID.StartTicks, ticks, p.Approx)
}

// Values of the scan's per-PID memo.
const (
	unknown int8 = iota
	notMember
	isMember
)

// ScanOptions says how ApplyScan treats what it finds.
type ScanOptions struct {
	// Repair counts the changes in Changes.Repairs: an event-driven
	// tracker should have had them already. The caller applies the scan
	// after every event queued when it started reading (a barrier), so
	// the scan sees no less than the events did.
	Repair bool
	// Epoch is the tracker's Epoch when the scan started: members the scan
	// shows alive are confirmed as of then (see Overrun).
	Epoch uint64
	// Since, if set, is when the scan started reading: members that a
	// fork event added after it (Proc.FirstSeen) may be missing from it and
	// are not judged.
	Since time.Time
	// Name, if set, gives the command name of entries[i] for a process the
	// scan adds, before the addition is logged.
	Name func(i int) string
}

// ScanResult is what ApplyScan did. Its slices are reused by the next
// call.
type ScanResult struct {
	// Added holds the indexes in the entries of the processes added.
	Added []int
	// Removed holds the members removed.
	Removed []Identity
}

// ApplyScan reconciles the tree with a complete scan of the host taken at
// time at. Members the scan does not show alive are removed (their exits are
// not Known until an exit event upgrades them); live processes whose parent
// is a member, or a member removed since the scan read it, join, and so do
// their descendants.
//
// A scan may be applied after events and scans that came after it was
// read: a removed identity it still shows is not added back for as long as
// the tracker remembers removals (Config.GoneMemory, PruneGone).
func (t *Tracker) ApplyScan(entries []Entry, at time.Time, opt ScanOptions) *ScanResult {
	clear(t.index)
	clear(t.status)
	r := &t.result
	r.Added, r.Removed = r.Added[:0], r.Removed[:0]
	for i := range entries {
		t.index[entries[i].PID] = int32(i)
	}

	// Members the scan does not show alive are gone.
	for pid, p := range t.members {
		if p.byEvent && !opt.Since.IsZero() && p.FirstSeen.After(opt.Since) {
			continue
		}
		i, ok := t.index[pid]
		if ok && entries[i].Live && p.matchesTicks(entries[i].StartTicks) {
			e := &entries[i]
			p.PPID = e.PPID
			p.State = e.State
			p.Threaded = p.Threaded || e.Threaded
			p.confirmed = max(p.confirmed, opt.Epoch)
			continue
		}
		r.Removed = append(r.Removed, p.ID)
		t.removeFound(p, at, opt.Repair)
	}

	// Live non-members whose ancestry reaches a member join, top down.
	for i := range entries {
		e := &entries[i]
		if t.status[e.PID] != unknown || t.IsMember(e.PID) {
			continue
		}
		t.chain = t.chain[:0]
		verdict := notMember
		parentDepth := 0
		for cur := int32(i); ; {
			c := &entries[cur]
			if !c.Live || c.PID == c.PPID || len(t.chain) > len(entries) {
				break
			}
			if _, ok := t.gone[Identity{PID: c.PID, StartTicks: c.StartTicks}]; ok {
				break
			}
			t.chain = append(t.chain, cur)
			if p, ok := t.members[c.PPID]; ok {
				verdict, parentDepth = isMember, p.Depth
				break
			}
			// A parent that was a member and exited since the scan read
			// it: its children are still the tree's (orphans of it).
			if pi, ok := t.index[c.PPID]; ok {
				pe := &entries[pi]
				if g, ok := t.gone[Identity{PID: pe.PID, StartTicks: pe.StartTicks}]; ok && pe.PID != c.PID {
					verdict, parentDepth = isMember, g.depth
					break
				}
			}
			if s := t.status[c.PPID]; s != unknown {
				verdict = s
				if s == isMember {
					if p, ok := t.members[c.PPID]; ok {
						parentDepth = p.Depth
					}
				}
				break
			}
			next, ok := t.index[c.PPID]
			if !ok {
				break
			}
			cur = next
		}
		if verdict != isMember {
			for _, ci := range t.chain {
				t.status[entries[ci].PID] = notMember
			}
			continue
		}
		// From the oldest generation down, so every parent joins before
		// its child.
		for k := len(t.chain) - 1; k >= 0; k-- {
			c := &entries[t.chain[k]]
			depth := parentDepth + 1
			if !t.canAdd(depth) {
				for _, ci := range t.chain[:k+1] {
					t.status[entries[ci].PID] = notMember
				}
				break
			}
			p := &Proc{
				ID:        Identity{PID: c.PID, StartTicks: c.StartTicks},
				PPID:      c.PPID,
				Parent:    c.PPID,
				Depth:     depth,
				State:     c.State,
				Threaded:  c.Threaded,
				FirstSeen: at,
				InfoAt:    at,
			}
			if opt.Name != nil {
				p.Name = opt.Name(int(t.chain[k]))
			}
			t.add(p, opt.Repair, 0)
			r.Added = append(r.Added, int(t.chain[k]))
			t.status[c.PID] = isMember
			parentDepth = depth
		}
	}

	return r
}

// IndexOf returns the index of pid in the entries of the last ApplyScan.
func (t *Tracker) IndexOf(pid int) (int, bool) {
	i, ok := t.index[pid]
	return int(i), ok
}

// removeFound removes a member that /proc showed gone. A process whose
// first thread's exit was seen ends with that status, as far as it goes.
func (t *Tracker) removeFound(p *Proc, at time.Time, repair bool) {
	x := Exit{Time: at}
	if p.lastExit != nil {
		x = *p.lastExit
		repair = false
	}
	t.remove(p, x, repair)
}

// PruneGone forgets the identities removed before the given time. The record
// guards against a scan that shows an exiting process as still running,
// which lasts the moment of the process's exit, so a few seconds is
// plenty; pruning bounds its memory in event-driven use, where full scans
// (which also prune) are rare.
func (t *Tracker) PruneGone(before time.Time) {
	for id, g := range t.gone {
		if g.at.Before(before) {
			delete(t.gone, id)
		}
	}
	for pid, pr := range t.provisional {
		if pr.at.Before(before) {
			delete(t.provisional, pid)
		}
	}
}

// WasMember reports whether id was a member removed recently (within what
// PruneGone keeps).
func (t *Tracker) WasMember(id Identity) bool {
	_, ok := t.gone[id]
	return ok
}

// GoneLen returns how many removed identities are remembered.
func (t *Tracker) GoneLen() int { return len(t.gone) }
