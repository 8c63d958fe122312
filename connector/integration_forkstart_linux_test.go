//go:build linux

package connector_test

import (
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/process-watchman/watchman/connector"
)

// TestIntegrationForkStarts: a member forks held children from its main
// thread, from a second thread and (through a child) with CLONE_PARENT,
// and children that exit at once. For every fork event, ForkStart must
// give the child's start time: /proc/PID/stat's field 22 for a held
// child, and a time within the test's clock readings around the event for
// the others.
func TestIntegrationForkStarts(t *testing.T) {
	requirePrivileged(t)
	bin := filepath.Join(t.TempDir(), "forkstarts")
	if out, err := exec.Command("gcc", "-O2", "-pthread", "-o", bin, "testdata/forkstarts.c").CombinedOutput(); err != nil {
		t.Skipf("skipping: cannot build testdata/forkstarts.c with gcc: %v\n%s", err, out)
	}
	c, f := attachTree(t, 4096)
	if ok, why := f.ForkStarts(); !ok {
		if _, err := os.Stat("/sys/kernel/btf/vmlinux"); err != nil {
			t.Skipf("skipping: the filter records no start times here (%s)", why)
		}
		t.Fatalf("ForkStarts = false (%s) on a kernel with BTF, as root", why)
	}
	const n = 100
	root := startGated(t, exec.Command(bin, strconv.Itoa(n)))
	mustAdd(t, f, root.pid)
	before := clock(t, unix.CLOCK_BOOTTIME)

	kinds := []string{"main thread", "second thread", "CLONE_PARENT", "exits at once"}
	kindOf := map[int32]string{}
	held := map[int32]bool{}
	for i, kind := range kinds {
		var pids []int
		if i == 0 {
			pids = root.release(t)
		} else {
			pids = root.pids(t)
		}
		if i == 2 { // the middle child, which exits, then its children
			kindOf[int32(pids[0])] = "CLONE_PARENT's forker"
			pids = pids[1:]
		}
		if len(pids) != n {
			t.Fatalf("%d %s pids, want %d", len(pids), kind, n)
		}
		for _, p := range pids {
			kindOf[int32(p)] = kind
			held[int32(p)] = i < 3
		}
	}

	type result struct {
		hits, forks int
	}
	results := map[string]*result{}
	seen := 0
	// Check each fork as it arrives, while the held children live.
	collectUntil(t, c, func(evs []connector.Event) bool {
		for _, ev := range evs[seen:] {
			kind, ours := kindOf[ev.PID]
			if ev.What != connector.WhatFork || ev.IsThread() || !ours {
				continue
			}
			r := results[kind]
			if r == nil {
				r = &result{}
				results[kind] = r
			}
			r.forks++
			start, ok := f.ForkStart(int(ev.PID))
			if !ok {
				t.Errorf("ForkStart(%d) (%s) missed", ev.PID, kind)
				continue
			}
			r.hits++
			// The start time is no later than the event (CLOCK_MONOTONIC,
			// moved to CLOCK_BOOTTIME by the clocks' current offset,
			// which a clock reading's cost can only overstate).
			mono := clock(t, unix.CLOCK_MONOTONIC)
			offset := clock(t, unix.CLOCK_BOOTTIME) - mono
			if start < before || start > ev.Timestamp+offset {
				t.Errorf("ForkStart(%d) (%s) = %d, not between the release %d and the event %d + %d", ev.PID, kind, start, before, ev.Timestamp, offset)
			}
			if held[ev.PID] {
				if ticks := statStartTicks(t, int(ev.PID)); start/10_000_000 != ticks {
					t.Errorf("ForkStart(%d) (%s) = %d ns = %d ticks, /proc/%d/stat says %d", ev.PID, kind, start, start/10_000_000, ev.PID, ticks)
				}
			}
		}
		seen = len(evs)
		total := 0
		for _, r := range results {
			total += r.forks
		}
		return total == len(kindOf)
	})
	// The program records every fork it sees, not only members': the
	// root's (by this test, before it was a member) too, and none of
	// this process, whose fork it did not see.
	if start, ok := f.ForkStart(root.pid); !ok || start/10_000_000 != statStartTicks(t, root.pid) {
		t.Errorf("ForkStart(root %d) = %d, %v; /proc says %d ticks", root.pid, start, ok, statStartTicks(t, root.pid))
	}
	if start, ok := f.ForkStart(os.Getpid()); ok {
		t.Errorf("ForkStart(%d) = %d for the test process, forked before the filter", os.Getpid(), start)
	}
	if _, err := io.WriteString(root.stdin, "done\n"); err != nil {
		t.Fatal(err)
	}
	if err := root.cmd.Wait(); err != nil {
		t.Errorf("forkstarts: %v", err)
	}
	var hits, forks int
	for _, kind := range append(kinds, "CLONE_PARENT's forker") {
		r := results[kind]
		t.Logf("%s: ForkStart hit %d of %d forks", kind, r.hits, r.forks)
		hits += r.hits
		forks += r.forks
	}
	t.Logf("hit rate: %d of %d (%.1f%%)", hits, forks, 100*float64(hits)/float64(forks))
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	for p := range kindOf {
		if _, ok := f.ForkStart(int(p)); ok {
			t.Errorf("ForkStart(%d) hit after Close", p)
		}
	}
	if ok, why := f.ForkStarts(); ok || why == "" {
		t.Errorf("ForkStarts after Close = %v, %q", ok, why)
	}
}

