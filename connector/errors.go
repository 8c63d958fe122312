package connector

import (
	"errors"
	"net"

	"github.com/process-watchman/watchman/internal/nlerr"
)

// Errors of Dial, Receive and Close. Match them with errors.Is.
var (
	// ErrNotSupported means the proc connector cannot be used here: not
	// Linux, not in the initial user and PID namespaces, no connector in
	// the kernel, no acknowledgement, or no permission (ErrPermission
	// matches it too). The error's text says which.
	ErrNotSupported error = errors.New("connector: proc connector not supported")

	// ErrPermission means the kernel refused the subscription (EPERM or
	// EACCES at bind, or an acknowledgement carrying EPERM, as kernels
	// before 6.6 send to callers without CAP_NET_ADMIN). It also matches
	// ErrNotSupported, so "cannot use the connector" is one check.
	ErrPermission error = &nlerr.Chained{Msg: "connector: permission denied", Parent: ErrNotSupported}

	// ErrOverrun means the kernel dropped events because the receive
	// buffer was full (ENOBUFS, or with Config.NoENOBUFS a *DropError).
	// The Conn stays usable; the caller should resynchronise its view (for
	// example by scanning /proc).
	ErrOverrun = errors.New("connector: receive buffer overrun, events were lost")

	// ErrQueueFull means Mark could not queue its marker because the
	// socket's receive queue is full. Receive, then Mark again.
	ErrQueueFull = errors.New("connector: receive queue full")

	// ErrClosed is returned by Receive on a closed Conn, including a
	// Receive blocked when Close was called. It is net.ErrClosed.
	ErrClosed = net.ErrClosed
)

// An OpError is an error of one operation of a Conn.
type OpError struct {
	// Op is the operation: "dial", "listen", "receive", "close", ...
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
func (e *OpError) Error() string { return nlerr.Op(*e).Text("connector") }

// Unwrap returns Kind and Err, so errors.Is matches both the sentinel and
// the cause (for example ErrPermission and os.ErrPermission).
func (e *OpError) Unwrap() []error { return nlerr.Op(*e).Unwrap() }
