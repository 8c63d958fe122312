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
	p, ok := slotAt(mem, int(pid&(startSlots-1)), startSlotSize)
	if !ok {
		return 0, false
	}
	seq, ok := seqBegin(p)
	if !ok {
		return 0, false
	}
	got := atomic.LoadUint32((*uint32)(unsafe.Add(p, slotPID)))
	start := atomic.LoadUint64((*uint64)(unsafe.Add(p, slotStart)))
	if between != nil {
		between()
	}
	if !seqUnchanged(p, seq) || got != pid || start == 0 {
		return 0, false
	}
	return start, true
}

// slotAt returns the address of slot i of size bytes in mem, if mem
// holds it.
func slotAt(mem []byte, i, size int) (unsafe.Pointer, bool) {
	off := i * size
	if off < 0 || off+size > len(mem) {
		return nil, false
	}
	return unsafe.Pointer(&mem[off]), true
}

// seqBegin starts a sequence-lock read of the slot at p, whose u32 seq
// is at offset 0: it returns the seq, and false when it is odd (a writer
// is in the slot).
func seqBegin(p unsafe.Pointer) (uint32, bool) {
	seq := atomic.LoadUint32((*uint32)(p))
	return seq, seq&1 == 0
}

// seqUnchanged ends a sequence-lock read begun with seqBegin: if the
// seq is unchanged, the reads between saw one writer's values, provided
// they were atomic loads (each an acquire on every architecture Go
// supports, so that the final load of seq cannot be performed before
// them; plain loads could be, on arm64).
func seqUnchanged(p unsafe.Pointer, seq uint32) bool {
	return atomic.LoadUint32((*uint32)(p)) == seq
}

// slotTable is a TreeFilter's view of a recorder's mapped slots: the
// memory while the filter is open and the program records, else why
// not.
type slotTable struct {
	mu     sync.RWMutex // held for reading while a lookup reads mem
	mem    []byte       // nil when not recorded or after Close
	reason string       // why not, when mem is nil
}

// state reports whether the table has memory, and if not, why.
func (s *slotTable) state() (bool, string) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	if s.mem == nil {
		return false, s.reason
	}
	return true, ""
}

// forget drops the memory before it is unmapped: lookups that began
// before have ended when forget returns.
func (s *slotTable) forget(reason string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.mem, s.reason = nil, reason
}

func lookupStart(s *slotTable, pid int) (uint64, bool) {
	if pid <= 0 || pid > 1<<31-1 {
		return 0, false
	}
	s.mu.RLock()
	defer s.mu.RUnlock()
	return readStartSlot(s.mem, uint32(pid))
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
	return lookupStart(&f.starts, pid)
}

// ForkStarts reports whether the program records start times for
// ForkStart, and if not, why (for example no kernel BTF, or a kernel that
// refuses bpf_get_current_task or bpf_probe_read_kernel to socket filters,
// as it does to a process without CAP_PERFMON or CAP_SYS_ADMIN).
func (f *TreeFilter) ForkStarts() (bool, string) {
	return f.starts.state()
}
