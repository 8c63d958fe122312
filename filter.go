package watchman

import (
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/process-watchman/watchman/connector"
	"github.com/process-watchman/watchman/tracker"
)

// hubFilter is the hub's side of the kernel tree filter
// (connector.TreeFilter): an eBPF socket filter whose map holds the TGIDs
// whose events the writer needs, so the kernel drops the others before
// they are queued and the writer is not woken for them.
//
// The map must hold at least every PID in the writer's index (members of
// any tree on the hub) and in its provisional map (exits whose kernel
// status is awaited), from before their first event the writer acts on:
//   - a fork of a member: the program inserts the child itself, at the
//     fork, before any event of the child;
//   - a root at attach: added before the initial scan looks;
//   - processes a scan or walk finds: added by the repairer before it
//     queues the barrier behind which the scan is applied (preAdd), so
//     their events from then on are queued, and again when applied;
//   - while the program fails open (its map was full), every new member
//     is added as it joins.
//
// Entries are removed when no tree needs them: a member's exit, an
// upgraded provisional exit, a Watcher's Close, and processes that passed
// the filter but are no member of any tree (children refused by MaxDepth
// or MaxDescendants and their descendants, which the program inserts
// too). Removals are queued and made once per batch of events, in one
// system call (connector.TreeFilter.RemoveBatch): per exit, a lookup and
// a delete took a tenth of the writer's CPU in a storm. A removal can
// race a reuse of the PID by a member's new child (the kernel inserted
// it, and the removal deletes it): the writer remembers when it removed
// each PID until a barrier proves every older event applied, and a
// member fork no later than a removal of its child's PID puts the child
// back and has the trees repaired.
//
// When the map fills the program fails open (passes everything; the
// index still filters). The writer notices within a second, replaces the
// map with the true set, and after a barrier (so every fork queued
// meanwhile is in the index) replaces it again and clears the flag, if
// the set fills at most half the map; else it stays open and says so.
type hubFilter struct {
	f   *connector.TreeFilter // nil: user space filters alone
	max int

	mu      sync.Mutex  // guards reason, open and pending
	reason  string      // why there is no kernel filter
	open    bool        // failing open
	pending map[int]int // pre-added PIDs of looks not yet applied (counts)

	drops      []uint32       // PIDs to remove at the end of the batch (flushDrops)
	removed    map[int]uint64 // pid -> CLOCK_MONOTONIC ns of its removal
	loose      bool           // failing open: add every new member
	recovering bool           // a recovery waits for its barrier
	checked    time.Time      // last look at the fail-open flag
	failOpens  *atomic.Uint64 // the hub's count of times the program failed open
	errors     *atomic.Uint64 // the hub's count of map operations that failed
}

// openFilter attaches the tree filter to conn as cfg asks.
func openFilter(conn *connector.Conn, h *Hub) *hubFilter {
	hf := &hubFilter{removed: make(map[int]uint64), pending: make(map[int]int), failOpens: &h.filterFailOpens, errors: &h.filterErrors}
	n := h.cfg.FilterEntries
	switch {
	case n < 0:
		hf.reason = "turned off (HubConfig.FilterEntries < 0)"
		return hf
	case n == 0:
		n = DefaultFilterEntries
	}
	f, err := conn.AttachTreeFilter(n)
	if err != nil {
		hf.reason = err.Error()
		return hf
	}
	hf.f, hf.max = f, n
	return hf
}

// stats fills the filter's part of HubStats.
func (hf *hubFilter) stats(st *HubStats) {
	hf.mu.Lock()
	defer hf.mu.Unlock()
	st.KernelFilter, st.FilterReason, st.FilterOpen = hf.f != nil, hf.reason, hf.open
}

// describe says how events are filtered, for ModeReason.
func (hf *hubFilter) describe() string {
	hf.mu.Lock()
	defer hf.mu.Unlock()
	switch {
	case hf.f == nil:
		return "user-space filter (the kernel-side tree filter is not used: " + hf.reason + ")"
	case hf.open:
		return "kernel-side tree filter, failing open: its map of " + strconv.Itoa(hf.max) + " entries was full, every event reaches user space until a repair frees room"
	default:
		return "kernel-side tree filter (eBPF): only the trees' events reach user space"
	}
}

