package watchman

import (
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/process-watchman/watchman/connector"
	"github.com/process-watchman/watchman/reconcile"
	"github.com/process-watchman/watchman/tracker"
)

// confirmDelay is how long a reconcile waits before it acts on what it
// found, so that the events still queued in the socket (which carry exit
// statuses and exact data) are applied first.
const confirmDelay = 200 * time.Millisecond

// MaxPendingChanges bounds the Delta a Watcher accumulates between two
// Polls (Added plus Removed). A program that only reads the event stream and
// never polls would otherwise hold every process ever seen; past the bound,
// processes that were born and gone since the last Poll are dropped from the
// Delta and counted in Snapshot.Compacted.
const MaxPendingChanges = 1 << 18

// goneMemory is how long a removed identity is kept from being added back
// by a scan that still shows it running (see tracker.PruneGone).
const goneMemory = 5 * time.Second

// maxConfirmWaits bounds how many times (of confirmDelay each) a
// confirmation is put off while the hub still has kernel events to apply:
// on a host that never lets the queue drain, it acts after 5 s anyway.
const maxConfirmWaits = 25

// fullScanEvery makes every n-th periodic reconcile in connector mode a
// full host scan; the others check the members alone (tree-local), which
// costs one /proc read per member.
const fullScanEvery = 10

// Watcher tracks the process tree rooted at one PID. Its methods are safe
// for concurrent use.
type Watcher struct {
	cfg        Config
	fs         *reconcile.FS
	root       Identity
	mode       Mode
	modeReason string
	hub        *Hub // nil in polling mode

	// scanMu serializes scans, which use scanner, own and view; they run
	// without mu, so that events keep flowing during a scan.
	scanMu  sync.Mutex
	scanner *reconcile.Scanner
	own     hostScan  // polling mode's scan buffers
	view    *hostScan // the scan to apply: own, or the hub's

	mu       sync.Mutex // guards what follows
	tr       *tracker.Tracker
	subs     []*Subscription
	bgErr    error // the last background failure, for Poll
	overruns int   // since the previous Poll
	closed   bool
	// what the last reconcile left to confirm after confirmDelay
	suspects   []tracker.Identity
	candidates []tracker.Entry

	stats     WatcherStats // totals since Attach, under mu
	lastPrune time.Time

	rootDone chan struct{} // closed when the root has exited
	treeDone chan struct{} // closed when the root and every member have

	confirmWaits int // times the pending confirmation was put off (loop only)

	kick chan struct{} // asks the loop for a full reconcile now
	wake chan struct{} // asks the loop to look for due confirmations
	stop chan struct{}
	wg   sync.WaitGroup
}

// Attach starts watching the tree rooted at pid. A nil cfg means the
// defaults. It returns a *PIDError (matching ErrInvalidPID or
// ErrNoSuchProcess) for a PID that cannot be watched, a *ConfigError
// (matching ErrInvalidConfig) for a bad Config, and an error matching
// ErrConnectorUnavailable when StrategyConnector was asked for and cannot
// be had.
//
// In connector mode Attach subscribes to the kernel's events before it
// scans /proc, so that no process falls between the scan and the events.
// The descendants alive at Attach are reported as Added by the first Poll.
func Attach(pid int, cfg *Config) (*Watcher, error) {
	c, err := cfg.normalize()
	if err != nil {
		return nil, err
	}
	if pid <= 0 {
		return nil, &PIDError{PID: pid, Reason: "must be positive", Err: ErrInvalidPID}
	}
	fs, err := reconcile.NewFS(c.ProcRoot)
	if err != nil {
		return nil, &ConfigError{Field: "ProcRoot", Reason: "not a proc filesystem", Err: err}
	}
	if max, err := fs.PIDMax(); err == nil && pid >= max {
		return nil, &PIDError{PID: pid, Reason: fmt.Sprintf("above pid_max %d", max-1), Err: ErrInvalidPID}
	}
	st, err := fs.ReadStat(pid)
	if errors.Is(err, reconcile.ErrGone) {
		return nil, &PIDError{PID: pid, Reason: "no such process", Err: ErrNoSuchProcess}
	}
	if err != nil {
		return nil, fmt.Errorf("watchman: reading pid %d: %w", pid, err)
	}
	if !st.Live() {
		return nil, &PIDError{PID: pid, Reason: "process is a zombie", Err: ErrNoSuchProcess}
	}

	w := &Watcher{
		cfg:      c,
		fs:       fs,
		root:     Identity{PID: pid, StartTicks: st.StartTicks},
		scanner:  fs.NewScanner(),
		kick:     make(chan struct{}, 1),
		wake:     make(chan struct{}, 1),
		rootDone: make(chan struct{}),
		treeDone: make(chan struct{}),
		stop:     make(chan struct{}),
	}
	w.tr = tracker.New(tracker.Identity(w.root), tracker.Config{
		MaxDepth:    c.MaxDepth,
		MaxMembers:  c.MaxDescendants,
		IncludeRoot: c.IncludeRoot,
		Tombstones:  w.tombstoneLimit(),
		MaxPending:  MaxPendingChanges,
	}, time.Now())
	cmd, cmdTrunc := w.readCmdline(pid)
	w.tr.Update(tracker.Identity(w.root), func(p *tracker.Proc) {
		p.Name, p.State, p.PPID, p.Cmdline = st.Comm, st.State, st.PPID, cmd
		p.CmdlineTruncated, p.Threaded = cmdTrunc, st.NumThreads > 1
	})
	if err := w.chooseMode(); err != nil {
		return nil, err
	}
	if w.hub != nil {
		w.hub.attach(w)
	}
	if err := w.initialScan(); err != nil {
		w.shutdown()
		return nil, err
	}
	if iv := w.backgroundInterval(); iv > 0 || w.mode == ModeConnector {
		w.wg.Add(1)
		go w.loop(iv)
	}
	return w, nil
}

