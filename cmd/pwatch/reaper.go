package main

import (
	"bytes"
	"fmt"
	"os"
	"os/signal"
	"strconv"
	"syscall"
	"time"
	"unsafe"

	"github.com/process-watchman/watchman"
	"golang.org/x/sys/unix"
)

// children are the processes pwatch run is the parent of: COMMAND, and,
// pwatch being a child subreaper, every orphan of COMMAND's tree, which
// the kernel reparents to pwatch instead of init. pwatch reaps them all
// (one reaper, so COMMAND's status is never taken by anyone else) and
// learns each one's exit status and resource usage, in every mode.
//
// pwatch watch has them too where orphans come to it (adoptOrphans): as
// the init of a PID namespace, or a child subreaper.
type children struct {
	sigchld chan os.Signal
	// command is COMMAND's PID (0 in pwatch watch); commandDone is set
	// once it is reaped, with its wait status.
	command     int
	commandDone bool
	commandWS   unix.WaitStatus
	commandEnd  time.Time
	// reaped counts the processes reaped besides COMMAND.
	reaped int
	// adopter is set in pwatch watch, and says why orphans come to it.
	// There only the members of the tree that pwatch reaps are recorded;
	// the others (orphans of the rest of a container) are reaped and
	// counted in strays.
	adopter string
	strays  int
}

// listenChildren starts listening to SIGCHLD.
func listenChildren() *children {
	c := &children{sigchld: make(chan os.Signal, 1)}
	signal.Notify(c.sigchld, syscall.SIGCHLD)
	return c
}

// becomeSubreaper makes pwatch a child subreaper and starts listening to
// SIGCHLD. undo reverts both (pwatch run inside a test binary).
func becomeSubreaper() (*children, func(), error) {
	if err := unix.Prctl(unix.PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0); err != nil {
		return nil, nil, os.NewSyscallError("prctl(PR_SET_CHILD_SUBREAPER)", err)
	}
	c := listenChildren()
	return c, func() {
		signal.Stop(c.sigchld)
		unix.Prctl(unix.PR_SET_CHILD_SUBREAPER, 0, 0, 0, 0)
	}, nil
}

// adoptOrphans starts listening to SIGCHLD, for pwatch watch to reap its
// children, if orphans come to it: as the init of a PID namespace (a
// container's entrypoint, unshare --pid --fork) or as a child subreaper
// (set by whatever exec'd pwatch). Nobody else waits for them: unreaped,
// they would stay zombies as long as pwatch runs. pwatch watch waits for
// nothing else, so it takes no status that another waiter expects.
// Elsewhere it returns nil: a plain pwatch watch has no children (and
// inside a test binary, the test's children are not its to reap).
func adoptOrphans() (*children, func()) {
	why := ""
	var sub int32
	switch {
	case os.Getpid() == 1:
		why = "the init of its PID namespace"
	case unix.Prctl(unix.PR_GET_CHILD_SUBREAPER, uintptr(unsafe.Pointer(&sub)), 0, 0, 0) == nil && sub != 0:
		why = "a child subreaper"
	default:
		return nil, func() {}
	}
	c := listenChildren()
	c.adopter = why
	return c, func() { signal.Stop(c.sigchld) }
}

// strayNote says how many processes from outside the tree pwatch watch
// reaped, or "".
func (c *children) strayNote() string {
	if c == nil || c.strays == 0 {
		return ""
	}
	return fmt.Sprintf("pwatch, %s, reaped %d processes from outside the tree", c.adopter, c.strays)
}

// childExited is the channel that says a child may have exited, or nil.
func (s *session) childExited() <-chan os.Signal {
	if s.kids == nil {
		return nil
	}
	return s.kids.sigchld
}

// reapChildren reaps every child that has exited and records it.
func (s *session) reapChildren() {
	if s.kids == nil {
		return
	}
	for {
		c, ok := reapOne()
		if !ok {
			return
		}
		s.reaped(&c)
	}
}

// reapedChild is what pwatch learned of a child it reaped.
type reapedChild struct {
	id   watchman.Identity
	comm string
	ppid int
	ws   unix.WaitStatus
	ru   unix.Rusage
	at   time.Time
}

// reapOne reaps one exited child, if there is one. It looks first
// (WNOWAIT) and reads the zombie's identity from /proc before reaping it,
// so that the exit is matched to the right process even if its PID is
// reused at once.
func reapOne() (reapedChild, bool) {
	var si unix.Siginfo
	for {
		err := unix.Waitid(unix.P_ALL, 0, &si, unix.WEXITED|unix.WNOHANG|unix.WNOWAIT, nil)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return reapedChild{}, false // ECHILD: no children
		}
		break
	}
	pid := siginfoPID(&si)
	if pid <= 0 {
		return reapedChild{}, false // none has exited
	}
	c := reapedChild{id: watchman.Identity{PID: pid}}
	if st, err := readProcStat(pid); err == nil {
		c.id.StartTicks, c.comm, c.ppid = st.startTicks, st.comm, st.ppid
	}
	for {
		got, err := unix.Wait4(pid, &c.ws, unix.WNOHANG, &c.ru)
		if err == unix.EINTR {
			continue
		}
		if err != nil || got != pid {
			return reapedChild{}, false
		}
		break
	}
	c.at = time.Now()
	return c, true
}