// monoNow is CLOCK_MONOTONIC now, in ns, through the writer's clock (the
// kernel's event timestamps are on it).
func (wr *writer) monoNow() uint64 { return uint64(wr.clock.sample().mono) }

// add puts pid in the map.
func (hf *hubFilter) add(pid int) {
	if hf.f != nil && hf.f.Add(uint32(pid)) != nil {
		hf.errors.Add(1)
	}
}

// needed reports whether some tree on the hub needs pid's events.
func (wr *writer) needed(pid int) bool {
	return len(wr.idx[pid]) > 0 || len(wr.prov[pid]) > 0
}

// filterDrop queues pid for removal from the map at the end of the batch
// (flushDrops), where it is removed unless a tree needs it by then.
func (wr *writer) filterDrop(pid int) {
	hf := wr.filter
	if hf.f == nil || wr.needed(pid) {
		return
	}
	hf.drops = append(hf.drops, uint32(pid))
}

// flushDrops removes the PIDs filterDrop queued that no tree needs and no
// look pre-added meanwhile, in one system call. A removal is not checked
// against the time the entry was inserted: a PID that a member's new
// child took since its old holder's exit is removed too, and the guard in
// filterChanges puts it back when that fork is applied.
func (wr *writer) flushDrops() {
	hf := wr.filter
	if len(hf.drops) == 0 {
		return
	}
	keep := hf.drops[:0]
	hf.mu.Lock() // preAdd marks pending under it, then adds: see below
	for _, pid := range hf.drops {
		if !wr.needed(int(pid)) && hf.pending[int(pid)] == 0 {
			keep = append(keep, pid)
		}
	}
	// Deleted under hf.mu: a preAdd of one of these either marked it
	// pending before (it is kept) or adds it after the delete.
	_, err := hf.f.RemoveBatch(keep)
	hf.mu.Unlock()
	if err != nil {
		hf.errors.Add(1)
	}
	// Read after the delete: a fork no later than this may have lost its
	// entry to it (the guard in filterChanges). PIDs that were not in the
	// map are remembered too; at worst that costs a needless re-add.
	at := wr.monoNow()
	for _, pid := range keep {
		hf.removed[int(pid)] = at
	}
	clear(hf.drops)
	hf.drops = hf.drops[:0]
}

// filterChanges keeps the map in step with changes of a tree, after the
// index took them.
func (wr *writer) filterChanges(chs []tracker.Change) {
	hf := wr.filter
	if hf.f == nil {
		return
	}
	for i := range chs {
		c := &chs[i]
		pid := c.Proc.ID.PID
		switch c.Kind {
		case tracker.Added:
			// A fork's child is in the map since the fork, unless the
			// program failed open or the PID was removed since.
			if c.Repair || c.Kernel == 0 || hf.loose {
				hf.add(pid)
			} else if t, ok := hf.removed[pid]; ok && uint64(c.Kernel) <= t {
				hf.add(pid)
				wr.r.rep.kick()
			}
		case tracker.Removed, tracker.Upgraded:
			wr.filterDrop(pid)
		}
	}
}

// filterStranger handles an event that passed the filter but concerns no
// tree: a process the program inserted (a child of a non-member in the
// map, a child refused by a tree's limits) is removed, so that neither
// it nor its descendants wake the writer again.
func (wr *writer) filterStranger(pid int) {
	hf := wr.filter
	if hf.f == nil || hf.loose {
		return
	}
	hf.mu.Lock()
	pending := hf.pending[pid] > 0
	hf.mu.Unlock()
	if !pending {
		wr.filterDrop(pid)
	}
}

