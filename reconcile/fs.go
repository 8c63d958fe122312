package reconcile

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"time"

	"github.com/prometheus/procfs"
	"golang.org/x/sys/unix"
)

// ErrGone means the process does not exist (any more): its /proc entry is
// missing or vanished while it was read.
var ErrGone = errors.New("reconcile: process is gone")

// ErrNotProcfs means the proc root given to NewFS is not a proc filesystem.
var ErrNotProcfs = errors.New("reconcile: not a proc filesystem")

// UserHZ is the unit of StartTicks: the kernel exports process times to user
// space in USER_HZ ticks, which is 100 on every Linux architecture Go
// supports (sysconf(_SC_CLK_TCK)).
const UserHZ = 100

// DefaultRoot is the usual mount point of the proc filesystem.
const DefaultRoot = "/proc"

// FS is a proc filesystem at a given mount point. It is safe for concurrent
// use; it holds no open descriptors.
type FS struct {
	root     string
	bootTime time.Time
	hidePID  HidePID
	// probeHidden: a missing /proc/PID may be a hidden process, and this
	// proc filesystem shows the caller's own PID namespace, so kill(pid, 0)
	// can tell the two apart.
	probeHidden bool
}

// NewFS checks that root is a proc filesystem and returns it. An empty root
// means DefaultRoot. The check reads root/stat and requires its btime line,
// so a fake tree for tests needs one too; anything else gives an error
// wrapping ErrNotProcfs.
func NewFS(root string) (*FS, error) {
	if root == "" {
		root = DefaultRoot
	}
	pfs, err := procfs.NewFS(root)
	if err != nil {
		return nil, fmt.Errorf("%w: %s: %v", ErrNotProcfs, root, err)
	}
	st, err := pfs.Stat()
	if err != nil {
		return nil, fmt.Errorf("%w: %s: %v", ErrNotProcfs, root, err)
	}
	if st.BootTime == 0 {
		return nil, fmt.Errorf("%w: %s: no btime in stat", ErrNotProcfs, root)
	}
	boot := time.Unix(int64(st.BootTime), 0)
	if filepath.Clean(root) == DefaultRoot {
		// btime has whole seconds; the clocks give the same instant to
		// the microsecond.
		boot = BootTime()
	}
	fs := &FS{root: root, bootTime: boot}
	fs.hidePID, fs.probeHidden = mountHidePID(root)
	return fs, nil
}

// BootTime returns when the system booted, from the wall clock and
// CLOCK_BOOTTIME, to the microsecond. Two calls may differ by the time
// between the two clock readings.
func BootTime() time.Time {
	var ts unix.Timespec
	now := time.Now()
	if err := unix.ClockGettime(unix.CLOCK_BOOTTIME, &ts); err != nil {
		return time.Time{}
	}
	return now.Add(-time.Duration(ts.Nano())).Round(time.Microsecond)
}

// Root returns the mount point.
func (fs *FS) Root() string { return fs.root }

// BootTime returns the system boot time: for the real /proc, from the
// clocks (see BootTime); for another root, its stat file's btime.
func (fs *FS) BootTime() time.Time { return fs.bootTime }

// TicksToTime converts a start time in clock ticks since boot to wall time.
func (fs *FS) TicksToTime(ticks uint64) time.Time {
	return fs.bootTime.Add(time.Duration(ticks) * (time.Second / UserHZ))
}

// PIDMax returns /proc/sys/kernel/pid_max, the largest PID plus one.
func (fs *FS) PIDMax() (int, error) {
	b, err := os.ReadFile(filepath.Join(fs.root, "sys/kernel/pid_max"))
	if err != nil {
		return 0, err
	}
	n, err := strconv.Atoi(string(bytes.TrimSpace(b)))
	if err != nil {
		return 0, fmt.Errorf("reconcile: pid_max: %w", err)
	}
	return n, nil
}

// ReadStat reads /proc/PID/stat. A missing process gives a *ProcError
// matching ErrGone, one that may not be read a *ProcError matching
// ErrPermission (see ErrHidden), and contents that do not parse a
// *ProcError wrapping a *StatError. No other error means gone.
func (fs *FS) ReadStat(pid int) (Stat, error) {
	var buf [statBufSize]byte
	n, err := fs.readProcFile(pid, "stat", buf[:])
	if err != nil {
		return Stat{}, err
	}
	st, err := ParseStat(buf[:n])
	if err != nil {
		return Stat{}, procErr(pid, "stat", err)
	}
	return st, nil
}

