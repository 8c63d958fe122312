package taskstats

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// Defaults of Config and sizes of a Listener.
const (
	// DefaultReadBuffer is the receive buffer size used when
	// Config.ReadBuffer is zero. The kernel doubles it, and charges each
	// queued message its skb's truesize: 1,280 bytes measured on Linux
	// 6.18 x86_64 for a version-16 record. So 16 MiB holds about 26,000
	// exits. 8 MiB overflowed in storms of 5,000 children while other
	// fork storms ran on the host (load average 30 on 2 CPUs, the reader
	// starved for seconds).
	DefaultReadBuffer = 16 << 20
	// DefaultAckTimeout is how long Listen waits for the kernel's answer
	// to the registration when Config.AckTimeout is zero.
	DefaultAckTimeout = 2 * time.Second

	// MaxBatch is the largest number of datagrams one Receive reads.
	MaxBatch = 32
	// DatagramSize is the size of each receive slot; a larger datagram
	// is truncated and counted as malformed. A version-16 message takes
	// 596 bytes, 1,172 with a per-TGID aggregate.
	DatagramSize = 4096
)

// Config configures a Listener. A nil *Config means all defaults.
type Config struct {
	// ReadBuffer is the socket receive buffer size in bytes, set with
	// SO_RCVBUFFORCE (which needs CAP_NET_ADMIN, as registering does),
	// falling back to SO_RCVBUF (capped by net.core.rmem_max). Zero means
	// DefaultReadBuffer (16 MiB); a negative value leaves the system
	// default.
	ReadBuffer int

	// CPUs is the CPU list to register for, in the kernel's list format
	// ("0-3,8"): the kernel sends the record of a task that exits on a
	// CPU only to the listeners registered for that CPU. The empty string
	// means every possible CPU (PossibleCPUs), which also covers CPUs
	// that come online later.
	CPUs string

	// AckTimeout bounds the wait for the kernel's answer to the
	// registration. Zero means DefaultAckTimeout (2 s).
	AckTimeout time.Duration

	// MinReadInterval is the least time between two reads of the
	// socket: when Receive comes sooner after the previous read, it first
	// waits out the rest (Close ends the wait). Records gather in the
	// socket buffer meanwhile, so each read, and each wakeup, takes many.
	// A wakeup costs far more than a record: on storms of 5,000 children
	// (2-CPU VM, load average 6 to 9), 10 ms took the receiver from 1.1
	// to 9.5 records per read and from 30 to 11 µs of CPU per record
	// (BenchmarkIntegrationStorm), for up to 10 ms of delay.
	// Size ReadBuffer for the records of one interval. Zero (the default)
	// reads at once.
	MinReadInterval time.Duration

	// OffPoller takes the socket out of the Go runtime's poller once the
	// registration is acknowledged (Listen only; see
	// nlsock.Socket.SetBlocking): records that arrive while nobody reads
	// then wake no thread. A program that reads only with Sync, between
	// batches of its own work, wants it: in the poller every record wakes
	// the thread that waits in epoll_wait for the runtime's next timer,
	// once per exit in a fork storm. Receive then blocks in recvmmsg on
	// its thread, and Close wakes it.
	OffPoller bool
}

// A Datagram is one receive slot of a Socket batch read.
type Datagram struct {
	// Buf is the slot's storage, provided by the Listener (never empty);
	// the Socket writes the datagram to Buf[:N].
	Buf []byte
	// N is the number of bytes written to Buf.
	N int
	// Port is the sender's netlink port id; 0 is the kernel.
	Port uint32
	// Truncated reports that the datagram was larger than Buf
	// (MSG_TRUNC).
	Truncated bool
	// Time is when the datagram was read, on CLOCK_BOOTTIME (time since
	// boot, suspend included). It becomes Record.Received.
	Time time.Duration
}

