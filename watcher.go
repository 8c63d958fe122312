package watchman

import (
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/process-watchman/watchman/reconcile"
	"github.com/process-watchman/watchman/tracker"
)

// Watcher tracks the process tree rooted at one PID. Its methods are safe
// for concurrent use.
type Watcher struct {
	cfg        Config
	fs         *reconcile.FS
	root       Identity
	mode       Mode
	modeReason string

	mu      sync.Mutex
	tr      *tracker.Tracker
	scanner *reconcile.Scanner
	scan    reconcile.Scan
	entries []tracker.Entry
	bgErr   error // the last background reconcile failure, for Poll
	closed  bool

	stop chan struct{}
	wg   sync.WaitGroup
}

// Attach starts watching the tree rooted at pid. A nil cfg means the
// defaults. It returns a *PIDError (matching ErrInvalidPID or
// ErrNoSuchProcess) for a PID that cannot be watched, a *ConfigError
// (matching ErrInvalidConfig) for a bad Config, and ErrConnectorUnavailable
// when StrategyConnector was asked for and cannot be had.
//
// Before it returns, Attach scans /proc once so that the descendants alive
// now are members; they are reported as Added by the first Poll.
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
		cfg:     c,
		fs:      fs,
		root:    Identity{PID: pid, StartTicks: st.StartTicks},
		scanner: fs.NewScanner(),
		stop:    make(chan struct{}),
	}
	if err := w.chooseMode(); err != nil {
		return nil, err
	}
	now := time.Now()
	w.tr = tracker.New(tracker.Identity(w.root), tracker.Config{
		MaxDepth:    c.MaxDepth,
		MaxMembers:  c.MaxDescendants,
		IncludeRoot: c.IncludeRoot,
		Tombstones:  w.tombstoneLimit(),
	}, now)
	cmd, cmdTrunc := w.readCmdline(pid)
	w.tr.Update(tracker.Identity(w.root), func(p *tracker.Proc) {
		p.Name, p.State, p.PPID, p.Cmdline = st.Comm, st.State, st.PPID, cmd
		p.CmdlineTruncated = cmdTrunc
	})
	if err := w.scanLocked(false); err != nil {
		return nil, err
	}
	if !w.tr.RootAlive() {
		return nil, &PIDError{PID: pid, Reason: "exited during attach", Err: ErrNoSuchProcess}
	}
	if iv := w.backgroundInterval(); iv > 0 {
		w.wg.Add(1)
		go w.reconcileLoop(iv)
	}
	return w, nil
}

// chooseMode settles the mode from the strategy.
func (w *Watcher) chooseMode() error {
	switch w.cfg.Strategy {
	case StrategyPoll:
		w.mode, w.modeReason = ModePoll, "polling was asked for"
	case StrategyConnector:
		return fmt.Errorf("%w: the proc connector is not built into this version", ErrConnectorUnavailable)
	default:
		w.mode, w.modeReason = ModePoll, "the proc connector is not built into this version"
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

// Root returns the identity of the root process.
func (w *Watcher) Root() Identity { return w.root }

// Mode returns how the Watcher learns of processes.
func (w *Watcher) Mode() Mode { return w.mode }

// ModeReason says why the Watcher is in its Mode, e.g. why the proc
// connector could not be used.
func (w *Watcher) ModeReason() string { return w.modeReason }

// Poll returns the tree as it is now and what changed since the previous
// Poll. In polling mode it scans /proc first; in connector mode the tree is
// already current and Poll costs O(members).
func (w *Watcher) Poll() (Snapshot, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.closed {
		return Snapshot{}, ErrClosed
	}
	if w.mode == ModePoll {
		if err := w.scanLocked(false); err != nil {
			return Snapshot{}, err
		}
	}
	if err := w.bgErr; err != nil {
		w.bgErr = nil
		return Snapshot{}, err
	}
	ch := w.tr.Take()
	snap := Snapshot{
		Time:      time.Now(),
		Root:      w.root,
		RootAlive: w.tr.RootAlive(),
		Truncated: ch.Truncated,
		Mode:      w.mode,
		Repairs:   ch.Repairs,
		Delta: Delta{
			Added:   identities(ch.Added),
			Removed: identities(ch.Removed),
			Exited:  make([]Exit, len(ch.Exits)),
		},
	}
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

// Close stops the Watcher and releases its goroutines and descriptors. It is
// idempotent; calls other than Root, Mode and ModeReason return ErrClosed
// or nothing afterwards.
func (w *Watcher) Close() error {
	w.mu.Lock()
	if w.closed {
		w.mu.Unlock()
		return nil
	}
	w.closed = true
	close(w.stop)
	w.mu.Unlock()
	w.wg.Wait()
	return nil
}

// reconcileLoop scans in the background every iv until Close.
func (w *Watcher) reconcileLoop(iv time.Duration) {
	defer w.wg.Done()
	t := time.NewTicker(iv)
	defer t.Stop()
	for {
		select {
		case <-w.stop:
			return
		case <-t.C:
		}
		w.mu.Lock()
		if err := w.scanLocked(w.mode == ModeConnector); err != nil {
			w.bgErr = err
		}
		w.mu.Unlock()
	}
}

// scanLocked reads the whole host and applies it to the tracker. The caller
// holds w.mu (or is Attach, before anyone else can).
func (w *Watcher) scanLocked(repair bool) error {
	if err := w.scanner.Scan(&w.scan); err != nil {
		return fmt.Errorf("watchman: scanning %s: %w", w.fs.Root(), err)
	}
	now := time.Now()
	w.entries = w.entries[:0]
	for i := range w.scan.Entries {
		e := &w.scan.Entries[i]
		w.entries = append(w.entries, tracker.Entry{
			PID: e.PID, PPID: e.PPID, StartTicks: e.StartTicks, Live: e.Live(), State: e.State,
		})
	}
	for _, i := range w.tr.ApplyScan(w.entries, now, repair) {
		e := &w.scan.Entries[i]
		id := tracker.Identity{PID: e.PID, StartTicks: e.StartTicks}
		cmd, trunc := w.readCmdline(e.PID)
		name := w.scan.Comm(i)
		w.tr.Update(id, func(p *tracker.Proc) {
			p.Name, p.Cmdline, p.CmdlineTruncated = name, cmd, trunc
		})
	}
	w.refreshNames()
	return nil
}

// refreshNames updates the names of members that changed their comm (by an
// exec, or prctl) since they joined, and re-reads their command lines.
func (w *Watcher) refreshNames() {
	for _, p := range w.tr.Members(nil) {
		i, ok := w.tr.IndexOf(p.ID.PID)
		if !ok || string(w.scan.CommBytes(i)) == p.Name {
			continue
		}
		name := w.scan.Comm(i)
		cmd, trunc := w.readCmdline(p.ID.PID)
		w.tr.Update(p.ID, func(p *tracker.Proc) {
			p.Name, p.Cmdline, p.CmdlineTruncated = name, cmd, trunc
		})
	}
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
