package watchman

import (
	"errors"
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/process-watchman/watchman/reconcile"
	"github.com/process-watchman/watchman/tracker"
)

// observe reads what /proc shows of pid, holding no lock: with comm its
// command name, and with cmdMax > 0 its command line (up to cmdMax bytes;
// fs must then be set). Only ENOENT/ESRCH or a zombie state mean gone;
// another error gives SeenUnknown with the error.
func observe(s *reconcile.Scanner, fs cmdliner, pid int, comm bool, cmdMax int) tracker.Observation {
	o := tracker.Observation{PID: pid, At: time.Now()}
	e, c, ok, err := s.Lookup(pid)
	switch {
	case err != nil:
		o.Seen, o.Err = tracker.SeenUnknown, err
		return o
	case !ok:
		o.Seen = tracker.SeenGone
		return o
	}
	o.StartTicks, o.PPID, o.State, o.Threads = e.StartTicks, e.PPID, e.State, e.NumThreads
	if !e.Live() {
		o.Seen = tracker.SeenGone
		return o
	}
	o.Seen = tracker.SeenAlive
	if comm {
		o.Comm = string(c)
	}
	if cmdMax > 0 {
		if args, trunc, err := fs.Cmdline(pid, cmdMax); err == nil {
			o.Cmdline, o.CmdlineTruncated, o.HasCmdline = args, trunc, true
		}
	}
	return o
}

// observeSettled is observe for a process a scan found, which may be in
// the middle of an exec: the kernel sets the new name before the new
// arguments, so for a moment /proc shows the new name and an empty command
// line. No event marks the end of that moment (the scan found the process
// without one), so an empty command line of a live process is read again,
// a few times, a millisecond apart. Kernel threads and zombies, whose
// command lines stay empty, are never members.
func observeSettled(s *reconcile.Scanner, fs cmdliner, pid int, comm bool, cmdMax int) tracker.Observation {
	o := observe(s, fs, pid, comm, cmdMax)
	for try := 0; try < 3 && o.Seen == tracker.SeenAlive && o.HasCmdline && len(o.Cmdline) == 0; try++ {
		time.Sleep(time.Millisecond)
		o = observe(s, fs, pid, comm, cmdMax)
	}
	return o
}

// hostScan is one look at /proc, as reconcile read it and as the tracker
// takes it: a scan of the whole host, or a walk of one tree (walk set).
type hostScan struct {
	start    time.Time
	overruns uint64 // the hub's overrun count at start
	scan     reconcile.Scan
	entries  []tracker.Entry
	walk     *reconcile.Walk
	walkIdx  []int // entries[i] is walk.Results[walkIdx[i]]
}

// commBytes returns the command name of entries[i], without copying.
func (hs *hostScan) commBytes(i int) []byte {
	if hs.walk != nil {
		return hs.walk.Comm(hs.walkIdx[i])
	}
	return hs.scan.CommBytes(i)
}

// comm returns the command name of entries[i].
func (hs *hostScan) comm(i int) string { return string(hs.commBytes(i)) }

// fromWalk makes hs the tree's part of /proc as a walk found it: live
// and exited processes; a member that could not be read is kept as it was
// (known), since it is not known to be gone. It returns how many could not
// be read.
func (hs *hostScan) fromWalk(wk *reconcile.Walk, known map[int]tracker.Entry) (unreadable int) {
	hs.walk = wk
	hs.entries, hs.walkIdx = hs.entries[:0], hs.walkIdx[:0]
	for k := range wk.Results {
		r := &wk.Results[k]
		switch r.Status {
		case reconcile.StatusAlive, reconcile.StatusExited:
			e := &r.Entry
			hs.entries = append(hs.entries, tracker.Entry{
				PID: e.PID, PPID: e.PPID, StartTicks: e.StartTicks, Live: r.Status == reconcile.StatusAlive,
				State: e.State, Threaded: e.NumThreads > 1,
			})
		case reconcile.StatusError:
			if r.Found {
				// A child that a children file lists but that may not be
				// read (another user's, under hidepid): without its start
				// time it cannot join, so it is counted.
				unreadable++
				continue
			}
			unreadable++
			hs.entries = append(hs.entries, known[r.PID])
		default:
			continue
		}
		hs.walkIdx = append(hs.walkIdx, k)
	}
	return unreadable
}

