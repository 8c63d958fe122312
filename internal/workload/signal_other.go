//go:build !unix

package workload

import "syscall"

// allowedSignal reports whether a Storm child may send itself sig; off Unix
// only SIGKILL is accepted (and Start fails anyway).
func allowedSignal(sig syscall.Signal) bool { return sig == syscall.SIGKILL }
