package main

import (
	"bytes"
	"encoding/json"
	"flag"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/process-watchman/watchman"
)

var update = flag.Bool("update", false, "rewrite golden files")

func golden(t *testing.T, name string, got []byte) {
	t.Helper()
	path := filepath.Join("testdata", name)
	if *update {
		if err := os.WriteFile(path, got, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run with -update to create it)", err)
	}
	if !bytes.Equal(got, want) {
		t.Errorf("%s differs from golden file:\n--- got\n%s--- want\n%s", name, got, want)
	}
}

func TestWriteTreeGolden(t *testing.T) {
	at := time.Unix(1700000000, 0)
	root := watchman.Identity{PID: 100, StartTicks: 1}
	p := func(pid, ppid, parent, depth int, name, state string, cmd ...string) watchman.ProcessInfo {
		return watchman.ProcessInfo{Identity: watchman.Identity{PID: pid, StartTicks: uint64(pid)}, PPID: ppid,
			Parent: parent, Name: name, State: state, Depth: depth, Cmdline: cmd, Started: at}
	}
	snap := watchman.Snapshot{
		Root: root, RootAlive: true, Processes: []watchman.ProcessInfo{
			{Identity: root, PPID: 1, Name: "make", State: "S", Cmdline: []string{"make", "-j4"}},
			p(101, 100, 100, 1, "cc", "R", "cc", "-c", "main.c"),
			p(102, 101, 101, 2, "as", "R", "as", "-o", "main.o"),
			p(103, 100, 100, 1, "sh", "S", "sh", "-c", "sleep 100 &"),
			p(104, 1, 105, 2, "sleep", "S", "sleep", "100"),
			p(106, 103, 103, 2, "weird\nname", "D"),
		},
	}
	snap.Processes[5].Cmdline = []string{"x", strings.Repeat("y", 20)}
	snap.Processes[5].CmdlineTruncated = true
	var b bytes.Buffer
	writeTree(&b, &snap, 0)
	b.WriteString("--- width 30\n")
	writeTree(&b, &snap, 30)
	b.WriteString("--- root gone, truncated\n")
	snap.RootAlive, snap.Truncated = false, true
	snap.Processes = snap.Processes[1:]
	writeTree(&b, &snap, 0)
	golden(t, "tree.golden", b.Bytes())
}

func runPwatch(args ...string) (stdout, stderr string, code int) {
	var o, e bytes.Buffer
	code = run(args, &o, &e)
	return o.String(), e.String(), code
}

func TestUsageErrors(t *testing.T) {
	tests := []struct {
		args []string
		msg  string
	}{
		{[]string{"tree"}, "tree needs 1 argument (PID), got 0"},
		{[]string{"tree", "abc"}, `invalid PID "abc"`},
		{[]string{"tree", "0"}, `invalid PID "0"`},
		{[]string{"tree", "99999999"}, "above pid_max"},
		{[]string{"tree", "--strategy", "psutil", "1"}, `unknown strategy "psutil"`},
		{[]string{"tree", "--max-depth", "-2", "1"}, "MaxDepth: -2 is negative"},
		{[]string{"tree", "--bogus", "1"}, "unknown flag: --bogus"},
		{[]string{"nosuchcommand"}, `unknown command "nosuchcommand"`},
		{[]string{"run"}, "run needs a COMMAND to run"},
		{[]string{"run", "--bogus", "--", "true"}, "unknown flag: --bogus"},
		{[]string{"run", "--events", "-", "--", "true"}, "stdout belongs to COMMAND"},
		{[]string{"run", "--grace", "-1s", "--", "true"}, "--grace must not be negative"},
		{[]string{"run", "--max-depth", "-1", "--", "true"}, "MaxDepth: -1 is negative"},
		{[]string{"run", "--strategy", "psutil", "--", "true"}, `unknown strategy "psutil"`},
		{[]string{"run", "--trace", "/nonexistent/dir/t.json", "--", "true"}, "--trace: open /nonexistent/dir/t.json"},
		{[]string{"watch"}, "watch needs 1 argument (PID), got 0"},
		{[]string{"watch", "1", "2"}, "watch needs 1 argument (PID), got 2"},
		{[]string{"watch", "-5"}, "unknown shorthand flag"},
		{[]string{"watch", "x"}, `invalid PID "x"`},
		{[]string{"watch", "--interval", "-1s", "1"}, "--interval must not be negative"},
		{[]string{"watch", "--poll-interval", "0s", "1"}, "--poll-interval must be positive"},
		{[]string{"watch", "--metrics-addr", "256.0.0.1:x", "1"}, "--metrics-addr: listen tcp"},
		{[]string{"watch", "--events", "/nonexistent/dir/e.jsonl", "1"}, "--events: open /nonexistent/dir/e.jsonl"},
	}
	for _, tt := range tests {
		_, stderr, code := runPwatch(tt.args...)
		if code != 2 || !strings.Contains(stderr, tt.msg) || strings.Count(stderr, "\n") != 1 {
			t.Errorf("pwatch %v: code %d, stderr %q; want 2 and one line with %q", tt.args, code, stderr, tt.msg)
		}
	}
}

