package workload

import (
	"errors"
	"fmt"
	"math"
	"syscall"
	"time"
)

// Bounds on a Spec. Validate rejects anything outside them, so a workload is
// always bounded in process count and in time.
const (
	// DefaultTimeout bounds a workload whose Spec.Timeout is zero. It is
	// a bound on a broken run, not a measure: with both cores busy and
	// other test loops beside (scripts/hog.sh), storms the tests run
	// took minutes.
	DefaultTimeout = 10 * time.Minute
	// MaxTimeout is the largest Spec.Timeout accepted.
	MaxTimeout = time.Hour
	// MaxCount bounds Storm.Count, Orphans.Count and Exec.Count.
	MaxCount = 100000
	// MaxDepth bounds Chain.Depth.
	MaxDepth = 5000
	// MaxThreads bounds Threads.Threads.
	MaxThreads = 5000
	// MaxRounds bounds the number of rounds, including rounds run for a
	// Spec.Duration.
	MaxRounds = 100000
)

// ErrInvalidSpec is wrapped by every *SpecError.
var ErrInvalidSpec = errors.New("workload: invalid spec")

// ErrTimeout is wrapped by the error Wait returns when the workload did not
// finish within Spec.Timeout and was killed.
var ErrTimeout = errors.New("workload: timed out")

// ErrRaceCover is returned by Start for a Spec that needs raw forks (a
// ForkOnly Storm, Orphans, Chain or Exec) in a binary built with both -race
// and -cover: coverage is then atomic and puts calls into the race runtime
// inside the forked child, which can deadlock there. Leave out -cover when
// running with -race.
var ErrRaceCover = errors.New("workload: raw fork is unsafe in a binary built with -race and -cover")

// ErrKilled is wrapped by the error Wait returns after Kill.
var ErrKilled = errors.New("workload: killed")

// ErrIncomplete is wrapped by the error Wait returns when a workload ran but
// its ground truth has problems (a descendant failed to fork, reported no
// lineage, or the root failed); Result.Problems lists them.
var ErrIncomplete = errors.New("workload: incomplete ground truth")

// ErrUnsupported is returned on platforms other than linux/amd64 and
// linux/arm64.
var ErrUnsupported = errors.New("workload: unsupported platform (needs linux/amd64 or linux/arm64)")

// SpecError reports one invalid Spec field.
type SpecError struct {
	Field   string // e.g. "Storm.Count"
	Problem string // e.g. "must be between 1 and 100000, got -1"
}

// Error names the field and the problem.
func (e *SpecError) Error() string {
	return "workload: invalid spec: " + e.Field + ": " + e.Problem
}

// Unwrap returns ErrInvalidSpec.
func (e *SpecError) Unwrap() error { return ErrInvalidSpec }

// ForkMode says how Storm children are made.
type ForkMode int

const (
	// ForkOnly children are raw clone(2) children of the root that never
	// exec: they sleep, then exit or signal themselves.
	ForkOnly ForkMode = iota
	// ForkExec children are forked and exec /bin/sh -c 'exit N' (Lifetime 0)
	// or /bin/bash -c 'read -t L; exit N' (Lifetime > 0). Both run only
	// builtins, so they fork nothing themselves.
	ForkExec
)

// String returns "fork-only" or "fork-exec".
func (m ForkMode) String() string {
	switch m {
	case ForkOnly:
		return "fork-only"
	case ForkExec:
		return "fork-exec"
	}
	return fmt.Sprintf("ForkMode(%d)", int(m))
}

// Storm is Count children of the root forked as fast as possible (or at
// Rate per second). Child i (0-based, Record.Index) lives Lifetime and exits
// with code i%256, except that when SignalEvery is k > 0 every child with
// (i+1)%k == 0 kills itself with Signal instead.
type Storm struct {
	Count       int           // children per round, 1..MaxCount
	Lifetime    time.Duration // how long each child lives; 0 means exit at once
	Rate        float64       // children per second; 0 means flat out
	Mode        ForkMode      // zero value ForkOnly
	SignalEvery int           // 0 means no child is signalled
	// Signal is the signal for SignalEvery; 0 means SIGKILL. Allowed:
	// SIGKILL, SIGTERM, SIGINT, SIGHUP, SIGUSR1, SIGUSR2, SIGALRM, SIGPIPE
	// (signals whose default action terminates without a core dump).
	Signal syscall.Signal
}

