package watchman

import (
	"bufio"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/process-watchman/watchman/connector"
	"github.com/process-watchman/watchman/reconcile"
	"github.com/process-watchman/watchman/tracker"
)

// childStarts gives the writer the exact start time of a member's new
// child without reading /proc/PID/stat: the kernel tree filter records
// the child's start_boottime at the fork, in the forking task's context,
// in memory the hub reads without a system call
// (connector.TreeFilter.ForkStart). That read (open, read, close) was the
// largest part of the writer's work per fork.
//
// The record is taken only if it is this fork's: a slot holds the latest
// fork of its PID, so the start time must be no later than the event's
// timestamp allows (a later one is a reuse of the PID since) and no more
// than startWindow earlier (an older one is a former holder of the PID,
// had the program missed this fork). Else, and where the filter cannot
// record (no kernel filter, no BTF, a kernel that refuses the helpers),
// the writer reads /proc as before. The first startChecks records are
// checked against /proc, and a disagreement turns the records off for
// the hub's life (HubStats.StartsReason says why).
type childStarts struct {
	f      forkStarter // nil: /proc is read
	offset int64       // the time namespace's boottime offset (ns), which /proc adds
	checks int         // records still checked against /proc
	reason string      // why /proc is read ("" while records are used)
}

// forkStarter is connector.TreeFilter's record of start times (an
// interface for the tests).
type forkStarter interface {
	ForkStart(pid int) (startBoottimeNS uint64, ok bool)
}

var _ forkStarter = (*connector.TreeFilter)(nil)

// startChecks is how many records each hub checks against /proc.
const startChecks = 32

// startWindow bounds, in clock ticks, how much earlier than the fork
// event's timestamp a recorded start time may be: the kernel takes the
// timestamp a few microseconds after it set the start time, milliseconds
// when the forking task is preempted in between; a former holder of the
// PID started at least a whole PID cycle earlier.
const startWindow = uint64(time.Second / (time.Second / reconcile.UserHZ))

func newChildStarts(hf *hubFilter) childStarts {
	if hf.f == nil {
		return childStarts{reason: "no kernel tree filter"}
	}
	if ok, why := hf.f.ForkStarts(); !ok {
		return childStarts{reason: why}
	}
	off, err := boottimeOffset("/proc/self/timens_offsets")
	if err != nil {
		return childStarts{reason: err.Error()}
	}
	return childStarts{f: hf.f, offset: off, checks: startChecks}
}

// boottimeOffset reads this process's CLOCK_BOOTTIME offset from its time
// namespace's offsets file (0 without time namespaces).
func boottimeOffset(path string) (int64, error) {
	f, err := os.Open(path)
	if errors.Is(err, fs.ErrNotExist) {
		return 0, nil
	}
	if err != nil {
		return 0, fmt.Errorf("reading the time namespace's offsets: %w", err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fl := strings.Fields(sc.Text())
		if len(fl) != 3 || fl[0] != "boottime" && fl[0] != "7" { // CLOCK_BOOTTIME
			continue
		}
		sec, err1 := strconv.ParseInt(fl[1], 10, 64)
		nsec, err2 := strconv.ParseInt(fl[2], 10, 64)
		if err1 != nil || err2 != nil {
			return 0, fmt.Errorf("time namespace offsets: bad boottime line %q", sc.Text())
		}
		return sec*int64(time.Second) + nsec, nil
	}
	if err := sc.Err(); err != nil {
		return 0, fmt.Errorf("reading the time namespace's offsets: %w", err)
	}
	return 0, nil
}

// record returns the start time the filter recorded for pid's fork whose
// event's timestamp gives derived ticks, if it is that fork's.
func (cs *childStarts) record(pid int, derived uint64) (uint64, bool) {
	if cs.f == nil {
		return 0, false
	}
	ns, ok := cs.f.ForkStart(pid)
	if !ok {
		return 0, false
	}
	at := int64(ns) + cs.offset // as /proc shows it in this time namespace
	if at < 0 {
		return 0, false
	}
	ticks := uint64(at) / uint64(time.Second/reconcile.UserHZ)
	if ticks > derived+1 || ticks+startWindow < derived {
		return 0, false
	}
	return ticks, true
}

// childIdentity returns the start time of the child pid of a fork whose
// event's timestamp gives derived ticks, and whether it is approximate.
// The kernel's record serves where there is one (after the first checks);
// else /proc/PID/stat: the child is in /proc from the fork until it is
// reaped, and its start time there is exact. The process /proc shows
// under the PID is the child if it started no later than the event's
// timestamp: the PID was the child's from the fork on, so a later start
// is a reuse, however late the event is read and however long the kernel
// took between the fork and the event. If the child is gone (or the PID
// reused) the start time is derived from the timestamp, and may be a tick
// off: the timestamp follows the start by microseconds, more under
// preemption, so no tick derived from it alone is exact.
func (wr *writer) childIdentity(pid int, derived uint64) (uint64, bool) {
	cs := &wr.starts
	rec, ok := cs.record(pid, derived)
	if ok && cs.checks == 0 {
		wr.h.kernelStarts.Add(1)
		return rec, false
	}
	child := observe(wr.scanner, nil, pid, false, 0)
	wr.h.startReads.Add(1)
	exact := child.Seen == tracker.SeenAlive && child.StartTicks <= derived+1
	if ok && exact {
		cs.checks--
		if rec != child.StartTicks {
			cs.f = nil
			reason := fmt.Sprintf("the kernel filter's start time of process %d (%d ticks) disagreed with /proc's (%d)", pid, rec, child.StartTicks)
			cs.reason = reason
			wr.h.startsReason.Store(&reason)
		}
	}
	if !exact {
		return derived, true
	}
	return child.StartTicks, false
}
