package taskstats_test

import (
	"errors"
	"os"
	"syscall"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/process-watchman/watchman/taskstats"
	"github.com/process-watchman/watchman/taskstats/taskstatstest"
)

func listenFake(t *testing.T, k *taskstatstest.Kernel, cfg *taskstats.Config) *taskstats.Listener {
	t.Helper()
	l, err := k.Listen(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = l.Close() })
	return l
}

func TestListenerRegisters(t *testing.T) {
	k := taskstatstest.NewKernel()
	l := listenFake(t, k, &taskstats.Config{CPUs: "0-3"})
	if got := k.Registered(); got != "0-3" {
		t.Errorf("registered for %q, want 0-3", got)
	}
	if got := k.ReadBuffer(); got != taskstats.DefaultReadBuffer {
		t.Errorf("read buffer %d, want %d", got, taskstats.DefaultReadBuffer)
	}
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	if err := l.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
	want := []taskstatstest.Request{
		{Cmd: taskstats.CmdGet, Register: "0-3", Seq: 1001},
		{Cmd: taskstats.CmdGet, Deregister: "0-3", Seq: 1002},
	}
	if d := cmp.Diff(want, k.Requests()); d != "" {
		t.Errorf("requests (-want +got):\n%s", d)
	}
	if !k.Closed() || k.Registered() != "" {
		t.Errorf("after Close: socket closed %v, registered %q", k.Closed(), k.Registered())
	}
}

func TestListenerDefaultsToPossibleCPUs(t *testing.T) {
	want, err := taskstats.PossibleCPUs()
	if err != nil {
		t.Skipf("no /sys/devices/system/cpu/possible: %v", err)
	}
	k := taskstatstest.NewKernel()
	l := listenFake(t, k, &taskstats.Config{ReadBuffer: -1})
	if l.CPUs() != want || k.Registered() != want {
		t.Errorf("CPUs %q, registered %q, want %q", l.CPUs(), k.Registered(), want)
	}
	if k.ReadBuffer() != 0 {
		t.Errorf("negative ReadBuffer set the buffer to %d", k.ReadBuffer())
	}
}

func TestListenerRefused(t *testing.T) {
	for _, tc := range []struct {
		errno syscall.Errno
		want  error
	}{
		{syscall.EPERM, taskstats.ErrPermission},
		{syscall.EINVAL, taskstats.ErrNotSupported},
		{syscall.ENOMEM, syscall.ENOMEM},
	} {
		t.Run(tc.errno.Error(), func(t *testing.T) {
			k := taskstatstest.NewKernel()
			k.Refuse(tc.errno)
			_, err := k.Listen(&taskstats.Config{CPUs: "0"})
			if !errors.Is(err, tc.want) || !errors.Is(err, tc.errno) {
				t.Fatalf("Listen: %v, want %v and %v", err, tc.want, tc.errno)
			}
			if !k.Closed() {
				t.Error("socket not closed after a failed Listen")
			}
			if tc.errno == syscall.EPERM && !errors.Is(err, taskstats.ErrNotSupported) {
				t.Error("ErrPermission does not match ErrNotSupported")
			}
		})
	}
}

func TestListenerSilentKernel(t *testing.T) {
	k := taskstatstest.NewKernel()
	k.SetSilent(true)
	_, err := k.Listen(&taskstats.Config{CPUs: "0", AckTimeout: time.Millisecond})
	if !errors.Is(err, taskstats.ErrNotSupported) {
		t.Fatalf("Listen: %v, want ErrNotSupported", err)
	}
}

func task(pid, tgid int32, utime time.Duration) taskstats.Record {
	return taskstats.Record{Kind: taskstats.KindPID, Version: 16, PID: pid, TGID: tgid, UserCPU: utime,
		Comm: comm("t"), Elapsed: time.Second, ProcessElapsed: time.Second}
}

func TestListenerReceive(t *testing.T) {
	k := taskstatstest.NewKernel()
	k.SetTime(100 * time.Second)
	l := listenFake(t, k, &taskstats.Config{CPUs: "0"})
	single := task(10, 10, time.Millisecond)
	single.Flags = taskstats.FlagGroupDead
	k.ExitTask(&single, nil)
	threads := []taskstats.Record{task(21, 20, time.Millisecond), task(20, 20, 2*time.Millisecond)}
	k.ExitProcess(20, threads)

	buf := make([]taskstats.Record, 0, 2*taskstats.MaxBatch)
	var got []taskstats.Record
	for len(got) < 4 {
		recs, err := l.Receive(buf[:0])
		if err != nil {
			t.Fatal(err)
		}
		got = append(got, recs...)
	}
	kinds := []taskstats.Kind{taskstats.KindPID, taskstats.KindPID, taskstats.KindPID, taskstats.KindTGID}
	pids := []int32{10, 21, 20, 0}
	for i, r := range got {
		if r.Kind != kinds[i] || r.PID != pids[i] || r.Received != 100*time.Second {
			t.Errorf("record %d: kind %v pid %d received %v", i, r.Kind, r.PID, r.Received)
		}
	}
	if !got[2].WithGroup || !got[2].GroupDead() || got[3].UserCPU != 3*time.Millisecond {
		t.Errorf("last thread %+v, aggregate %+v", got[2], got[3])
	}
	st := l.Stats()
	if st.Records != 4 || st.Acks != 1 || st.Datagrams != 4 {
		t.Errorf("stats %+v", st)
	}
}

