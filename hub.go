package watchman

import (
	"errors"
	"fmt"
	"os"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/process-watchman/watchman/connector"
	"github.com/process-watchman/watchman/reconcile"
	"github.com/process-watchman/watchman/tracker"
)

// HubConfig configures a Hub. A nil *HubConfig, and each zero field, mean
// the defaults.
type HubConfig struct {
	// ReadBuffer is the socket's receive buffer in bytes; zero means
	// connector.DefaultReadBuffer (4 MiB). A larger buffer rides out longer
	// stalls of this process without dropping events.
	ReadBuffer int
	// ProcRoot is the proc filesystem read at events; zero ("") means
	// /proc. Watchers on the hub must use the same.
	ProcRoot string
	// FilterEntries bounds the kernel-side tree filter: an eBPF socket
	// filter whose map holds the member TGIDs of every tree on the hub,
	// so that the kernel drops the events of every other process before
	// they wake the hub. Zero means DefaultFilterEntries; a negative value
	// turns the kernel filter off (events are then filtered in user
	// space, as where eBPF cannot be loaded). When the map is full the
	// filter passes everything until a repair frees room
	// (HubStats.FilterFailOpen).
	FilterEntries int
	// Nice, when not zero, runs the hub's two goroutines (the writer,
	// which applies events, and the repairer, which reads /proc after an
	// overrun) on OS threads of their own at this nice value (-20 to 19;
	// setpriority on each thread). A negative value needs CAP_SYS_NICE: a
	// busy host that starves the hub (a fork storm in the watched tree
	// competes for the same CPUs) then delays its repairs less. Where it
	// cannot be set, HubStats.NiceError says why and the hub runs at the
	// process's priority. Both are settled before the Attach that opens
	// the hub returns.
	Nice int
	// Coalesce trades latency for CPU (connector.Config.Coalesce): zero,
	// the default, delivers each event as soon as it is queued and
	// batches reads only under load (5,000 events a second or more); a
	// positive value lets the hub hold events up to that long after each
	// read so that one wake-up reads many, at any rate (BENCHMARKS.md
	// section 3 gives the CPU per event at 2 and 5 ms); negative never
	// holds them.
	Coalesce time.Duration
	// Dial opens the connector; nil means connector.Dial. Tests pass a
	// fake kernel's (connectortest.Kernel.Dial).
	Dial func(*connector.Config) (*connector.Conn, error)
}

// DefaultFilterEntries is the default HubConfig.FilterEntries: room for
// the members of every tree on a hub. The kernel allocates the whole map
// when the hub opens (an entry costs about 64 bytes), and that takes time
// in proportion: on the 2-vCPU VM under load, 1,024 entries took 1-19 ms,
// 16,384 took 53-126 ms and 65,536 took 150-240 ms, on every Attach that
// opens a hub. Trees that need more than half of it keep the filter open
// (HubStats.FilterOpen): raise it for them.
const DefaultFilterEntries = 8192

// Hub owns one proc connector socket and one goroutine, its writer, which
// receives the kernel's events and applies them, and the repairs that
// /proc scans find, to the tree of every Watcher attached through it
// (Config.Hub). N watchers cost one socket and one decode per event, not N.
// The socket opens when the first Watcher attaches and closes, with the
// hub's goroutines, when the last one closes; the Hub can then be used
// again.
//
// A Watcher attached without a Hub gets a private one. Share a Hub when a
// process watches many trees. The zero Hub is ready to use, with the
// defaults of HubConfig.
type Hub struct {
	cfg HubConfig

	mu   sync.Mutex // guards refs and run
	refs int
	run  *hubRun

	forks, execs, exits, others   atomic.Uint64
	overruns, lost                atomic.Uint64
	filterFailOpens, filterErrors atomic.Uint64
	usageOverruns, slowReads      atomic.Uint64
	niceErr                       atomic.Pointer[string]
	kernelStarts, startReads      atomic.Uint64
	startsReason                  atomic.Pointer[string]
	kernelImages, imageReads      atomic.Uint64
	imagesReason                  atomic.Pointer[string]
}

