package taskstats

import (
	"os"
	"strings"
	"time"
)

// Usage is the resource usage of one whole process: every thread it ever
// had, from its start to the exit of its last thread.
type Usage struct {
	// PID is the process id (the thread group id).
	PID int32
	// PPID is the parent process id at exit; 0 if the parent was gone.
	PPID int32
	// StartTicks is the process's start in clock ticks since boot, as
	// /proc/PID/stat field 22 shows it, estimated as Record.StartTicks
	// does from the last task's record: never below the true value, at
	// most 1 tick above when the record was read within 10 ms of the
	// exit. 0 when the records came without Received (Decode).
	StartTicks uint64
	// Comm is the command name of the last task, NUL padded.
	Comm [32]byte
	// ExitStatus is the raw wait status of the last task (the process's
	// exit status when the group exited together).
	ExitStatus uint32
	// Flags are the accounting flags of the last task's record.
	Flags Flags
	// Threads is the number of per-task records aggregated: 1 for a
	// process that never had a second thread.
	Threads int
	// KernelAggregate reports that the kernel's per-TGID aggregate was
	// used for the CPU times, context switches and delays (it includes
	// threads whose records were lost). Otherwise they are the sums of
	// the per-task records received.
	KernelAggregate bool

	// Wall is the process's lifetime: from the group leader's start to
	// the last exit.
	Wall time.Duration
	// UserCPU and SystemCPU are the CPU times of all threads: tick
	// samples, which under load may be far from the time the threads ran
	// (see Record.UserCPU).
	UserCPU, SystemCPU time.Duration
	// Runtime is the exact CPU time of all threads, as the scheduler
	// counts it (the sum of their Record.CPURunVirtual): what
	// CLOCK_PROCESS_CPUTIME_ID would have read at the exit. It is 0
	// where the kernel reports no run times (CPURunVirtual 0).
	Runtime time.Duration
	// PeakRSS and PeakVM are the high-water marks of the process's
	// resident set and virtual memory, in bytes.
	PeakRSS, PeakVM uint64
	// ReadBytes and WriteBytes are the storage-layer bytes of all
	// threads (see Record.ReadBytes), ReadChars and WriteChars the bytes
	// of their read and write system calls.
	ReadBytes, WriteBytes, ReadChars, WriteChars uint64
	// MinorFaults and MajorFaults are the page faults of all threads.
	MinorFaults, MajorFaults uint64
	// VoluntarySwitches and InvoluntarySwitches are the context switches
	// of all threads.
	VoluntarySwitches, InvoluntarySwitches uint64
	// CPUDelay, BlkioDelay and SwapinDelay are the delay totals of all
	// threads (see Record). BlkioDelay and SwapinDelay stay 0 while delay
	// accounting is off (DelayAccounting).
	CPUDelay, BlkioDelay, SwapinDelay time.Duration
}

// CommString returns Comm up to its first NUL byte.
func (u *Usage) CommString() string {
	for i, c := range u.Comm {
		if c == 0 {
			return string(u.Comm[:i])
		}
	}
	return string(u.Comm[:])
}

// ProcessUsage returns the usage of the record's process when the record
// alone covers it: a KindPID record of the last task of a process that
// never had another thread (FlagGroupDead set and no per-TGID aggregate
// in its message). Otherwise it returns false: the record of a thread, or
// of the last thread of a multi-threaded process, is one of several; use
// an Aggregator.
func (r *Record) ProcessUsage() (Usage, bool) {
	if r.Kind != KindPID || !r.GroupDead() || r.WithGroup {
		return Usage{}, false
	}
	var u Usage
	u.add(r)
	u.finish(r)
	return u, true
}

