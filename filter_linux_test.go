package watchman

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// gatedShell starts sh -c script in its own process group; the script
// reads its go-ahead from the FIFO at $GATE. It returns the shell and a
// function that opens the gate.
func gatedShell(t *testing.T, script string) (*exec.Cmd, func()) {
	t.Helper()
	gate := filepath.Join(t.TempDir(), "gate")
	if err := syscall.Mkfifo(gate, 0o600); err != nil {
		t.Fatal(err)
	}
	sh := exec.Command("sh", "-c", script)
	sh.Env = append(os.Environ(), "GATE="+gate)
	sh.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := sh.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = syscall.Kill(-sh.Process.Pid, syscall.SIGKILL)
		_ = sh.Wait()
	})
	open := func() {
		t.Helper()
		f, err := os.OpenFile(gate, os.O_WRONLY, 0)
		if err != nil {
			t.Fatal(err)
		}
		_, err = f.WriteString("go\n")
		if cerr := f.Close(); err == nil {
			err = cerr
		}
		if err != nil {
			t.Fatal(err)
		}
	}
	return sh, open
}

// nextExit returns the next exit event of sub other than of skip, failing
// after a generous deadline.
func nextExit(t *testing.T, sub *Subscription, what string) Event {
	t.Helper()
	deadline := time.After(30 * time.Second)
	for {
		select {
		case ev, ok := <-sub.C:
			if !ok {
				t.Fatalf("%s: the subscription closed", what)
			}
			if ev.Type == EventExit {
				return ev
			}
		case <-deadline:
			t.Fatalf("%s: no exit event within 30 s", what)
		}
	}
}

// TestIntegrationFilterKeepsOutsidersOut: with the kernel tree filter the
// hub is not woken for the events of processes outside its trees; with it
// turned off it is. The tree's own child, forked after the outsiders and
// delivered after them (one socket queue), is the barrier.
func TestIntegrationFilterKeepsOutsidersOut(t *testing.T) {
	requireConnector(t)
	for _, tc := range []struct {
		name    string
		entries int
		kernel  bool
	}{{"kernel", 0, true}, {"user-space", -1, false}} {
		t.Run(tc.name, func(t *testing.T) {
			sh, open := gatedShell(t, `read x < "$GATE"; sh -c 'exit 3'; read x < "$GATE"`)
			hub := NewHub(&HubConfig{FilterEntries: tc.entries})
			w, err := Attach(sh.Process.Pid, &Config{Hub: hub, Strategy: StrategyConnector})
			if err != nil {
				t.Fatal(err)
			}
			defer w.Close()
			st := hub.Stats()
			if st.KernelFilter != tc.kernel {
				t.Fatalf("HubStats.KernelFilter = %v, want %v (reason %q)", st.KernelFilter, tc.kernel, st.FilterReason)
			}
			if want := map[bool]string{true: "kernel-side tree filter", false: "user-space filter"}[tc.kernel]; !strings.Contains(w.ModeReason(), want) {
				t.Errorf("ModeReason %q does not say %q", w.ModeReason(), want)
			}
			sub := w.Subscribe(1024)
			before := hub.Stats().Forks
			const outsiders = 100
			for range outsiders {
				if err := exec.Command("/bin/true").Run(); err != nil {
					t.Fatal(err)
				}
			}
			open()
			ev := nextExit(t, sub, "the tree's child")
			if ev.Exit.Code != 3 || !ev.Exit.StatusKnown {
				t.Fatalf("the tree's child exit = %+v, want code 3 from the kernel", *ev.Exit)
			}
			forks := hub.Stats().Forks - before
			if tc.kernel && forks > 10 {
				t.Errorf("the hub received %d forks while %d outsiders forked and the tree forked once: the filter let outsiders through", forks, outsiders)
			}
			if !tc.kernel && forks < outsiders {
				t.Errorf("the hub received %d forks with the filter off, want at least the %d outsiders'", forks, outsiders)
			}
		})
	}
}

// TestIntegrationFilterMembersFoundByScan: a child that exists before
// Attach is found by the initial scan, not by a fork event, so the kernel
// never inserted it; the hub must put it in the map before the scan is
// applied, so that its own child's fork and exit status still arrive.
func TestIntegrationFilterMembersFoundByScan(t *testing.T) {
	requireConnector(t)
	sh, open := gatedShell(t, `sh -c 'read x < "$GATE"; sh -c "exit 7"; true' & wait`)
	var child int
	waitFor(t, "the pre-existing child", func() bool {
		kids := childrenOf(t, sh.Process.Pid)
		if len(kids) == 1 {
			child = kids[0]
		}
		return child != 0
	})
	hub := NewHub(nil)
	w, err := Attach(sh.Process.Pid, &Config{Hub: hub, Strategy: StrategyConnector})
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	if !hub.Stats().KernelFilter {
		t.Fatalf("no kernel filter: %s", hub.Stats().FilterReason)
	}
	sub := w.Subscribe(1024)
	open()
	ev := nextExit(t, sub, "the grandchild")
	if ev.Synthetic || !ev.Exit.StatusKnown || ev.Exit.Code != 7 || ev.PPID != child {
		t.Fatalf("first exit = %+v (exit %+v), want the grandchild's (parent %d) exit 7 from the kernel", ev, *ev.Exit, child)
	}
}

