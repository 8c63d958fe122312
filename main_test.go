package watchman

import (
	"testing"

	"go.uber.org/goleak"
)

// TestMain fails the package's tests if any goroutine outlives them: every
// Watcher, Hub and Subscription must release what it started.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}
