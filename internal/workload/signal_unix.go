//go:build unix

package workload

import (
	"slices"
	"syscall"
)

// stormSignals are the signals a Storm child may send itself: their
// default action terminates the process without a core dump.
var stormSignals = []syscall.Signal{syscall.SIGKILL, syscall.SIGTERM, syscall.SIGINT, syscall.SIGHUP,
	syscall.SIGUSR1, syscall.SIGUSR2, syscall.SIGALRM, syscall.SIGPIPE}

// allowedSignal reports whether a Storm child may send itself sig.
func allowedSignal(sig syscall.Signal) bool { return slices.Contains(stormSignals, sig) }
