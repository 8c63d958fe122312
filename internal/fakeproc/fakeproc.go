// Package fakeproc builds fake proc filesystems in a directory, for tests
// that run reconcile and polling-mode watchers without real processes.
package fakeproc

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

// BootTime is the btime of every fake tree, in Unix seconds.
const BootTime = 1700000000

// Tree is a fake /proc in a temporary directory.
type Tree struct {
	t     testing.TB
	root  string
	procs map[int]Proc
}

// Proc is one fake process.
type Proc struct {
	PID, PPID  int
	Comm       string
	State      byte // 0 means 'S'
	Threads    int  // 0 means 1
	StartTicks uint64
	Cmdline    []string
}

// New makes an empty tree with /proc/stat and pid_max.
func New(t testing.TB) *Tree {
	t.Helper()
	root := t.TempDir()
	tr := &Tree{t: t, root: root, procs: make(map[int]Proc)}
	tr.write("stat", fmt.Sprintf("cpu  1 2 3 4\nbtime %d\n", BootTime))
	tr.write("sys/kernel/pid_max", "32768\n")
	return tr
}

// Root is the mount point to hand to Config.ProcRoot or reconcile.NewFS.
func (tr *Tree) Root() string { return tr.root }

// Set adds or replaces processes.
func (tr *Tree) Set(ps ...Proc) {
	tr.t.Helper()
	for _, p := range ps {
		state, threads := p.State, p.Threads
		if state == 0 {
			state = 'S'
		}
		if threads == 0 {
			threads = 1
		}
		stat := fmt.Sprintf("%d (%s) %c %d %d %d 0 -1 4194560 0 0 0 0 0 0 0 0 20 0 %d 0 %d 1000 100 0\n",
			p.PID, p.Comm, state, p.PPID, p.PID, p.PID, threads, p.StartTicks)
		dir := strconv.Itoa(p.PID)
		tr.write(filepath.Join(dir, "stat"), stat)
		cmd := ""
		if len(p.Cmdline) > 0 {
			cmd = strings.Join(p.Cmdline, "\x00") + "\x00"
		}
		tr.write(filepath.Join(dir, "cmdline"), cmd)
		tr.procs[p.PID] = p
	}
	tr.writeChildren()
}

// writeChildren writes each process's task/PID/children (the kernel's
// format: the children's PIDs, each followed by a space), from the PPIDs;
// all children are listed under the first thread.
func (tr *Tree) writeChildren() {
	kids := make(map[int][]int)
	for _, p := range tr.procs {
		kids[p.PPID] = append(kids[p.PPID], p.PID)
	}
	for pid := range tr.procs {
		var b strings.Builder
		for _, k := range kids[pid] {
			b.WriteString(strconv.Itoa(k))
			b.WriteByte(' ')
		}
		dir := strconv.Itoa(pid)
		tr.write(filepath.Join(dir, "task", dir, "children"), b.String())
	}
}

// Remove deletes processes.
func (tr *Tree) Remove(pids ...int) {
	tr.t.Helper()
	for _, pid := range pids {
		if err := os.RemoveAll(filepath.Join(tr.root, strconv.Itoa(pid))); err != nil {
			tr.t.Fatal(err)
		}
		delete(tr.procs, pid)
	}
	tr.writeChildren()
}

func (tr *Tree) write(name, content string) {
	tr.t.Helper()
	p := filepath.Join(tr.root, name)
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		tr.t.Fatal(err)
	}
	// Readers run concurrently: a file is replaced whole, never seen half
	// written.
	tmp := p + ".tmp"
	if err := os.WriteFile(tmp, []byte(content), 0o644); err != nil {
		tr.t.Fatal(err)
	}
	if err := os.Rename(tmp, p); err != nil {
		tr.t.Fatal(err)
	}
}
