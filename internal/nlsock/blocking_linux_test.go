//go:build linux

package nlsock

import (
	"bufio"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/mdlayher/netlink"
	"golang.org/x/sys/unix"
)

// sockFD returns the socket's descriptor and its inode.
func sockFD(t *testing.T, s *Socket) (fd int, ino uint64) {
	t.Helper()
	if err := s.rc.Control(func(u uintptr) { fd = int(u) }); err != nil {
		t.Fatal(err)
	}
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		t.Fatal(err)
	}
	return fd, st.Ino
}

// epollTarget is one file watched by an epoll instance of this process.
type epollTarget struct {
	epfd, tfd int
	ino       uint64
}

// epollTargets lists what every epoll instance of this process watches,
// from the "tfd:" lines of their /proc/self/fdinfo (the runtime's poller
// is one of them; the instances are found by their fd links,
// anon_inode:[eventpoll]).
func epollTargets(t *testing.T) (instances int, ts []epollTarget) {
	t.Helper()
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range ents {
		link, err := os.Readlink(filepath.Join("/proc/self/fd", e.Name()))
		if err != nil || link != "anon_inode:[eventpoll]" {
			continue
		}
		epfd, _ := strconv.Atoi(e.Name())
		f, err := os.Open(filepath.Join("/proc/self/fdinfo", e.Name()))
		if err != nil {
			continue // closed meanwhile
		}
		instances++
		sc := bufio.NewScanner(f)
		for sc.Scan() {
			fs := strings.Fields(sc.Text())
			if len(fs) < 2 || fs[0] != "tfd:" {
				continue
			}
			tg := epollTarget{epfd: epfd}
			tg.tfd, _ = strconv.Atoi(fs[1])
			for _, kv := range fs {
				if v, ok := strings.CutPrefix(kv, "ino:"); ok {
					tg.ino, _ = strconv.ParseUint(v, 16, 64)
				}
			}
			ts = append(ts, tg)
		}
		_ = f.Close()
	}
	return instances, ts
}

// watched returns the epoll entries of the descriptor fd or of the file
// with inode ino.
func watched(t *testing.T, fd int, ino uint64) []string {
	t.Helper()
	n, ts := epollTargets(t)
	if n == 0 {
		t.Fatal("no epoll instance in /proc/self/fd: is the runtime's poller not in use?")
	}
	var hits []string
	for _, tg := range ts {
		if tg.tfd == fd || tg.ino == ino {
			hits = append(hits, fmt.Sprintf("epoll fd %d watches fd %d (inode %d)", tg.epfd, tg.tfd, tg.ino))
		}
	}
	return hits
}

// TestBlockingLeavesPoller checks that SetBlocking takes the socket out
// of the runtime's epoll set: before, the descriptor is there (so the
// check sees it); after, no epoll instance of the process watches the
// socket, by descriptor or by inode. Reads, sends and wake-ups still work.
func TestBlockingLeavesPoller(t *testing.T) {
	s := dial(t)
	fd, ino := sockFD(t, s)
	if hits := watched(t, fd, ino); len(hits) == 0 {
		t.Fatalf("the poller does not watch the new socket (fd %d, inode %d): the check sees nothing", fd, ino)
	}
	if err := s.SetBlocking(); err != nil {
		t.Fatal(err)
	}
	nfd, nino := sockFD(t, s)
	if nino != ino {
		t.Fatalf("inode %d after SetBlocking, %d before: not the same socket", nino, ino)
	}
	if hits := watched(t, nfd, nino); len(hits) != 0 {
		t.Errorf("after SetBlocking (fd %d): %v", nfd, hits)
	}
	if link, _ := os.Readlink(fmt.Sprintf("/proc/self/fd/%d", fd)); nfd != fd && link == fmt.Sprintf("socket:[%d]", ino) {
		t.Errorf("the original descriptor %d is still open", fd)
	}
	if fl, err := unix.FcntlInt(uintptr(nfd), unix.F_GETFL, 0); err != nil || fl&unix.O_NONBLOCK != 0 {
		t.Errorf("flags %#x, %v: want a blocking descriptor", fl, err)
	}
	if s.Conn() != nil {
		t.Error("Conn() is not nil in blocking mode")
	}
	// Still the same socket: its port id, and a datagram to itself comes
	// back through a blocking read.
	if err := s.SendToSelf([]byte("hello")); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 16)
	_ = s.Slot(0, buf)
	if n, err := s.ReadBatch(1); n != 1 || err != nil {
		t.Fatalf("ReadBatch = %d, %v", n, err)
	}
	if n, port, _ := s.Received(0); string(buf[:n]) != "hello" || port != s.PortID() {
		t.Errorf("read %q from %d, want \"hello\" from %d", buf[:n], port, s.PortID())
	}
	if hits := watched(t, nfd, nino); len(hits) != 0 {
		t.Errorf("after a blocking read: %v", hits)
	}
}

