package watchman

import (
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

// threadsAtNice lists this process's threads whose nice value is n
// (field 19 of /proc/self/task/TID/stat).
func threadsAtNice(t *testing.T, n int) []string {
	t.Helper()
	dirs, err := filepath.Glob("/proc/self/task/*/stat")
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, d := range dirs {
		b, err := os.ReadFile(d)
		if err != nil {
			continue // a thread that ended
		}
		s := string(b)
		f := strings.Fields(s[strings.LastIndexByte(s, ')')+2:])
		if v, err := strconv.Atoi(f[16]); err == nil && v == n {
			out = append(out, d)
		}
	}
	return out
}

// TestHubNice: HubConfig.Nice runs the writer and the repairer on threads
// of their own at that nice value.
func TestHubNice(t *testing.T) {
	fw := newFakeWorld(t)
	fw.hub.cfg.Nice = 7
	if n := len(threadsAtNice(t, 7)); n != 0 {
		t.Fatalf("%d threads at nice 7 before the hub opened", n)
	}
	w := fw.attach(Config{})
	if got := threadsAtNice(t, 7); len(got) != 2 {
		t.Errorf("threads at nice 7 with the hub open: %v, want the writer's and the repairer's", got)
	}
	if e := fw.hub.Stats().NiceError; e != "" {
		t.Errorf("NiceError %q", e)
	}
	w.Close()
	// The runtime may keep the threads: they are back at nice 0 (the
	// check before Attach, run with -count, sees to that).
}
