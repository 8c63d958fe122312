package watchman

import (
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// TestIntegrationUsage: a member that burns 50 ms of CPU in several
// threads (a Go program) gets one Usage covering all of them, from
// taskstats, in its exit event, in the Poll's Delta.Exited and in its
// tombstone; the kernel's CPU total is at least what the process measured
// of itself just before exiting. With the kernel tree filter and without.
func TestIntegrationUsage(t *testing.T) {
	requireConnector(t)
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name    string
		entries int
		how     string
	}{{"kernel", 0, "filtered in the kernel"}, {"user-space", -1, "filtered in user space"}} {
		t.Run(tc.name, func(t *testing.T) {
			out := filepath.Join(t.TempDir(), "cpu")
			t.Setenv("OUT", out)
			t.Setenv("EXE", exe)
			sh, open := gatedShell(t, `read x < "$GATE"; PWATCH_TEST_BURN=50 PWATCH_TEST_BURN_OUT="$OUT" "$EXE"; read x < "$GATE"`)
			w, err := Attach(sh.Process.Pid, &Config{Hub: NewHub(&HubConfig{FilterEntries: tc.entries}), Strategy: StrategyConnector,
				CaptureUsage: true, KeepTombstones: true})
			if err != nil {
				t.Fatal(err)
			}
			defer w.Close()
			if r := w.ModeReason(); !strings.Contains(r, "per-process usage from taskstats, "+tc.how) {
				t.Fatalf("ModeReason %q does not say usage comes from taskstats, %s", r, tc.how)
			}
			sub := w.Subscribe(1024)
			open()
			ev := nextExit(t, sub, "the burner")
			if ev.Exit.Code != 5 {
				t.Fatalf("first exit %+v, want the burner's (status 5)", *ev.Exit)
			}
			b, err := os.ReadFile(out)
			if err != nil {
				t.Fatal(err)
			}
			measured, err := strconv.ParseInt(strings.Fields(string(b))[0], 10, 64)
			if err != nil {
				t.Fatal(err)
			}
			u := ev.Exit.Usage
			if u == nil {
				t.Fatalf("the burner's exit has no Usage; stats %+v", w.Stats())
			}
			cpu := u.UserCPU + u.SystemCPU
			// The process measured its CPU time (getrusage) just before
			// exiting; what it ran after only adds.
			if u.Source != UsageTaskstats || cpu < time.Duration(measured) || u.Threads < 2 || u.PeakRSS < 1<<20 || u.Wall <= 0 {
				t.Errorf("Usage %+v: want source taskstats, CPU at least the %v it measured, several threads (a Go program), a peak RSS of 1 MiB or more, a wall time",
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
				t.Errorf("Delta.Exited %+v lacks the burner's usage", s.Delta.Exited)
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