// TestIntegrationForkStartsWithoutPerfmon: a root process without
// CAP_PERFMON and CAP_SYS_ADMIN (but with CAP_BPF) gets the filter
// without start times, and the reason.
func TestIntegrationForkStartsWithoutPerfmon(t *testing.T) {
	got := runWithoutPerfmon(t, "forkstarts")
	if !strings.HasPrefix(got, "forkstarts attached=true ok=false") || !strings.Contains(got, "bpf_get_current_task not allowed") {
		t.Errorf("helper said %q; want the filter attached without start times, for want of bpf_get_current_task", got)
	}
}

// runWithoutPerfmon runs the helper mode as root without CAP_PERFMON and
// CAP_SYS_ADMIN (but with CAP_BPF) and returns what it said.
func runWithoutPerfmon(t *testing.T, mode string) string {
	t.Helper()
	requirePrivileged(t)
	if _, err := exec.LookPath("setpriv"); err != nil {
		t.Skipf("skipping: no setpriv to drop CAP_PERFMON with: %v", err)
	}
	cmd := exec.Command("setpriv", "--bounding-set", "-perfmon,-sys_admin", os.Args[0])
	cmd.Env = append(os.Environ(), helperEnv+"="+mode, "GORACE=atexit_sleep_ms=0")
	out, err := cmd.CombinedOutput()
	got := strings.TrimSpace(string(out))
	if err != nil && strings.HasPrefix(got, "setpriv") {
		t.Skipf("skipping: setpriv cannot drop CAP_PERFMON here: %v %s", err, got)
	}
	if err != nil {
		t.Fatalf("helper: %v\n%s", err, out)
	}
	t.Logf("without CAP_PERFMON and CAP_SYS_ADMIN: %s", got)
	return got
}

// forkStartsHelper runs in the helper without CAP_PERFMON.
func forkStartsHelper(c *connector.Conn) {
	f, err := c.AttachTreeFilter(16)
	if err != nil {
		fmt.Printf("forkstarts attached=false: %v\n", err)
		return
	}
	ok, why := f.ForkStarts()
	fmt.Printf("forkstarts attached=true ok=%v reason=%q\n", ok, why)
	_ = f.Close()
}

func clock(t *testing.T, id int32) uint64 {
	t.Helper()
	var ts unix.Timespec
	if err := unix.ClockGettime(id, &ts); err != nil {
		t.Fatal(err)
	}
	return uint64(ts.Nano())
}

// statStartTicks returns field 22 of /proc/PID/stat (starttime).
func statStartTicks(t *testing.T, pid int) uint64 {
	t.Helper()
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		t.Fatalf("held child %d: %v", pid, err)
	}
	s := string(data)
	fields := strings.Fields(s[strings.LastIndexByte(s, ')')+1:]) // from field 3
	v, err := strconv.ParseUint(fields[22-3], 10, 64)
	if err != nil {
		t.Fatalf("/proc/%d/stat field 22: %v", pid, err)
	}
	return v
}
