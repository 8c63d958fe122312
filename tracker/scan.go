package tracker

import "time"

// Entry is one process of a host scan, as /proc/PID/stat shows it.
type Entry struct {
	PID, PPID  int
	StartTicks uint64
	// Live is false for a zombie or dead process (see reconcile.IsLive).
	Live  bool
	State byte
}

// ApproxTolerance is how many ticks a start time derived from a fork event's
// timestamp may differ from the one /proc shows for the same process.
const ApproxTolerance = 2

// matches reports whether a scanned process is this member.
func (p *Proc) matches(e *Entry) bool {
	if p.ID.StartTicks == e.StartTicks {
		return true
	}
	if !p.Approx {
		return false
	}
	d := int64(p.ID.StartTicks) - int64(e.StartTicks)
	return d >= -ApproxTolerance && d <= ApproxTolerance
}

// Values of the scan's per-PID memo.
const (
	unknown int8 = iota
	notMember
	isMember
)

// ApplyScan reconciles the tree with a complete scan of the host taken at
// time at: members the scan does not show alive are removed (their exits are
// not Known), and live processes whose parent is a member are added, as are
// their descendants. With repair set, the corrections are counted in
// Changes.Repairs, since an event-driven tracker should have had them
// already.
//
// It returns the indexes in entries of the processes it added, so that the
// caller can fill in their names and command lines; the slice is reused by
// the next call. IndexOf finds a member's entry until the next call.
func (t *Tracker) ApplyScan(entries []Entry, at time.Time, repair bool) []int {
	clear(t.index)
	clear(t.status)
	t.added = t.added[:0]
	for i := range entries {
		t.index[entries[i].PID] = int32(i)
	}

	// Members the scan does not show alive are gone; the root first.
	for pid, p := range t.members {
		i, ok := t.index[pid]
		if ok && entries[i].Live && p.matches(&entries[i]) {
			e := &entries[i]
			p.PPID = e.PPID
			p.State = e.State
			continue
		}
		t.remove(p, Exit{Time: at})
		if repair {
			t.pending.Repairs++
		}
	}

	// Live non-members whose ancestry reaches a member join, top down.
	for i := range entries {
		e := &entries[i]
		if t.status[e.PID] != unknown || t.IsMember(e.PID) {
			continue
		}
		if _, ok := t.gone[Identity{PID: e.PID, StartTicks: e.StartTicks}]; ok {
			t.status[e.PID] = notMember
			continue
		}
		t.chain = t.chain[:0]
		verdict := notMember
		var parent *Proc
		for cur := int32(i); ; {
			c := &entries[cur]
			if !c.Live || c.PID == c.PPID || len(t.chain) > len(entries) {
				break
			}
			t.chain = append(t.chain, cur)
			if p, ok := t.members[c.PPID]; ok {
				parent, verdict = p, isMember
				break
			}
			if s := t.status[c.PPID]; s != unknown {
				verdict = s
				if s == isMember {
					parent = t.members[c.PPID]
				}
				break
			}
			next, ok := t.index[c.PPID]
			if !ok {
				break
			}
			cur = next
		}
		if verdict != isMember || parent == nil {
			for _, ci := range t.chain {
				t.status[entries[ci].PID] = notMember
			}
			continue
		}
		// Add from the oldest generation down, so every parent is a member
		// before its child.
		for k := len(t.chain) - 1; k >= 0; k-- {
			c := &entries[t.chain[k]]
			depth := parent.Depth + 1
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
				FirstSeen: at,
			}
			t.add(p)
			t.status[c.PID] = isMember
			t.added = append(t.added, int(t.chain[k]))
			if repair {
				t.pending.Repairs++
			}
			parent = p
		}
	}
	for id := range t.gone {
		if i, ok := t.index[id.PID]; !ok || entries[i].StartTicks != id.StartTicks {
			delete(t.gone, id)
		}
	}
	return t.added
}

// IndexOf returns the index of pid in the entries of the last ApplyScan.
func (t *Tracker) IndexOf(pid int) (int, bool) {
	i, ok := t.index[pid]
	return int(i), ok
}
