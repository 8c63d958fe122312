package main

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
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
)

// The tests of pwatch run as a supervisor (issue 12): nothing escapes,
// nothing lingers, outputs that can be trusted. They run the pwatch binary
// on real trees, as root and as uid 65534, with a cgroup and without.

// nobody is the unprivileged user the tests run pwatch as.
const nobody = 65534

// requireRoot skips a test that needs root, saying why, and fails it under
// CI (CI=true), which runs as root.
func requireRoot(t *testing.T, why string) {
	t.Helper()
	if os.Geteuid() == 0 {
		return
	}
	if os.Getenv("CI") == "true" {
		t.Fatalf("needs root (%s), and CI runs as root", why)
	}
	t.Skipf("skipping: needs root (%s); CI runs these tests as root", why)
}

// runAs is one way of running pwatch: who, and with which flags.
type runAs struct {
	name string
	uid  int // -1: as this process
	args []string
}

// supervisors are the ways the containment tests run pwatch: as root with
// a cgroup and without one, and as uid 65534 (no cgroup there). Without
// root, only as this user.
func supervisors(t *testing.T) []runAs {
	if os.Geteuid() != 0 {
		if os.Getenv("CI") == "true" {
			t.Fatalf("the containment tests run as root under CI")
		}
		t.Logf("not root: pwatch runs as this user only (no cgroup, no uid 65534)")
		return []runAs{{"self", -1, nil}}
	}
	return []runAs{
		{"root-cgroup", -1, []string{"--cgroup", "on"}},
		{"root-nocgroup", -1, []string{"--cgroup", "off"}},
		{"nobody", nobody, []string{"--cgroup", "auto"}},
	}
}

// pwatchCmd is the pwatch binary with args, run as uid (or as this
// process for -1).
func pwatchCmd(uid int, args ...string) *exec.Cmd {
	c := exec.Command(binPath, args...)
	if uid >= 0 {
		c.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: uint32(uid), Gid: uint32(uid), Groups: []uint32{}}}
	}
	return c
}

// runAsUser runs pwatch to its end as uid (-1: as this process).
func runAsUser(t *testing.T, uid int, args ...string) pwatchResult {
	t.Helper()
	c := pwatchCmd(uid, args...)
	var o, e bytes.Buffer
	c.Stdout, c.Stderr = &o, &e
	err := c.Run()
	var ee *exec.ExitError
	if err != nil && !errors.As(err, &ee) {
		t.Fatalf("pwatch %v: %v", args, err)
	}
	r := pwatchResult{o.String(), e.String(), c.ProcessState.ExitCode()}
	if ws := c.ProcessState.Sys().(syscall.WaitStatus); ws.Signaled() {
		t.Fatalf("pwatch %v killed by %v; stderr:\n%s", args, ws.Signal(), r.stderr)
	}
	if strings.Contains(r.stderr, "goroutine ") || strings.Contains(r.stderr, "panic:") {
		t.Fatalf("pwatch %v: Go trace on stderr:\n%s", args, r.stderr)
	}
	return r
}

// sharedDir is a temporary directory every user may write to (t.TempDir's
// parent is private to this user).
func sharedDir(t *testing.T) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "pwatch-shared-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	if err := os.Chmod(dir, 0o777); err != nil {
		t.Fatal(err)
	}
	return dir
}

// marked lists the live processes (not zombies) whose command line holds
// token.
func marked(token string) []int {
	ents, _ := os.ReadDir("/proc")
	var out []int
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid == os.Getpid() {
			continue
		}
		cmdline, err := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		if err != nil || !bytes.Contains(cmdline, []byte(token)) {
			continue
		}
		if procState(pid) == "Z" {
			continue
		}
		out = append(out, pid)
	}
	return out
}

// procState is the state letter of pid ("" when gone).
func procState(pid int) string {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return ""
	}
	i := bytes.LastIndexByte(b, ')')
	if i < 0 || i+3 > len(b) {
		return ""
	}
	return string(b[i+2 : i+3])
}

