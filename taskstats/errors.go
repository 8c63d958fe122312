package taskstats

import (
	"errors"
	"net"

	"github.com/process-watchman/watchman/internal/nlerr"
)

// Errors of Listen, Receive and Close. Match them with errors.Is.
var (
	// ErrNotSupported means taskstats exit records cannot be had here:
	// not Linux, a kernel without CONFIG_TASKSTATS (no "TASKSTATS"
	// family), or a listener outside the initial user and PID namespaces
	// (the kernel refuses to register it with EINVAL: records go only to
	// listeners there). ErrPermission matches it too. The error's text
	// says which.
	ErrNotSupported error = errors.New("taskstats: exit records not supported")

	// ErrPermission means the kernel refused the registration for lack
	// of CAP_NET_ADMIN (TASKSTATS_CMD_GET is GENL_ADMIN_PERM). It also
	// matches ErrNotSupported, so "cannot listen" is one check.
	ErrPermission error = &nlerr.Chained{Msg: "taskstats: permission denied (needs CAP_NET_ADMIN)", Parent: ErrNotSupported}

	// ErrOverrun means the kernel dropped records because the receive
	// buffer was full (ENOBUFS). The Listener stays usable; the caller
	// should treat the exits of the gap as having no record.
	ErrOverrun = errors.New("taskstats: receive buffer overrun, records were lost")

	// ErrClosed is returned by Receive on a closed Listener, including a
	// Receive blocked when Close was called. It is net.ErrClosed.
	ErrClosed = net.ErrClosed
)

// An OpError is an error of one operation of a Listener.
type OpError struct {
	// Op is the operation: "listen", "register", "receive", "close", ...
	Op string
	// Kind is the package sentinel the error belongs to (ErrNotSupported,
	// ErrPermission, ErrClosed, ...), or nil.
	Kind error
	// Err is the underlying cause (often a syscall error), or nil.
	Err error
	// Detail explains the failure in words, or is empty.
	Detail string
}

// Error implements error.
func (e *OpError) Error() string { return nlerr.Op(*e).Text("taskstats") }

// Unwrap returns Kind and Err, so errors.Is matches both the sentinel and
// the cause (for example ErrPermission and syscall.EPERM).
func (e *OpError) Unwrap() []error { return nlerr.Op(*e).Unwrap() }