// read scans the host into hs.
func (hs *hostScan) read(s *reconcile.Scanner, fs *reconcile.FS) error {
	hs.start = time.Now()
	if err := s.Scan(&hs.scan); err != nil {
		return fmt.Errorf("watchman: scanning %s: %w", fs.Root(), err)
	}
	hs.entries = hs.entries[:0]
	for i := range hs.scan.Entries {
		e := &hs.scan.Entries[i]
		hs.entries = append(hs.entries, tracker.Entry{
			PID: e.PID, PPID: e.PPID, StartTicks: e.StartTicks, Live: e.Live(), State: e.State,
			Threaded: e.NumThreads > 1,
		})
	}
	return nil
}

// scanMargin widens the window of members a scan does not judge: a member
// that joined less than this before the scan started may be missing from
// it only if it also exited, which its exit event (or the next scan) says.
const scanMargin = 10 * time.Millisecond

// applyScan applies a host scan to w's tracker and publishes the changes;
// index, if set, is called with them (the hub's writer updates its index).
// The command lines of the members the scan adds, and of those whose name
// changed, are read without the lock between two locked steps.
func (w *Watcher) applyScan(hs *hostScan, repair bool, epochAt func(*tracker.Tracker) uint64, wr *writer) {
	start := time.Now()
	entries, n := hs.entries, len(hs.entries)
	if hs.walk == nil && w.fs.HidePID() != reconcile.HidePIDOff {
		entries = w.withHidden(hs)
	}
	w.mu.Lock()
	if w.closed {
		w.mu.Unlock()
		return
	}
	opt := tracker.ScanOptions{Repair: repair, Name: func(i int) string {
		if i >= n {
			return "" // a hidden member (withHidden), never added
		}
		return hs.comm(i)
	}}
	if epochAt != nil {
		opt.Since = hs.start.Add(-scanMargin)
		opt.Epoch = epochAt(w.tr)
	}
	w.tr.ApplyScan(entries, hs.start, opt)
	chs := w.tr.DrainChanges(nil)
	// Members whose name changed since they joined (an exec the events
	// did not report, or a prctl), if the scan is newer than what we
	// know of them.
	var renamed []tracker.Identity
	for _, p := range w.tr.Members(nil) {
		i, ok := w.tr.IndexOf(p.ID.PID)
		if !ok || i >= n || hs.start.Before(p.InfoAt) || string(hs.commBytes(i)) == p.Name && (p.Cmdline != nil || !w.cfg.CaptureCmdline) {
			continue
		}
		renamed = append(renamed, p.ID)
	}
	w.mu.Unlock()

	// Read the command lines, holding no lock.
	obs := make(map[tracker.Identity]*tracker.Observation)
	if m := w.cmdlineMax(); m > 0 {
		for i := range chs {
			if c := &chs[i]; c.Kind == tracker.Added {
				o := observeSettled(w.readerFor(), w.cmdlines(), c.Proc.ID.PID, false, m)
				if o.Is(c.Proc.ID, c.Proc.Approx) && o.HasCmdline {
					c.Proc.Cmdline, c.Proc.CmdlineTruncated = o.Cmdline, o.CmdlineTruncated
					obs[c.Proc.ID] = &o
				}
			}
		}
	}
	for _, id := range renamed {
		o := observeSettled(w.readerFor(), w.cmdlines(), id.PID, true, w.cmdlineMax())
		obs[id] = &o
	}

	w.mu.Lock()
	if !w.closed {
		for id, o := range obs {
			w.tr.Describe(id, o)
		}
		if wr != nil {
			wr.annotate(w, chs)
		}
		w.publishLocked(chs)
		w.stats.countReconcile(time.Since(start), hs.walk == nil)
	}
	w.mu.Unlock()
	if wr != nil {
		wr.index(w, chs)
	}
}

