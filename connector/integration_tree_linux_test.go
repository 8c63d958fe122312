//go:build linux

package connector_test

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/process-watchman/watchman/connector"
	"github.com/process-watchman/watchman/connector/connectortest"
)

// attachTree dials and attaches a tree filter of maxEntries.
func attachTree(t *testing.T, maxEntries int) (*connector.Conn, *connector.TreeFilter) {
	t.Helper()
	c := dialReal(t, nil)
	f, err := c.AttachTreeFilter(maxEntries)
	if err != nil {
		t.Fatalf("AttachTreeFilter: %v", err)
	}
	return c, f
}

// gated is a child process that says "ready" once it runs its program,
// then waits for a line on stdin before it does anything else, so that the
// test can make it a member in between.
type gated struct {
	cmd   *exec.Cmd
	stdin io.WriteCloser
	out   *bufio.Reader
	pid   int
}

func startGated(t *testing.T, cmd *exec.Cmd) *gated {
	t.Helper()
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	g := &gated{cmd: cmd, stdin: stdin, out: bufio.NewReader(stdout), pid: cmd.Process.Pid}
	// A helper that hangs is killed, so that reads of its output end
	// and the test fails instead of hanging.
	guard := time.AfterFunc(hangGuard, func() { _ = cmd.Process.Kill() })
	t.Cleanup(func() {
		guard.Stop()
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
	})
	if line, err := g.out.ReadString('\n'); line != "ready\n" {
		t.Fatalf("helper said %q, %v; want ready", line, err)
	}
	return g
}

// release lets the process go and returns the pids of its first output
// line.
func (g *gated) release(t *testing.T) []int {
	t.Helper()
	if _, err := io.WriteString(g.stdin, "go\n"); err != nil {
		t.Fatal(err)
	}
	return g.pids(t)
}

// pids reads a line of pids from the process.
func (g *gated) pids(t *testing.T) []int {
	t.Helper()
	line, err := g.out.ReadString('\n')
	if err != nil && line == "" {
		t.Fatalf("reading the helper's output: %v", err)
	}
	var pids []int
	for _, f := range strings.Fields(line) {
		p, err := strconv.Atoi(f)
		if err != nil {
			t.Fatalf("helper said %q", line)
		}
		pids = append(pids, p)
	}
	return pids
}

func helperCmd(mode string) *exec.Cmd {
	cmd := exec.Command(os.Args[0])
	cmd.Env = append(os.Environ(), helperEnv+"="+mode, "GORACE=atexit_sleep_ms=0")
	return cmd
}

func kill(pids ...int) {
	for _, p := range pids {
		_ = syscall.Kill(p, syscall.SIGKILL)
	}
}

func mustAdd(t *testing.T, f *connector.TreeFilter, pid int) {
	t.Helper()
	if err := f.Add(uint32(pid)); err != nil {
		t.Fatalf("Add(%d): %v", pid, err)
	}
}

func contains(t *testing.T, f *connector.TreeFilter, pid int) bool {
	t.Helper()
	ok, err := f.Contains(uint32(pid))
	if err != nil {
		t.Fatal(err)
	}
	return ok
}

func eventsOf(evs []connector.Event, tgid int) []connector.Event {
	var out []connector.Event
	for _, ev := range evs {
		if ev.What != connector.WhatMark && (ev.TGID == int32(tgid) || (ev.What == connector.WhatFork && ev.ParentTGID == int32(tgid))) {
			out = append(out, ev)
		}
	}
	return out
}

