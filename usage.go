package watchman

import (
	"errors"
	"sync/atomic"
	"time"

	"github.com/process-watchman/watchman/taskstats"
	"github.com/process-watchman/watchman/tracker"
)

// usageKeep bounds how long, and how many, usage records wait for the exit
// they belong to.
const (
	usageKeep    = 10 * time.Second
	usageMaxKept = 1 << 16
)

// usageSource is the hub's taskstats side (Config.CaptureUsage), owned by
// the writer.
//
// Joining needs no wait: the kernel queues a task's taskstats record at
// the start of do_exit, before it sends the proc connector's exit event
// for it (kernel/exit.c), so once the writer holds a batch with an exit
// event, the records of every exit in the batch are queued on the
// taskstats socket. The writer reads them (taskstats.Listener.Sync, which
// does not block) at the first exit event of each batch, aggregates a
// process's threads into one Usage (taskstats.Aggregator), and attaches
// it to the member's exit when the tracker removes it. A record is
// matched to a member by PID and start time (never by PID alone): the
// record's start estimate is never below the true start, and a later
// holder of the PID started later, so the member's is the one with the
// smallest estimate not below its start. A member whose record is not
// there (the taskstats socket overran, or its exit was inferred from
// /proc without an exit event) gets no Usage and is counted
// (WatcherStats.UsageMissing).
//
// With the kernel tree filter the taskstats socket gets the same filter
// (connector.TreeFilter.MatchProgram on the record's TGID): only
// members' records are queued. Without it every exit on the host is read
// and kept for a while (usageKeep, at most usageMaxKept processes).
type usageSource struct {
	l      *taskstats.Listener
	match  interface{ Close() error }
	reason string // why there is no usage ("" when l is open)
	kernel bool   // records are filtered in the kernel

	agg      taskstats.Aggregator
	recs     []taskstats.Record
	kept     map[int][]keptUsage
	nkept    int
	synced   bool           // this batch's records were read
	overruns *atomic.Uint64 // the hub's count of taskstats overruns
	pruned   time.Time
}

type keptUsage struct {
	u  taskstats.Usage
	at time.Time
}

// openUsage opens the taskstats listener, filtered by hf where it can be.
func openUsage(hf *hubFilter, overruns *atomic.Uint64) *usageSource {
	us := &usageSource{kept: make(map[int][]keptUsage), overruns: overruns}
	// The writer reads records only with Sync, between batches: out of
	// the runtime's poller, records arriving meanwhile wake no thread.
	l, err := taskstats.Listen(&taskstats.Config{OffPoller: true})
	if err != nil {
		us.reason = "taskstats unavailable: " + err.Error()
		if errors.Is(err, taskstats.ErrPermission) {
			us.reason = "taskstats needs CAP_NET_ADMIN in the initial user namespace: " + err.Error()
		}
		return us
	}
	us.l = l
	us.recs = make([]taskstats.Record, 0, 2*taskstats.MaxBatch)
	if hf.f != nil {
		m, err := hf.f.MatchProgram(taskstats.FilterOffsetTGID)
		if err == nil {
			if err = l.AttachBPF(m.FD()); err == nil {
				us.match, us.kernel = m, true
			} else {
				_ = m.Close()
			}
		}
	}
	return us
}

// describe says where usage comes from, for ModeReason.
func (us *usageSource) describe() string {
	switch {
	case us.l == nil:
		return "no per-process usage (" + us.reason + ")"
	case us.kernel:
		return "per-process usage from taskstats, filtered in the kernel"
	default:
		return "per-process usage from taskstats, filtered in user space"
	}
}

func (us *usageSource) close() {
	if us.l != nil {
		_ = us.l.Close()
	}
	if us.match != nil {
		_ = us.match.Close()
	}
}

// sync reads the queued records once per batch.
func (us *usageSource) sync(now time.Time) {
	if us.l == nil || us.synced {
		return
	}
	us.synced = true
	recs, err := us.l.Sync(us.recs[:0])
	if errors.Is(err, taskstats.ErrOverrun) {
		us.overruns.Add(1) // and the exits whose records were lost get none
	}
	for i := range recs {
		u, ok := us.agg.Add(&recs[i])
		if !ok {
			continue
		}
		pid := int(u.PID)
		us.kept[pid] = append(us.kept[pid], keptUsage{u: u, at: now})
		us.nkept++
	}
	clear(recs)
	if us.nkept > usageMaxKept || now.Sub(us.pruned) > time.Second {
		us.prune(now)
	}
}

