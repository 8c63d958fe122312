//go:build !linux

package taskstats

import "time"

// BoottimeOffset fails on every system but Linux. The error matches
// ErrNotSupported.
func BoottimeOffset() (time.Duration, error) {
	return 0, &OpError{Op: "clock", Kind: ErrNotSupported, Detail: "CLOCK_BOOTTIME exists only on Linux"}
}