// Socket is the transport under a Listener: a generic netlink socket with
// the TASKSTATS family resolved. The real one is created by Listen;
// package taskstatstest provides a fake kernel. A Listener calls ReadBatch
// and ReadQueued from one goroutine at a time, and Send, Close and the
// setters from any goroutine.
type Socket interface {
	// Send sends a request of the TASKSTATS family: a generic netlink
	// message with command cmd, family version 1 and the attributes
	// attrs, flagged NLM_F_REQUEST|NLM_F_ACK. It returns the message's
	// sequence number, which the kernel's acknowledgement (NLMSG_ERROR)
	// carries.
	Send(cmd uint8, attrs []byte) (seq uint32, err error)
	// ReadBatch blocks until at least one datagram is available (or the
	// read deadline passes, or the socket is closed), then fills up to
	// len(ds) slots and returns how many it filled. An overrun is reported
	// as an error matching syscall.ENOBUFS, after which the socket stays
	// usable. Close makes a blocked ReadBatch return an error.
	ReadBatch(ds []Datagram) (int, error)
	// ReadQueued is ReadBatch without waiting: it returns 0 and no error
	// when no datagram is queued, and ignores the read deadline.
	ReadQueued(ds []Datagram) (int, error)
	// SetReadDeadline sets the deadline of ReadBatch; the zero time
	// means none. A ReadBatch past its deadline returns an error matching
	// os.ErrDeadlineExceeded.
	SetReadDeadline(t time.Time) error
	// SetReadBuffer sets the receive buffer size in bytes.
	SetReadBuffer(bytes int) error
	// Family returns the TASKSTATS family id: the nlmsg_type of its
	// messages.
	Family() uint16
	// PortID returns the socket's netlink port id (nl_pid).
	PortID() uint32
	// Close closes the socket. It is called once.
	Close() error
}

// Stats are a Listener's counters since it was created.
type Stats struct {
	// Reads counts the batch reads (recvmmsg calls) that returned
	// datagrams: Datagrams/Reads is the batching achieved, each read
	// costing one wakeup of the reader.
	Reads uint64
	// Datagrams counts datagrams read from the socket.
	Datagrams uint64
	// Records counts records accepted: returned by Receive or queued for
	// it (a message with a per-TGID aggregate gives two).
	Records uint64
	// Acks counts acknowledgements (NLMSG_ERROR) of requests. They are
	// never returned.
	Acks uint64
	// Spoofed counts messages that did not come from the kernel (non-zero
	// source port id, or non-zero nlmsg_pid in a record). They are
	// dropped.
	Spoofed uint64
	// Foreign counts kernel messages of another family or command, or of
	// a struct version this package does not read. They are dropped.
	Foreign uint64
	// Malformed counts truncated or inconsistent messages and datagrams.
	// They are dropped.
	Malformed uint64
	// Overruns counts ENOBUFS reports: episodes in which the kernel
	// dropped records. Drops counts the records themselves.
	Overruns uint64
}

// Listener receives the kernel's taskstats exit records. Receive may be
// called from one goroutine at a time (concurrent calls are serialised);
// Close, Stats, Drops, CPUs and SetReadDeadline may be called from any
// goroutine.
type Listener struct {
	sock       Socket
	cpus       string
	ackTimeout time.Duration
	interval   time.Duration
	closing    chan struct{} // closed by Close

	rmu            sync.Mutex // serialises ReadBatch and the fields below
	slots          []Datagram
	pending        []Record // records received during the registration
	pendingOverrun bool
	lastRead       time.Time   // when ReadBatch last returned, for interval
	timer          *time.Timer // waits out interval, reused
	wantSeq        uint32
	ackSeen        bool
	ackErr         int32

	closed atomic.Bool

	reads, datagrams, records, acks, spoofed, foreign, malformed, overruns atomic.Uint64
}

