// Package connectortest provides a fake proc connector kernel for tests of
// code built on package connector, in the style of mdlayher/netlink's
// nltest: a Kernel implements connector.Socket, answers subscription
// requests the way drivers/connector/cn_proc.c does, and lets a test emit
// events (encoded to real wire bytes, so the decoder is exercised), raw or
// forged datagrams, and overruns, with or without NETLINK_NO_ENOBUFS. It
// queues the markers of connector.Conn.Mark in order with the events, or
// refuses them as the kernel does for an unprivileged socket. No
// privileges are needed.
package connectortest

import (
	"encoding/binary"
	"net"
	"os"
	"sync"
	"syscall"
	"time"

	"github.com/process-watchman/watchman/connector"
	"github.com/process-watchman/watchman/internal/nlfake"
)

// DefaultPortID is the netlink port id of a new Kernel's socket.
const DefaultPortID = 0x7e57

// ListenBehavior says how a Kernel answers PROC_CN_MCAST_LISTEN.
type ListenBehavior struct {
	// Silent makes the kernel never acknowledge, as a kernel does for a
	// listener outside the initial namespaces.
	Silent bool
	// ForeignAcks is the number of other listeners' acknowledgements
	// (WhatNone messages with other ack numbers) queued before the
	// socket's own, on the first LISTEN.
	ForeignAcks int
	// Before are events queued before the acknowledgement, on the first
	// LISTEN.
	Before []connector.Event
	// Err is the error code the acknowledgement carries (for example
	// uint32(syscall.EPERM)); zero means success.
	Err uint32
}

// A Request is a control message the Kernel received.
type Request struct {
	// Op is the proc_cn_mcast_op: connector.OpListen or OpIgnore.
	Op uint32
	// Events is the event_type of a struct proc_input, after the kernel's
	// normalisation (masked with WhatAll; zero becomes WhatAll); WhatAll
	// for a plain 4-byte op.
	Events connector.What
	// Len is the cn_msg data length: 4 (op only) or 8 (proc_input).
	Len int
	// Seq and Ack are the cn_msg sequence and ack numbers.
	Seq, Ack uint32
}

// Kernel is a fake proc connector kernel with one listening socket. It
// implements connector.Socket and is safe for concurrent use.
type Kernel struct {
	mu       sync.Mutex
	q        *nlfake.Queue // the socket's receive queue
	portID   uint32
	listen   ListenBehavior
	legacy   bool
	requests []Request
	listens  int
	seq      uint32 // the kernel's event counter
	// the socket's sk_user_data (struct proc_input), nil before any
	// control message
	hasInput  bool
	inputOp   uint32
	inputMask connector.What

	unprivileged bool
	noENOBUFS    bool
	capacity     int    // datagrams the queue holds; 0: unbounded
	congested    bool   // NETLINK_S_CONGESTED: dropping until drained
	drops        uint32 // sk_drops
}

// NewKernel returns a fake kernel that acknowledges LISTEN at once, as a
// Linux >= 6.6 kernel does (proc_input filters honoured).
func NewKernel() *Kernel {
	return &Kernel{q: nlfake.NewQueue(), portID: DefaultPortID}
}

// Dial returns connector.NewConn(k, cfg).
func (k *Kernel) Dial(cfg *connector.Config) (*connector.Conn, error) {
	return connector.NewConn(k, cfg)
}

// SetListen sets how later LISTEN requests are answered.
func (k *Kernel) SetListen(b ListenBehavior) {
	k.mu.Lock()
	defer k.mu.Unlock()
	k.listen = b
}

// SetLegacy makes the kernel behave as one before Linux 6.6: control
// messages other than a 4-byte op are ignored (no acknowledgement) and
// nothing is filtered in the kernel.
func (k *Kernel) SetLegacy(legacy bool) {
	k.mu.Lock()
	defer k.mu.Unlock()
	k.legacy = legacy
}

// SetPortID sets the socket's port id.
func (k *Kernel) SetPortID(id uint32) {
	k.mu.Lock()
	defer k.mu.Unlock()
	k.portID = id
}

// Emit queues events as the kernel would multicast them to this socket:
// each is encoded with EncodeMessage, with the sequence number taken from
// the kernel's counter when ev.Seq is zero, and passes the socket's kernel
// filter (as cn_filter does) first.
func (k *Kernel) Emit(events ...connector.Event) {
	k.mu.Lock()
	defer k.mu.Unlock()
	for _, ev := range events {
		k.emitLocked(ev)
	}
}

func (k *Kernel) emitLocked(ev connector.Event) {
	if ev.Seq == 0 {
		ev.Seq = k.seq
		k.seq++
	}
	if !k.passesLocked(ev) {
		return
	}
	// netlink_broadcast_deliver and netlink_overrun: a full or congested
	// queue drops the message; without NETLINK_NO_ENOBUFS the first drop
	// reports ENOBUFS and the socket stays congested until drained.
	if k.congested || k.fullLocked() {
		k.drops++
		if !k.noENOBUFS && !k.congested {
			k.congested = true
			k.q.Overrun()
		}
		return
	}
	k.q.Push(EncodeMessage(ev), 0)
}

