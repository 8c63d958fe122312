package reconcile

import (
	"errors"
	"slices"
	"strconv"

	"golang.org/x/sys/unix"
)

// ErrNoChildrenFiles means the kernel has no /proc/PID/task/TID/children
// files (it was built without CONFIG_PROC_CHILDREN), so a tree cannot be
// walked and only a host scan finds a process's children.
var ErrNoChildrenFiles = errors.New("reconcile: kernel has no /proc/PID/task/TID/children (CONFIG_PROC_CHILDREN)")

// errBadChildren is the cause in a *ProcError for a children file that does
// not hold space-separated PIDs.
var errBadChildren = errors.New("malformed children file")

// HasChildrenFiles reports whether the kernel provides
// /proc/PID/task/TID/children (CONFIG_PROC_CHILDREN, Linux 4.2+), which
// Children and Walk need. It checks the calling thread's own file
// (thread-self/children), then pid 1's (task/1/children), so a fake tree
// says yes by holding 1/task/1/children.
func (fs *FS) HasChildrenFiles() bool {
	for _, p := range [...]string{"/thread-self/children", "/1/task/1/children"} {
		if unix.Faccessat(unix.AT_FDCWD, fs.root+p, unix.F_OK, 0) == nil {
			return true
		}
	}
	return false
}

// Children appends the PIDs of the children of process pid to dst, in
// ascending order, and returns it. A child belongs to the thread that
// forked it, so the children file of every thread (/proc/PID/task/TID/
// children) is read, once each; a PID listed twice is kept once.
//
// The kernel documents these files as reliable only while the children do
// not change: a child that forks or exits during the read, or a thread that
// exits and hands its children to another thread already read, may be
// missed until the next call.
//
// A process that is gone gives a *ProcError matching ErrGone (a thread that
// exits during the read is skipped); one that may not be read, ErrPermission;
// a kernel without the files, ErrNoChildrenFiles. A zombie has no children.
func (s *Scanner) Children(pid int, dst []int) ([]int, error) {
	if err := s.checkChildrenFiles(); err != nil {
		return dst, err
	}
	dirfd, err := s.openPIDDir(pid)
	if err != nil {
		return dst, s.goneOr(pid, "", err)
	}
	defer rawClose(dirfd)
	start := len(dst)
	dst, err = s.appendChildren(dst, dirfd, pid, 0)
	if err != nil {
		return dst[:start], err
	}
	return dst, nil
}

// checkChildrenFiles returns ErrNoChildrenFiles if the kernel lacks the
// children files; it asks the FS once per Scanner.
func (s *Scanner) checkChildrenFiles() error {
	if s.childrenFiles == 0 {
		s.childrenFiles = 2
		if s.fs.HasChildrenFiles() {
			s.childrenFiles = 1
		}
	}
	if s.childrenFiles != 1 {
		return ErrNoChildrenFiles
	}
	return nil
}

// openPIDDir opens /proc/PID and returns the raw errno on failure. Files
// opened relative to it belong to that process even if the PID is reused
// meanwhile: a dead process's files give ENOENT or ESRCH.
func (s *Scanner) openPIDDir(pid int) (int, error) {
	s.path = append(s.path[:0], s.fs.root...)
	s.path = append(s.path, '/')
	s.path = strconv.AppendInt(s.path, int64(pid), 10)
	s.path = append(s.path, 0)
	return openAt(unix.AT_FDCWD, s.path, unix.O_DIRECTORY)
}