// chooseMode settles the mode from the strategy, and opens the connector
// when it is to be used.
func (w *Watcher) chooseMode() error {
	if w.cfg.Strategy == StrategyPoll {
		w.mode, w.modeReason = ModePoll, "polling was asked for (Strategy poll)"
		return nil
	}
	hub := w.cfg.Hub
	if hub == nil {
		if w.cfg.ProcRoot != "" && w.cfg.ProcRoot != reconcile.DefaultRoot {
			if w.cfg.Strategy == StrategyConnector {
				return &ConfigError{Field: "ProcRoot", Reason: "a custom proc root needs a Hub with the same ProcRoot in connector mode"}
			}
			w.mode, w.modeReason = ModePoll, "Config.ProcRoot is set without a Hub: polling that proc root"
			return nil
		}
		hub = NewHub(&HubConfig{ProcRoot: w.cfg.ProcRoot})
	} else if hub.cfg.ProcRoot != w.cfg.ProcRoot {
		return &ConfigError{Field: "ProcRoot", Reason: fmt.Sprintf("%q differs from the Hub's %q", w.cfg.ProcRoot, hub.cfg.ProcRoot)}
	}
	if err := hub.acquire(); err != nil {
		var ce *ConfigError
		if errors.As(err, &ce) {
			return err
		}
		if w.cfg.Strategy == StrategyConnector {
			return fmt.Errorf("%w: %w", ErrConnectorUnavailable, err)
		}
		w.mode, w.modeReason = ModePoll, "proc connector unavailable, polling /proc: "+err.Error()
		return nil
	}
	w.hub = hub
	w.mode, w.modeReason = ModeConnector, "listening to the kernel's proc connector"
	return nil
}