// Orphans is Count wrappers, children of the root, each forking one
// grandchild and exiting 0 at once. Each grandchild lives Lifetime and exits
// with Code; it is reparented to the root and recorded with the wrapper as
// its parent (Kind KindOrphan, Depth 2).
type Orphans struct {
	Count    int           // wrappers per round, 1..MaxCount
	Lifetime time.Duration // grandchild lifetime
	Code     int           // grandchild exit code, 0..255
}

// Chain is a Depth-deep chain: the root forks link 1, link k forks link
// k+1 (vfork: it is suspended until link k+1 exits) and waits for it,
// then exits 0. The leaf (link Depth) lives Lifetime
// and exits with Code. Record.Depth and Record.Index are the link number.
type Chain struct {
	Depth    int           // 1..MaxDepth
	Lifetime time.Duration // leaf lifetime
	Code     int           // leaf exit code, 0..255
}

// Threads is one child of the root with Threads OS threads (besides the Go
// runtime's own) alive at once for Lifetime; then it exits with Code.
// Record.Threads is the thread count the child saw in /proc/self/status
// while all of them were alive.
type Threads struct {
	Threads  int // 1..MaxThreads
	Lifetime time.Duration
	Code     int // 0..255
}

// Exec is Count children of the root that each read their own comm, wait
// Before, then exec /bin/sleep Lifetime (exit code 0). Record.PreExecComm
// is the comm before the exec, Record.Comm the comm at exit ("sleep").
type Exec struct {
	Count    int // 1..MaxCount
	Before   time.Duration
	Lifetime time.Duration
}

// Spec describes a workload. At least one shape must be set; all set shapes
// run concurrently in every round. With neither Rounds nor Duration set one
// round runs. With Duration set, rounds repeat until Duration has elapsed
// (a started round always completes), at most Rounds (or MaxRounds) of them.
// A round ends when all its processes have been reaped.
type Spec struct {
	Storm   *Storm
	Orphans *Orphans
	Chain   *Chain
	Threads *Threads
	Exec    *Exec

	Rounds   int           // 0 means 1, or unlimited up to MaxRounds with Duration
	Duration time.Duration // 0 means run Rounds rounds
	Timeout  time.Duration // 0 means DefaultTimeout; counted from Go

	// NotifyReaped, when positive, makes Process.Reaped close once the
	// root has reaped that many processes: a barrier for a test whose
	// workload keeps long-lived children (the storm is over when every
	// short-lived one has been reaped), where no wait for quiet could
	// tell a finished storm from a slow one.
	NotifyReaped int
}

// Mixed returns a soak Spec: rounds of a storm, orphans, a threaded child
// and exec children, repeated for d.
func Mixed(d time.Duration) Spec {
	return Spec{
		Storm:    &Storm{Count: 100, Lifetime: time.Millisecond, SignalEvery: 10},
		Orphans:  &Orphans{Count: 10, Lifetime: 5 * time.Millisecond, Code: 3},
		Threads:  &Threads{Threads: 20, Lifetime: 10 * time.Millisecond, Code: 7},
		Exec:     &Exec{Count: 5, Lifetime: 5 * time.Millisecond},
		Duration: d,
		Timeout:  d + DefaultTimeout,
	}
}

// timeout returns Timeout with its default applied.
func (s *Spec) timeout() time.Duration {
	if s.Timeout == 0 {
		return DefaultTimeout
	}
	return s.Timeout
}

// maxRounds returns the number of rounds to run at most.
func (s *Spec) maxRounds() int {
	switch {
	case s.Rounds > 0:
		return s.Rounds
	case s.Duration > 0:
		return MaxRounds
	}
	return 1
}

// signal returns the Storm's signal with its default applied.
func (s *Storm) signal() syscall.Signal {
	if s.Signal == 0 {
		return syscall.SIGKILL
	}
	return s.Signal
}

