//go:build linux

package nlsock

import (
	"errors"
	"math/rand/v2"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
	"unsafe"

	"github.com/mdlayher/netlink"
	"golang.org/x/sys/unix"
)

// MaxBatch is the largest number of datagrams one read receives.
const MaxBatch = 64

// Socket is a netlink socket read with recvmmsg(2). Reads (ReadBatch,
// ReadQueued and the Slot and Received calls around them) come from one
// goroutine at a time; the other methods may be called from any goroutine
// (SetBlocking excepted, see there).
type Socket struct {
	nc  *netlink.Conn // nil once SetBlocking has detached the socket
	f   *os.File      // the detached descriptor (blocking mode), else nil
	rc  syscall.RawConn
	pid uint32
	seq atomic.Uint32 // netlink sequence numbers of Send in blocking mode

	// recvmmsg scratch, used by one read at a time.
	hdrs      [MaxBatch]unix.Mmsghdr
	iovs      [MaxBatch]unix.Iovec
	addrs     [MaxBatch]unix.RawSockaddrNetlink
	want      int
	got       int
	errno     syscall.Errno
	readFn    func(fd uintptr) bool // s.doRead, bound once so reads do not allocate
	readNowFn func(fd uintptr)      // s.doReadNow, likewise
	blockFn   func(fd uintptr) bool // s.doBlockingRead, likewise

	// Blocking mode (SetBlocking): reads block in recvmmsg on the calling
	// thread instead of waiting in the runtime's poller; Close and
	// SetReadDeadline wake a blocked read with a datagram sent to the
	// socket's own port.
	blocking bool
	reading  atomic.Bool // a blocking read is in progress
	closing  atomic.Bool
	// idle holds one token while no blocking read is in progress: a read
	// takes it for its duration, Close takes it for good, so that Close
	// returns only once a blocked read has returned, and a read that
	// finds it gone knows the socket is closed.
	idle     chan struct{}
	rcvtimeo time.Duration // SO_RCVTIMEO in force; used by one reader at a time
	dmu      sync.Mutex
	deadline time.Time
}

// Dial opens a netlink socket of the given protocol (unix.NETLINK_*)
// with netlink.Dial. Its error is netlink.Dial's, for the caller to
// classify.
func Dial(family int, cfg *netlink.Config) (*Socket, error) {
	nc, err := netlink.Dial(family, cfg)
	if err != nil {
		return nil, err
	}
	rc, err := nc.SyscallConn()
	if err != nil {
		_ = nc.Close()
		return nil, err
	}
	s := &Socket{nc: nc, rc: rc, pid: nc.PID()}
	s.readFn = s.doRead
	s.readNowFn = s.doReadNow
	s.blockFn = s.doBlockingRead
	return s, nil
}

// Conn returns the underlying netlink Conn, for sending requests (for
// example through genetlink.NewConn). Reads go through the Socket. In
// blocking mode (after SetBlocking) the socket has left the Conn, and
// Conn returns nil.
func (s *Socket) Conn() *netlink.Conn { return s.nc }

// PortID returns the socket's netlink port id (nl_pid).
func (s *Socket) PortID() uint32 { return s.pid }

// Slot points receive slot i (0 <= i < MaxBatch) at b for the next read.
// b must not be empty.
func (s *Socket) Slot(i int, b []byte) error {
	if len(b) == 0 {
		return errors.New("nlsock: empty receive slot")
	}
	s.iovs[i] = unix.Iovec{Base: &b[0]}
	s.iovs[i].SetLen(len(b))
	s.hdrs[i] = unix.Mmsghdr{}
	h := &s.hdrs[i].Hdr
	h.Name = (*byte)(unsafe.Pointer(&s.addrs[i]))
	h.Namelen = unix.SizeofSockaddrNetlink
	h.Iov = &s.iovs[i]
	h.SetIovlen(1)
	return nil
}

// Received returns what the last read put in slot i (below the count it
// returned): the datagram's length, its sender's port id (0 is the
// kernel) and whether it was longer than the slot (MSG_TRUNC).
func (s *Socket) Received(i int) (n int, port uint32, truncated bool) {
	return int(s.hdrs[i].Len), s.addrs[i].Pid, s.hdrs[i].Hdr.Flags&unix.MSG_TRUNC != 0
}

