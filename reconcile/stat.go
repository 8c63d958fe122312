package reconcile

import (
	"errors"
	"fmt"
)

// ErrBadStat is wrapped by the errors ParseStat returns for contents that are
// not a /proc/PID/stat line.
var ErrBadStat = errors.New("reconcile: malformed stat")

// StatError describes why a stat line could not be parsed.
type StatError struct {
	Reason string
}

// Error implements error.
func (e *StatError) Error() string { return "reconcile: malformed stat: " + e.Reason }

// Unwrap makes errors.Is(err, ErrBadStat) true.
func (e *StatError) Unwrap() error { return ErrBadStat }

// Stat holds the fields of /proc/PID/stat that identify a process and place
// it in the tree.
type Stat struct {
	// PID is field 1.
	PID int
	// Comm is field 2 without its parentheses; it may contain spaces,
	// parentheses and newlines.
	Comm string
	// State is field 3: R, S, D, Z, T, t, X, I, ...
	State byte
	// PPID is field 4.
	PPID int
	// NumThreads is field 20.
	NumThreads int
	// StartTicks is field 22: the start time in clock ticks since boot.
	StartTicks uint64
}

// Live reports whether the process can still run: it is not a zombie or
// dead, or it is a zombie thread-group leader whose other threads still run.
func (s *Stat) Live() bool { return IsLive(s.State, s.NumThreads) }

// IsLive reports whether a process with the given state letter and thread
// count is live. A zombie leader with other live threads (state Z with more
// than one thread) is live: the process goes on without its first thread.
func IsLive(state byte, numThreads int) bool {
	if state == 'Z' || state == 'X' || state == 'x' {
		return numThreads > 1
	}
	return true
}

// rawStat is what parseStat finds, with the command name left as a slice
// of the input so that scans need not allocate.
type rawStat struct {
	pid        int
	comm       []byte
	state      byte
	ppid       int
	numThreads int
	startTicks uint64
}

// ParseStat parses the contents of a /proc/PID/stat file.
func ParseStat(b []byte) (Stat, error) {
	var r rawStat
	if err := parseStat(b, &r); err != nil {
		return Stat{}, err
	}
	return Stat{
		PID:        r.pid,
		Comm:       string(r.comm),
		State:      r.state,
		PPID:       r.ppid,
		NumThreads: r.numThreads,
		StartTicks: r.startTicks,
	}, nil
}

func parseStat(b []byte, r *rawStat) error {
	open := -1
	for i, c := range b {
		if c == '(' {
			open = i
			break
		}
	}
	if open < 2 || b[open-1] != ' ' {
		return &StatError{Reason: "no command name"}
	}
	pid, ok := parseUint(b[:open-1])
	if !ok || pid == 0 || pid > 1<<31-1 {
		return &StatError{Reason: "bad pid"}
	}
	// The command name may itself contain ") ", so the name ends at the
	// last ')' in the line.
	closing := -1
	for i := len(b) - 1; i > open; i-- {
		if b[i] == ')' {
			closing = i
			break
		}
	}
	if closing < 0 {
		return &StatError{Reason: "unterminated command name"}
	}
	r.pid = int(pid)
	r.comm = b[open+1 : closing]
	rest := b[closing+1:]
	// rest is " S ppid pgrp ...": field 3 onwards, each preceded by a space.
	field := 2
	var ppid, threads, start uint64
	var gotState, gotPPID, gotThreads, gotStart bool
	for i := 0; i < len(rest) && field < 22; {
		if rest[i] != ' ' {
			return &StatError{Reason: fmt.Sprintf("field %d: expected a space", field+1)}
		}
		i++
		j := i
		for j < len(rest) && rest[j] != ' ' && rest[j] != '\n' {
			j++
		}
		tok := rest[i:j]
		field++
		switch field {
		case 3:
			if len(tok) != 1 {
				return &StatError{Reason: "bad state"}
			}
			r.state = tok[0]
			gotState = true
		case 4:
			ppid, gotPPID = parseUint(tok)
		case 20:
			threads, gotThreads = parseUint(tok)
		case 22:
			start, gotStart = parseUint(tok)
		}
		if len(tok) == 0 {
			return &StatError{Reason: fmt.Sprintf("field %d: empty", field)}
		}
		i = j
		if i < len(rest) && rest[i] == '\n' {
			break
		}
	}
	switch {
	case !gotState:
		return &StatError{Reason: "missing state"}
	case !gotPPID || ppid > 1<<31-1:
		return &StatError{Reason: "bad ppid"}
	case !gotThreads || threads > 1<<31-1:
		return &StatError{Reason: "bad num_threads"}
	case !gotStart:
		return &StatError{Reason: "bad starttime"}
	}
	r.ppid = int(ppid)
	r.numThreads = int(threads)
	r.startTicks = start
	return nil
}

// parseUint parses a decimal number without allocating. It rejects empty
// input, signs and overflow.
func parseUint(b []byte) (uint64, bool) {
	if len(b) == 0 || len(b) > 20 {
		return 0, false
	}
	var n uint64
	for _, c := range b {
		if c < '0' || c > '9' {
			return 0, false
		}
		d := uint64(c - '0')
		if n > (1<<64-1-d)/10 {
			return 0, false
		}
		n = n*10 + d
	}
	return n, true
}
