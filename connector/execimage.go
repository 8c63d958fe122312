package connector

import (
	"bytes"
	"encoding/binary"
	"slices"
	"sync/atomic"
	"unsafe"
)

// ExecImageArgsMax is how many bytes of an exec'd process's command line
// the tree filter's program records (ExecImage): as many as the hub's
// default Config.CmdlineMaxChars. A longer command line is recorded cut
// to its first ExecImageArgsMax bytes, with its full length.
const ExecImageArgsMax = 4096

// The tree filter's program records, at every exec event it passes (the
// process's TGID is a member), the exec'd program's name (task_struct's
// comm) and command line (the bytes from mm->arg_start to mm->arg_end of
// the new image, NUL-separated, as /proc/PID/cmdline gives them), with
// the event's TGID and timestamp, in a BPF array that user space maps
// into its memory. The proc connector sends the exec event from the
// exec'ing task once the new image is in place (after de_thread, so that
// the task is the process's leader whichever thread exec'd), and the
// socket filter runs in that task before the event is queued: the record
// is written before user space can read the event, and holds what exec
// was given even if the process exits at once.
//
// Each slot (execSlotSize bytes, slot tgid & (execSlots-1)) is
//
//	seq     u32 at 0   even: stable; odd: a writer is in it
//	tgid    u32 at 4   the event's TGID
//	ts      u64 at 8   the event's timestamp_ns, copied from the datagram
//	fullLen u64 at 16  arg_end - arg_start
//	state   u32 at 24  execComplete, or 0: the program could not read
//	                   the task, its comm or its arguments
//	comm    [16] at 32 task_struct.comm, NUL-padded
//	args    at 48      the first min(fullLen, ExecImageArgsMax) bytes
//
// The writer protocol is the start-time slots' (forkstart.go): take the
// slot by compare-and-exchange of an even seq with seq+1 (skip the
// recording when another CPU holds it), write, add 1 with a fully ordered
// atomic. The program writes tgid, ts and state 0 first, so that a slot
// whose reads fail holds no earlier record of the TGID.
//
// Why an array of slots and not a BPF ring buffer: a slot is found by
// TGID and checked by (TGID, timestamp), at any time, in any order and
// from any goroutine, with no consumer state; a ring buffer must be
// consumed in order by one reader, which would have to copy each record
// into an index of its own for lookups (memory and work for every exec,
// looked up or not), and when it is full it loses the newest records,
// which are the ones about to be looked up, where a slot loses the
// oldest. A record is lost instead when another member whose TGID is
// equal modulo execSlots execs before it is looked up (PIDs are handed
// out in turn, so that two live members share a slot only when 512 or
// more PIDs were handed out on the host between their forks), or when
// two such execs are written at the same time on two CPUs (the second
// skips its record); such a lookup says it has no record.
//
// Memory: execSlots * execSlotSize = 512 * 4,144 bytes = 2,121,728
// bytes (2.0 MiB) per filter, in the kernel, mapped read-only into the
// process.
const (
	execSlots    = 1 << 9
	execSlotSize = execArgs + ExecImageArgsMax
	execTGID     = 4
	execTS       = 8
	execFullLen  = 16
	execState    = 24
	execComm     = 32
	execCommLen  = 16
	execArgs     = 48

	// execComplete is the state of a slot with the whole record.
	execComplete = 1
)

// readExecSlotHook reads the record of the exec event (tgid, ts) from its
// slot in mem (execSlots slots of execSlotSize bytes, 8-byte aligned) as a
// sequence-lock reader, appending the recorded command line to buf[:0].
// A hit needs an even seq, unchanged across the reads, the event's tgid
// and timestamp and a complete record. A writer changes the seq only to
// write another record, so a read that sees the seq change has lost the
// record: it is not retried. It calls between, when not nil, after the
// reads of the record (the tests write the slot there). It makes no
// system call, and allocates only when buf is too small.
func readExecSlotHook(mem []byte, tgid uint32, ts uint64, buf []byte, between func()) (comm [execCommLen]byte, args []byte, fullLen int, ok bool) {
	p, ok := slotAt(mem, int(tgid&(execSlots-1)), execSlotSize)
	if !ok {
		return comm, nil, 0, false
	}
	seq, ok := seqBegin(p)
	if !ok {
		return comm, nil, 0, false
	}
	load32 := func(off uintptr) uint32 { return atomic.LoadUint32((*uint32)(unsafe.Add(p, off))) }
	load64 := func(off uintptr) uint64 { return atomic.LoadUint64((*uint64)(unsafe.Add(p, off))) }
	full := load64(execFullLen)
	if load32(execTGID) != tgid || load64(execTS) != ts || load32(execState) != execComplete || full > 1<<31 {
		return comm, nil, 0, false
	}
	for i := uintptr(0); i < execCommLen; i += 8 {
		binary.NativeEndian.PutUint64(comm[i:], load64(execComm+i))
	}
	n := int(min(full, ExecImageArgsMax))
	args = slices.Grow(buf[:0], n)[:n]
	var word [8]byte
	for i := 0; i < n; i += 8 {
		binary.NativeEndian.PutUint64(word[:], load64(execArgs+uintptr(i)))
		copy(args[i:], word[:])
	}
	if between != nil {
		between()
	}
	if !seqUnchanged(p, seq) {
		return [execCommLen]byte{}, nil, 0, false
	}
	return comm, args, int(full), true
}

// ExecImage returns what the tree filter's program recorded of the exec
// event of process tgid whose timestamp (Event.Timestamp, the datagram's
// timestamp_ns) is timestampNS: the exec'd program's name (comm, at most
// 15 bytes: the base name of the file exec'd, cut), its command line as
// /proc/PID/cmdline gives it right after exec (the arguments, each ended
// by a NUL) and the command line's full length in bytes. args is
// buf[:0] with the bytes appended (buf's storage when it is large
// enough); it holds the first ExecImageArgsMax bytes, so that
// len(args) < fullLen says the command line was cut.
//
// ok is false when there is no record of exactly that event: the
// program records only exec events it passes (the TGID is a member),
// could not read the task's name or arguments (then it records none
// rather than a guess), the slot was taken since by the exec of another
// process (TGIDs equal modulo 512) or by a later exec of the same process,
// or was being written; or the filter does not record execs (ExecImages)
// or is closed. A record is never taken for another event: the TGID and
// timestamp must both match.
//
// It may be called from any goroutine, as soon as the event is received
// and for as long as no other exec takes the slot, with no system call.
func (f *TreeFilter) ExecImage(tgid int, timestampNS uint64, buf []byte) (comm string, args []byte, fullLen int, ok bool) {
	if tgid <= 0 || tgid > 1<<31-1 {
		return "", nil, 0, false
	}
	f.execs.mu.RLock()
	c, args, fullLen, ok := readExecSlotHook(f.execs.mem, uint32(tgid), timestampNS, buf, nil)
	f.execs.mu.RUnlock()
	if !ok {
		return "", nil, 0, false
	}
	if i := bytes.IndexByte(c[:], 0); i >= 0 {
		return string(c[:i]), args, fullLen, true
	}
	return string(c[:]), args, fullLen, true
}

// ExecImages reports whether the program records exec images for
// ExecImage, and if not, why (for example no kernel BTF, or a kernel that
// refuses bpf_get_current_task or bpf_probe_read_user to socket filters,
// as it does to a process without CAP_PERFMON or CAP_SYS_ADMIN). The
// figure of its cost in the kernel is in execimage_linux.go.
func (f *TreeFilter) ExecImages() (bool, string) {
	return f.execs.state()
}
