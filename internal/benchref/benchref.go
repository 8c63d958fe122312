// Package benchref holds the reference loops that the host scanner is
// measured against, shared by reconcile's Go benchmarks and the benchmark
// suite so that both measure the same thing.
package benchref

import (
	"os"

	"golang.org/x/sys/unix"
)

// RawLoop reads every /proc/PID/stat the plainest way: Readdirnames, then
// open/read/close of each file into buf, which is reused, with no parsing
// beyond the name. It is the floor a scanner can be compared with.
func RawLoop(buf []byte) error {
	d, err := os.Open("/proc")
	if err != nil {
		return err
	}
	names, err := d.Readdirnames(-1)
	d.Close()
	if err != nil {
		return err
	}
	for _, name := range names {
		if name[0] < '0' || name[0] > '9' {
			continue
		}
		fd, err := unix.Open("/proc/"+name+"/stat", unix.O_RDONLY|unix.O_CLOEXEC, 0)
		if err != nil {
			continue
		}
		_, _ = unix.Read(fd, buf)
		unix.Close(fd)
	}
	return nil
}