// noneLeft fails unless every process marked with token ends (the
// promise: nothing of the tree outlives pwatch), and kills what is left so
// that other tests are not disturbed. A killed process may take long to be
// scheduled and exit on a loaded machine, so it waits, up to failBound,
// which only bounds a failure: the marked processes must not be able to
// end by themselves within it (sleep 3600, a pipe the test holds).
func noneLeft(t *testing.T, token string) {
	t.Helper()
	deadline := time.Now().Add(failBound)
	for {
		left := marked(token)
		if len(left) == 0 {
			return
		}
		if time.Now().After(deadline) {
			var desc []string
			for _, pid := range left {
				stat, _ := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
				cmdline, _ := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/cmdline")
				desc = append(desc, fmt.Sprintf("%q %q", stat, cmdline))
				syscall.Kill(pid, syscall.SIGKILL)
			}
			t.Fatalf("%d processes of the tree alive %v after pwatch exited:\n%s", len(left), failBound, strings.Join(desc, "\n"))
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// token returns a marker unique to the test, for command lines.
func token(what string) string {
	return fmt.Sprintf("pwatch-test-%s-%d-%d", what, os.Getpid(), time.Now().UnixNano())
}

// treadmill is a tree that keeps forking: each process ignores SIGTERM,
// forks a child that does the same, and exits 2 ms later. $0 is the
// marker.
const treadmill = `trap "" TERM
step() { trap "" TERM; (step) & sleep 0.002; exit 0; }
step`

func TestIntegrationTreadmillKilled(t *testing.T) {
	// Polling too, without a cgroup: the orphans come back to pwatch,
	// which kills them in rounds.
	poll := runAs{"poll-nocgroup", -1, []string{"--cgroup", "off", "--strategy", "poll"}}
	for _, sv := range append(supervisors(t), poll) {
		t.Run(sv.name, func(t *testing.T) {
			mark := token("treadmill")
			args := append([]string{"run", "--kill-left", "--grace", "200ms"}, sv.args...)
			// COMMAND lets the treadmill run for a while, then exits.
			args = append(args, "--", "sh", "-c", `sh -c "$1" "$0" & sleep 0.3; exit 0`, mark, treadmill)
			r := runAsUser(t, sv.uid, args...)
			if r.code != 0 {
				t.Errorf("exit status %d, want 0 (COMMAND's, the tree killed); stderr:\n%s", r.code, r.stderr)
			}
			if !strings.Contains(r.stderr, "left behind when the root exited") || !strings.Contains(r.stderr, "sent SIGTERM to ") {
				t.Errorf("summary does not say what was left and killed:\n%s", r.stderr)
			}
			noneLeft(t, mark)
		})
	}
}

func TestIntegrationDaemonKilled(t *testing.T) {
	// A daemon: double fork, setsid, and the middle process exits, so the
	// daemon's parent is gone before any poll could see the lineage.
	for _, sv := range supervisors(t) {
		t.Run(sv.name, func(t *testing.T) {
			mark := token("daemon")
			dir := sharedDir(t)
			pidFile := filepath.Join(dir, "daemon.pid")
			args := append([]string{"run", "--kill-left", "--grace", "500ms", "--strategy", "poll"}, sv.args...)
			args = append(args, "--", "sh", "-c",
				`(setsid sh -c 'echo $$ > "$1"; exec sleep 3600' "$0" "$1" &)
until [ -s "$1" ] && [ "$(cat /proc/$(cat "$1")/comm)" = sleep ]; do sleep 0.01; done; exit 0`, mark, pidFile)
			r := runAsUser(t, sv.uid, args...)
			if r.code != 0 {
				t.Fatalf("exit status %d; stderr:\n%s", r.code, r.stderr)
			}
			pid := strings.TrimSpace(string(readFile(t, pidFile)))
			if !regexp.MustCompile(`(?m)^\s+` + pid + `\s+age .*sleep 3600`).MatchString(r.stderr) {
				t.Errorf("daemon %s not listed as left behind:\n%s", pid, r.stderr)
			}
			if n, _ := strconv.Atoi(pid); procState(n) != "" && procState(n) != "Z" {
				t.Errorf("daemon %s still alive after pwatch --kill-left", pid)
			}
			noneLeft(t, mark)
		})
	}
}

func TestIntegrationPollOrphanLeftAndKilled(t *testing.T) {
	// Measured in issue 12: in poll mode the orphaned sleep escaped, and
	// pwatch said "nothing left behind".
	for _, sv := range supervisors(t) {
		t.Run(sv.name, func(t *testing.T) {
			dir := sharedDir(t)
			events := filepath.Join(dir, "e.jsonl")
			args := append([]string{"run", "--strategy", "poll", "--kill-left", "--grace", "1s", "--events", events}, sv.args...)
			r := runAsUser(t, sv.uid, append(args, "--", "sh", "-c", "sleep 7 & exit 0")...)
			if r.code != 0 || !strings.Contains(r.stderr, "poll mode") {
				t.Fatalf("exit status %d; stderr:\n%s", r.code, r.stderr)
			}
			// (The scan may have seen it before its exec, as sh.)
			if !regexp.MustCompile(`(?m)^pwatch: 1 left behind when the root exited:\n\s+\d+\s+age .*sleep 7`).MatchString(r.stderr) {
				t.Errorf("the orphaned sleep is not listed as left behind:\n%s", r.stderr)
			}
			if !strings.Contains(r.stderr, "sent SIGTERM to 1") {
				t.Errorf("the sleep was not killed:\n%s", r.stderr)
			}
			// pwatch reaped it (it came back to pwatch, the subreaper): the
			// reap line has its status, in poll mode and unprivileged too.
			// (pwatch may have killed it before it exec'd sleep.)
			m := regexp.MustCompile(`(?m)^pwatch: 1 left behind when the root exited:\n\s+(\d+)\s`).FindStringSubmatch(r.stderr)
			if m == nil {
				return
			}
			reaped := false
			for _, l := range readJSONL(t, readFile(t, events)) {
				if l.Type == "reap" && strconv.Itoa(l.PID) == m[1] && l.Signal == int(syscall.SIGTERM) && l.Rusage != nil {
					reaped = true
					if st := procState(l.PID); st != "" {
						t.Errorf("sleep %d still there (state %s)", l.PID, st)
					}
				}
			}
			if !reaped {
				t.Errorf("no reap line with SIGTERM for %s:\n%s", m[1], readFile(t, events))
			}
		})
	}
}

func TestIntegrationTimeout(t *testing.T) {
	for _, sv := range supervisors(t) {
		t.Run(sv.name, func(t *testing.T) {
			mark := token("timeout")
			args := append([]string{"run", "--timeout", "1s", "--grace", "500ms"}, sv.args...)
			// sleep 3600 in a shell that ignores SIGTERM, and a child that
			// ignores it too: SIGKILL after --grace ends both.
			r := runAsUser(t, sv.uid, append(args, "--", "sh", "-c", `trap "" TERM; sh -c 'trap "" TERM; sleep 3600' "$0" & sleep 3600`, mark)...)
			if r.code != exitTimeout {
				t.Errorf("exit status %d, want %d; stderr:\n%s", r.code, exitTimeout, r.stderr)
			}
			if !strings.Contains(r.stderr, "--timeout 1s expired: sent SIGTERM to") || !strings.Contains(r.stderr, "then SIGKILL to") {
				t.Errorf("summary:\n%s", r.stderr)
			}
			noneLeft(t, mark)
		})
	}
	// The plain case of the issue.
	r := runBin(t, "run", "--timeout", "1s", "--", "sleep", "30")
	if r.code != exitTimeout || !strings.Contains(r.stderr, "was killed by SIGTERM(15)") {
		t.Errorf("--timeout 1s -- sleep 30: exit status %d; stderr:\n%s", r.code, r.stderr)
	}
}

// startLogged starts c with its stderr in a file of dir (not a pipe: the
// processes that outlive pwatch would hold it), kills it at the end of the
// test, and returns what it has written so far.
func startLogged(t *testing.T, c *exec.Cmd, dir string) func() string {
	t.Helper()
	errPath := filepath.Join(dir, "stderr")
	errFile, err := os.Create(errPath)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { errFile.Close() })
	c.Stderr = errFile
	if err := c.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		c.Process.Kill()
		c.Wait()
	})
	return func() string { return string(readFile(t, errPath)) }
}