// appendChildren appends the children of the process whose /proc directory
// is dirfd. threads is its thread count from stat: 1 reads the one
// children file of task/PID without listing task/, anything else lists the
// threads. The appended PIDs are sorted and deduplicated.
func (s *Scanner) appendChildren(dst []int, dirfd, pid, threads int) ([]int, error) {
	start := len(dst)
	if threads == 1 {
		var err error
		dst, err = s.appendThreadChildren(dst, dirfd, pid, pid)
		if err != nil {
			if isGoneErrno(err) {
				return dst[:start], s.goneErr(pid, "task/"+strconv.Itoa(pid)+"/children", err)
			}
			return dst[:start], procErr(pid, "task/"+strconv.Itoa(pid)+"/children", err)
		}
	} else {
		var err error
		s.tids, err = s.listTasks(s.tids[:0], dirfd)
		if err != nil {
			if isGoneErrno(err) {
				return dst[:start], s.goneErr(pid, "task", err)
			}
			return dst[:start], procErr(pid, "task", err)
		}
		for _, tid := range s.tids {
			dst, err = s.appendThreadChildren(dst, dirfd, pid, tid)
			if err != nil {
				if isGoneErrno(err) {
					// The thread exited after the listing; its
					// children went to another thread or to a
					// reaper.
					continue
				}
				return dst[:start], procErr(pid, "task/"+strconv.Itoa(tid)+"/children", err)
			}
		}
	}
	kids := dst[start:]
	if len(kids) > 1 {
		slices.Sort(kids)
		dst = dst[:start+len(slices.Compact(kids))]
	}
	return dst, nil
}

// goneErr is the error for a process whose files vanished while it was
// read: hidden or gone (see FS.hiddenErr).
func (s *Scanner) goneErr(pid int, file string, err error) error {
	if h := s.fs.hiddenErr(pid, file); h != nil {
		return h
	}
	return procErr(pid, file, err)
}

// listTasks appends the thread IDs in dirfd's task directory to dst.
func (s *Scanner) listTasks(dst []int, dirfd int) ([]int, error) {
	fd, err := openAt(dirfd, append(s.path[:0], "task\x00"...), unix.O_DIRECTORY)
	if err != nil {
		return dst, err
	}
	defer rawClose(fd)
	for {
		n, err := unix.Getdents(fd, s.dirBuf)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return dst, err
		}
		if n <= 0 {
			return dst, nil
		}
		dst = appendDirentPIDs(dst, s.dirBuf[:n])
	}
}

// appendThreadChildren reads task/TID/children below dirfd and appends the
// PIDs it lists. Errors are the raw errno or errBadChildren.
func (s *Scanner) appendThreadChildren(dst []int, dirfd, pid, tid int) ([]int, error) {
	s.path = append(s.path[:0], "task/"...)
	s.path = strconv.AppendInt(s.path, int64(tid), 10)
	s.path = append(s.path, "/children\x00"...)
	fd, err := openAt(dirfd, s.path, 0)
	if err != nil {
		return dst, err
	}
	defer rawClose(fd)
	if len(s.childBuf) == 0 {
		s.childBuf = make([]byte, 4096)
	}
	n := 0
	for {
		m, err := rawRead(fd, s.childBuf[n:])
		if err != nil {
			return dst, err
		}
		if m == 0 {
			break
		}
		n += m
		if n == len(s.childBuf) {
			s.childBuf = append(s.childBuf, make([]byte, len(s.childBuf))...)
		}
	}
	return appendPIDList(dst, s.childBuf[:n])
}

// appendPIDList parses "12 34 56 " (the children file's format) and
// appends the PIDs.
func appendPIDList(dst []int, b []byte) ([]int, error) {
	for i := 0; i < len(b); {
		if b[i] == ' ' || b[i] == '\n' {
			i++
			continue
		}
		j := i
		for j < len(b) && b[j] != ' ' && b[j] != '\n' {
			j++
		}
		v, ok := parseUint(b[i:j])
		if !ok || v == 0 || v > 1<<31-1 {
			return dst, errBadChildren
		}
		dst = append(dst, int(v))
		i = j
	}
	return dst, nil
}

// Member is a process the caller knows, for Walk to check.
type Member struct {
	// PID and StartTicks identify the process.
	PID        int
	StartTicks uint64
	// Approx says StartTicks is an estimate; it is passed to
	// Walk.SameStart, which decides how close is close enough.
	Approx bool
}

// Status is what Walk found of one process.
type Status uint8

