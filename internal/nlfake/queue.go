// Package nlfake is what the fake netlink kernels of packages
// connectortest and taskstatstest share: a fake socket's receive queue,
// the read that waits on it (for a datagram, Close, a deadline or an
// overrun), and the netlink message header both encode. A fake kernel
// guards its Queue with its own mutex, so that what it queues and its
// protocol state change together; the Queue never calls back into it.
package nlfake

import (
	"encoding/binary"
	"net"
	"os"
	"sync"
	"syscall"
	"time"
)

// Datagram is one queued datagram.
type Datagram struct {
	// B is the datagram, nlmsghdr included.
	B []byte
	// Port is the sender's netlink port id; 0 is the kernel.
	Port uint32
}

// CopyTo copies the datagram into buf as recvmsg(2) does: it returns the
// bytes copied and whether the datagram was longer than buf (MSG_TRUNC).
func (d Datagram) CopyTo(buf []byte) (n int, truncated bool) {
	return copy(buf, d.B), len(d.B) > len(buf)
}

// Queue is a fake netlink socket's receive queue and read state. Its
// methods must be called with the owner's mutex held; Wait releases it
// while it waits.
type Queue struct {
	wake chan struct{} // capacity 1: something changed
	done chan struct{} // closed by Close

	items      []Datagram
	head       int
	overrun    bool
	closed     bool
	deadline   time.Time
	readBuffer int
}

// NewQueue returns an empty, open Queue.
func NewQueue() *Queue {
	return &Queue{wake: make(chan struct{}, 1), done: make(chan struct{})}
}

// signal wakes a waiting read.
func (q *Queue) signal() {
	select {
	case q.wake <- struct{}{}:
	default:
	}
}

// Push queues a datagram from the given port. b is not copied.
func (q *Queue) Push(b []byte, port uint32) {
	q.items = append(q.items, Datagram{B: b, Port: port})
	q.signal()
}

// Len returns the number of datagrams queued.
func (q *Queue) Len() int { return len(q.items) - q.head }

// Pop takes the oldest queued datagram; false when none is queued.
func (q *Queue) Pop() (Datagram, bool) {
	if q.head == len(q.items) {
		return Datagram{}, false
	}
	d := q.items[q.head]
	q.items[q.head] = Datagram{}
	q.head++
	if q.head == len(q.items) {
		q.items, q.head = q.items[:0], 0
	}
	return d, true
}

// Overrun makes the next read fail with ENOBUFS, as after the kernel
// dropped messages for a full receive buffer. Queued datagrams stay.
func (q *Queue) Overrun() {
	q.overrun = true
	q.signal()
}

// ReadErr returns what a read must fail with before it takes anything:
// net.ErrClosed once closed, else a pending overrun's ENOBUFS (which it
// clears, as the kernel clears sk_err), else nil.
func (q *Queue) ReadErr() error {
	switch {
	case q.closed:
		return net.ErrClosed
	case q.overrun:
		q.overrun = false
		return os.NewSyscallError("recvmmsg", syscall.ENOBUFS)
	}
	return nil
}

// Wait returns when a read can go on: with nil when a datagram is
// queued, else with ReadErr's error, or os.ErrDeadlineExceeded past the
// read deadline. It waits with mu, the owner's mutex, unlocked; mu is
// locked again when it returns.
func (q *Queue) Wait(mu sync.Locker) error {
	for {
		if err := q.ReadErr(); err != nil {
			return err
		}
		if q.Len() > 0 {
			return nil
		}
		var (
			timer   *time.Timer
			timeout <-chan time.Time
		)
		if !q.deadline.IsZero() {
			d := time.Until(q.deadline)
			if d <= 0 {
				return os.ErrDeadlineExceeded
			}
			timer = time.NewTimer(d)
			timeout = timer.C
		}
		mu.Unlock()
		select {
		case <-q.wake:
		case <-q.done:
		case <-timeout:
		}
		if timer != nil {
			timer.Stop()
		}
		mu.Lock()
	}
}

// SetReadDeadline sets the deadline of Wait and wakes a waiting read.
func (q *Queue) SetReadDeadline(t time.Time) {
	q.deadline = t
	q.signal()
}

// SetReadBuffer records a receive buffer size.
func (q *Queue) SetReadBuffer(bytes int) { q.readBuffer = bytes }

// ReadBuffer returns the last size given to SetReadBuffer (0 if none).
func (q *Queue) ReadBuffer() int { return q.readBuffer }

// Close closes the queue: a waiting read returns net.ErrClosed, and so
// do later ones. A second Close returns net.ErrClosed.
func (q *Queue) Close() error {
	if q.closed {
		return net.ErrClosed
	}
	q.closed = true
	close(q.done)
	return nil
}

// Closed reports whether Close was called.
func (q *Queue) Closed() bool { return q.closed }

// HeaderLen is the size of struct nlmsghdr.
const HeaderLen = 16

// PutHeader writes a struct nlmsghdr into b[:16], in host byte order.
func PutHeader(b []byte, length uint32, typ, flags uint16, seq, port uint32) {
	ne := binary.NativeEndian
	ne.PutUint32(b[0:], length)
	ne.PutUint16(b[4:], typ)
	ne.PutUint16(b[6:], flags)
	ne.PutUint32(b[8:], seq)
	ne.PutUint32(b[12:], port)
}
