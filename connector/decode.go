package connector

import (
	"encoding/binary"
	"errors"
	"strconv"
	"strings"

	"github.com/process-watchman/watchman/internal/nlerr"
	"github.com/process-watchman/watchman/internal/waitstatus"
)

// What is the type of a proc connector event (enum proc_cn_event in
// include/uapi/linux/cn_proc.h). Its values are distinct bits, so a What is
// also used as a set of event types (Config.Events).
type What uint32

// Event types of include/uapi/linux/cn_proc.h.
const (
	// WhatNone is an acknowledgement of a control message (PROC_EVENT_NONE).
	WhatNone What = 0x00000000
	// WhatFork is sent when a process or thread is created.
	WhatFork What = 0x00000001
	// WhatExec is sent when a process calls execve.
	WhatExec What = 0x00000002
	// WhatUID is sent when a process changes its real or effective uid.
	WhatUID What = 0x00000004
	// WhatGID is sent when a process changes its real or effective gid.
	WhatGID What = 0x00000040
	// WhatSID is sent when a process starts a new session (setsid).
	WhatSID What = 0x00000080
	// WhatPtrace is sent on PTRACE_ATTACH and PTRACE_DETACH.
	WhatPtrace What = 0x00000100
	// WhatComm is sent when a task changes its name (prctl PR_SET_NAME).
	WhatComm What = 0x00000200
	// WhatNonzeroExit is a filter bit only, never an event type: in a mask
	// it selects the exits whose wait status is non-zero. The kernel header
	// defines it as 0x20000000.
	WhatNonzeroExit What = 0x20000000
	// WhatCoredump is sent when a process starts dumping core.
	WhatCoredump What = 0x40000000
	// WhatExit is sent when a task (thread or process) exits.
	WhatExit What = 0x80000000

	// WhatAll is the set of every event type (PROC_EVENT_ALL), including
	// the WhatNonzeroExit filter bit.
	WhatAll = WhatFork | WhatExec | WhatUID | WhatGID | WhatSID | WhatPtrace |
		WhatComm | WhatNonzeroExit | WhatCoredump | WhatExit
)

// WhatMark is not a kernel event type: it is the type of the Event that
// Receive returns for a marker queued by Conn.Mark, whose Ack field holds
// the token given to Mark. It is outside WhatAll, so Config.Events refuses
// it and it is never sent to the kernel; markers are returned whatever the
// mask.
const WhatMark What = 0x01000000

var whatNames = [...]struct {
	w    What
	name string
}{
	{WhatFork, "fork"},
	{WhatExec, "exec"},
	{WhatUID, "uid"},
	{WhatGID, "gid"},
	{WhatSID, "sid"},
	{WhatPtrace, "ptrace"},
	{WhatComm, "comm"},
	{WhatNonzeroExit, "nonzero-exit"},
	{WhatCoredump, "coredump"},
	{WhatExit, "exit"},
	{WhatMark, "mark"},
}

// String returns the event name ("fork", "exit", ...), "none" for
// WhatNone, and names joined by "|" for a set; unknown bits are shown in
// hexadecimal.
func (w What) String() string {
	if w == WhatNone {
		return "none"
	}
	for _, n := range whatNames {
		if w == n.w {
			return n.name
		}
	}
	var b strings.Builder
	rest := w
	for _, n := range whatNames {
		if rest&n.w != 0 {
			if b.Len() > 0 {
				b.WriteByte('|')
			}
			b.WriteString(n.name)
			rest &^= n.w
		}
	}
	if rest != 0 {
		if b.Len() > 0 {
			b.WriteByte('|')
		}
		b.WriteString("0x")
		b.WriteString(strconv.FormatUint(uint64(rest), 16))
	}
	return b.String()
}