// add sums the per-task fields of r into u.
func (u *Usage) add(r *Record) {
	u.Threads++
	u.UserCPU += r.UserCPU
	u.SystemCPU += r.SystemCPU
	u.Runtime += r.CPURunVirtual
	u.PeakRSS = max(u.PeakRSS, r.PeakRSS)
	u.PeakVM = max(u.PeakVM, r.PeakVM)
	u.ReadBytes += r.ReadBytes
	u.WriteBytes += r.WriteBytes
	u.ReadChars += r.ReadChars
	u.WriteChars += r.WriteChars
	u.MinorFaults += r.MinorFaults
	u.MajorFaults += r.MajorFaults
	u.VoluntarySwitches += r.VoluntarySwitches
	u.InvoluntarySwitches += r.InvoluntarySwitches
	u.CPUDelay += r.CPUDelay
	u.BlkioDelay += r.BlkioDelay
	u.SwapinDelay += r.SwapinDelay
}

// finish sets the identity of u from last, the record of the process's
// last task.
func (u *Usage) finish(last *Record) {
	u.PID = last.TGID
	if u.PID == 0 {
		u.PID = last.PID // before version 12: only right for the leader
	}
	u.PPID = last.PPID
	u.StartTicks = last.StartTicks()
	u.Comm = last.Comm
	u.ExitStatus = last.ExitStatus
	u.Flags = last.Flags
	u.Wall = last.processElapsed()
}

// useAggregate replaces the additive fields the kernel sums in a per-TGID
// aggregate with its values.
func (u *Usage) useAggregate(g *Record) {
	u.KernelAggregate = true
	u.Runtime = g.CPURunVirtual // summed with the delays, by delayacct_add_tsk
	u.CPUDelay = g.CPUDelay
	u.BlkioDelay = g.BlkioDelay
	u.SwapinDelay = g.SwapinDelay
	if g.Version == 0 {
		return // an older kernel's aggregate: delays only
	}
	u.UserCPU = g.UserCPU
	u.SystemCPU = g.SystemCPU
	u.VoluntarySwitches = g.VoluntarySwitches
	u.InvoluntarySwitches = g.InvoluntarySwitches
}

// DefaultMaxPending is the Aggregator's bound on partly seen processes
// when its MaxPending is zero.
const DefaultMaxPending = 65536

// Aggregator turns the record stream into exactly one Usage per process.
// Feed it every record, in the order Receive returns them; it is not safe
// for concurrent use (one goroutine owns it, as it owns the records).
//
// How the kernel reports processes (kernel/taskstats.c, checked on Linux
// 6.18): every exiting task sends one message with its KindPID record.
// The last task of a thread group has FlagGroupDead. If the group ever had
// a second thread, the kernel keeps a per-process aggregate from the first
// thread exit on and appends it, as a KindTGID record, to the message of
// the last task. So a process that was always single-threaded gets one
// record (FlagGroupDead, no aggregate), and a multi-threaded one gets one
// KindPID record per thread, the last with FlagGroupDead and followed by
// the KindTGID aggregate.
//
// The Aggregator sums the KindPID records of a process by TGID (the
// threads' CPU, I/O, faults, switches and delays; the peak of the shared
// address space) until the FlagGroupDead record, and then, when its
// message carries the kernel's aggregate, takes the CPU times, switches
// and delays from the aggregate (which also counts threads whose records
// were lost). Identity and Wall come from the last record. Records before
// version 12 lack TGID and FlagGroupDead: Add then treats every KindPID
// record as a whole process.
type Aggregator struct {
	// MaxPending bounds the processes with exited threads but a live
	// last task that the Aggregator remembers; beyond it the one first
	// seen longest ago is forgotten and counted in Evicted. Zero means
	// DefaultMaxPending.
	MaxPending int

	pending map[int32]*partial
	seq     uint64
	// order lists pending processes by first record (tgid and the seq of
	// that record); entries of completed or evicted processes are
	// skipped lazily.
	order []orderEntry
	head  int
	// awaiting is the process whose FlagGroupDead record was added and
	// whose KindTGID aggregate must come next.
	awaiting *partial

	evicted, strays uint64
}

type partial struct {
	u    Usage
	last Record
	seq  uint64 // seq of the first record
}

type orderEntry struct {
	tgid int32
	seq  uint64
}

