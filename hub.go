package watchman

import (
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/process-watchman/watchman/connector"
	"github.com/process-watchman/watchman/reconcile"
	"github.com/process-watchman/watchman/tracker"
	"golang.org/x/sys/unix"
)

// HubConfig configures a Hub. A nil *HubConfig, and each zero field, mean
// the defaults.
type HubConfig struct {
	// ReadBuffer is the socket's receive buffer in bytes; zero means
	// connector.DefaultReadBuffer (4 MiB). A larger buffer rides out longer
	// stalls of this process without an overrun.
	ReadBuffer int
	// ProcRoot is the proc filesystem read at events; zero ("") means
	// /proc. Watchers on the hub must use the same.
	ProcRoot string
	// Dial opens the connector; nil means connector.Dial. Tests pass a
	// fake kernel's (connectortest.Kernel.Dial).
	Dial func(*connector.Config) (*connector.Conn, error)
}

// Hub owns one proc connector socket and feeds the kernel's events to every
// Watcher attached through it (Config.Hub), so that N watchers cost one
// socket and one decode per event, not N. It opens the socket when the first
// Watcher attaches and closes it, and its goroutine, when the last one
// closes; it can then be used again.
//
// A Watcher attached without a Hub gets a private one. Share a Hub when a
// process watches many trees.
type Hub struct {
	cfg HubConfig

	mu       sync.Mutex // guards what follows
	refs     int
	conn     *connector.Conn
	done     chan struct{} // closed when the reader exits
	watchers []*Watcher
	fs       *reconcile.FS

	idxMu sync.Mutex
	idx   map[int][]*Watcher // member PID → watchers it is a member of

	// scanMu guards the host scan shared by the watchers.
	scanMu   sync.Mutex
	scanner  *reconcile.Scanner
	lastScan *hostScan

	forks, execs, exits, others atomic.Uint64
	overruns, lost              atomic.Uint64
	// busy is set while the reader holds received events it has not
	// applied yet.
	busy atomic.Bool
}

// HubStats counts what a Hub received since it was made.
type HubStats struct {
	// Forks, Execs and Exits count the kernel's events of each type, for
	// the whole host (threads included); Other counts the rest.
	Forks, Execs, Exits, Other uint64
	// Overruns counts the times the kernel dropped events because the
	// socket's buffer was full; Lost counts the messages it dropped, where
	// the kernel tells (SO_MEMINFO).
	Overruns, Lost uint64
}

// Stats returns the hub's counters.
func (h *Hub) Stats() HubStats {
	return HubStats{
		Forks: h.forks.Load(), Execs: h.execs.Load(), Exits: h.exits.Load(), Other: h.others.Load(),
		Overruns: h.overruns.Load(), Lost: h.lost.Load(),
	}
}

// NewHub returns a Hub; it opens nothing until a Watcher attaches.
func NewHub(cfg *HubConfig) *Hub {
	h := &Hub{idx: make(map[int][]*Watcher)}
	if cfg != nil {
		h.cfg = *cfg
	}
	return h
}

// acquire opens the socket if it is the first user.
func (h *Hub) acquire() error {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.refs > 0 {
		h.refs++
		return nil
	}
	fs, err := reconcile.NewFS(h.cfg.ProcRoot)
	if err != nil {
		return &ConfigError{Field: "HubConfig.ProcRoot", Reason: "not a proc filesystem", Err: err}
	}
	dial := h.cfg.Dial
	if dial == nil {
		dial = connector.Dial
	}
	conn, err := dial(&connector.Config{ReadBuffer: h.cfg.ReadBuffer})
	if err != nil {
		return err
	}
	h.fs, h.conn, h.done, h.refs = fs, conn, make(chan struct{}), 1
	r := &reader{h: h, conn: conn, scanner: fs.NewScanner()}
	go r.run(h.done)
	return nil
}

// release closes the socket with the last user.
func (h *Hub) release() {
	h.mu.Lock()
	h.refs--
	if h.refs > 0 {
		h.mu.Unlock()
		return
	}
	conn, done := h.conn, h.done
	h.conn, h.done = nil, nil
	h.mu.Unlock()
	h.scanMu.Lock()
	h.lastScan = nil
	h.scanMu.Unlock()
	conn.Close()
	<-done
}

// attach registers w for overrun notices and its root in the index.
func (h *Hub) attach(w *Watcher) {
	h.mu.Lock()
	h.watchers = append(h.watchers, w)
	h.mu.Unlock()
	h.join(w.root.PID, w)
}

// detach removes w and all its index entries.
func (h *Hub) detach(w *Watcher, pids []int) {
	h.mu.Lock()
	for i, o := range h.watchers {
		if o == w {
			h.watchers = append(h.watchers[:i], h.watchers[i+1:]...)
			break
		}
	}
	h.mu.Unlock()
	for _, pid := range pids {
		h.leave(pid, w)
	}
}

