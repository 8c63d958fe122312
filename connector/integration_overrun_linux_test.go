//go:build linux

package connector_test

import (
	"errors"
	"os/exec"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/process-watchman/watchman/connector"
)

// startStorm starts a shell that forks subshells that exit at once, until
// the test ends.
func startStorm(t *testing.T) *exec.Cmd {
	t.Helper()
	storm := exec.Command("/bin/sh", "-c", "while :; do ( : ); done")
	if err := storm.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { stopStorm(storm) })
	return storm
}

func stopStorm(storm *exec.Cmd) {
	if storm.ProcessState == nil {
		_ = storm.Process.Kill()
		_ = storm.Wait()
	}
}

// waitDrops polls the kernel's drop counter, without reading the socket,
// until it passes min: the queue has been full. It waits for that state,
// not for a time.
func waitDrops(t *testing.T, c *connector.Conn, min uint32) uint32 {
	t.Helper()
	deadline := time.Now().Add(hangGuard)
	for {
		mi, err := c.MemInfo()
		if err != nil {
			t.Fatal(err)
		}
		if mi.Drops > min {
			return mi.Drops
		}
		if time.Now().After(deadline) {
			t.Fatalf("the kernel dropped nothing more than %d within %v", min, hangGuard)
		}
		time.Sleep(time.Millisecond)
	}
}

func monotonicNow(t *testing.T) uint64 {
	t.Helper()
	var ts unix.Timespec
	if err := unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts); err != nil {
		t.Fatal(err)
	}
	return uint64(ts.Nano())
}

// freshEvents counts the events that the kernel stamped after t0.
func freshEvents(evs []connector.Event, t0 uint64) int {
	n := 0
	for _, ev := range evs {
		if ev.Timestamp > t0 {
			n++
		}
	}
	return n
}

// TestIntegrationNoENOBUFSStorm overruns a tiny buffer with a fork storm
// it controls and checks, on the kernel's counters and timestamps rather
// than on which events survived, that
//   - with NoENOBUFS, delivery goes on while the storm lasts and the queue
//     stays full: after a partial read, events newer than the read enter
//     the queue before it is ever drained;
//   - the drops Receive reports, reading the counter only around full
//     batches, add up to the kernel's own drop counter;
//   - no ENOBUFS is reported with NoENOBUFS.
func TestIntegrationNoENOBUFSStorm(t *testing.T) {
	requirePrivileged(t)
	storm := startStorm(t)
	buf := make([]connector.Event, 0, connector.MaxBatch)

	c := dialReal(t, &connector.Config{ReadBuffer: 4096, NoENOBUFS: true})
	var reported uint64
	receive := func(dst []connector.Event) []connector.Event {
		t.Helper()
		evs, err := c.Receive(dst)
		var de *connector.DropError
		switch {
		case errors.As(err, &de):
			if !errors.Is(err, connector.ErrOverrun) {
				t.Fatalf("%v does not match ErrOverrun", err)
			}
			reported += de.Dropped
		case err != nil:
			t.Fatalf("Receive: %v", err)
		}
		return evs
	}

	// barrier reads up to a marker queued now.
	barrier := func(token uint32) {
		t.Helper()
		for {
			err := c.Mark(token)
			if err == nil {
				break
			}
			if !errors.Is(err, connector.ErrQueueFull) {
				t.Fatal(err)
			}
			receive(buf[:0])
		}
		for evs := receive(buf[:0]); indexOf(evs, isMark(token)) < 0; evs = receive(buf[:0]) {
		}
	}
	barrier(1) // nothing left from the subscription: reads come from the socket

	// dropsNow reads the kernel's drop counter: a drop after it means the
	// queue was full after it.
	dropsNow := func() uint32 {
		t.Helper()
		mi, err := c.MemInfo()
		if err != nil {
			t.Fatal(err)
		}
		return mi.Drops
	}
	for episode := range 3 {
		waitDrops(t, c, dropsNow()) // the queue is full, and stays so: nobody reads
		t0 := monotonicNow(t)       // events stamped later are not queued yet
		// One batch, bounded below the queue's capacity: 2 old events
		// stay queued.
		if n := len(receive(buf[:0])); n == 0 {
			t.Fatal("no events from a full queue")
		}
		waitDrops(t, c, dropsNow()) // full again: the freed room was refilled
		fresh := freshEvents(receive(buf[:0]), t0)
		t.Logf("episode %d: %d of the next batch newer than the partial read", episode, fresh)
		if fresh == 0 {
			t.Errorf("episode %d: no event newer than the partial read before the queue drained: deaf", episode)
		}
	}
	// Readers of every pace and batch size: overruns of varied lengths,
	// reads that stop short of the batch bound.
	for i := range 30 {
		waitDrops(t, c, dropsNow())
		for range i%4 + 1 {
			receive(buf[:0:[]int{1, 5, connector.MaxBatch}[i%3]])
		}
	}
	// A reader that keeps reading during the storm.
	for range 500 {
		receive(buf[:0])
	}
	if st := c.Stats(); st.Overruns != 0 {
		t.Errorf("Overruns = %d with NoENOBUFS, want 0", st.Overruns)
	}

	// Stop the storm, then read up to a barrier: every drop before it has
	// been reported by then.
	stopStorm(storm)
	barrier(2)
	mi, err := c.MemInfo()
	if err != nil {
		t.Fatal(err)
	}
	st := c.Stats()
	t.Logf("rcvbuf %d bytes: %d events received, %d dropped by the kernel, %d reported", mi.Rcvbuf, st.Received, mi.Drops, reported)
	if mi.Drops == 0 || st.Dropped != uint64(mi.Drops) || reported != st.Dropped {
		t.Errorf("kernel drop counter %d, Stats.Dropped %d, reported by Receive %d; want all equal and non-zero", mi.Drops, st.Dropped, reported)
	}
}