// HubStats counts what a Hub received since it was made.
type HubStats struct {
	// Forks, Execs and Exits count the kernel's events of each type that
	// reached the hub (threads included); Other counts the rest.
	Forks, Execs, Exits, Other uint64
	// Overruns counts the times the kernel dropped events because the
	// socket's buffer was full; Lost counts the messages it dropped, where
	// the kernel tells (SO_MEMINFO).
	Overruns, Lost uint64
	// KernelFilter says the kernel-side tree filter is attached to the
	// open socket (see HubConfig.FilterEntries); FilterReason says why
	// not. Both are zero while no Watcher is attached.
	KernelFilter bool
	FilterReason string
	// FilterOpen says the filter's map is full and it passes every event
	// until a repair frees room; FilterFailOpens counts the times that
	// happened, FilterErrors the map operations that failed.
	FilterOpen                    bool
	FilterFailOpens, FilterErrors uint64
	// UsageOverruns counts the reads of the taskstats socket
	// (Config.CaptureUsage) that found the kernel had dropped records:
	// those exits get no Usage (WatcherStats.UsageMissing).
	UsageOverruns uint64
	// SlowReads counts the command lines left unread because reading
	// them took longer than 50 ms (the process held its memory map lock:
	// see Config.CaptureCmdline); the member keeps no command line.
	SlowReads uint64
	// NiceError says why HubConfig.Nice could not be applied ("" when it
	// was, or was not asked).
	NiceError string
	// KernelStarts counts the members' new children whose start time (the
	// second half of their Identity) came from the kernel tree filter's
	// record of the fork; StartReads those for which /proc/PID/stat was
	// read instead. StartsReason says why the records are not used (""
	// while they are, or no Watcher was ever attached).
	KernelStarts, StartReads uint64
	StartsReason             string
	// KernelImages counts the members' execs whose new name and command
	// line came from the kernel tree filter's record of the exec;
	// ImageReads those for which /proc was read instead. ImagesReason
	// says why the records are not used ("" while they are, or no Watcher
	// was ever attached).
	KernelImages, ImageReads uint64
	ImagesReason             string
}

// Stats returns the hub's counters.
func (h *Hub) Stats() HubStats {
	st := HubStats{
		Forks: h.forks.Load(), Execs: h.execs.Load(), Exits: h.exits.Load(), Other: h.others.Load(),
		Overruns: h.overruns.Load(), Lost: h.lost.Load(),
		FilterFailOpens: h.filterFailOpens.Load(), FilterErrors: h.filterErrors.Load(),
		UsageOverruns: h.usageOverruns.Load(), SlowReads: h.slowReads.Load(),
	}
	if e := h.niceErr.Load(); e != nil {
		st.NiceError = *e
	}
	st.KernelStarts, st.StartReads = h.kernelStarts.Load(), h.startReads.Load()
	if e := h.startsReason.Load(); e != nil {
		st.StartsReason = *e
	}
	st.KernelImages, st.ImageReads = h.kernelImages.Load(), h.imageReads.Load()
	if e := h.imagesReason.Load(); e != nil {
		st.ImagesReason = *e
	}
	h.mu.Lock()
	if h.run != nil {
		h.run.filter.stats(&st)
	}
	h.mu.Unlock()
	return st
}

// NewHub returns a Hub; it opens nothing until a Watcher attaches.
func NewHub(cfg *HubConfig) *Hub {
	h := &Hub{}
	if cfg != nil {
		h.cfg = *cfg
	}
	return h
}

