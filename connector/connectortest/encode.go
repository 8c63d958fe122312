package connectortest

import (
	"encoding/binary"

	"github.com/process-watchman/watchman/connector"
	"github.com/process-watchman/watchman/internal/nlfake"
)

// Wire sizes, written out here so that the encoder does not lean on the
// decoder's constants.
const (
	nlmsgHdrLen  = 16 // struct nlmsghdr
	cnMsgLen     = 20 // struct cn_msg
	procEventLen = 40 // struct proc_event: 16-byte header + 24-byte union
	nlmsgDone    = 3  // NLMSG_DONE, the type the connector sends
)

// MessageLen is the length of a netlink message that carries one proc
// event, as the kernel sends it: 16 + 20 + 40 = 76 bytes.
const MessageLen = nlmsgHdrLen + cnMsgLen + procEventLen

// Encode returns the wire form of ev as the kernel builds it in
// drivers/connector/cn_proc.c, without the nlmsghdr: a struct cn_msg
// (idx CN_IDX_PROC, val CN_VAL_PROC, seq ev.Seq, ack ev.Ack, len 40)
// followed by a struct proc_event whose union member is chosen by ev.What
// and filled from the matching Event fields. An unknown What gets a zeroed
// union. The bytes are in host order, like the kernel's.
func Encode(ev connector.Event) []byte {
	b := make([]byte, cnMsgLen+procEventLen)
	putPayload(b, ev)
	return b
}

// EncodeMessage returns Encode(ev) behind a struct nlmsghdr as the kernel
// sends it: length 76, type NLMSG_DONE, flags 0, seq ev.Seq, port id 0.
func EncodeMessage(ev connector.Event) []byte {
	b := make([]byte, MessageLen)
	PutHeader(b, MessageLen, ev.Seq, 0)
	putPayload(b[nlmsgHdrLen:], ev)
	return b
}

// PutHeader writes a struct nlmsghdr of type NLMSG_DONE with the given
// length, sequence number and port id into b[:16]; a helper for forged
// messages in tests.
func PutHeader(b []byte, length, seq, portID uint32) {
	nlfake.PutHeader(b, length, nlmsgDone, 0, seq, portID)
}

func putPayload(b []byte, ev connector.Event) {
	ne := binary.NativeEndian
	ne.PutUint32(b[0:], 1) // CN_IDX_PROC
	ne.PutUint32(b[4:], 1) // CN_VAL_PROC
	ne.PutUint32(b[8:], ev.Seq)
	ne.PutUint32(b[12:], ev.Ack)
	ne.PutUint16(b[16:], procEventLen)
	ne.PutUint16(b[18:], 0)
	p := b[cnMsgLen:]
	ne.PutUint32(p[0:], uint32(ev.What))
	ne.PutUint32(p[4:], ev.CPU)
	ne.PutUint64(p[8:], ev.Timestamp)
	u := p[16:]
	i32 := func(off int, v int32) { ne.PutUint32(u[off:], uint32(v)) }
	switch ev.What {
	case connector.WhatNone:
		ne.PutUint32(u[0:], ev.Err)
	case connector.WhatFork:
		i32(0, ev.ParentPID)
		i32(4, ev.ParentTGID)
		i32(8, ev.PID)
		i32(12, ev.TGID)
	case connector.WhatExec, connector.WhatSID:
		i32(0, ev.PID)
		i32(4, ev.TGID)
	case connector.WhatUID:
		i32(0, ev.PID)
		i32(4, ev.TGID)
		ne.PutUint32(u[8:], ev.RUID)
		ne.PutUint32(u[12:], ev.EUID)
	case connector.WhatGID:
		i32(0, ev.PID)
		i32(4, ev.TGID)
		ne.PutUint32(u[8:], ev.RGID)
		ne.PutUint32(u[12:], ev.EGID)
	case connector.WhatPtrace:
		i32(0, ev.PID)
		i32(4, ev.TGID)
		i32(8, ev.TracerPID)
		i32(12, ev.TracerTGID)
	case connector.WhatComm:
		i32(0, ev.PID)
		i32(4, ev.TGID)
		copy(u[8:24], ev.Comm[:])
	case connector.WhatCoredump:
		i32(0, ev.PID)
		i32(4, ev.TGID)
		i32(8, ev.ParentPID)
		i32(12, ev.ParentTGID)
	case connector.WhatExit:
		i32(0, ev.PID)
		i32(4, ev.TGID)
		ne.PutUint32(u[8:], ev.ExitStatus)
		i32(12, ev.ExitSignal)
		i32(16, ev.ParentPID)
		i32(20, ev.ParentTGID)
	}
}
