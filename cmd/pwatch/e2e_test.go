package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"go.uber.org/goleak"
)

// binPath is the pwatch binary TestMain builds, for tests that run it as a
// process of its own (pwatch run re-executes itself, signals, exit codes).
var binPath string

// TestMain builds pwatch, runs the tests, and fails them if a goroutine
// outlives them (the in-process commands must release everything).
func TestMain(m *testing.M) {
	if len(os.Args) > 1 && os.Args[1] == gateArg {
		// pwatch run, in process, re-executes the test binary.
		os.Exit(gateMain(os.Args[2:]))
	}
	if len(os.Args) > 1 && os.Args[1] == guardArg {
		os.Exit(guardMain(os.Args[2:]))
	}
	code := func() int {
		dir, err := os.MkdirTemp("", "pwatch-test-")
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		defer os.RemoveAll(dir)
		// The tests run the binary as uid 65534 too.
		if err := os.Chmod(dir, 0o755); err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		binPath = filepath.Join(dir, "pwatch")
		if prebuilt := os.Getenv("PWATCH_TEST_BIN"); prebuilt != "" {
			// A pwatch built beforehand, for a test binary run where
			// there is no Go toolchain (as another user, say).
			binPath = prebuilt
		} else {
			build := exec.Command("go", "build", "-o", binPath, ".")
			build.Stderr = os.Stderr
			if err := build.Run(); err != nil {
				fmt.Fprintln(os.Stderr, "building pwatch:", err)
				return 1
			}
		}
		// Start the runtime's network poller, which keeps descriptors
		// of its own, before counting descriptors.
		if ln, err := net.Listen("tcp", "127.0.0.1:0"); err == nil {
			ln.Close()
		}
		fds := openFDs()
		code := m.Run()
		if code == 0 {
			if err := goleak.Find(); err != nil {
				fmt.Fprintln(os.Stderr, "leaked goroutines:", err)
				return 1
			}
			if after := openFDs(); len(after) > len(fds) {
				fmt.Fprintf(os.Stderr, "leaked descriptors: %v before, %v after\n", fds, after)
				return 1
			}
		}
		return code
	}()
	os.Exit(code)
}

// openFDs lists this process's open descriptors and what they are.
func openFDs() []string {
	ents, _ := os.ReadDir("/proc/self/fd")
	var out []string
	for _, e := range ents {
		target, _ := os.Readlink(filepath.Join("/proc/self/fd", e.Name()))
		out = append(out, e.Name()+"="+target)
	}
	return out
}

// pwatchResult is what a pwatch process did.
type pwatchResult struct {
	stdout, stderr string
	code           int
}

// runBin runs the pwatch binary to its end.
func runBin(t *testing.T, args ...string) pwatchResult {
	t.Helper()
	return runAsUser(t, -1, args...)
}

// jsonLine is the decoded form of one --events line: the writer's own
// type, decoded with unknown fields refused, so a field written under a
// name the type does not have fails the tests.
type jsonLine = eventLine

func readJSONL(t *testing.T, data []byte) []jsonLine {
	t.Helper()
	var out []jsonLine
	sc := bufio.NewScanner(bytes.NewReader(data))
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		var l jsonLine
		dec := json.NewDecoder(bytes.NewReader(sc.Bytes()))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&l); err != nil {
			// snapshot lines have fields of their own
			if !bytes.Contains(sc.Bytes(), []byte(`"type":"snapshot"`)) {
				t.Fatalf("bad line %s: %v", sc.Bytes(), err)
			}
			l = jsonLine{Type: "snapshot"}
		}
		if l.Type != "snapshot" {
			if _, err := time.Parse(time.RFC3339Nano, l.Time); err != nil {
				t.Fatalf("bad time in %s: %v", sc.Bytes(), err)
			}
		}
		out = append(out, l)
	}
	return out
}

