// Package privtest gates the privileged tests: those that need the kernel's
// proc connector. Where it cannot be used they are skipped with the reason;
// CI runs as root, so there they run.
package privtest

import (
	"os"
	"testing"

	"github.com/process-watchman/watchman/connector"
)

// RequireConnector skips the test, saying why, unless this process is root
// and can subscribe to the proc connector (the initial user and PID
// namespaces). Under CI (CI=true), which runs as root, it fails instead:
// there a skipped privileged test would hide a failure.
func RequireConnector(tb testing.TB) {
	tb.Helper()
	skip := tb.Skipf
	if os.Getenv("CI") == "true" {
		skip = tb.Fatalf
	}
	if os.Geteuid() != 0 {
		skip("skipping: needs root for the proc connector, its forced receive buffer and /proc/sys writes (CI runs these tests as root)")
	}
	c, err := connector.Dial(nil)
	if err != nil {
		skip("skipping: proc connector unavailable here: %v", err)
	}
	c.Close()
}
