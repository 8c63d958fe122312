//go:build linux

package nlsock

import (
	"bytes"
	"errors"
	"net"
	"os"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

func dial(t *testing.T) *Socket {
	t.Helper()
	s, err := Dial(unix.NETLINK_GENERIC, nil)
	if err != nil {
		t.Skipf("skipping: no generic netlink socket: %v", err)
	}
	t.Cleanup(func() { _ = s.Close() })
	return s
}

// TestSelfBatch sends datagrams to the socket's own port and reads them
// back in batches: lengths, sender, truncation, and ReadQueued's empty
// queue.
func TestSelfBatch(t *testing.T) {
	s := dial(t)
	msgs := [][]byte{[]byte("one"), []byte("second"), bytes.Repeat([]byte{7}, 40)}
	for _, m := range msgs {
		if err := s.SendToSelf(m); err != nil {
			t.Fatal(err)
		}
	}
	bufs := make([][]byte, 4)
	for i := range bufs {
		bufs[i] = make([]byte, 16)
		if err := s.Slot(i, bufs[i]); err != nil {
			t.Fatal(err)
		}
	}
	n, err := s.ReadBatch(2)
	if err != nil || n != 2 {
		t.Fatalf("ReadBatch(2) = %d, %v; want 2 datagrams", n, err)
	}
	for i := range n {
		got, port, trunc := s.Received(i)
		if got != len(msgs[i]) || port != s.PortID() || trunc || !bytes.Equal(bufs[i][:got], msgs[i]) {
			t.Errorf("slot %d: %q from port %d (truncated %v), want %q from %d", i, bufs[i][:got], port, trunc, msgs[i], s.PortID())
		}
	}
	for i := range bufs {
		_ = s.Slot(i, bufs[i])
	}
	n, err = s.ReadQueued(4)
	if err != nil || n != 1 {
		t.Fatalf("ReadQueued(4) = %d, %v; want the last datagram", n, err)
	}
	if got, _, trunc := s.Received(0); got != 16 || !trunc {
		t.Errorf("a 40-byte datagram in a 16-byte slot: length %d, truncated %v; want 16, true", got, trunc)
	}
	if n, err := s.ReadQueued(4); n != 0 || err != nil {
		t.Errorf("ReadQueued on an empty queue = %d, %v; want 0, nil", n, err)
	}
	if err := s.Slot(0, nil); err == nil {
		t.Error("an empty slot was accepted")
	}
}

// TestDeadlineAndClose checks that a past deadline ends a read and that
// Close ends a blocked one, in both read modes.
func TestDeadlineAndClose(t *testing.T) {
	for _, blocking := range []bool{false, true} {
		s := dial(t)
		if blocking {
			if err := s.SetBlocking(); err != nil {
				t.Fatal(err)
			}
		}
		if err := s.Slot(0, make([]byte, 16)); err != nil {
			t.Fatal(err)
		}
		if err := s.SetReadDeadline(time.Now().Add(-time.Second)); err != nil {
			t.Fatal(err)
		}
		if _, err := s.ReadBatch(1); !errors.Is(err, os.ErrDeadlineExceeded) {
			t.Errorf("blocking %v: read past the deadline = %v", blocking, err)
		}
		if err := s.SetReadDeadline(time.Time{}); err != nil {
			t.Fatal(err)
		}
		errc := make(chan error, 1)
		go func() {
			_, err := s.ReadBatch(1)
			errc <- err
		}()
		if blocking {
			for !s.ReadBlocked() {
				time.Sleep(time.Millisecond) // until the read blocks: a state, not a guess
			}
		}
		if err := s.Close(); err != nil {
			t.Fatal(err)
		}
		// The poller says "use of closed file" (internal/poll's
		// ErrFileClosing); blocking mode says net.ErrClosed.
		if err := <-errc; err == nil || blocking && !errors.Is(err, net.ErrClosed) {
			t.Errorf("blocking %v: read during Close = %v, want closed", blocking, err)
		}
	}
}

// TestMemInfoAndFilters reads SO_MEMINFO and attaches and detaches a
// classic filter that drops everything.
func TestMemInfoAndFilters(t *testing.T) {
	s := dial(t)
	if err := s.SetReadBuffer(1 << 16); err != nil {
		t.Fatal(err)
	}
	m, err := s.MemInfo()
	if err != nil {
		t.Fatal(err)
	}
	if m.Rcvbuf < 1<<16 {
		t.Errorf("Rcvbuf %d after SetReadBuffer(65536)", m.Rcvbuf)
	}
	if err := s.SetFilter([]unix.SockFilter{{Code: unix.BPF_RET | unix.BPF_K, K: 0}}); err != nil {
		t.Fatal(err)
	}
	if err := s.SendToSelf([]byte("dropped")); err != nil {
		t.Fatal(err)
	}
	_ = s.Slot(0, make([]byte, 16))
	if n, err := s.ReadQueued(1); n != 0 || err != nil {
		t.Errorf("a datagram passed a drop-all filter: %d, %v", n, err)
	}
	if err := s.SetFilter(nil); err != nil {
		t.Fatal(err)
	}
	if err := s.SetFilter(nil); err != nil {
		t.Errorf("detaching no filter: %v", err)
	}
	if err := s.DetachFilter(); !errors.Is(err, unix.ENOENT) {
		t.Errorf("DetachFilter without a filter = %v, want ENOENT", err)
	}
}