// ReadBatch receives into slots 0 to n-1 (at most MaxBatch) with one
// recvmmsg(2) call and returns how many it filled. It waits until at
// least one datagram is there (in the runtime's poller, or in blocking
// mode in the call itself), the read deadline passes
// (os.ErrDeadlineExceeded) or the socket is closed (see Close). An
// overrun is an error matching syscall.ENOBUFS.
func (s *Socket) ReadBatch(n int) (int, error) {
	s.want, s.got, s.errno = min(n, MaxBatch), 0, 0
	if s.want <= 0 {
		return 0, nil
	}
	if s.blocking {
		if err := s.readBlocking(); err != nil {
			return 0, err
		}
	} else if err := s.rc.Read(s.readFn); err != nil {
		return 0, err
	}
	return s.result()
}

// ReadQueued is ReadBatch without waiting: one recvmmsg(2) call with
// MSG_DONTWAIT outside the runtime's poller, which returns 0 and no error
// when nothing is queued, and ignores the read deadline.
func (s *Socket) ReadQueued(n int) (int, error) {
	s.want, s.got, s.errno = min(n, MaxBatch), 0, 0
	if s.want <= 0 {
		return 0, nil
	}
	if err := s.rc.Control(s.readNowFn); err != nil {
		return 0, err
	}
	if s.errno == unix.EAGAIN {
		return 0, nil
	}
	return s.result()
}

func (s *Socket) result() (int, error) {
	if s.errno != 0 {
		return 0, os.NewSyscallError("recvmmsg", s.errno)
	}
	return s.got, nil
}

// doRead is the RawConn.Read callback: false asks the poller to wait.
func (s *Socket) doRead(fd uintptr) bool {
	for {
		// A raw system call: with MSG_DONTWAIT it never blocks, and
		// the runtime need not be told (entersyscall woke the sysmon
		// thread whenever it was parked, i.e. at the first read after
		// every idle spell: once an event at a few thousand a second).
		r, _, e := unix.RawSyscall6(unix.SYS_RECVMMSG, fd, uintptr(unsafe.Pointer(&s.hdrs[0])),
			uintptr(s.want), unix.MSG_DONTWAIT, 0, 0)
		switch e {
		case 0:
			s.got = int(r)
			return true
		case unix.EINTR:
			continue
		case unix.EAGAIN:
			return false
		}
		s.errno = e
		return true
	}
}

// doReadNow is the RawConn.Control callback of ReadQueued: EAGAIN is
// left in s.errno.
func (s *Socket) doReadNow(fd uintptr) {
	if !s.doRead(fd) {
		s.errno = unix.EAGAIN
	}
}

// readBlocking is one blocking recvmmsg(2) (MSG_WAITFORONE: it returns as
// soon as one datagram is there), with the deadline as SO_RCVTIMEO. It
// holds the idle token meanwhile; without it (Close has it) the socket is
// closed.
func (s *Socket) readBlocking() error {
	select {
	case <-s.idle:
	default:
		return net.ErrClosed
	}
	defer func() { s.idle <- struct{}{} }()
	for {
		if s.closing.Load() {
			return net.ErrClosed
		}
		s.dmu.Lock()
		dl := s.deadline
		s.dmu.Unlock()
		var timeo time.Duration
		if !dl.IsZero() {
			if timeo = time.Until(dl); timeo <= 0 {
				return os.ErrDeadlineExceeded
			}
		}
		if timeo != s.rcvtimeo {
			tv := unix.NsecToTimeval(timeo.Nanoseconds())
			var serr error
			if err := s.rc.Control(func(fd uintptr) {
				serr = unix.SetsockoptTimeval(int(fd), unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv)
			}); err != nil {
				return err
			}
			if serr != nil {
				return os.NewSyscallError("setsockopt", serr)
			}
			s.rcvtimeo = timeo
		}
		s.reading.Store(true)
		err := s.rc.Read(s.blockFn)
		s.reading.Store(false)
		switch {
		case err != nil:
			return err
		case s.closing.Load():
			return net.ErrClosed
		case s.errno == unix.EAGAIN: // SO_RCVTIMEO, or a changed deadline
			s.errno = 0
			continue
		}
		return nil
	}
}