// join records that pid is a member of w.
func (h *Hub) join(pid int, w *Watcher) {
	h.idxMu.Lock()
	defer h.idxMu.Unlock()
	ws := h.idx[pid]
	for _, o := range ws {
		if o == w {
			return
		}
	}
	h.idx[pid] = append(ws, w)
}

// leave records that pid is no longer a member of w.
func (h *Hub) leave(pid int, w *Watcher) {
	h.idxMu.Lock()
	defer h.idxMu.Unlock()
	ws := h.idx[pid]
	for i, o := range ws {
		if o == w {
			if len(ws) == 1 {
				delete(h.idx, pid)
			} else {
				h.idx[pid] = append(ws[:i:i], ws[i+1:]...)
			}
			return
		}
	}
}

// lookup appends the watchers pid is a member of to dst.
func (h *Hub) lookup(pid int, dst []*Watcher) []*Watcher {
	h.idxMu.Lock()
	dst = append(dst, h.idx[pid]...)
	h.idxMu.Unlock()
	return dst
}

// scanHost returns a scan of the whole host that started no earlier than
// since: the last one if it qualifies, else a new one. The watchers of the
// hub share it read-only, so N watchers cost one scan per period, not N.
func (h *Hub) scanHost(since time.Time) (*hostScan, error) {
	h.scanMu.Lock()
	defer h.scanMu.Unlock()
	if h.lastScan != nil && !h.lastScan.start.Before(since) {
		return h.lastScan, nil
	}
	h.mu.Lock()
	fs := h.fs
	h.mu.Unlock()
	if h.scanner == nil {
		h.scanner = fs.NewScanner()
	}
	hs := &hostScan{start: time.Now()}
	if err := h.scanner.Scan(&hs.scan); err != nil {
		return nil, fmt.Errorf("watchman: scanning %s: %w", fs.Root(), err)
	}
	hs.entries = scanEntries(&hs.scan, make([]tracker.Entry, 0, len(hs.scan.Entries)))
	h.lastScan = hs
	return hs, nil
}

// settled reports whether the reader has applied every event the kernel
// had queued: the socket's queue is empty and no received batch is being
// applied. A socket that cannot tell counts as settled.
func (h *Hub) settled() bool {
	h.mu.Lock()
	conn := h.conn
	h.mu.Unlock()
	if conn == nil {
		return true
	}
	mi, err := conn.MemInfo()
	if err == nil && mi.RmemAlloc > 0 {
		return false
	}
	return !h.busy.Load()
}

// snapshotWatchers returns the attached watchers.
func (h *Hub) snapshotWatchers() []*Watcher {
	h.mu.Lock()
	defer h.mu.Unlock()
	return append([]*Watcher(nil), h.watchers...)
}

// clocks converts kernel timestamps, sampled once per batch of events.
type clocks struct {
	mono, boot int64 // ns
	wall       time.Time
}

// clockBase reads CLOCK_MONOTONIC through Go's own monotonic clock (the
// same clock, read through the vDSO) after one system call to calibrate,
// and re-reads CLOCK_BOOTTIME, which moves apart from it only across a
// suspend, once a second.
type clockBase struct {
	wall0    time.Time
	mono0    int64
	bootOff  int64 // CLOCK_BOOTTIME - CLOCK_MONOTONIC
	nextBoot time.Time
}

func (b *clockBase) sample() clocks {
	now := time.Now()
	if b.wall0.IsZero() || !now.Before(b.nextBoot) {
		var m, bt unix.Timespec
		_ = unix.ClockGettime(unix.CLOCK_MONOTONIC, &m)
		_ = unix.ClockGettime(unix.CLOCK_BOOTTIME, &bt)
		if b.wall0.IsZero() {
			b.wall0, b.mono0 = now, m.Nano()
		}
		b.bootOff = bt.Nano() - m.Nano()
		b.nextBoot = now.Add(time.Second)
	}
	mono := b.mono0 + int64(now.Sub(b.wall0))
	return clocks{mono: mono, boot: mono + b.bootOff, wall: now}
}

// wallOf converts a kernel CLOCK_MONOTONIC timestamp to wall time.
func (c *clocks) wallOf(ts uint64) time.Time {
	return c.wall.Add(-time.Duration(c.mono - int64(ts)))
}

// ticksOf converts a kernel timestamp to clock ticks since boot, the unit
// of /proc/PID/stat's start time.
func (c *clocks) ticksOf(ts uint64) uint64 {
	bootNS := int64(ts) + (c.boot - c.mono)
	if bootNS < 0 {
		return 0
	}
	return uint64(bootNS) / uint64(time.Second/reconcile.UserHZ)
}

// reader is the hub's one goroutine: it receives, reads /proc where an
// event concerns a member, and applies the events to the watchers. It never
// blocks on a consumer.
type reader struct {
	h       *Hub
	conn    *connector.Conn
	scanner *reconcile.Scanner
	ws      []*Watcher // scratch
	drops   uint32     // the socket's drop counter at the last overrun
	clock   clockBase
}

// procInfo is what the reader read of one process for one event.
type procInfo struct {
	entry reconcile.Entry
	comm  string
	ok    bool // the process exists
}

