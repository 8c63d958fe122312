//go:build !(linux && (amd64 || arm64))

package workload

import (
	"fmt"
	"os"
)

// Process is a started workload. On this platform Start always fails.
type Process struct{}

// Start returns ErrUnsupported on this platform.
func Start(spec Spec) (*Process, error) { return nil, ErrUnsupported }

// PID returns 0 on this platform.
func (p *Process) PID() int { return 0 }

// Go returns ErrUnsupported on this platform.
func (p *Process) Go() error { return ErrUnsupported }

// Wait returns ErrUnsupported on this platform.
func (p *Process) Wait() (*Result, error) { return nil, ErrUnsupported }

// Kill returns ErrUnsupported on this platform.
func (p *Process) Kill() error { return ErrUnsupported }

func runRoot() int    { return unsupported() }
func runThreads() int { return unsupported() }

func unsupported() int {
	fmt.Fprintln(os.Stderr, ErrUnsupported)
	return 2
}
