package watchman

import (
	"fmt"
	"slices"
	"testing"
	"time"
)

// TestIntegrationExecImagesFromKernel: children that exec and exit at
// once, read 20 ms late (HubConfig.Coalesce), are named by the kernel's
// record of their exec: every exit carries the command line they were
// given, though /proc had lost them when the hub read the events.
func TestIntegrationExecImagesFromKernel(t *testing.T) {
	requireConnector(t)
	const n = 40
	sh, open := gatedShell(t, fmt.Sprintf(`read x < "$GATE"; i=0; while [ $i -lt %d ]; do /bin/true "a b" "" "c$i"; i=$((i+1)); done; read x < "$GATE"`, n))
	hub := NewHub(&HubConfig{Coalesce: 20 * time.Millisecond})
	w, err := Attach(sh.Process.Pid, &Config{Hub: hub, Strategy: StrategyConnector, CaptureCmdline: true})
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	if st := hub.Stats(); !st.KernelFilter || st.ImagesReason != "" {
		t.Fatalf("as root on this kernel the filter records exec images: KernelFilter %v (%q), ImagesReason %q",
			st.KernelFilter, st.FilterReason, st.ImagesReason)
	}
	sub := w.Subscribe(4 * n)
	defer sub.Close()
	open()
	want := map[string]bool{}
	for i := range n {
		want[fmt.Sprintf("c%d", i)] = true
	}
	timeout := time.After(60 * time.Second) // bounds a broken run
	for len(want) > 0 {
		select {
		case ev := <-sub.C:
			if ev.Type != EventExit || ev.Process.PID == sh.Process.Pid {
				continue
			}
			last := ""
			if len(ev.Cmdline) > 0 {
				last = ev.Cmdline[len(ev.Cmdline)-1]
			}
			if !want[last] || !slices.Equal(ev.Cmdline, []string{"/bin/true", "a b", "", last}) || ev.Name != "true" {
				t.Errorf("exit of %d: name %q, command line %q; want true, [/bin/true \"a b\" \"\" cI]", ev.Process.PID, ev.Name, ev.Cmdline)
			}
			delete(want, last)
		case <-timeout:
			t.Fatalf("%d of %d exits not seen after 60 s", len(want), n)
		}
	}
	st := hub.Stats()
	t.Logf("%d execs: %d images from the kernel's records, %d read from /proc", n, st.KernelImages, st.ImageReads)
	if st.KernelImages < n {
		t.Errorf("%d images from the kernel's records, want at least %d", st.KernelImages, n)
	}
}

// TestIntegrationExecImagesWithoutFilter: with the kernel filter off the
// hub says why it has no records, and names execs from /proc.
func TestIntegrationExecImagesWithoutFilter(t *testing.T) {
	requireConnector(t)
	sh, open := gatedShell(t, `read x < "$GATE"; sleep 30 & wait`)
	hub := NewHub(&HubConfig{FilterEntries: -1})
	w, err := Attach(sh.Process.Pid, &Config{Hub: hub, Strategy: StrategyConnector, CaptureCmdline: true})
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	sub := w.Subscribe(16)
	defer sub.Close()
	open()
	timeout := time.After(60 * time.Second) // bounds a broken run
	for {
		select {
		case ev := <-sub.C:
			if ev.Type != EventExec || ev.Process.PID == sh.Process.Pid {
				continue
			}
			if !slices.Equal(ev.Cmdline, []string{"sleep", "30"}) {
				t.Errorf("exec of %d: command line %q, want [sleep 30]", ev.Process.PID, ev.Cmdline)
			}
			st := hub.Stats()
			if st.ImagesReason == "" || st.KernelImages != 0 || st.ImageReads == 0 {
				t.Errorf("without the filter: ImagesReason %q, KernelImages %d, ImageReads %d", st.ImagesReason, st.KernelImages, st.ImageReads)
			}
			return
		case <-timeout:
			t.Fatal("no exec of sleep within 60 s")
		}
	}
}
