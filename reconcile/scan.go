package reconcile

import (
	"encoding/binary"
	"errors"
	"fmt"
	"strconv"

	"golang.org/x/sys/unix"
)

// Entry is one process seen by a host scan.
type Entry struct {
	// PID and PPID are fields 1 and 4 of /proc/PID/stat.
	PID, PPID int
	// StartTicks is field 22, the start time in ticks since boot.
	StartTicks uint64
	// NumThreads is field 20.
	NumThreads int
	// State is field 3.
	State byte

	commOff, commLen uint32
}

// Live reports whether the process can still run (see IsLive).
func (e *Entry) Live() bool { return IsLive(e.State, e.NumThreads) }

// Scan is the result of a host scan: every process that was readable, in the
// order the kernel listed them (ascending PID).
type Scan struct {
	Entries []Entry
	// Denied lists the PIDs that /proc listed but that this reader may not
	// read (ErrPermission: hidepid=1, or a file mode that forbids it).
	// They exist; their place in the tree is unknown.
	Denied []int
	arena  []byte
}

// Comm returns the command name of Entries[i].
func (s *Scan) Comm(i int) string {
	e := &s.Entries[i]
	return string(s.arena[e.commOff : e.commOff+e.commLen])
}

// CommBytes returns the command name of Entries[i] without copying it; the
// bytes are valid until the next scan.
func (s *Scan) CommBytes(i int) []byte {
	e := &s.Entries[i]
	return s.arena[e.commOff : e.commOff+e.commLen]
}

// Reset empties the scan, keeping its memory for reuse.
func (s *Scan) Reset() {
	s.Entries = s.Entries[:0]
	s.Denied = s.Denied[:0]
	s.arena = s.arena[:0]
}

// Scanner reads every process of the host. It reuses its buffers between
// scans, so a steady-state scan does not allocate; a Scanner is not safe for
// concurrent use.
type Scanner struct {
	fs       *FS
	dirBuf   []byte
	statBuf  []byte
	path     []byte
	pids     []int
	tids     []int
	childBuf []byte
	// childrenFiles caches FS.HasChildrenFiles: 0 unknown, 1 yes, 2 no.
	childrenFiles uint8
	// beforeChildren, if set, runs in Walk between a process's stat
	// and its children (tests use it to end the process mid-walk).
	beforeChildren func(pid int)
}

// NewScanner returns a Scanner over fs.
func (fs *FS) NewScanner() *Scanner {
	return &Scanner{
		fs:      fs,
		dirBuf:  make([]byte, 32<<10),
		statBuf: make([]byte, statBufSize),
		path:    make([]byte, 0, len(fs.root)+32),
	}
}

// ListPIDs appends the PIDs listed in the proc root to dst, in the order the
// kernel lists them (ascending).
func (s *Scanner) ListPIDs(dst []int) ([]int, error) {
	dirfd, err := unix.Open(s.fs.root, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return dst, fmt.Errorf("reconcile: open %s: %w", s.fs.root, err)
	}
	defer unix.Close(dirfd)
	for {
		n, err := unix.Getdents(dirfd, s.dirBuf)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return dst, fmt.Errorf("reconcile: list %s: %w", s.fs.root, err)
		}
		if n <= 0 {
			return dst, nil
		}
		dst = appendDirentPIDs(dst, s.dirBuf[:n])
	}
}

// appendDirentPIDs parses linux_dirent64 records and appends the names that
// are decimal numbers.
func appendDirentPIDs(dst []int, b []byte) []int {
	// struct linux_dirent64 { u64 d_ino; s64 d_off; u16 d_reclen; u8 d_type; char d_name[]; }
	const nameOff = 19
	for len(b) >= nameOff {
		reclen := int(binary.NativeEndian.Uint16(b[16:18]))
		if reclen < nameOff || reclen > len(b) {
			return dst
		}
		name := b[nameOff:reclen]
		for i, c := range name {
			if c == 0 {
				name = name[:i]
				break
			}
		}
		if pid, ok := parseUint(name); ok && pid > 0 && pid <= 1<<31-1 {
			dst = append(dst, int(pid))
		}
		b = b[reclen:]
	}
	return dst
}