// doBlockingRead is the RawConn.Read callback of blocking mode. Close
// waits for it (the idle token), and the os.File's read lock it runs under
// would keep the descriptor open until it returns in any case.
//
// It first reads what is queued without waiting, as a raw system call:
// after a coalescing reader's wait there almost always is something, and
// a raw call does not go through entersyscall, which woke the runtime's
// sysmon thread each time (it then polls every 20 µs while the batch is
// processed: 29% of pwatch's CPU in a storm, in perf). Only an empty
// queue takes the blocking call.
func (s *Socket) doBlockingRead(fd uintptr) bool {
	if s.doRead(fd) {
		return true
	}
	for {
		r, _, e := unix.Syscall6(unix.SYS_RECVMMSG, fd, uintptr(unsafe.Pointer(&s.hdrs[0])),
			uintptr(s.want), unix.MSG_WAITFORONE, 0, 0)
		if e == unix.EINTR {
			continue
		}
		s.got, s.errno = int(r), e
		if e != 0 {
			s.got = 0
		}
		return true
	}
}

// SetBlocking switches the socket to blocking reads: ReadBatch blocks in
// recvmmsg(2) on the calling thread instead of waiting in the runtime's
// poller. Close and SetReadDeadline then wake a blocked read with a
// 1-byte datagram from the socket's own port (see SendToSelf), which the
// reader must skip. Call it once, before the first read and before the
// socket is shared between goroutines, and only where the socket can send
// to itself.
//
// The socket also leaves the runtime's poller, so that datagrams that
// arrive while nobody reads (between the reads of a coalescing reader)
// wake no thread. Clearing O_NONBLOCK alone would not do that: the
// descriptor stays registered (edge-triggered) in the runtime's epoll
// instance, and every datagram wakes the thread that waits in epoll_wait
// for a timer. So SetBlocking duplicates the descriptor (the duplicate
// shares the open file description, and so the socket, its port id,
// options and queue), closes the netlink Conn (which removes the original
// descriptor from the epoll set and closes it), makes the duplicate
// blocking and wraps it in an os.File, which does not register a blocking
// descriptor. Conn then returns nil; Send, SetReadBuffer, SetNoENOBUFS and
// the other methods work on the duplicate with system calls of their own.
func (s *Socket) SetBlocking() error {
	if s.blocking {
		return nil
	}
	dup := -1
	var derr error
	if err := s.rc.Control(func(fd uintptr) {
		dup, derr = unix.FcntlInt(fd, unix.F_DUPFD_CLOEXEC, 0)
	}); err != nil {
		return err
	}
	if derr != nil {
		return os.NewSyscallError("fcntl", derr)
	}
	if err := s.nc.Close(); err != nil {
		_ = unix.Close(dup)
		return err
	}
	if err := unix.SetNonblock(dup, false); err != nil {
		_ = unix.Close(dup)
		return os.NewSyscallError("fcntl", err)
	}
	f := os.NewFile(uintptr(dup), "netlink")
	rc, err := f.SyscallConn()
	if err != nil {
		_ = f.Close()
		return err
	}
	s.nc, s.f, s.rc = nil, f, rc
	s.seq.Store(rand.Uint32())
	s.idle = make(chan struct{}, 1)
	s.idle <- struct{}{}
	s.blocking = true
	return nil
}

// Blocking reports whether SetBlocking is in force.
func (s *Socket) Blocking() bool { return s.blocking }

// ReadBlocked reports whether a blocking-mode read is blocked in, or
// about to enter, recvmmsg(2).
func (s *Socket) ReadBlocked() bool { return s.reading.Load() }

// sendWake queues the datagram that wakes a blocked read: one byte from
// the socket's own port (the kernel refuses empty ones).
func (s *Socket) sendWake() { _ = s.SendToSelf(make([]byte, 1)) }

