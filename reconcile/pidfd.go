package reconcile

import (
	"errors"
	"fmt"
	"os"
	"sync"

	"golang.org/x/sys/unix"
)

// ErrPIDFDUnsupported means the kernel has no pidfd_open (Linux 5.3+), or
// a seccomp policy refuses it (ENOSYS, or EPERM, which pidfd_open itself
// never returns). The caller falls back to polling /proc for the process's
// exit.
var ErrPIDFDUnsupported = errors.New("reconcile: pidfd_open not supported (needs Linux 5.3+)")

// ErrThread means a PID given as a process's is the ID of a thread other
// than the first of its process (pidfd_open gives EINVAL, or ENOENT on
// newer kernels, for those).
var ErrThread = errors.New("reconcile: pid is a thread, not a process")

// ErrReused means a PID now names another process than the one asked for:
// /proc shows another start time for it.
var ErrReused = errors.New("reconcile: pid names another process")

// PIDFD is a process file descriptor (pidfd) for one process, verified to
// be the process with a given start time. It refers to that process for as
// long as it is open, whatever happens to the PID. Its methods are safe
// for concurrent use.
type PIDFD struct {
	pid    int
	f      *os.File
	exited chan struct{}
	done   chan struct{} // closed when the watching goroutine returns
	once   sync.Once
	err    error
}

// OpenPIDFD opens a pidfd for process pid and checks that /proc, read after
// the pidfd pins the process, shows startTicks as its start time. Errors:
//
//   - ErrPIDFDUnsupported: no pidfd_open here;
//   - ErrThread: pid is a thread's ID, not a process's;
//   - a *ProcError matching ErrGone: the process does not exist;
//   - an error matching ErrReused: the PID names a process with another
//     start time;
//   - a *ProcError matching ErrPermission: its /proc files may not be read
//     (hidepid), so its start time cannot be checked;
//   - anything else (EMFILE, ...) as a *ProcError.
//
// A zombie is opened; its Exited channel is closed at once.
func OpenPIDFD(fs *FS, pid int, startTicks uint64) (*PIDFD, error) {
	return OpenPIDFDFunc(fs, pid, func(got uint64) bool { return got == startTicks })
}

// OpenPIDFDFunc is OpenPIDFD with the start time check left to same,
// which is given the start time /proc shows (for callers whose start time
// is an estimate).
func OpenPIDFDFunc(fs *FS, pid int, same func(startTicks uint64) bool) (*PIDFD, error) {
	if pid <= 0 {
		return nil, procErr(pid, "", unix.ESRCH)
	}
	fd, err := pidfdOpen(pid)
	if err != nil {
		return nil, err
	}
	st, err := fs.ReadStat(pid)
	if err == nil && !same(st.StartTicks) {
		err = &ProcError{PID: pid, File: "stat", Err: fmt.Errorf("%w: started at tick %d", ErrReused, st.StartTicks)}
	}
	if err != nil {
		unix.Close(fd)
		return nil, err
	}
	// Non-blocking, so that os.NewFile hands the descriptor to the
	// runtime's poller, which wakes the watching goroutine when the
	// process exits (the pidfd becomes readable).
	if err := unix.SetNonblock(fd, true); err != nil {
		unix.Close(fd)
		return nil, procErr(pid, "", err)
	}
	p := &PIDFD{
		pid:    pid,
		f:      os.NewFile(uintptr(fd), "pidfd"),
		exited: make(chan struct{}),
		done:   make(chan struct{}),
	}
	rc, err := p.f.SyscallConn()
	if err != nil {
		p.f.Close()
		return nil, procErr(pid, "", err)
	}
	go p.watch(rc)
	return p, nil
}

// pidfdOpen is pidfd_open(2) with its errors mapped.
func pidfdOpen(pid int) (int, error) {
	fd, err := unix.PidfdOpen(pid, 0)
	switch {
	case err == nil:
		return fd, nil
	case err == unix.ENOSYS || err == unix.EPERM:
		return -1, fmt.Errorf("%w (%w)", ErrPIDFDUnsupported, err)
	case err == unix.EINVAL || err == unix.ENOENT:
		// A process that does not exist gives ESRCH; these two mean
		// that pid names a thread other than the first.
		return -1, procErr(pid, "", fmt.Errorf("%w (%w)", ErrThread, err))
	}
	return -1, procErr(pid, "", err)
}

// watch waits, in the runtime's poller, for the pidfd to become readable,
// and closes p.exited when it does. Close ends it.
func (p *PIDFD) watch(rc interface {
	Read(func(fd uintptr) bool) error
}) {
	defer close(p.done)
	err := rc.Read(func(fd uintptr) bool {
		// Poll with no timeout: the poller's readiness is edge-triggered
		// and may be spurious, so ask the pidfd itself.
		fds := [1]unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}}
		for {
			n, err := unix.Poll(fds[:], 0)
			if err == unix.EINTR {
				continue
			}
			// On an error, wait for the poller again rather than
			// report an exit that was not seen.
			return err == nil && n > 0
		}
	})
	if err == nil {
		close(p.exited)
	}
}

// PID returns the process's PID.
func (p *PIDFD) PID() int { return p.pid }

// Exited returns a channel closed when the process exits (its last thread
// exits; it may still be an unreaped zombie). Close does not close it.
func (p *PIDFD) Exited() <-chan struct{} { return p.exited }

// HasExited reports whether the process has exited, without waiting.
func (p *PIDFD) HasExited() bool {
	select {
	case <-p.exited:
		return true
	default:
		return false
	}
}

// Signal sends sig to the process through the pidfd, so it never reaches
// another process that reused the PID. An exited process gives an error
// matching ErrGone.
func (p *PIDFD) Signal(sig unix.Signal) error {
	rc, err := p.f.SyscallConn()
	if err != nil {
		return procErr(p.pid, "", err)
	}
	var serr error
	if err := rc.Control(func(fd uintptr) {
		serr = unix.PidfdSendSignal(int(fd), sig, nil, 0)
	}); err != nil {
		return procErr(p.pid, "", err)
	}
	if serr != nil {
		return procErr(p.pid, "", serr)
	}
	return nil
}

// Close releases the descriptor and ends the goroutine that waits for the
// exit; it returns once both are done. Later calls return the first
// call's result.
func (p *PIDFD) Close() error {
	p.once.Do(func() {
		p.err = p.f.Close()
		<-p.done
	})
	return p.err
}