// openFDs returns the number of open descriptors of the process (-1 if
// /proc cannot tell).
func openFDs() int {
	if ents, err := os.ReadDir("/proc/self/fd"); err == nil {
		return len(ents)
	}
	return -1
}

// TestBlockingCloseDuringRead closes a blocking-mode socket while a read
// is blocked in recvmmsg: the read returns net.ErrClosed, Close returns
// after it, and no descriptor is left open; a second Close fails and a
// later read returns net.ErrClosed.
func TestBlockingCloseDuringRead(t *testing.T) {
	warm := dial(t) // the runtime's poller and the test's own descriptors exist before the count
	_ = warm.Close()
	before := openFDs()
	for i := range 3 { // with a blocked read, and a read that starts during Close
		s, err := Dial(unix.NETLINK_GENERIC, nil)
		if err != nil {
			t.Skipf("skipping: no generic netlink socket: %v", err)
		}
		if err := s.SetBlocking(); err != nil {
			t.Fatal(err)
		}
		_ = s.Slot(0, make([]byte, 16))
		errc := make(chan error, 1)
		go func() {
			var err error
			for err == nil {
				_, err = s.ReadBatch(1) // the wake-up datagram may come first
			}
			errc <- err
		}()
		if i == 0 {
			for !s.ReadBlocked() {
				time.Sleep(time.Millisecond) // until the read blocks: a state, not a guess
			}
		}
		closed := make(chan error, 1)
		go func() { closed <- s.Close() }()
		select {
		case err := <-closed:
			if err != nil {
				t.Fatalf("Close: %v", err)
			}
		case <-time.After(10 * time.Second):
			t.Fatal("Close did not return within 10 s")
		}
		select {
		case err := <-errc:
			if !errors.Is(err, net.ErrClosed) {
				t.Errorf("read during Close = %v, want net.ErrClosed", err)
			}
		case <-time.After(10 * time.Second):
			t.Fatal("the blocked read did not return within 10 s of Close")
		}
		if s.ReadBlocked() {
			t.Error("ReadBlocked after Close")
		}
		if after := openFDs(); after != before {
			t.Errorf("%d descriptors open after Close, %d before Dial", after, before)
		}
		if err := s.Close(); !errors.Is(err, net.ErrClosed) {
			t.Errorf("second Close = %v, want net.ErrClosed", err)
		}
		if _, err := s.ReadBatch(1); !errors.Is(err, net.ErrClosed) {
			t.Errorf("read after Close = %v, want net.ErrClosed", err)
		}
		if err := s.SendToSelf([]byte{1}); err == nil {
			t.Error("SendToSelf after Close succeeded")
		}
	}
}

// TestBlockingDeadline checks SetReadDeadline in blocking mode: a
// deadline in the near future ends a read that finds nothing (as
// SO_RCVTIMEO), a deadline moved while a read blocks takes effect, and a
// datagram before the deadline is read.
func TestBlockingDeadline(t *testing.T) {
	s := dial(t)
	if err := s.SetBlocking(); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 16)
	_ = s.Slot(0, buf)
	if err := s.SetReadDeadline(time.Now().Add(30 * time.Millisecond)); err != nil {
		t.Fatal(err)
	}
	if _, err := s.ReadBatch(1); !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("read with a 30 ms deadline and nothing queued = %v", err)
	}
	var tv unix.Timeval
	if err := s.rc.Control(func(fd uintptr) {
		p, err := unix.GetsockoptTimeval(int(fd), unix.SOL_SOCKET, unix.SO_RCVTIMEO)
		if err == nil {
			tv = *p
		}
	}); err != nil {
		t.Fatal(err)
	}
	if tv.Sec == 0 && tv.Usec == 0 {
		t.Error("SO_RCVTIMEO not set by a deadline in blocking mode")
	}

	// A far deadline, moved into the past while the read blocks.
	if err := s.SetReadDeadline(time.Now().Add(time.Hour)); err != nil {
		t.Fatal(err)
	}
	errc := make(chan error, 1)
	go func() {
		var err error
		for err == nil {
			var n int
			n, err = s.ReadBatch(1)
			if got, port, _ := s.Received(0); err == nil && (n != 1 || got != 1 || port != s.PortID()) {
				err = fmt.Errorf("read %d datagrams (%d bytes from %d), want only wake-ups", n, got, port)
			}
		}
		errc <- err
	}()
	for !s.ReadBlocked() {
		time.Sleep(time.Millisecond)
	}
	if err := s.SetReadDeadline(time.Now().Add(-time.Second)); err != nil {
		t.Fatal(err)
	}
	if err := <-errc; !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("blocked read after a past deadline = %v", err)
	}

	// A datagram before the deadline.
	if err := s.SetReadDeadline(time.Now().Add(time.Hour)); err != nil {
		t.Fatal(err)
	}
	if err := s.SendToSelf([]byte("in time")); err != nil {
		t.Fatal(err)
	}
	_ = s.Slot(0, buf)
	if n, err := s.ReadBatch(1); n != 1 || err != nil {
		t.Fatalf("ReadBatch with a datagram queued = %d, %v", n, err)
	}
	if n, _, _ := s.Received(0); string(buf[:n]) != "in time" {
		t.Errorf("read %q", buf[:n])
	}
}

