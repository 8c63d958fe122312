package nlfake

import (
	"errors"
	"net"
	"os"
	"sync"
	"syscall"
	"testing"
	"time"
)

func TestQueueOrderAndOverrun(t *testing.T) {
	var mu sync.Mutex
	q := NewQueue()
	mu.Lock()
	defer mu.Unlock()
	q.Push([]byte("a"), 0)
	q.Push([]byte("bcd"), 7)
	q.Overrun()
	if err := q.Wait(&mu); !errors.Is(err, syscall.ENOBUFS) {
		t.Fatalf("Wait with an overrun pending = %v, want ENOBUFS", err)
	}
	if err := q.Wait(&mu); err != nil {
		t.Fatalf("Wait after the overrun = %v, want the queued datagrams", err)
	}
	d, ok := q.Pop()
	if !ok || string(d.B) != "a" || d.Port != 0 {
		t.Errorf("first Pop = %q from %d, %v", d.B, d.Port, ok)
	}
	buf := make([]byte, 2)
	d, _ = q.Pop()
	if n, trunc := d.CopyTo(buf); n != 2 || !trunc || d.Port != 7 {
		t.Errorf("CopyTo of 3 bytes into 2: %d, truncated %v, port %d", n, trunc, d.Port)
	}
	if _, ok := q.Pop(); ok || q.Len() != 0 {
		t.Errorf("Pop of an empty queue succeeded (len %d)", q.Len())
	}
}

func TestQueueWaitEnds(t *testing.T) {
	var mu sync.Mutex
	q := NewQueue()
	mu.Lock()
	q.SetReadDeadline(time.Now().Add(-time.Second))
	if err := q.Wait(&mu); !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Errorf("Wait past the deadline = %v", err)
	}
	q.SetReadDeadline(time.Time{})
	mu.Unlock()

	// waitWhile runs Wait on another goroutine and end once Wait waits.
	waitWhile := func(end func()) error {
		errc := make(chan error, 1)
		locked := make(chan struct{})
		go func() {
			mu.Lock()
			defer mu.Unlock()
			close(locked)
			errc <- q.Wait(&mu)
		}()
		<-locked
		mu.Lock() // once Wait has unlocked it to wait
		end()
		mu.Unlock()
		return <-errc
	}
	if err := waitWhile(func() { q.Push([]byte("x"), 0) }); err != nil || q.Len() != 1 {
		t.Errorf("Wait during a Push = %v (%d queued)", err, q.Len())
	}
	mu.Lock()
	q.Pop()
	mu.Unlock()
	if err := waitWhile(func() { _ = q.Close() }); !errors.Is(err, net.ErrClosed) {
		t.Errorf("Wait during Close = %v", err)
	}
	mu.Lock()
	defer mu.Unlock()
	if err := q.Close(); !errors.Is(err, net.ErrClosed) {
		t.Errorf("second Close = %v", err)
	}
}