// TestIntegrationFilterFailsOpenAndRecovers: a map too small for the tree
// fails open (every event passes) and nothing is missed; once the tree
// shrinks the hub replaces the map and closes it again.
func TestIntegrationFilterFailsOpenAndRecovers(t *testing.T) {
	requireConnector(t)
	const kids = 20
	sh, open := gatedShell(t, fmt.Sprintf(`read x < "$GATE"; i=0; while [ $i -lt %d ]; do sleep 3600 & p="$p $!"; i=$((i+1)); done; read x < "$GATE"; kill $p; wait; read x < "$GATE"`, kids))
	hub := NewHub(&HubConfig{FilterEntries: 4})
	w, err := Attach(sh.Process.Pid, &Config{Hub: hub, Strategy: StrategyConnector, ReconcileInterval: 50 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	if !hub.Stats().KernelFilter {
		t.Fatalf("no kernel filter: %s", hub.Stats().FilterReason)
	}
	sub := w.Subscribe(1 << 12)
	open()
	waitFor(t, "the 20 sleeps as members", func() bool { return len(childrenOf(t, sh.Process.Pid)) == kids && len(w.LivePIDs()) == kids })
	if got := setOf(w.LivePIDs()); !sameSet(got, setOf(childrenOf(t, sh.Process.Pid))) {
		t.Fatalf("members %v, /proc children %v", w.LivePIDs(), childrenOf(t, sh.Process.Pid))
	}
	// The writer looks at the flag within a second of a wake (the
	// repairer's barriers wake it every 50 ms).
	waitFor(t, "the map of 4 entries to be found failing open", func() bool { return hub.Stats().FilterFailOpens > 0 })
	open()
	exits := 0
	for exits < kids {
		ev := nextExit(t, sub, "the sleeps")
		if ev.Synthetic || !ev.Exit.StatusKnown || ev.Exit.Signal != int(syscall.SIGTERM) {
			t.Errorf("exit %+v (exit %+v): want SIGTERM from the kernel", ev, *ev.Exit)
		}
		exits++
	}
	waitFor(t, "the filter to close again", func() bool { return !hub.Stats().FilterOpen })
	if n := len(w.LivePIDs()); n != 0 {
		t.Errorf("%d members left after all exited", n)
	}
}

func setOf(pids []int) map[int]bool {
	m := make(map[int]bool, len(pids))
	for _, p := range pids {
		m[p] = true
	}
	return m
}

func sameSet(a, b map[int]bool) bool {
	if len(a) != len(b) {
		return false
	}
	for p := range a {
		if !b[p] {
			return false
		}
	}
	return true
}

// TestIntegrationHubCoalesce: a hub that holds events to batch its reads
// (HubConfig.Coalesce) still delivers every exit of a burst, in order,
// with the kernel's status, and then a lone exit after a quiet spell.
func TestIntegrationHubCoalesce(t *testing.T) {
	requireConnector(t)
	const burst = 40
	sh, open := gatedShell(t, `read x < "$GATE"; i=0; while [ $i -lt `+fmt.Sprint(burst)+` ]; do sh -c "exit $((i % 7))"; i=$((i+1)); done; read x < "$GATE"; sh -c 'exit 9'; read x < "$GATE"`)
	hub := NewHub(&HubConfig{Coalesce: 5 * time.Millisecond})
	w, err := Attach(sh.Process.Pid, &Config{Hub: hub, Strategy: StrategyConnector})
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	sub := w.Subscribe(4 * burst)
	open()
	for i := range burst {
		ev := nextExit(t, sub, fmt.Sprintf("child %d of the burst", i))
		if !ev.Exit.StatusKnown || ev.Exit.Code != i%7 {
			t.Fatalf("child %d of the burst: exit %+v, want code %d from the kernel", i, *ev.Exit, i%7)
		}
	}
	open()
	if ev := nextExit(t, sub, "the lone child"); !ev.Exit.StatusKnown || ev.Exit.Code != 9 {
		t.Fatalf("the lone child: exit %+v, want code 9 from the kernel", *ev.Exit)
	}
	if l := sub.Lost(); l != 0 {
		t.Errorf("the subscription lost %d events", l)
	}
}
