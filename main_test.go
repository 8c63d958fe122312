package watchman

import (
	"os"
	"strconv"
	"testing"

	"go.uber.org/goleak"
	"golang.org/x/sys/unix"
)

// TestMain fails the package's tests if any goroutine outlives them: every
// Watcher, Hub and Subscription must release what it started.
//
// With PWATCH_TEST_BURN=MS the test binary is a helper instead: it burns
// MS milliseconds of CPU, writes the CPU time it measured (user+system,
// ns) to PWATCH_TEST_BURN_OUT and exits with status 5.
func TestMain(m *testing.M) {
	if ms := os.Getenv("PWATCH_TEST_BURN"); ms != "" {
		os.Exit(burn(ms, os.Getenv("PWATCH_TEST_BURN_OUT")))
	}
	goleak.VerifyTestMain(m)
}

func burn(ms, out string) int {
	n, err := strconv.Atoi(ms)
	if err != nil {
		return 2
	}
	var ru unix.Rusage
	cpu := func() int64 {
		if unix.Getrusage(unix.RUSAGE_SELF, &ru) != nil {
			return -1
		}
		return ru.Utime.Nano() + ru.Stime.Nano()
	}
	x := uint64(1)
	for cpu() < int64(n)*1e6 {
		for i := 0; i < 100000; i++ {
			x = x*6364136223846793005 + 1442695040888963407
		}
	}
	if os.WriteFile(out, []byte(strconv.FormatInt(cpu(), 10)+" "+strconv.FormatUint(x&1, 10)), 0o600) != nil {
		return 3
	}
	return 5
}