// filterTick looks at the fail-open flag once a second and recovers,
// and forgets removals that every applied event is newer than.
func (wr *writer) filterTick(now time.Time) {
	hf := wr.filter
	if hf.f == nil || now.Sub(hf.checked) < time.Second {
		return
	}
	hf.checked = now
	if len(hf.removed) > 0 {
		sent := wr.monoNow()
		wr.barrier(func() {
			for pid, t := range hf.removed {
				if t <= sent {
					delete(hf.removed, pid)
				}
			}
		})
	}
	if hf.recovering {
		return
	}
	open, err := hf.f.FailedOpen()
	if err != nil || !open {
		return
	}
	if !hf.loose {
		hf.failOpens.Add(1)
		hf.loose = true
		hf.setOpen(true)
	}
	// The true set first, while the program still passes everything;
	// then, once every fork queued meanwhile is in the index, again, and
	// close the filter if the set leaves room.
	if hf.f.Replace(wr.filterSet()) != nil {
		hf.errors.Add(1)
		return
	}
	hf.recovering = true
	wr.barrier(func() {
		hf.recovering = false
		set := wr.filterSet()
		if hf.f.Replace(set) != nil {
			hf.errors.Add(1)
			return
		}
		if 2*len(set) > hf.max {
			return // stays open; checked again in a second
		}
		if hf.f.ClearFailOpen() != nil {
			hf.errors.Add(1)
			return
		}
		hf.loose = false
		hf.setOpen(false)
	})
}

func (hf *hubFilter) setOpen(open bool) {
	hf.mu.Lock()
	hf.open = open
	hf.mu.Unlock()
}

// filterSet is every PID some tree needs.
func (wr *writer) filterSet() []uint32 {
	set := make([]uint32, 0, len(wr.idx)+len(wr.prov))
	for pid := range wr.idx {
		set = append(set, uint32(pid))
	}
	for pid := range wr.prov {
		if len(wr.idx[pid]) == 0 {
			set = append(set, uint32(pid))
		}
	}
	return set
}

// preAdd puts in the map the processes a look at /proc found in w's tree
// that are not members yet, before the look is applied behind a barrier:
// their events from now on are queued, and applied after the look. For a
// walk these are its live processes; for a host scan, the live
// descendants of members by parent PID. Until unpend, the writer does not
// take their events for strangers'; what the tracker then refuses is
// removed at its next event (filterStranger). It returns the PIDs added.
func (rp *repairer) preAdd(w *Watcher, hs *hostScan) []int {
	hf := rp.r.filter
	if hf.f == nil {
		return nil
	}
	var fresh []int
	w.mu.Lock()
	if hs.walk != nil {
		for i := range hs.entries {
			if e := &hs.entries[i]; e.Live && !w.tr.IsMember(e.PID) {
				fresh = append(fresh, e.PID)
			}
		}
	} else {
		fresh = descendantsOf(hs.entries, func(pid int) bool { return pid == w.root.PID || w.tr.IsMember(pid) })
	}
	w.mu.Unlock()
	hf.mu.Lock()
	for _, pid := range fresh {
		hf.pending[pid]++
	}
	hf.mu.Unlock()
	for _, pid := range fresh {
		// TreeFilter's lock orders these with the writer's calls.
		if hf.f.Add(uint32(pid)) != nil {
			hf.errors.Add(1)
		}
	}
	return fresh
}

// unpend ends what preAdd began once its look was applied.
func (hf *hubFilter) unpend(pids []int) {
	hf.mu.Lock()
	for _, pid := range pids {
		if hf.pending[pid]--; hf.pending[pid] <= 0 {
			delete(hf.pending, pid)
		}
	}
	hf.mu.Unlock()
}

// descendantsOf returns the live entries below a process for which member
// is true, by parent PID, that are not members themselves.
func descendantsOf(entries []tracker.Entry, member func(int) bool) []int {
	kids := make(map[int][]int)
	var queue []int
	for i := range entries {
		e := &entries[i]
		if !e.Live {
			continue
		}
		if member(e.PPID) && !member(e.PID) {
			queue = append(queue, e.PID)
		}
		kids[e.PPID] = append(kids[e.PPID], e.PID)
	}
	var out []int
	seen := make(map[int]bool)
	for len(queue) > 0 {
		pid := queue[len(queue)-1]
		queue = queue[:len(queue)-1]
		if seen[pid] || member(pid) {
			continue
		}
		seen[pid] = true
		out = append(out, pid)
		queue = append(queue, kids[pid]...)
	}
	return out
}
