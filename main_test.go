package watchman

import (
	"fmt"
	"os"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"testing"

	"go.uber.org/goleak"
	"golang.org/x/sys/unix"
)

// TestMain fails the package's tests if any goroutine outlives them: every
// Watcher, Hub and Subscription must release what it started.
//
// With PWATCH_TEST_HELPER set the test binary is a helper process instead
// (see helper), for the usage tests.
func TestMain(m *testing.M) {
	if mode := os.Getenv("PWATCH_TEST_HELPER"); mode != "" {
		os.Exit(helper(mode, os.Getenv("PWATCH_TEST_HELPER_OUT")))
	}
	goleak.VerifyTestMain(m)
}

// helper runs one known workload, writes what it measured of itself to out
// and exits with status 5 (2 or 3 if it failed):
//   - burn:MS burns MS ms of CPU on one thread; burn2:MS on each of two
//     threads; both write the process's CPU time, then its user and
//     system parts (getrusage, ns, separated by spaces);
//   - touch:MIB touches MIB MiB of fresh memory and writes its peak RSS
//     (bytes, getrusage);
//   - write:MIB:PATH writes MIB MiB to PATH with fsync and writes the
//     byte count.
func helper(mode, out string) int {
	f := strings.Split(mode, ":")
	n, err := strconv.Atoi(f[len(f)-1])
	if len(f) == 3 {
		n, err = strconv.Atoi(f[1])
	}
	if err != nil || n <= 0 {
		return 2
	}
	var ru unix.Rusage
	cpu := func() int64 {
		if unix.Getrusage(unix.RUSAGE_SELF, &ru) != nil {
			return -1
		}
		return ru.Utime.Nano() + ru.Stime.Nano()
	}
	var result int64
	switch f[0] {
	case "burn", "burn2":
		threads := map[string]int{"burn": 1, "burn2": 2}[f[0]]
		var wg sync.WaitGroup
		for range threads {
			wg.Go(func() {
				runtime.LockOSThread() // a thread of its own, kept busy
				var ts unix.Timespec
				x := uint64(1)
				for {
					if unix.ClockGettime(unix.CLOCK_THREAD_CPUTIME_ID, &ts) != nil || ts.Nano() >= int64(n)*1e6 {
						break
					}
					for i := 0; i < 100000; i++ {
						x = x*6364136223846793005 + 1442695040888963407
					}
				}
				runtime.KeepAlive(x)
			})
		}
		wg.Wait()
		if result = cpu(); result < 0 {
			return 3
		}
		if os.WriteFile(out, fmt.Appendf(nil, "%d %d %d", result, ru.Utime.Nano(), ru.Stime.Nano()), 0o600) != nil {
			return 3
		}
		return 5
	case "touch":
		mem := make([]byte, n<<20)
		for i := 0; i < len(mem); i += 4096 {
			mem[i] = 1
		}
		runtime.KeepAlive(mem)
		if unix.Getrusage(unix.RUSAGE_SELF, &ru) != nil {
			return 3
		}
		result = ru.Maxrss << 10
	case "write":
		if len(f) != 3 {
			return 2
		}
		fd, err := os.Create(f[2])
		if err != nil {
			return 3
		}
		buf := make([]byte, 1<<20)
		for i := range buf {
			buf[i] = byte(i)
		}
		for range n {
			if _, err := fd.Write(buf); err != nil {
				return 3
			}
		}
		if fd.Sync() != nil || fd.Close() != nil {
			return 3
		}
		result = int64(n) << 20
	default:
		return 2
	}
	if os.WriteFile(out, []byte(strconv.FormatInt(result, 10)), 0o600) != nil {
		return 3
	}
	return 5
}
