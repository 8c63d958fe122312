package main

import (
	"path/filepath"
	"strings"
	"testing"

	"github.com/process-watchman/watchman"
)

// TestIntegrationRunUsage runs pwatch run on a command whose child burns
// about 50 ms of CPU, and finds the child's usage in its exit line: the
// kernel's taskstats record (the child is not pwatch's own, so wait4
// cannot be the source).
func TestIntegrationRunUsage(t *testing.T) {
	requireRoot(t, "taskstats needs CAP_NET_ADMIN")
	events := filepath.Join(t.TempDir(), "e.jsonl")
	r := runBin(t, "run", "--events", events, "--", "sh", "-c",
		`sh -c 'i=0; while [ $i -lt 40000 ]; do i=$((i+1)); done; exit 0'; exit 0`)
	if r.code != 0 {
		t.Fatalf("exit status %d; stderr:\n%s", r.code, r.stderr)
	}
	needConnector(t, r.stderr)
	var burner *jsonLine
	lines := readJSONL(t, readFile(t, events))
	for i := range lines {
		if l := &lines[i]; l.Type == "exit" && l.Depth != nil && *l.Depth == 1 {
			burner = l
		}
	}
	switch {
	case burner == nil:
		t.Fatalf("no exit line for the burning child:\n%s", readFile(t, events))
	case burner.Usage == nil:
		t.Fatalf("the burning child's exit has no usage:\n%s\nstderr:\n%s", readFile(t, events), r.stderr)
	case burner.Usage.Source != watchman.UsageTaskstats || burner.Usage.UserCPU <= 0 || burner.Usage.PeakRSS == 0:
		t.Errorf("the burning child's usage: %+v", *burner.Usage)
	}
	if !strings.Contains(r.stderr, "pwatch: CPU of the tree ") || !strings.Contains(r.stderr, "pwatch: top ") {
		t.Errorf("the summary lacks the usage:\n%s", r.stderr)
	}
}
