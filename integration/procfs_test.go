package integration

import (
	"bufio"
	"fmt"
	"os"
	"slices"
	"strconv"
	"strings"
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
	f, err := os.Open("/proc/net/netlink")
	if err != nil {
		t.Fatal(err)
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
		if err1 != nil || err2 != nil || err3 != nil || err4 != nil || err5 != nil {
			t.Fatalf("/proc/net/netlink: cannot parse %q", sc.Text())
		}
		s.Port = uint32(port)
		if s.Protocol == netlinkConnector && inodes[s.Inode] {
			out = append(out, s)
		}
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return out
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