// withHidden returns hs's entries plus, as they were, the members a host
// scan cannot see under hidepid (hidepid=2 and 4 hide them, hidepid=1
// lists them as denied) but that are not known to be gone: each missing
// member is read by itself, and only ENOENT/ESRCH or a zombie state make
// it gone. They are counted in WatcherStats.Unreadable.
func (w *Watcher) withHidden(hs *hostScan) []tracker.Entry {
	w.mu.Lock()
	members := w.tr.Members(nil)
	known := make([]tracker.Entry, 0, len(members))
	for _, p := range members {
		known = append(known, tracker.Entry{PID: p.ID.PID, PPID: p.PPID, StartTicks: p.ID.StartTicks, Live: true, State: p.State, Threaded: p.Threaded})
	}
	w.mu.Unlock()
	seen := make(map[int]bool, len(hs.entries))
	for i := range hs.entries {
		seen[hs.entries[i].PID] = true
	}
	entries := hs.entries[:len(hs.entries):len(hs.entries)]
	hidden := 0
	for _, e := range known {
		if seen[e.PID] {
			continue
		}
		if o := observe(w.readerFor(), nil, e.PID, false, 0); o.Seen == tracker.SeenUnknown {
			entries = append(entries, e)
			hidden++
		}
	}
	w.mu.Lock()
	w.stats.Unreadable = hidden
	w.mu.Unlock()
	return entries
}

// cmdlines returns what reads command lines for w: in connector mode the
// hub's, which never blocks its writer for long (timedCmdline).
func (w *Watcher) cmdlines() cmdliner {
	if w.run != nil {
		return w.run.cmdlines
	}
	return w.fs
}

// readerFor returns a scanner for reads made while applying a scan: the
// hub's writer and polling scans are each serialized, and each Watcher's
// scanner is only used under them.
func (w *Watcher) readerFor() *reconcile.Scanner { return w.scanner }

// pollScan is a Poll's or the polling loop's look at /proc, applied at once
// (there are no events to wait for): a walk of the tree, which costs
// O(tree), or a scan of the whole host where the kernel has no children
// files, or when Config.FullScanInterval has passed since the last.
func (w *Watcher) pollScan() error {
	w.pollMu.Lock()
	defer w.pollMu.Unlock()
	full := !w.walkable || w.cfg.FullScanInterval > 0 && time.Since(w.lastFull) >= w.cfg.FullScanInterval
	if !full {
		unreadable, err := w.walkTree(w.scanner, &w.walk, &w.walkScan, 0)
		if err == nil {
			w.applyScan(&w.walkScan, false, nil, nil)
			w.mu.Lock()
			w.stats.Unreadable = unreadable
			w.mu.Unlock()
			return w.closedErr()
		}
	}
	if err := w.own.read(w.scanner, w.fs); err != nil {
		return err
	}
	w.lastFull = w.own.start
	w.applyScan(&w.own, false, nil, nil)
	return w.closedErr()
}

// closedErr returns ErrClosed after Close.
func (w *Watcher) closedErr() error {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.closed {
		return ErrClosed
	}
	return nil
}

// pollLoop scans every iv in polling mode, so that subscribers hear of
// changes without a Poll.
func (w *Watcher) pollLoop(iv time.Duration) {
	defer w.wg.Done()
	t := time.NewTicker(iv)
	defer t.Stop()
	for {
		select {
		case <-w.stop:
			return
		case <-t.C:
			if err := w.pollScan(); err != nil && err != ErrClosed {
				w.noteFailure(err)
			}
			w.mu.Lock()
			w.tr.PruneGone(time.Now().Add(-goneMemory))
			w.mu.Unlock()
		}
	}
}

// reconcile runs one reconcile now and waits for it: in polling mode a
// scan; in connector mode a full host scan (one started at most maxAge ago
// may serve) or a tree-local check, applied after the events queued while
// it looked.
func (w *Watcher) reconcile(full bool, maxAge time.Duration) error {
	if w.run == nil {
		return w.pollScan()
	}
	if full {
		return w.run.rep.fullRepair([]*Watcher{w}, time.Now().Add(-maxAge), true)
	}
	w.run.rep.checkMembers(w)
	return nil
}

// repairer is the hub's goroutine that checks the trees against /proc:
// every Watcher's tree-local check each ReconcileInterval (every
// fullScanEvery-th a full host scan), and a full repair of every tree as
// soon as the kernel drops events. It only reads /proc; what it finds is
// applied by the writer, after every event queued while it looked.
type repairer struct {
	r      *hubRun
	kickc  chan struct{}
	resync chan struct{} // the watchers changed: schedule again
	stop   chan struct{}
	done   chan struct{}

	graceHook     func() // replaces the wait of exitGrace in tests
	beforeBarrier func() // tests: runs after a look, before its barrier is queued

	scanMu  sync.Mutex // guards the host scan shared by the watchers
	scanner *reconcile.Scanner
	last    *hostScan

	checkMu   sync.Mutex // guards checker, walks and walkScans (tree-local checks)
	checker   *reconcile.Scanner
	walks     []reconcile.Walk // one per tree of a batch of checks, reused
	walkScans []hostScan

	sched map[*Watcher]*schedule // the loop's only
}

