//go:build linux

package taskstats

import (
	"errors"
	"os"
	"time"

	"github.com/mdlayher/genetlink"
	"github.com/mdlayher/netlink"
	"golang.org/x/sys/unix"

	"github.com/process-watchman/watchman/internal/nlsock"
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
	l, err := NewListener(s, cfg)
	if err != nil || cfg == nil || !cfg.OffPoller {
		return l, err
	}
	if err := s.SetBlocking(); err != nil {
		_ = l.Close()
		return nil, &OpError{Op: "listen", Err: err, Detail: "taking the socket out of the runtime's poller"}
	}
	return l, nil
}

// gSocket is the real Socket: an nlsock.Socket, read with recvmmsg(2)
// into the caller's slots, and a mdlayher/genetlink Conn on it for
// requests. The embedded Socket also gives it SetFilter and AttachBPF.
type gSocket struct {
	*nlsock.Socket
	gc     *genetlink.Conn
	family uint16
}

func dialSocket() (*gSocket, error) {
	s, err := nlsock.Dial(unix.NETLINK_GENERIC, nil)
	if err != nil {
		switch {
		case errors.Is(err, unix.EPERM), errors.Is(err, unix.EACCES):
			return nil, &OpError{Op: "listen", Kind: ErrPermission, Err: err, Detail: "opening a generic netlink socket"}
		case errors.Is(err, unix.EPROTONOSUPPORT), errors.Is(err, unix.EAFNOSUPPORT):
			return nil, &OpError{Op: "listen", Kind: ErrNotSupported, Err: err, Detail: "kernel without generic netlink"}
		}
		return nil, &OpError{Op: "listen", Err: err}
	}
	gc := genetlink.NewConn(s.Conn())
	f, err := gc.GetFamily(FamilyName)
	if err != nil {
		_ = s.Close()
		if errors.Is(err, os.ErrNotExist) {
			return nil, &OpError{Op: "listen", Kind: ErrNotSupported, Err: err,
				Detail: "no TASKSTATS generic netlink family (kernel without CONFIG_TASKSTATS)"}
		}
		return nil, &OpError{Op: "listen", Err: err, Detail: "resolving the TASKSTATS family"}
	}
	return &gSocket{Socket: s, gc: gc, family: f.ID}, nil
}

// Send implements Socket. Out of the poller (Config.OffPoller) the
// genetlink Conn is gone with the netlink Conn it wrapped, and the
// request goes through the socket itself: a netlink header, then the
// generic netlink header (command, version 1, reserved) and attrs.
func (s *gSocket) Send(cmd uint8, attrs []byte) (uint32, error) {
	if s.Conn() == nil {
		m, err := s.Socket.Send(netlink.Message{
			Header: netlink.Header{Type: netlink.HeaderType(s.family), Flags: netlink.Request | netlink.Acknowledge},
			Data:   append([]byte{cmd, 1, 0, 0}, attrs...),
		})
		if err != nil {
			return 0, err
		}
		return m.Header.Sequence, nil
	}
	m, err := s.gc.Send(genetlink.Message{
		Header: genetlink.Header{Command: cmd, Version: 1},
		Data:   attrs,
	}, s.family, netlink.Request|netlink.Acknowledge)
	if err != nil {
		return 0, err
	}
	return m.Header.Sequence, nil
}

// ReadBatch implements Socket with one recvmmsg(2) call (waiting in the
// runtime's poller), then stamps the batch with CLOCK_BOOTTIME.
func (s *gSocket) ReadBatch(ds []Datagram) (int, error) {
	return s.read(ds, true)
}

// ReadQueued implements Socket: one recvmmsg(2) call with MSG_DONTWAIT,
// outside the runtime's poller (no wait, no deadline).
func (s *gSocket) ReadQueued(ds []Datagram) (int, error) {
	return s.read(ds, false)
}

// read points the socket's slots at those of ds, reads (waiting for a
// datagram or not) and reports the datagrams into ds, stamped with
// CLOCK_BOOTTIME.
func (s *gSocket) read(ds []Datagram, wait bool) (int, error) {
	n := min(len(ds), nlsock.MaxBatch)
	for i := range n {
		if err := s.Slot(i, ds[i].Buf); err != nil {
			return 0, err
		}
	}
	var got int
	var err error
	if wait {
		got, err = s.Socket.ReadBatch(n)
	} else {
		got, err = s.Socket.ReadQueued(n)
	}
	if got == 0 {
		return 0, err
	}
	now := bootTime()
	for i := range got {
		ds[i].N, ds[i].Port, ds[i].Truncated = s.Received(i)
		ds[i].Time = now
	}
	return got, err
}

// bootTime returns CLOCK_BOOTTIME.
func bootTime() time.Duration {
	var ts unix.Timespec
	if err := unix.ClockGettime(unix.CLOCK_BOOTTIME, &ts); err != nil {
		return 0
	}
	return time.Duration(ts.Nano())
}

// Family implements Socket.
func (s *gSocket) Family() uint16 { return s.family }

// Drops reads SK_MEMINFO_DROPS with SO_MEMINFO.
func (s *gSocket) Drops() (uint32, error) {
	m, err := s.MemInfo()
	if err != nil {
		return 0, &OpError{Op: "drops", Err: err}
	}
	return m.Drops, nil
}
