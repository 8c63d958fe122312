package workload

import (
	"syscall"
	"time"
)

// Kinds of Record.
const (
	KindStorm   = "storm"   // a Storm child of the root
	KindWrapper = "wrapper" // an Orphans wrapper, child of the root
	KindOrphan  = "orphan"  // an Orphans grandchild, child of a wrapper
	KindChain   = "chain"   // a Chain link; the root forks link 1
	KindThreads = "threads" // the Threads child of the root
	KindExec    = "exec"    // an Exec child of the root
)

// Record is the ground truth for one descendant of the workload root.
type Record struct {
	PID        int    // process ID
	StartTicks uint64 // /proc/PID/stat field 22, clock ticks since boot
	PPID       int    // original parent: the process that forked it
	// PPIDStartTicks is the original parent's start time, so (PPID,
	// PPIDStartTicks) identifies the parent even under PID reuse.
	PPIDStartTicks uint64
	// Reparented is true when the process's parent at reaping time (the
	// root, a subreaper) was not its original parent.
	Reparented bool
	ExitStatus int            // raw wait status, as in the proc connector's exit_code
	Code       int            // exit code, or -1 if killed by a signal
	Signal     syscall.Signal // terminating signal, or 0 if it exited
	Depth      int            // root = 0, its children 1, ...
	Kind       string         // one of the Kind constants
	// Index is the process's sequence number within its shape and round:
	// the Storm/Orphans/Exec child number from 0 (an orphan has its
	// wrapper's), or the Chain link number from 1.
	Index       int
	Round       int    // the round, from 0
	Comm        string // comm at exit (after any exec)
	PreExecComm string // KindExec only: comm before the exec
	Threads     int    // KindThreads only: threads seen while all were alive
}

// Result is the ground truth of one workload run.
type Result struct {
	RootPID        int
	RootStartTicks uint64
	RootComm       string
	// Records holds every descendant, in the order the root reaped them.
	Records []Record
	Rounds  int       // rounds run
	Start   time.Time // the gate opened
	// ForksDone is when the last round's shapes had issued all their forks
	// at the root (chain links and orphans are forked by descendants).
	ForksDone time.Time
	End       time.Time // the last descendant was reaped
	// TimedOut is true when the workload ran past Spec.Timeout and the
	// root killed it; the records are those of what ran.
	TimedOut bool
	// Killed is true when Process.Kill stopped the workload; the records
	// are those of what ran.
	Killed bool
	// Problems lists what went wrong inside the workload; when it is not
	// empty Wait also returns an error wrapping ErrIncomplete.
	Problems []string
}

// Kind returns the records of one kind, in reaping order.
func (r *Result) Kind(kind string) []Record {
	var out []Record
	for _, rec := range r.Records {
		if rec.Kind == kind {
			out = append(out, rec)
		}
	}
	return out
}