// NewListener registers an exit listener over s for Config.CPUs (all
// possible CPUs by default) and returns a Listener that owns s. It sets
// the read buffer, sends TASKSTATS_CMD_GET with
// TASKSTATS_CMD_ATTR_REGISTER_CPUMASK and waits up to Config.AckTimeout
// for the kernel's acknowledgement, keeping the records that arrive before
// it for the first Receive. A refusal with EPERM or EACCES is
// ErrPermission, with EINVAL (listener outside the initial namespaces)
// ErrNotSupported. On error it closes s. Listen is NewListener over a real
// socket.
func NewListener(s Socket, cfg *Config) (*Listener, error) {
	var c Config
	if cfg != nil {
		c = *cfg
	}
	if c.ReadBuffer == 0 {
		c.ReadBuffer = DefaultReadBuffer
	}
	if c.AckTimeout <= 0 {
		c.AckTimeout = DefaultAckTimeout
	}
	if c.CPUs == "" {
		cpus, err := PossibleCPUs()
		if err != nil {
			_ = s.Close()
			return nil, &OpError{Op: "listen", Err: err, Detail: "reading the possible CPUs"}
		}
		c.CPUs = cpus
	}
	l := &Listener{
		sock:       s,
		cpus:       c.CPUs,
		ackTimeout: c.AckTimeout,
		interval:   max(c.MinReadInterval, 0),
		closing:    make(chan struct{}),
		slots:      make([]Datagram, MaxBatch),
	}
	buf := make([]byte, MaxBatch*DatagramSize)
	for i := range l.slots {
		l.slots[i].Buf = buf[i*DatagramSize : (i+1)*DatagramSize : (i+1)*DatagramSize]
	}
	if c.ReadBuffer > 0 {
		if err := s.SetReadBuffer(c.ReadBuffer); err != nil {
			_ = s.Close()
			return nil, &OpError{Op: "listen", Err: err, Detail: "setting the receive buffer"}
		}
	}
	if err := l.register(); err != nil {
		_ = s.Close()
		return nil, err
	}
	return l, nil
}

// PossibleCPUs returns the kernel's list of possible CPUs
// (/sys/devices/system/cpu/possible, such as "0-1"): the CPUs that are or
// may come online.
func PossibleCPUs() (string, error) {
	b, err := os.ReadFile("/sys/devices/system/cpu/possible")
	if err != nil {
		return "", err
	}
	s := strings.TrimSpace(string(b))
	if s == "" {
		return "", errors.New("taskstats: /sys/devices/system/cpu/possible is empty")
	}
	return s, nil
}

// cpuMaskAttr encodes a TASKSTATS_CMD_ATTR_*_CPUMASK attribute: the CPU
// list as a NUL-terminated string, padded to 4 bytes.
func cpuMaskAttr(typ uint16, cpus string) []byte {
	l := NlaHeaderLen + len(cpus) + 1
	b := make([]byte, (l+3)&^3)
	binary.NativeEndian.PutUint16(b[0:], uint16(l))
	binary.NativeEndian.PutUint16(b[2:], typ)
	copy(b[NlaHeaderLen:], cpus)
	return b
}

