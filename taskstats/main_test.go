package taskstats_test

import (
	"testing"

	"go.uber.org/goleak"
)

// TestMain runs a helper child when the test binary was re-executed as
// one (see helper_linux_test.go), else the tests, failing on leaked
// goroutines.
func TestMain(m *testing.M) {
	maybeRunHelper()
	goleak.VerifyTestMain(m)
}
