package watchman

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/process-watchman/watchman/internal/fakeproc"
	"github.com/process-watchman/watchman/reconcile"
)

// fakeStarts is a record of start times as the kernel filter keeps them
// (start_boottime in ns, by PID).
type fakeStarts map[int]uint64

func (f fakeStarts) ForkStart(pid int) (uint64, bool) {
	ns, ok := f[pid]
	return ns, ok
}

const tickNS = 10_000_000

func startsWriter(t *testing.T, host *fakeproc.Tree, rec fakeStarts, checks int) *writer {
	t.Helper()
	fs, err := reconcile.NewFS(host.Root())
	if err != nil {
		t.Fatal(err)
	}
	return &writer{h: &Hub{}, scanner: fs.NewScanner(), starts: childStarts{f: rec, checks: checks}}
}

// A record is used once the checks are done, without a /proc read; one
// that cannot be this fork's (later than the event allows, or from a
// former holder of the PID) is not, and /proc decides.
func TestChildIdentityFromRecords(t *testing.T) {
	host := fakeHost(t)
	host.Set(fakeproc.Proc{PID: 300, PPID: 101, Comm: "cc", StartTicks: 5000})
	rec := fakeStarts{
		300: 5000 * tickNS,       // the child: used, no read
		301: 4999*tickNS + 12345, // gone from /proc, recorded: used
		302: 5002 * tickNS,       // later than the event (a reuse since): not used
		303: 3000 * tickNS,       // 20 s before the event (a former holder): not used
	}
	wr := startsWriter(t, host, rec, 0)
	for _, tc := range []struct {
		pid    int
		ticks  uint64
		approx bool
		reads  uint64
	}{
		{300, 5000, false, 0},
		{301, 4999, false, 0},
		{302, 5000, true, 1}, // 302 is not in /proc either: derived
		{303, 5000, true, 1}, // likewise
		{404, 5000, true, 1}, // no record, no /proc entry
	} {
		before := wr.h.startReads.Load()
		ticks, approx := wr.childIdentity(tc.pid, 5000)
		if ticks != tc.ticks || approx != tc.approx {
			t.Errorf("child %d: (%d, approx %v), want (%d, approx %v)", tc.pid, ticks, approx, tc.ticks, tc.approx)
		}
		if reads := wr.h.startReads.Load() - before; reads != tc.reads {
			t.Errorf("child %d: %d /proc reads, want %d", tc.pid, reads, tc.reads)
		}
	}
	if got := wr.h.kernelStarts.Load(); got != 2 {
		t.Errorf("KernelStarts = %d, want 2", got)
	}
}

// The first records are checked against /proc; one that disagrees turns
// the records off, and says why.
func TestChildIdentityChecksRecords(t *testing.T) {
	host := fakeHost(t)
	host.Set(fakeproc.Proc{PID: 300, PPID: 101, Comm: "cc", StartTicks: 5000},
		fakeproc.Proc{PID: 301, PPID: 101, Comm: "cc", StartTicks: 5000})
	rec := fakeStarts{300: 5000 * tickNS, 301: 4999 * tickNS, 302: 5000 * tickNS}
	wr := startsWriter(t, host, rec, 2)
	if ticks, approx := wr.childIdentity(300, 5000); ticks != 5000 || approx {
		t.Fatalf("checked child 300: (%d, %v)", ticks, approx)
	}
	if wr.starts.checks != 1 || wr.h.startReads.Load() != 1 || wr.h.kernelStarts.Load() != 0 {
		t.Fatalf("after one check: checks left %d, reads %d, kernel %d", wr.starts.checks, wr.h.startReads.Load(), wr.h.kernelStarts.Load())
	}
	// /proc says 5000, the record 4999: /proc wins, the records are off.
	if ticks, approx := wr.childIdentity(301, 5000); ticks != 5000 || approx {
		t.Fatalf("child 301: (%d, %v), want /proc's 5000", ticks, approx)
	}
	if wr.starts.f != nil || !strings.Contains(wr.starts.reason, "disagreed") {
		t.Fatalf("records still used after a disagreement (reason %q)", wr.starts.reason)
	}
	if r := wr.h.startsReason.Load(); r == nil || *r != wr.starts.reason {
		t.Errorf("HubStats.StartsReason not set: %v", r)
	}
	// 302 is recorded, but the records are off: /proc is read (it is gone).
	if ticks, approx := wr.childIdentity(302, 5000); ticks != 5000 || !approx {
		t.Errorf("child 302 after the records were turned off: (%d, %v), want derived", ticks, approx)
	}
	if wr.h.kernelStarts.Load() != 0 {
		t.Errorf("KernelStarts = %d after the records were turned off", wr.h.kernelStarts.Load())
	}
}

func TestBoottimeOffset(t *testing.T) {
	dir := t.TempDir()
	for _, tc := range []struct {
		name, text string
		want       int64
		bad        bool
	}{
		{"none", "", 0, false},
		{"zero", "monotonic           0         0\nboottime            0         0\n", 0, false},
		{"set", "monotonic 5 0\nboottime 86400 250\n", 86400_000_000_250, false},
		{"numeric", "1 0 0\n7 2 3\n", 2_000_000_003, false},
		{"negative", "boottime -5 0\n", -5_000_000_000, false},
		{"garbage", "boottime x y\n", 0, true},
	} {
		p := filepath.Join(dir, tc.name)
		if tc.name != "none" {
			if err := os.WriteFile(p, []byte(tc.text), 0o600); err != nil {
				t.Fatal(err)
			}
		}
		got, err := boottimeOffset(p)
		if (err != nil) != tc.bad || got != tc.want {
			t.Errorf("%s: (%d, %v), want %d, error %v", tc.name, got, err, tc.want, tc.bad)
		}
	}
}
