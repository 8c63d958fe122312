package watchman

import (
	"fmt"
	"testing"
	"time"

	"github.com/process-watchman/watchman/reconcile"
	"github.com/process-watchman/watchman/tracker"
)

// TestIntegrationChildStartsFromKernel: on the real kernel, as root, the
// start times of a tree's new children come from the kernel filter's
// records once the first startChecks are checked, without a /proc read,
// and every identity equals what /proc shows.
func TestIntegrationChildStartsFromKernel(t *testing.T) {
	requireConnector(t)
	const n = 3 * startChecks
	sh, open := gatedShell(t, fmt.Sprintf(`read x < "$GATE"; i=0; while [ $i -lt %d ]; do sleep 600 & i=$((i+1)); done; read x < "$GATE"`, n))
	hub := NewHub(nil)
	w, err := Attach(sh.Process.Pid, &Config{Hub: hub, Strategy: StrategyConnector})
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	if st := hub.Stats(); !st.KernelFilter || st.StartsReason != "" {
		t.Fatalf("as root on this kernel the filter records start times: KernelFilter %v (%q), StartsReason %q",
			st.KernelFilter, st.FilterReason, st.StartsReason)
	}
	open()
	deadline := time.Now().Add(60 * time.Second) // bounds a broken run
	var s Snapshot
	for {
		if s, err = w.Poll(); err != nil {
			t.Fatal(err)
		}
		kids := 0
		for _, p := range s.Processes {
			if p.PID != sh.Process.Pid {
				kids++
			}
		}
		if kids >= n {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d of %d children after 60 s", kids, n)
		}
		time.Sleep(10 * time.Millisecond)
	}
	fs, err := reconcile.NewFS("")
	if err != nil {
		t.Fatal(err)
	}
	sc := fs.NewScanner()
	for _, p := range s.Processes {
		if p.PID == sh.Process.Pid {
			continue
		}
		o := observe(sc, nil, p.PID, false, 0)
		if o.Seen != tracker.SeenAlive {
			t.Errorf("child %d is not in /proc (%v)", p.PID, o.Seen)
			continue
		}
		if o.StartTicks != p.StartTicks {
			t.Errorf("child %d: identity start %d, /proc %d", p.PID, p.StartTicks, o.StartTicks)
		}
	}
	st := hub.Stats()
	t.Logf("%d children: %d start times from the kernel's records, %d read from /proc", n, st.KernelStarts, st.StartReads)
	if st.StartsReason != "" {
		t.Fatalf("the records were turned off: %s", st.StartsReason)
	}
	if st.KernelStarts < n-startChecks {
		t.Errorf("%d start times from the kernel's records, want at least %d of %d children (%d checked against /proc)",
			st.KernelStarts, n-startChecks, n, startChecks)
	}
}