// initialScan makes the descendants alive now members. In connector mode
// events already flow, so members they added are not removed on the word
// of a scan that may predate them.
func (w *Watcher) initialScan() error {
	// The scan must start after the Watcher joined its hub, so that no
	// process falls between the two.
	err := w.scanApply(time.Now(), tracker.ScanOptions{DeferRemovals: w.mode == ModeConnector}, func(r *tracker.ScanResult) {
		for _, id := range r.Suspects {
			if id == tracker.Identity(w.root) {
				if _, ok := w.lookupLive(id); !ok {
					w.tr.ConfirmGone(id, time.Now())
				}
				continue
			}
			w.suspects = append(w.suspects, id)
		}
	})
	if err != nil {
		return err
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	if !w.tr.RootAlive() {
		return &PIDError{PID: w.root.PID, Reason: "exited during attach", Err: ErrNoSuchProcess}
	}
	return nil
}

// scanApply scans the host (or takes the hub's scan if it started no
// earlier than since) and applies the scan to the tracker, then calls then
// (if not nil) with the result, under the locks.
func (w *Watcher) scanApply(since time.Time, opt tracker.ScanOptions, then func(*tracker.ScanResult)) error {
	start := time.Now()
	if err := w.readHost(since); err != nil {
		return err
	}
	w.scanMu.Lock()
	defer w.scanMu.Unlock()
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.closed {
		return ErrClosed
	}
	r := w.applyScanLocked(opt)
	w.stats.FullScans++
	w.stats.countReconcile(time.Since(start))
	if then != nil {
		then(r)
	}
	return nil
}

func (w *Watcher) tombstoneLimit() int {
	if !w.cfg.KeepTombstones {
		return 0
	}
	return w.cfg.TombstoneLimit
}

// backgroundInterval is the period of background reconciles, or 0 for none.
func (w *Watcher) backgroundInterval() time.Duration {
	iv := w.cfg.ReconcileInterval
	switch {
	case iv < 0:
		return 0
	case iv == 0 && w.mode == ModeConnector:
		return DefaultReconcileInterval
	}
	return iv
}

// RootExited returns a channel that is closed once the Watcher knows the
// root has exited (or become a zombie, or its PID was reused): at once in
// connector mode, at the next scan in polling mode.
func (w *Watcher) RootExited() <-chan struct{} { return w.rootDone }

// Done returns a channel that is closed once the root and every member have
// exited: the tree is over. Close does not close it.
func (w *Watcher) Done() <-chan struct{} { return w.treeDone }

// checkDone closes rootDone and treeDone when their time has come; the
// caller holds mu.
func (w *Watcher) checkDone() {
	if w.tr.RootAlive() {
		return
	}
	select {
	case <-w.rootDone:
	default:
		close(w.rootDone)
	}
	if w.tr.Len() > 0 {
		return
	}
	select {
	case <-w.treeDone:
	default:
		close(w.treeDone)
	}
}

// WatcherStats are a Watcher's totals since Attach.
type WatcherStats struct {
	// Reconciles counts the checks against /proc: full host scans
	// (FullScans of them, Attach's and Polls' in polling mode included)
	// and tree-local checks of the members.
	Reconciles, FullScans uint64
	// ReconcileTime is their total duration; LastReconcile the last one's.
	ReconcileTime, LastReconcile time.Duration
	// Repairs counts the corrections reconciles made.
	Repairs uint64
	// Overruns counts the kernel's overruns seen.
	Overruns uint64
}

func (s *WatcherStats) countReconcile(d time.Duration) {
	s.Reconciles++
	s.ReconcileTime += d
	s.LastReconcile = d
}

// Stats returns the Watcher's totals.
func (w *Watcher) Stats() WatcherStats {
	w.mu.Lock()
	defer w.mu.Unlock()
	st := w.stats
	st.Repairs = w.tr.TotalRepairs()
	return st
}

// Hub returns the Hub that feeds the Watcher (its private one if
// Config.Hub was nil), or nil in polling mode.
func (w *Watcher) Hub() *Hub { return w.hub }

// Root returns the identity of the root process.
func (w *Watcher) Root() Identity { return w.root }

// Mode returns how the Watcher learns of processes.
func (w *Watcher) Mode() Mode { return w.mode }

// ModeReason says why the Watcher is in its Mode, e.g. why the proc
// connector could not be used.
func (w *Watcher) ModeReason() string { return w.modeReason }

// Poll returns the tree as it is now and what changed since the previous
// Poll. In polling mode it scans /proc first; in connector mode the tree is
// already current and Poll costs O(members + changes).
func (w *Watcher) Poll() (Snapshot, error) {
	if w.mode == ModePoll {
		if err := w.scanApply(time.Now(), tracker.ScanOptions{}, nil); err != nil {
			return Snapshot{}, err
		}
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.closed {
		return Snapshot{}, ErrClosed
	}
	if err := w.bgErr; err != nil {
		w.bgErr = nil
		return Snapshot{}, err
	}
	w.flushLost()
	ch := w.tr.Take()
	snap := Snapshot{
		Time:      time.Now(),
		Root:      w.root,
		RootAlive: w.tr.RootAlive(),
		Truncated: ch.Truncated,
		Mode:      w.mode,
		Overruns:  w.overruns,
		Repairs:   ch.Repairs,
		Compacted: ch.Compacted,
		Delta: Delta{
			Added:   identities(ch.Added),
			Removed: identities(ch.Removed),
			Exited:  make([]Exit, len(ch.Exits)),
		},
	}
	w.overruns = 0
	for i, e := range ch.Exits {
		snap.Delta.Exited[i] = w.exit(e)
	}
	members := w.tr.Members(nil)
	snap.Processes = make([]ProcessInfo, len(members))
	for i, p := range members {
		snap.Processes[i] = w.info(p)
	}
	if len(ch.Tombstones) > 0 {
		snap.Tombstones = make([]Tombstone, len(ch.Tombstones))
		for i, ts := range ch.Tombstones {
			snap.Tombstones[i] = w.tombstone(ts)
		}
	}
	return snap, nil
}

// LivePIDs returns the PIDs of the live members, sorted (the root among them
// only with Config.IncludeRoot). In connector mode it is current; in polling
// mode it is the set of the last scan. It does not change the Delta of the
// next Poll. After Close it returns nil.
func (w *Watcher) LivePIDs() []int {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.closed {
		return nil
	}
	return w.tr.PIDs(nil)
}

// Tombstones returns the last Config.TombstoneLimit removed members, oldest
// first, when Config.KeepTombstones is set.
func (w *Watcher) Tombstones() []Tombstone {
	w.mu.Lock()
	defer w.mu.Unlock()
	kept := w.tr.Tombstones(nil)
	out := make([]Tombstone, len(kept))
	for i, ts := range kept {
		out[i] = w.tombstone(ts)
	}
	return out
}

// Close stops the Watcher, closes its subscriptions, and releases its
// goroutines and descriptors (the connector socket with the last Watcher of
// its Hub). It is idempotent; afterwards Poll returns ErrClosed.
func (w *Watcher) Close() error {
	w.mu.Lock()
	if w.closed {
		w.mu.Unlock()
		return nil
	}
	// Only the first of concurrent Closes gets past here.
	w.closed = true
	w.mu.Unlock()
	w.shutdown()
	return nil
}

// shutdown does Close's work; also used when Attach fails half way.
func (w *Watcher) shutdown() {
	w.mu.Lock()
	w.closed = true
	w.closeSubs()
	pids := w.tr.PIDs(nil)
	pids = append(pids, w.root.PID)
	w.mu.Unlock()
	close(w.stop)
	w.wg.Wait()
	if w.hub != nil {
		w.hub.detach(w, pids)
		w.hub.release()
	}
}

// loop runs the background reconciles until Close: periodic ones every iv
// (if positive), full ones when kicked (overruns), and the confirmations
// they leave.
func (w *Watcher) loop(iv time.Duration) {
	defer w.wg.Done()
	var tick <-chan time.Time
	if iv > 0 {
		t := time.NewTicker(iv)
		defer t.Stop()
		tick = t.C
	}
	confirm := time.NewTimer(time.Hour)
	confirm.Stop()
	defer confirm.Stop()
	armed := false
	if w.hasPending() {
		confirm.Reset(confirmDelay)
		armed = true
	}
	// Retries of lost-event markers that subscribers had no room for.
	lostT := time.NewTimer(time.Hour)
	lostT.Stop()
	defer lostT.Stop()
	lostArmed := false
	n := 0
	for {
		var err error
		select {
		case <-w.stop:
			return
		case <-w.kick:
			err = w.reconcile(true, 0)
		case <-w.wake:
		case <-tick:
			n++
			err = w.reconcile(w.mode == ModePoll || n%fullScanEvery == 0, iv)
			w.mu.Lock()
			w.tr.PruneGone(time.Now().Add(-goneMemory))
			w.mu.Unlock()
		case <-confirm.C:
			armed = false
			w.confirm()
		case <-lostT.C:
			lostArmed = false
		}
		if err != nil {
			w.mu.Lock()
			w.bgErr = err
			w.mu.Unlock()
		}
		if !armed && w.hasPending() {
			confirm.Reset(confirmDelay)
			armed = true
		}
		w.mu.Lock()
		lost := w.flushLost()
		w.mu.Unlock()
		if lost && !lostArmed {
			lostT.Reset(lostRetry)
			lostArmed = true
		}
	}
}

// hasPending reports whether a confirmation is due.
func (w *Watcher) hasPending() bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	return len(w.suspects) > 0 || len(w.candidates) > 0 || len(w.tr.PendingLeaders(nil)) > 0
}

// reconcile checks the tree against /proc: the whole host when full, else
// the members alone. A full check may use a host scan that the hub made
// for another watcher up to maxAge ago: what it finds is confirmed against
// /proc before it is acted on. In connector mode that waits for confirm.
func (w *Watcher) reconcile(full bool, maxAge time.Duration) error {
	since := time.Now().Add(-maxAge)
	if w.mode == ModePoll {
		return w.scanApply(since, tracker.ScanOptions{}, nil)
	}
	if !full {
		w.checkMembers()
		return nil
	}
	return w.scanApply(since, tracker.ScanOptions{Repair: true, DeferRemovals: true, DeferAdditions: true}, func(r *tracker.ScanResult) {
		w.suspects = append(w.suspects, r.Suspects...)
		w.candidates = append(w.candidates, r.Candidates...)
	})
}

// checkMembers is the tree-local reconcile: members that /proc no longer
// shows alive become suspects.
func (w *Watcher) checkMembers() {
	start := time.Now()
	defer func() {
		w.mu.Lock()
		w.stats.countReconcile(time.Since(start))
		w.mu.Unlock()
	}()
	w.mu.Lock()
	members := w.tr.Members(nil)
	ids := make([]tracker.Identity, 0, len(members)+1)
	for _, p := range members {
		ids = append(ids, p.ID)
	}
	if !w.cfg.IncludeRoot && w.tr.RootAlive() {
		ids = append(ids, tracker.Identity(w.root))
	}
	w.mu.Unlock()
	var gone []tracker.Identity
	for _, id := range ids {
		if _, ok := w.lookupLive(id); !ok {
			gone = append(gone, id)
		}
	}
	w.mu.Lock()
	w.suspects = append(w.suspects, gone...)
	w.mu.Unlock()
}

// confirm acts on what the last reconcile found, now that the events queued
// at the time have been applied: suspects still gone are removed,
// candidates still alive and still unannounced are added, and processes
// whose first thread exited are checked again.
func (w *Watcher) confirm() {
	// The events queued when the reconcile looked may still be waiting in
	// the socket, or be in the reader's hands, under load or while another
	// watcher of the hub holds it up: their exit statuses must win over a
	// scan, so put the confirmation off until they are applied (the loop
	// re-arms it, since it is still pending).
	if w.hub != nil && !w.hub.settled() && w.confirmWaits < maxConfirmWaits {
		w.confirmWaits++
		return
	}
	w.confirmWaits = 0
	w.mu.Lock()
	suspects, candidates := w.suspects, w.candidates
	w.suspects, w.candidates = nil, nil
	leaders := w.tr.PendingLeaders(nil)
	w.mu.Unlock()

	// Read /proc without the lock.
	w.scanMu.Lock()
	goneS := suspects[:0]
	for _, id := range suspects {
		if _, ok := w.lookupLive(id); !ok {
			goneS = append(goneS, id)
		}
	}
	aliveC := candidates[:0]
	for _, e := range candidates {
		if got, ok := w.lookupLive(tracker.Identity{PID: e.PID, StartTicks: e.StartTicks}); ok {
			e.PPID, e.State, e.Threaded = got.PPID, got.State, got.NumThreads > 1
			aliveC = append(aliveC, e)
		}
	}
	var goneL []int
	for _, pid := range leaders {
		if _, _, ok, err := w.scanner.Lookup(pid); err == nil && !ok {
			goneL = append(goneL, pid)
		} else if e, _, ok, _ := w.scanner.Lookup(pid); ok && !e.Live() {
			goneL = append(goneL, pid)
		}
	}
	w.scanMu.Unlock()

	now := time.Now()
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.closed {
		return
	}
	defer w.checkDone()
	for _, id := range goneS {
		p, ok := w.tr.Member(id.PID)
		if !ok || p.ID != id {
			continue
		}
		if w.tr.LeaderHasExited(id.PID) {
			w.exitLocked(id.PID, nil, now, 0, 0)
			continue
		}
		info := w.info(p)
		if w.tr.ConfirmGone(id, now) {
			w.left(id.PID)
			x := Exit{Identity: Identity(id), Code: -1, Time: now}
			x.Lifetime = max(now.Sub(info.Started), 0)
			w.emit(Event{Type: EventExit, Time: now, Process: Identity(id), PPID: info.PPID, Name: info.Name,
				Cmdline: info.Cmdline, Depth: info.Depth, Exit: &x, Synthetic: true})
		}
	}
	for _, e := range aliveC {
		if p := w.tr.AddFound(e, now); p != nil {
			w.joined(p)
			w.fillInfo(p)
			w.emitJoin(p, now, 0, true)
		}
	}
	for _, pid := range goneL {
		if w.tr.LeaderHasExited(pid) {
			w.exitLocked(pid, nil, now, 0, 0)
		}
	}
}

// lookupLive reads id from /proc and reports whether it is alive; the
// caller holds scanMu or is the only scanner user.
func (w *Watcher) lookupLive(id tracker.Identity) (reconcile.Entry, bool) {
	e, _, ok, err := w.scanner.Lookup(id.PID)
	if err != nil || !ok || !e.Live() || !closeTicks(e.StartTicks, id.StartTicks) {
		return e, false
	}
	return e, true
}

// readHost makes w.view a scan of the whole host that started no earlier
// than since, under scanMu but not mu. With a Hub the scan is the hub's,
// shared read-only by its watchers; in polling mode it is the Watcher's own.
func (w *Watcher) readHost(since time.Time) error {
	w.scanMu.Lock()
	defer w.scanMu.Unlock()
	if w.hub != nil {
		hs, err := w.hub.scanHost(since)
		if err != nil {
			return err
		}
		w.view = hs
		return nil
	}
	if err := w.scanner.Scan(&w.own.scan); err != nil {
		return fmt.Errorf("watchman: scanning %s: %w", w.fs.Root(), err)
	}
	w.own.entries = scanEntries(&w.own.scan, w.own.entries[:0])
	w.own.start = time.Now()
	w.view = &w.own
	return nil
}

// hostScan is one scan of the whole host, as reconcile read it and as the
// tracker takes it.
type hostScan struct {
	start   time.Time
	scan    reconcile.Scan
	entries []tracker.Entry
}

// scanEntries converts a scan for the tracker, appending to dst.
func scanEntries(s *reconcile.Scan, dst []tracker.Entry) []tracker.Entry {
	for i := range s.Entries {
		e := &s.Entries[i]
		dst = append(dst, tracker.Entry{
			PID: e.PID, PPID: e.PPID, StartTicks: e.StartTicks, Live: e.Live(), State: e.State,
			Threaded: e.NumThreads > 1,
		})
	}
	return dst
}

// applyScanLocked applies w.view; the caller holds scanMu and mu.
func (w *Watcher) applyScanLocked(opt tracker.ScanOptions) *tracker.ScanResult {
	now := time.Now()
	view := w.view
	// Exits are reported from the members' last state, so keep it until
	// the scan has said which are gone.
	var before map[int]ProcessInfo
	if len(w.subs) > 0 && !opt.DeferRemovals {
		members := w.tr.Members(nil)
		before = make(map[int]ProcessInfo, len(members))
		for _, p := range members {
			before[p.ID.PID] = w.info(p)
		}
	}
	r := w.tr.ApplyScan(view.entries, now, opt)
	defer w.checkDone()
	for _, id := range r.Removed {
		w.left(id.PID)
		info, ok := before[id.PID]
		if !ok || info.Identity != Identity(id) {
			continue
		}
		x := Exit{Identity: info.Identity, Code: -1, Time: now, Lifetime: max(now.Sub(info.Started), 0)}
		w.emit(Event{Type: EventExit, Time: now, Process: info.Identity, PPID: info.PPID, Name: info.Name,
			Cmdline: info.Cmdline, Depth: info.Depth, Exit: &x, Synthetic: true})
	}
	for _, i := range r.Added {
		e := &view.scan.Entries[i]
		id := tracker.Identity{PID: e.PID, StartTicks: e.StartTicks}
		cmd, trunc := w.readCmdline(e.PID)
		name := view.scan.Comm(i)
		w.tr.Update(id, func(p *tracker.Proc) {
			p.Name, p.Cmdline, p.CmdlineTruncated = name, cmd, trunc
		})
		if p, ok := w.tr.Member(e.PID); ok {
			w.joined(p)
			w.emitJoin(p, now, 0, true)
		}
	}
	w.refreshNames()
	return r
}

// refreshNames updates the names of members that changed their comm (by an
// exec, or prctl) since they joined, and re-reads their command lines.
//
// A command line read while the process was in the middle of an exec is
// empty (the kernel sets the new arguments after the new name), so empty
// ones are read again too.
func (w *Watcher) refreshNames() {
	scan := &w.view.scan
	for _, p := range w.tr.Members(nil) {
		i, ok := w.tr.IndexOf(p.ID.PID)
		if !ok || i >= len(scan.Entries) || scan.Entries[i].PID != p.ID.PID {
			continue
		}
		if string(scan.CommBytes(i)) == p.Name && (p.Cmdline != nil || !w.cfg.CaptureCmdline) {
			continue
		}
		name := scan.Comm(i)
		cmd, trunc := w.readCmdline(p.ID.PID)
		w.tr.Update(p.ID, func(p *tracker.Proc) {
			p.Name, p.Cmdline, p.CmdlineTruncated = name, cmd, trunc
		})
	}
}

// fillInfo reads the name and command line of a new member found by a
// reconcile; the caller holds mu.
func (w *Watcher) fillInfo(p *tracker.Proc) {
	st, err := w.fs.ReadStat(p.ID.PID)
	if err != nil || st.StartTicks != p.ID.StartTicks {
		return
	}
	cmd, trunc := w.readCmdline(p.ID.PID)
	w.tr.Update(p.ID, func(p *tracker.Proc) {
		p.Name, p.Cmdline, p.CmdlineTruncated = st.Comm, cmd, trunc
	})
}

// readCmdline reads a command line when they are captured. A process that
// is gone or unreadable has none.
func (w *Watcher) readCmdline(pid int) ([]string, bool) {
	if !w.cfg.CaptureCmdline {
		return nil, false
	}
	args, trunc, err := w.fs.Cmdline(pid, w.cfg.CmdlineMaxChars)
	if err != nil {
		return nil, false
	}
	return args, trunc
}

// joined and left keep the hub's index in step with the tracker.
func (w *Watcher) joined(p *tracker.Proc) {
	if w.hub != nil {
		w.hub.join(p.ID.PID, w)
	}
}

func (w *Watcher) left(pid int) {
	if w.hub != nil && !w.tr.IsMember(pid) {
		w.hub.leave(pid, w)
	}
}

// emitJoin sends a fork event for a new member.
func (w *Watcher) emitJoin(p *tracker.Proc, at time.Time, kernel time.Duration, synthetic bool) {
	if len(w.subs) == 0 {
		return
	}
	w.emit(Event{Type: EventFork, Time: at, KernelTime: kernel, Process: Identity(p.ID), PPID: p.PPID,
		Name: p.Name, Cmdline: p.Cmdline, Depth: p.Depth, Synthetic: synthetic})
}

// onFork applies a kernel fork event whose parent is a member (reader
// goroutine).
func (w *Watcher) onFork(ev *connector.Event, ticks uint64, approx bool, clk *clocks) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.closed {
		return
	}
	at := clk.wallOf(ev.Timestamp)
	id := tracker.Identity{PID: int(ev.PID), StartTicks: ticks}
	p := w.tr.Fork(int(ev.ParentTGID), id, approx, at)
	if p == nil {
		w.left(id.PID)
		return
	}
	w.joined(p)
	w.emitJoin(p, at, time.Duration(ev.Timestamp), false)
}