type schedule struct {
	next time.Time
	n    int
}

func newRepairer(r *hubRun) *repairer {
	return &repairer{
		r: r, kickc: make(chan struct{}, 1), resync: make(chan struct{}, 1), stop: make(chan struct{}), done: make(chan struct{}),
		scanner: r.fs.NewScanner(), checker: r.fs.NewScanner(), sched: make(map[*Watcher]*schedule),
	}
}

// reschedule tells the loop that a Watcher attached or left.
func (rp *repairer) reschedule() {
	select {
	case rp.resync <- struct{}{}:
	default:
	}
}

// kick asks for a full repair of every tree now.
func (rp *repairer) kick() {
	select {
	case rp.kickc <- struct{}{}:
	default:
	}
}

func (rp *repairer) close() {
	close(rp.stop)
	<-rp.done
}

func (rp *repairer) run() {
	defer close(rp.done)
	defer rp.r.h.setNice()()
	rp.r.started.Done()
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	for {
		now := time.Now()
		next := now.Add(time.Hour)
		ws := rp.r.attached()
		for w := range rp.sched {
			if !slices.Contains(ws, w) {
				delete(rp.sched, w)
			}
		}
		// The watchers due now, and with them those due within a quarter
		// of their interval, are checked in one batch: one walk each, one
		// barrier for all, and one host scan for those whose turn it is.
		// Their schedules then fall into step, so that a hub of many
		// watchers wakes its writer for one barrier an interval, not one
		// per watcher.
		type due struct {
			w  *Watcher
			iv time.Duration
			s  *schedule
		}
		var sched []due
		anyDue := false
		for _, w := range ws {
			iv := w.backgroundInterval()
			if iv <= 0 {
				continue
			}
			s := rp.sched[w]
			if s == nil {
				s = &schedule{next: now.Add(iv)}
				rp.sched[w] = s
			}
			sched = append(sched, due{w, iv, s})
			anyDue = anyDue || !s.next.After(now)
		}
		var check, full []*Watcher
		var batch []due
		var oldest time.Time
		for _, d := range sched {
			if !anyDue || d.s.next.After(now.Add(d.iv/4)) {
				continue
			}
			d.s.n++
			batch = append(batch, d)
			if d.s.n%fullScanEvery != 0 {
				check = append(check, d.w)
				continue
			}
			full = append(full, d.w)
			if since := now.Add(-d.iv); oldest.IsZero() || since.Before(oldest) {
				oldest = since
			}
		}
		if len(full) > 0 {
			_ = rp.fullRepair(full, oldest, true)
		}
		if len(check) > 0 {
			rp.checkMembers(check...)
		}
		for _, d := range batch {
			d.w.mu.Lock()
			d.w.tr.PruneGone(time.Now().Add(-goneMemory))
			d.w.mu.Unlock()
			d.s.next = time.Now().Add(d.iv)
		}
		for _, d := range sched {
			if d.s.next.Before(next) {
				next = d.s.next
			}
		}
		timer.Reset(time.Until(next))
		select {
		case <-rp.stop:
			return
		case <-rp.kickc:
			rp.repairAll()
		case <-rp.resync:
		case <-timer.C:
		}
	}
}

// repairAll repairs every tree after the kernel dropped events: through
// a walk of the tree, or, for a tree that is a large part of the host (a
// walk reads several files per member, a host scan one per process),
// through one host scan shared by all such trees.
func (rp *repairer) repairAll() {
	rp.scanMu.Lock()
	host := 0
	if rp.last != nil {
		host = len(rp.last.entries)
	}
	rp.scanMu.Unlock()
	var big, small []*Watcher
	for _, w := range rp.r.attached() {
		w.mu.Lock()
		n := w.tr.Len()
		w.mu.Unlock()
		if host > 0 && 4*n >= host {
			big = append(big, w)
			continue
		}
		small = append(small, w)
	}
	if len(small) > 0 {
		rp.checkMembers(small...)
	}
	if len(big) > 0 {
		_ = rp.fullRepair(big, time.Now(), true)
	}
}

