// Command pwatch tracks the process tree rooted at one PID.
//
//	pwatch run [flags] -- COMMAND [ARGS...]   run COMMAND, track its whole tree
//	pwatch watch [flags] PID                  follow a running tree, event by event
//	pwatch tree [flags] PID                   print the live tree once
//
// Run "pwatch help" for the commands and their flags. pwatch run exits
// with COMMAND's status (128+N when signal N killed it), 124 when
// --timeout expired, 125 when a record could not be written or the tree
// could not be killed, 126/127 when COMMAND cannot be run or is not found,
// and 2 for a usage error, which touches no file.
package main

import (
	"errors"
	"fmt"
	"io"
	"os"
	"runtime"

	"github.com/spf13/cobra"
)

// usageError marks a mistake of the user's: a bad flag, a bad PID. pwatch
// prints it on one line and exits with status 2.
type usageError struct{ err error }

func (e usageError) Error() string { return e.err.Error() }
func (e usageError) Unwrap() error { return e.err }

// pwatch's own exit statuses (besides COMMAND's, which run passes on).
const (
	// exitUsage: a usage error; nothing was run or written.
	exitUsage = 2
	// exitTimeout: pwatch run's --timeout expired and the tree was
	// killed, as coreutils timeout says it.
	exitTimeout = 124
	// exitOwnFailure: pwatch's own work failed once COMMAND had finished:
	// a record (--events, --trace, watch's stdout) could not be written,
	// or the tree could not be killed.
	exitOwnFailure = 125
)

// exitError carries an exit status chosen by a command.
type exitError struct{ code int }

func (e exitError) Error() string { return fmt.Sprintf("exit status %d", e.code) }

// app holds what the commands share: their output streams, and whether a
// command's own code started (errors before that are usage errors).
type app struct {
	stdout, stderr io.Writer
	started        bool
}

// begin marks the start of a command's own work.
func (a *app) begin() { a.started = true }

func newRootCmd(a *app) *cobra.Command {
	root := &cobra.Command{
		Use:   "pwatch",
		Short: "Track the process tree rooted at one PID",
		Long: `pwatch tracks every descendant of one process on Linux, with identities
(PID + start time) that survive PID reuse. As root it listens to the kernel's
proc connector and sees every fork, exec and exit as it happens; elsewhere it
polls /proc, and says so.`,
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.SetOut(a.stdout)
	root.SetErr(a.stderr)
	root.SetFlagErrorFunc(func(_ *cobra.Command, err error) error { return usageError{err} })
	root.AddCommand(newRunCmd(a), newWatchCmd(a), newTreeCmd(a))
	return root
}

// run executes pwatch with args and returns its exit status.
func run(args []string, stdout, stderr io.Writer) int {
	a := &app{stdout: stdout, stderr: stderr}
	root := newRootCmd(a)
	root.SetArgs(args)
	err := root.Execute()
	if err == nil {
		return 0
	}
	var ee exitError
	if errors.As(err, &ee) {
		return ee.code
	}
	fmt.Fprintf(stderr, "pwatch: %s\n", escape(err.Error()))
	var ue usageError
	if errors.As(err, &ue) || !a.started {
		// cobra's own complaints (unknown command, wrong number of
		// arguments) come before any command starts.
		return exitUsage
	}
	return 1
}

func main() {
	if len(os.Args) > 1 && os.Args[1] == gateArg {
		os.Exit(gateMain(os.Args[2:]))
	}
	if len(os.Args) > 1 && os.Args[1] == guardArg {
		os.Exit(guardMain(os.Args[2:]))
	}
	if n := defaultProcs(os.Getenv("GOMAXPROCS")); n > 0 {
		runtime.GOMAXPROCS(n)
	}
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

// defaultProcs is the GOMAXPROCS that pwatch sets for itself: 1 unless
// the environment's GOMAXPROCS says otherwise (then 0: leave it). Its work
// is one pipeline (the hub's reader and writer, then the session), each
// event handed from one goroutine to the next; with more than one P each
// handoff wakes another OS thread, which spins looking for work. On the
// 2-vCPU VM, in a C fork storm, pwatch watch took 25-30% less CPU with 1
// (ratios to forkstat, GOMAXPROCS 2 against 1: 2.16/1.64, 2.21/1.69,
// 2.38/1.72). Nothing in pwatch needs two cores at once.
func defaultProcs(env string) int {
	if env != "" {
		return 0
	}
	return 1
}