func TestListenerDropsForged(t *testing.T) {
	k := taskstatstest.NewKernel()
	l := listenFake(t, k, &taskstats.Config{CPUs: "0"})
	rec := task(5, 5, 0)
	msg := taskstatstest.EncodeMessage(&rec, nil)
	k.EmitRaw(1234, taskstatstest.EncodeDatagram(taskstatstest.DefaultFamily, 0, 0, 0, msg))   // from user space
	k.EmitRaw(0, taskstatstest.EncodeDatagram(taskstatstest.DefaultFamily, 0, 0, 99, msg))     // nlmsg_pid set
	k.EmitRaw(0, taskstatstest.EncodeDatagram(taskstatstest.DefaultFamily+1, 0, 0, 0, msg))    // other family
	k.EmitRaw(0, taskstatstest.EncodeDatagram(taskstatstest.DefaultFamily, 0, 0, 0, msg[:40])) // truncated
	k.EmitRaw(0, []byte{1, 2, 3})                                                              // runt
	k.EmitRaw(0, make([]byte, taskstats.DatagramSize+1))                                       // too large
	get := taskstatstest.EncodeMessage(&rec, nil)
	get[0] = taskstats.CmdGet
	k.EmitRaw(0, taskstatstest.EncodeDatagram(taskstatstest.DefaultFamily, 0, 0, 0, get)) // other command
	k.ExitTask(&rec, nil)
	recs, err := l.Receive(nil)
	if err != nil {
		t.Fatal(err)
	}
	if len(recs) != 1 || recs[0].PID != 5 {
		t.Fatalf("got %+v", recs)
	}
	st := l.Stats()
	want := taskstats.Stats{Datagrams: 9, Records: 1, Acks: 1, Spoofed: 2, Foreign: 2, Malformed: 3}
	st.Reads = 0 // depends on how the fake's queue was batched
	if st != want {
		t.Errorf("stats %+v, want %+v", st, want)
	}
}

func TestListenerOverrun(t *testing.T) {
	k := taskstatstest.NewKernel()
	l := listenFake(t, k, &taskstats.Config{CPUs: "0"})
	k.SetCapacity(2)
	for i := range 5 {
		r := task(int32(100+i), int32(100+i), 0)
		k.ExitTask(&r, nil)
	}
	buf := make([]taskstats.Record, 0, 2*taskstats.MaxBatch)
	var got []taskstats.Record
	recs, err := l.Receive(buf[:0])
	if !errors.Is(err, taskstats.ErrOverrun) {
		t.Fatalf("Receive: %v, want ErrOverrun", err)
	}
	got = append(got, recs...)
	recs, err = l.Receive(buf[:0])
	if err != nil {
		t.Fatalf("Receive after the overrun: %v", err)
	}
	got = append(got, recs...)
	if len(got) != 2 {
		t.Errorf("got %d records, want the 2 that fitted", len(got))
	}
	if d, _ := l.Drops(); d != 3 {
		t.Errorf("Drops %d, want 3", d)
	}
	// Still usable.
	r := task(200, 200, 0)
	k.ExitTask(&r, nil)
	if recs, err := l.Receive(nil); err != nil || len(recs) != 1 || recs[0].PID != 200 {
		t.Errorf("after the overrun: %v %+v", err, recs)
	}
	if st := l.Stats(); st.Overruns != 1 {
		t.Errorf("Overruns %d, want 1", st.Overruns)
	}
}

func TestListenerCloseUnblocksReceive(t *testing.T) {
	k := taskstatstest.NewKernel()
	l := listenFake(t, k, &taskstats.Config{CPUs: "0"})
	done := make(chan error, 1)
	go func() {
		_, err := l.Receive(nil)
		done <- err
	}()
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	if err := <-done; !errors.Is(err, taskstats.ErrClosed) {
		t.Fatalf("Receive: %v, want ErrClosed", err)
	}
	if _, err := l.Receive(nil); !errors.Is(err, taskstats.ErrClosed) {
		t.Fatalf("Receive after Close: %v", err)
	}
}

func TestListenerDeadline(t *testing.T) {
	k := taskstatstest.NewKernel()
	l := listenFake(t, k, &taskstats.Config{CPUs: "0"})
	if err := l.SetReadDeadline(time.Now().Add(-time.Second)); err != nil {
		t.Fatal(err)
	}
	if _, err := l.Receive(nil); !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("Receive: %v, want os.ErrDeadlineExceeded", err)
	}
}

