// Package taskstats receives the Linux kernel's per-task accounting records
// at exit (the generic netlink family "TASKSTATS") and decodes them: CPU
// times, peak memory, storage I/O, context switches and delays of every
// task that exits, however briefly it lived.
//
// The package knows nothing about process trees. It offers four layers:
//
//   - Decode, a pure decoder of one struct taskstats into a flat,
//     allocation-free Record, by the struct's version field; and
//     DecodeMessage, which decodes one TASKSTATS_CMD_NEW message (its
//     per-PID record and, if present, the per-TGID aggregate).
//   - Listener: Listen opens the socket, resolves the family, registers
//     for every possible CPU (TASKSTATS_CMD_GET with
//     TASKSTATS_CMD_ATTR_REGISTER_CPUMASK) and waits for the kernel's
//     acknowledgement; Receive then returns batches of records read with
//     recvmmsg(2) into a reused buffer, each stamped with the
//     CLOCK_BOOTTIME of its read; Sync returns what is queued without
//     waiting (a barrier, see below); Close deregisters and unblocks
//     Receive.
//     Messages not from the kernel, of another family, or malformed are
//     dropped and counted in Stats, never returned. SetFilter (classic
//     BPF) and AttachBPF (an eBPF program, which may consult a map of
//     member TGIDs) attach a socket filter, using the FilterOffset*
//     constants, so that uninteresting records never wake the reader.
//   - Aggregator (and Record.ProcessUsage), which turn the record stream
//     into exactly one Usage per process, all its threads included.
//   - Socket, the seam under Listener. The real one wraps
//     github.com/mdlayher/genetlink; package taskstatstest provides a fake
//     kernel so that code built on Listener is tested without privileges.
//
// # How processes are reported
//
// Checked in kernel/taskstats.c and on Linux 6.18 (tests
// TestIntegrationShortLived, a raw-forked single-threaded child, and
// TestIntegrationThreads, a child whose threads exit before it): the
// kernel sends one message per exiting task, to every listener registered
// for the CPU the task exits on, at the start of do_exit (before the
// task's memory and files are released, and before the proc connector's
// exit event, which another socket delivers: in user space either may be
// read first). Ids are those of the initial PID namespace.
//
//   - A process that never had a second thread: one message, one KindPID
//     record with FlagGroupDead (AGROUP). PID == TGID.
//   - A process that had threads: one KindPID record per thread, in exit
//     order, FlagGroupDead on the last one only (which may be any thread:
//     TestIntegrationLeaderExitsFirst ends the leader first, and the last
//     record is another thread's, with PID != TGID and ProcessElapsed
//     still counted from the leader's start); that last message also
//     carries
//     a KindTGID aggregate (the kernel allocates it at the first thread
//     exit while the group is not empty, and accumulates every exiting
//     thread into it). On 6.18 the aggregate holds the sums of the CPU
//     times, the elapsed times, the context switches and the delays, with
//     the version set; comm, ids, memory and I/O are zero. Older kernels
//     put only the delays in it, with version 0.
//
// The Aggregator sums the KindPID records by TGID until the FlagGroupDead
// one, and uses the kernel's aggregate for the sums it has, so a process
// gets one Usage covering all its threads: CPU and switches as the kernel
// counts them, I/O and faults as the sum of the per-task records (the
// kernel does not aggregate them), peak RSS of the shared address space.
//
// # Matching a record to a process identity
//
// A process's identity is (PID, start time in clock ticks since boot,
// /proc/PID/stat field 22). The record of the last task carries the TGID
// (ac_tgid) and the age of the thread group at exit (ac_tgetime,
// microseconds since the group leader started, on CLOCK_MONOTONIC), so
// the start is an exit time minus that age. The kernel does not say when
// it filled the record; any later time gives an upper bound of the start:
//
//   - Record.StartTicks uses the time the Listener read the record
//     (Record.Received, CLOCK_BOOTTIME);
//   - Record.StartTicksAt takes another, such as the proc connector's exit
//     timestamp (CLOCK_MONOTONIC plus BoottimeOffset), which the kernel
//     takes later in do_exit, after releasing the task's memory and files.
//
// Either is never below the true start ticks (unless the machine was
// suspended during the process's life) and exceeds it by
// ceil((lateness + 1 µs) / 10 ms) at most, where lateness is how long
// after the kernel's reading the time used was taken: 0 or 1 tick when
// nothing is starved of CPU. Under CPU contention lateness is unbounded.
// On this 2-CPU VM, in storms of 5,000 children (TestIntegrationStorm,
// which logs the figures) no estimate was below the true start; at a
// load average of 8 the earlier of the read time and the exit event's
// time gave the exact tick or one above for 4,988 to 5,000 children, at a
// load average of 30 (other agents' storms running) for 4,863, the read
// time alone then being up to 119 ticks late.
//
// So match by order, with the estimate as a bound. Records are read on
// their own socket, possibly long after the exit (seconds when the reader
// starves), so the late record of an earlier holder of a PID can have a
// read-time estimate above a newer process's start. Two facts exclude it:
// the records of one PID are queued in the order its holders exit, and
// every earlier holder's record is queued before the newer process's
// fork event is even sent (the record precedes the PID's release). So,
// for a process (pid, ticks) whose fork event has been read:
//
//   - Listener.Sync, called then, returns every record of earlier holders
//     still unread, followed by the process's own if it has already
//     exited. Among those, its own is the one whose estimate from its own
//     exit event (StartTicksAt of the proc connector's exit timestamp of
//     the record's task) is ticks or ticks+1, or whose ExitStatus is that
//     exit event's.
//   - Every record of pid from later Receive or Sync calls belongs to the
//     process or to a later holder: the first one whose estimate is at or
//     above ticks is its own.
//
// ac_btime alone is whole seconds of the wall clock and cannot tell apart
// PIDs reused within a second.
//
// # Units and caveats
//
// CPU and elapsed times are microseconds in the struct; memory
// high-water marks are KiB (Record gives bytes). The kernel rounds the
// I/O byte counts (and, oddly, the read/write system call counts) down to
// multiples of 1024. ReadBytes and WriteBytes are storage-layer bytes,
// counted when the page cache is dirtied (tmpfs is not counted).
//
// CPUDelay is always kept by the scheduler. The other delays (block I/O,
// swap-in, reclaim, ...) are measured only while delay accounting is on:
// kernel.task_delayacct = 1 or the delayacct boot parameter (see
// DelayAccounting); otherwise they are 0.
//
// # Privileges and namespaces
//
// Registering needs CAP_NET_ADMIN (ErrPermission otherwise), and the
// kernel registers only listeners in the initial user and PID namespaces
// (it refuses others with EINVAL: ErrNotSupported). A kernel without
// CONFIG_TASKSTATS has no "TASKSTATS" family (ErrNotSupported).
//
// When the socket's receive buffer is full the kernel drops records and
// the next read fails with ENOBUFS; Receive turns that into ErrOverrun and
// the Listener stays usable. Listener.Drops reports the kernel's count of
// dropped messages. Listen raises the buffer with SO_RCVBUFFORCE
// (DefaultReadBuffer).
package taskstats