// scanHost returns a host scan that started no earlier than since: the
// last one if it qualifies, else a new one. Watchers share it read-only.
func (rp *repairer) scanHost(since time.Time) (*hostScan, error) {
	rp.scanMu.Lock()
	defer rp.scanMu.Unlock()
	if rp.last != nil && !rp.last.start.Before(since) {
		return rp.last, nil
	}
	hs := &hostScan{overruns: rp.r.h.overruns.Load()}
	if err := hs.read(rp.scanner, rp.r.fs); err != nil {
		return nil, err
	}
	rp.last = hs
	return hs, nil
}

// fullRepair scans the host (or takes a scan started no earlier than
// since) and has the writer apply it to each of ws once every event queued
// until now has been applied, and waits for that. repair counts what it
// corrects as repairs (not at Attach).
func (rp *repairer) fullRepair(ws []*Watcher, since time.Time, repair bool) error {
	hs, err := rp.scanHost(since)
	if err != nil {
		for _, w := range ws {
			w.noteFailure(err)
		}
		return err
	}
	rp.applyAfterQueued(ws, hs, repair)
	return nil
}

// look is one tree's look at /proc (a walk of it, or a host scan) for the
// writer to apply.
type look struct {
	w  *Watcher
	hs *hostScan
}

// applyAfterQueued has the writer apply hs to each of ws once every event
// queued until now has been applied, and waits for that.
func (rp *repairer) applyAfterQueued(ws []*Watcher, hs *hostScan, repair bool) {
	looks := make([]look, len(ws))
	for i, w := range ws {
		looks[i] = look{w, hs}
	}
	rp.applyLooks(looks, repair)
}

// applyLooks has the writer apply each look to its tree once every event
// queued until now has been applied (one barrier for all), and waits for
// that.
func (rp *repairer) applyLooks(looks []look, repair bool) {
	h := rp.r.h
	if repair && slices.ContainsFunc(looks, func(l look) bool { return showsGone([]*Watcher{l.w}, l.hs) }) {
		rp.waitGrace()
	}
	var pre []int
	for _, l := range looks {
		pre = append(pre, rp.preAdd(l.w, l.hs)...)
	}
	if rp.beforeBarrier != nil {
		rp.beforeBarrier()
	}
	rp.afterQueued(func(wr *writer) {
		for _, l := range looks {
			// The overruns since the look started are the epochs it
			// cannot vouch for (tracker.ScanOptions.Epoch).
			epochAt := func(tr *tracker.Tracker) uint64 {
				since := h.overruns.Load() - l.hs.overruns
				return tr.Epoch() - min(since, tr.Epoch())
			}
			l.w.applyScan(l.hs, repair, epochAt, wr)
			wr.applyLateExits(l.w, l.hs)
		}
		wr.filter.unpend(pre)
		for _, pid := range pre {
			wr.filterDrop(pid) // the ones no tree took
		}
	})
}

// exitGrace is how long a repair that would remove members waits before
// it queues its barrier. The kernel sends a process's exit event after it
// made the process a zombie and woke its parent (do_exit calls
// exit_notify before proc_exit_connector), so a look can find a member a
// zombie, or already reaped, before its exit event is queued; applied at
// once, the look would remove it without its status (a repair, and a
// synthetic exit that the event upgrades later). The exiting task sends
// the event microseconds later unless it is preempted in between (a busy
// CI machine did that), so the wait lets it be queued before the barrier.
const exitGrace = 50 * time.Millisecond

// membersAndRoot returns w's members and its root while it lives (also
// without Config.IncludeRoot). The caller holds w.mu.
func (w *Watcher) membersAndRoot() []*tracker.Proc {
	members := w.tr.Members(nil)
	if !w.cfg.IncludeRoot {
		if p, ok := w.tr.Member(w.root.PID); ok {
			members = append(members, p)
		}
	}
	return members
}

// waitGrace waits exitGrace (tests hold it with graceHook), or until the
// hub closes.
func (rp *repairer) waitGrace() {
	if rp.graceHook != nil {
		rp.graceHook()
		return
	}
	select {
	case <-time.After(exitGrace):
	case <-rp.stop:
	case <-rp.r.done:
	}
}