// Scan reads /proc/PID/stat of every process into dst, which it resets
// first. Processes that exit during the scan are skipped; those that may
// not be read are listed in dst.Denied. Any other failure (EMFILE, a stat
// file that cannot be parsed, ...) ends the scan with its error, a
// *ProcError for one process's file: a partial scan would make the
// processes it missed look gone.
func (s *Scanner) Scan(dst *Scan) error {
	dst.Reset()
	var err error
	s.pids, err = s.ListPIDs(s.pids[:0])
	if err != nil {
		return err
	}
	var r rawStat
	for _, pid := range s.pids {
		ok, err := s.readRaw(pid, &r)
		if err != nil {
			if errors.Is(err, ErrPermission) {
				dst.Denied = append(dst.Denied, pid)
				continue
			}
			return err
		}
		if !ok {
			continue
		}
		dst.Entries = append(dst.Entries, Entry{
			PID:        r.pid,
			PPID:       r.ppid,
			StartTicks: r.startTicks,
			NumThreads: r.numThreads,
			State:      r.state,
			commOff:    uint32(len(dst.arena)),
			commLen:    uint32(len(r.comm)),
		})
		dst.arena = append(dst.arena, r.comm...)
	}
	return nil
}

// readRaw reads /proc/PID/stat into r. ok is false with a nil error only
// if the process is gone: ENOENT or ESRCH, and no hidden process behind
// the PID (see HidePID). Every other failure is a *ProcError.
func (s *Scanner) readRaw(pid int, r *rawStat) (ok bool, err error) {
	s.path = appendProcPath(s.path[:0], s.fs.root, pid, "stat")
	fd, err := openPath(s.path)
	if err != nil {
		return false, s.missErr(pid, "stat", err)
	}
	n, err := rawRead(fd, s.statBuf)
	rawClose(fd)
	if err != nil {
		return false, s.missErr(pid, "stat", err)
	}
	if err := parseStat(s.statBuf[:n], r); err != nil {
		return false, procErr(pid, "stat", err)
	}
	return true, nil
}

// missErr turns a failed system call on /proc/PID/file into nil (the
// process is gone) or a *ProcError.
func (s *Scanner) missErr(pid int, file string, err error) error {
	if isGoneErrno(err) {
		return s.fs.hiddenErr(pid, file)
	}
	return procErr(pid, file, err)
}

// Lookup reads one process with the scanner's buffers, without allocating.
// comm is its command name, valid until the scanner's next read. It is
// meant for the few PIDs an event or a tree-local reconcile concerns.
//
// ok is false with a nil error exactly when /proc says the process does
// not exist (ENOENT or ESRCH, and no hidden process behind the PID, see
// HidePID). A zombie is found (ok is true; see Entry.Live). Any other
// failure is a *ProcError in err: ErrPermission for a process that may not
// be read, and EMFILE, ENFILE, ENOMEM, EIO or a malformed stat
// (ErrBadStat) for a read that failed; none of these says the process is
// gone.
func (s *Scanner) Lookup(pid int) (e Entry, comm []byte, ok bool, err error) {
	var r rawStat
	ok, err = s.readRaw(pid, &r)
	if !ok || err != nil {
		return Entry{}, nil, false, err
	}
	return Entry{PID: r.pid, PPID: r.ppid, StartTicks: r.startTicks, NumThreads: r.numThreads, State: r.state}, r.comm, true, nil
}

// String describes an entry for debugging.
func (e Entry) String() string {
	return "pid " + strconv.Itoa(e.PID) + " ppid " + strconv.Itoa(e.PPID) + " state " + string(e.State) +
		" start " + strconv.FormatUint(e.StartTicks, 10)
}