// TestIntegrationTreeFilterDropsOutsiders runs a storm outside the tree:
// none of its events reaches the socket, while a member's events do.
func TestIntegrationTreeFilterDropsOutsiders(t *testing.T) {
	requirePrivileged(t)
	c, f := attachTree(t, 1024)
	member := startGated(t, exec.Command("/bin/sh", "-c", "echo ready; read x; exit 6"))
	mustAdd(t, f, member.pid)
	barrier(t, c, 1)
	before := c.Stats()

	run(t, "/bin/sh", "-c", `i=0; while [ $i -lt 500 ]; do ( : ); i=$((i+1)); done`)
	if _, err := io.WriteString(member.stdin, "go\n"); err != nil {
		t.Fatal(err)
	}
	_ = member.cmd.Wait()
	evs := barrierExit(t, c, 2, member.pid)

	after := c.Stats()
	got := eventsOf(evs, member.pid)
	if len(got) != 1 || got[0].What != connector.WhatExit || got[0].ExitStatus != 0x600 {
		t.Errorf("member's events %+v, want its exit with status 6", got)
	}
	// Only the member's exit and the marker reach the socket as events
	// and markers. The filter passes what is no process event (the
	// acknowledgements of other listeners' subscriptions, unknown
	// types); on a busy host with other listeners some arrive during
	// the storm, and each is counted in a kind of its own.
	d := func(a, b uint64) uint64 { return a - b }
	others := d(after.Acks, before.Acks) + d(after.Foreign, before.Foreign) + d(after.Spoofed, before.Spoofed) +
		d(after.Malformed, before.Malformed) + d(after.Filtered, before.Filtered)
	events, marks := d(after.Received, before.Received), d(after.Marks, before.Marks)
	datagrams := d(after.Datagrams, before.Datagrams)
	t.Logf("datagrams during a 500-fork outside storm: %d (%d events, %d markers, %d others: stats before %+v, after %+v)",
		datagrams, events, marks, others, before, after)
	if events != 1 || marks != 1 || datagrams != events+marks+others {
		t.Errorf("%d datagrams: %d events, %d markers and %d others reached the socket; want the exit and the marker, and nothing unaccounted for",
			datagrams, events, marks, others)
	}
}

// TestIntegrationTreeFilterGrowsWithForks lets a member fork a storm and
// long-lived children: every event reaches the socket and the kernel adds
// the children to the map by itself.
func TestIntegrationTreeFilterGrowsWithForks(t *testing.T) {
	requirePrivileged(t)
	c, f := attachTree(t, 4096)
	const n = 300
	root := startGated(t, exec.Command("/bin/sh", "-c", fmt.Sprintf(
		`echo ready; read x; i=0; while [ $i -lt %d ]; do ( : ); i=$((i+1)); done; sleep 30 & a=$!; sleep 30 & echo $a $!`, n)))
	mustAdd(t, f, root.pid)
	sleeps := root.release(t)
	defer kill(sleeps...)
	evs := barrier(t, c, 1)

	forks, exits := 0, 0
	children := map[int32]bool{}
	for _, ev := range evs {
		switch {
		case ev.What == connector.WhatFork && ev.ParentTGID == int32(root.pid) && !ev.IsThread():
			forks++
			children[ev.TGID] = true
		case ev.What == connector.WhatExit && children[ev.TGID]:
			exits++
		}
	}
	if forks != n+2 || exits != n {
		t.Errorf("%d forks and %d exits of the root's children, want %d and %d", forks, exits, n+2, n)
	}
	for _, p := range sleeps {
		if !contains(t, f, p) {
			t.Errorf("child %d not added to the map by the kernel", p)
		}
	}
	if l, err := f.Len(); err != nil || l < 3 {
		t.Errorf("Len = %d, %v; want the root and its children", l, err)
	}
	// A grandchild of the tree (the sleep's exec is its own; kill it and
	// its exit passes as a member's).
	kill(sleeps[0])
	evs = collectUntil(t, c, func(evs []connector.Event) bool { _, ok := exitOf(evs, sleeps[0]); return ok })
	if ev, _ := exitOf(evs, sleeps[0]); ev.ExitStatus != uint32(syscall.SIGKILL) {
		t.Errorf("exit of member %d = %+v, want killed", sleeps[0], ev)
	}
	if failed, _ := f.FailedOpen(); failed {
		t.Error("failed open with room in the map")
	}
}

// TestIntegrationTreeFilterCloneParent: a CLONE_PARENT child reports the
// forker's parent as its parent. Made by a member whose parent is a
// member, it joins; made by the root, whose parent is outside, it does
// not (as /proc sees it: it is no descendant).
func TestIntegrationTreeFilterCloneParent(t *testing.T) {
	requirePrivileged(t)
	c, f := attachTree(t, 1024)
	root := startGated(t, helperCmd("cloneparent-tree"))
	mustAdd(t, f, root.pid)
	pids := root.release(t)
	if len(pids) != 2 {
		t.Fatalf("helper pids %v", pids)
	}
	inner, outer := pids[0], pids[1]
	defer kill(inner, outer)
	evs := barrier(t, c, 1)
	if i := indexOf(evs, isForkOf(inner)); i < 0 || evs[i].ParentTGID != int32(root.pid) {
		t.Errorf("fork of the CLONE_PARENT grandchild %d missing or not from the root %d", inner, root.pid)
	}
	if !contains(t, f, inner) {
		t.Errorf("CLONE_PARENT child %d of a member's member not in the map", inner)
	}
	if i := indexOf(evs, isForkOf(outer)); i >= 0 {
		t.Errorf("fork of the root's CLONE_PARENT child %d passed: %+v", outer, evs[i])
	}
	if contains(t, f, outer) {
		t.Errorf("the root's CLONE_PARENT child %d (its parent is outside) is in the map", outer)
	}
}