// prune forgets records kept longer than usageKeep, and the oldest ones
// beyond usageMaxKept.
func (us *usageSource) prune(now time.Time) {
	us.pruned = now
	cut := now.Add(-usageKeep)
	if us.nkept > usageMaxKept {
		cut = now // a flood of strangers' records: keep none
	}
	for pid, ks := range us.kept {
		n := 0
		for _, k := range ks {
			if k.at.After(cut) {
				ks[n] = k
				n++
			}
		}
		us.nkept -= len(ks) - n
		if n == 0 {
			delete(us.kept, pid)
		} else {
			us.kept[pid] = ks[:n]
		}
	}
}

// take returns the usage of id's process, if its record came; consume
// forgets it (not for an exit that an upgrade may follow).
func (us *usageSource) take(id tracker.Identity, approx, consume bool) (*Usage, bool) {
	ks := us.kept[id.PID]
	best := -1
	for i := range ks {
		st := ks[i].u.StartTicks
		if st+approxSlack(approx) < id.StartTicks {
			continue // an earlier holder of the PID
		}
		if best < 0 || st < ks[best].u.StartTicks {
			best = i
		}
	}
	if best < 0 {
		return nil, false
	}
	u := usageOf(&ks[best].u)
	if consume {
		ks = append(ks[:best], ks[best+1:]...)
		us.nkept--
		if len(ks) == 0 {
			delete(us.kept, id.PID)
		} else {
			us.kept[id.PID] = ks
		}
	}
	return u, true
}

// approxSlack is how far below a member's start ticks a record's estimate
// may be: none for a start read from /proc, the tracker's tolerance for
// one derived from a fork's timestamp.
func approxSlack(approx bool) uint64 {
	if approx {
		return tracker.ApproxTolerance
	}
	return 0
}

func usageOf(u *taskstats.Usage) *Usage {
	user, sys := splitCPU(u.Runtime, u.UserCPU, u.SystemCPU)
	return &Usage{
		UserCPU: user, SystemCPU: sys, Wall: u.Wall,
		PeakRSS: u.PeakRSS, ReadBytes: u.ReadBytes, WriteBytes: u.WriteBytes,
		VoluntarySwitches: u.VoluntarySwitches, InvoluntarySwitches: u.InvoluntarySwitches,
		CPUDelay: u.CPUDelay, BlkioDelay: u.BlkioDelay, SwapinDelay: u.SwapinDelay,
		Threads: u.Threads, Command: u.CommString(), Source: UsageTaskstats,
	}
}

// annotate attaches usage to the exits among w's changes, under w's lock,
// before they are published. Each removal is counted once, matched or
// missing; an upgrade of a provisional exit only attaches what it finds.
func (wr *writer) annotate(w *Watcher, chs []tracker.Change) {
	us := wr.usage
	if us == nil || !w.cfg.CaptureUsage {
		return
	}
	for i := range chs {
		c := &chs[i]
		if c.Kind != tracker.Removed && c.Kind != tracker.Upgraded {
			continue
		}
		var u *Usage
		ok := false
		if us.l != nil {
			if !us.synced {
				us.sync(time.Now())
			}
			u, ok = us.take(c.Proc.ID, c.Proc.Approx, !c.Provisional)
		}
		if ok {
			c.Exit.Data = u
			// A process that exec'd and exited before /proc was read has
			// no name: the kernel's accounting has it.
			if c.Kind == tracker.Removed && c.Proc.Name == "" && u.Command != "" {
				c.Proc.Name, c.Proc.NamedAtExit = u.Command, true
			}
			w.tr.Annotate(c.Proc.ID, u, u.Command)
		}
		if c.Kind == tracker.Removed {
			if ok {
				w.stats.UsageMatched++
			} else {
				w.stats.UsageMissing++
			}
		}
	}
}

// splitCPU returns the exact CPU time run (the scheduler's, 0 where the
// kernel does not report it) split between user and system time in the
// proportion of the kernel's tick samples ut and st, as getrusage(2) and
// /proc/PID/stat do (kernel/sched/cputime.c, cputime_adjust); without run
// the samples themselves.
func splitCPU(run, ut, st time.Duration) (user, sys time.Duration) {
	if run <= 0 {
		return ut, st
	}
	if ut+st <= 0 {
		return run, 0
	}
	sys = time.Duration(float64(run) * float64(st) / float64(ut+st))
	return run - sys, sys
}