// The values of Status.
const (
	// StatusAlive: /proc shows the process with the member's start time,
	// live (Entry.Live); its children were read.
	StatusAlive Status = iota
	// StatusExited: the process has the member's start time but is a
	// zombie or dead; it has no children left to read.
	StatusExited
	// StatusGone: /proc has no such process (ENOENT, ESRCH), or the PID
	// now names a process started at another time (Reused is true and
	// Entry is that process), or the process exited during the walk.
	StatusGone
	// StatusError: the process could not be read; Err says why (a
	// *ProcError: ErrPermission, EMFILE, ...). It is not known to be gone.
	StatusError
)

// String returns the status's name.
func (s Status) String() string {
	switch s {
	case StatusAlive:
		return "alive"
	case StatusExited:
		return "exited"
	case StatusGone:
		return "gone"
	case StatusError:
		return "error"
	}
	return "Status(" + strconv.Itoa(int(s)) + ")"
}

// WalkResult is what Walk found of one process.
type WalkResult struct {
	// Member is the process as given to Walk; for a process Walk found
	// (Found), its PID and the start time /proc showed.
	Member
	// Status says whether the process is alive.
	Status Status
	// Found is true for a process Walk found in a children file, not
	// given as a member. A found process that exited before Walk could
	// read it has StatusGone and no Entry: a child shorter-lived than the
	// walk.
	Found bool
	// Reused is true with StatusGone when the PID names another process.
	Reused bool
	// Parent is, for a found process, the index in Walk.Results of the
	// process whose children file listed it; -1 for members.
	Parent int
	// Entry is what /proc/PID/stat said, where it was read: always with
	// StatusAlive, StatusExited and Reused; a process that vanished or
	// failed before its stat was read has a zero Entry.
	Entry Entry
	// Err is set with StatusError.
	Err error

	childOff, childLen int
}

// Walk is the result of (*Scanner).Walk. Its buffers are reused by the
// next walk into it, so a steady-state walk of an unchanged tree does not
// allocate.
type Walk struct {
	// SameStart decides whether a start time read from /proc (got) is the
	// member's (known, approx as in Member.Approx). Nil means known == got.
	SameStart func(known, got uint64, approx bool) bool

	// Results holds one entry per member, in the order given, followed by
	// the processes found in the members' children files that were not
	// members (Found), each of which was read and walked in turn.
	Results []WalkResult

	children []int
	arena    []byte
	index    map[int]int
}

// Children returns the children of Results[i], in ascending order, valid
// until the next walk into w. It is empty unless the status is
// StatusAlive.
func (w *Walk) Children(i int) []int {
	r := &w.Results[i]
	return w.children[r.childOff : r.childOff+r.childLen]
}

// Comm returns the command name of Results[i] without copying it, valid
// until the next walk into w; empty where Entry is not set.
func (w *Walk) Comm(i int) []byte {
	r := &w.Results[i]
	return w.arena[r.Entry.commOff : r.Entry.commOff+r.Entry.commLen]
}

// Index returns the index in Results of the process with this PID, if the
// last walk into w read or listed it.
func (w *Walk) Index(pid int) (int, bool) {
	i, ok := w.index[pid]
	return i, ok
}

// Reset empties w, keeping its memory.
func (w *Walk) Reset() {
	w.Results = w.Results[:0]
	w.children = w.children[:0]
	w.arena = w.arena[:0]
	clear(w.index)
}

