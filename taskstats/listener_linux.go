//go:build linux

package taskstats

import (
	"errors"
	"os"
	"syscall"
	"time"
	"unsafe"

	"github.com/mdlayher/genetlink"
	"github.com/mdlayher/netlink"
	"golang.org/x/sys/unix"
)

// Listen registers a taskstats exit listener. It opens a generic netlink
// socket, resolves the "TASKSTATS" family (absent: ErrNotSupported, a
// kernel without CONFIG_TASKSTATS), then proceeds as NewListener: read
// buffer, registration for every possible CPU, acknowledgement (EPERM:
// ErrPermission, the caller lacks CAP_NET_ADMIN; EINVAL: ErrNotSupported,
// the caller is outside the initial user and PID namespaces).
func Listen(cfg *Config) (*Listener, error) {
	s, err := dialSocket()
	if err != nil {
		return nil, err
	}
	return NewListener(s, cfg)
}

// gSocket is the real Socket: a mdlayher/genetlink Conn for requests,
// read with recvmmsg(2) into the caller's slots.
type gSocket struct {
	gc     *genetlink.Conn
	rc     syscall.RawConn
	family uint16
	pid    uint32

	// recvmmsg scratch, used by one ReadBatch at a time.
	hdrs      [MaxBatch]unix.Mmsghdr
	iovs      [MaxBatch]unix.Iovec
	addrs     [MaxBatch]unix.RawSockaddrNetlink
	want      int
	got       int
	errno     syscall.Errno
	readFn    func(fd uintptr) bool // s.doRead, bound once so reads do not allocate
	controlFn func(fd uintptr)      // s.doReadNow, likewise
}

func dialSocket() (*gSocket, error) {
	gc, err := genetlink.Dial(nil)
	if err != nil {
		switch {
		case errors.Is(err, unix.EPERM), errors.Is(err, unix.EACCES):
			return nil, &OpError{Op: "listen", Kind: ErrPermission, Err: err, Detail: "opening a generic netlink socket"}
		case errors.Is(err, unix.EPROTONOSUPPORT), errors.Is(err, unix.EAFNOSUPPORT):
			return nil, &OpError{Op: "listen", Kind: ErrNotSupported, Err: err, Detail: "kernel without generic netlink"}
		}
		return nil, &OpError{Op: "listen", Err: err}
	}
	f, err := gc.GetFamily(FamilyName)
	if err != nil {
		_ = gc.Close()
		if errors.Is(err, os.ErrNotExist) {
			return nil, &OpError{Op: "listen", Kind: ErrNotSupported, Err: err,
				Detail: "no TASKSTATS generic netlink family (kernel without CONFIG_TASKSTATS)"}
		}
		return nil, &OpError{Op: "listen", Err: err, Detail: "resolving the TASKSTATS family"}
	}
	rc, err := gc.SyscallConn()
	if err != nil {
		_ = gc.Close()
		return nil, &OpError{Op: "listen", Err: err}
	}
	s := &gSocket{gc: gc, rc: rc, family: f.ID}
	var sa unix.Sockaddr
	var serr error
	if err := rc.Control(func(fd uintptr) { sa, serr = unix.Getsockname(int(fd)) }); err == nil && serr == nil {
		if nl, ok := sa.(*unix.SockaddrNetlink); ok {
			s.pid = nl.Pid
		}
	}
	s.readFn = s.doRead
	s.controlFn = s.doReadNow
	return s, nil
}

// Send implements Socket.
func (s *gSocket) Send(cmd uint8, attrs []byte) (uint32, error) {
	m, err := s.gc.Send(genetlink.Message{
		Header: genetlink.Header{Command: cmd, Version: 1},
		Data:   attrs,
	}, s.family, netlink.Request|netlink.Acknowledge)
	if err != nil {
		return 0, err
	}
	return m.Header.Sequence, nil
}

// ReadBatch implements Socket with one recvmmsg(2) call (MSG_DONTWAIT,
// waiting in the runtime's poller), then stamps the batch with
// CLOCK_BOOTTIME.
func (s *gSocket) ReadBatch(ds []Datagram) (int, error) {
	n := s.prepare(ds)
	if n <= 0 {
		return 0, s.prepErr(n)
	}
	s.want, s.got, s.errno = n, 0, 0
	if err := s.rc.Read(s.readFn); err != nil {
		return 0, err
	}
	return s.finish(ds)
}

