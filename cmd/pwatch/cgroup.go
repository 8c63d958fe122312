package main

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// The --cgroup modes.
const (
	cgroupAuto = "auto" // a fresh cgroup where a writable cgroup2 hierarchy is found
	cgroupOn   = "on"   // a fresh cgroup, or pwatch does not run COMMAND
	cgroupOff  = "off"  // no cgroup: pidfds only
)

// cgroup is the fresh cgroup v2 group COMMAND starts in (clone3 with
// CLONE_INTO_CGROUP), so that everything it forks stays in it: cgroup.kill
// kills the whole tree at once, forks during the kill included, and
// cgroup.events says when the tree is gone.
type cgroup struct {
	dir string
	fd  int // the directory, for SysProcAttr.CgroupFD
}

// findCgroup2 returns the directory of pwatch's own cgroup v2 group, from
// /proc/self/mountinfo (the cgroup2 mount: /sys/fs/cgroup on unified
// hosts, /sys/fs/cgroup/unified on hybrid ones) and /proc/self/cgroup.
func findCgroup2() (string, error) {
	mi, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		return "", err
	}
	var mount, mountRoot string
	for line := range strings.SplitSeq(string(mi), "\n") {
		// id parent major:minor root mountpoint options... - fstype source superoptions
		pre, post, ok := strings.Cut(line, " - ")
		f, g := strings.Fields(pre), strings.Fields(post)
		if ok && len(f) >= 5 && len(g) >= 1 && g[0] == "cgroup2" {
			mountRoot, mount = unescapeMount(f[3]), unescapeMount(f[4])
			break
		}
	}
	if mount == "" {
		return "", errors.New("no cgroup2 hierarchy is mounted")
	}
	own := "/"
	if cg, err := os.ReadFile("/proc/self/cgroup"); err == nil {
		for line := range strings.SplitSeq(string(cg), "\n") {
			if p, ok := strings.CutPrefix(line, "0::"); ok {
				own = p
			}
		}
	}
	rel, err := filepath.Rel(mountRoot, own)
	if err != nil || strings.HasPrefix(rel, "..") {
		// pwatch's group is outside what this mount shows (another
		// cgroup namespace): use the mount's top.
		rel = "."
	}
	return filepath.Join(mount, rel), nil
}

// unescapeMount undoes mountinfo's octal escapes of the characters that
// would break its fields (\040 for a space).
func unescapeMount(s string) string {
	return strings.NewReplacer(`\040`, " ", `\011`, "\t", `\012`, "\n", `\134`, `\`).Replace(s)
}

// newCgroup makes a fresh group for COMMAND below pwatch's own.
func newCgroup() (*cgroup, error) {
	parent, err := findCgroup2()
	if err != nil {
		return nil, err
	}
	dir := filepath.Join(parent, fmt.Sprintf("pwatch-%d-%d", os.Getpid(), time.Now().UnixNano()))
	if err := os.Mkdir(dir, 0o755); err != nil {
		return nil, err
	}
	if _, err := os.Stat(filepath.Join(dir, "cgroup.kill")); err != nil {
		os.Remove(dir)
		return nil, fmt.Errorf("%s has no cgroup.kill (Linux 5.14 or later is needed)", parent)
	}
	fd, err := unix.Open(dir, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		os.Remove(dir)
		return nil, &os.PathError{Op: "open", Path: dir, Err: err}
	}
	return &cgroup{dir: dir, fd: fd}, nil
}

// kill kills every process in the group, atomically: a process forked
// during the kill is killed too.
func (c *cgroup) kill() error {
	return os.WriteFile(filepath.Join(c.dir, "cgroup.kill"), []byte("1"), 0)
}

// populated says whether any process is left in the group.
func (c *cgroup) populated() (bool, error) {
	b, err := os.ReadFile(filepath.Join(c.dir, "cgroup.events"))
	if err != nil {
		return false, err
	}
	for line := range bytes.SplitSeq(b, []byte("\n")) {
		if v, ok := bytes.CutPrefix(line, []byte("populated ")); ok {
			return string(v) != "0", nil
		}
	}
	return false, fmt.Errorf("%s/cgroup.events has no populated line", c.dir)
}

// cgroupStats are the group's totals.
type cgroupStats struct {
	usage, user, system time.Duration
	memPeak             int64 // bytes, or -1 where memory.peak does not exist
}

// stats reads cpu.stat and memory.peak.
func (c *cgroup) stats() (cgroupStats, error) {
	st := cgroupStats{memPeak: -1}
	f, err := os.Open(filepath.Join(c.dir, "cpu.stat"))
	if err != nil {
		return st, err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		k, v, _ := strings.Cut(sc.Text(), " ")
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil {
			continue
		}
		d := time.Duration(n) * time.Microsecond
		switch k {
		case "usage_usec":
			st.usage = d
		case "user_usec":
			st.user = d
		case "system_usec":
			st.system = d
		}
	}
	if b, err := os.ReadFile(filepath.Join(c.dir, "memory.peak")); err == nil {
		if n, err := strconv.ParseInt(strings.TrimSpace(string(b)), 10, 64); err == nil {
			st.memPeak = n
		}
	}
	return st, sc.Err()
}

// remove deletes the group, which must be empty.
func (c *cgroup) remove() error {
	if c.fd >= 0 {
		unix.Close(c.fd)
		c.fd = -1
	}
	// An empty group can still be busy for a moment while the last
	// processes are released.
	var err error
	for range 50 {
		if err = unix.Rmdir(c.dir); err != unix.EBUSY {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	if err != nil {
		return &os.PathError{Op: "rmdir", Path: c.dir, Err: err}
	}
	return nil
}