// Walk checks each member individually and walks down from them: for each
// member it reads /proc/PID/stat, compares the start time (Walk.SameStart),
// and, if it is the same live process, reads its children (see Children).
// A child that is not a member is added to dst.Results as Found and walked
// in turn, so one call finds the whole tree below the members as /proc
// shows it. A member that was reparented (its parent exited) is still
// checked, through its own PID.
//
// Each process's files are read through one descriptor of its /proc/PID
// directory, so a PID reused during the walk is never mistaken for the
// member: the reused PID's files are not the directory's.
//
// A PID given twice is checked once, as its first Member. dst is reset
// first. Walk returns the first error among the results
// (StatusError; every one is in its result), or ErrNoChildrenFiles if the
// kernel lacks the children files, in which case nothing was read. A
// failure to read one process does not stop the walk.
func (s *Scanner) Walk(dst *Walk, members []Member) error {
	dst.Reset()
	if err := s.checkChildrenFiles(); err != nil {
		return err
	}
	if dst.index == nil {
		dst.index = make(map[int]int, len(members))
	}
	for _, m := range members {
		if _, dup := dst.index[m.PID]; dup {
			continue
		}
		dst.index[m.PID] = len(dst.Results)
		dst.Results = append(dst.Results, WalkResult{Member: m, Parent: -1})
	}
	var first error
	for i := 0; i < len(dst.Results); i++ {
		s.walkOne(dst, i)
		r := &dst.Results[i]
		if r.Status == StatusError && first == nil {
			first = r.Err
		}
		for _, c := range dst.children[r.childOff : r.childOff+r.childLen] {
			if _, known := dst.index[c]; known {
				continue
			}
			dst.index[c] = len(dst.Results)
			dst.Results = append(dst.Results, WalkResult{Member: Member{PID: c}, Found: true, Parent: i})
		}
	}
	return first
}

// walkOne reads dst.Results[i].
func (s *Scanner) walkOne(dst *Walk, i int) {
	r := &dst.Results[i]
	r.childOff = len(dst.children)
	// fail records an errno or an error: gone (ENOENT, ESRCH without a
	// hidden process behind them) needs no error value, so that walking
	// past gone members does not allocate.
	fail := func(file string, err error) {
		if isGoneErrno(err) {
			err = s.fs.hiddenErr(r.PID, file)
		}
		if err == nil || errors.Is(err, ErrGone) {
			r.Status = StatusGone
			return
		}
		if _, ok := err.(*ProcError); !ok {
			err = procErr(r.PID, file, err)
		}
		r.Status, r.Err = StatusError, err
	}
	dirfd, err := s.openPIDDir(r.PID)
	if err != nil {
		fail("", err)
		return
	}
	defer rawClose(dirfd)
	fd, err := openAt(dirfd, append(s.path[:0], "stat\x00"...), 0)
	if err != nil {
		fail("stat", err)
		return
	}
	n, err := rawRead(fd, s.statBuf)
	rawClose(fd)
	if err != nil {
		fail("stat", err)
		return
	}
	var st rawStat
	if err := parseStat(s.statBuf[:n], &st); err != nil {
		fail("stat", err)
		return
	}
	r.Entry = Entry{PID: st.pid, PPID: st.ppid, StartTicks: st.startTicks, NumThreads: st.numThreads, State: st.state,
		commOff: uint32(len(dst.arena)), commLen: uint32(len(st.comm))}
	dst.arena = append(dst.arena, st.comm...)
	if r.Found {
		r.StartTicks = st.startTicks
	} else if !sameStart(dst.SameStart, r.StartTicks, st.startTicks, r.Approx) {
		r.Status, r.Reused = StatusGone, true
		return
	}
	if !r.Entry.Live() {
		r.Status = StatusExited
		return
	}
	if s.beforeChildren != nil {
		s.beforeChildren(r.PID)
	}
	dst.children, err = s.appendChildren(dst.children, dirfd, r.PID, st.numThreads)
	if err != nil {
		fail("", err)
		return
	}
	r.Status = StatusAlive
	r.childLen = len(dst.children) - r.childOff
}

// goneOr wraps the errno of a read of /proc/PID/file as a *ProcError,
// told apart from a hidden process when it means gone.
func (s *Scanner) goneOr(pid int, file string, err error) error {
	if isGoneErrno(err) {
		return s.goneErr(pid, file, err)
	}
	return procErr(pid, file, err)
}

func sameStart(f func(known, got uint64, approx bool) bool, known, got uint64, approx bool) bool {
	if f == nil {
		return known == got
	}
	return f(known, got, approx)
}
