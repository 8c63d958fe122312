package reconcile

import (
	"runtime"
	"unsafe"

	"golang.org/x/sys/unix"
)

// openPath opens a NUL-terminated path read-only without converting it to a
// string, so that the scan loop does not allocate. It makes a raw system
// call (no scheduler hand-off, see readStatFile).
func openPath(path []byte) (int, error) {
	return openAt(unix.AT_FDCWD, path, 0)
}

// openAt opens a NUL-terminated path relative to dirfd, read-only with
// O_CLOEXEC and the extra flags, as a raw system call (see openPath).
func openAt(dirfd int, path []byte, flags int) (int, error) {
	for {
		fd, _, errno := unix.RawSyscall6(unix.SYS_OPENAT, uintptr(dirfd),
			uintptr(unsafe.Pointer(&path[0])), uintptr(unix.O_RDONLY|unix.O_CLOEXEC|flags), 0, 0, 0)
		runtime.KeepAlive(path)
		if errno == unix.EINTR {
			continue
		}
		if errno != 0 {
			return -1, errno
		}
		return int(fd), nil
	}
}

// rawRead and rawClose are read(2) and close(2) as raw system calls. A
// /proc/PID/stat file is generated from the task struct without blocking,
// so these calls are short, and skipping the scheduler's syscall
// bookkeeping (which wakes its monitor thread in an otherwise idle
// process) saves a tenth of the cost of an event that needs a read.
func rawRead(fd int, b []byte) (int, error) {
	if len(b) == 0 {
		return 0, nil
	}
	for {
		n, _, errno := unix.RawSyscall(unix.SYS_READ, uintptr(fd), uintptr(unsafe.Pointer(&b[0])), uintptr(len(b)))
		if errno == unix.EINTR {
			continue
		}
		if errno != 0 {
			return 0, errno
		}
		return int(n), nil
	}
}

func rawClose(fd int) {
	unix.RawSyscall(unix.SYS_CLOSE, uintptr(fd), 0, 0)
}