// SetReadDeadline sets the deadline of ReadBatch; the zero time means
// none. In blocking mode it wakes a blocked read, which then waits
// again until the new deadline.
func (s *Socket) SetReadDeadline(t time.Time) error {
	if s.blocking {
		s.dmu.Lock()
		s.deadline = t
		s.dmu.Unlock()
		if s.reading.Load() {
			s.sendWake()
		}
		return nil
	}
	return s.nc.SetReadDeadline(t)
}

// SetReadBuffer sets the receive buffer size in bytes (SO_RCVBUFFORCE,
// which needs CAP_NET_ADMIN, else SO_RCVBUF, capped by
// net.core.rmem_max).
func (s *Socket) SetReadBuffer(bytes int) error {
	if err := s.setsockoptInt(unix.SOL_SOCKET, unix.SO_RCVBUFFORCE, bytes); err == nil {
		return nil
	}
	return s.setsockoptInt(unix.SOL_SOCKET, unix.SO_RCVBUF, bytes)
}

// wakeRetry is how often Close sends another wake-up datagram while it
// waits for a blocked read to return: a wake-up can be lost to a full
// queue (the read then has datagrams to return anyway) or to a filter.
const wakeRetry = 50 * time.Millisecond

// Close closes the socket and makes a read in progress return an error
// (net.ErrClosed in blocking mode). In blocking mode it wakes a blocked
// read first (see SendToSelf) and returns once that read has returned
// and the descriptor is closed. A second Close returns an error matching
// net.ErrClosed.
func (s *Socket) Close() error {
	if !s.blocking {
		return s.nc.Close()
	}
	if !s.closing.CompareAndSwap(false, true) {
		return net.ErrClosed
	}
	select {
	case <-s.idle: // no read in progress; later ones find no token
	default:
		s.sendWake()
		t := time.NewTicker(wakeRetry)
		defer t.Stop()
	wait:
		for {
			select {
			case <-s.idle:
				break wait
			case <-t.C:
				s.sendWake()
			}
		}
	}
	return s.f.Close()
}

// Send sends m to the kernel (port 0), filling in its length, sequence
// number and port id where they are zero as netlink.Conn.Send does, and
// returns the message sent.
func (s *Socket) Send(m netlink.Message) (netlink.Message, error) {
	if s.nc != nil {
		return s.nc.Send(m)
	}
	if m.Header.Length == 0 {
		m.Header.Length = uint32((unix.SizeofNlMsghdr + len(m.Data) + unix.NLMSG_ALIGNTO - 1) &^ (unix.NLMSG_ALIGNTO - 1))
	}
	if m.Header.Sequence == 0 {
		m.Header.Sequence = s.seq.Add(1)
	}
	if m.Header.PID == 0 {
		m.Header.PID = s.pid
	}
	b, err := m.MarshalBinary()
	if err != nil {
		return netlink.Message{}, err
	}
	return m, s.sendTo(b, 0, 0)
}

// SendToSelf queues msg on the socket's own receive queue (sendto(2) to
// its own port id, MSG_DONTWAIT): a full queue is an error matching
// syscall.EAGAIN; without CAP_NET_ADMIN some families answer
// syscall.EPERM.
func (s *Socket) SendToSelf(msg []byte) error {
	return s.sendTo(msg, s.pid, unix.MSG_DONTWAIT)
}

// sendTo is sendto(2) of msg to the netlink port id port.
func (s *Socket) sendTo(msg []byte, port uint32, flags int) error {
	var errno syscall.Errno
	to := unix.RawSockaddrNetlink{Family: unix.AF_NETLINK, Pid: port}
	err := s.rc.Control(func(fd uintptr) {
		var p unsafe.Pointer
		if len(msg) > 0 {
			p = unsafe.Pointer(&msg[0])
		}
		for {
			_, _, errno = unix.Syscall6(unix.SYS_SENDTO, fd, uintptr(p), uintptr(len(msg)),
				uintptr(flags), uintptr(unsafe.Pointer(&to)), unix.SizeofSockaddrNetlink)
			if errno != unix.EINTR {
				return
			}
		}
	})
	if err == nil && errno != 0 {
		err = os.NewSyscallError("sendto", errno)
	}
	return err
}

