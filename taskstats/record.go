package taskstats

import (
	"strconv"
	"time"

	"github.com/process-watchman/watchman/internal/waitstatus"
)

// Kind says which nest of a TASKSTATS_CMD_NEW message a Record came from.
type Kind uint8

// Kinds of Record (enum TASKSTATS_TYPE_AGGR_* in
// include/uapi/linux/taskstats.h).
const (
	// KindPID is the per-task record (TASKSTATS_TYPE_AGGR_PID) the kernel
	// sends for every exiting task, thread or process.
	KindPID Kind = 4
	// KindTGID is the per-process aggregate (TASKSTATS_TYPE_AGGR_TGID)
	// the kernel appends, in the same message, to the per-task record of
	// the last task of a thread group that ever had more than one thread.
	KindTGID Kind = 5
)

// String returns "pid", "tgid" or the number.
func (k Kind) String() string {
	switch k {
	case KindPID:
		return "pid"
	case KindTGID:
		return "tgid"
	}
	return "Kind(" + strconv.Itoa(int(k)) + ")"
}

// Flags are the accounting flags of a record (ac_flag, the values of
// include/uapi/linux/acct.h).
type Flags uint8

// Accounting flags.
const (
	// FlagFork (AFORK): the task forked but did not exec.
	FlagFork Flags = 0x01
	// FlagSuperUser (ASU): the task used superuser privileges.
	FlagSuperUser Flags = 0x02
	// FlagCore (ACORE): the task dumped core.
	FlagCore Flags = 0x08
	// FlagSignaled (AXSIG): the task was killed by a signal.
	FlagSignaled Flags = 0x10
	// FlagGroupDead (AGROUP, version 12 and later): this task was the
	// last of its thread group to exit, so its process has ended.
	FlagGroupDead Flags = 0x20
)