// onExec applies a kernel exec event of a member (reader goroutine).
func (w *Watcher) onExec(ev *connector.Event, info *procInfo, clk *clocks) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.closed {
		return
	}
	p, ok := w.tr.Member(int(ev.TGID))
	if !ok {
		return
	}
	// A new image has one thread, whatever the old one had.
	w.tr.Execed(p.ID.PID)
	if info.ok && info.entry.StartTicks == p.ID.StartTicks || info.ok && p.Approx && closeTicks(info.entry.StartTicks, p.ID.StartTicks) {
		cmd, trunc := w.readCmdline(p.ID.PID)
		w.tr.Update(p.ID, func(p *tracker.Proc) {
			p.Name, p.Cmdline, p.CmdlineTruncated, p.State = info.comm, cmd, trunc, info.entry.State
		})
	} else {
		// The process was gone before its new image could be read: the
		// old name would be wrong, so the name is unknown.
		w.tr.Update(p.ID, func(p *tracker.Proc) {
			p.Name, p.Cmdline, p.CmdlineTruncated = "", nil, false
		})
	}
	if len(w.subs) > 0 {
		at := clk.wallOf(ev.Timestamp)
		w.emit(Event{Type: EventExec, Time: at, KernelTime: time.Duration(ev.Timestamp), Process: Identity(p.ID),
			PPID: p.PPID, Name: p.Name, Cmdline: p.Cmdline, Depth: p.Depth})
	}
}

