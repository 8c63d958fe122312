package watchman

import (
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// usageRun runs the helper mode (see helper in main_test.go) as the only
// child of a gated shell under a Watcher with CaptureUsage on a hub made
// with hc, and returns its exit and what it measured of itself.
func usageRun(t *testing.T, hc *HubConfig, mode string) (*Watcher, Event, int64) {
	t.Helper()
	w, ev, measured := usageRunAll(t, hc, mode)
	return w, ev, measured[0]
}

// usageRunAll is usageRun returning every figure the helper wrote (the
// burn modes write their CPU time, then its user and system parts).
func usageRunAll(t *testing.T, hc *HubConfig, mode string) (*Watcher, Event, []int64) {
	t.Helper()
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(t.TempDir(), "measured")
	t.Setenv("OUT", out)
	t.Setenv("EXE", exe)
	t.Setenv("MODE", mode)
	sh, open := gatedShell(t, `read x < "$GATE"; PWATCH_TEST_HELPER="$MODE" PWATCH_TEST_HELPER_OUT="$OUT" "$EXE"; read x < "$GATE"`)
	w, err := Attach(sh.Process.Pid, &Config{Hub: NewHub(hc), Strategy: StrategyConnector, CaptureUsage: true, KeepTombstones: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { w.Close() })
	sub := w.Subscribe(1024)
	open()
	ev := nextExit(t, sub, mode)
	if ev.Exit.Code != 5 {
		t.Fatalf("first exit %+v, want the helper's (status 5)", *ev.Exit)
	}
	b, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	var measured []int64
	for _, f := range strings.Fields(string(b)) {
		v, err := strconv.ParseInt(f, 10, 64)
		if err != nil {
			t.Fatal(err)
		}
		measured = append(measured, v)
	}
	if len(measured) == 0 {
		t.Fatalf("the helper wrote nothing it measured: %q", b)
	}
	if ev.Exit.Usage == nil {
		t.Fatalf("%s: the exit has no Usage; stats %+v", mode, w.Stats())
	}
	return w, ev, measured
}

// coversCPU reports whether u's CPU time covers the measured one. The
// library gives the scheduler's exact run time (taskstats'
// cpu_run_virtual_total, the threads' sum_exec_runtime), read by the
// kernel at each thread's exit; getrusage, which the process measured
// itself with just before exiting, also adds the stretch each running
// thread has run since the scheduler last folded it in (at a tick or a
// switch: at most a tick, 4 ms at HZ 250, 10 ms at HZ 100). So the
// record may be short of the measurement by up to a tick per thread:
// 211.7 ms against 211.9 ms, with both cores busy.
func coversCPU(u *Usage, measured time.Duration) bool {
	const tick = 10 * time.Millisecond // the longest tick of common kernels (HZ 100)
	return u.UserCPU+u.SystemCPU >= measured-time.Duration(max(u.Threads, 1))*tick
}

// TestIntegrationUsage: a member that burns CPU in a Go program (several
// threads) gets one Usage covering all of them, from taskstats, in its
// exit event, in the Poll's Delta.Exited and in its tombstone; with the
// kernel tree filter and without.
func TestIntegrationUsage(t *testing.T) {
	requireConnector(t)
	for _, tc := range []struct {
		name    string
		entries int
		how     string
	}{{"kernel", 0, "filtered in the kernel"}, {"user-space", -1, "filtered in user space"}} {
		t.Run(tc.name, func(t *testing.T) {
			w, ev, measured := usageRun(t, &HubConfig{FilterEntries: tc.entries}, "burn:50")
			if r := w.ModeReason(); !strings.Contains(r, "per-process usage from taskstats, "+tc.how) {
				t.Errorf("ModeReason %q does not say usage comes from taskstats, %s", r, tc.how)
			}
			u := ev.Exit.Usage
			// The process measured its CPU time (getrusage) just before
			// exiting (coversCPU).
			if u.Source != UsageTaskstats || !coversCPU(u, time.Duration(measured)) || u.Threads < 2 || u.Wall <= 0 {
				t.Errorf("Usage %+v: want source taskstats, the CPU time it measured (%v), several threads (a Go program), a wall time",
					*u, time.Duration(measured))
			}
			s := mustPoll(t, w)
			found := false
			for _, x := range s.Delta.Exited {
				if x.PID == ev.Process.PID {
					found = x.Usage != nil && *x.Usage == *u
				}
			}
			if !found {
				t.Errorf("Delta.Exited %+v lacks the helper's usage", s.Delta.Exited)
			}
			for _, ts := range w.Tombstones() {
				if ts.PID == ev.Process.PID && (ts.Exit.Usage == nil || *ts.Exit.Usage != *u) {
					t.Errorf("tombstone exit %+v lacks the usage", ts.Exit)
				}
			}
			if st := w.Stats(); st.UsageMatched != 1 || st.UsageMissing != 0 || st.UsageReason != "" {
				t.Errorf("stats %+v: want 1 matched, none missing, no reason", st)
			}
		})
	}
}

// TestIntegrationUsageFields checks each field against a known workload
// (issue 11): CPU, two threads' CPU summed, peak RSS, bytes written.
func TestIntegrationUsageFields(t *testing.T) {
	requireConnector(t)
	t.Run("cpu", func(t *testing.T) {
		_, ev, m := usageRunAll(t, nil, "burn:200")
		// The kernel splits CPU time between user and system by sampling
		// at ticks, and the split moves with the load: a 200 ms loop in
		// user space got 137 ms user and 76 ms system on the loaded PVM
		// guest, and 62 ms user and 153 ms system with both cores busy
		// (scripts/hog.sh). So the split is checked against the one the
		// process read of itself (getrusage) just before exiting: each
		// part is at least what it read, up to what it ran after (the
		// exit), and so closer to its own part than to the other one
		// unless the two parts are within a few ticks of each other.
		// That catches user and system swapped, which a fixed split
		// cannot tell from the load.
		measured, mUser, mSys := time.Duration(m[0]), time.Duration(m[1]), time.Duration(m[2])
		u := ev.Exit.Usage
		if !coversCPU(u, measured) {
			t.Errorf("200 ms burn: Usage %+v, want in all the %v measured", *u, measured)
		}
		absd := func(d time.Duration) time.Duration { return max(d, -d) }
		same := absd(u.UserCPU-mUser) + absd(u.SystemCPU-mSys)
		swapped := absd(u.UserCPU-mSys) + absd(u.SystemCPU-mUser)
		const slack = 20 * time.Millisecond // five 4 ms ticks
		if swapped+slack < same {
			t.Errorf("200 ms burn: Usage user %v system %v, the process read user %v system %v of itself: user and system swapped",
				u.UserCPU, u.SystemCPU, mUser, mSys)
		}
	})
	t.Run("threads", func(t *testing.T) {
		_, ev, measured := usageRun(t, nil, "burn2:60")
		// The 120 ms floor needs no tolerance: each thread burned until
		// its own CPU clock passed 60 ms, and a thread's run time is
		// final once it has exited.
		if u := ev.Exit.Usage; u.Threads < 2 || !coversCPU(u, time.Duration(measured)) || u.UserCPU+u.SystemCPU < 120*time.Millisecond {
			t.Errorf("two threads burning 60 ms each: Usage %+v, want one record of several threads with their CPU summed (%v measured)", *u, time.Duration(measured))
		}
	})
	t.Run("memory", func(t *testing.T) {
		_, ev, measured := usageRun(t, nil, "touch:100")
		if u := ev.Exit.Usage; u.PeakRSS < 100<<20 || u.PeakRSS < uint64(measured)-1<<20 {
			t.Errorf("100 MiB touched: peak RSS %d, want 100 MiB or more (the process measured %d)", u.PeakRSS, measured)
		}
	})
	t.Run("write", func(t *testing.T) {
		dir := t.TempDir()
		if fsType(t, dir) == "tmpfs" { // tmpfs writes reach no storage
			dir = filepath.Join(".", "testdata-write-"+strconv.Itoa(os.Getpid()))
			if err := os.Mkdir(dir, 0o700); err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { os.RemoveAll(dir) })
		}
		_, ev, measured := usageRun(t, nil, "write:10:"+filepath.Join(dir, "f"))
		if u := ev.Exit.Usage; u.WriteBytes < uint64(measured) {
			t.Errorf("10 MiB written with fsync: WriteBytes %d, want %d or more", u.WriteBytes, measured)
		}
	})
}

// fsType returns the file system type of dir (from /proc/self/mountinfo,
// the longest mount point that is a prefix).
func fsType(t *testing.T, dir string) string {
	t.Helper()
	b, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		t.Fatal(err)
	}
	best, typ := "", ""
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Fields(line)
		sep := -1
		for i, x := range f {
			if x == "-" {
				sep = i
			}
		}
		if len(f) < 5 || sep < 0 || sep+1 >= len(f) {
			continue
		}
		mp := f[4]
		if (dir == mp || strings.HasPrefix(dir, strings.TrimSuffix(mp, "/")+"/")) && len(mp) >= len(best) {
			best, typ = mp, f[sep+1]
		}
	}
	return typ
}