func TestIntegrationKilledPwatch(t *testing.T) {
	// pwatch itself is SIGKILLed mid-run: what it wrote is complete
	// (lines, and a trace that parses once "]" is appended), and COMMAND
	// dies with it (PDEATHSIG); with a cgroup, so does the whole tree (the
	// guard kills the cgroup).
	for _, sv := range supervisors(t) {
		t.Run(sv.name, func(t *testing.T) {
			mark := token("killed")
			dir := sharedDir(t)
			events, trace, hold := filepath.Join(dir, "e.jsonl"), filepath.Join(dir, "t.json"), filepath.Join(dir, "hold")
			// COMMAND's two children read a pipe the test holds: neither
			// they nor COMMAND (which waits for the second) can end by
			// themselves before the test lets them go.
			letGo := heldPipe(t, hold)
			args := append([]string{"run", "--events", events, "--trace", trace}, sv.args...)
			c := pwatchCmd(sv.uid, append(args, "--", "sh", "-c", `sh -c 'exit 3'; cat - <"$1" & cat <"$1"`, mark, hold)...)
			stderr := startLogged(t, c, dir)
			// Wait until both cats are on disk in both files, then kill
			// pwatch.
			cats := map[int]uint64{}
			onDisk := waitUntil(func() bool {
				b, _ := os.ReadFile(events)
				tr, _ := os.ReadFile(trace)
				clear(cats)
				for _, l := range readJSONL(t, b) {
					// (The trace may show a cat by the name it had
					// before its exec.)
					if l.Comm == "cat" && bytes.Contains(tr, []byte(fmt.Sprintf(`"tid":%d,`, l.PID))) {
						cats[l.PID] = l.StartTicks
					}
				}
				return bytes.Contains(b, []byte(`"cmdline":["cat","-"]`)) && bytes.Contains(b, []byte(`"cmdline":["cat"]`)) && len(cats) == 2
			})
			if !onDisk {
				t.Fatalf("timed out waiting for both cats in --events and --trace; stderr:\n%s\nevents:\n%s\ntrace:\n%s", stderr(), readFile(t, events), readFile(t, trace))
			}
			c.Process.Kill()
			c.Wait()
			lines := readJSONL(t, readFile(t, events))
			b := readFile(t, events)
			if len(b) == 0 || b[len(b)-1] != '\n' {
				t.Errorf("--events does not end with a whole line")
			}
			var rootPID int
			for _, l := range lines {
				if l.Type == "fork" && *l.Depth == 0 {
					rootPID = l.PID
				}
			}
			if rootPID == 0 {
				t.Fatalf("no fork line for COMMAND in:\n%s", b)
			}
			var doc []decodedTrace
			if err := json.Unmarshal(append(readFile(t, trace), ']'), &doc); err != nil {
				t.Fatalf("the trace plus ] does not parse: %v\n%s", err, readFile(t, trace))
			}
			begun := map[int]bool{}
			for _, e := range doc {
				if e.Ph == "B" || e.Ph == "X" {
					begun[e.TID] = true
				}
			}
			if !begun[rootPID] {
				t.Errorf("the trace has no span for COMMAND (%d)", rootPID)
			}
			// COMMAND (sh, which holds the marker) dies with pwatch.
			noneLeft(t, mark)
			if strings.Contains(stderr(), "containment: cgroup ") {
				// The guard killed the whole cgroup: the cats too, which
				// could not have ended otherwise (the pipe is still held).
				for pid, ticks := range cats {
					waitFor(t, fmt.Sprintf("cat %d to die with the cgroup", pid), func() bool { return ended(pid, ticks) })
				}
				cg := regexp.MustCompile(`containment: cgroup (\S+)`).FindStringSubmatch(stderr())[1]
				waitFor(t, "the guard to remove the cgroup", func() bool { _, err := os.Stat(cg); return err != nil })
			}
			// Without a cgroup the cats outlive pwatch: they read EOF now.
			letGo()
			for pid, ticks := range cats {
				waitFor(t, fmt.Sprintf("cat %d to end", pid), func() bool { return ended(pid, ticks) })
			}
		})
	}
}

