//go:build linux

package taskstats

import (
	"os"
	"time"

	"golang.org/x/sys/unix"
)

// BoottimeOffset returns CLOCK_BOOTTIME minus CLOCK_MONOTONIC: the time
// the machine has spent suspended since boot. Add it to a CLOCK_MONOTONIC
// timestamp (such as a proc connector event's) to get the CLOCK_BOOTTIME
// that Record.StartTicksAt takes; it changes only when the machine
// suspends.
func BoottimeOffset() (time.Duration, error) {
	var m1, b, m2 unix.Timespec
	if err := unix.ClockGettime(unix.CLOCK_MONOTONIC, &m1); err != nil {
		return 0, os.NewSyscallError("clock_gettime", err)
	}
	if err := unix.ClockGettime(unix.CLOCK_BOOTTIME, &b); err != nil {
		return 0, os.NewSyscallError("clock_gettime", err)
	}
	if err := unix.ClockGettime(unix.CLOCK_MONOTONIC, &m2); err != nil {
		return 0, os.NewSyscallError("clock_gettime", err)
	}
	// The boot reading lies between the two monotonic ones; the offset
	// is exact to half their gap (tens of nanoseconds).
	return time.Duration(b.Nano() - (m1.Nano()+m2.Nano())/2), nil
}
