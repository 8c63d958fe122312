package watchman

import (
	"errors"
	"sync/atomic"
	"time"

	"github.com/process-watchman/watchman/reconcile"
)

// cmdliner reads a process's command line (reconcile.FS.Cmdline).
type cmdliner interface {
	Cmdline(pid, maxBytes int) ([]string, bool, error)
}

// cmdlineWait bounds how long the hub's writer waits for one command
// line.
const cmdlineWait = 50 * time.Millisecond

// errCmdlineSlow is the error of a command line read that did not return
// within cmdlineWait.
var errCmdlineSlow = errors.New("watchman: reading the command line took too long; it was left unread")

// timedCmdline reads command lines for the hub's writer, which must never
// block: reading /proc/PID/cmdline takes the process's memory map lock
// (the kernel reads the arguments from its memory), so it waits as long as
// the process holds it: for a process stuck in a page fault on a hung
// network file system, indefinitely. Each read runs on a goroutine of its
// own; after cmdlineWait the writer goes on without the command line
// (counted in HubStats.SlowReads) and the goroutine ends when the read
// does — the only goroutine the hub can leave behind at Close, and only
// while the kernel holds the read.
type timedCmdline struct {
	fs   *reconcile.FS
	slow *atomic.Uint64
}

type cmdlineResult struct {
	args  []string
	trunc bool
	err   error
}

// Cmdline implements cmdliner.
func (tc timedCmdline) Cmdline(pid, maxBytes int) ([]string, bool, error) {
	done := make(chan cmdlineResult, 1)
	go func() {
		args, trunc, err := tc.fs.Cmdline(pid, maxBytes)
		done <- cmdlineResult{args, trunc, err}
	}()
	t := time.NewTimer(cmdlineWait)
	defer t.Stop()
	select {
	case r := <-done:
		return r.args, r.trunc, r.err
	case <-t.C:
		tc.slow.Add(1)
		return nil, false, errCmdlineSlow
	}
}