// Event is one decoded proc connector message. It is a flat value with no
// pointers: decoding and copying it never allocates. Which fields are set
// depends on What; the others are zero.
type Event struct {
	// What is the event type.
	What What
	// CPU is the CPU that sent the event.
	CPU uint32
	// Timestamp is the kernel's CLOCK_MONOTONIC time of the event, in ns.
	Timestamp uint64
	// Seq is the cn_msg sequence number: the sending CPU's event counter.
	Seq uint32
	// Ack is the cn_msg ack number: zero for events; for a WhatNone
	// acknowledgement, the ack number of the request plus one; for a
	// WhatMark, the token given to Conn.Mark.
	Ack uint32

	// PID and TGID identify the subject: the child of a fork, the process
	// of exec, exit, uid, gid, sid, ptrace, comm and coredump events. PID is
	// the kernel's task id (a thread id), TGID the process id.
	PID, TGID int32
	// ParentPID and ParentTGID are the parent of a fork, exit or coredump
	// (the exiting task's real parent; zero if it was already gone).
	ParentPID, ParentTGID int32

	// ExitStatus is the raw wait status of an exit (256 = exit 1, 9 =
	// killed by SIGKILL); see ExitCode.
	ExitStatus uint32
	// ExitSignal is the signal the exiting task sends its parent (usually
	// SIGCHLD, 17); -1 for threads.
	ExitSignal int32

	// RUID and EUID are the real and effective uid of a WhatUID event.
	RUID, EUID uint32
	// RGID and EGID are the real and effective gid of a WhatGID event.
	RGID, EGID uint32

	// TracerPID and TracerTGID identify the tracer of a WhatPtrace event;
	// both are zero on detach.
	TracerPID, TracerTGID int32

	// Comm is the new name of a WhatComm event, NUL padded.
	Comm [16]byte

	// Err is the error code (a positive errno) of a WhatNone
	// acknowledgement; zero means success.
	Err uint32
}

// CommString returns Comm up to its first NUL byte.
func (e *Event) CommString() string {
	for i, c := range e.Comm {
		if c == 0 {
			return string(e.Comm[:i])
		}
	}
	return string(e.Comm[:])
}

// IsThread reports whether the subject is a thread other than its group
// leader: for a fork, the new task is a thread; for an exit, the exiting
// task is not the last one of its process.
func (e *Event) IsThread() bool { return e.PID != e.TGID }

// ExitCode decodes ExitStatus, the wait status of a WhatExit event. A normal
// exit yields (status, 0) with status in 0..255; a death by signal yields
// (-1, signal). See CoreDumped for the core-dump bit.
func (e *Event) ExitCode() (code int, signal int) {
	code, signal, _ = waitstatus.Decode(e.ExitStatus)
	return code, signal
}

// CoreDumped reports whether the wait status of a WhatExit event has the
// core-dump bit (0x80) set.
func (e *Event) CoreDumped() bool {
	_, _, core := waitstatus.Decode(e.ExitStatus)
	return core
}

// Wire layout (include/uapi/linux/connector.h, cn_proc.h).
const (
	// IdxProc and ValProc are the connector id of the proc connector
	// (CN_IDX_PROC, CN_VAL_PROC); IdxProc is also its multicast group.
	IdxProc = 1
	// ValProc is CN_VAL_PROC; see IdxProc.
	ValProc = 1

	// CnMsgLen is the size of struct cn_msg: idx, val, seq, ack (u32 each),
	// len and flags (u16 each).
	CnMsgLen = 20
	// ProcEventHeaderLen is the size of the fixed part of struct
	// proc_event: what, cpu (u32), timestamp_ns (u64).
	ProcEventHeaderLen = 16
	// ProcEventLen is sizeof(struct proc_event): the header and the
	// largest member of its union (exit, 24 bytes).
	ProcEventLen = 40

	// OpListen and OpIgnore are enum proc_cn_mcast_op.
	OpListen = 1
	// OpIgnore is PROC_CN_MCAST_IGNORE; see OpListen.
	OpIgnore = 2
)

// Decode errors. A *DecodeError matches exactly one of them with errors.Is.
var (
	// ErrTruncated means the input is shorter than its headers say.
	ErrTruncated = errors.New("connector: truncated message")
	// ErrForeign means the message belongs to another connector
	// (idx/val other than CN_IDX_PROC/CN_VAL_PROC).
	ErrForeign = errors.New("connector: message of another connector")
	// ErrMalformed means the lengths are inconsistent.
	ErrMalformed = errors.New("connector: malformed message")
)

// A DecodeError reports why Decode rejected its input.
type DecodeError struct {
	// Reason is ErrTruncated, ErrForeign or ErrMalformed.
	Reason error
	// Detail says what exactly was wrong.
	Detail string
	// Len is the length of the input.
	Len int
}

// Error implements error.
func (e *DecodeError) Error() string { return nlerr.Decode(*e).Text() }

// Unwrap returns Reason.
func (e *DecodeError) Unwrap() error { return e.Reason }

