//go:build unix

package workload

import "syscall"

// allowedSignal reports whether a Storm child may send itself sig: its
// default action must terminate the process without a core dump.
func allowedSignal(sig syscall.Signal) bool {
	switch sig {
	case syscall.SIGKILL, syscall.SIGTERM, syscall.SIGINT, syscall.SIGHUP,
		syscall.SIGUSR1, syscall.SIGUSR2, syscall.SIGALRM, syscall.SIGPIPE:
		return true
	}
	return false
}
