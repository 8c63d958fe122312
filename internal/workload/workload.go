package workload

import (
	"fmt"
	"os"
)

// EnvMode is the environment variable that marks a workload process; its
// value is the mode. MaybeRun acts only when it is set.
const EnvMode = "WATCHMAN_WORKLOAD"

// Internal environment variables and modes.
const (
	envSpec     = "WATCHMAN_WORKLOAD_SPEC"    // root: the JSON Spec
	envThreads  = "WATCHMAN_WORKLOAD_THREADS" // threads child: threads:lifetime_ns:code
	modeRoot    = "root"
	modeThreads = "threads"
)

// MaybeRun runs a workload and exits if this process is a workload process
// (EnvMode is set); otherwise it returns at once. Call it first in the
// TestMain (or main) of every binary that calls Start, since Start
// re-executes the current binary.
func MaybeRun() {
	mode, ok := os.LookupEnv(EnvMode)
	if !ok {
		return
	}
	switch mode {
	case modeRoot:
		os.Exit(runRoot())
	case modeThreads:
		os.Exit(runThreads())
	}
	fmt.Fprintf(os.Stderr, "workload: unknown %s=%q\n", EnvMode, mode)
	os.Exit(2)
}