func readFile(t *testing.T, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

type procKey struct {
	pid   int
	ticks uint64
}

// The script of TestRunTree: 50 children that live about a millisecond, a
// failing child, a child killed by a signal, and an orphan that outlives
// the root and exits 3.
const treeScript = `for i in $(seq 50); do /bin/true; done
sh -c 'exit 5'
sh -c 'kill -9 $$'
(sleep 0.2; exit 3) &
exit 7`

func TestRunTree(t *testing.T) {
	dir := t.TempDir()
	events, trace := filepath.Join(dir, "f.jsonl"), filepath.Join(dir, "t.json")
	r := runBin(t, "run", "--wait", "--events", events, "--trace", trace, "--", "sh", "-c", treeScript)
	if r.code != 7 {
		t.Fatalf("exit status %d, want the root's 7; stderr:\n%s", r.code, r.stderr)
	}
	needConnector(t, r.stderr)
	lines := readJSONL(t, readFile(t, events))
	forks := map[procKey]jsonLine{}
	exits := map[procKey]jsonLine{}
	var root *jsonLine
	lost := false
	for i, l := range lines {
		k := procKey{l.PID, l.StartTicks}
		switch l.Type {
		case "fork":
			if _, dup := forks[k]; dup {
				t.Errorf("two forks of %v", k)
			}
			forks[k] = l
		case "exit":
			if _, dup := exits[k]; dup {
				t.Errorf("two exits of %v", k)
			}
			exits[k] = l
			if *l.Depth == 0 {
				root = &lines[i]
			}
		case "lost":
			lost = true
		}
	}
	if lost {
		t.Logf("events were lost; counts are not checked exactly")
	}
	if root == nil || root.ExitCode == nil || *root.ExitCode != 7 {
		t.Fatalf("root exit line: %+v", root)
	}
	// Every forked process exited (--wait waits for the orphan), and
	// every exit but the root's has its fork.
	for k := range forks {
		if _, ok := exits[k]; !ok && !lost {
			t.Errorf("%v forked but never exited", k)
		}
	}
	for k, l := range exits {
		if _, ok := forks[k]; !ok && *l.Depth > 0 && !lost {
			t.Errorf("%v exited but never forked: %+v", k, l)
		}
	}
	count := func(f func(l jsonLine) bool) int {
		n := 0
		for _, l := range exits {
			if f(l) {
				n++
			}
		}
		return n
	}
	// 50 true and seq exit 0 at depth 1. (Not all say "true": a process
	// that is gone before the Watcher reads /proc at its exec keeps its
	// parent's name.)
	zeros := count(func(l jsonLine) bool { return *l.Depth == 1 && l.ExitCode != nil && *l.ExitCode == 0 })
	t.Logf("%d of 50 exits named true", count(func(l jsonLine) bool { return l.Comm == "true" }))
	fives := count(func(l jsonLine) bool { return l.ExitCode != nil && *l.ExitCode == 5 })
	nines := count(func(l jsonLine) bool { return l.Signal == 9 })
	threes := count(func(l jsonLine) bool { return l.ExitCode != nil && *l.ExitCode == 3 })
	if !lost && (zeros != 51 || fives != 1 || nines != 1 || threes != 1) {
		t.Errorf("exits: %d exit 0 at depth 1, %d exit 5, %d SIGKILL, %d exit 3; want 51 1 1 1", zeros, fives, nines, threes)
	}
	// 50 true, seq, sh exit 5, sh kill, the orphan subshell and its sleep.
	if !lost && len(forks) < 55 {
		t.Errorf("%d forks, want at least 55", len(forks))
	}

	// The summary: processes, failures, the orphan left behind.
	// The root's fork (by pwatch) is among the forks.
	if want := fmt.Sprintf("%d processes (root included)", len(forks)); !strings.Contains(r.stderr, want) {
		t.Errorf("summary lacks %q:\n%s", want, r.stderr)
	}
	for _, want := range []string{"exited with status 7", "exit 5", "signal SIGKILL(9)", "exit 3", "left behind when the root exited"} {
		if !strings.Contains(r.stderr, want) {
			t.Errorf("summary lacks %q:\n%s", want, r.stderr)
		}
	}
	var orphan procKey
	for k, l := range exits {
		if l.ExitCode != nil && *l.ExitCode == 3 {
			orphan = k
		}
	}
	if !regexp.MustCompile(`(?m)^\s+` + strconv.Itoa(orphan.pid) + `\s+age `).MatchString(r.stderr) {
		t.Errorf("orphan %d not listed as left behind:\n%s", orphan.pid, r.stderr)
	}

	// The trace: one complete event per process, on the process's track.
	var doc []decodedTrace
	if err := json.Unmarshal(readFile(t, trace), &doc); err != nil {
		t.Fatalf("trace: %v", err)
	}
	spans := 0
	tids := map[int]bool{}
	for _, e := range doc {
		switch e.Ph {
		case "X", "B":
			spans++
			tids[e.TID] = true
			if (e.Ph == "X" && (e.Dur == nil || *e.Dur < 0)) || e.Args["cmdline"] == nil {
				t.Errorf("bad span %+v", e)
			}
		}
	}
	if spans != len(exits) || !tids[root.PID] {
		t.Errorf("%d spans for %d processes", spans, len(exits))
	}
}

func TestRunLeftBehind(t *testing.T) {
	dir := t.TempDir()
	events, hold := filepath.Join(dir, "f.jsonl"), filepath.Join(dir, "hold")
	// The process left behind is a cat that reads a pipe the test holds:
	// it cannot end before the test lets it go, once pwatch has exited.
	// (Nor does it hold pwatch's output pipes, which the test reads to
	// their end.) The root exits once pwatch has recorded the cat's
	// command line in --events (its exec event, or in polling mode a scan
	// after the exec): the kernel sets the new comm before the exec event
	// is sent, so seeing "cat" in /proc/PID/comm is not enough.
	letGo := heldPipe(t, hold)
	r := runBin(t, "run", "--events", events, "--", "sh", "-c",
		`cat - <"$0" >/dev/null 2>&1 & p=$!
until grep -q "\"pid\":$p,.*\"cmdline\":\\[\"cat\",\"-\"\\]" "$1"; do sleep 0.01; done; echo $p; exit 0`, hold, events)
	if r.code != 0 {
		t.Fatalf("code %d:\n%s", r.code, r.stderr)
	}
	left := strings.TrimSpace(r.stdout)
	pid, err := strconv.Atoi(left)
	if err != nil {
		t.Fatalf("the root printed %q, not the cat's PID", r.stdout)
	}
	st, err := readProcStat(pid)
	if err != nil || procState(pid) == "Z" {
		t.Errorf("cat %d did not outlive pwatch run (no --kill-left): %v", pid, err)
	}
	if !regexp.MustCompile(`(?m)^pwatch: 1 left behind when the root exited:\n\s+` + left + `\s+age .*cat -$`).MatchString(r.stderr) {
		t.Errorf("cat %s not listed as the one left behind:\n%s", left, r.stderr)
	}
	for _, l := range readJSONL(t, readFile(t, events)) {
		if l.Type == "exit" && l.PID == pid {
			t.Errorf("without --wait, the cat's exit was recorded: %+v", l)
		}
	}
	letGo()
	waitFor(t, "the cat to end", func() bool { return ended(pid, st.startTicks) })
}

func TestRunKillLeft(t *testing.T) {
	dir := t.TempDir()
	events := filepath.Join(dir, "f.jsonl")
	// One sleeper dies of SIGTERM; one ignores it and needs SIGKILL.
	r := runBin(t, "run", "--kill-left", "--grace", "200ms", "--events", events, "--",
		"sh", "-c", `sleep 31 & a=$!; (trap "" TERM; exec sleep 30) & b=$!
until [ "$(cat /proc/$a/comm)" = sleep ] && [ "$(cat /proc/$b/comm)" = sleep ]; do sleep 0.001; done`)
	if r.code != 0 {
		t.Fatalf("code %d:\n%s", r.code, r.stderr)
	}
	sigs := map[int]int{}
	for _, l := range readJSONL(t, readFile(t, events)) {
		if l.Type == "exit" && *l.Depth == 1 && l.Signal != 0 {
			sigs[l.Signal]++
		}
	}
	if len(sigs) != 2 || sigs[15] != 1 || sigs[9] != 1 {
		t.Errorf("sleepers' signals: %v; want one SIGTERM, one SIGKILL\n%s", sigs, r.stderr)
	}
	for _, want := range []string{"2 left behind", "sent SIGTERM to 2, then SIGKILL to 1"} {
		if !strings.Contains(r.stderr, want) {
			t.Errorf("summary lacks %q:\n%s", want, r.stderr)
		}
	}
}

func TestRunExitStatus(t *testing.T) {
	for _, tt := range []struct {
		script string
		want   int
		says   string
	}{
		{"exit 0", 0, "exited with status 0"},
		{"exit 7", 7, "exited with status 7"},
		{"kill -TERM $$", 143, "was killed by SIGTERM(15)"},
	} {
		r := runBin(t, "run", "--", "sh", "-c", tt.script)
		if r.code != tt.want || !strings.Contains(r.stderr, tt.says) {
			t.Errorf("%q: code %d, want %d; stderr:\n%s", tt.script, r.code, tt.want, r.stderr)
		}
	}
	// Polling mode too: the status comes from wait, not the kernel.
	r := runBin(t, "run", "--strategy", "poll", "--", "sh", "-c", "sleep 0.05; exit 4")
	if r.code != 4 || !strings.Contains(r.stderr, "poll mode") || !strings.Contains(r.stderr, "exited with status 4") {
		t.Errorf("poll: code %d:\n%s", r.code, r.stderr)
	}
}

func TestRunCannotExec(t *testing.T) {
	dir := t.TempDir()
	garbage := filepath.Join(dir, "garbage")
	if err := os.WriteFile(garbage, []byte("\x7fELF\x00not really"), 0o755); err != nil {
		t.Fatal(err)
	}
	badInterp := filepath.Join(dir, "bad-interp")
	if err := os.WriteFile(badInterp, []byte("#!/nonexistent/sh\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	plain := filepath.Join(dir, "plain")
	if err := os.WriteFile(plain, []byte("echo hi\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct {
		cmd  string
		code int
		msg  string
	}{
		{"no-such-command-pwatch", 127, "no-such-command-pwatch: command not found"},
		{filepath.Join(dir, "missing"), 127, "no such file or directory"},
		{plain, 126, "permission denied"},
		{dir, 126, "is a directory"},
		// Found and executable, but the kernel refuses it: the gated
		// child reports the exec error.
		{garbage, 126, "exec format error"},
		{badInterp, 126, "bad interpreter or loader: no such file or directory"},
	} {
		r := runBin(t, "run", "--", tt.cmd, "arg")
		lines := strings.Split(strings.TrimSpace(r.stderr), "\n")
		last := lines[len(lines)-1]
		if r.code != tt.code || !strings.Contains(last, tt.msg) || !strings.HasPrefix(last, "pwatch: ") {
			t.Errorf("%s: code %d stderr %q; want %d and %q", tt.cmd, r.code, r.stderr, tt.code, tt.msg)
		}
	}
}

func TestRunSignals(t *testing.T) {
	ready := filepath.Join(t.TempDir(), "ready")
	c := exec.Command(binPath, "run", "--", "sh", "-c",
		`trap "exit 9" TERM; touch "$0"; while :; do sleep 0.01; done`, ready)
	var stderr bytes.Buffer
	c.Stderr = &stderr
	if err := c.Start(); err != nil {
		t.Fatal(err)
	}
	defer c.Process.Kill()
	waitFor(t, "the command to start", func() bool { _, err := os.Stat(ready); return err == nil })
	// SIGINT to pwatch alone: it ignores it (a terminal would send it to
	// the command as well). SIGTERM: forwarded to the command, whose trap
	// exits 9.
	c.Process.Signal(syscall.SIGINT)
	c.Process.Signal(syscall.SIGTERM)
	c.Wait()
	ws := c.ProcessState.Sys().(syscall.WaitStatus)
	if !ws.Exited() || ws.ExitStatus() != 9 {
		t.Errorf("pwatch ended with %v, want exit 9; stderr:\n%s", ws, stderr.String())
	}
}

// needConnector skips a test that counts short-lived processes when pwatch
// polled /proc because it is not root, and fails it when pwatch polled as
// root (CI runs as root: there the connector must be used).
func needConnector(t *testing.T, stderr string) {
	t.Helper()
	switch {
	case strings.Contains(stderr, "pwatch: connector mode"):
	case os.Geteuid() != 0:
		t.Skipf("pwatch polled /proc (not root), and misses short-lived processes:\n%s", stderr)
	default:
		t.Fatalf("pwatch did not use the proc connector as root:\n%s", stderr)
	}
}

// failBound bounds the waits of the tests for what must happen: it only
// bounds a failure (a loaded machine may take long), never orders events.
const failBound = time.Minute

// waitFor waits until cond holds, and fails the test after failBound.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	if !waitUntil(cond) {
		t.Fatalf("timed out waiting for %s", what)
	}
}

// waitUntil waits until cond holds, and says false after failBound.
func waitUntil(cond func() bool) bool {
	deadline := time.Now().Add(failBound)
	for !cond() {
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(5 * time.Millisecond)
	}
	return true
}

// syncBuffer is a bytes.Buffer for one writer and one reader at a time.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// gatedTree starts a shell that waits for a file before it runs script,
// and returns its PID and the function that lets it go.
func gatedTree(t *testing.T, script string) (pid int, release func()) {
	t.Helper()
	gate := filepath.Join(t.TempDir(), "go")
	c := exec.Command("sh", "-c", `while [ ! -e "$0" ]; do sleep 0.01; done; `+script, gate)
	if err := c.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		c.Process.Kill()
		c.Wait()
	})
	return c.Process.Pid, func() {
		if err := os.WriteFile(gate, nil, 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

func TestWatchJSONAndMetrics(t *testing.T) {
	pid, release := gatedTree(t, `for i in 1 2 3; do sh -c "exit 4"; done; sh -c 'kill -9 $$'; exit 0`)
	events := filepath.Join(t.TempDir(), "w.jsonl")
	c := exec.Command(binPath, "watch", "--json", "--interval", "10ms", "--events", events,
		"--metrics-addr", "127.0.0.1:0", strconv.Itoa(pid))
	var stdout, stderr syncBuffer
	c.Stdout, c.Stderr = &stdout, &stderr
	if err := c.Start(); err != nil {
		t.Fatal(err)
	}
	defer c.Process.Kill()
	addr := regexp.MustCompile(`metrics on (http://\S+/metrics)`)
	waitFor(t, "the metrics address and a snapshot", func() bool {
		return addr.MatchString(stderr.String()) && strings.Contains(stdout.String(), `"type":"snapshot"`)
	})
	url := addr.FindStringSubmatch(stderr.String())[1]
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	for _, series := range []string{
		`pwatch_events_total{type="fork"}`, `pwatch_events_total{type="lost"} 0`,
		`pwatch_exits_total{outcome="failure"}`, `pwatch_exits_total{outcome="signal"}`,
		`pwatch_live_processes `, `pwatch_overruns_total 0`, `pwatch_reconcile_repairs_total`,
		`pwatch_reconcile_seconds_total`, `pwatch_last_reconcile_seconds`, `pwatch_reconciles_total`,
		`pwatch_mode_info{mode=`, `pwatch_exit_cpu_seconds_bucket{source="taskstats",le="0.001"}`,
		`pwatch_exit_peak_rss_bytes_count{source="wait4"}`, `pwatch_usage_matched_total`, `pwatch_usage_missing_total`,
	} {
		if !bytes.Contains(body, []byte(series)) {
			t.Errorf("metrics lack %s:\n%s", series, body)
		}
	}
	if strings.Contains(stderr.String(), "connector mode") && !bytes.Contains(body, []byte(`pwatch_hub_kernel_events_total{type="exec"}`)) {
		t.Errorf("metrics lack the hub's counters:\n%s", body)
	}
	release()
	if err := c.Wait(); err != nil {
		t.Fatalf("watch: %v\n%s", err, stderr.String())
	}
	needConnector(t, stderr.String())
	fours, kills := 0, 0
	for _, l := range readJSONL(t, []byte(stdout.String())) {
		if l.Type == "exit" && l.ExitCode != nil && *l.ExitCode == 4 {
			fours++
		}
		if l.Type == "exit" && l.Signal == 9 {
			kills++
		}
	}
	if fours != 3 || kills != 1 {
		t.Errorf("stdout: %d exit 4, %d SIGKILL; want 3 and 1:\n%s", fours, kills, stdout.String())
	}
	file := readJSONL(t, readFile(t, events))
	for _, l := range file {
		if l.Type == "snapshot" {
			t.Errorf("snapshot line in --events")
		}
	}
	if len(file) == 0 {
		t.Errorf("empty --events file")
	}
	for _, want := range []string{"4 failed", "exited with status 0"} {
		if !strings.Contains(stderr.String(), want) {
			t.Errorf("summary lacks %q:\n%s", want, stderr.String())
		}
	}
}

// TestWatchInProcess runs pwatch watch inside the test, so that TestMain's
// leak check covers its goroutines, and checks the text output.
func TestWatchInProcess(t *testing.T) {
	pid, release := gatedTree(t, `sh -c "exit 4"; exit 3`)
	var stdout, stderr syncBuffer
	done := make(chan int)
	go func() {
		done <- run([]string{"watch", "--metrics-addr", "127.0.0.1:0", strconv.Itoa(pid)}, &stdout, &stderr)
	}()
	waitFor(t, "watch to attach", func() bool { return strings.Contains(stderr.String(), "pwatch: watching ") })
	release()
	if code := <-done; code != 0 {
		t.Fatalf("code %d:\n%s", code, stderr.String())
	}
	out := stdout.String()
	if !regexp.MustCompile(`(?m) exit  pid=\d+ ppid=` + strconv.Itoa(pid) + ` code=4 after=`).MatchString(out) {
		t.Errorf("no exit line for sh -c 'exit 4':\n%s", out)
	}
	if !strings.Contains(stderr.String(), "exited with status 3") {
		t.Errorf("summary:\n%s", stderr.String())
	}
}

// TestRunInProcess runs pwatch run inside the test (the gated child is the
// test binary, which TestMain turns into the gate), for the leak check.
func TestRunInProcess(t *testing.T) {
	// The command writes to the same streams from os/exec's goroutines.
	var stdout, stderr syncBuffer
	dir := t.TempDir()
	code := run([]string{"run", "--metrics-addr", "127.0.0.1:0", "--events", filepath.Join(dir, "e.jsonl"),
		"--trace", filepath.Join(dir, "t.json"), "--", "sh", "-c", "echo hello; sh -c 'exit 2'; exit 6"}, &stdout, &stderr)
	if code != 6 || stdout.String() != "hello\n" || !strings.Contains(stderr.String(), "2 failed") {
		t.Errorf("code %d stdout %q stderr:\n%s", code, stdout.String(), stderr.String())
	}
}

func TestHelpEverywhere(t *testing.T) {
	for _, cmd := range []string{"run", "watch", "tree"} {
		stdout, _, code := runPwatch(cmd, "--help")
		if code != 0 || !strings.Contains(stdout, "Examples:") || !strings.Contains(stdout, "pwatch "+cmd) {
			t.Errorf("%s --help (code %d):\n%s", cmd, code, stdout)
		}
	}
}
