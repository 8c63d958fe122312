//go:build linux

package connector

import (
	"errors"
	"os"

	"github.com/mdlayher/netlink"
	"golang.org/x/sys/unix"

	"github.com/process-watchman/watchman/internal/nlsock"
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

// nlSocket is the real Socket: an nlsock.Socket, whose recvmmsg(2) batch
// reads fill the caller's slots.
type nlSocket struct {
	*nlsock.Socket
}

func dialSocket() (*nlSocket, error) {
	s, err := nlsock.Dial(unix.NETLINK_CONNECTOR, &netlink.Config{Groups: IdxProc})
	if err != nil {
		switch {
		case errors.Is(err, unix.EPERM), errors.Is(err, unix.EACCES):
			return nil, &OpError{Op: "dial", Kind: ErrPermission, Err: err, Detail: "binding to the proc connector group"}
		case errors.Is(err, unix.EPROTONOSUPPORT), errors.Is(err, unix.EAFNOSUPPORT):
			return nil, &OpError{Op: "dial", Kind: ErrNotSupported, Err: err, Detail: "kernel without the netlink connector (CONFIG_CONNECTOR)"}
		}
		return nil, &OpError{Op: "dial", Err: err}
	}
	return &nlSocket{s}, nil
}

// Send implements Socket.
func (s *nlSocket) Send(payload []byte) error {
	_, err := s.Socket.Send(netlink.Message{
		Header: netlink.Header{Type: netlink.Done},
		Data:   payload,
	})
	return err
}

// ReadBatch implements Socket with one recvmmsg(2) call (waiting in the
// runtime's poller, or in the call itself in blocking mode).
func (s *nlSocket) ReadBatch(ds []Datagram) (int, error) {
	n := min(len(ds), nlsock.MaxBatch)
	for i := range n {
		if err := s.Slot(i, ds[i].Buf); err != nil {
			return 0, err
		}
	}
	got, err := s.Socket.ReadBatch(n)
	for i := range got {
		ds[i].N, ds[i].Port, ds[i].Truncated = s.Received(i)
	}
	return got, err
}

// setBlocking switches the socket to blocking reads (see
// nlsock.Socket.SetBlocking; Conn skips the wake-up datagrams). It is
// called once, before the first read, and only where the socket can send
// to itself.
func (s *nlSocket) setBlocking() error { return s.SetBlocking() }

// MemInfo reads SO_MEMINFO.
func (s *nlSocket) MemInfo() (MemInfo, error) {
	m, err := s.Socket.MemInfo()
	if err != nil {
		return MemInfo{}, &OpError{Op: "meminfo", Err: err}
	}
	return MemInfo(m), nil
}
