package main

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"

	"golang.org/x/sys/unix"
)

// guardArg, as the first argument, makes pwatch the guard of a run's
// cgroup: a small process outside the tree that outlives pwatch run and
// removes the cgroup once it is empty. If pwatch run dies without saying
// goodbye (SIGKILL, the OOM killer), the guard first kills the whole
// cgroup, unless --survive-pwatch. It is not a command for people.
const guardArg = "__pwatch-guard"

// guardLinkFD is the descriptor the guard inherits: the read end of a pipe
// whose write end pwatch run holds until it ends.
const guardLinkFD = 3

// guardBye is what pwatch run writes to its guard when it ends normally:
// the processes it left behind may live on.
const guardBye = 'b'

// startGuard starts the guard of cg. It is started before pwatch becomes
// a subreaper and attaches, and detaches itself (a second fork, a session
// of its own), so that it is neither a member of the tree nor pwatch's
// child. The returned file is the link: write guardBye and close it when
// the run ends.
func startGuard(cg *cgroup, survive bool) (*os.File, error) {
	self, err := os.Executable()
	if err != nil {
		return nil, err
	}
	r, w, err := os.Pipe()
	if err != nil {
		return nil, err
	}
	defer r.Close()
	kill := "kill"
	if survive {
		kill = "keep"
	}
	cmd := &exec.Cmd{
		Path:        self,
		Args:        []string{self, guardArg, "fork", cg.dir, kill},
		Dir:         "/", // hold no mount busy
		ExtraFiles:  []*os.File{r},
		SysProcAttr: &syscall.SysProcAttr{Setsid: true},
	}
	// The first guard starts the real one and exits at once.
	if err := cmd.Run(); err != nil {
		w.Close()
		return nil, fmt.Errorf("starting the cgroup's guard: %w", err)
	}
	return w, nil
}

// guardMain is the guard: args are "fork" (the first, which starts the
// second and exits) or "wait", the cgroup's directory, and "kill" or
// "keep".
func guardMain(args []string) int {
	var st unix.Stat_t
	if len(args) != 3 || unix.Fstat(guardLinkFD, &st) != nil || st.Mode&unix.S_IFMT != unix.S_IFIFO {
		fmt.Fprintln(os.Stderr, "pwatch: "+guardArg+" is internal to pwatch run")
		return 2
	}
	if args[0] == "fork" {
		self, err := os.Executable()
		if err != nil {
			return 1
		}
		link := os.NewFile(guardLinkFD, "link")
		cmd := &exec.Cmd{Path: self, Args: []string{self, guardArg, "wait", args[1], args[2]}, ExtraFiles: []*os.File{link}}
		if cmd.Start() != nil {
			return 1
		}
		return 0
	}
	cg := &cgroup{dir: filepath.Clean(args[1]), fd: -1}
	var b [1]byte
	n, _ := readRetry(guardLinkFD, b[:])
	if (n != 1 || b[0] != guardBye) && args[2] == "kill" {
		// pwatch run died: its tree must not outlive it.
		cg.kill()
	}
	waitEmpty(cg)
	cg.remove()
	return 0
}

// waitEmpty blocks until no process is left in cg (or cg is gone),
// woken by inotify when cgroup.events changes.
func waitEmpty(cg *cgroup) {
	in, err := unix.InotifyInit1(unix.IN_CLOEXEC)
	if err != nil {
		return
	}
	defer unix.Close(in)
	if _, err := unix.InotifyAddWatch(in, filepath.Join(cg.dir, "cgroup.events"), unix.IN_MODIFY); err != nil {
		return
	}
	buf := make([]byte, 4096)
	for {
		if populated, err := cg.populated(); err != nil || !populated {
			return
		}
		if _, err := readRetry(in, buf); err != nil {
			return
		}
	}
}
