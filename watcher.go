package watchman

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"slices"
	"strconv"
	"sync"
	"time"

	"github.com/process-watchman/watchman/reconcile"
	"github.com/process-watchman/watchman/tracker"
)

// MaxPendingChanges bounds the Delta a Watcher accumulates between two
// Polls (Added plus Removed). A program that only reads the event stream and
// never polls would otherwise hold every process ever seen; past the bound,
// processes that were born and gone since the last Poll are dropped from the
// Delta and counted in Snapshot.Compacted.
const MaxPendingChanges = 1 << 18

// goneMemory is how long a removed identity is kept from being added back
// by a scan that still shows it running, and how long a process removed
// without the kernel's exit status waits for it (see tracker.PruneGone).
const goneMemory = 5 * time.Second

// fullScanEvery makes every n-th periodic reconcile in connector mode a
// full host scan; the others check the members alone (tree-local), which
// costs one /proc read per member.
const fullScanEvery = 10

// Watcher tracks the process tree rooted at one PID. Its methods are safe
// for concurrent use. It is a shell around a tracker.Tracker that holds
// every decision: in connector mode its Hub's writer goroutine is the one
// that changes the tree; in polling mode, whoever scans (Poll, or the
// background loop) under pollMu. See the package documentation, section
// Concurrency.
type Watcher struct {
	cfg        Config
	fs         *reconcile.FS
	root       Identity
	mode       Mode
	modeReason string
	usageDesc  string  // where Exit.Usage comes from (Config.CaptureUsage), set at Attach
	hub        *Hub    // nil in polling mode
	run        *hubRun // the hub's open state, nil in polling mode

	mu       sync.Mutex // guards what follows; never held across a /proc read
	tr       *tracker.Tracker
	subs     []*Subscription
	bgErr    error // the last background failure, for Poll
	overruns int   // since the previous Poll
	closed   bool
	stats    WatcherStats // totals since Attach
	lostT    *time.Timer  // retries pending lost markers
	// While the hub's writer applies a batch of kernel events, the
	// Watcher's events are held in outbox (holding is set) and delivered
	// when the batch ends (writer.flushHeld): a subscriber then wakes once
	// per batch, not once per event.
	holding  bool
	outbox   []Event
	rootDone chan struct{}
	treeDone chan struct{}

	// Polling mode; pollMu serializes its scans and guards what follows.
	// It is held across /proc reads, and taken before mu, never under it.
	pollMu   sync.Mutex
	scanner  *reconcile.Scanner
	own      hostScan // host scans
	walk     reconcile.Walk
	walkScan hostScan // walks of the tree
	walkable bool     // the kernel has children files
	lastFull time.Time

	rootFD *reconcile.PIDFD // the root's pidfd, if one could be had
	stop   chan struct{}
	wg     sync.WaitGroup
}

// minInterval is the shortest ReconcileInterval accepted: below it the
// background checks would take a core.
const minInterval = 10 * time.Millisecond

// Attach starts watching the tree rooted at pid. A nil cfg means the
// defaults. It returns a *PIDError (matching ErrInvalidPID or
// ErrNoSuchProcess) for a PID that cannot be watched (a thread's ID
// included), a *ConfigError (matching ErrInvalidConfig) for a bad Config,
// and an error matching ErrConnectorUnavailable when StrategyConnector was
// asked for and cannot be had.
//
// In connector mode Attach joins the hub's event stream before it scans
// /proc, so that no process falls between the scan and the events. The
// descendants alive at Attach are reported as Added by the first Poll.
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
	scanner := fs.NewScanner()
	st := observe(scanner, fs, pid, true, cmdlineMax(&c))
	switch st.Seen {
	case tracker.SeenGone:
		if st.PID == pid && st.StartTicks != 0 {
			return nil, &PIDError{PID: pid, Reason: "process is a zombie", Err: ErrNoSuchProcess}
		}
		return nil, &PIDError{PID: pid, Reason: "no such process", Err: ErrNoSuchProcess}
	case tracker.SeenUnknown:
		return nil, &PIDError{PID: pid, Reason: "cannot read its /proc entry: " + st.Err.Error(), Err: ErrUnreadable}
	}
	if tgid, err := threadGroup(fs.Root(), pid); err == nil && tgid != pid {
		return nil, &PIDError{PID: pid, Reason: fmt.Sprintf("%d is a thread of process %d", pid, tgid), Err: ErrInvalidPID}
	}
	w := &Watcher{
		cfg:      c,
		fs:       fs,
		root:     Identity{PID: pid, StartTicks: st.StartTicks},
		scanner:  scanner,
		walkable: fs.HasChildrenFiles(),
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
		GoneMemory:  goneMemory,
	}, time.Now())
	w.tr.Describe(tracker.Identity(w.root), &st)
	w.tr.DrainChanges(nil)
	if err := w.chooseMode(); err != nil {
		return nil, err
	}
	if w.mode == ModePoll && c.CaptureUsage {
		const why = "polling mode: exits are found by /proc scans, without the kernel's accounting"
		w.usageDesc, w.stats.UsageReason = "no per-process usage ("+why+")", why
	}
	if err := w.initialScan(); err != nil {
		w.shutdown()
		return nil, err
	}
	if iv := w.backgroundInterval(); iv > 0 && w.mode == ModePoll {
		w.wg.Add(1)
		go w.pollLoop(iv)
	}
	w.watchRoot()
	return w, nil
}