// fullLocked reports whether the queue holds SetCapacity's datagrams.
func (k *Kernel) fullLocked() bool { return k.capacity > 0 && k.q.Len() >= k.capacity }

// passesLocked mirrors cn_filter in drivers/connector/cn_proc.c: 0 means
// deliver there, true here.
func (k *Kernel) passesLocked(ev connector.Event) bool {
	if k.legacy || !k.hasInput {
		return true
	}
	if k.inputOp == connector.OpIgnore {
		return false
	}
	if k.inputMask == connector.WhatAll {
		return true
	}
	if k.inputMask&connector.WhatNonzeroExit != 0 && ev.What == connector.WhatExit && ev.ExitStatus != 0 {
		return true
	}
	return k.inputMask&ev.What != 0
}

// EmitRaw queues one datagram with arbitrary content (nlmsghdr included)
// from the given source port id (0 is the kernel; anything else is a
// user-space sender). Neither the kernel filter nor SetCapacity applies. b
// is not copied: do not modify it afterwards.
func (k *Kernel) EmitRaw(fromPort uint32, b []byte) {
	k.mu.Lock()
	defer k.mu.Unlock()
	k.q.Push(b, fromPort)
}

// Overrun makes the next ReadBatch fail with ENOBUFS, as after the kernel
// dropped messages for a full receive buffer. Queued datagrams stay queued.
func (k *Kernel) Overrun() {
	k.mu.Lock()
	defer k.mu.Unlock()
	k.q.Overrun()
}

// SetUnprivileged makes the socket behave as one without CAP_NET_ADMIN:
// SendToSelf fails with EPERM, as netlink_sendmsg refuses a user-space
// destination on NETLINK_CONNECTOR, so connector.Conn.CanMark reports false
// for a Conn dialled afterwards and Mark is refused.
func (k *Kernel) SetUnprivileged(u bool) {
	k.mu.Lock()
	defer k.mu.Unlock()
	k.unprivileged = u
}

// SetCapacity bounds the receive queue to n datagrams (0, the default,
// means unbounded). An event emitted while the queue holds n datagrams is
// dropped and counted in MemInfo().Drops. Without NETLINK_NO_ENOBUFS (see
// SetNoENOBUFS) the first drop also makes the next ReadBatch fail with
// ENOBUFS, and every event is dropped until a read empties the queue, as
// the kernel does; with it, only the events that do not fit are dropped.
// MemInfo reports Rcvbuf as n*connector.DatagramTruesize, so that a Conn
// sizes its batches as it does on a real socket. Set it before Dial.
func (k *Kernel) SetCapacity(n int) {
	k.mu.Lock()
	defer k.mu.Unlock()
	k.capacity = n
}

// SetNoENOBUFS implements the optional connector.Socket method: it records
// NETLINK_NO_ENOBUFS (see SetCapacity).
func (k *Kernel) SetNoENOBUFS(on bool) error {
	k.mu.Lock()
	defer k.mu.Unlock()
	k.noENOBUFS = on
	return nil
}

// NoENOBUFS reports whether NETLINK_NO_ENOBUFS was set.
func (k *Kernel) NoENOBUFS() bool {
	k.mu.Lock()
	defer k.mu.Unlock()
	return k.noENOBUFS
}

// MemInfo implements the optional connector.Socket method: RmemAlloc and
// Rcvbuf charge each datagram connector.DatagramTruesize bytes (Rcvbuf is
// 1 GiB when the capacity is unbounded), Drops counts the events dropped
// for a full queue.
func (k *Kernel) MemInfo() (connector.MemInfo, error) {
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.q.Closed() {
		return connector.MemInfo{}, net.ErrClosed
	}
	rcvbuf := uint32(1 << 30)
	if k.capacity > 0 {
		rcvbuf = uint32(k.capacity * connector.DatagramTruesize)
	}
	return connector.MemInfo{
		RmemAlloc: uint32(k.q.Len() * connector.DatagramTruesize),
		Rcvbuf:    rcvbuf,
		Drops:     k.drops,
	}, nil
}

// SendToSelf implements the optional connector.Socket method: it queues
// msg as a datagram from the socket's own port, behind everything queued,
// unless the socket is unprivileged (EPERM) or its queue is full or
// congested (EAGAIN, as netlink_attachskb answers a non-blocking sender).
func (k *Kernel) SendToSelf(msg []byte) error {
	k.mu.Lock()
	defer k.mu.Unlock()
	switch {
	case k.q.Closed():
		return net.ErrClosed
	case k.unprivileged:
		return os.NewSyscallError("sendto", syscall.EPERM)
	case k.congested || k.fullLocked():
		return os.NewSyscallError("sendto", syscall.EAGAIN)
	}
	k.q.Push(append([]byte(nil), msg...), k.portID)
	return nil
}

