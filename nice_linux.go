package watchman

import (
	"errors"
	"fmt"
	"runtime"

	"golang.org/x/sys/unix"
)

// setNice applies HubConfig.Nice to the calling goroutine's thread, which
// it locks, and returns what puts the thread back at its former nice value
// (call it before the goroutine ends: the runtime may keep the thread).
func (h *Hub) setNice() (restore func()) {
	if h.cfg.Nice == 0 {
		return func() {}
	}
	runtime.LockOSThread()
	tid := unix.Gettid()
	old, gerr := unix.Getpriority(unix.PRIO_PROCESS, tid)
	if err := unix.Setpriority(unix.PRIO_PROCESS, tid, h.cfg.Nice); err != nil {
		msg := fmt.Sprintf("setpriority(%d): %v", h.cfg.Nice, err)
		if errors.Is(err, unix.EACCES) || errors.Is(err, unix.EPERM) {
			msg += " (a negative nice value needs CAP_SYS_NICE)"
		}
		h.niceErr.Store(&msg)
	}
	return func() {
		if gerr == nil {
			// getpriority(2) returns 20 - nice.
			_ = unix.Setpriority(unix.PRIO_PROCESS, tid, 20-old)
		}
		runtime.UnlockOSThread()
	}
}