// hubRun is an open hub: its socket and goroutines, from the first
// acquire to the last release.
type hubRun struct {
	h        *Hub
	conn     *connector.Conn
	fs       *reconcile.FS
	canMark  bool          // the socket takes markers (connector.Conn.Mark)
	filter   *hubFilter    // the kernel tree filter, if any
	cmdlines timedCmdline  // reads command lines for the writer
	done     chan struct{} // closed when the writer has exited
	// started counts the writer and the repairer down once each has set
	// its thread's nice value (HubConfig.Nice), so that acquire returns
	// with both in effect and HubStats.NiceError settled.
	started sync.WaitGroup

	// qmu guards the work queued for the writer.
	qmu   sync.Mutex
	queue []func(*writer)

	// wmu guards watchers, the attached watchers (read by the repairer).
	wmu      sync.Mutex
	watchers []*Watcher

	rep *repairer
}

// acquire opens the hub if it is the first user and returns it.
func (h *Hub) acquire() (*hubRun, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.refs > 0 {
		h.refs++
		return h.run, nil
	}
	fs, err := reconcile.NewFS(h.cfg.ProcRoot)
	if err != nil {
		return nil, &ConfigError{Field: "HubConfig.ProcRoot", Reason: "not a proc filesystem", Err: err}
	}
	dial := h.cfg.Dial
	if dial == nil {
		dial = connector.Dial
	}
	conn, err := dial(&connector.Config{ReadBuffer: h.cfg.ReadBuffer, NoENOBUFS: true, Coalesce: h.cfg.Coalesce})
	if err != nil {
		return nil, err
	}
	r := &hubRun{h: h, conn: conn, fs: fs, canMark: conn.CanMark(), filter: openFilter(conn, h),
		cmdlines: timedCmdline{fs: fs, slow: &h.slowReads}, done: make(chan struct{})}
	r.rep = newRepairer(r)
	wr := newWriter(r)
	r.started.Add(2)
	go wr.run()
	go r.rep.run()
	r.started.Wait()
	h.run, h.refs = r, 1
	return r, nil
}

// release closes the socket and stops the goroutines with the last user.
func (h *Hub) release() {
	h.mu.Lock()
	h.refs--
	if h.refs > 0 {
		h.mu.Unlock()
		return
	}
	r := h.run
	h.run = nil
	h.mu.Unlock()
	r.rep.close()
	_ = r.conn.Close()
	<-r.done
}

// do queues fn for the writer and wakes it.
func (r *hubRun) do(fn func(*writer)) {
	r.qmu.Lock()
	r.queue = append(r.queue, fn)
	r.qmu.Unlock()
	r.wake()
}

// doWait runs fn on the writer and waits until it has run. It returns
// false if the hub closed first.
func (r *hubRun) doWait(fn func(*writer)) bool {
	ran := make(chan struct{})
	r.do(func(wr *writer) { fn(wr); close(ran) })
	select {
	case <-ran:
		return true
	case <-r.done:
		return false
	}
}

// wake makes the writer's blocked receive return: through a marker where
// the socket takes them, else through a read deadline in the past.
func (r *hubRun) wake() {
	if r.canMark && r.conn.Mark(0) == nil {
		return
	}
	_ = r.conn.SetReadDeadline(time.Unix(1, 0))
}

// attach adds w to the hub: the writer applies events to it from the
// moment attach returns.
func (r *hubRun) attach(w *Watcher) {
	r.wmu.Lock()
	r.watchers = append(r.watchers, w)
	r.wmu.Unlock()
	r.doWait(func(wr *writer) {
		wr.join(w.root.PID, w)
		wr.filter.add(w.root.PID)
		if w.cfg.CaptureUsage {
			if wr.usage == nil {
				wr.usage = openUsage(wr.filter, &wr.h.usageOverruns)
			}
			w.usageDesc = wr.usage.describe()
			w.mu.Lock()
			w.stats.UsageReason = wr.usage.reason
			w.mu.Unlock()
		}
	})
	r.rep.reschedule()
}