// unionLen returns the number of union bytes an event type needs, or -1
// for an unknown type.
func unionLen(w What) int {
	switch w {
	case WhatNone:
		return 4
	case WhatExec, WhatSID:
		return 8
	case WhatFork, WhatUID, WhatGID, WhatPtrace, WhatCoredump:
		return 16
	case WhatComm, WhatExit:
		return 24
	}
	return -1
}

// Decode decodes one netlink message payload, the bytes after the nlmsghdr:
// a struct cn_msg followed by a struct proc_event, in host byte order (the
// kernel's). It overwrites *ev entirely and never allocates on success.
//
// The cn_msg must carry the proc connector's id (else ErrForeign), its len
// must fit in b and cover the proc_event fields of the event type (else
// ErrTruncated), and b may extend past the cn_msg data only by up to 3 bytes
// of netlink alignment padding (else ErrMalformed). An event type Decode
// does not know is not an error: ev gets the header fields (What, CPU,
// Timestamp, Seq, Ack) and no union field, so that a filter can drop it.
//
// Errors are *DecodeError values; Decode never panics.
func Decode(b []byte, ev *Event) error {
	if d, r := decode(b, ev); r != nil {
		return &DecodeError{Reason: r, Detail: d, Len: len(b)}
	}
	return nil
}

// decode is Decode without the allocation of an error value.
func decode(b []byte, ev *Event) (detail string, reason error) {
	*ev = Event{}
	if len(b) < CnMsgLen {
		return "shorter than struct cn_msg", ErrTruncated
	}
	ne := binary.NativeEndian
	if ne.Uint32(b[0:]) != IdxProc || ne.Uint32(b[4:]) != ValProc {
		return "connector id is not CN_IDX_PROC/CN_VAL_PROC", ErrForeign
	}
	n := int(ne.Uint16(b[16:]))
	data := b[CnMsgLen:]
	if n > len(data) {
		return "cn_msg.len exceeds the message", ErrTruncated
	}
	if len(data)-n > 3 {
		return "bytes after cn_msg data exceed alignment padding", ErrMalformed
	}
	data = data[:n]
	if len(data) < ProcEventHeaderLen {
		return "cn_msg.len shorter than the proc_event header", ErrTruncated
	}
	ev.Seq = ne.Uint32(b[8:])
	ev.Ack = ne.Uint32(b[12:])
	ev.What = What(ne.Uint32(data[0:]))
	ev.CPU = ne.Uint32(data[4:])
	ev.Timestamp = ne.Uint64(data[8:])
	u := data[ProcEventHeaderLen:]
	need := unionLen(ev.What)
	if need < 0 {
		return "", nil
	}
	if len(u) < need {
		*ev = Event{}
		return "proc_event too short for its event type", ErrTruncated
	}
	i32 := func(off int) int32 { return int32(ne.Uint32(u[off:])) }
	switch ev.What {
	case WhatNone:
		ev.Err = ne.Uint32(u[0:])
	case WhatFork:
		ev.ParentPID, ev.ParentTGID = i32(0), i32(4)
		ev.PID, ev.TGID = i32(8), i32(12)
	case WhatExec, WhatSID:
		ev.PID, ev.TGID = i32(0), i32(4)
	case WhatUID:
		ev.PID, ev.TGID = i32(0), i32(4)
		ev.RUID, ev.EUID = ne.Uint32(u[8:]), ne.Uint32(u[12:])
	case WhatGID:
		ev.PID, ev.TGID = i32(0), i32(4)
		ev.RGID, ev.EGID = ne.Uint32(u[8:]), ne.Uint32(u[12:])
	case WhatPtrace:
		ev.PID, ev.TGID = i32(0), i32(4)
		ev.TracerPID, ev.TracerTGID = i32(8), i32(12)
	case WhatComm:
		ev.PID, ev.TGID = i32(0), i32(4)
		copy(ev.Comm[:], u[8:24])
	case WhatCoredump:
		ev.PID, ev.TGID = i32(0), i32(4)
		ev.ParentPID, ev.ParentTGID = i32(8), i32(12)
	case WhatExit:
		ev.PID, ev.TGID = i32(0), i32(4)
		ev.ExitStatus = ne.Uint32(u[8:])
		ev.ExitSignal = i32(12)
		ev.ParentPID, ev.ParentTGID = i32(16), i32(20)
	}
	return "", nil
}