// showsGone reports whether a look shows a member of one of ws exited or
// gone.
func showsGone(ws []*Watcher, hs *hostScan) bool {
	if hs.walk != nil {
		for i := range hs.walk.Results {
			r := &hs.walk.Results[i]
			if !r.Found && (r.Status == reconcile.StatusExited || r.Status == reconcile.StatusGone) {
				return true
			}
		}
		return false
	}
	live := make(map[int]uint64, len(hs.entries))
	for i := range hs.entries {
		if e := &hs.entries[i]; e.Live {
			live[e.PID] = e.StartTicks
		}
	}
	for _, w := range ws {
		w.mu.Lock()
		members := w.membersAndRoot()
		w.mu.Unlock()
		for _, p := range members {
			if ticks, ok := live[p.ID.PID]; !ok || !tracker.SameStart(p.ID.StartTicks, ticks, p.Approx) {
				return true
			}
		}
	}
	return false
}

// afterQueued runs fn on the writer once every event queued until now
// has been applied, and waits for it (or for the hub to close).
func (rp *repairer) afterQueued(fn func(*writer)) {
	ran := make(chan struct{})
	rp.r.do(func(wr *writer) {
		wr.barrier(func() { fn(wr); close(ran) })
	})
	select {
	case <-ran:
	case <-rp.r.done:
	}
}

// walkTree reads w's tree as the members' own /proc entries and children
// files show it (reconcile.Walk) into hs, holding no lock but w's briefly
// to list the members, and returns how many members could not be read.
// It fails with reconcile.ErrNoChildrenFiles on a kernel without them.
func (w *Watcher) walkTree(sc *reconcile.Scanner, wk *reconcile.Walk, hs *hostScan, overruns uint64) (int, error) {
	w.mu.Lock()
	members := w.membersAndRoot()
	ms := make([]reconcile.Member, len(members))
	known := make(map[int]tracker.Entry, len(members))
	for i, p := range members {
		ms[i] = reconcile.Member{PID: p.ID.PID, StartTicks: p.ID.StartTicks, Approx: p.Approx}
		known[p.ID.PID] = tracker.Entry{PID: p.ID.PID, PPID: p.PPID, StartTicks: p.ID.StartTicks, Live: true, State: p.State, Threaded: p.Threaded}
	}
	w.mu.Unlock()
	hs.start, hs.overruns = time.Now(), overruns
	wk.SameStart = tracker.SameStart
	if err := sc.Walk(wk, ms); errors.Is(err, reconcile.ErrNoChildrenFiles) {
		return 0, err
	}
	return hs.fromWalk(wk, known), nil
}

// checkMembers is the tree-local reconcile of each of ws, looked at one
// after the other and applied behind one barrier: each member (and the root) is
// read through its own /proc entry, and its children through its threads'
// children files (reconcile.Walk), so the check costs O(tree), not
// O(host). It is applied as a scan of the tree (tracker.ScanOptions
// Partial), after the events queued while it looked: members gone are
// removed, children whose fork events were lost join, first-thread exits
// awaiting a decision get it. A member that cannot be read stays, and is
// counted (WatcherStats.Unreadable). On a kernel without children files
// it falls back to a host scan.
func (rp *repairer) checkMembers(ws ...*Watcher) {
	rp.checkMu.Lock()
	defer rp.checkMu.Unlock()
	for len(rp.walks) < len(ws) {
		rp.walks = append(rp.walks, reconcile.Walk{})
		rp.walkScans = append(rp.walkScans, hostScan{})
	}
	looks := make([]look, 0, len(ws))
	unreadable := make([]int, 0, len(ws))
	var scan []*Watcher // no children files: a host scan instead
	for i, w := range ws {
		n, err := w.walkTree(rp.checker, &rp.walks[i], &rp.walkScans[i], rp.r.h.overruns.Load())
		if err != nil {
			scan = append(scan, w)
			continue
		}
		looks = append(looks, look{w, &rp.walkScans[i]})
		unreadable = append(unreadable, n)
	}
	if len(looks) > 0 {
		rp.applyLooks(looks, true)
	}
	for i, l := range looks {
		l.w.mu.Lock()
		l.w.stats.Unreadable = unreadable[i]
		l.w.mu.Unlock()
	}
	if len(scan) > 0 {
		_ = rp.fullRepair(scan, time.Now(), true)
	}
}