func (r *reader) run(done chan struct{}) {
	defer close(done)
	buf := make([]connector.Event, 0, connector.MaxBatch)
	draining := false
	failures := 0
	for {
		evs, err := r.conn.Receive(buf[:0])
		if len(evs) > 0 {
			r.h.busy.Store(true)
			r.dispatch(evs)
			r.h.busy.Store(false)
		}
		switch {
		case err == nil:
			failures = 0
		case errors.Is(err, connector.ErrOverrun):
			draining = true
		case errors.Is(err, connector.ErrClosed):
			return
		default:
			// Not expected from a netlink socket; tell the watchers,
			// repair, and back off so a broken socket cannot spin.
			failures++
			for _, w := range r.h.snapshotWatchers() {
				w.noteFailure(fmt.Errorf("watchman: receiving proc events: %w", err))
			}
			time.Sleep(min(time.Duration(failures)*10*time.Millisecond, time.Second))
		}
		if draining && r.drained() {
			draining = false
			lost := r.dropsSince()
			r.h.overruns.Add(1)
			r.h.lost.Add(lost)
			for _, w := range r.h.snapshotWatchers() {
				w.noteOverrun(lost)
			}
		}
	}
}

// drained reports whether the socket's queue is empty, which is when the
// kernel starts delivering again after an overrun. A socket that cannot
// tell counts as drained.
func (r *reader) drained() bool {
	mi, err := r.conn.MemInfo()
	return err != nil || mi.RmemAlloc == 0
}

// dropsSince returns how many messages the kernel dropped since the last
// call, or 0 if the socket cannot tell.
func (r *reader) dropsSince() uint64 {
	mi, err := r.conn.MemInfo()
	if err != nil {
		return 0
	}
	n := mi.Drops - r.drops
	r.drops = mi.Drops
	return uint64(n)
}

// read looks pid up in /proc; withComm also copies its command name.
func (r *reader) read(pid int, withComm bool) procInfo {
	e, comm, ok, err := r.scanner.Lookup(pid)
	if err != nil || !ok {
		return procInfo{}
	}
	info := procInfo{entry: e, ok: true}
	if withComm {
		info.comm = string(comm)
	}
	return info
}

func (r *reader) dispatch(evs []connector.Event) {
	clk := r.clock.sample()
	var forks, execs, exits uint64
	defer func() {
		r.h.forks.Add(forks)
		r.h.execs.Add(execs)
		r.h.exits.Add(exits)
		r.h.others.Add(uint64(len(evs)) - forks - execs - exits)
	}()
	for i := range evs {
		ev := &evs[i]
		switch ev.What {
		case connector.WhatFork:
			forks++
			if ev.PID != ev.TGID {
				// A new thread, not a process: its process must be
				// checked in /proc when its first thread exits.
				r.ws = r.h.lookup(int(ev.TGID), r.ws[:0])
				for _, w := range r.ws {
					w.onThread(int(ev.TGID))
				}
				continue
			}
			r.ws = r.h.lookup(int(ev.ParentTGID), r.ws[:0])
			if len(r.ws) == 0 {
				continue
			}
			// The child exists in /proc from the fork on, until it is
			// reaped; by now it may be gone, or its PID even reused, which
			// its start time tells.
			derived := clk.ticksOf(ev.Timestamp)
			child := r.read(int(ev.PID), false)
			approx := !child.ok || !closeTicks(child.entry.StartTicks, derived)
			ticks := child.entry.StartTicks
			if approx {
				ticks = derived
			}
			for _, w := range r.ws {
				w.onFork(ev, ticks, approx, &clk)
			}
		case connector.WhatExec:
			execs++
			r.ws = r.h.lookup(int(ev.TGID), r.ws[:0])
			if len(r.ws) == 0 {
				continue
			}
			info := r.read(int(ev.TGID), true)
			for _, w := range r.ws {
				w.onExec(ev, &info, &clk)
			}
		case connector.WhatExit:
			exits++
			r.ws = r.h.lookup(int(ev.TGID), r.ws[:0])
			if len(r.ws) == 0 {
				continue
			}
			// /proc is read at most once per event, and only if a
			// watcher needs it (see Watcher.onExit).
			proc := lazyProc{r: r, pid: int(ev.TGID)}
			for _, w := range r.ws {
				w.onExit(ev, &proc, &clk)
			}
		}
	}
}

// lazyProc reads one process from /proc on first use, for the watchers
// that one event concerns.
type lazyProc struct {
	r    *reader
	pid  int
	done bool
	info procInfo
}

// get returns what /proc shows of the process, reading it once.
func (l *lazyProc) get() *procInfo {
	if !l.done {
		l.info, l.done = l.r.read(l.pid, false), true
	}
	return &l.info
}

// closeTicks reports whether two start times are the same within the
// tolerance of deriving one from an event timestamp.
func closeTicks(a, b uint64) bool {
	d := int64(a) - int64(b)
	return d >= -tracker.ApproxTolerance && d <= tracker.ApproxTolerance
}
