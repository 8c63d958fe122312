package watchman

import (
	"errors"
	"fmt"
	"runtime"

	"golang.org/x/sys/unix"
)

// setNice applies HubConfig.Nice to the calling goroutine's thread, which
// it locks: the goroutine must end locked, so that the runtime ends the
// thread with it rather than reuse it at another priority.
func (h *Hub) setNice() {
	if h.cfg.Nice == 0 {
		return
	}
	runtime.LockOSThread()
	if err := unix.Setpriority(unix.PRIO_PROCESS, unix.Gettid(), h.cfg.Nice); err != nil {
		msg := fmt.Sprintf("setpriority(%d): %v", h.cfg.Nice, err)
		if errors.Is(err, unix.EACCES) || errors.Is(err, unix.EPERM) {
			msg += " (a negative nice value needs CAP_SYS_NICE)"
		}
		h.niceErr.Store(&msg)
	}
}
