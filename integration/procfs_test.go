package integration

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/process-watchman/watchman/internal/workload"
)

// The ground truth of these tests is read from /proc with the workload's own
// stat parser, never with the code under test.

// groupMembers returns the live processes (neither zombie nor dead) of
// process group pgid other than pgid itself, sorted. A workload runs in its
// own group and every descendant of its root stays in it, so for a workload
// root this is its live descendant set.
func groupMembers(t testing.TB, pgid int) []int {
	t.Helper()
	d, err := os.Open("/proc")
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	names, err := d.Readdirnames(-1)
	if err != nil {
		t.Fatal(err)
	}
	var out []int
	for _, n := range names {
		pid, err := strconv.Atoi(n)
		if err != nil || pid == pgid {
			continue
		}
		st, err := workload.ReadStat(pid)
		if err != nil {
			continue // gone
		}
		if st.PGRP == pgid && st.State != 'Z' && st.State != 'X' && st.State != 'x' {
			out = append(out, pid)
		}
	}
	slices.Sort(out)
	return out
}

// describePIDs says what /proc shows of each pid: its stat fields that
// matter to membership, or the error reading them.
func describePIDs(pids []int) string {
	var b strings.Builder
	b.WriteString("[")
	for i, pid := range pids {
		if i > 0 {
			b.WriteString(" ")
		}
		st, err := workload.ReadStat(pid)
		if err != nil {
			fmt.Fprintf(&b, "%d(%v)", pid, err)
			continue
		}
		fmt.Fprintf(&b, "%d(state %c ppid %d pgrp %d start %d comm %q)", pid, st.State, st.PPID, st.PGRP, st.StartTicks, st.Comm)
	}
	b.WriteString("]")
	return b.String()
}

// stableTruth reads groupMembers twice around get and returns both when
// the truth did not change in between, so that get's answer can be
// compared with it.
func stableTruth(t testing.TB, pgid int, get func() []int) (truth, got []int, ok bool) {
	a := groupMembers(t, pgid)
	got = get()
	b := groupMembers(t, pgid)
	return a, got, slices.Equal(a, b)
}

// netlinkSocket is one line of /proc/net/netlink.
type netlinkSocket struct {
	Protocol int
	Port     uint32
	Rmem     uint64
	Drops    uint64
	Inode    uint64
}

// netlinkConnector is the netlink protocol of the proc connector.
const netlinkConnector = 11

// connectorSockets returns the proc connector sockets that process pid
// holds, as the kernel accounts them in /proc/net/netlink: its drop counter
// is the ground truth of what an overrun lost.
func connectorSockets(t testing.TB, pid int) []netlinkSocket {
	t.Helper()
	fdDir := fmt.Sprintf("/proc/%d/fd", pid)
	ents, err := os.ReadDir(fdDir)
	if err != nil {
		t.Fatal(err)
	}
	inodes := map[uint64]bool{}
	for _, e := range ents {
		l, err := os.Readlink(fdDir + "/" + e.Name())
		if err != nil {
			continue
		}
		if s, ok := strings.CutPrefix(l, "socket:["); ok {
			if ino, err := strconv.ParseUint(strings.TrimSuffix(s, "]"), 10, 64); err == nil {
				inodes[ino] = true
			}
		}
	}
	all, err := readNetlink()
	if err != nil {
		t.Fatal(err)
	}
	var out []netlinkSocket
	for _, s := range all {
		if s.Protocol == netlinkConnector && inodes[s.Inode] {
			out = append(out, s)
		}
	}
	return out
}

// readNetlink parses /proc/net/netlink.
func readNetlink() ([]netlinkSocket, error) {
	f, err := os.Open("/proc/net/netlink")
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var out []netlinkSocket
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fs := strings.Fields(sc.Text())
		if len(fs) < 10 || fs[0] == "sk" {
			continue
		}
		var s netlinkSocket
		var port uint64
		var err1, err2, err3, err4, err5 error
		s.Protocol, err1 = strconv.Atoi(fs[1])
		port, err2 = strconv.ParseUint(fs[2], 10, 32)
		s.Rmem, err3 = strconv.ParseUint(fs[4], 10, 64)
		s.Drops, err4 = strconv.ParseUint(fs[8], 10, 64)
		s.Inode, err5 = strconv.ParseUint(fs[9], 10, 64)
		if err := errors.Join(err1, err2, err3, err4, err5); err != nil {
			return nil, fmt.Errorf("/proc/net/netlink: cannot parse %q: %w", sc.Text(), err)
		}
		s.Port = uint32(port)
		out = append(out, s)
	}
	return out, sc.Err()
}