// TestIntegrationTreeFilterExecFromThread: a Go process execs from a
// thread other than the first; the kernel sends the first thread's exit,
// then the exec, then the new program's exit, all with the member's TGID.
func TestIntegrationTreeFilterExecFromThread(t *testing.T) {
	requirePrivileged(t)
	c, f := attachTree(t, 1024)
	p := startGated(t, helperCmd("threadexec"))
	mustAdd(t, f, p.pid)
	if _, err := io.WriteString(p.stdin, "go\n"); err != nil {
		t.Fatal(err)
	}
	_ = p.cmd.Wait()
	evs := eventsOf(barrierExit(t, c, 1, p.pid), p.pid)
	exec := -1 // the last exec: the first may be the helper's own start
	for i, ev := range evs {
		if ev.What == connector.WhatExec {
			exec = i
		}
	}
	last := evs[len(evs)-1]
	if exec < 0 || last.What != connector.WhatExit || last.PID != int32(p.pid) || last.ExitStatus != 0x400 {
		t.Fatalf("events of %d: %+v; want an exec and the exit with status 4", p.pid, evs)
	}
	// The first thread's exit passes before the exec. Its event carries
	// the TGID, and as PID the TGID or, when the first thread is
	// preempted between exit_notify and proc_exit_connector in do_exit,
	// the exec'ing thread's old TID: de_thread swaps the two threads'
	// PIDs once the first thread is a zombie, which may be before its
	// event is sent (seen under the hog).
	leaderExit := indexOf(evs, func(ev connector.Event) bool {
		return ev.What == connector.WhatExit && ev.TGID == int32(p.pid)
	})
	if leaderExit < 0 || leaderExit > exec {
		t.Errorf("the first thread's exit (at %d) should come before the exec (at %d): %+v", leaderExit, exec, evs)
	}
}

// TestIntegrationTreeFilterLeaderExitsFirst: the first thread exits while
// another runs, which then forks: the fork and the process's final exit
// pass.
func TestIntegrationTreeFilterLeaderExitsFirst(t *testing.T) {
	requirePrivileged(t)
	// A C program: a Go one cannot let its first thread go alone without
	// risking the runtime (a stop-the-world waits for that thread).
	bin := filepath.Join(t.TempDir(), "leaderexit")
	if out, err := exec.Command("gcc", "-O2", "-pthread", "-o", bin, "testdata/leaderexit.c").CombinedOutput(); err != nil {
		t.Skipf("skipping: cannot build testdata/leaderexit.c with gcc: %v\n%s", err, out)
	}
	c, f := attachTree(t, 1024)
	p := startGated(t, exec.Command(bin))
	mustAdd(t, f, p.pid)
	child := p.release(t)
	_ = p.cmd.Wait()
	evs := eventsOf(barrier(t, c, 1), p.pid)
	if indexOf(evs, func(ev connector.Event) bool { return ev.What == connector.WhatExit && ev.ExitStatus == 0x300 }) < 0 {
		evs = append(evs, eventsOf(collectUntil(t, c, func(evs []connector.Event) bool {
			return indexOf(evs, func(ev connector.Event) bool {
				return ev.What == connector.WhatExit && ev.TGID == int32(p.pid) && ev.ExitStatus == 0x300
			}) >= 0
		}), p.pid)...)
	}
	leader := indexOf(evs, func(ev connector.Event) bool { return ev.What == connector.WhatExit && ev.PID == int32(p.pid) })
	fork := indexOf(evs, isForkOf(child[0]))
	final := indexOf(evs, func(ev connector.Event) bool {
		return ev.What == connector.WhatExit && ev.TGID == int32(p.pid) && ev.ExitStatus == 0x300
	})
	if leader < 0 || fork < 0 || final < 0 || !(leader < fork && fork < final) {
		t.Errorf("leader exit at %d, fork of %d at %d, final exit at %d; want all, in this order: %+v", leader, child[0], fork, final, evs)
	}
}

