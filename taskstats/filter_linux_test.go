package taskstats_test

import (
	"encoding/binary"
	"errors"
	"testing"
	"time"

	"github.com/process-watchman/watchman/taskstats"
	"github.com/process-watchman/watchman/taskstats/taskstatstest"
	"golang.org/x/sys/unix"
)

// TestFilterOffsets checks the filter offsets on the captured messages,
// framed as the kernel sends them.
func TestFilterOffsets(t *testing.T) {
	ne := binary.NativeEndian
	for _, tc := range []struct {
		file      string
		pid, tgid uint32
		flags     taskstats.Flags
	}{
		{"v16-single.genl", 10376, 10376, taskstats.FlagGroupDead},
		{"v16-thread.genl", 10380, 10378, 0},
		{"v16-group.genl", 10378, 10378, taskstats.FlagGroupDead},
	} {
		d := taskstatstest.EncodeDatagram(taskstatstest.DefaultFamily, 0, 0, 0, readFixture(t, tc.file))
		if got := ne.Uint32(d[taskstats.FilterOffsetPID:]); got != tc.pid {
			t.Errorf("%s: pid %d at FilterOffsetPID, want %d", tc.file, got, tc.pid)
		}
		if got := ne.Uint32(d[taskstats.FilterOffsetTGID:]); got != tc.tgid {
			t.Errorf("%s: tgid %d at FilterOffsetTGID, want %d", tc.file, got, tc.tgid)
		}
		if got := taskstats.Flags(d[taskstats.FilterOffsetFlags]); got != tc.flags {
			t.Errorf("%s: flags %#x at FilterOffsetFlags, want %#x", tc.file, got, tc.flags)
		}
		if got := ne.Uint16(d[taskstats.FilterOffsetStats:]); got != 16 {
			t.Errorf("%s: version %d at FilterOffsetStats", tc.file, got)
		}
	}
}

func TestFilterFake(t *testing.T) {
	k := taskstatstest.NewKernel()
	l := listenFake(t, k, &taskstats.Config{CPUs: "0"})
	if err := l.SetFilter(nil); !errors.Is(err, taskstats.ErrNotSupported) {
		t.Errorf("SetFilter on the fake: %v", err)
	}
	if err := l.AttachBPF(3); !errors.Is(err, taskstats.ErrNotSupported) {
		t.Errorf("AttachBPF on the fake: %v", err)
	}
}

// tgidFilter returns a classic BPF program that accepts only the records
// of process tgid.
func tgidFilter(tgid int32) []unix.SockFilter {
	var b [4]byte
	binary.NativeEndian.PutUint32(b[:], uint32(tgid))
	return []unix.SockFilter{
		{Code: unix.BPF_LD | unix.BPF_W | unix.BPF_ABS, K: taskstats.FilterOffsetTGID},
		{Code: unix.BPF_JMP | unix.BPF_JEQ | unix.BPF_K, Jt: 0, Jf: 1, K: binary.BigEndian.Uint32(b[:])},
		{Code: unix.BPF_RET | unix.BPF_K, K: 0xffffffff},
		{Code: unix.BPF_RET | unix.BPF_K, K: 0},
	}
}

// TestIntegrationFilter checks that a socket filter runs on the records:
// with a filter on the helper child's TGID, only its records arrive,
// though other processes exit on the host meanwhile.
func TestIntegrationFilter(t *testing.T) {
	requireTaskstats(t)
	l := listen(t, nil)
	h := startHelper(t, "threads")
	if err := l.SetFilter(tgidFilter(h.PID())); err != nil {
		t.Fatal(err)
	}
	// Records queued before the filter was attached pass; skip them by
	// reading until the queue is empty.
	drain(t, l)
	before := l.Stats().Records
	h.Finish(t)
	u, recs := processRecords(t, l, h.PID())
	drain(t, l)
	// processRecords skips other processes' records; the counter shows
	// whether any arrived.
	if n := l.Stats().Records - before; n != uint64(len(recs)) {
		t.Errorf("%d records arrived, %d of them the child's: others passed the filter", n, len(recs))
	}
	if u.Threads < 5 {
		t.Errorf("usage of %d threads, want at least 5", u.Threads)
	}
	t.Logf("%d records of the child (%d task records and the aggregate), stats %+v, load %s", len(recs), u.Threads, l.Stats(), loadavg())
	if err := l.SetFilter(nil); err != nil {
		t.Errorf("detaching: %v", err)
	}
}

// drain reads what is queued until a short read deadline passes.
func drain(t *testing.T, l *taskstats.Listener) {
	t.Helper()
	for {
		if err := l.SetReadDeadline(time.Now().Add(20 * time.Millisecond)); err != nil {
			t.Fatal(err)
		}
		_, err := l.Receive(make([]taskstats.Record, 0, 64))
		if isDeadline(err) {
			return
		}
		if err != nil && !errors.Is(err, taskstats.ErrOverrun) {
			t.Fatal(err)
		}
	}
}