// watchRoot learns of the root's exit through a pidfd, at once in both
// modes: in polling mode it then looks at the tree at once (so RootExited
// and Done close without a Poll), in connector mode it has the tree checked
// (a safety net for a lost exit event). A fake proc root (Config.ProcRoot)
// has no pidfds; where pidfd_open is missing the mode reason says so.
func (w *Watcher) watchRoot() {
	if w.cfg.ProcRoot != "" && w.cfg.ProcRoot != reconcile.DefaultRoot {
		return
	}
	pf, err := reconcile.OpenPIDFDFunc(w.fs, w.root.PID, func(got uint64) bool { return got == w.root.StartTicks })
	if err != nil {
		if errors.Is(err, reconcile.ErrPIDFDUnsupported) {
			w.modeReason += "; no pidfd here, so the root's exit is seen at the next look at /proc"
		}
		return
	}
	w.rootFD = pf
	w.wg.Add(1)
	go func() {
		defer w.wg.Done()
		select {
		case <-w.stop:
			return
		case <-pf.Exited():
		}
		if w.run != nil {
			w.run.rep.checkMembers(w)
		} else if err := w.pollScan(); err != nil && err != ErrClosed {
			w.noteFailure(err)
		}
	}()
}

// threadGroup reads the Tgid of /proc/PID/status: a TID of a thread other
// than the first is accepted by /proc/TID, but is not a process.
func threadGroup(root string, pid int) (int, error) {
	b, err := os.ReadFile(root + "/" + strconv.Itoa(pid) + "/status")
	if err != nil {
		return 0, err
	}
	_, rest, ok := bytes.Cut(b, []byte("\nTgid:"))
	if !ok {
		return 0, errors.New("no Tgid")
	}
	line, _, _ := bytes.Cut(rest, []byte("\n"))
	return strconv.Atoi(string(bytes.TrimSpace(line)))
}

// chooseMode settles the mode from the strategy, and opens the connector
// when it is to be used.
func (w *Watcher) chooseMode() error {
	if w.cfg.Strategy == StrategyPoll {
		w.mode, w.modeReason = ModePoll, "polling was asked for (Strategy poll)"+w.pollHow()
		return nil
	}
	hub := w.cfg.Hub
	if hub == nil {
		if w.cfg.ProcRoot != "" && w.cfg.ProcRoot != reconcile.DefaultRoot {
			if w.cfg.Strategy == StrategyConnector {
				return &ConfigError{Field: "ProcRoot", Reason: "a custom proc root needs a Hub with the same ProcRoot in connector mode"}
			}
			w.mode, w.modeReason = ModePoll, "Config.ProcRoot is set without a Hub: polling that proc root"+w.pollHow()
			return nil
		}
		hub = NewHub(&HubConfig{ProcRoot: w.cfg.ProcRoot})
	} else if hub.cfg.ProcRoot != w.cfg.ProcRoot {
		return &ConfigError{Field: "ProcRoot", Reason: fmt.Sprintf("%q differs from the Hub's %q", w.cfg.ProcRoot, hub.cfg.ProcRoot)}
	}
	run, err := hub.acquire()
	if err != nil {
		var ce *ConfigError
		if errors.As(err, &ce) {
			return err
		}
		if w.cfg.Strategy == StrategyConnector {
			return fmt.Errorf("%w: %w", ErrConnectorUnavailable, err)
		}
		w.mode, w.modeReason = ModePoll, "proc connector unavailable, polling /proc: "+err.Error()+w.pollHow()
		return nil
	}
	w.hub, w.run = hub, run
	w.mode, w.modeReason = ModeConnector, "listening to the kernel's proc connector"
	if !run.canMark {
		w.modeReason += " (without markers: repairs wait for the socket's queue to drain)"
	}
	run.attach(w)
	return nil
}