// TestListenerKeepsMessagesTogether checks that a Receive into a full
// slice (one spare slot) still returns both records of a message.
func TestListenerKeepsMessagesTogether(t *testing.T) {
	k := taskstatstest.NewKernel()
	l := listenFake(t, k, &taskstats.Config{CPUs: "0"})
	k.ExitProcess(30, []taskstats.Record{task(31, 30, 0), task(30, 30, 0)})
	dst := make([]taskstats.Record, 0, 1)
	var got []taskstats.Record
	for len(got) < 3 {
		recs, err := l.Receive(dst[:0])
		if err != nil {
			t.Fatal(err)
		}
		if n := len(recs); n == 0 || recs[n-1].WithGroup {
			t.Fatalf("batch %+v ends with a record whose aggregate is left for the next", recs)
		}
		got = append(got, recs...)
	}
}

func TestListenerReceiveAllocs(t *testing.T) {
	k := taskstatstest.NewKernel()
	l := listenFake(t, k, &taskstats.Config{CPUs: "0"})
	r := task(5, 5, 0)
	buf := make([]taskstats.Record, 0, 2*taskstats.MaxBatch)
	// Warm up (the first read allocates nothing either, but keep the
	// measurement to the steady state).
	k.ExitTask(&r, nil)
	if _, err := l.Receive(buf[:0]); err != nil {
		t.Fatal(err)
	}
	n := testing.AllocsPerRun(50, func() {
		k.ExitTask(&r, nil) // the fake's encoding allocates; count it out below
	})
	total := testing.AllocsPerRun(50, func() {
		k.ExitTask(&r, nil)
		if _, err := l.Receive(buf[:0]); err != nil {
			t.Fatal(err)
		}
	})
	if total-n > 0 {
		t.Errorf("Receive allocates %v times per call", total-n)
	}
}

// TestListenerRecordsBeforeAck checks that records arriving between the
// registration and its acknowledgement are kept for the first Receive.
func TestListenerRecordsBeforeAck(t *testing.T) {
	k := taskstatstest.NewKernel()
	k.SetBeforeAck(task(1, 1, 0), task(2, 2, 0), task(3, 3, 0))
	l := listenFake(t, k, &taskstats.Config{CPUs: "0"})
	later := task(4, 4, 0)
	k.ExitTask(&later, nil)
	var pids []int32
	dst := make([]taskstats.Record, 0, 2)
	for len(pids) < 4 {
		recs, err := l.Receive(dst[:0])
		if err != nil {
			t.Fatal(err)
		}
		for _, r := range recs {
			pids = append(pids, r.PID)
		}
	}
	if d := cmp.Diff([]int32{1, 2, 3, 4}, pids); d != "" {
		t.Errorf("records (-want +got):\n%s", d)
	}
}

// TestListenerMinReadIntervalClose checks that Close ends a Receive that
// waits out MinReadInterval.
func TestListenerMinReadIntervalClose(t *testing.T) {
	k := taskstatstest.NewKernel()
	l := listenFake(t, k, &taskstats.Config{CPUs: "0", MinReadInterval: time.Hour})
	r := task(5, 5, 0)
	k.ExitTask(&r, nil)
	if recs, err := l.Receive(nil); err != nil || len(recs) != 1 {
		t.Fatalf("first Receive (no wait): %v %+v", err, recs)
	}
	k.ExitTask(&r, nil) // queued, but the next read is an hour away
	done := make(chan error, 1)
	go func() {
		_, err := l.Receive(nil)
		done <- err
	}()
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	if err := <-done; !errors.Is(err, taskstats.ErrClosed) {
		t.Fatalf("Receive: %v, want ErrClosed", err)
	}
}

// TestListenerSync checks that Sync returns what is queued, without
// waiting, and nothing when the queue is empty.
func TestListenerSync(t *testing.T) {
	k := taskstatstest.NewKernel()
	k.SetBeforeAck(task(1, 1, 0))
	l := listenFake(t, k, &taskstats.Config{CPUs: "0", MinReadInterval: time.Hour})
	for i := range 70 { // more than one batch of MaxBatch
		r := task(int32(100+i), int32(100+i), 0)
		k.ExitTask(&r, nil)
	}
	recs, err := l.Sync(nil)
	if err != nil || len(recs) != 71 || recs[0].PID != 1 || recs[70].PID != 169 {
		t.Fatalf("Sync: %v, %d records", err, len(recs))
	}
	if recs, err := l.Sync(nil); err != nil || len(recs) != 0 {
		t.Fatalf("Sync of an empty queue: %v, %d records", err, len(recs))
	}
	k.Overrun()
	if _, err := l.Sync(nil); !errors.Is(err, taskstats.ErrOverrun) {
		t.Fatalf("Sync after an overrun: %v", err)
	}
	_ = l.Close()
	if _, err := l.Sync(nil); !errors.Is(err, taskstats.ErrClosed) {
		t.Fatalf("Sync after Close: %v", err)
	}
}
