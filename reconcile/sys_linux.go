package reconcile

import (
	"runtime"
	"unsafe"

	"golang.org/x/sys/unix"
)

// openPath opens a NUL-terminated path read-only without converting it to a
// string, so that the scan loop does not allocate.
func openPath(path []byte) (int, error) {
	dirfd := unix.AT_FDCWD
	for {
		fd, _, errno := unix.Syscall6(unix.SYS_OPENAT, uintptr(dirfd),
			uintptr(unsafe.Pointer(&path[0])), uintptr(unix.O_RDONLY|unix.O_CLOEXEC), 0, 0, 0)
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
