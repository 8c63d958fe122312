// Package nlerr is the error plumbing that packages connector and
// taskstats share: each keeps its own exported sentinels and error types
// (OpError, DecodeError), whose methods convert them to the types here,
// which hold the one implementation of their text and unwrapping.
package nlerr

import "strconv"

// Chained is a sentinel error that also matches a more general sentinel
// (errors.Is(e, e.Parent) holds), such as a permission error that is
// also a "not supported".
type Chained struct {
	// Msg is the error's text.
	Msg string
	// Parent is the sentinel it also matches.
	Parent error
}

// Error implements error.
func (e *Chained) Error() string { return e.Msg }

// Unwrap returns Parent.
func (e *Chained) Unwrap() error { return e.Parent }

// Op is the error of one operation of a socket; a package's OpError,
// which has the same fields, converts to it.
type Op struct {
	// Op is the operation: "dial", "listen", "receive", ...
	Op string
	// Kind is the package sentinel the error belongs to, or nil.
	Kind error
	// Err is the underlying cause (often a syscall error), or nil.
	Err error
	// Detail explains the failure in words, or is empty.
	Detail string
}

// Text returns the error's text behind the package prefix pkg:
// "pkg: op: detail: cause", with the cause Err, else Kind, and the
// detail left out when empty.
func (e Op) Text(pkg string) string {
	s := pkg + ": " + e.Op
	if e.Detail != "" {
		s += ": " + e.Detail
	}
	if e.Err != nil {
		s += ": " + e.Err.Error()
	} else if e.Kind != nil {
		s += ": " + e.Kind.Error()
	}
	return s
}

// Unwrap returns the non-nil of Kind and Err, so errors.Is matches both
// the sentinel and the cause.
func (e Op) Unwrap() []error {
	switch {
	case e.Kind == nil && e.Err == nil:
		return nil
	case e.Kind == nil:
		return []error{e.Err}
	case e.Err == nil:
		return []error{e.Kind}
	}
	return []error{e.Kind, e.Err}
}

// Decode is why a decoder rejected its input; a package's DecodeError,
// which has the same fields, converts to it.
type Decode struct {
	// Reason is the package's decode sentinel (ErrTruncated, ...).
	Reason error
	// Detail says what exactly was wrong.
	Detail string
	// Len is the length of the input.
	Len int
}

// Text returns "reason: detail (len bytes)".
func (e Decode) Text() string {
	return e.Reason.Error() + ": " + e.Detail + " (" + strconv.Itoa(e.Len) + " bytes)"
}