// onThread records that member tgid has more than one thread (reader
// goroutine).
func (w *Watcher) onThread(tgid int) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.tr.Update(w.memberID(tgid), func(p *tracker.Proc) { p.Threaded = true })
}

// memberID returns the identity of member pid, or the zero Identity.
func (w *Watcher) memberID(pid int) tracker.Identity {
	if p, ok := w.tr.Member(pid); ok {
		return p.ID
	}
	return tracker.Identity{}
}

// onExit applies a kernel exit event of a task of a member (reader
// goroutine). It reads /proc (through proc, once per event for all
// watchers) only where the event may not be the end of the process: the
// first thread's exit of a process that has had other threads (they may run
// on), and another thread's exit once the first one has gone. A
// single-threaded process's exit needs no read.
func (w *Watcher) onExit(ev *connector.Event, proc *lazyProc, clk *clocks) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.closed {
		return
	}
	tgid := int(ev.TGID)
	p, ok := w.tr.Member(tgid)
	if !ok {
		return
	}
	at := clk.wallOf(ev.Timestamp)
	leader := ev.PID == ev.TGID
	if leader && !p.Threaded || !leader && !w.tr.LeaderHasExited(tgid) {
		if leader {
			status := ev.ExitStatus
			w.exitLocked(tgid, &status, at, time.Duration(ev.Timestamp), int(ev.ParentTGID))
		}
		return
	}
	info := proc.get()
	same := info.ok && (info.entry.StartTicks == p.ID.StartTicks || p.Approx && closeTicks(info.entry.StartTicks, p.ID.StartTicks))
	running := info.entry.NumThreads > 1 || info.entry.State != 'Z' && info.entry.State != 'X'
	if same && running && leader {
		// The first thread is gone but the process still runs: other
		// threads go on, or a thread other than the first called exec
		// (the kernel then ends the first thread, and the caller takes
		// its PID and start time), or the process is still on its way
		// out. It stays a member until /proc or an event says it is
		// gone; the loop checks if no event does.
		w.tr.LeaderExited(tgid, ev.ExitStatus, at)
		select {
		case w.wake <- struct{}{}:
		default:
		}
		return
	}
	if same && info.entry.Live() && !leader {
		return // threads remain
	}
	status := ev.ExitStatus
	w.exitLocked(tgid, &status, at, time.Duration(ev.Timestamp), int(ev.ParentTGID))
}