// Validate reports the first invalid field as a *SpecError, or nil.
func (s *Spec) Validate() error {
	bad := func(field, format string, args ...any) error {
		return &SpecError{Field: field, Problem: fmt.Sprintf(format, args...)}
	}
	if s.Timeout < 0 || s.Timeout > MaxTimeout {
		return bad("Timeout", "must be between 0 and %v, got %v", MaxTimeout, s.Timeout)
	}
	timeout := s.timeout()
	if s.Rounds < 0 || s.Rounds > MaxRounds {
		return bad("Rounds", "must be between 0 and %d, got %d", MaxRounds, s.Rounds)
	}
	if s.Duration < 0 || s.Duration >= timeout {
		return bad("Duration", "must be >= 0 and less than the timeout %v, got %v", timeout, s.Duration)
	}
	count := func(field string, n, max int) error {
		if n < 1 || n > max {
			return bad(field, "must be between 1 and %d, got %d", max, n)
		}
		return nil
	}
	life := func(field string, d time.Duration) error {
		if d < 0 || d > MaxTimeout {
			return bad(field, "must be between 0 and %v, got %v", MaxTimeout, d)
		}
		return nil
	}
	code := func(field string, c int) error {
		if c < 0 || c > 255 {
			return bad(field, "must be between 0 and 255, got %d", c)
		}
		return nil
	}
	first := func(errs ...error) error {
		for _, err := range errs {
			if err != nil {
				return err
			}
		}
		return nil
	}
	if s.NotifyReaped < 0 {
		return bad("NotifyReaped", "must be >= 0, got %d", s.NotifyReaped)
	}
	if s.Storm == nil && s.Orphans == nil && s.Chain == nil && s.Threads == nil && s.Exec == nil {
		return bad("Spec", "no shape set (Storm, Orphans, Chain, Threads or Exec)")
	}
	if st := s.Storm; st != nil {
		if err := first(count("Storm.Count", st.Count, MaxCount), life("Storm.Lifetime", st.Lifetime)); err != nil {
			return err
		}
		if math.IsNaN(st.Rate) || math.IsInf(st.Rate, 0) || st.Rate < 0 {
			return bad("Storm.Rate", "must be a finite number >= 0, got %v", st.Rate)
		}
		if st.Rate > 0 && float64(st.Count-1)/st.Rate >= timeout.Seconds() {
			return bad("Storm.Rate", "%d children at %v/s take longer than the timeout %v", st.Count, st.Rate, timeout)
		}
		if st.Mode != ForkOnly && st.Mode != ForkExec {
			return bad("Storm.Mode", "unknown mode %d", int(st.Mode))
		}
		if st.SignalEvery < 0 {
			return bad("Storm.SignalEvery", "must be >= 0, got %d", st.SignalEvery)
		}
		if !allowedSignal(st.signal()) {
			return bad("Storm.Signal", "%v (%d) is not one of KILL, TERM, INT, HUP, USR1, USR2, ALRM, PIPE", st.Signal, int(st.Signal))
		}
	}
	if o := s.Orphans; o != nil {
		if err := first(count("Orphans.Count", o.Count, MaxCount), life("Orphans.Lifetime", o.Lifetime), code("Orphans.Code", o.Code)); err != nil {
			return err
		}
	}
	if c := s.Chain; c != nil {
		if err := first(count("Chain.Depth", c.Depth, MaxDepth), life("Chain.Lifetime", c.Lifetime), code("Chain.Code", c.Code)); err != nil {
			return err
		}
	}
	if t := s.Threads; t != nil {
		if err := first(count("Threads.Threads", t.Threads, MaxThreads), life("Threads.Lifetime", t.Lifetime), code("Threads.Code", t.Code)); err != nil {
			return err
		}
	}
	if e := s.Exec; e != nil {
		if err := first(count("Exec.Count", e.Count, MaxCount), life("Exec.Before", e.Before), life("Exec.Lifetime", e.Lifetime)); err != nil {
			return err
		}
	}
	return nil
}