// detach removes w: once it returns, the writer no longer touches w.
func (r *hubRun) detach(w *Watcher) {
	r.wmu.Lock()
	if i := slices.Index(r.watchers, w); i >= 0 {
		r.watchers = slices.Delete(r.watchers, i, i+1)
	}
	r.wmu.Unlock()
	r.doWait(func(wr *writer) { wr.forget(w) })
}

// attached returns the attached watchers.
func (r *hubRun) attached() []*Watcher {
	r.wmu.Lock()
	defer r.wmu.Unlock()
	return slices.Clone(r.watchers)
}

// writer is the hub's one goroutine that changes trees. It receives the
// kernel's events, reads /proc where an event concerns a member (holding
// no lock), and applies them to each Watcher's tracker under that
// Watcher's lock, publishing the changes there. Work from other goroutines
// (attach, detach, the repairs that /proc scans find) comes through
// hubRun.do and runs between two batches; a repair that must follow every
// event queued when its scan looked waits for a barrier (see barrier).
type writer struct {
	r       *hubRun
	h       *Hub
	filter  *hubFilter
	usage   *usageSource // taskstats, once a Watcher asks (Config.CaptureUsage)
	scanner *reconcile.Scanner
	clock   clockBase
	starts  childStarts // new children's start times from the kernel filter
	images  execImages  // new images' names and command lines from it

	// idx maps member PIDs to the watchers they are members of; prov maps
	// PIDs removed without the kernel's exit status to the watchers that
	// await it. Both follow the trackers' changes (index), nothing else.
	idx  map[int][]*Watcher
	prov map[int][]*Watcher

	marks    map[uint32]func() // barriers by marker token
	nextMark uint32
	drained  []func() // barriers that wait for an empty queue (no markers)

	// lateExits are the recent exits of processes that were no member
	// when their event was applied (lateExit).
	lateExits map[int]lateExit

	batching  bool             // in a batch: watchers hold their events (Watcher.holding)
	held      []*Watcher       // the watchers holding events
	applyHook func(w *Watcher) // tests: runs at the end of each apply, w.mu held

	checks []exitCheck       // this batch's processes to observe
	chs    []tracker.Change  // scratch
	ws     []*Watcher        // scratch
	work   []func(*writer)   // scratch
	evs    []connector.Event // receive buffer
	failed int               // consecutive receive failures
	pruned time.Time         // last prune of prov
}

// exitCheck is a process whose exit the tracker of w cannot decide
// without an observation (tracker.ExitTask).
type exitCheck struct {
	w   *Watcher
	pid int
}

func newWriter(r *hubRun) *writer {
	starts := childStarts{reason: "no kernel tree filter"}
	if r.filter != nil {
		starts = newChildStarts(r.filter)
	}
	r.h.startsReason.Store(&starts.reason)
	images := newExecImages(r.filter)
	r.h.imagesReason.Store(&images.reason)
	return &writer{
		starts:    starts,
		images:    images,
		r:         r,
		h:         r.h,
		filter:    r.filter,
		scanner:   r.fs.NewScanner(),
		idx:       make(map[int][]*Watcher),
		prov:      make(map[int][]*Watcher),
		marks:     make(map[uint32]func()),
		lateExits: make(map[int]lateExit),
		evs:       make([]connector.Event, 0, connector.MaxBatch),
	}
}