// kernelDrops sums the kernel's drop counters of pid's connector sockets.
func kernelDrops(t testing.TB, pid int) (drops uint64, sockets int) {
	for _, s := range connectorSockets(t, pid) {
		drops += s.Drops
		sockets++
	}
	return drops, sockets
}

// rssKiB returns VmRSS of process pid in KiB.
func rssKiB(t testing.TB, pid int) int {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(l, "VmRSS:"); ok {
			n, err := strconv.Atoi(strings.TrimSuffix(strings.TrimSpace(v), " kB"))
			if err != nil {
				t.Fatalf("VmRSS %q: %v", v, err)
			}
			return n
		}
	}
	t.Fatalf("no VmRSS for pid %d", pid)
	return 0
}

// openFDs counts this process's open descriptors.
func openFDs(t testing.TB) int {
	t.Helper()
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatal(err)
	}
	return len(ents)
}

// eventually retries cond every few milliseconds until it holds or the
// deadline passes; it returns whether it held. The deadline only bounds a
// broken run: no test asserts on time.
func eventually(d time.Duration, cond func() bool) bool {
	deadline := time.Now().Add(d)
	for {
		if cond() {
			return true
		}
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// envStopper makes the test binary a stopper (stopperMain).
const envStopper = "PWATCH_TEST_STOPPER"

// stopSpec is what a stopper does: stop PID for at least Min, then until
// every socket in Drops (inode: drop count before the stop) has dropped
// more, or Max has passed.
type stopSpec struct {
	PID      int
	Min, Max time.Duration
	Drops    map[uint64]uint64
}

// stopperMain stops a process with SIGSTOP until its connector sockets
// overflowed; it always sends SIGCONT. It is a process of its own so that
// a test can stop itself. It exits 1 if the sockets did not drop by Max.
func stopperMain() int {
	var spec stopSpec
	if err := json.Unmarshal([]byte(os.Getenv(envStopper)), &spec); err != nil {
		fmt.Fprintln(os.Stderr, "stopper:", err)
		return 2
	}
	if err := syscall.Kill(spec.PID, syscall.SIGSTOP); err != nil {
		fmt.Fprintln(os.Stderr, "stopper:", err)
		return 2
	}
	defer syscall.Kill(spec.PID, syscall.SIGCONT)
	start := time.Now()
	time.Sleep(spec.Min)
	for {
		socks, err := readNetlink()
		if err != nil {
			fmt.Fprintln(os.Stderr, "stopper:", err)
			return 2
		}
		dropped := 0
		for _, s := range socks {
			if before, ok := spec.Drops[s.Inode]; ok && s.Drops > before {
				dropped++
			}
		}
		if dropped == len(spec.Drops) {
			return 0
		}
		if time.Since(start) > spec.Max {
			fmt.Fprintf(os.Stderr, "stopper: %d of %d sockets dropped in %v\n", dropped, len(spec.Drops), spec.Max)
			return 1
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// stopUntilDropped stops process pid (this test's own process too) with
// SIGSTOP for at least min; with mustDrop, it stays stopped until each of
// pid's connector sockets has dropped events (the kernel's counter in
// /proc/net/netlink), so that an overrun is certain however slow the
// machine, and fails the test if that did not happen within a minute.
func stopUntilDropped(t *testing.T, pid int, min time.Duration, mustDrop bool) {
	t.Helper()
	spec := stopSpec{PID: pid, Min: min, Max: min, Drops: map[uint64]uint64{}}
	if mustDrop {
		spec.Max = time.Minute
		for _, s := range connectorSockets(t, pid) {
			spec.Drops[s.Inode] = s.Drops
		}
		if len(spec.Drops) == 0 {
			t.Fatalf("process %d has no connector socket to overflow", pid)
		}
	}
	js, err := json.Marshal(spec)
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(os.Args[0])
	cmd.Env = append(os.Environ(), envStopper+"="+string(js))
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("stopper: %v: %s", err, out)
	}
}