// TestIntegrationTreeFilterPIDReuse: a member exits and is removed; an
// outsider that gets its PID is not let through.
func TestIntegrationTreeFilterPIDReuse(t *testing.T) {
	requirePrivileged(t)
	c, f := attachTree(t, 1024)
	m := startGated(t, exec.Command("/bin/sh", "-c", "echo ready; read x"))
	pid := m.pid
	mustAdd(t, f, pid)
	_, _ = io.WriteString(m.stdin, "go\n")
	_ = m.cmd.Wait()
	barrierExit(t, c, 1, pid)
	if err := f.Remove(uint32(pid)); err != nil {
		t.Fatal(err)
	}
	if err := f.Remove(uint32(pid)); err != nil {
		t.Errorf("second Remove: %v", err)
	}
	reused, _ := reusePID(t, pid, "/bin/sh", "-c", "exit 9")
	evs := barrier(t, c, 2)
	if got := eventsOf(evs, reused); len(got) != 0 {
		t.Errorf("events of the outsider that reused pid %d passed: %+v", reused, got)
	}
}

// reusePID runs the command with the given pid, through the helper
// testdata/withpid.c (clone3 with set_tid: no race with the host's other
// forks, as setting ns_last_pid had, which a busy host lost 100 times in
// a row), and returns the pid and the helper's (the command's parent). It
// tries again while another process holds the pid.
func reusePID(t *testing.T, pid int, name string, args ...string) (reused, parent int) {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "withpid")
	if out, err := exec.Command("gcc", "-O2", "-o", bin, "testdata/withpid.c").CombinedOutput(); err != nil {
		t.Skipf("skipping: cannot build testdata/withpid.c with gcc: %v\n%s", err, out)
	}
	deadline := time.Now().Add(30 * time.Second) // bounds a pid held for good
	for {
		cmd := exec.Command(bin, append([]string{strconv.Itoa(pid), name}, args...)...)
		var stderr strings.Builder
		cmd.Stderr = &stderr
		out, err := cmd.Output()
		if err == nil {
			got, perr := strconv.Atoi(strings.TrimSpace(string(out)))
			if perr != nil || got != pid {
				t.Fatalf("withpid %d printed %q", pid, out)
			}
			return got, cmd.Process.Pid
		}
		var ee *exec.ExitError
		if !errors.As(err, &ee) || ee.ExitCode() != 3 {
			t.Fatalf("withpid %d: %v: %s", pid, err, stderr.String())
		}
		if time.Now().After(deadline) {
			t.Fatalf("pid %d stayed taken for 30 s", pid)
		}
		time.Sleep(10 * time.Millisecond) // another process has it: it is likely short-lived
	}
}

// TestIntegrationTreeFilterFailsOpen fills a 4-entry map: the program
// passes everything, says so, and drops outsiders again once room is
// made and the flag cleared.
func TestIntegrationTreeFilterFailsOpen(t *testing.T) {
	requirePrivileged(t)
	c, f := attachTree(t, 4)
	root := startGated(t, exec.Command("/bin/sh", "-c",
		`echo ready; read x; sleep 30 & a=$!; sleep 30 & b=$!; sleep 30 & c=$!; sleep 30 & echo $a $b $c $!; read y`))
	mustAdd(t, f, root.pid)
	sleeps := root.release(t)
	defer kill(sleeps...)
	barrier(t, c, 1)
	if failed, err := f.FailedOpen(); err != nil || !failed {
		t.Fatalf("FailedOpen = %v, %v after 4 children into a 4-entry map", failed, err)
	}
	if l, _ := f.Len(); l != 4 {
		t.Errorf("Len = %d, want 4", l)
	}
	outsider := run(t, "/bin/true")
	if i := indexOf(barrier(t, c, 2), isForkOf(outsider)); i < 0 {
		t.Errorf("an outsider's fork was dropped while failed open")
	}
	for _, p := range sleeps {
		if contains(t, f, p) {
			if err := f.Remove(uint32(p)); err != nil {
				t.Fatal(err)
			}
		}
	}
	if err := f.ClearFailOpen(); err != nil {
		t.Fatal(err)
	}
	if failed, _ := f.FailedOpen(); failed {
		t.Error("still failed open after ClearFailOpen")
	}
	outsider = run(t, "/bin/true")
	if got := eventsOf(barrier(t, c, 3), outsider); len(got) != 0 {
		t.Errorf("an outsider's events passed after ClearFailOpen: %+v", got)
	}
}