func (wr *writer) run() {
	defer close(wr.r.done)
	defer wr.h.setNice()()
	wr.r.started.Done()
	defer func() {
		if wr.usage != nil {
			wr.usage.close()
		}
	}()
	for {
		if wr.usage != nil {
			wr.usage.synced = false
		}
		wr.runQueued()
		wr.runDrained()
		wr.flushDrops() // before the read may block: a Close's removals too
		evs, err := wr.r.conn.Receive(wr.evs[:0])
		wr.batching = true
		if len(evs) > 0 {
			wr.dispatch(evs)
		}
		wr.checkExits()
		wr.flushHeld()
		now := time.Now()
		wr.prune(now) // before flushDrops: pruneProv queues removals
		wr.flushDrops()
		wr.filterTick(now)
		var drop *connector.DropError
		switch {
		case err == nil:
			wr.failed = 0
		case errors.As(err, &drop):
			wr.overrun(drop.Dropped)
		case errors.Is(err, connector.ErrOverrun):
			wr.overrun(0)
		case errors.Is(err, os.ErrDeadlineExceeded):
			// A wake without markers; queued work runs next.
			_ = wr.r.conn.SetReadDeadline(time.Time{})
		case errors.Is(err, connector.ErrClosed):
			wr.runQueued()
			return
		default:
			// Not expected from a netlink socket: tell the watchers, have
			// the trees checked, and back off so a broken socket cannot
			// spin.
			wr.failed++
			for _, w := range wr.r.attached() {
				w.noteFailure(fmt.Errorf("watchman: receiving proc events: %w", err))
			}
			wr.r.rep.kick()
			time.Sleep(min(time.Duration(wr.failed)*10*time.Millisecond, time.Second))
		}
	}
}

// runQueued runs the work other goroutines queued.
func (wr *writer) runQueued() {
	for {
		wr.r.qmu.Lock()
		wr.work, wr.r.queue = wr.r.queue, wr.work[:0]
		wr.r.qmu.Unlock()
		if len(wr.work) == 0 {
			return
		}
		for _, fn := range wr.work {
			fn(wr)
		}
		clear(wr.work)
	}
}

// barrier runs fn once every event the kernel queued for the socket before
// the call has been applied. With markers (connector.Conn.Mark) that is
// exact: the marker queued now comes back after them. Without, fn waits
// until the writer finds the socket's queue empty after a batch, which is
// exact too, but may wait long under a storm that never lets it drain.
func (wr *writer) barrier(fn func()) {
	if wr.r.canMark {
		wr.nextMark++
		if wr.nextMark == 0 {
			wr.nextMark = 1 // 0 is a bare wake
		}
		if err := wr.r.conn.Mark(wr.nextMark); err == nil {
			wr.marks[wr.nextMark] = fn
			return
		}
	}
	wr.drained = append(wr.drained, fn)
}

// runDrained runs the barriers waiting for an empty queue if it is empty.
func (wr *writer) runDrained() {
	if len(wr.drained) == 0 {
		return
	}
	if mi, err := wr.r.conn.MemInfo(); err == nil && mi.RmemAlloc > 0 {
		return
	}
	fns := wr.drained
	wr.drained = nil
	for _, fn := range fns {
		fn()
	}
}

// apply runs fn on w's tracker under w's lock, publishes the changes, and
// updates the index from them. It is the one place trees change in
// connector mode.
func (wr *writer) apply(w *Watcher, fn func(*tracker.Tracker)) {
	w.mu.Lock()
	if w.closed {
		w.mu.Unlock()
		return
	}
	if wr.batching && !w.holding {
		w.holding = true
		wr.held = append(wr.held, w)
	}
	fn(w.tr)
	wr.chs = w.tr.DrainChanges(wr.chs[:0])
	wr.annotate(w, wr.chs)
	w.publishLocked(wr.chs)
	if wr.applyHook != nil {
		wr.applyHook(w)
	}
	w.mu.Unlock()
	wr.index(w, wr.chs)
	clear(wr.chs)
}

// flushHeld ends a batch: the watchers that held events deliver them.
func (wr *writer) flushHeld() {
	wr.batching = false
	for _, w := range wr.held {
		w.mu.Lock()
		w.flushHeldLocked()
		w.mu.Unlock()
	}
	clear(wr.held)
	wr.held = wr.held[:0]
}