// heldPipe makes a named pipe at path, which uid 65534 may read too, and
// holds its only write end: a process that reads it (cat <path) blocks
// until the returned function closes that end, then reads EOF. Opening it
// to read never blocks while the test holds it. It is let go at the end of
// the test in any case.
func heldPipe(t *testing.T, path string) (letGo func()) {
	t.Helper()
	fifo(t, path)
	// O_RDWR does not wait for a reader, on a named pipe, on Linux.
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	var once sync.Once
	letGo = func() { once.Do(func() { f.Close() }) }
	t.Cleanup(letGo)
	return letGo
}

// ended says whether the process pid that started at ticks has exited
// (gone, a zombie, or its PID reused).
func ended(pid int, ticks uint64) bool {
	st, err := readProcStat(pid)
	return err != nil || st.startTicks != ticks || procState(pid) == "Z"
}

func TestIntegrationCgroup(t *testing.T) {
	requireRoot(t, "a writable cgroup2 hierarchy")
	r := runBin(t, "run", "--cgroup", "on", "--", "sh", "-c", `for i in 1 2 3; do sh -c 'i=0; while [ $i -lt 20000 ]; do i=$((i+1)); done'; done`)
	if r.code != 0 {
		t.Fatalf("exit status %d; stderr:\n%s", r.code, r.stderr)
	}
	m := regexp.MustCompile(`containment: cgroup (\S+)`).FindStringSubmatch(r.stderr)
	if m == nil || !strings.Contains(r.stderr, "pwatch: cgroup: CPU ") {
		t.Fatalf("no cgroup, or no CPU totals:\n%s", r.stderr)
	}
	if _, err := os.Stat(m[1]); err == nil {
		t.Errorf("cgroup %s still there after pwatch exited", m[1])
	}
	// As uid 65534 there is no writable hierarchy: auto falls back, on
	// refuses to run.
	r = runAsUser(t, nobody, "run", "--cgroup", "on", "--", "true")
	if r.code == 0 || !strings.Contains(r.stderr, "--cgroup on:") {
		t.Errorf("--cgroup on as nobody: exit status %d; stderr:\n%s", r.code, r.stderr)
	}
	r = runAsUser(t, nobody, "run", "--", "true")
	if r.code != 0 || !strings.Contains(r.stderr, "containment: no cgroup") {
		t.Errorf("--cgroup auto as nobody: exit status %d; stderr:\n%s", r.code, r.stderr)
	}
}