func TestNoSuchPID(t *testing.T) {
	// A PID that surely has no process: one that just exited and was reaped.
	c := exec.Command("true")
	if err := c.Run(); err != nil {
		t.Fatal(err)
	}
	for _, cmd := range []string{"tree", "watch"} {
		_, stderr, code := runPwatch(cmd, strconv.Itoa(c.Process.Pid))
		if code != 2 || !strings.Contains(stderr, "no such process") || strings.Count(stderr, "\n") != 1 {
			t.Errorf("%s: code %d stderr %q", cmd, code, stderr)
		}
	}
}

func TestTreeOnRealProcesses(t *testing.T) {
	// A real tree: sh forks two sleepers, one of them through a subshell.
	c := exec.Command("sh", "-c", "sleep 30 & (sleep 31 & wait) & wait")
	if err := c.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		exec.Command("pkill", "-P", strconv.Itoa(c.Process.Pid)).Run()
		c.Process.Kill()
		c.Wait()
	})
	pid := strconv.Itoa(c.Process.Pid)
	var doc treeJSON
	deadline := time.Now().Add(10 * time.Second)
	for {
		stdout, stderr, code := runPwatch("tree", "--json", pid)
		if code != 0 {
			t.Fatalf("code %d: %s", code, stderr)
		}
		doc = treeJSON{}
		if err := json.Unmarshal([]byte(stdout), &doc); err != nil {
			t.Fatalf("bad JSON: %v\n%s", err, stdout)
		}
		sleepers := 0
		for _, p := range doc.Processes {
			// comm changes before the new command line is readable.
			if p.Name == "sleep" && len(p.Cmdline) > 0 && p.Cmdline[0] == "sleep" {
				sleepers++
			}
		}
		if sleepers == 2 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("never saw both sleepers: %+v", doc.Processes)
		}
		time.Sleep(20 * time.Millisecond)
	}
	if doc.Root.PID != c.Process.Pid || !doc.RootAlive || doc.Mode != watchman.ModePoll {
		t.Errorf("doc header: %+v", doc)
	}
	depths := map[string]int{}
	for _, p := range doc.Processes {
		depths[strings.Join(p.Cmdline, " ")] = p.Depth
	}
	if depths["sleep 30"] != 1 || depths["sleep 31"] != 2 {
		t.Errorf("depths: %v", depths)
	}
	stdout, _, code := runPwatch("tree", "--width", "0", pid)
	if code != 0 || !strings.Contains(stdout, "└─ sleep(") || !strings.Contains(stdout, "sleep 31") {
		t.Errorf("tree text (code %d):\n%s", code, stdout)
	}
}

func TestHelpHasExamples(t *testing.T) {
	stdout, _, code := runPwatch("tree", "--help")
	if code != 0 || !strings.Contains(stdout, "Examples:") || !strings.Contains(stdout, "--json") {
		t.Errorf("help (code %d):\n%s", code, stdout)
	}
}

// TestDefaultProcs: pwatch runs on one P unless GOMAXPROCS is set.
func TestDefaultProcs(t *testing.T) {
	if got := defaultProcs(""); got != 1 {
		t.Errorf("defaultProcs with GOMAXPROCS unset = %d, want 1", got)
	}
	for _, env := range []string{"1", "2", "8"} {
		if got := defaultProcs(env); got != 0 {
			t.Errorf("defaultProcs(%q) = %d, want 0 (the environment's choice stands)", env, got)
		}
	}
}