// register sends the registration and waits for its acknowledgement.
func (l *Listener) register() error {
	l.rmu.Lock()
	defer l.rmu.Unlock()
	seq, err := l.sock.Send(CmdGet, cpuMaskAttr(AttrRegisterCPUMask, l.cpus))
	if err != nil {
		return sendError("register", err)
	}
	l.wantSeq = seq
	if err := l.sock.SetReadDeadline(time.Now().Add(l.ackTimeout)); err != nil {
		return &OpError{Op: "register", Err: err}
	}
	for !l.ackSeen {
		n, err := l.sock.ReadBatch(l.slots)
		l.pending = l.process(l.slots[:max(0, min(n, len(l.slots)))], l.pending)
		switch {
		case err == nil:
		case errors.Is(err, syscall.ENOBUFS):
			l.overruns.Add(1)
			l.pendingOverrun = true
		case errors.Is(err, os.ErrDeadlineExceeded):
			return &OpError{Op: "register", Kind: ErrNotSupported, Detail: fmt.Sprintf(
				"no acknowledgement of TASKSTATS_CMD_GET from the kernel within %v", l.ackTimeout)}
		default:
			return &OpError{Op: "register", Err: err}
		}
	}
	if err := l.sock.SetReadDeadline(time.Time{}); err != nil {
		return &OpError{Op: "register", Err: err}
	}
	if l.ackErr != 0 {
		errno := syscall.Errno(-l.ackErr)
		if l.ackErr > 0 {
			errno = syscall.Errno(l.ackErr)
		}
		switch errno {
		case syscall.EPERM, syscall.EACCES:
			return &OpError{Op: "register", Kind: ErrPermission, Err: errno,
				Detail: "the kernel refused TASKSTATS_CMD_ATTR_REGISTER_CPUMASK"}
		case syscall.EINVAL:
			return &OpError{Op: "register", Kind: ErrNotSupported, Err: errno, Detail: fmt.Sprintf(
				"the kernel refused to register for CPUs %q: not in the initial user and PID namespaces "+
					"(records go only to listeners there), or CPUs outside the possible ones", l.cpus)}
		}
		return &OpError{Op: "register", Err: errno, Detail: "the kernel refused TASKSTATS_CMD_ATTR_REGISTER_CPUMASK"}
	}
	return nil
}

func sendError(op string, err error) error {
	if errors.Is(err, syscall.EPERM) || errors.Is(err, syscall.EACCES) {
		return &OpError{Op: op, Kind: ErrPermission, Err: err}
	}
	return &OpError{Op: op, Err: err}
}

// netlink message header layout and types.
const (
	nlmsgHdrLen = 16
	nlmsgError  = 2
)

// process decodes the datagrams ds, appends the accepted records to dst
// and records acknowledgements. It must be called with rmu held.
func (l *Listener) process(ds []Datagram, dst []Record) []Record {
	ne := binary.NativeEndian
	family := l.sock.Family()
	if len(ds) > 0 {
		l.reads.Add(1)
	}
	for i := range ds {
		d := &ds[i]
		l.datagrams.Add(1)
		if d.Port != 0 {
			l.spoofed.Add(1)
			continue
		}
		if d.Truncated || d.N > len(d.Buf) || d.N < 0 {
			l.malformed.Add(1)
			continue
		}
		b := d.Buf[:d.N]
		if len(b) < nlmsgHdrLen {
			l.malformed.Add(1)
			continue
		}
		for len(b) >= nlmsgHdrLen {
			n := int(ne.Uint32(b[0:]))
			if n < nlmsgHdrLen || n > len(b) {
				l.malformed.Add(1)
				break
			}
			msg := b[:n]
			if al := (n + 3) &^ 3; al < len(b) {
				b = b[al:]
			} else {
				b = nil
			}
			switch typ := ne.Uint16(msg[4:]); {
			case typ == nlmsgError:
				// struct nlmsgerr: a negative errno (0 for an ack) and
				// the request's header.
				if len(msg) < nlmsgHdrLen+4+nlmsgHdrLen {
					l.malformed.Add(1)
					continue
				}
				l.acks.Add(1)
				if !l.ackSeen && ne.Uint32(msg[8:]) == l.wantSeq {
					l.ackSeen = true
					l.ackErr = int32(ne.Uint32(msg[nlmsgHdrLen:]))
				}
				continue
			case typ != family:
				l.foreign.Add(1)
				continue
			}
			if ne.Uint32(msg[12:]) != 0 {
				l.spoofed.Add(1)
				continue
			}
			n0 := len(dst)
			out, _, reason := decodeMessage(msg[nlmsgHdrLen:], dst)
			if reason != nil {
				if reason == ErrForeign {
					l.foreign.Add(1)
				} else {
					l.malformed.Add(1)
				}
				continue
			}
			dst = out
			for j := n0; j < len(dst); j++ {
				dst[j].Received = d.Time
			}
			l.records.Add(uint64(len(dst) - n0))
		}
	}
	return dst
}