func TestOutputsUntouchedOnUsageErrors(t *testing.T) {
	dir := t.TempDir()
	keep := filepath.Join(dir, "keep.jsonl")
	if err := os.WriteFile(keep, []byte("old\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	trace := filepath.Join(dir, "t.json")
	for _, args := range [][]string{
		{"run", "--events", keep, "--trace", trace, "--metrics-addr", "bad", "--", "true"},
		{"run", "--events", keep, "--trace", trace, "--cgroup", "maybe", "--", "true"},
		{"run", "--events", keep, "--trace", trace, "--list-max", "-1", "--", "true"},
		{"run", "--events", keep, "--trace", trace, "--timeout", "-1s", "--", "true"},
		{"run", "--events", keep, "--trace", filepath.Join(dir, "missing", "t.json"), "--", "true"},
		{"run", "--events", keep, "--trace", keep, "--", "true"},
		{"run", "--events", keep, "--trace", filepath.Join(dir, ".", "keep.jsonl"), "--", "true"},
		{"watch", "--events", keep, "--trace", trace, "--metrics-addr", "bad", "1"},
		{"watch", "--events", keep, "--trace", trace, "x"},
	} {
		_, stderr, code := runPwatch(args...)
		if code != exitUsage || strings.Count(stderr, "\n") != 1 {
			t.Errorf("pwatch %v: code %d, stderr %q; want %d and one line", args, code, stderr, exitUsage)
		}
		if b, _ := os.ReadFile(keep); string(b) != "old\n" {
			t.Fatalf("pwatch %v changed --events: %q", args, b)
		}
		if _, err := os.Stat(trace); err == nil {
			t.Fatalf("pwatch %v created --trace", args)
		}
	}
	_, stderr, _ := runPwatch("run", "--events", keep, "--trace", keep, "--", "true")
	if !strings.Contains(stderr, "name the same file") {
		t.Errorf("same file: %q", stderr)
	}
}

func TestWriteFailureExitStatus(t *testing.T) {
	if _, err := os.Stat("/dev/full"); err != nil {
		t.Skip("no /dev/full here")
	}
	r := runBin(t, "run", "--events", "/dev/full", "--", "sh", "-c", "sh -c 'exit 0'; exit 0")
	if r.code != exitOwnFailure || !strings.Contains(r.stderr, "no space left on device") ||
		!strings.Contains(r.stderr, fmt.Sprintf("exit status %d", exitOwnFailure)) {
		t.Errorf("exit status %d, want %d; stderr:\n%s", r.code, exitOwnFailure, r.stderr)
	}
	// A failure of COMMAND's own is still passed on when the record is fine.
	r = runBin(t, "run", "--trace", filepath.Join(t.TempDir(), "t.json"), "--", "sh", "-c", "exit 3")
	if r.code != 3 {
		t.Errorf("exit status %d, want COMMAND's 3; stderr:\n%s", r.code, r.stderr)
	}
}

func TestEventsFlushedWhileRunning(t *testing.T) {
	// --events is on disk within 100 ms of an event, while pwatch runs.
	dir := t.TempDir()
	events, ready := filepath.Join(dir, "e.jsonl"), filepath.Join(dir, "ready")
	c := exec.Command(binPath, "run", "--events", events, "--", "sh", "-c",
		`sh -c 'exit 4'; touch "$0"; while [ -e "$0" ]; do sleep 0.01; done`, ready)
	if err := c.Start(); err != nil {
		t.Fatal(err)
	}
	defer c.Process.Kill()
	waitFor(t, "the command to start", func() bool { _, err := os.Stat(ready); return err == nil })
	// The exit of sh -c 'exit 4' happened before ready was made; pwatch
	// has it on disk within flushEvery of reading it.
	waitFor(t, "the exit line on disk", func() bool {
		b, _ := os.ReadFile(events)
		return bytes.Contains(b, []byte(`"exit_code":4`))
	})
	os.Remove(ready)
	c.Wait()
}

func TestCommandLinesExact(t *testing.T) {
	// Trailing empty arguments and bytes that are not UTF-8 are kept: in
	// cmdline_base64, and the root's command line is the one given.
	dir := t.TempDir()
	events := filepath.Join(dir, "e.jsonl")
	args := []string{"sh", "-c", "exit 0", "x\xff\xfey", "", ""}
	r := runBin(t, append([]string{"run", "--events", events, "--"}, args...)...)
	if r.code != 0 {
		t.Fatalf("exit status %d; stderr:\n%s", r.code, r.stderr)
	}
	seen := 0
	for _, l := range readJSONL(t, readFile(t, events)) {
		if *l.Depth != 0 || l.Type == "lost" {
			continue
		}
		seen++
		if len(l.Cmdline) != len(args) || len(l.CmdlineBase64) != len(args) {
			t.Errorf("%s line: cmdline %q, base64 %q; want %d arguments", l.Type, l.Cmdline, l.CmdlineBase64, len(args))
			continue
		}
		for i, a := range args {
			if got, _ := base64.StdEncoding.DecodeString(l.CmdlineBase64[i]); string(got) != a {
				t.Errorf("%s line: argument %d is %q, want %q", l.Type, i, got, a)
			}
		}
	}
	if seen == 0 {
		t.Errorf("no line for the root in %s", readFile(t, events))
	}
}

func TestSummaryReadable(t *testing.T) {
	// 15 failures whose command lines hold a newline and a forged line,
	// and a long command line; the launcher never shows.
	script := `for i in $(seq 15); do sh -c 'exit 1' "x
FAKE: 0 failed"; done; sh -c 'exit 2' ` + strings.Repeat("a", 500)
	for _, mode := range []string{"auto", "poll"} {
		r := runBin(t, "run", "--strategy", mode, "--", "sh", "-c", script)
		if r.code != 2 {
			t.Fatalf("exit status %d; stderr:\n%s", r.code, r.stderr)
		}
		for _, line := range strings.Split(strings.TrimSuffix(r.stderr, "\n"), "\n") {
			if strings.HasPrefix(line, "FAKE") {
				t.Errorf("%s: a command line forged a line:\n%s", mode, r.stderr)
			}
			// List lines are cut to the width (COLUMNS, the terminal's,
			// or 80); the others are pwatch's own words, bounded (the
			// mode line, the library's reason, has no command line).
			limit := 200
			switch {
			case strings.HasPrefix(line, "  "):
				limit = defaultSummaryWidth
			case strings.HasPrefix(line, "pwatch: "+mode+" mode: "), strings.HasPrefix(line, "pwatch: connector mode: "):
				continue
			}
			if n := len([]rune(line)); n > limit {
				t.Errorf("%s: line of %d characters, want at most %d: %q", mode, n, limit, line)
			}
		}
		if strings.Contains(r.stderr, gateArg) || regexp.MustCompile(`pwatch(\.test)? \(pid`).MatchString(r.stderr) {
			t.Errorf("%s: the launcher shows:\n%s", mode, r.stderr)
		}
		if !strings.Contains(r.stderr, "sh (pid ") {
			t.Errorf("%s: the root is not shown as COMMAND:\n%s", mode, r.stderr)
		}
		if mode == "poll" {
			continue // the failures live too short for a scan to see them
		}
		needConnector(t, r.stderr)
		if strings.Contains(r.stderr, "events were lost") {
			t.Logf("events were lost (a busy host): the failures are not counted")
			continue
		}
		// 15 exit 1, exit 2, and the root's exit 2.
		if !strings.Contains(r.stderr, "pwatch: 17 failed:") || !strings.Contains(r.stderr, "  … and 7 more (--events FILE records every one)") ||
			!strings.Contains(r.stderr, `x\nFAKE: 0 failed`) {
			t.Errorf("failures not capped at 10 or not escaped:\n%s", r.stderr)
		}
	}
	r := runBin(t, "run", "--list-max", "0", "--", "sh", "-c", script)
	if strings.Contains(r.stderr, "more (") {
		t.Errorf("--list-max 0 still caps:\n%s", r.stderr)
	}
}

func TestWatchReportsCapAtAttach(t *testing.T) {
	c := exec.Command("sh", "-c", "sleep 30 & sleep 30 & sleep 30 & sleep 30 & wait")
	if err := c.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() {
		exec.Command("pkill", "-P", strconv.Itoa(c.Process.Pid)).Run()
		c.Process.Kill()
		c.Wait()
	}()
	pid := strconv.Itoa(c.Process.Pid)
	waitFor(t, "the four sleepers", func() bool {
		out, _, _ := runPwatch("tree", "--json", pid)
		return strings.Count(out, `"name": "sleep"`) == 4
	})
	w := exec.Command(binPath, "watch", "--max-descendants", "2", pid)
	var stderr syncBuffer
	w.Stderr = &stderr
	if err := w.Start(); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "watch to attach", func() bool { return strings.Contains(stderr.String(), "pwatch: watching ") })
	w.Process.Signal(syscall.SIGTERM)
	w.Wait()
	if !strings.Contains(stderr.String(), "and 2 descendants; --max-depth or --max-descendants kept processes out") ||
		!strings.Contains(stderr.String(), "kept processes out of the tree") {
		t.Errorf("watch does not report the cap:\n%s", stderr.String())
	}
}

func TestIntegrationSurvivePwatch(t *testing.T) {
	// --survive-pwatch: a killed pwatch leaves COMMAND running (no
	// PDEATHSIG), and the guard only removes the cgroup once it is empty.
	mark := token("survive")
	dir := sharedDir(t)
	events := filepath.Join(dir, "e.jsonl")
	c := exec.Command(binPath, "run", "--survive-pwatch", "--events", events, "--", "sh", "-c", `sleep 30; exit 0`, mark)
	stderr := startLogged(t, c, dir)
	waitFor(t, "the sleep in --events", func() bool {
		b, _ := os.ReadFile(events)
		return bytes.Contains(b, []byte(`"cmdline":["sleep","30"]`))
	})
	c.Process.Kill()
	c.Wait()
	// The kernel sends the parent-death signal as pwatch exits, before it
	// is reaped: without it, COMMAND is alive now.
	left := marked(mark)
	if len(left) != 1 {
		t.Fatalf("COMMAND did not survive pwatch: %v", left)
	}
	syscall.Kill(left[0], syscall.SIGKILL)
	if m := regexp.MustCompile(`containment: cgroup (\S+)`).FindStringSubmatch(stderr()); m != nil {
		for _, l := range readJSONL(t, readFile(t, events)) {
			if l.Comm == "sleep" {
				syscall.Kill(l.PID, syscall.SIGKILL)
			}
		}
		waitFor(t, "the guard to remove the emptied cgroup", func() bool { _, err := os.Stat(m[1]); return err != nil })
	}
}

func TestIntegrationOrphanInContainer(t *testing.T) {
	// Measured in issue 12: inside new user and PID namespaces (what every
	// container gets) the orphaned sleep escaped too. There the connector
	// is silent, pwatch polls, and is PID 1 of the namespace.
	unshare, err := exec.LookPath("unshare")
	if err != nil {
		t.Skip("skipping: no unshare(1) here")
	}
	uid := -1
	if os.Geteuid() == 0 {
		uid = nobody
	}
	c := pwatchCmd(uid)
	c.Path = unshare
	c.Args = []string{"unshare", "--user", "--map-root-user", "--pid", "--fork", "--mount-proc",
		binPath, "run", "--kill-left", "--grace", "1s", "--", "sh", "-c", "sleep 7 & exit 0"}
	var stderr bytes.Buffer
	c.Stderr = &stderr
	if err := c.Run(); err != nil {
		if strings.Contains(stderr.String(), "unshare failed") || strings.Contains(stderr.String(), "unshare:") {
			t.Skipf("skipping: no user namespaces here: %s", stderr.String())
		}
		t.Fatalf("%v; stderr:\n%s", err, stderr.String())
	}
	out := stderr.String()
	if !strings.Contains(out, "poll mode") ||
		!regexp.MustCompile(`(?m)^pwatch: 1 left behind when the root exited:\n\s+\d+\s+age .*sleep 7`).MatchString(out) ||
		!strings.Contains(out, "sent SIGTERM to 1") {
		t.Errorf("the orphan is not reported and killed:\n%s", out)
	}
}