// Record is one decoded struct taskstats with the identity the message
// gave it. It is a flat value without pointers: decoding and copying it
// never allocates. Fields the record's version does not have are zero;
// the version each field needs is given where it is above 8.
//
// In a KindTGID aggregate only the additive fields are set: on Linux
// 6.18 (and kernels with "taskstats: retain dead thread stats in TGID
// queries") UserCPU, SystemCPU, Elapsed (the sum of the threads'
// lifetimes), the context switches and the delays, with Version set; on
// older kernels only the delays, with Version 0.
type Record struct {
	// Kind is KindPID or KindTGID.
	Kind Kind
	// WithGroup, on a KindPID record, says that the same message also
	// carried the KindTGID aggregate of the task's process: it is the
	// next record of the batch.
	WithGroup bool
	// Version is the struct taskstats version (16 on Linux 6.18), or 0
	// for an aggregate of an older kernel that carries only delays.
	Version uint16

	// PID is the task (thread) id of a KindPID record, from the
	// message's TASKSTATS_TYPE_PID attribute; 0 in a KindTGID record.
	PID int32
	// TGID is the process id: the message's TASKSTATS_TYPE_TGID attribute
	// for KindTGID, ac_tgid (version 12) for KindPID; 0 when unknown.
	TGID int32
	// PPID is the parent process id (ac_ppid); 0 if the parent was gone.
	PPID int32
	// UID and GID are the real user and group ids (ac_uid, ac_gid).
	UID, GID uint32

	// Comm is the task's command name (ac_comm), NUL padded.
	Comm [32]byte
	// ExitStatus is ac_exitcode, the task's raw wait status (768 = exit
	// 3, 9 = killed by SIGKILL); 0 for threads that ended by themselves.
	// See ExitCode.
	ExitStatus uint32
	// Flags are the accounting flags (ac_flag).
	Flags Flags
	// Nice is the nice value (ac_nice).
	Nice int8
	// Sched is the scheduling policy (ac_sched).
	Sched uint8

	// BeginTime is the wall-clock start of the task in seconds since the
	// epoch (ac_btime64, version 10, else ac_btime). It is computed at
	// exit as now minus Elapsed, so it is whole seconds of the wall clock
	// and moves with it: use StartTicks to match a process.
	BeginTime int64
	// Elapsed is the task's lifetime (ac_etime, microseconds): from its
	// start to the moment the kernel filled the record at exit. In a
	// KindTGID aggregate, the sum over its threads.
	Elapsed time.Duration
	// ProcessElapsed is the lifetime of the task's thread group
	// (ac_tgetime, version 12), from the group leader's start, so it is
	// the process's age even in the record of another thread. 0 in a
	// KindTGID aggregate.
	ProcessElapsed time.Duration
	// UserCPU and SystemCPU are the CPU times (ac_utime, ac_stime),
	// microsecond resolution. On kernels with tick-based CPU accounting
	// (CONFIG_TICK_CPU_ACCOUNTING, the usual one) they are samples: each
	// timer tick (4 ms at HZ=250) charges its whole length to the task
	// it interrupts, and unlike getrusage(2) and /proc/PID/stat taskstats
	// does not scale them to the scheduler's exact run time. A task that
	// runs in pieces shorter than a tick, as on a loaded CPU, can be
	// charged far more or far less than it ran: on the 2-vCPU VM, under
	// a CPU hog, threads that ran 50 ms got 4 to 52 ms. CPURunVirtual is
	// the exact figure.
	UserCPU, SystemCPU time.Duration
	// UserCPUScaled and SystemCPUScaled are the frequency-scaled CPU times
	// (ac_utimescaled, ac_stimescaled).
	UserCPUScaled, SystemCPUScaled time.Duration
	// MinorFaults and MajorFaults are page fault counts (ac_minflt,
	// ac_majflt).
	MinorFaults, MajorFaults uint64

	// PeakRSS and PeakVM are the high-water marks of the resident set
	// and of the virtual memory of the task's address space, in bytes
	// (hiwater_rss, hiwater_vm are KiB). Threads share one address space,
	// so every thread reports the process's peak so far.
	PeakRSS, PeakVM uint64
	// ReadChars and WriteChars are the bytes passed to read and write
	// system calls (read_char, write_char), rounded down to KiB by the
	// kernel.
	ReadChars, WriteChars uint64
	// ReadSyscalls and WriteSyscalls count read and write system calls
	// (read_syscalls, write_syscalls); the kernel rounds them down to a
	// multiple of 1024 (it masks them like byte counts).
	ReadSyscalls, WriteSyscalls uint64
	// ReadBytes and WriteBytes are the bytes the task caused to be read
	// from and written to storage (read_bytes, write_bytes), rounded down
	// to KiB. A write is counted when the task dirties the page cache,
	// not at writeback; tmpfs writes are not counted.
	ReadBytes, WriteBytes uint64
	// CancelledWriteBytes are dirtied bytes that were never written
	// (truncated), rounded down to KiB.
	CancelledWriteBytes uint64
	// VoluntarySwitches and InvoluntarySwitches are context switch
	// counts (nvcsw, nivcsw).
	VoluntarySwitches, InvoluntarySwitches uint64

	// CPUDelay is the time spent runnable but waiting for a CPU
	// (cpu_delay_total), CPUDelayCount the number of waits. The
	// scheduler keeps them whether or not delay accounting is on.
	CPUDelay      time.Duration
	CPUDelayCount uint64
	// CPURunReal and CPURunVirtual are the task's CPU run times
	// (cpu_run_real_total, cpu_run_virtual_total), in nanoseconds.
	// CPURunReal is UserCPU+SystemCPU before their truncation to
	// microseconds, tick samples like them. CPURunVirtual is the
	// scheduler's exact run time (se.sum_exec_runtime, the clock
	// CLOCK_THREAD_CPUTIME_ID reads). Like CPUDelay they are kept
	// whether or not delay accounting is on (checked on Linux 6.18).
	CPURunReal, CPURunVirtual time.Duration
	// BlkioDelay is the time spent waiting for synchronous block I/O
	// (blkio_delay_total), BlkioDelayCount the number of waits. Like the
	// other delays below it stays 0 while delay accounting is off (the
	// kernel.task_delayacct sysctl, or the delayacct boot parameter; see
	// DelayAccounting).
	BlkioDelay      time.Duration
	BlkioDelayCount uint64
	// SwapinDelay is the time spent waiting for swap-in
	// (swapin_delay_total), SwapinDelayCount the number of waits.
	SwapinDelay      time.Duration
	SwapinDelayCount uint64
	// FreepagesDelay is the time spent in memory reclaim.
	FreepagesDelay time.Duration
	// ThrashingDelay (version 9) is the time spent waiting for
	// thrashing pages.
	ThrashingDelay time.Duration
	// CompactDelay (version 11) is the time spent in memory compaction.
	CompactDelay time.Duration
	// WPCopyDelay (version 13) is the time spent in write-protect copies.
	WPCopyDelay time.Duration
	// IRQDelay (version 14) is the time stolen by interrupts.
	IRQDelay time.Duration

	// ExeDev and ExeInode (version 12) identify the task's executable
	// file: its device (huge_encode_dev) and inode number.
	ExeDev, ExeInode uint64

	// Received is when the Listener read the record: CLOCK_BOOTTIME, the
	// clock of /proc/PID/stat's start time. It is zero for records from
	// Decode or DecodeMessage. The kernel filled the record at most this
	// long after boot, so it is an upper bound of the exit time.
	Received time.Duration
}