// index keeps idx and prov in step with w's changes.
func (wr *writer) index(w *Watcher, chs []tracker.Change) {
	for i := range chs {
		c := &chs[i]
		pid := c.Proc.ID.PID
		switch c.Kind {
		case tracker.Added:
			wr.join(pid, w)
		case tracker.Removed:
			leave(wr.idx, pid, w)
			if c.Provisional {
				add(wr.prov, pid, w)
			}
		case tracker.Upgraded:
			leave(wr.prov, pid, w)
		}
	}
	wr.filterChanges(chs)
}

func (wr *writer) join(pid int, w *Watcher) { add(wr.idx, pid, w) }

// forget removes every trace of w.
func (wr *writer) forget(w *Watcher) {
	var gone []int
	for _, m := range []map[int][]*Watcher{wr.idx, wr.prov} {
		for pid, ws := range m {
			if slices.Contains(ws, w) {
				leave(m, pid, w)
				gone = append(gone, pid)
			}
		}
	}
	for _, pid := range gone {
		wr.filterDrop(pid)
	}
	for i := range wr.checks {
		if wr.checks[i].w == w {
			wr.checks[i].w = nil
		}
	}
}

func add(m map[int][]*Watcher, pid int, w *Watcher) {
	ws := m[pid]
	if !slices.Contains(ws, w) {
		m[pid] = append(ws, w)
	}
}

func leave(m map[int][]*Watcher, pid int, w *Watcher) {
	ws := m[pid]
	i := slices.Index(ws, w)
	switch {
	case i < 0:
	case len(ws) == 1:
		delete(m, pid)
	default:
		m[pid] = slices.Delete(slices.Clone(ws), i, i+1)
	}
}

// lookup appends the watchers of pid in m to dst, without duplicates.
func lookup(m map[int][]*Watcher, pid int, dst []*Watcher) []*Watcher {
	for _, w := range m[pid] {
		if !slices.Contains(dst, w) {
			dst = append(dst, w)
		}
	}
	return dst
}

// dispatch applies a batch of kernel events.
func (wr *writer) dispatch(evs []connector.Event) {
	clk := wr.clock.sample()
	var forks, execs, exits, marks uint64
	for i := range evs {
		ev := &evs[i]
		switch ev.What {
		case connector.WhatMark:
			marks++
			if fn, ok := wr.marks[ev.Ack]; ok {
				delete(wr.marks, ev.Ack)
				fn()
			}
		case connector.WhatFork:
			forks++
			wr.onFork(ev, &clk)
		case connector.WhatExec:
			execs++
			wr.onExec(ev, &clk)
		case connector.WhatExit:
			exits++
			wr.onExit(ev, &clk)
		}
	}
	wr.h.forks.Add(forks)
	wr.h.execs.Add(execs)
	wr.h.exits.Add(exits)
	wr.h.others.Add(uint64(len(evs)) - forks - execs - exits - marks)
}

func (wr *writer) onFork(ev *connector.Event, clk *clocks) {
	if ev.PID != ev.TGID {
		// A new thread, not a process.
		wr.ws = lookup(wr.idx, int(ev.TGID), wr.ws[:0])
		if len(wr.ws) == 0 {
			wr.filterStranger(int(ev.TGID))
		}
		for _, w := range wr.ws {
			wr.apply(w, func(tr *tracker.Tracker) { tr.Thread(int(ev.TGID)) })
		}
		return
	}
	parent, pid := int(ev.ParentTGID), int(ev.PID)
	// The child's PID among members means its old holder exited unseen.
	wr.ws = lookup(wr.idx, pid, lookup(wr.idx, parent, wr.ws[:0]))
	if len(wr.ws) == 0 {
		wr.filterStranger(pid)
		return
	}
	ticks, approx := wr.childIdentity(pid, clk.ticksOf(ev.Timestamp))
	// A parent whose exit may have been missed (an overrun since it was
	// last confirmed) is checked against its start time.
	var pobs *tracker.Observation
	for _, w := range wr.ws {
		w.mu.Lock()
		need := !w.closed && w.tr.NeedsParentCheck(parent)
		w.mu.Unlock()
		if need {
			o := observe(wr.scanner, nil, parent, false, 0)
			pobs = &o
			break
		}
	}
	at := clk.wallOf(ev.Timestamp)
	id := tracker.Identity{PID: pid, StartTicks: ticks}
	for _, w := range wr.ws {
		wr.apply(w, func(tr *tracker.Tracker) { tr.Fork(parent, id, approx, at, time.Duration(ev.Timestamp), pobs) })
	}
}