// TestBlockingOptions checks that the socket options and Send work on the
// detached descriptor: SO_RCVBUF(FORCE) and NETLINK_NO_ENOBUFS read back
// with getsockopt, and a request sent to the kernel is acknowledged.
func TestBlockingOptions(t *testing.T) {
	s := dial(t)
	if err := s.SetBlocking(); err != nil {
		t.Fatal(err)
	}
	getInt := func(level, opt int) int {
		t.Helper()
		var v int
		var gerr error
		if err := s.rc.Control(func(fd uintptr) { v, gerr = unix.GetsockoptInt(int(fd), level, opt) }); err != nil {
			t.Fatal(err)
		}
		if gerr != nil {
			t.Fatal(gerr)
		}
		return v
	}
	if v := getInt(unix.SOL_NETLINK, unix.NETLINK_NO_ENOBUFS); v != 0 {
		t.Fatalf("NETLINK_NO_ENOBUFS %d on a new socket", v)
	}
	if err := s.SetNoENOBUFS(true); err != nil {
		t.Fatal(err)
	}
	if v := getInt(unix.SOL_NETLINK, unix.NETLINK_NO_ENOBUFS); v != 1 {
		t.Errorf("NETLINK_NO_ENOBUFS %d after SetNoENOBUFS(true)", v)
	}
	if err := s.SetNoENOBUFS(false); err != nil {
		t.Fatal(err)
	}
	if v := getInt(unix.SOL_NETLINK, unix.NETLINK_NO_ENOBUFS); v != 0 {
		t.Errorf("NETLINK_NO_ENOBUFS %d after SetNoENOBUFS(false)", v)
	}
	// The kernel doubles the value; SO_RCVBUFFORCE passes rmem_max, which
	// is what a 3 MiB buffer checks where the caller has CAP_NET_ADMIN.
	want := 3 << 20
	if os.Geteuid() != 0 {
		want = 1 << 16
	}
	if err := s.SetReadBuffer(want); err != nil {
		t.Fatal(err)
	}
	if v := getInt(unix.SOL_SOCKET, unix.SO_RCVBUF); v != 2*want {
		t.Errorf("SO_RCVBUF %d after SetReadBuffer(%d), want %d", v, want, 2*want)
	}
	if m, err := s.MemInfo(); err != nil || m.Rcvbuf != uint32(2*want) {
		t.Errorf("MemInfo = %+v, %v; want Rcvbuf %d", m, err, 2*want)
	}

	// A request to the kernel (NLMSG_NOOP with an acknowledgement asked
	// for) comes back as an NLMSG_ERROR with error 0 and our sequence.
	m, err := s.Send(netlink.Message{Header: netlink.Header{Type: netlink.Noop, Flags: netlink.Request | netlink.Acknowledge}})
	if err != nil {
		t.Fatal(err)
	}
	if m.Header.Sequence == 0 || m.Header.PID != s.PortID() || m.Header.Length != unix.SizeofNlMsghdr {
		t.Errorf("message sent: %+v", m.Header)
	}
	buf := make([]byte, 256)
	_ = s.Slot(0, buf)
	if err := s.SetReadDeadline(time.Now().Add(5 * time.Second)); err != nil {
		t.Fatal(err)
	}
	n, err := s.ReadBatch(1)
	if err != nil || n != 1 {
		t.Fatalf("reading the acknowledgement: %d, %v", n, err)
	}
	got, port, _ := s.Received(0)
	var ack netlink.Message
	if err := ack.UnmarshalBinary(buf[:got]); err != nil {
		t.Fatal(err)
	}
	if port != 0 || ack.Header.Type != netlink.Error || ack.Header.Sequence != m.Header.Sequence ||
		len(ack.Data) < 4 || ack.Data[0]|ack.Data[1]|ack.Data[2]|ack.Data[3] != 0 {
		t.Errorf("acknowledgement from port %d: %+v %x", port, ack.Header, ack.Data)
	}
}
