package watchman

import (
	"time"

	"github.com/process-watchman/watchman/reconcile"
	"golang.org/x/sys/unix"
)

// clocks converts kernel timestamps, sampled once per batch of events.
type clocks struct {
	mono, boot int64 // ns
	wall       time.Time
}

// clockBase reads CLOCK_MONOTONIC through Go's own monotonic clock (the
// same clock, read through the vDSO) after one system call to calibrate,
// and re-reads CLOCK_BOOTTIME, which moves apart from it only across a
// suspend, once a second.
type clockBase struct {
	wall0    time.Time
	mono0    int64
	bootOff  int64 // CLOCK_BOOTTIME - CLOCK_MONOTONIC
	nextBoot time.Time
}

func (b *clockBase) sample() clocks {
	now := time.Now()
	if b.wall0.IsZero() || !now.Before(b.nextBoot) {
		var m, bt unix.Timespec
		_ = unix.ClockGettime(unix.CLOCK_MONOTONIC, &m)
		_ = unix.ClockGettime(unix.CLOCK_BOOTTIME, &bt)
		if b.wall0.IsZero() {
			b.wall0, b.mono0 = now, m.Nano()
		}
		b.bootOff = bt.Nano() - m.Nano()
		b.nextBoot = now.Add(time.Second)
	}
	mono := b.mono0 + int64(now.Sub(b.wall0))
	return clocks{mono: mono, boot: mono + b.bootOff, wall: now}
}

// wallOf converts a kernel CLOCK_MONOTONIC timestamp to wall time.
func (c *clocks) wallOf(ts uint64) time.Time {
	return c.wall.Add(-time.Duration(c.mono - int64(ts)))
}

// ticksOf converts a kernel timestamp to clock ticks since boot, the unit
// of /proc/PID/stat's start time.
func (c *clocks) ticksOf(ts uint64) uint64 {
	bootNS := int64(ts) + (c.boot - c.mono)
	if bootNS < 0 {
		return 0
	}
	return uint64(bootNS) / uint64(time.Second/reconcile.UserHZ)
}
