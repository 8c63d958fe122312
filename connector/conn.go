package connector

import (
	"bytes"
	crand "crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// Defaults of Config.
const (
	// DefaultReadBuffer is the receive buffer size used when
	// Config.ReadBuffer is zero.
	DefaultReadBuffer = 4 << 20
	// DefaultEvents is the event mask used when Config.Events is zero.
	DefaultEvents = WhatFork | WhatExec | WhatExit
	// DefaultAckTimeout is how long Dial waits for the kernel's
	// acknowledgement when Config.AckTimeout is zero.
	DefaultAckTimeout = 2 * time.Second

	// MaxBatch is the largest number of datagrams one Receive reads.
	MaxBatch = 64
	// DatagramSize is the size of each receive slot; a larger datagram
	// is truncated and counted as malformed. Kernel proc events take 76
	// bytes.
	DatagramSize = 512

	// DatagramTruesize is the kernel memory (the skb's truesize, charged
	// to the receive buffer) that Conn assumes one queued datagram takes
	// at most: 832 bytes were measured on Linux 6.18 (x86-64) for a proc
	// event and for a marker. With Config.NoENOBUFS, Conn reads at most
	// Rcvbuf/DatagramTruesize - 1 datagrams at a time, so that a full
	// queue always yields a full batch (see Config.NoENOBUFS). A fake
	// kernel that reports SO_MEMINFO charges each datagram this much.
	DatagramTruesize = 1024
)

// Config configures a Conn. A nil *Config means all defaults.
type Config struct {
	// ReadBuffer is the socket receive buffer size in bytes, set with
	// SO_RCVBUFFORCE (which needs CAP_NET_ADMIN), falling back to
	// SO_RCVBUF (capped by net.core.rmem_max). Zero means
	// DefaultReadBuffer (4 MiB); a negative value leaves the system
	// default.
	ReadBuffer int

	// Events is the set of event types to receive. Zero means
	// DefaultEvents (fork, exec, exit). Bits outside WhatAll are an error.
	// The set is sent to the kernel (struct proc_input, Linux >= 6.6) and
	// applied again in user space, so older kernels yield the same stream.
	// WhatNonzeroExit without WhatExit selects exits with a non-zero wait
	// status only.
	Events What

	// AckTimeout bounds the wait for the kernel's acknowledgement of the
	// subscription. Zero means DefaultAckTimeout (2 s).
	AckTimeout time.Duration

	// NoENOBUFS sets NETLINK_NO_ENOBUFS on the socket. By default, when
	// the receive buffer is full the kernel reports ENOBUFS once and then
	// drops every event until a read empties the queue: the listener is
	// deaf for as long as the backlog lasts, which under a sustained storm
	// may be for good. With NoENOBUFS the kernel drops only the events
	// that do not fit and keeps delivering the others. Receive then finds
	// drops by reading the socket's drop counter (SO_MEMINFO) and returns
	// them as a *DropError, which matches ErrOverrun, together with the
	// events of the batch; Stats.Dropped counts them. False (the zero
	// value) keeps the ENOBUFS behaviour. The Socket must offer
	// SetNoENOBUFS and MemInfo, else NewConn fails with ErrNotSupported.
	NoENOBUFS bool

	// Coalesce chooses between CPU and latency. Zero, the default, is
	// latency first: Receive reads as soon as an event is queued, and
	// waits before a read (up to 5 ms) only under load (reads of 4
	// datagrams or more at 5,000 a second or more). A positive value lets
	// every read that returned events but not a full batch be followed by
	// a wait of Coalesce before the next read, whatever the rate: the
	// events of the wait are read with one wake-up and one system call
	// instead of one each, so the reader's CPU per event falls with the
	// batch, and each event may be delivered up to Coalesce late (an event
	// after a quiet spell longer than Coalesce is read at once). The wait
	// is capped so that a storm of 50,000 events a second fills at most a
	// quarter of the receive buffer meanwhile (20 ms with the default 4
	// MiB), and below 500 µs it is none. A negative value never waits,
	// even under load.
	//
	// With a positive Coalesce (and a wait left after the cap) the socket
	// is read in blocking mode where it can send to itself (see CanMark;
	// it needs CAP_NET_ADMIN): it leaves the runtime's poller and each read
	// blocks in recvmmsg(2) on the reading thread, woken by a datagram
	// the socket sends itself for Close and SetReadDeadline. In the
	// poller, every datagram that arrives during a wait would wake the
	// thread that sleeps in epoll_wait for the runtime's timers, to find
	// nobody waiting (measured during a 20,000-fork storm with 100 ms
	// waits: one wake-up per datagram, a quarter of the reader's CPU in
	// those context switches), which defeats the wait. BenchmarkReaderCPU
	// (three 20,000-fork storms at load 35 to 45, about 1,300 events a
	// second, medians of CPU relative to forkstat -q's): 20 ms waits cost
	// 0.39x in blocking mode against 0.73x in the poller, 5 ms waits 0.97x
	// against 1.16x (no waits: 0.98x). The default (zero) stays in the
	// poller, where a read that waits costs no thread (blocking reads
	// without waits: 1.37x); so does a Conn that cannot send to itself.
	Coalesce time.Duration

	// reader overrides the read strategy; the benchmarks of the variants
	// set it.
	reader readStrategy
}

// readStrategy is how Receive reads: the socket's wait (the runtime's
// poller or a blocking system call) and the coalescing under load.
type readStrategy struct {
	set      bool
	blocking bool          // block in recvmmsg (needs CanMark to be woken)
	coalesce time.Duration // under load, wait this long before a read
	minBatch int           // load: a read of at least minBatch datagrams
	minRate  float64       // that came at minRate datagrams/s or more
}

// A Datagram is one receive slot of a Socket batch read.
type Datagram struct {
	// Buf is the slot's storage, provided by the Conn (never empty); the
	// Socket writes the datagram to Buf[:N].
	Buf []byte
	// N is the number of bytes written to Buf.
	N int
	// Port is the sender's netlink port id; 0 is the kernel.
	Port uint32
	// Truncated reports that the datagram was larger than Buf
	// (MSG_TRUNC).
	Truncated bool
}

// Socket is the transport under a Conn: a netlink socket bound to the proc
// connector's multicast group. The real one is created by Dial; package
// connectortest provides a fake kernel. A Conn calls ReadBatch from one
// goroutine at a time, and Send, Close and the setters from any goroutine.
//
// A Socket may also offer these methods, which Conn finds by a type
// assertion; without them the feature they serve is unavailable:
//
//   - SendToSelf(msg []byte) error queues msg, a whole netlink message,
//     on the socket's own receive queue, as sendto(2) to its own port id
//     does, without blocking: a full queue is an error matching
//     syscall.EAGAIN, a caller without CAP_NET_ADMIN gets syscall.EPERM
//     (Mark, CanMark).
//   - MemInfo() (MemInfo, error) reads SO_MEMINFO (Conn.MemInfo,
//     Config.NoENOBUFS).
//   - SetNoENOBUFS(on bool) error sets NETLINK_NO_ENOBUFS
//     (Config.NoENOBUFS).
type Socket interface {
	// Send sends a connector message to the kernel. payload is a struct
	// cn_msg and its data; Send adds the nlmsghdr (type NLMSG_DONE).
	Send(payload []byte) error
	// ReadBatch blocks until at least one datagram is available (or the
	// read deadline passes, or the socket is closed), then fills up to
	// len(ds) slots and returns how many it filled. An overrun is reported
	// as an error matching syscall.ENOBUFS, after which the socket stays
	// usable. Close makes a blocked ReadBatch return an error.
	ReadBatch(ds []Datagram) (int, error)
	// SetReadDeadline sets the deadline of ReadBatch; the zero time
	// means none. A ReadBatch past its deadline returns an error matching
	// os.ErrDeadlineExceeded.
	SetReadDeadline(t time.Time) error
	// SetReadBuffer sets the receive buffer size in bytes.
	SetReadBuffer(bytes int) error
	// PortID returns the socket's netlink port id (nl_pid).
	PortID() uint32
	// Close closes the socket. It is called once.
	Close() error
}

// MemInfo is the kernel's per-socket memory accounting (SO_MEMINFO, the
// SK_MEMINFO_* values, in bytes except Drops).
type MemInfo struct {
	// RmemAlloc is the memory held by queued received messages.
	RmemAlloc uint32
	// Rcvbuf is the receive buffer limit (twice the requested size).
	Rcvbuf uint32
	// WmemAlloc is the memory held by messages being sent.
	WmemAlloc uint32
	// Sndbuf is the send buffer limit.
	Sndbuf uint32
	// FwdAlloc is memory reserved ahead.
	FwdAlloc uint32
	// WmemQueued is the memory of queued sends.
	WmemQueued uint32
	// Optmem is the memory of socket options.
	Optmem uint32
	// Backlog is the memory of the socket backlog.
	Backlog uint32
	// Drops counts the messages the kernel dropped for this socket; for
	// a netlink socket every message lost to a full buffer counts once.
	Drops uint32
}

// Stats are a Conn's counters since it was created.
type Stats struct {
	// Datagrams counts datagrams read from the socket.
	Datagrams uint64
	// Received counts events accepted: returned by Receive or queued for
	// it.
	Received uint64
	// Acks counts WhatNone acknowledgements from the kernel, this Conn's
	// and other listeners'. They are never returned.
	Acks uint64
	// Spoofed counts messages that did not come from the kernel (non-zero
	// source port id or nlmsghdr pid). They are dropped.
	Spoofed uint64
	// Foreign counts kernel messages of another connector or of another
	// netlink message type. They are dropped.
	Foreign uint64
	// Malformed counts truncated or inconsistent messages and datagrams.
	// They are dropped.
	Malformed uint64
	// Filtered counts events outside Config.Events that reached user
	// space (kernels without proc_input, or during subscription). They are
	// dropped.
	Filtered uint64
	// Overruns counts ENOBUFS reports: episodes in which the kernel
	// dropped events. MemInfo().Drops counts the events themselves.
	Overruns uint64
	// Dropped counts the messages the kernel dropped for a full receive
	// buffer, as Receive found them in the socket's drop counter; only
	// with Config.NoENOBUFS (else see Overruns and MemInfo().Drops).
	Dropped uint64
	// Marks counts the markers of Mark that Receive returned. They are
	// not counted in Received.
	Marks uint64
}

// Conn is a subscription to the proc connector. Receive may be called
// from one goroutine at a time (concurrent calls are serialised); Close,
// Stats, MemInfo, PortID and SetReadDeadline may be called from any
// goroutine.
type Conn struct {
	sock       Socket
	mask       What
	ackTimeout time.Duration

	// Markers (Mark): canMark is fixed by the probe in subscribe; nonce
	// authenticates our markers among datagrams from our own port.
	canMark bool
	nonce   [markNonceLen]byte

	// Drop detection (Config.NoENOBUFS); batch bounds every read.
	noENOBUFS bool
	batch     int

	strategy  readStrategy
	now       func() time.Time // time.Now; tests replace it
	winStart  time.Time        // the rate window: since when
	winCount  int              // datagrams read in it
	loaded    bool             // the last full window came at minRate or more
	underLoad bool             // the next read coalesces
	coalesced uint64           // coalescing waits, for tests

	rmu            sync.Mutex // serialises ReadBatch and the fields below
	slots          []Datagram
	pending        []Event // events received during the subscription
	pendingOverrun bool
	pendingDrops   uint64 // drops found during the subscription
	wantAck        uint32 // ack number of our LISTEN's acknowledgement
	ackSeen        bool
	ackErr         uint32
	probing        bool   // the subscription's probe marker is awaited
	drops          uint32 // the kernel's drop counter when last read
	lastFull       bool   // the previous read returned a full batch

	smu sync.Mutex // serialises Send
	seq uint32

	tmu  sync.Mutex // guards tree
	tree *TreeFilter

	closed atomic.Bool

	datagrams, received, acks, spoofed, foreign, malformed, filtered,
	overruns, dropped, marks atomic.Uint64
}

// NewConn subscribes to the proc connector over s and returns a Conn that
// owns s. It sets the read buffer (and NETLINK_NO_ENOBUFS with
// Config.NoENOBUFS), sends PROC_CN_MCAST_LISTEN and waits up to
// Config.AckTimeout for the kernel's acknowledgement, keeping the events
// that arrive before it for the first Receive. Meanwhile it probes Mark:
// it queues one marker to itself and consumes it (see CanMark). On error
// it closes s. Dial is NewConn over a real socket.
func NewConn(s Socket, cfg *Config) (*Conn, error) {
	var c Config
	if cfg != nil {
		c = *cfg
	}
	if c.Events&^WhatAll != 0 {
		_ = s.Close()
		return nil, &OpError{Op: "dial", Detail: fmt.Sprintf("Config.Events has unknown bits %#x", uint32(c.Events&^WhatAll))}
	}
	if c.Events == 0 {
		c.Events = DefaultEvents
	}
	if c.ReadBuffer == 0 {
		c.ReadBuffer = DefaultReadBuffer
	}
	if c.AckTimeout <= 0 {
		c.AckTimeout = DefaultAckTimeout
	}
	conn := &Conn{
		sock:       s,
		mask:       c.Events,
		ackTimeout: c.AckTimeout,
		slots:      make([]Datagram, MaxBatch),
		noENOBUFS:  c.NoENOBUFS,
		batch:      MaxBatch,
		now:        time.Now,
	}
	_, _ = crand.Read(conn.nonce[:]) // never fails (crypto/rand since Go 1.24)
	buf := make([]byte, MaxBatch*DatagramSize)
	for i := range conn.slots {
		conn.slots[i].Buf = buf[i*DatagramSize : (i+1)*DatagramSize : (i+1)*DatagramSize]
	}
	if c.ReadBuffer > 0 {
		if err := s.SetReadBuffer(c.ReadBuffer); err != nil {
			_ = s.Close()
			return nil, &OpError{Op: "dial", Err: err, Detail: "setting the receive buffer"}
		}
	}
	if c.NoENOBUFS {
		if err := conn.setNoENOBUFS(); err != nil {
			_ = s.Close()
			return nil, err
		}
	}
	if err := conn.subscribe(rand.Uint32()); err != nil {
		_ = s.Close()
		return nil, err
	}
	conn.strategy = defaultStrategy()
	switch {
	case c.Coalesce > 0:
		// Blocking reads, if the wait survives the cap below (see
		// Config.Coalesce).
		conn.strategy = readStrategy{coalesce: c.Coalesce, minBatch: 1, blocking: true}
		conn.loaded = true // at any rate (minRate 0)
	case c.Coalesce < 0:
		conn.strategy = readStrategy{}
	}
	if c.reader.set {
		conn.strategy = c.reader
	}
	if conn.strategy.coalesce > 0 {
		// Wait no longer than a quarter of the queue takes to fill at a
		// storm's rate (50,000 events/s): else the wait itself would
		// overrun it. Below 500 µs it is not worth a timer.
		var fits time.Duration
		if mi, err := conn.MemInfo(); err == nil {
			fits = time.Duration(mi.Rcvbuf/DatagramTruesize) * time.Second / (4 * 50000)
		}
		conn.strategy.coalesce = min(conn.strategy.coalesce, fits)
		if conn.strategy.coalesce < 500*time.Microsecond {
			conn.strategy.coalesce = 0
		}
	}
	if c.Coalesce > 0 && !c.reader.set && conn.strategy.coalesce == 0 {
		// No wait left: blocking reads alone cost more than the poller
		// (BenchmarkReaderCPU).
		conn.strategy.blocking = false
	}
	if bs, ok := s.(interface{ setBlocking() error }); ok && conn.strategy.blocking && conn.canMark {
		if err := bs.setBlocking(); err != nil {
			_ = s.Close()
			return nil, &OpError{Op: "dial", Err: err, Detail: "switching to blocking reads"}
		}
	}
	return conn, nil
}

// rateWindow is the shortest window over which Receive measures the event
// rate for coalescing.
const rateWindow = 10 * time.Millisecond

// defaultStrategy returns the read strategy of a Conn: the cheapest that
// BenchmarkReaderCPU measured (five 20,000-child storms beside forkstat -q
// per run, medians of CPU relative to forkstat's on the same storm, on the
// 2-vCPU VM): waiting in the runtime's poller, with up to 5 ms of
// coalescing under load. At load average 25 to 33: 0.40x, against 0.57x
// without coalescing, 0.50x with 1 ms, 0.44x with 2 ms, and 0.70x for
// blocking reads on the reading thread (0.44x with 5 ms of coalescing).
// At load average 5 to 7 (rate measured over 10 ms windows): 0.64x,
// against 0.73x, 0.75x, 0.58x, 0.93x and 0.62x; 2 ms and 5 ms differ there
// by less than the spread between storms (±0.1x). At 1,000 forks a second
// no read waits: p50 46 µs, p99 871 µs (BenchmarkReaderLatency, load 1.7).
func defaultStrategy() readStrategy {
	return readStrategy{coalesce: 5 * time.Millisecond, minBatch: 4, minRate: 5000}
}

// setNoENOBUFS sets NETLINK_NO_ENOBUFS and bounds the batch by the queue's
// capacity (see Config.NoENOBUFS and Receive).
func (c *Conn) setNoENOBUFS() error {
	ns, ok := c.sock.(interface{ SetNoENOBUFS(bool) error })
	if _, mi := c.sock.(interface{ MemInfo() (MemInfo, error) }); !ok || !mi {
		return &OpError{Op: "dial", Kind: ErrNotSupported, Detail: "Config.NoENOBUFS: the socket offers no SetNoENOBUFS or MemInfo"}
	}
	if err := ns.SetNoENOBUFS(true); err != nil {
		return &OpError{Op: "dial", Err: err, Detail: "setting NETLINK_NO_ENOBUFS"}
	}
	mi, err := c.MemInfo()
	if err != nil {
		return err
	}
	c.batch = max(1, min(MaxBatch, int(mi.Rcvbuf/DatagramTruesize)-1))
	c.drops = mi.Drops
	return nil
}

// subscribe sends LISTEN with the given ack number and waits for its
// acknowledgement, then installs the kernel-side filter.
func (c *Conn) subscribe(ack uint32) error {
	c.rmu.Lock()
	defer c.rmu.Unlock()
	c.wantAck = ack + 1
	if err := c.send(OpListen, 0, ack); err != nil {
		return sendError("listen", err)
	}
	// The probe marker: EPERM means Mark cannot work on this socket;
	// EAGAIN (a queue filled already) means it can, but the marker is
	// not awaited.
	err := c.sendMark(0)
	c.canMark = err == nil || errors.Is(err, syscall.EAGAIN)
	c.probing = err == nil
	if err := c.sock.SetReadDeadline(time.Now().Add(c.ackTimeout)); err != nil {
		return &OpError{Op: "listen", Err: err}
	}
	for !c.ackSeen || c.probing {
		n, err := c.sock.ReadBatch(c.slots[:c.batch])
		c.pending = c.process(c.slots[:n], c.pending)
		switch {
		case err == nil:
		case errors.Is(err, syscall.ENOBUFS):
			c.overruns.Add(1)
			c.pendingOverrun = true
		case errors.Is(err, os.ErrDeadlineExceeded) && c.lostToOverrun():
			// The queue overflowed (a small buffer on a busy host): the
			// acknowledgement, or the probe marker, was dropped with other
			// messages. Events reached the socket, so the connector works;
			// the drop is reported by the first Receive.
			c.ackSeen, c.probing = true, false
		case errors.Is(err, os.ErrDeadlineExceeded) && c.ackSeen:
			return &OpError{Op: "listen", Err: err, Detail: fmt.Sprintf(
				"the socket's own probe marker did not come back within %v", c.ackTimeout)}
		case errors.Is(err, os.ErrDeadlineExceeded):
			return &OpError{Op: "listen", Kind: ErrNotSupported, Detail: fmt.Sprintf(
				"no acknowledgement of PROC_CN_MCAST_LISTEN from the kernel within %v "+
					"(kernel without CONFIG_PROC_EVENTS, or not in the initial namespaces)", c.ackTimeout)}
		default:
			return &OpError{Op: "listen", Err: err}
		}
	}
	if err := c.sock.SetReadDeadline(time.Time{}); err != nil {
		return &OpError{Op: "listen", Err: err}
	}
	if c.noENOBUFS {
		if err := c.checkDrops(); err != nil {
			var de *DropError
			if !errors.As(err, &de) {
				return err
			}
			c.pendingDrops = de.Dropped
		}
	}
	if c.ackErr != 0 {
		errno := syscall.Errno(c.ackErr)
		kind := ErrNotSupported
		if errno == syscall.EPERM || errno == syscall.EACCES {
			kind = ErrPermission
		}
		return &OpError{Op: "listen", Kind: kind, Err: errno, Detail: "the kernel refused PROC_CN_MCAST_LISTEN"}
	}
	if c.mask&WhatAll != WhatAll {
		// Narrow the kernel-side filter. Kernels before 6.6 ignore this
		// 8-byte message; kernels since then drop its acknowledgement
		// (WhatNone is outside any narrower mask), so none is awaited.
		if err := c.send(OpListen, c.mask, ack+2); err != nil {
			return sendError("listen", err)
		}
	}
	return nil
}

// lostToOverrun reports whether the socket dropped messages since it was
// set up (an ENOBUFS, or with NoENOBUFS the kernel's drop counter).
func (c *Conn) lostToOverrun() bool {
	if c.pendingOverrun {
		return true
	}
	if !c.noENOBUFS {
		return false
	}
	mi, err := c.MemInfo()
	return err == nil && mi.Drops != c.drops
}

func sendError(op string, err error) error {
	if errors.Is(err, syscall.EPERM) || errors.Is(err, syscall.EACCES) {
		return &OpError{Op: op, Kind: ErrPermission, Err: err}
	}
	return &OpError{Op: op, Err: err}
}

// send sends a proc connector control message: a 4-byte enum
// proc_cn_mcast_op when events is zero, else a struct proc_input.
func (c *Conn) send(op uint32, events What, ack uint32) error {
	var b [CnMsgLen + 8]byte
	n := 4
	if events != 0 {
		n = 8
	}
	c.smu.Lock()
	defer c.smu.Unlock()
	c.seq++
	ne := binary.NativeEndian
	ne.PutUint32(b[0:], IdxProc)
	ne.PutUint32(b[4:], ValProc)
	ne.PutUint32(b[8:], c.seq)
	ne.PutUint32(b[12:], ack)
	ne.PutUint16(b[16:], uint16(n))
	ne.PutUint32(b[CnMsgLen:], op)
	ne.PutUint32(b[CnMsgLen+4:], uint32(events))
	return c.sock.Send(b[:CnMsgLen+n])
}

// accepts reports whether the user-space filter passes ev; it mirrors the
// kernel's cn_filter.
func (w What) accepts(ev *Event) bool {
	if w&ev.What != 0 {
		return true
	}
	return ev.What == WhatExit && w&WhatNonzeroExit != 0 && ev.ExitStatus != 0
}

const (
	nlmsgHdrLen = 16
	nlmsgDone   = 3
)

// process decodes the datagrams ds, appends the accepted events to dst and
// records acknowledgements. It must be called with rmu held.
func (c *Conn) process(ds []Datagram, dst []Event) []Event {
	ne := binary.NativeEndian
	var ev Event
	for i := range ds {
		d := &ds[i]
		c.datagrams.Add(1)
		if d.Port != 0 {
			if d.Port == c.sock.PortID() && d.N == 1 && !d.Truncated {
				c.datagrams.Add(^uint64(0)) // a wake-up of a blocked read: not counted
				continue
			}
			if d.Port == c.sock.PortID() && !d.Truncated && d.N >= 0 && d.N <= len(d.Buf) {
				if token, ok := c.parseMark(d.Buf[:d.N]); ok {
					if c.probing {
						c.probing = false // the subscription's own probe
						continue
					}
					c.marks.Add(1)
					dst = append(dst, Event{What: WhatMark, Ack: token})
					continue
				}
			}
			c.spoofed.Add(1)
			continue
		}
		if d.Truncated || d.N > len(d.Buf) || d.N < 0 {
			c.malformed.Add(1)
			continue
		}
		b := d.Buf[:d.N]
		if len(b) < nlmsgHdrLen {
			c.malformed.Add(1)
			continue
		}
		for len(b) >= nlmsgHdrLen {
			l := int(ne.Uint32(b[0:]))
			if l < nlmsgHdrLen || l > len(b) {
				c.malformed.Add(1)
				break
			}
			msg := b[:l]
			if al := (l + 3) &^ 3; al < len(b) {
				b = b[al:]
			} else {
				b = nil
			}
			if ne.Uint16(msg[4:]) != nlmsgDone {
				c.foreign.Add(1)
				continue
			}
			if ne.Uint32(msg[12:]) != 0 {
				c.spoofed.Add(1)
				continue
			}
			if _, reason := decode(msg[nlmsgHdrLen:], &ev); reason != nil {
				if reason == ErrForeign {
					c.foreign.Add(1)
				} else {
					c.malformed.Add(1)
				}
				continue
			}
			if ev.What == WhatNone {
				c.acks.Add(1)
				if !c.ackSeen && ev.Ack == c.wantAck {
					c.ackSeen = true
					c.ackErr = ev.Err
				}
				continue
			}
			if !c.mask.accepts(&ev) {
				c.filtered.Add(1)
				continue
			}
			c.received.Add(1)
			dst = append(dst, ev)
		}
	}
	return dst
}

// Marker wire format: a netlink message that looks like a proc connector
// message (so that filters which pass what they do not know pass it) with
// the type WhatMark, the token in cn_msg.ack and a per-Conn random nonce
// after the proc_event header.
const (
	markNonceLen = 16
	markLen      = nlmsgHdrLen + CnMsgLen + ProcEventHeaderLen + markNonceLen
)

// sendMark queues a marker carrying token on the socket's own receive
// queue.
func (c *Conn) sendMark(token uint32) error {
	ss, ok := c.sock.(interface{ SendToSelf([]byte) error })
	if !ok {
		return &OpError{Op: "mark", Kind: ErrPermission, Err: errors.ErrUnsupported, Detail: "the socket cannot send to itself"}
	}
	var b [markLen]byte
	ne := binary.NativeEndian
	port := c.sock.PortID()
	ne.PutUint32(b[0:], markLen)
	ne.PutUint16(b[4:], nlmsgDone)
	ne.PutUint32(b[12:], port)
	cn := b[nlmsgHdrLen:]
	ne.PutUint32(cn[0:], IdxProc)
	ne.PutUint32(cn[4:], ValProc)
	ne.PutUint32(cn[12:], token)
	ne.PutUint16(cn[16:], ProcEventHeaderLen+markNonceLen)
	ne.PutUint32(cn[CnMsgLen:], uint32(WhatMark))
	copy(cn[CnMsgLen+ProcEventHeaderLen:], c.nonce[:])
	return ss.SendToSelf(b[:])
}

// parseMark returns the token of b if b is one of this Conn's markers.
func (c *Conn) parseMark(b []byte) (token uint32, ok bool) {
	ne := binary.NativeEndian
	if len(b) != markLen || ne.Uint32(b[0:]) != markLen || ne.Uint16(b[4:]) != nlmsgDone ||
		ne.Uint32(b[12:]) != c.sock.PortID() {
		return 0, false
	}
	cn := b[nlmsgHdrLen:]
	if ne.Uint32(cn[0:]) != IdxProc || ne.Uint32(cn[4:]) != ValProc ||
		ne.Uint16(cn[16:]) != ProcEventHeaderLen+markNonceLen ||
		What(ne.Uint32(cn[CnMsgLen:])) != WhatMark ||
		!bytes.Equal(cn[CnMsgLen+ProcEventHeaderLen:], c.nonce[:]) {
		return 0, false
	}
	return ne.Uint32(cn[12:]), true
}

// Mark queues a marker carrying token behind everything already in the
// socket's receive queue: it is sent to the socket's own netlink port, so
// the kernel appends it to the same queue as the events it multicasts.
// Receive returns it, in order, as an Event with What WhatMark and Ack
// equal to token. It is an exact barrier: every event the kernel queued
// for this socket before Mark was called is returned before the marker.
// Fork and exec events are queued before the fork or execve returns, so a
// process seen in /proc, or an exec seen there, has its event ahead of a
// later marker. An exit event is not so bound: do_exit notifies the parent
// (the process becomes a zombie, wait returns) before it queues the exit
// event (exit_notify precedes proc_exit_connector), so for a process just
// seen dead the exit event may follow the marker by a few microseconds.
// Events the kernel dropped (see ErrOverrun) are not returned, so a
// barrier says nothing about them.
//
// Markers carry a random per-Conn nonce; a datagram from the socket's own
// port without it is dropped and counted in Stats.Spoofed. Markers are
// returned whatever Config.Events says and are counted in Stats.Marks.
//
// Sending to one's own port needs CAP_NET_ADMIN on NETLINK_CONNECTOR
// (netlink_sendmsg refuses a user-space destination otherwise): without
// it, CanMark reports false and Mark returns an error matching
// ErrPermission. When the receive queue is full Mark does not block: it
// returns an error matching ErrQueueFull (the kernel is dropping events
// then; call Mark again after Receive has drained some). After Close it
// returns an error matching ErrClosed. Mark may be called from any
// goroutine.
func (c *Conn) Mark(token uint32) error {
	if c.closed.Load() {
		return &OpError{Op: "mark", Kind: ErrClosed}
	}
	if !c.canMark {
		return &OpError{Op: "mark", Kind: ErrPermission, Detail: "this socket cannot send to itself (sending to a netlink port needs CAP_NET_ADMIN)"}
	}
	err := c.sendMark(token)
	switch {
	case err == nil:
		return nil
	case errors.Is(err, syscall.EAGAIN):
		return &OpError{Op: "mark", Kind: ErrQueueFull, Err: err}
	case errors.Is(err, syscall.EPERM), errors.Is(err, syscall.EACCES):
		return &OpError{Op: "mark", Kind: ErrPermission, Err: err}
	case c.closed.Load() || errors.Is(err, net.ErrClosed) || errors.Is(err, os.ErrClosed):
		return &OpError{Op: "mark", Kind: ErrClosed}
	}
	return &OpError{Op: "mark", Err: err}
}

// CanMark reports whether Mark can work on this Conn. NewConn finds out by
// queueing one marker to itself during the subscription: it is false
// where the kernel refused it (no CAP_NET_ADMIN) or the Socket cannot send
// to itself.
func (c *Conn) CanMark() bool { return c.canMark }

// A DropError reports that the kernel dropped messages for this socket
// because its receive buffer was full (Config.NoENOBUFS). It matches
// ErrOverrun with errors.Is.
type DropError struct {
	// Dropped is the number of messages dropped since the previous report
	// (the growth of the socket's SK_MEMINFO_DROPS counter).
	Dropped uint64
}

// Error implements error.
func (e *DropError) Error() string {
	return fmt.Sprintf("connector: receive buffer full, the kernel dropped %d messages", e.Dropped)
}

// Is reports whether target is ErrOverrun.
func (e *DropError) Is(target error) bool { return target == ErrOverrun }

// checkDrops reads the kernel's drop counter and returns a *DropError
// when it grew since the last reading. It must be called with rmu held
// (or before the Conn is shared).
func (c *Conn) checkDrops() error {
	mi, err := c.MemInfo()
	if err != nil {
		return &OpError{Op: "receive", Err: err, Detail: "reading the drop counter"}
	}
	d := uint64(mi.Drops - c.drops) // the kernel's counter is 32 bits and wraps
	c.drops = mi.Drops
	if d == 0 {
		return nil
	}
	c.dropped.Add(d)
	return &DropError{Dropped: d}
}

// Receive appends events to dst and returns the extended slice. It blocks
// until at least one event passes the filter, then returns the events of
// one batch read: at most MaxBatch datagrams, and no more than the spare
// capacity of dst (at least one), so a dst with spare capacity is never
// reallocated and Receive does not allocate. Reuse the slice:
//
//	buf := make([]connector.Event, 0, connector.MaxBatch)
//	for {
//		evs, err := c.Receive(buf[:0])
//		...
//	}
//
// Under load Receive coalesces: while datagrams come at 5,000 a second or
// faster (measured over windows of 10 ms or more), after a read that
// returned 4 or more, but not a full batch, it waits up to 5 ms before the
// next read, so that one wake-up reads many events. After a full batch it
// reads again at once: the queue holds more, and a backlog drains at full
// speed. At lower rates (the 1,000 forks a second of
// a busy build, say) no event waits.
// The wait is shortened to what a quarter of the receive buffer holds at
// 50,000 events/s (5 ms needs about 1 MiB; the default buffer is 4 MiB),
// and is off below 500 µs (buffers under about 100 KiB).
//
// With a positive Config.Coalesce every read that returned events but not
// a full batch is followed by the wait, at any rate, and the reads block
// in recvmmsg(2) on the calling goroutine's thread, outside the runtime's
// poller, where the socket can send to itself (CanMark): datagrams that
// arrive during a wait then wake no thread. Close and SetReadDeadline
// wake a blocked Receive with a datagram the socket sends itself, which
// Receive skips. Otherwise (the default, and without CanMark) Receive
// waits in the runtime's poller.
//
// When the kernel reports an overrun Receive returns the events it has and
// an error matching ErrOverrun (with Config.NoENOBUFS, a *DropError with
// the number of messages lost); the Conn stays usable and later calls go
// on with the events that followed. Markers queued by Mark are returned
// in order among the events (What WhatMark). After Close, or when Close is
// called during the call, it returns an error matching ErrClosed
// (net.ErrClosed). Past a deadline set with SetReadDeadline it returns an
// error matching os.ErrDeadlineExceeded.
func (c *Conn) Receive(dst []Event) ([]Event, error) {
	c.rmu.Lock()
	defer c.rmu.Unlock()
	if c.closed.Load() {
		return dst, &OpError{Op: "receive", Kind: ErrClosed}
	}
	if len(c.pending) > 0 || c.pendingOverrun || c.pendingDrops > 0 {
		k := min(len(c.pending), max(cap(dst)-len(dst), 1))
		dst = append(dst, c.pending[:k]...)
		c.pending = c.pending[k:]
		if len(c.pending) == 0 {
			c.pending = nil
		}
		if c.pendingOverrun {
			c.pendingOverrun = false
			return dst, ErrOverrun
		}
		if d := c.pendingDrops; d > 0 {
			c.pendingDrops = 0
			return dst, &DropError{Dropped: d}
		}
		return dst, nil
	}
	for {
		n := min(max(cap(dst)-len(dst), 1), c.batch)
		if c.underLoad {
			// Let more events queue up, so that one wake-up reads many.
			c.coalesced++
			time.Sleep(c.strategy.coalesce)
		}
		got, err := c.sock.ReadBatch(c.slots[:n])
		got = max(0, min(got, n))
		if c.strategy.coalesce > 0 {
			// Load is a read of minBatch or more while the rate over the
			// last window of 10 ms or more was minRate or more. The
			// window counts arrivals over wall time, the waits included,
			// so that neither the waits' own batches nor the backlog of a
			// reader that was not scheduled for a while pass for load.
			now := c.now()
			c.winCount += got
			if d := now.Sub(c.winStart); d >= rateWindow {
				c.loaded = float64(c.winCount) >= c.strategy.minRate*d.Seconds()
				c.winStart, c.winCount = now, 0
			}
			// A full batch means more is queued already: the next read
			// follows at once, so a backlog (a reader that catches up
			// after a stall) drains at full speed.
			c.underLoad = c.loaded && got >= c.strategy.minBatch && got < n
		}
		before := len(dst)
		dst = c.process(c.slots[:got], dst)
		if err != nil {
			return dst, c.receiveError(err)
		}
		if c.noENOBUFS {
			// The kernel drops a message only while the queue is full
			// (its memory would pass the receive buffer, and the queue is
			// not empty). Datagrams leave the queue only through our
			// reads, and a read takes at most c.batch of them, fewer than
			// a full queue holds (Rcvbuf/DatagramTruesize - 1). So the
			// read during which, or the first read after which, a message
			// was dropped finds at least n datagrams and returns a full
			// batch; reading the counter after every full batch sees
			// every drop. The read after the last full batch is checked
			// too, as a margin for datagrams larger than assumed. A
			// listener that keeps up (batches not full) pays no extra
			// system call. TestIntegrationNoENOBUFSStorm checks that the
			// drops reported add up to the kernel's counter.
			full := got == n
			check := full || c.lastFull
			c.lastFull = full
			if check {
				if err := c.checkDrops(); err != nil {
					return dst, err
				}
			}
		}
		if len(dst) > before {
			return dst, nil
		}
	}
}

func (c *Conn) receiveError(err error) error {
	switch {
	case errors.Is(err, syscall.ENOBUFS):
		c.overruns.Add(1)
		return ErrOverrun
	case c.closed.Load() || errors.Is(err, net.ErrClosed) || errors.Is(err, os.ErrClosed):
		return &OpError{Op: "receive", Kind: ErrClosed}
	}
	return &OpError{Op: "receive", Err: err}
}

// Stats returns a snapshot of the Conn's counters.
func (c *Conn) Stats() Stats {
	return Stats{
		Datagrams: c.datagrams.Load(),
		Received:  c.received.Load(),
		Acks:      c.acks.Load(),
		Spoofed:   c.spoofed.Load(),
		Foreign:   c.foreign.Load(),
		Malformed: c.malformed.Load(),
		Filtered:  c.filtered.Load(),
		Overruns:  c.overruns.Load(),
		Dropped:   c.dropped.Load(),
		Marks:     c.marks.Load(),
	}
}

// Events returns the event mask in force (Config.Events or its default).
func (c *Conn) Events() What { return c.mask }

// PortID returns the socket's netlink port id (nl_pid).
func (c *Conn) PortID() uint32 { return c.sock.PortID() }

// SetReadDeadline sets a deadline for Receive; the zero time means none.
func (c *Conn) SetReadDeadline(t time.Time) error { return c.sock.SetReadDeadline(t) }

// MemInfo returns the kernel's memory accounting and drop counter for the
// socket (SO_MEMINFO). Its error matches ErrNotSupported when the Socket
// cannot tell.
func (c *Conn) MemInfo() (MemInfo, error) {
	if m, ok := c.sock.(interface{ MemInfo() (MemInfo, error) }); ok {
		return m.MemInfo()
	}
	return MemInfo{}, &OpError{Op: "meminfo", Kind: ErrNotSupported, Detail: "the socket does not report SO_MEMINFO"}
}

// Close unsubscribes (PROC_CN_MCAST_IGNORE, best effort: its failure is
// not reported) and closes the socket, which makes a blocked Receive
// return ErrClosed. Close is idempotent: later calls return nil.
func (c *Conn) Close() error {
	if !c.closed.CompareAndSwap(false, true) {
		return nil
	}
	_ = c.send(OpIgnore, 0, 0)
	c.closeTree()
	if err := c.sock.Close(); err != nil {
		return &OpError{Op: "close", Err: err}
	}
	return nil
}