// TestIntegrationUsageStorm: every member of a storm of 5,000 children
// that exec /bin/true gets a Usage, or the missing count says why (an
// overrun of the taskstats socket); each removal is counted once.
func TestIntegrationUsageStorm(t *testing.T) {
	requireConnector(t)
	const n = 5000
	sh, open := gatedShell(t, `read x < "$GATE"; i=0; while [ $i -lt `+strconv.Itoa(n)+` ]; do /bin/true & i=$((i+1)); done; wait; read x < "$GATE"`)
	hub := NewHub(nil)
	w, err := Attach(sh.Process.Pid, &Config{Hub: hub, Strategy: StrategyConnector, CaptureUsage: true})
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	sub := w.Subscribe(1 << 16)
	open()
	with, without, named := 0, 0, 0
	for with+without < n {
		ev := nextExit(t, sub, "the storm")
		if ev.Exit.Usage != nil {
			with++
			if ev.Name == "" {
				t.Errorf("exit %+v has usage (command %q) but no name", ev.Process, ev.Exit.Usage.Command)
			}
		} else {
			without++
		}
		if ev.NameFromUsage {
			named++
		}
	}
	t.Logf("%d exits named from their usage (their exec's name was lost)", named)
	st := w.Stats()
	if int(st.UsageMatched) != with || int(st.UsageMissing) != without {
		t.Errorf("%d exits with usage, %d without; stats say %d matched, %d missing", with, without, st.UsageMatched, st.UsageMissing)
	}
	if hs := hub.Stats(); without > 0 && hs.UsageOverruns == 0 && hs.Overruns == 0 {
		t.Errorf("%d of %d exits have no usage, and neither socket overran (hub %+v)", without, n, hs)
	}
	t.Logf("%d of %d exits with usage; hub %+v", with, n, hub.Stats())
}