func (wr *writer) onExec(ev *connector.Event, clk *clocks) {
	pid := int(ev.TGID)
	wr.ws = lookup(wr.idx, pid, wr.ws[:0])
	if len(wr.ws) == 0 {
		wr.filterStranger(pid)
		return
	}
	// The new image's name and command line: the kernel's record of the
	// exec (execImages) where the tracker takes it, else read from /proc
	// once for the watchers that want the same (almost always all).
	at, kernel := clk.wallOf(ev.Timestamp), time.Duration(ev.Timestamp)
	img, haveImg := wr.images.lookup(pid, ev.Timestamp)
	var o tracker.Observation
	read := -1
	for _, w := range wr.ws {
		m := w.cmdlineMax()
		if haveImg {
			var args []string
			trunc, ok := false, true
			if m > 0 {
				args, trunc, ok = img.cmdline(m)
			}
			applied := false
			if ok {
				wr.apply(w, func(tr *tracker.Tracker) { applied = tr.ExecImage(pid, img.comm, args, trunc, m > 0, at, kernel) })
			}
			if applied {
				wr.h.kernelImages.Add(1)
				continue
			}
		}
		if m != read {
			o, read = observe(wr.scanner, wr.r.cmdlines, pid, true, m), m
			wr.h.imageReads.Add(1)
		}
		wr.apply(w, func(tr *tracker.Tracker) { tr.Exec(pid, &o, at, kernel) })
	}
}

func (wr *writer) onExit(ev *connector.Event, clk *clocks) {
	tid, tgid := int(ev.PID), int(ev.TGID)
	wr.ws = lookup(wr.idx, tgid, wr.ws[:0])
	if tid == tgid {
		wr.ws = lookup(wr.prov, tgid, wr.ws)
	}
	if len(wr.ws) == 0 {
		if tid == tgid {
			wr.noteLateExit(tgid, ev, clk)
		}
		wr.filterStranger(tgid)
		return
	}
	at := clk.wallOf(ev.Timestamp)
	for _, w := range wr.ws {
		wr.apply(w, func(tr *tracker.Tracker) {
			if tr.ExitTask(tid, tgid, int(ev.ParentTGID), ev.ExitStatus, at, time.Duration(ev.Timestamp)) {
				wr.checks = append(wr.checks, exitCheck{w: w, pid: tgid})
			}
		})
	}
}

// lateExit is the exit of a process that was no member of any tree when
// its event was applied. A look at /proc (a scan or walk, Attach's
// included) may have seen it alive under a member before it exited, and
// is applied after its exit event (behind a barrier): the look adds it,
// and the exit, applied before, would be lost, leaving a member that is
// gone until the next check removes it without its status. The writer
// keeps these exits for lateExitMemory and applies them to the processes
// a look just added (applyLateExits).
type lateExit struct {
	ppid   int
	status uint32
	at     time.Time
	kernel time.Duration
}

// lateExitMemory is how long the writer keeps a lateExit: longer than a
// look can take to be applied, and than a host scan is shared for (the
// ReconcileInterval, 2 s by default).
const lateExitMemory = 10 * time.Second

// maxLateExits bounds lateExits (a host storm with the kernel filter off
// sends every exit of the host to the writer); the oldest go first.
const maxLateExits = 1 << 16