// exitLocked removes member pid with the given wait status (nil: the one the
// first thread left) and reports it, with the kernel's timestamp and the
// parent at exit when known (else 0).
func (w *Watcher) exitLocked(pid int, status *uint32, at time.Time, kernel time.Duration, ppid int) {
	p, ok := w.tr.Member(pid)
	if !ok {
		return
	}
	var info ProcessInfo
	if len(w.subs) > 0 {
		info = w.info(p)
	}
	var st uint32
	switch {
	case status != nil:
		st = *status
	case w.tr.LeaderHasExited(pid):
		st = w.tr.LeaderStatus(pid)
	}
	w.tr.Exit(pid, st, at)
	w.left(pid)
	w.checkDone()
	// Without periodic reconciles nothing else prunes the removed
	// identities; a storm must not make them pile up.
	if w.tr.GoneLen() > 4096 && at.Sub(w.lastPrune) > time.Second {
		w.tr.PruneGone(at.Add(-goneMemory))
		w.lastPrune = at
	}
	if len(w.subs) == 0 {
		return
	}
	if ppid <= 0 {
		ppid = info.PPID
	}
	x := w.exit(tracker.Exit{ID: tracker.Identity(info.Identity), Status: st, Known: true, Time: at})
	w.emit(Event{Type: EventExit, Time: at, KernelTime: kernel, Process: info.Identity, PPID: ppid,
		Name: info.Name, Cmdline: info.Cmdline, Depth: info.Depth, Exit: &x})
}

