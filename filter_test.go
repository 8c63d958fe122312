package watchman

import (
	"strings"
	"testing"
)

// TestFilterFallsBackToUserSpace: where the tree filter cannot be loaded
// (here the fake kernel's socket, which takes no eBPF program) the hub
// filters in user space and says why.
func TestFilterFallsBackToUserSpace(t *testing.T) {
	fw := newFakeWorld(t)
	w := fw.attach(Config{})
	defer w.Close()
	st := fw.hub.Stats()
	if st.KernelFilter || st.FilterReason == "" {
		t.Fatalf("HubStats = %+v: want no kernel filter, with a reason", st)
	}
	if r := w.ModeReason(); !strings.Contains(r, "user-space filter") || !strings.Contains(r, st.FilterReason) {
		t.Errorf("ModeReason %q does not say user-space filter and why (%q)", r, st.FilterReason)
	}
	w.Close()
	if st := fw.hub.Stats(); st.FilterReason != "" {
		t.Errorf("HubStats.FilterReason = %q with no Watcher attached, want empty", st.FilterReason)
	}
}
