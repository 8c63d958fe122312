package connector

import (
	"sync"
	"sync/atomic"
	"unsafe"
)

// The tree filter's program records, for every fork of a new process it
// sees (members or not), the new process's start time (task_struct's
// start_boottime, CLOCK_BOOTTIME nanoseconds; /proc/PID/stat field 22 is
// it divided by 10,000,000 at USER_HZ 100) in a BPF array that user space
// maps into its memory, so that learning a child's identity takes no
// system call.
//
// Each slot (startSlotSize bytes, slot pid & (startSlots-1)) is
//
//	seq   u32 at 0  even: stable; odd: a writer is in it
//	pid   u32 at 4  the child's PID
//	start u64 at 8  its start_boottime; 0: the program could not find it
//
// The program takes a slot by compare-and-exchange of an even seq with
// seq+1 and skips the recording when the slot is odd or the exchange
// fails (another CPU is writing a child whose PID shares the slot: that
// child is what the slot will hold). It then stores pid and start and
// adds 1 to seq with a fetching atomic add (fully ordered on every
// architecture, unlike a plain BPF atomic add). Two writers are thus
// never in a slot at once, and a reader that sees the same even seq before
// and after reading pid and start has a pair one writer wrote.
//
// What remains for the caller: the slot holds the latest fork of a PID
// that the program saw, which may be a later process than the event at
// hand (the child exited and its PID was reused before the event was
// read). Such a start time is later than the event: compare it with the
// event's timestamp (CLOCK_MONOTONIC; add CLOCK_BOOTTIME - CLOCK_MONOTONIC,
// which is 0 unless the host was suspended) and fall back to /proc when
// it is later. A reader that stalls while a slot is rewritten exactly 2^31
// times (the u32 seq wrapping to the same value) could take a torn pair;
// at one fork a microsecond, all in that slot, that is a stall of over
// half an hour.
const (
	startSlots    = 1 << 16
	startSlotSize = 16
	slotSeq       = 0
	slotPID       = 4
	slotStart     = 8
)

// readStartSlot reads the slot of pid in mem (startSlots slots of
// startSlotSize bytes, 8-byte aligned) as a sequence-lock reader: a hit
// needs an even seq, unchanged across the reads, the pid in the slot and
// a start time. It neither allocates nor calls the kernel.
func readStartSlot(mem []byte, pid uint32) (uint64, bool) {
	return readStartSlotHook(mem, pid, nil)
}

// readStartSlotHook is readStartSlot that calls between, when not nil,
// after the reads of pid and start (the tests write the slot there).
func readStartSlotHook(mem []byte, pid uint32, between func()) (uint64, bool) {
	off := int(pid&(startSlots-1)) * startSlotSize
	if off+startSlotSize > len(mem) {
		return 0, false
	}
	p := unsafe.Pointer(&mem[off])
	seqp := (*uint32)(unsafe.Add(p, slotSeq))
	seq := atomic.LoadUint32(seqp)
	if seq&1 != 0 {
		return 0, false // a writer is in the slot
	}
	got := atomic.LoadUint32((*uint32)(unsafe.Add(p, slotPID)))
	start := atomic.LoadUint64((*uint64)(unsafe.Add(p, slotStart)))
	if between != nil {
		between()
	}
	if atomic.LoadUint32(seqp) != seq || got != pid || start == 0 {
		return 0, false
	}
	return start, true
}

// startTable is a TreeFilter's view of the start-time slots: the mapped
// memory while the filter is open and records start times.
type startTable struct {
	mu     sync.RWMutex // held for reading while a lookup reads mem
	mem    []byte       // nil when not recorded or after Close
	reason string       // why not, when mem is nil
}

func (s *startTable) lookup(pid int) (uint64, bool) {
	if pid <= 0 || pid > 1<<31-1 {
		return 0, false
	}
	s.mu.RLock()
	defer s.mu.RUnlock()
	return readStartSlot(s.mem, uint32(pid))
}

// forget drops the memory before it is unmapped: lookups that began
// before have ended when forget returns.
func (s *startTable) forget(reason string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.mem, s.reason = nil, reason
}

// ForkStart returns the start time (the kernel's start_boottime of the
// task, CLOCK_BOOTTIME nanoseconds; /proc/PID/stat field 22 is it divided
// by 10,000,000) that the program recorded for the latest fork of a new
// process with this PID that it saw. ok is false when none is recorded,
// the slot now holds another PID (the slots are shared by PIDs equal
// modulo 65,536) or is being written, the program could not find the
// child, or the filter does not record start times (ForkStarts) or is
// closed. The time may be that of a later process that reused the PID:
// a start time later than the fork event's timestamp (in CLOCK_BOOTTIME)
// is not that event's child, and the caller should read /proc instead.
// It may be called from any goroutine; it allocates nothing and makes no
// system call.
func (f *TreeFilter) ForkStart(pid int) (startBoottimeNS uint64, ok bool) {
	return f.starts.lookup(pid)
}

// ForkStarts reports whether the program records start times for
// ForkStart, and if not, why (for example no kernel BTF, or a kernel that
// refuses bpf_get_current_task or bpf_probe_read_kernel to socket filters,
// as it does to a process without CAP_PERFMON or CAP_SYS_ADMIN).
func (f *TreeFilter) ForkStarts() (bool, string) {
	f.starts.mu.RLock()
	defer f.starts.mu.RUnlock()
	if f.starts.mem == nil {
		return false, f.starts.reason
	}
	return true, ""
}