// prepare points the recvmmsg headers at the slots of ds. It returns the
// number of slots, 0 for none, or -1 for an empty slot.
func (s *gSocket) prepare(ds []Datagram) int {
	n := min(len(ds), len(s.hdrs))
	for i := range n {
		b := ds[i].Buf
		if len(b) == 0 {
			return -1
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
	return n
}

func (s *gSocket) prepErr(n int) error {
	if n < 0 {
		return errors.New("taskstats: empty receive slot")
	}
	return nil
}

// finish reports the result of a recvmmsg call into ds and stamps the
// batch with CLOCK_BOOTTIME.
func (s *gSocket) finish(ds []Datagram) (int, error) {
	if s.errno != 0 {
		return 0, os.NewSyscallError("recvmmsg", s.errno)
	}
	now := bootTime()
	for i := range s.got {
		ds[i].N = int(s.hdrs[i].Len)
		ds[i].Port = s.addrs[i].Pid
		ds[i].Truncated = s.hdrs[i].Hdr.Flags&unix.MSG_TRUNC != 0
		ds[i].Time = now
	}
	return s.got, nil
}

// ReadQueued implements Socket: one recvmmsg(2) call with MSG_DONTWAIT,
// outside the runtime's poller (no wait, no deadline).
func (s *gSocket) ReadQueued(ds []Datagram) (int, error) {
	n := s.prepare(ds)
	if n <= 0 {
		return 0, s.prepErr(n)
	}
	s.want, s.got, s.errno = n, 0, 0
	if err := s.rc.Control(s.controlFn); err != nil {
		return 0, err
	}
	if s.errno == unix.EAGAIN {
		return 0, nil
	}
	return s.finish(ds)
}

// bootTime returns CLOCK_BOOTTIME.
func bootTime() time.Duration {
	var ts unix.Timespec
	if err := unix.ClockGettime(unix.CLOCK_BOOTTIME, &ts); err != nil {
		return 0
	}
	return time.Duration(ts.Nano())
}

// doRead is the RawConn.Read callback: false asks the poller to wait.
func (s *gSocket) doRead(fd uintptr) bool {
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

// doReadNow is the RawConn.Control callback of ReadQueued: EAGAIN is left
// in s.errno.
func (s *gSocket) doReadNow(fd uintptr) {
	if !s.doRead(fd) {
		s.errno = unix.EAGAIN
	}
}

// SetReadDeadline implements Socket.
func (s *gSocket) SetReadDeadline(t time.Time) error { return s.gc.SetReadDeadline(t) }

// SetReadBuffer implements Socket (SO_RCVBUFFORCE, else SO_RCVBUF).
func (s *gSocket) SetReadBuffer(bytes int) error { return s.gc.SetReadBuffer(bytes) }

// Family implements Socket.
func (s *gSocket) Family() uint16 { return s.family }

// PortID implements Socket.
func (s *gSocket) PortID() uint32 { return s.pid }

// Close implements Socket.
func (s *gSocket) Close() error { return s.gc.Close() }

// Drops reads SK_MEMINFO_DROPS with SO_MEMINFO.
func (s *gSocket) Drops() (uint32, error) {
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
		return 0, &OpError{Op: "drops", Err: err}
	}
	return v[unix.SK_MEMINFO_DROPS], nil
}

// SetFilter attaches (or, with an empty program, detaches) a classic BPF
// socket filter.
func (s *gSocket) SetFilter(prog []unix.SockFilter) error {
	var serr error
	err := s.rc.Control(func(fd uintptr) {
		if len(prog) == 0 {
			serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_DETACH_FILTER, 0)
			if serr == unix.ENOENT {
				serr = nil // no filter attached
			}
			return
		}
		serr = unix.SetsockoptSockFprog(int(fd), unix.SOL_SOCKET, unix.SO_ATTACH_FILTER,
			&unix.SockFprog{Len: uint16(len(prog)), Filter: &prog[0]})
	})
	if err != nil {
		return err
	}
	return os.NewSyscallError("setsockopt", serr)
}

// AttachBPF attaches an eBPF socket filter program.
func (s *gSocket) AttachBPF(progFD int) error {
	var serr error
	err := s.rc.Control(func(fd uintptr) {
		serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_ATTACH_BPF, progFD)
	})
	if err != nil {
		return err
	}
	return os.NewSyscallError("setsockopt", serr)
}