func (wr *writer) noteLateExit(pid int, ev *connector.Event, clk *clocks) {
	if len(wr.lateExits) >= maxLateExits {
		wr.pruneLateExits(time.Now().Add(-lateExitMemory / 10))
	}
	wr.lateExits[pid] = lateExit{ppid: int(ev.ParentTGID), status: ev.ExitStatus, at: clk.wallOf(ev.Timestamp), kernel: time.Duration(ev.Timestamp)}
}

// pruneLateExits forgets the exits older than before.
func (wr *writer) pruneLateExits(before time.Time) {
	for pid, x := range wr.lateExits {
		if x.at.Before(before) {
			delete(wr.lateExits, pid)
		}
	}
}

// applyLateExits applies to w the exits, applied before the look hs was,
// of processes the look just added to w's tree: it saw them alive, so
// they exited after it looked, with the status the kernel gave.
func (wr *writer) applyLateExits(w *Watcher, hs *hostScan) {
	if len(wr.lateExits) == 0 {
		return
	}
	var exited []int
	w.mu.Lock()
	for pid, x := range wr.lateExits {
		if p, ok := w.tr.Member(pid); ok && p.FirstSeen.Equal(hs.start) && !x.at.Before(hs.start.Add(-scanMargin)) {
			exited = append(exited, pid)
		}
	}
	w.mu.Unlock()
	for _, pid := range exited {
		x := wr.lateExits[pid]
		wr.apply(w, func(tr *tracker.Tracker) {
			if tr.ExitTask(pid, pid, x.ppid, x.status, x.at, x.kernel) {
				wr.checks = append(wr.checks, exitCheck{w: w, pid: pid})
			}
		})
	}
}

// checkExits decides the exits this batch left open: each process is
// observed once, now, and the observation is applied after every event
// queued until now, which may still end the question (an exec, the last
// thread's exit).
func (wr *writer) checkExits() {
	if len(wr.checks) == 0 {
		return
	}
	checks := slices.Clone(wr.checks)
	wr.checks = wr.checks[:0]
	obs := make(map[int]tracker.Observation, len(checks))
	for _, c := range checks {
		if _, ok := obs[c.pid]; !ok {
			obs[c.pid] = observe(wr.scanner, nil, c.pid, false, 0)
		}
	}
	wr.barrier(func() {
		for _, c := range checks {
			if c.w == nil {
				continue
			}
			o := []tracker.Observation{obs[c.pid]}
			wr.apply(c.w, func(tr *tracker.Tracker) { tr.ConfirmExits(o, time.Now()) })
		}
	})
}

// prune forgets, once a second, the provisional PIDs no tracker waits for
// and the late exits no look can need.
func (wr *writer) prune(now time.Time) {
	if now.Sub(wr.pruned) < time.Second {
		return
	}
	wr.pruned = now
	wr.pruneProv()
	wr.pruneLateExits(now.Add(-lateExitMemory))
}

// pruneProv forgets the provisional PIDs the trackers no longer wait for.
func (wr *writer) pruneProv() {
	for pid, ws := range wr.prov {
		for _, w := range ws {
			w.mu.Lock()
			waiting := w.tr.Provisional(pid)
			w.mu.Unlock()
			if !waiting {
				leave(wr.prov, pid, w)
				wr.filterDrop(pid)
			}
		}
	}
}

// overrun tells every watcher that the kernel dropped events (dropped of
// them, or 0 if unknown) and has the trees repaired at once. The socket
// keeps delivering (NETLINK_NO_ENOBUFS), so the repair does not wait for
// it to drain.
func (wr *writer) overrun(dropped uint64) {
	wr.h.overruns.Add(1)
	wr.h.lost.Add(dropped)
	for _, w := range wr.r.attached() {
		wr.apply(w, func(tr *tracker.Tracker) { tr.Overrun() })
		w.noteOverrun(dropped)
	}
	wr.r.rep.kick()
}
