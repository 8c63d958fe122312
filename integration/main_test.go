// Package integration holds the privileged end-to-end tests: real process
// trees made by internal/workload, watched through the public API with the
// kernel's proc connector. They run as root (CI runs as root) and skip,
// saying why, elsewhere.
package integration

import (
	"os"
	"testing"

	"github.com/process-watchman/watchman/internal/privtest"
	"github.com/process-watchman/watchman/internal/workload"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	workload.MaybeRun() // this binary is also the workload's root
	if os.Getenv(envWatchProc) != "" {
		os.Exit(watchProcMain()) // a watcher process of its own
	}
	if os.Getenv(envThreadHolder) != "" {
		os.Exit(threadHolderMain()) // a child with threads, of a held root
	}
	if os.Getenv(envHeldRoot) != "" {
		os.Exit(heldRootMain()) // a root whose descendants live until released
	}
	if os.Getenv(envForker) != "" {
		os.Exit(forkerMain()) // a root that forks on request
	}
	if os.Getenv(envStopper) != "" {
		os.Exit(stopperMain()) // stops a process until its sockets overflow
	}
	goleak.VerifyTestMain(m)
}

// requireConnector skips the test where the proc connector cannot be used.
func requireConnector(t testing.TB) {
	t.Helper()
	privtest.RequireConnector(t)
}