// Requests returns the control messages received so far.
func (k *Kernel) Requests() []Request {
	k.mu.Lock()
	defer k.mu.Unlock()
	return append([]Request(nil), k.requests...)
}

// Closed reports whether Close was called.
func (k *Kernel) Closed() bool {
	k.mu.Lock()
	defer k.mu.Unlock()
	return k.q.Closed()
}

// ReadBuffer returns the last size given to SetReadBuffer (0 if none).
func (k *Kernel) ReadBuffer() int {
	k.mu.Lock()
	defer k.mu.Unlock()
	return k.q.ReadBuffer()
}

// Queued returns the number of datagrams waiting to be read.
func (k *Kernel) Queued() int {
	k.mu.Lock()
	defer k.mu.Unlock()
	return k.q.Len()
}

// Send implements connector.Socket: it parses a control message and
// answers it as cn_proc_mcast_ctl does.
func (k *Kernel) Send(payload []byte) error {
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.q.Closed() {
		return net.ErrClosed
	}
	ne := binary.NativeEndian
	if len(payload) < cnMsgLen || ne.Uint32(payload[0:]) != 1 || ne.Uint32(payload[4:]) != 1 {
		return nil // another connector: no callback
	}
	n := int(ne.Uint16(payload[16:]))
	if n > len(payload)-cnMsgLen {
		return nil // connector.c drops messages whose len exceeds the skb
	}
	data := payload[cnMsgLen : cnMsgLen+n]
	req := Request{Len: n, Seq: ne.Uint32(payload[8:]), Ack: ne.Uint32(payload[12:])}
	switch {
	case n == 4:
		req.Op, req.Events = ne.Uint32(data), connector.WhatAll
	case n == 8 && !k.legacy:
		req.Op = ne.Uint32(data)
		req.Events = connector.What(ne.Uint32(data[4:])) & connector.WhatAll
		if req.Events == 0 {
			req.Events = connector.WhatAll
		}
	default:
		return nil // the kernel returns without an acknowledgement
	}
	k.requests = append(k.requests, req)

	var ackErr uint32
	if req.Op != connector.OpListen && req.Op != connector.OpIgnore {
		ackErr = uint32(syscall.EINVAL)
	}
	if !k.legacy {
		k.hasInput, k.inputOp, k.inputMask = true, req.Op, req.Events
		if req.Op == connector.OpIgnore {
			k.inputMask = connector.WhatNone
		}
	}
	if req.Op == connector.OpListen {
		k.listens++
		if k.listen.Silent {
			return nil
		}
		if k.listens == 1 {
			for i := range k.listen.ForeignAcks {
				// Other listeners' acks reach this socket through its
				// filter like any message.
				k.emitLocked(connector.Event{What: connector.WhatNone, CPU: 1, Ack: req.Ack + 2 + uint32(i)})
			}
			for _, ev := range k.listen.Before {
				k.emitLocked(ev)
			}
		}
		if ackErr == 0 {
			ackErr = k.listen.Err
		}
	}
	k.emitLocked(connector.Event{What: connector.WhatNone, Ack: req.Ack + 1, Err: ackErr})
	return nil
}

// ReadBatch implements connector.Socket.
func (k *Kernel) ReadBatch(ds []connector.Datagram) (int, error) {
	k.mu.Lock()
	defer k.mu.Unlock()
	if err := k.q.Wait(&k.mu); err != nil {
		return 0, err
	}
	n := 0
	for ; n < len(ds); n++ {
		d, ok := k.q.Pop()
		if !ok {
			break
		}
		ds[n].N, ds[n].Truncated = d.CopyTo(ds[n].Buf)
		ds[n].Port = d.Port
	}
	if k.q.Len() == 0 {
		k.congested = false // netlink_rcv_wake
	}
	return n, nil
}

// SetReadDeadline implements connector.Socket.
func (k *Kernel) SetReadDeadline(t time.Time) error {
	k.mu.Lock()
	defer k.mu.Unlock()
	k.q.SetReadDeadline(t)
	return nil
}

// SetReadBuffer implements connector.Socket; the size is only recorded.
func (k *Kernel) SetReadBuffer(bytes int) error {
	k.mu.Lock()
	defer k.mu.Unlock()
	k.q.SetReadBuffer(bytes)
	return nil
}

// PortID implements connector.Socket.
func (k *Kernel) PortID() uint32 {
	k.mu.Lock()
	defer k.mu.Unlock()
	return k.portID
}

// Close implements connector.Socket: it unblocks ReadBatch, which then
// returns net.ErrClosed. A second Close returns net.ErrClosed.
func (k *Kernel) Close() error {
	k.mu.Lock()
	defer k.mu.Unlock()
	return k.q.Close()
}