// Add feeds one record. It returns the process's Usage and true when r
// completes a process: the FlagGroupDead record of a process without an
// aggregate, or the KindTGID aggregate after the FlagGroupDead record.
func (a *Aggregator) Add(r *Record) (Usage, bool) {
	if r.Kind == KindTGID {
		p := a.awaiting
		a.awaiting = nil
		if p == nil || p.last.TGID != r.TGID {
			a.strays++
			return Usage{}, false
		}
		p.u.finish(&p.last)
		p.u.useAggregate(r)
		return p.u, true
	}
	if r.Kind != KindPID {
		a.strays++
		return Usage{}, false
	}
	if a.awaiting != nil {
		a.strays++ // the aggregate announced by WithGroup never came
		a.awaiting = nil
	}
	if r.Version < 12 && r.Version != 0 {
		var u Usage
		u.add(r)
		u.finish(r)
		return u, true
	}
	p := a.pending[r.TGID]
	if p == nil && r.GroupDead() && !r.WithGroup {
		var u Usage
		u.add(r)
		u.finish(r)
		return u, true
	}
	if p == nil {
		if a.pending == nil {
			a.pending = make(map[int32]*partial)
		}
		a.seq++
		p = &partial{seq: a.seq}
		a.pending[r.TGID] = p
		a.order = append(a.order, orderEntry{r.TGID, a.seq})
		a.evict()
	}
	p.u.add(r)
	if !r.GroupDead() {
		return Usage{}, false
	}
	delete(a.pending, r.TGID)
	p.last = *r
	if r.WithGroup {
		a.awaiting = p
		return Usage{}, false
	}
	p.u.finish(r)
	return p.u, true
}

// evict forgets the processes first seen longest ago beyond MaxPending,
// and compacts the order queue. Each call costs O(1) amortised.
func (a *Aggregator) evict() {
	limit := a.MaxPending
	if limit <= 0 {
		limit = DefaultMaxPending
	}
	for len(a.pending) > limit && a.head < len(a.order) {
		e := a.order[a.head]
		a.head++
		if p := a.pending[e.tgid]; p != nil && p.seq == e.seq {
			delete(a.pending, e.tgid)
			a.evicted++
		}
	}
	// Drop the entries of completed processes once they outnumber the
	// live ones, so the queue stays within a constant factor of pending.
	if len(a.order)-a.head > 2*len(a.pending)+64 {
		j := 0
		for _, e := range a.order[a.head:] {
			if p := a.pending[e.tgid]; p != nil && p.seq == e.seq {
				a.order[j] = e
				j++
			}
		}
		a.order, a.head = a.order[:j], 0
	}
}

// Pending returns the number of processes with records added whose last
// task has not exited yet.
func (a *Aggregator) Pending() int { return len(a.pending) }

// Evicted returns how many partly seen processes were forgotten because
// of MaxPending.
func (a *Aggregator) Evicted() uint64 { return a.evicted }

// Strays returns how many records could not be placed: a KindTGID
// aggregate without the FlagGroupDead record before it, or a
// FlagGroupDead record whose announced aggregate did not follow.
func (a *Aggregator) Strays() uint64 { return a.strays }

// Reset forgets every partly seen process, for example after an overrun
// in which their last records may have been lost.
func (a *Aggregator) Reset() {
	clear(a.pending)
	a.order, a.head = a.order[:0], 0
	a.awaiting = nil
}

// DelayAccounting reports whether the kernel's delay accounting is on
// (/proc/sys/kernel/task_delayacct, set by that sysctl or the delayacct
// boot parameter). When it is off the kernel still reports CPUDelay
// (kept by the scheduler), but BlkioDelay, SwapinDelay and the other
// delays stay 0; a task that lived across a change has partial delays.
func DelayAccounting() (bool, error) {
	b, err := os.ReadFile("/proc/sys/kernel/task_delayacct")
	if err != nil {
		return false, err
	}
	return strings.TrimSpace(string(b)) == "1", nil
}