// SetNoENOBUFS sets NETLINK_NO_ENOBUFS: the kernel then drops what does
// not fit in a full receive queue without reporting ENOBUFS, and counts
// each drop (MemInfo's Drops).
func (s *Socket) SetNoENOBUFS(on bool) error {
	v := 0
	if on {
		v = 1
	}
	return s.setsockoptInt(unix.SOL_NETLINK, unix.NETLINK_NO_ENOBUFS, v)
}

// MemInfo is the kernel's per-socket memory accounting (SO_MEMINFO, the
// SK_MEMINFO_* values, in bytes except Drops).
type MemInfo struct {
	RmemAlloc, Rcvbuf, WmemAlloc, Sndbuf, FwdAlloc, WmemQueued, Optmem, Backlog uint32
	// Drops counts the messages the kernel dropped for the socket.
	Drops uint32
}

// MemInfo reads SO_MEMINFO.
func (s *Socket) MemInfo() (MemInfo, error) {
	var v [unix.SK_MEMINFO_VARS]uint32
	var errno syscall.Errno
	err := s.rc.Control(func(fd uintptr) {
		l := uint32(unsafe.Sizeof(v))
		_, _, errno = unix.Syscall6(unix.SYS_GETSOCKOPT, fd, unix.SOL_SOCKET, unix.SO_MEMINFO,
			uintptr(unsafe.Pointer(&v[0])), uintptr(unsafe.Pointer(&l)), 0)
	})
	if err == nil && errno != 0 {
		err = os.NewSyscallError("getsockopt", errno)
	}
	if err != nil {
		return MemInfo{}, err
	}
	return MemInfo{
		RmemAlloc:  v[unix.SK_MEMINFO_RMEM_ALLOC],
		Rcvbuf:     v[unix.SK_MEMINFO_RCVBUF],
		WmemAlloc:  v[unix.SK_MEMINFO_WMEM_ALLOC],
		Sndbuf:     v[unix.SK_MEMINFO_SNDBUF],
		FwdAlloc:   v[unix.SK_MEMINFO_FWD_ALLOC],
		WmemQueued: v[unix.SK_MEMINFO_WMEM_QUEUED],
		Optmem:     v[unix.SK_MEMINFO_OPTMEM],
		Backlog:    v[unix.SK_MEMINFO_BACKLOG],
		Drops:      v[unix.SK_MEMINFO_DROPS],
	}, nil
}

// SetFilter attaches a classic BPF socket filter (SO_ATTACH_FILTER),
// replacing any filter; an empty program detaches the filter, and
// detaching none is not an error.
func (s *Socket) SetFilter(prog []unix.SockFilter) error {
	if len(prog) == 0 {
		if err := s.DetachFilter(); !errors.Is(err, unix.ENOENT) {
			return err
		}
		return nil
	}
	var serr error
	err := s.rc.Control(func(fd uintptr) {
		serr = unix.SetsockoptSockFprog(int(fd), unix.SOL_SOCKET, unix.SO_ATTACH_FILTER,
			&unix.SockFprog{Len: uint16(len(prog)), Filter: &prog[0]})
	})
	if err != nil {
		return err
	}
	return os.NewSyscallError("setsockopt", serr)
}

// AttachBPF attaches an eBPF socket filter program (SO_ATTACH_BPF) by
// its file descriptor, replacing any filter.
func (s *Socket) AttachBPF(progFD int) error {
	return s.setsockoptInt(unix.SOL_SOCKET, unix.SO_ATTACH_BPF, progFD)
}

// DetachFilter detaches the socket's filter, classic or eBPF
// (SO_DETACH_FILTER, which is SO_DETACH_BPF); without one the error
// matches unix.ENOENT.
func (s *Socket) DetachFilter() error {
	return s.setsockoptInt(unix.SOL_SOCKET, unix.SO_DETACH_FILTER, 0)
}

func (s *Socket) setsockoptInt(level, opt, v int) error {
	var serr error
	err := s.rc.Control(func(fd uintptr) {
		serr = unix.SetsockoptInt(int(fd), level, opt, v)
	})
	if err != nil {
		return err
	}
	return os.NewSyscallError("setsockopt", serr)
}
