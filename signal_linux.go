//go:build linux

package watchman

import (
	"errors"
	"fmt"
	"syscall"

	"github.com/process-watchman/watchman/reconcile"
	"github.com/process-watchman/watchman/tracker"
	"golang.org/x/sys/unix"
)

// ErrNotMember: Signal was asked to signal an identity that is neither the
// Watcher's live root nor one of its live members.
var ErrNotMember = errors.New("watchman: not a member of the tree")

// Signal sends sig to the process id, and only to it: id must be the live
// root or a live member, and the process is signalled through a pidfd
// after /proc showed the same start time, so a PID that another process
// took over is never hit. It returns an error matching ErrNoSuchProcess
// when the process has exited (or its PID was reused), ErrNotMember for an
// identity the Watcher never held (or removed long ago), and the system
// call's error
// otherwise (EPERM for a process this one may not signal).
func (w *Watcher) Signal(id Identity, sig syscall.Signal) error {
	w.mu.Lock()
	p, ok := w.tr.Member(id.PID)
	approx := ok && p.Approx
	ok = ok && p.ID == tracker.Identity(id)
	gone := !ok && w.tr.WasMember(tracker.Identity(id))
	w.mu.Unlock()
	if gone {
		return &PIDError{PID: id.PID, Reason: "exited", Err: ErrNoSuchProcess}
	}
	if !ok {
		return &PIDError{PID: id.PID, Reason: "not a live member of the watched tree", Err: ErrNotMember}
	}
	return signalIdentity(w.fs, id, approx, sig)
}

// signalIdentity signals id through a pidfd once /proc shows its start
// time (within the tolerance when approx).
func signalIdentity(fs *reconcile.FS, id Identity, approx bool, sig syscall.Signal) error {
	gone := &PIDError{PID: id.PID, Reason: "exited", Err: ErrNoSuchProcess}
	fd, err := unix.PidfdOpen(id.PID, 0)
	if errors.Is(err, unix.ESRCH) {
		return gone
	}
	if err != nil {
		return fmt.Errorf("watchman: pidfd_open %d: %w", id.PID, err)
	}
	defer unix.Close(fd)
	// The pidfd pins the process: if /proc shows it now, it is the one
	// the pidfd refers to.
	st, err := fs.ReadStat(id.PID)
	if errors.Is(err, reconcile.ErrGone) {
		return gone
	}
	if err != nil {
		return fmt.Errorf("watchman: reading pid %d: %w", id.PID, err)
	}
	if !tracker.SameStart(id.StartTicks, st.StartTicks, approx) {
		return &PIDError{PID: id.PID, Reason: "pid now names another process", Err: ErrNoSuchProcess}
	}
	if err := unix.PidfdSendSignal(fd, sig, nil, 0); err != nil {
		if errors.Is(err, unix.ESRCH) {
			return gone
		}
		return fmt.Errorf("watchman: signalling %d: %w", id.PID, err)
	}
	return nil
}
