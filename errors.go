package watchman

import (
	"errors"
	"fmt"
)

// Sentinel errors, for use with errors.Is.
var (
	// ErrInvalidPID: the PID is zero, negative or above the kernel's pid_max.
	ErrInvalidPID = errors.New("watchman: invalid pid")
	// ErrNoSuchProcess: no live process has the PID (it never existed, has
	// exited, or is a zombie), or the root exited while Attach looked at it.
	ErrNoSuchProcess = errors.New("watchman: no such process")
	// ErrInvalidConfig: a Config field is out of range; the error is a
	// *ConfigError naming the field.
	ErrInvalidConfig = errors.New("watchman: invalid config")
	// ErrConnectorUnavailable: StrategyConnector was asked for, and the
	// proc connector cannot be used here (no privilege, not in the initial
	// namespaces, or not supported by this build or kernel).
	ErrConnectorUnavailable = errors.New("watchman: proc connector unavailable")
	// ErrUnreadable: the process exists but its /proc entry cannot be read
	// (/proc mounted with hidepid, another user's process, or a transient
	// error such as EMFILE); the PIDError says which.
	ErrUnreadable = errors.New("watchman: process cannot be read")
	// ErrClosed: the Watcher was closed.
	ErrClosed = errors.New("watchman: watcher closed")
)

// ConfigError names the Config field that is wrong and why. It matches
// ErrInvalidConfig with errors.Is, and the underlying cause, if any.
type ConfigError struct {
	Field  string
	Reason string
	Err    error
}

// Error implements error.
func (e *ConfigError) Error() string {
	s := fmt.Sprintf("watchman: invalid config: %s: %s", e.Field, e.Reason)
	if e.Err != nil {
		s += ": " + e.Err.Error()
	}
	return s
}

// Unwrap returns ErrInvalidConfig and the cause.
func (e *ConfigError) Unwrap() []error {
	if e.Err == nil {
		return []error{ErrInvalidConfig}
	}
	return []error{ErrInvalidConfig, e.Err}
}

// PIDError reports a PID that cannot be attached to or signalled. It
// matches ErrInvalidPID, ErrNoSuchProcess, ErrUnreadable or ErrNotMember
// with errors.Is.
type PIDError struct {
	PID    int
	Reason string
	Err    error // ErrInvalidPID or ErrNoSuchProcess
}

// Error implements error.
func (e *PIDError) Error() string {
	return fmt.Sprintf("%v: pid %d: %s", e.Err, e.PID, e.Reason)
}

// Unwrap returns the sentinel.
func (e *PIDError) Unwrap() error { return e.Err }