// TestIntegrationTreeFilterReplaceAndClose seeds with Replace and checks
// that Close detaches: outsiders pass again.
func TestIntegrationTreeFilterReplaceAndClose(t *testing.T) {
	requirePrivileged(t)
	c, f := attachTree(t, 64)
	for _, p := range []uint32{100001, 100002, 100003} {
		if err := f.Add(p); err != nil {
			t.Fatal(err)
		}
	}
	if err := f.Replace([]uint32{100002, 100004}); err != nil {
		t.Fatal(err)
	}
	for p, want := range map[uint32]bool{100001: false, 100002: true, 100003: false, 100004: true} {
		if got, _ := f.Contains(p); got != want {
			t.Errorf("Contains(%d) = %v after Replace, want %v", p, got, want)
		}
	}
	if _, err := c.AttachTreeFilter(8); err == nil {
		t.Error("a second AttachTreeFilter succeeded")
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
	if err := f.Add(1); !errors.Is(err, connector.ErrClosed) {
		t.Errorf("Add after Close = %v, want ErrClosed", err)
	}
	outsider := run(t, "/bin/true")
	if i := indexOf(barrier(t, c, 1), isForkOf(outsider)); i < 0 {
		t.Error("an outsider's fork was dropped after the filter's Close")
	}
	// A new filter may be attached after Close; Conn.Close frees it.
	if _, err := c.AttachTreeFilter(8); err != nil {
		t.Errorf("AttachTreeFilter after Close: %v", err)
	}
}

// TestIntegrationTreeFilterCloseLeaksNothing: the Conn's Close frees the
// program and maps of an attached filter.
func TestIntegrationTreeFilterCloseLeaksNothing(t *testing.T) {
	requirePrivileged(t)
	before, mappedBefore := countFDs(t), bpfMappings(t)
	for i := range 20 {
		// A generous acknowledgement timeout: this test is about leaks,
		// and a host under a CPU hog once took more than 2 s.
		c, err := connector.Dial(&connector.Config{AckTimeout: 20 * time.Second})
		if err != nil {
			t.Fatal(err)
		}
		f, err := c.AttachTreeFilter(1024)
		if err != nil {
			t.Fatal(err)
		}
		if err := f.Add(uint32(i + 1)); err != nil {
			t.Fatal(err)
		}
		if err := c.Close(); err != nil {
			t.Fatal(err)
		}
		if _, err := f.Len(); !errors.Is(err, connector.ErrClosed) {
			t.Fatalf("Len after the Conn's Close = %v, want ErrClosed", err)
		}
	}
	if after := countFDs(t); after != before {
		t.Errorf("open fds %d -> %d after 20 Dial/AttachTreeFilter/Close", before, after)
	}
	if n := bpfMappings(t); n != mappedBefore {
		t.Errorf("%d BPF map mappings after 20 Dial/AttachTreeFilter/Close, %d before", n, mappedBefore)
	}
}

func TestIntegrationTreeFilterUnprivileged(t *testing.T) {
	requirePrivileged(t)
	if got := runAsNobody(t, "tree"); !strings.HasPrefix(got, "tree permission=true notsupported=true") {
		t.Errorf("AttachTreeFilter as nobody: %q, want ErrPermission", got)
	}
}

func TestTreeFilterOnFakeIsNotSupported(t *testing.T) {
	c := dial(t, connectortest.NewKernel(), nil)
	if _, err := c.AttachTreeFilter(8); !errors.Is(err, connector.ErrNotSupported) {
		t.Errorf("AttachTreeFilter on the fake = %v, want ErrNotSupported", err)
	}
	if _, err := c.AttachTreeFilter(0); err == nil {
		t.Error("AttachTreeFilter(0) accepted")
	}
}

// bpfMappings counts the BPF maps mapped into this process (the tree
// filter's start times).
func bpfMappings(t *testing.T) int {
	t.Helper()
	maps, err := os.ReadFile("/proc/self/maps")
	if err != nil {
		t.Fatal(err)
	}
	return strings.Count(string(maps), "anon_inode:bpf-map")
}