// noteOverrun is told by the hub that the kernel dropped events (lost of
// them, all the host's, or 0 if unknown) and that its socket is drained: a
// full reconcile starts at once.
func (w *Watcher) noteOverrun(lost uint64) {
	w.mu.Lock()
	if !w.closed {
		w.overruns++
		w.stats.Overruns++
		w.emit(Event{Type: EventLost, Time: time.Now(), Lost: lost, Overrun: true})
	}
	w.mu.Unlock()
	select {
	case w.kick <- struct{}{}:
	default:
	}
}

// noteFailure records a receive failure for Poll and asks for a reconcile.
func (w *Watcher) noteFailure(err error) {
	w.mu.Lock()
	w.bgErr = err
	w.mu.Unlock()
	select {
	case w.kick <- struct{}{}:
	default:
	}
}

func identities(ids []tracker.Identity) []Identity {
	out := make([]Identity, len(ids))
	for i, id := range ids {
		out[i] = Identity(id)
	}
	return out
}

func (w *Watcher) info(p *tracker.Proc) ProcessInfo {
	pi := ProcessInfo{
		Identity:         Identity(p.ID),
		PPID:             p.PPID,
		Parent:           p.Parent,
		Name:             p.Name,
		Cmdline:          p.Cmdline,
		CmdlineTruncated: p.CmdlineTruncated,
		Depth:            p.Depth,
		Started:          w.fs.TicksToTime(p.ID.StartTicks),
		ApproxStart:      p.Approx,
	}
	if p.State != 0 {
		pi.State = string(rune(p.State))
	}
	return pi
}

func (w *Watcher) exit(e tracker.Exit) Exit {
	x := Exit{
		Identity:    Identity(e.ID),
		StatusKnown: e.Known,
		Code:        e.Code(),
		Signal:      e.Signal(),
		CoreDumped:  e.CoreDumped(),
		Time:        e.Time,
	}
	if !e.Time.IsZero() {
		x.Lifetime = max(e.Time.Sub(w.fs.TicksToTime(e.ID.StartTicks)), 0)
	}
	return x
}

func (w *Watcher) tombstone(ts tracker.Tombstone) Tombstone {
	return Tombstone{ProcessInfo: w.info(&ts.Proc), Removed: ts.Removed, Exit: w.exit(ts.Exit)}
}
