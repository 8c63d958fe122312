//go:build linux

package connector

import (
	"errors"
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

// Dial subscribes to the proc connector. It first checks that the caller is
// in the initial user and PID namespaces (else an error matching
// ErrNotSupported, at once), opens a NETLINK_CONNECTOR socket bound to the
// CN_IDX_PROC group (EPERM or EACCES: ErrPermission; no connector in the
// kernel: ErrNotSupported), then proceeds as NewConn: read buffer, LISTEN,
// acknowledgement (none within Config.AckTimeout: ErrNotSupported).
func Dial(cfg *Config) (*Conn, error) {
	if err := checkNamespaces(os.Readlink); err != nil {
		return nil, err
	}
	s, err := dialSocket()
	if err != nil {
		return nil, err
	}
	return NewConn(s, cfg)
}

// nlSocket is the real Socket: a mdlayher/netlink Conn read with
// recvmmsg(2) into the caller's slots.
type nlSocket struct {
	nc  *netlink.Conn
	rc  syscall.RawConn
	pid uint32

	// recvmmsg scratch, used by one ReadBatch at a time.
	hdrs   [MaxBatch]unix.Mmsghdr
	iovs   [MaxBatch]unix.Iovec
	addrs  [MaxBatch]unix.RawSockaddrNetlink
	want   int
	got    int
	errno  syscall.Errno
	readFn func(fd uintptr) bool // s.doRead, bound once so reads do not allocate

	// Blocking mode (setBlocking): reads block in recvmmsg on the calling
	// thread instead of waiting in the runtime's poller; Close and
	// SetReadDeadline wake a blocked read with an empty datagram sent to
	// the socket's own port.
	blocking bool
	blockFn  func(fd uintptr) bool // s.doBlockingRead
	reading  atomic.Bool           // a blocking read is in progress
	closing  atomic.Bool
	rcvtimeo time.Duration // SO_RCVTIMEO in force; used by one reader at a time
	dmu      sync.Mutex
	deadline time.Time
}

func dialSocket() (*nlSocket, error) {
	nc, err := netlink.Dial(unix.NETLINK_CONNECTOR, &netlink.Config{Groups: IdxProc})
	if err != nil {
		switch {
		case errors.Is(err, unix.EPERM), errors.Is(err, unix.EACCES):
			return nil, &OpError{Op: "dial", Kind: ErrPermission, Err: err, Detail: "binding to the proc connector group"}
		case errors.Is(err, unix.EPROTONOSUPPORT), errors.Is(err, unix.EAFNOSUPPORT):
			return nil, &OpError{Op: "dial", Kind: ErrNotSupported, Err: err, Detail: "kernel without the netlink connector (CONFIG_CONNECTOR)"}
		}
		return nil, &OpError{Op: "dial", Err: err}
	}
	rc, err := nc.SyscallConn()
	if err != nil {
		_ = nc.Close()
		return nil, &OpError{Op: "dial", Err: err}
	}
	s := &nlSocket{nc: nc, rc: rc, pid: nc.PID()}
	s.readFn = s.doRead
	s.blockFn = s.doBlockingRead
	return s, nil
}

// Send implements Socket.
func (s *nlSocket) Send(payload []byte) error {
	_, err := s.nc.Send(netlink.Message{
		Header: netlink.Header{Type: netlink.Done},
		Data:   payload,
	})
	return err
}

// ReadBatch implements Socket with one recvmmsg(2) call (MSG_DONTWAIT,
// waiting in the runtime's poller).
func (s *nlSocket) ReadBatch(ds []Datagram) (int, error) {
	n := min(len(ds), len(s.hdrs))
	if n == 0 {
		return 0, nil
	}
	for i := range n {
		b := ds[i].Buf
		if len(b) == 0 {
			return 0, errors.New("connector: empty receive slot")
		}
		s.iovs[i] = unix.Iovec{Base: &b[0]}
		s.iovs[i].SetLen(len(b))
		s.hdrs[i] = unix.Mmsghdr{}
		h := &s.hdrs[i].Hdr
		h.Name = (*byte)(unsafe.Pointer(&s.addrs[i]))
		h.Namelen = unix.SizeofSockaddrNetlink
		h.Iov = &s.iovs[i]
		h.SetIovlen(1)
	}
	s.want, s.got, s.errno = n, 0, 0
	if s.blocking {
		if err := s.readBlocking(); err != nil {
			return 0, err
		}
	} else if err := s.rc.Read(s.readFn); err != nil {
		return 0, err
	}
	if s.errno != 0 {
		return 0, os.NewSyscallError("recvmmsg", s.errno)
	}
	for i := range s.got {
		ds[i].N = int(s.hdrs[i].Len)
		ds[i].Port = s.addrs[i].Pid
		ds[i].Truncated = s.hdrs[i].Hdr.Flags&unix.MSG_TRUNC != 0
	}
	return s.got, nil
}

// doRead is the RawConn.Read callback: false asks the poller to wait.
func (s *nlSocket) doRead(fd uintptr) bool {
	for {
		r, _, e := unix.Syscall6(unix.SYS_RECVMMSG, fd, uintptr(unsafe.Pointer(&s.hdrs[0])),
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

// readBlocking is one blocking recvmmsg(2) (MSG_WAITFORONE: it returns as
// soon as one datagram is there), with the deadline as SO_RCVTIMEO.
func (s *nlSocket) readBlocking() error {
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

// doBlockingRead is the RawConn.Read callback of blocking mode; the read
// lock it runs under keeps Close from closing the descriptor meanwhile.
func (s *nlSocket) doBlockingRead(fd uintptr) bool {
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

// setBlocking switches the socket to blocking reads (see nlSocket). It is
// called once, before the first read, and only where the socket can send
// to itself.
func (s *nlSocket) setBlocking() error {
	var serr error
	if err := s.rc.Control(func(fd uintptr) { serr = unix.SetNonblock(int(fd), false) }); err != nil {
		return err
	}
	if serr != nil {
		return os.NewSyscallError("fcntl", serr)
	}
	s.blocking = true
	return nil
}

// sendWake queues the datagram that wakes a blocked read: one byte from
// the socket's own port (the kernel refuses empty ones; Conn ignores
// these).
func (s *nlSocket) sendWake() { _ = s.SendToSelf(make([]byte, 1)) }

// wake makes a blocked read return.
func (s *nlSocket) wake() {
	if s.reading.Load() {
		s.sendWake()
	}
}

// SetReadDeadline implements Socket.
func (s *nlSocket) SetReadDeadline(t time.Time) error {
	if s.blocking {
		s.dmu.Lock()
		s.deadline = t
		s.dmu.Unlock()
		s.wake()
		return nil
	}
	return s.nc.SetReadDeadline(t)
}

// SetReadBuffer implements Socket (SO_RCVBUFFORCE, else SO_RCVBUF).
func (s *nlSocket) SetReadBuffer(bytes int) error { return s.nc.SetReadBuffer(bytes) }

// PortID implements Socket.
func (s *nlSocket) PortID() uint32 { return s.pid }

// Close implements Socket. In blocking mode it wakes a blocked read
// first: the descriptor is closed once that read has returned.
func (s *nlSocket) Close() error {
	if s.blocking {
		s.closing.Store(true)
		s.sendWake() // a read that starts now returns at once
	}
	return s.nc.Close()
}

// SendToSelf queues msg on the socket's own receive queue (sendto(2) to
// its own port id, MSG_DONTWAIT): see Socket.
func (s *nlSocket) SendToSelf(msg []byte) error {
	var errno syscall.Errno
	to := unix.RawSockaddrNetlink{Family: unix.AF_NETLINK, Pid: s.pid}
	err := s.rc.Control(func(fd uintptr) {
		var p unsafe.Pointer
		if len(msg) > 0 {
			p = unsafe.Pointer(&msg[0])
		}
		for {
			_, _, errno = unix.Syscall6(unix.SYS_SENDTO, fd, uintptr(p), uintptr(len(msg)),
				unix.MSG_DONTWAIT, uintptr(unsafe.Pointer(&to)), unix.SizeofSockaddrNetlink)
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

// SetNoENOBUFS sets NETLINK_NO_ENOBUFS.
func (s *nlSocket) SetNoENOBUFS(on bool) error {
	return s.nc.SetOption(netlink.NoENOBUFS, on)
}

// MemInfo reads SO_MEMINFO.
func (s *nlSocket) MemInfo() (MemInfo, error) {
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
		return MemInfo{}, &OpError{Op: "meminfo", Err: err}
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