// CommString returns Comm up to its first NUL byte.
func (r *Record) CommString() string {
	for i, c := range r.Comm {
		if c == 0 {
			return string(r.Comm[:i])
		}
	}
	return string(r.Comm[:])
}

// ExitCode decodes ExitStatus: a normal exit yields (status, 0) with
// status in 0..255; a death by signal yields (-1, signal).
func (r *Record) ExitCode() (code int, signal int) {
	code, signal, _ = waitstatus.Decode(r.ExitStatus)
	return code, signal
}

// GroupDead reports whether the record is the last task of its process
// (FlagGroupDead, version 12 and later): the process ended with it.
func (r *Record) GroupDead() bool { return r.Flags&FlagGroupDead != 0 }

// IsThread reports whether a KindPID record is a thread other than its
// process's group leader (PID differs from TGID). It is false when TGID
// is unknown (versions before 12).
func (r *Record) IsThread() bool { return r.TGID != 0 && r.PID != r.TGID }

// ClockTick is the length of the clock tick of /proc/PID/stat's start
// time: 1/USER_HZ, and USER_HZ is 100 on every Linux architecture
// (sysconf(_SC_CLK_TCK)).
const ClockTick = 10 * time.Millisecond

// processElapsed returns the age of the record's process at exit:
// ProcessElapsed (version 12), else Elapsed, which is the process's age
// only in the record of its group leader.
func (r *Record) processElapsed() time.Duration {
	if r.ProcessElapsed != 0 || r.Version >= 12 {
		return r.ProcessElapsed
	}
	return r.Elapsed
}

// StartTicks estimates the start time of the record's process in clock
// ticks since boot, the value of field 22 of /proc/PID/stat, from
// Received minus ProcessElapsed. It is 0 when Received is zero or for a
// KindTGID aggregate. See StartTicksAt for the precision.
func (r *Record) StartTicks() uint64 {
	if r.Received == 0 || r.Kind != KindPID {
		return 0
	}
	return r.StartTicksAt(r.Received)
}

// StartTicksAt returns the start time of the record's process in clock
// ticks since boot, given exit, the time since boot (CLOCK_BOOTTIME) at
// which the kernel filled the record, or any later time.
//
// The kernel computes ac_tgetime as its CLOCK_MONOTONIC time at exit minus
// the group leader's start, truncated to microseconds, and /proc shows the
// leader's start on CLOCK_BOOTTIME truncated to ticks. The result is never
// below the true value (unless the machine was suspended during the
// process's life: CLOCK_BOOTTIME then runs ahead of CLOCK_MONOTONIC). It
// exceeds it by at most ceil((lateness+1µs)/ClockTick), where lateness is
// how much exit is past the kernel's reading: 0 or 1 tick when exit was
// taken within 10 ms, more under CPU contention (see the package
// documentation on matching).
func (r *Record) StartTicksAt(exit time.Duration) uint64 {
	start := exit - r.processElapsed()
	if start < 0 {
		return 0
	}
	return uint64(start / ClockTick)
}
