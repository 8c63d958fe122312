package reconcile

import (
	"errors"
	"fmt"
	"os"
	"runtime"
	"testing"
	"unsafe"

	"golang.org/x/sys/unix"
)

// TestPIDFDUnsupported refuses pidfd_open with a seccomp filter in a
// re-executed child, as an old kernel (ENOSYS) or a container's policy
// (ENOSYS or EPERM) would: OpenPIDFD must report ErrPIDFDUnsupported, so
// that the caller falls back, and never ErrGone.
func TestPIDFDUnsupported(t *testing.T) {
	if runtime.GOARCH != "amd64" && runtime.GOARCH != "arm64" {
		t.Skipf("skipping: the filter is written for amd64 and arm64, not %s", runtime.GOARCH)
	}
	for _, errno := range []string{"ENOSYS", "EPERM"} {
		t.Run(errno, func(t *testing.T) {
			t.Logf("helper: %s", runHelper(t, helperCmd(t, "nopidfd", "PWATCH_PIDFD_ERRNO="+errno)))
		})
	}
}

func helperNoPIDFD() int {
	var c checker
	errno := unix.ENOSYS
	if os.Getenv("PWATCH_PIDFD_ERRNO") == "EPERM" {
		errno = unix.EPERM
	}
	if err := denySyscall(unix.SYS_PIDFD_OPEN, errno); err != nil {
		c.errorf("installing the seccomp filter: %v", err)
		return c.exit()
	}
	fs, err := NewFS("")
	if err != nil {
		c.errorf("NewFS: %v", err)
		return c.exit()
	}
	self := os.Getpid()
	_, err = OpenPIDFD(fs, self, startTicksHelper(&c, fs, self))
	if !errors.Is(err, ErrPIDFDUnsupported) || !errors.Is(err, errno) || errors.Is(err, ErrGone) {
		c.errorf("OpenPIDFD under a filter returning %v = %v, want ErrPIDFDUnsupported", errno, err)
	}
	if c.failed == 0 {
		fmt.Printf("pidfd_open refused with %v: %v\n", errno, err)
	}
	return c.exit()
}

// denySyscall makes system call nr fail with errno in every thread of this
// process, from now on (seccomp, with no_new_privs).
func denySyscall(nr uintptr, errno unix.Errno) error {
	const (
		ldAbsW = unix.BPF_LD | unix.BPF_W | unix.BPF_ABS
		jeqK   = unix.BPF_JMP | unix.BPF_JEQ | unix.BPF_K
		retK   = unix.BPF_RET | unix.BPF_K
	)
	prog := []unix.SockFilter{
		{Code: ldAbsW, K: 0}, // seccomp_data.nr
		{Code: jeqK, Jt: 0, Jf: 1, K: uint32(nr)},
		{Code: retK, K: unix.SECCOMP_RET_ERRNO | uint32(errno)},
		{Code: retK, K: unix.SECCOMP_RET_ALLOW},
	}
	fprog := unix.SockFprog{Len: uint16(len(prog)), Filter: &prog[0]}
	if err := unix.Prctl(unix.PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0); err != nil {
		return err
	}
	_, _, e := unix.Syscall(unix.SYS_SECCOMP, unix.SECCOMP_SET_MODE_FILTER, unix.SECCOMP_FILTER_FLAG_TSYNC,
		uintptr(unsafe.Pointer(&fprog)))
	runtime.KeepAlive(prog)
	if e != 0 {
		return e
	}
	return nil
}
