package reconcile

import (
	"errors"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// ErrPermission means the process exists but this reader may not read it:
// /proc is mounted with hidepid=1 (its files give EPERM), the file's own
// mode forbids it (EACCES), or, with hidepid=2, the process is hidden (see
// ErrHidden). It is never a sign that the process is gone.
var ErrPermission = errors.New("reconcile: process not readable")

// ErrHidden means /proc does not show a process that exists: the proc root
// is mounted with hidepid=2 (invisible) or hidepid=4 (ptraceable), the
// process belongs to someone this reader may not trace, and a probe in the
// caller's PID namespace found its PID in use. Errors wrapping it also match
// ErrPermission. A PID that is in use cannot be matched to a start time
// while it is hidden, so it may name a process that reused the PID; a PIDFD
// opened while the process was readable tells its exit exactly.
var ErrHidden = errors.New("reconcile: process hidden by hidepid")

// ProcError is the error of a read of one process's file. Err is the
// system call's error (an errno such as ENOENT, EPERM or EMFILE), a
// *StatError for contents that do not parse, or ErrHidden. Use errors.Is
// to classify it:
//
//   - ErrGone: Err is ENOENT or ESRCH, the process does not exist (any more);
//   - ErrPermission: Err is EACCES or EPERM, or ErrHidden;
//   - anything else (EMFILE, ENFILE, ENOMEM, EIO, ErrBadStat, ...) is a
//     failure of the read, which says nothing about whether the process
//     lives.
type ProcError struct {
	// PID is the process whose file was read.
	PID int
	// File is the file's path below /proc/PID, such as "stat" or
	// "task/1234/children"; empty for the /proc/PID directory itself.
	File string
	// Err is the cause.
	Err error
}

// Error implements error.
func (e *ProcError) Error() string {
	s := "reconcile: pid " + strconv.Itoa(e.PID)
	if e.File != "" {
		s += " " + e.File
	}
	return s + ": " + strings.TrimPrefix(e.Err.Error(), "reconcile: ")
}

// Unwrap returns Err.
func (e *ProcError) Unwrap() error { return e.Err }

// Is makes errors.Is(err, ErrGone) true for ENOENT and ESRCH, and
// errors.Is(err, ErrPermission) true for EACCES, EPERM and ErrHidden.
func (e *ProcError) Is(target error) bool {
	switch target {
	case ErrGone:
		return e.Err == unix.ENOENT || e.Err == unix.ESRCH
	case ErrPermission:
		return e.Err == unix.EACCES || e.Err == unix.EPERM || e.Err == ErrHidden
	}
	return false
}

// isGoneErrno reports whether err, as returned by a system call on a
// /proc/PID path, means the process is gone.
func isGoneErrno(err error) bool { return err == unix.ENOENT || err == unix.ESRCH }

// procErr wraps the error of a read of /proc/PID/file.
func procErr(pid int, file string, err error) error {
	return &ProcError{PID: pid, File: file, Err: err}
}