// pollHow completes a polling mode's reason with how it looks at /proc.
func (w *Watcher) pollHow() string {
	if w.walkable {
		return "; each poll walks the tree (its members' /proc entries and children files)"
	}
	return "; each poll scans the whole host: this kernel has no /proc/PID/task/TID/children (CONFIG_PROC_CHILDREN)"
}

// initialScan makes the descendants alive now members. In connector mode
// the scan starts after the Watcher joined its hub's event stream, and is
// applied after the events queued meanwhile.
func (w *Watcher) initialScan() error {
	var err error
	if w.run != nil {
		err = w.run.rep.fullRepair([]*Watcher{w}, time.Now(), false)
	} else {
		err = w.pollScan()
	}
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

func (w *Watcher) tombstoneLimit() int {
	if !w.cfg.KeepTombstones {
		return 0
	}
	return w.cfg.TombstoneLimit
}

// cmdlineMax is the cap on command lines read for w, or 0 when they are
// not captured.
func (w *Watcher) cmdlineMax() int { return cmdlineMax(&w.cfg) }

func cmdlineMax(c *Config) int {
	if !c.CaptureCmdline {
		return 0
	}
	return c.CmdlineMaxChars
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
	// Unreadable counts the members whose /proc entry the last check
	// could not read (EMFILE, EACCES, hidepid...), and the children of
	// members that a children file lists but that may not be read
	// (another user's, under hidepid: without a start time they cannot
	// join). Members stay members: only ENOENT/ESRCH or a zombie state
	// mean gone.
	Unreadable int
	// UsageMatched counts the exits given a Usage (Config.CaptureUsage);
	// UsageMissing those whose taskstats record did not come within
	// UsageWait, or was lost in an overrun of the taskstats socket.
	UsageMatched, UsageMissing uint64
	// UsageReason says why Exit.Usage is nil when Config.CaptureUsage
	// is set and usage cannot be captured at all ("" when it can).
	UsageReason string
}

func (s *WatcherStats) countReconcile(d time.Duration, full bool) {
	s.Reconciles++
	s.ReconcileTime += d
	s.LastReconcile = d
	if full {
		s.FullScans++
	}
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
func (w *Watcher) ModeReason() string {
	r := w.modeReason
	if w.run != nil {
		r += "; " + w.run.filter.describe()
	}
	if w.usageDesc != "" {
		r += "; " + w.usageDesc
	}
	if h := w.fs.HidePID(); h != reconcile.HidePIDOff {
		r += "; /proc is mounted with hidepid=" + h.String() + ": processes of other users cannot be read, and members that become unreadable are kept and counted (WatcherStats.Unreadable)"
	}
	return r
}

// Poll returns the tree as it is now and what changed since the previous
// Poll. In polling mode it scans /proc first; in connector mode the tree is
// already current and Poll costs O(members + changes).
func (w *Watcher) Poll() (Snapshot, error) {
	if w.mode == ModePoll {
		if err := w.pollScan(); err != nil {
			return Snapshot{}, err
		}
	}
	// Copy under the lock, convert after it: the hub's writer waits on
	// the lock, so a Poll of a large tree must not hold it long.
	w.mu.Lock()
	if w.closed {
		w.mu.Unlock()
		return Snapshot{}, ErrClosed
	}
	if err := w.bgErr; err != nil {
		w.bgErr = nil
		w.mu.Unlock()
		return Snapshot{}, err
	}
	w.flushLost()
	ch := w.tr.Take()
	members := w.tr.Copies(make([]tracker.Proc, 0, w.tr.Len()+1))
	snap := Snapshot{
		Time:       time.Now(),
		Root:       w.root,
		RootAlive:  w.tr.RootAlive(),
		Truncated:  ch.Truncated,
		Mode:       w.mode,
		Overruns:   w.overruns,
		Repairs:    ch.Repairs,
		Compacted:  ch.Compacted,
		Unreadable: w.stats.Unreadable,
	}
	w.overruns = 0
	w.mu.Unlock()

	snap.Delta = Delta{
		Added:   identities(ch.Added),
		Removed: identities(ch.Removed),
		Exited:  make([]Exit, len(ch.Exits)),
	}
	for i, e := range ch.Exits {
		snap.Delta.Exited[i] = w.exit(e)
	}
	slices.SortFunc(members, func(a, b tracker.Proc) int { return a.ID.PID - b.ID.PID })
	snap.Processes = make([]ProcessInfo, len(members))
	for i := range members {
		snap.Processes[i] = w.info(&members[i])
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

// Close stops the Watcher, closes its subscriptions (each gets an EventLost
// with what it missed, if it missed anything), and releases its goroutines
// and descriptors (the connector socket with the last Watcher of its Hub).
// It is idempotent; afterwards Poll returns ErrClosed.
func (w *Watcher) Close() error {
	w.mu.Lock()
	if w.closed {
		w.mu.Unlock()
		return nil
	}
	w.mu.Unlock()
	w.shutdown()
	return nil
}

// shutdown does Close's work; also used when Attach fails half way.
func (w *Watcher) shutdown() {
	w.mu.Lock()
	if w.closed {
		w.mu.Unlock()
		return
	}
	// Only the first of concurrent Closes gets past here. From now on the
	// hub's writer leaves the tracker alone.
	w.closed = true
	w.closeSubs()
	if w.lostT != nil {
		w.lostT.Stop()
	}
	w.mu.Unlock()
	close(w.stop)
	w.wg.Wait()
	if w.rootFD != nil {
		w.rootFD.Close()
	}
	if w.run != nil {
		w.run.detach(w)
		w.hub.release()
	}
}

// publishLocked delivers the tracker's changes to the subscribers and
// closes the Done channels when their time has come; the caller holds mu.
// Connector mode (the hub's writer) and polling mode both publish here.
// While holding, the events wait in the outbox and flushHeldLocked does
// the rest.
func (w *Watcher) publishLocked(chs []tracker.Change) {
	if !w.holding {
		defer w.checkDone()
	}
	if len(w.subs) == 0 {
		return
	}
	for i := range chs {
		c := &chs[i]
		info := w.info(&c.Proc)
		// In polling mode every change is a scan's finding.
		ev := Event{Time: c.At, KernelTime: c.Kernel, Process: info.Identity, PPID: info.PPID, Name: info.Name,
			NameFromUsage: info.NameFromUsage, Cmdline: info.Cmdline, Depth: info.Depth, Synthetic: c.Repair || w.mode == ModePoll}
		switch c.Kind {
		case tracker.Added:
			ev.Type = EventFork
		case tracker.Execed:
			ev.Type = EventExec
		case tracker.Removed, tracker.Upgraded:
			ev.Type = EventExit
			x := w.exit(c.Exit)
			ev.Exit = &x
			ev.Synthetic = !c.Exit.Known
			ev.Upgrade = c.Kind == tracker.Upgraded
		}
		if w.holding {
			w.outbox = append(w.outbox, ev)
			continue
		}
		w.emit(ev)
	}
}

// flushHeldLocked delivers the held events in order, ends holding and
// closes the Done channels if their time has come; the caller holds mu.
func (w *Watcher) flushHeldLocked() {
	w.holding = false
	for i := range w.outbox {
		w.emit(w.outbox[i])
	}
	clear(w.outbox)
	w.outbox = w.outbox[:0]
	if !w.closed {
		w.checkDone()
	}
}

// noteOverrun is told by the hub's writer that the kernel dropped events
// (lost of them, all the host's, or 0 if unknown).
func (w *Watcher) noteOverrun(lost uint64) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.closed {
		return
	}
	w.overruns++
	w.stats.Overruns++
	w.emit(Event{Type: EventLost, Time: time.Now(), Lost: lost, Overrun: true})
}

// noteFailure records a background failure for Poll.
func (w *Watcher) noteFailure(err error) {
	w.mu.Lock()
	w.bgErr = err
	w.mu.Unlock()
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
		NameFromUsage:    p.NamedAtExit,
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
	if u, ok := e.Data.(*Usage); ok {
		c := *u // each copy its own, so callers may keep and change it
		x.Usage = &c
	}
	return x
}

func (w *Watcher) tombstone(ts tracker.Tombstone) Tombstone {
	return Tombstone{ProcessInfo: w.info(&ts.Proc), Removed: ts.Removed, Exit: w.exit(ts.Exit)}
}