// siginfoPID reads si_pid of a SIGCHLD siginfo: after three ints, at the
// alignment of a pointer.
func siginfoPID(si *unix.Siginfo) int {
	off := 3 * 4
	if unsafe.Sizeof(uintptr(0)) == 8 {
		off = 16
	}
	b := (*[unsafe.Sizeof(*si)]byte)(unsafe.Pointer(si))
	return int(*(*int32)(unsafe.Pointer(&b[off])))
}

// reaped records a child pwatch reaped. Its exit gets wait4's usage
// (wait4Usage), which stands where the Watcher gives none.
func (s *session) reaped(c *reapedChild) {
	if s.kids.adopter != "" && s.rec.procs[c.id] == nil {
		s.kids.strays++
		return
	}
	x := waitExit(c.id, c.ws, c.at)
	x.Usage = wait4Usage(&c.ru)
	ru := rusage{
		UserNS:    c.ru.Utime.Nano(),
		SystemNS:  c.ru.Stime.Nano(),
		MaxRSSKiB: c.ru.Maxrss,
	}
	if c.id.PID == s.kids.command {
		s.kids.commandDone, s.kids.commandWS, s.kids.commandEnd = true, c.ws, c.at
	} else {
		s.kids.reaped++
	}
	p := s.rec.reaped(c.id, c.comm, c.ppid, x, ru)
	if s.events != nil {
		l := reapLine(p, x.Usage)
		s.events.write(&l)
	}
	if s.trace != nil {
		s.trace.update(p)
	}
	s.countUsage(p)
	s.armFlush()
}

// wait4Usage is the wait4 fallback of per-process usage: pwatch run reaps
// its own children (COMMAND, and the orphans that come back to it as
// their subreaper) with wait4, here, in session.reaped, and their exits
// take this Usage where the Watcher gives none (no taskstats: not root, a
// namespace, --usage=false, a lost record); recorder.ended prefers a
// taskstats Usage that comes later. Source is watchman.UsageWait4. It has
// no wall time, no I/O bytes, no delays and no thread count, and it
// differs from taskstats's in two ways: its CPU includes that of the
// descendants the process waited for, and its peak RSS is the most the
// process held over all its images, pwatch's launcher (before COMMAND's
// exec) included.
func wait4Usage(ru *unix.Rusage) *watchman.Usage {
	return &watchman.Usage{
		UserCPU:             time.Duration(ru.Utime.Nano()),
		SystemCPU:           time.Duration(ru.Stime.Nano()),
		PeakRSS:             uint64(max(ru.Maxrss, 0)) << 10,
		VoluntarySwitches:   uint64(max(ru.Nvcsw, 0)),
		InvoluntarySwitches: uint64(max(ru.Nivcsw, 0)),
		Source:              watchman.UsageWait4,
	}
}

// waitExit is an exit as wait4 reported it.
func waitExit(id watchman.Identity, ws unix.WaitStatus, at time.Time) watchman.Exit {
	x := watchman.Exit{Identity: id, StatusKnown: true, Code: -1, Time: at}
	switch {
	case ws.Exited():
		x.Code = ws.ExitStatus()
	case ws.Signaled():
		x.Signal, x.CoreDumped = int(ws.Signal()), ws.CoreDump()
	}
	return x
}

// procStat is what pwatch reads of its own children in /proc/PID/stat.
type procStat struct {
	comm       string
	ppid       int
	startTicks uint64
}

// readProcStat reads the command name, parent and start time of a child
// of pwatch (a zombie keeps them until it is reaped).
func readProcStat(pid int) (procStat, error) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return procStat{}, err
	}
	// pid (comm) state ppid ... with starttime the 22nd field; comm may
	// hold spaces and parentheses, so it ends at the last ")".
	open, close := bytes.IndexByte(b, '('), bytes.LastIndexByte(b, ')')
	if open < 0 || close < open {
		return procStat{}, syscall.EINVAL
	}
	st := procStat{comm: string(b[open+1 : close])}
	f := bytes.Fields(b[close+1:]) // f[0] is field 3 (state)
	if len(f) < 20 {
		return procStat{}, syscall.EINVAL
	}
	st.ppid, _ = strconv.Atoi(string(f[1]))
	st.startTicks, err = strconv.ParseUint(string(f[19]), 10, 64)
	return st, err
}

// liveChildren lists pwatch's children that have not exited, but except.
func liveChildren(except int) []int {
	var out []int
	for _, pid := range childPIDs("self") {
		if pid == except {
			continue
		}
		if st, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat"); err == nil {
			if i := bytes.LastIndexByte(st, ')'); i >= 0 && i+2 < len(st) && st[i+2] == 'Z' {
				continue
			}
		}
		out = append(out, pid)
	}
	return out
}

// childPIDs lists the children of process pid ("self": pwatch), zombies
// included, from /proc/PID/task/*/children: a child belongs to the thread
// that forked it, or that adopted it.
func childPIDs(pid string) []int {
	tasks, _ := os.ReadDir("/proc/" + pid + "/task")
	var out []int
	for _, t := range tasks {
		b, err := os.ReadFile("/proc/" + pid + "/task/" + t.Name() + "/children")
		if err != nil {
			continue
		}
		for f := range bytes.FieldsSeq(b) {
			if child, err := strconv.Atoi(string(f)); err == nil {
				out = append(out, child)
			}
		}
	}
	return out
}