// Receive appends records to dst and returns the extended slice. It
// blocks until at least one record arrives, then returns the records of
// one batch read: at most MaxBatch datagrams, and no more datagrams than
// the spare capacity of dst (at least one), so that a dst with room for
// twice MaxBatch records is never reallocated and Receive does not
// allocate. The two records of one message (a KindPID record and the
// KindTGID aggregate after it) are always returned by the same call.
// Reuse the slice:
//
//	buf := make([]taskstats.Record, 0, 2*taskstats.MaxBatch)
//	for {
//		recs, err := l.Receive(buf[:0])
//		...
//	}
//
// When the kernel reports an overrun Receive returns the records it has
// and an error matching ErrOverrun; the Listener stays usable and later
// calls go on with the records that followed. After Close, or when Close
// is called during the call, it returns an error matching ErrClosed
// (net.ErrClosed). Past a deadline set with SetReadDeadline it returns an
// error matching os.ErrDeadlineExceeded.
func (l *Listener) Receive(dst []Record) ([]Record, error) {
	l.rmu.Lock()
	defer l.rmu.Unlock()
	if l.closed.Load() {
		return dst, &OpError{Op: "receive", Kind: ErrClosed}
	}
	if len(l.pending) > 0 || l.pendingOverrun {
		k := min(len(l.pending), max(cap(dst)-len(dst), 1))
		if k < len(l.pending) && k > 0 && l.pending[k].Kind == KindTGID {
			k++ // keep a message's records together
		}
		dst = append(dst, l.pending[:k]...)
		l.pending = l.pending[k:]
		if len(l.pending) == 0 {
			l.pending = nil
		}
		if l.pendingOverrun {
			l.pendingOverrun = false
			return dst, &OpError{Op: "receive", Kind: ErrOverrun, Err: syscall.ENOBUFS}
		}
		return dst, nil
	}
	for {
		if l.interval > 0 && !l.waitInterval() {
			return dst, &OpError{Op: "receive", Kind: ErrClosed}
		}
		n := min(max((cap(dst)-len(dst))/2, 1), len(l.slots))
		got, err := l.sock.ReadBatch(l.slots[:n])
		if l.interval > 0 {
			l.lastRead = time.Now()
		}
		before := len(dst)
		dst = l.process(l.slots[:max(0, min(got, n))], dst)
		if err != nil {
			return dst, l.receiveError(err)
		}
		if len(dst) > before {
			return dst, nil
		}
	}
}

// waitInterval waits until MinReadInterval has passed since the last read.
// It returns false if Close was called. It must be called with rmu held.
func (l *Listener) waitInterval() bool {
	wait := time.Until(l.lastRead.Add(l.interval))
	if wait <= 0 {
		return true
	}
	if l.timer == nil {
		l.timer = time.NewTimer(wait)
	} else {
		l.timer.Reset(wait)
	}
	select {
	case <-l.timer.C:
		return true
	case <-l.closing:
		l.timer.Stop()
		return false
	}
}

func (l *Listener) receiveError(err error) error {
	switch {
	case errors.Is(err, syscall.ENOBUFS):
		l.overruns.Add(1)
		return &OpError{Op: "receive", Kind: ErrOverrun, Err: err}
	case l.closed.Load() || errors.Is(err, net.ErrClosed) || errors.Is(err, os.ErrClosed):
		return &OpError{Op: "receive", Kind: ErrClosed}
	}
	return &OpError{Op: "receive", Err: err}
}