// Cmdline reads /proc/PID/cmdline, keeping at most maxBytes bytes of it
// (maxBytes <= 0 means 64 KiB), which is the length of the arguments joined
// with spaces. A process without a command line (a kernel
// thread or a zombie) gives nil. The arguments are split at NUL bytes; a
// command line that a process rewrote without NULs comes back as one
// argument. truncated reports that the file was longer than maxBytes.
func (fs *FS) Cmdline(pid, maxBytes int) (args []string, truncated bool, err error) {
	if maxBytes <= 0 {
		maxBytes = 64 << 10
	}
	// Two bytes more than asked tell whether there was more than the
	// trailing NUL.
	buf := make([]byte, maxBytes+2)
	n, err := fs.readProcFile(pid, "cmdline", buf)
	if err != nil {
		return nil, false, err
	}
	if n > maxBytes {
		truncated = n > maxBytes+1 || buf[maxBytes] != 0
		n = maxBytes
	}
	return SplitCmdline(buf[:n]), truncated, nil
}

// SplitCmdline splits the contents of /proc/PID/cmdline into arguments.
//
// Each argument ends with a NUL, so only the last NUL is a terminator:
// trailing empty arguments are kept ("a\x00\x00" is "a" and ""), as exec
// gave them.
func SplitCmdline(b []byte) []string {
	b = bytes.TrimSuffix(b, []byte{0})
	if len(b) == 0 {
		return nil
	}
	parts := bytes.Split(b, []byte{0})
	args := make([]string, len(parts))
	for i, p := range parts {
		args[i] = string(p)
	}
	return args
}

// statBufSize holds any stat line: 52 numeric fields of at most 20 digits
// plus a command name of at most 64 bytes (kernel threads show longer names
// than TASK_COMM_LEN).
const statBufSize = 1536

// readProcFile reads root/PID/name into buf and returns how many bytes it
// read. It reads until buf is full or the file ends. Errors are
// *ProcError, with a missing file told apart from a hidden one (see
// fs.gone).
func (fs *FS) readProcFile(pid int, name string, buf []byte) (int, error) {
	var pathBuf [96]byte
	path := appendProcPath(pathBuf[:0], fs.root, pid, name)
	// Not the raw open of the scan loop: a command line is read from the
	// process's memory, under its mmap lock, which can block.
	fd, err := unix.Open(string(path[:len(path)-1]), unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return 0, fs.fileErr(pid, name, err)
	}
	defer unix.Close(fd)
	total := 0
	for total < len(buf) {
		n, err := unix.Read(fd, buf[total:])
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return 0, fs.fileErr(pid, name, err)
		}
		if n == 0 {
			break
		}
		total += n
	}
	return total, nil
}

// fileErr wraps the error of a read of /proc/PID/file. A missing file is
// checked against hidepid first (see hiddenErr).
func (fs *FS) fileErr(pid int, file string, err error) error {
	if isGoneErrno(err) {
		if h := fs.hiddenErr(pid, file); h != nil {
			return h
		}
	}
	return procErr(pid, file, err)
}

// hiddenErr returns a *ProcError wrapping ErrHidden if this proc
// filesystem hides processes (hidepid=2 or 4) and pid, which /proc did not
// show, is in use in the caller's PID namespace; otherwise nil, and the
// process is gone. kill(pid, 0) is the probe: ESRCH means no such process,
// while success or EPERM mean the PID is in use.
func (fs *FS) hiddenErr(pid int, file string) error {
	if !fs.probeHidden || pid <= 0 {
		return nil
	}
	if err := unix.Kill(pid, 0); err == unix.ESRCH {
		return nil
	}
	return procErr(pid, file, ErrHidden)
}

// appendProcPath appends "root/PID/name\x00" to dst.
func appendProcPath(dst []byte, root string, pid int, name string) []byte {
	dst = append(dst, root...)
	dst = append(dst, '/')
	dst = strconv.AppendInt(dst, int64(pid), 10)
	dst = append(dst, '/')
	dst = append(dst, name...)
	return append(dst, 0)
}
