package reconcile

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

func TestProcErrorIs(t *testing.T) {
	tests := []struct {
		err        error
		gone, perm bool
	}{
		{unix.ENOENT, true, false},
		{unix.ESRCH, true, false},
		{unix.EACCES, false, true},
		{unix.EPERM, false, true},
		{ErrHidden, false, true},
		{unix.EMFILE, false, false},
		{unix.ENFILE, false, false},
		{unix.ENOMEM, false, false},
		{unix.EIO, false, false},
		{&StatError{Reason: "x"}, false, false},
	}
	for _, tt := range tests {
		err := error(&ProcError{PID: 7, File: "stat", Err: tt.err})
		if got := errors.Is(err, ErrGone); got != tt.gone {
			t.Errorf("%v: Is(ErrGone) = %v, want %v", tt.err, got, tt.gone)
		}
		if got := errors.Is(err, ErrPermission); got != tt.perm {
			t.Errorf("%v: Is(ErrPermission) = %v, want %v", tt.err, got, tt.perm)
		}
		if !errors.Is(err, tt.err) {
			t.Errorf("%v: the cause is not matched", tt.err)
		}
		if !strings.Contains(err.Error(), "pid 7 stat") {
			t.Errorf("message %q does not name the process and file", err)
		}
	}
}

// TestReadErrorsAreNotGone reads processes whose files fail in other ways
// than ENOENT in a fake root, as root does not get EACCES: none of them may
// come back as gone.
func TestReadErrorsAreNotGone(t *testing.T) {
	checkNoFDLeak(t)
	fs, root := tempProcRoot(t, map[string]string{
		"11/stat":                 "11 (x) S 1 garbage\n",
		"1/task/1/children":       "",
		"14/stat":                 "14 (k) S 1 14 14 0 -1 0 0 0 0 0 0 0 0 0 20 0 1 0 77\n",
		"14/task/14/children":     "15 x ",
		"16/stat":                 "16 (k) S 1 16 16 0 -1 0 0 0 0 0 0 0 0 0 20 0 1 0 78\n",
		"16/task/16/children/bad": "", // a directory where a file should be
	})
	// 10/stat is a directory: read gives EISDIR.
	if err := os.MkdirAll(filepath.Join(root, "10", "stat"), 0o755); err != nil {
		t.Fatal(err)
	}
	// 12/stat is a symlink loop: open gives ELOOP.
	if err := os.MkdirAll(filepath.Join(root, "12"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("stat", filepath.Join(root, "12", "stat")); err != nil {
		t.Fatal(err)
	}
	// 13/stat is a dangling symlink: ENOENT, which is gone.
	if err := os.MkdirAll(filepath.Join(root, "13"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("nowhere", filepath.Join(root, "13", "stat")); err != nil {
		t.Fatal(err)
	}
	sc := fs.NewScanner()
	tests := []struct {
		pid   int
		cause error
	}{
		{10, unix.EISDIR},
		{11, ErrBadStat},
		{12, unix.ELOOP},
	}
	for _, tt := range tests {
		_, _, ok, err := sc.Lookup(tt.pid)
		if ok || !errors.Is(err, tt.cause) || errors.Is(err, ErrGone) {
			t.Errorf("Lookup(%d) = ok %v, %v; want the error %v, not gone", tt.pid, ok, err, tt.cause)
		}
		var pe *ProcError
		if !errors.As(err, &pe) || pe.PID != tt.pid || pe.File != "stat" {
			t.Errorf("Lookup(%d) error %#v is not a *ProcError for its stat", tt.pid, err)
		}
		if _, err := fs.ReadStat(tt.pid); !errors.Is(err, tt.cause) || errors.Is(err, ErrGone) {
			t.Errorf("ReadStat(%d) = %v, want %v", tt.pid, err, tt.cause)
		}
	}
	for _, pid := range []int{13, 99} {
		if _, _, ok, err := sc.Lookup(pid); ok || err != nil {
			t.Errorf("Lookup(%d) = %v, %v; want gone (false, nil)", pid, ok, err)
		}
		if _, err := fs.ReadStat(pid); !errors.Is(err, ErrGone) {
			t.Errorf("ReadStat(%d) = %v, want ErrGone", pid, err)
		}
	}
	// A scan stops at an error that is not gone, rather than return a
	// scan that misses a live process.
	var s Scan
	if err := sc.Scan(&s); err == nil || errors.Is(err, ErrGone) {
		t.Errorf("Scan over broken stat files = %v, want an error", err)
	}
	// Children files: garbage and unreadable ones are errors, not "no
	// children".
	if kids, err := sc.Children(14, nil); err == nil || errors.Is(err, ErrGone) {
		t.Errorf("Children(14) with a malformed file = %v, %v; want an error", kids, err)
	}
	if kids, err := sc.Children(16, nil); !errors.Is(err, unix.EISDIR) {
		t.Errorf("Children(16) with a directory for a file = %v, %v; want EISDIR", kids, err)
	}
}

// TestEMFILE runs the reads in a child process whose descriptor table is
// full (RLIMIT_NOFILE lowered there, never in the test process): each must
// report EMFILE, none may report the process gone.
func TestEMFILE(t *testing.T) {
	out := runHelper(t, helperCmd(t, "emfile"))
	t.Logf("helper:\n%s", out)
}

func helperEMFILE() int {
	var c checker
	fs, err := NewFS("")
	if err != nil {
		c.errorf("NewFS: %v", err)
		return c.exit()
	}
	sc := fs.NewScanner()
	self := os.Getpid()
	start := startTicksHelper(&c, fs, self)
	if !fs.HasChildrenFiles() {
		c.errorf("no children files")
		return c.exit()
	}
	if err := unix.Setrlimit(unix.RLIMIT_NOFILE, &unix.Rlimit{Cur: 64, Max: 64}); err != nil {
		c.errorf("setrlimit: %v", err)
		return c.exit()
	}
	var fds []int
	for {
		fd, err := unix.Dup(0)
		if err == unix.EMFILE {
			break
		}
		if err != nil {
			c.errorf("dup: %v", err)
			return c.exit()
		}
		fds = append(fds, fd)
	}
	isEMFILE := func(what string, err error) {
		if !errors.Is(err, unix.EMFILE) || errors.Is(err, ErrGone) || errors.Is(err, ErrPermission) {
			c.errorf("%s: %v, want EMFILE (not gone, not permission)", what, err)
		}
	}
	// No descriptor free at all.
	_, _, ok, err := sc.Lookup(self)
	if ok {
		c.errorf("Lookup(self) ok with no descriptor free")
	}
	isEMFILE("Lookup", err)
	_, err = fs.ReadStat(self)
	isEMFILE("ReadStat", err)
	_, _, err = fs.Cmdline(self, 0)
	isEMFILE("Cmdline", err)
	_, err = sc.Children(self, nil)
	isEMFILE("Children", err)
	var s Scan
	isEMFILE("Scan", sc.Scan(&s))
	var w Walk
	err = sc.Walk(&w, []Member{{PID: self, StartTicks: start}})
	isEMFILE("Walk", err)
	if len(w.Results) != 1 || w.Results[0].Status != StatusError {
		c.errorf("Walk results %+v, want one StatusError", w.Results)
	}
	_, err = OpenPIDFD(fs, self, start)
	isEMFILE("OpenPIDFD", err)

	// One descriptor free: /proc/PID opens, the file below it does not.
	unix.Close(fds[len(fds)-1])
	before := fdCount()
	_, err = sc.Children(self, nil)
	isEMFILE("Children with one descriptor", err)
	err = sc.Walk(&w, []Member{{PID: self, StartTicks: start}})
	isEMFILE("Walk with one descriptor", err)
	_, err = OpenPIDFD(fs, self, start)
	isEMFILE("OpenPIDFD with one descriptor", err)
	if n := fdCount(); n != before {
		c.errorf("%d descriptors open after the failed reads, %d before", n, before)
	}
	for _, fd := range fds[:len(fds)-1] {
		unix.Close(fd)
	}
	// With descriptors again, the same reads work.
	if _, _, ok, err := sc.Lookup(self); !ok || err != nil {
		c.errorf("Lookup after freeing descriptors: %v, %v", ok, err)
	}
	if err := sc.Walk(&w, []Member{{PID: self, StartTicks: start}}); err != nil || w.Results[0].Status != StatusAlive {
		c.errorf("Walk after freeing descriptors: %v, %+v", err, w.Results)
	}
	if c.failed == 0 {
		println("all reads gave EMFILE with a full descriptor table")
	}
	return c.exit()
}

// fdCount counts open descriptors by listing /proc/self/fd with getdents on
// a descriptor of its own (it opens one, which it does not count).
func fdCount() int {
	dirfd, err := unix.Open("/proc/self/fd", unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return -1
	}
	defer unix.Close(dirfd)
	buf := make([]byte, 16<<10)
	n := 0
	for {
		m, err := unix.Getdents(dirfd, buf)
		if err != nil || m <= 0 {
			break
		}
		n += len(appendDirentPIDs(nil, buf[:m]))
	}
	// appendDirentPIDs skips "0" (stdin) and counts the listing's own
	// descriptor: the two make up for each other.
	return n
}

func startTicksHelper(c *checker, fs *FS, pid int) uint64 {
	st, err := fs.ReadStat(pid)
	if err != nil {
		c.errorf("ReadStat(%d): %v", pid, err)
	}
	return st.StartTicks
}