// Stats returns a snapshot of the Listener's counters.
func (l *Listener) Stats() Stats {
	return Stats{
		Reads:     l.reads.Load(),
		Datagrams: l.datagrams.Load(),
		Records:   l.records.Load(),
		Acks:      l.acks.Load(),
		Spoofed:   l.spoofed.Load(),
		Foreign:   l.foreign.Load(),
		Malformed: l.malformed.Load(),
		Overruns:  l.overruns.Load(),
	}
}

// CPUs returns the CPU list the Listener registered for.
func (l *Listener) CPUs() string { return l.cpus }

// PortID returns the socket's netlink port id (nl_pid).
func (l *Listener) PortID() uint32 { return l.sock.PortID() }

// SetReadDeadline sets a deadline for Receive; the zero time means none.
func (l *Listener) SetReadDeadline(t time.Time) error { return l.sock.SetReadDeadline(t) }

// Sync appends every record already queued on the socket to dst and
// returns without waiting for more: when it returns, any record not yet
// returned was queued after the call began. It is the barrier that ties
// the record stream to events seen elsewhere: a record is queued when its
// task exits, before the task's PID can be reused, so after a process's
// fork event was read, a Sync returns every record of earlier holders of
// its PID not read yet (and the process's own if it has exited already),
// and records of that PID from later calls belong to the process or to
// later holders (see the package documentation on matching).
//
// Sync reads until a read finds the queue empty, so it ends even while
// records keep coming. Like Receive, it keeps a message's records
// together; it waits for no MinReadInterval; it returns ErrOverrun (with
// the records) when the kernel dropped some. It does not allocate when
// dst has room for the queue.
func (l *Listener) Sync(dst []Record) ([]Record, error) {
	l.rmu.Lock()
	defer l.rmu.Unlock()
	if l.closed.Load() {
		return dst, &OpError{Op: "sync", Kind: ErrClosed}
	}
	dst = append(dst, l.pending...)
	l.pending = nil
	var result error
	if l.pendingOverrun {
		l.pendingOverrun = false
		result = &OpError{Op: "sync", Kind: ErrOverrun, Err: syscall.ENOBUFS}
	}
	for {
		got, err := l.sock.ReadQueued(l.slots)
		dst = l.process(l.slots[:max(0, min(got, len(l.slots)))], dst)
		if l.interval > 0 && got > 0 {
			l.lastRead = time.Now()
		}
		switch {
		case err == nil && got < len(l.slots):
			// The queue was empty during this read: everything queued
			// before the call has been read.
			return dst, result
		case err == nil:
		case errors.Is(err, syscall.ENOBUFS):
			l.overruns.Add(1)
			result = &OpError{Op: "sync", Kind: ErrOverrun, Err: err}
		default:
			return dst, l.receiveError(err)
		}
	}
}

// Drops returns the number of messages the kernel dropped for the
// socket because its receive buffer was full (SK_MEMINFO_DROPS of
// SO_MEMINFO; a message carries one record, or two with a per-TGID
// aggregate). Its error matches ErrNotSupported when the Socket cannot
// tell.
func (l *Listener) Drops() (uint32, error) {
	if m, ok := l.sock.(interface{ Drops() (uint32, error) }); ok {
		return m.Drops()
	}
	return 0, &OpError{Op: "drops", Kind: ErrNotSupported, Detail: "the socket does not report SO_MEMINFO"}
}

// Close deregisters the listener (TASKSTATS_CMD_ATTR_DEREGISTER_CPUMASK,
// best effort: its failure is not reported; the kernel also forgets a
// closed socket when it next sends to it) and closes the socket, which
// makes a blocked Receive return ErrClosed. Close is idempotent: later
// calls return nil.
func (l *Listener) Close() error {
	if !l.closed.CompareAndSwap(false, true) {
		return nil
	}
	close(l.closing)
	_, _ = l.sock.Send(CmdGet, cpuMaskAttr(AttrDeregisterCPUMask, l.cpus))
	if err := l.sock.Close(); err != nil {
		return &OpError{Op: "close", Err: err}
	}
	return nil
}
