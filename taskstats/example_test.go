package taskstats_test

import (
	"fmt"
	"time"

	"github.com/process-watchman/watchman/taskstats"
	"github.com/process-watchman/watchman/taskstats/taskstatstest"
)

// Example shows the consuming loop: Receive into a reused slice, feed
// every record to an Aggregator, get one Usage per process. The fake
// kernel stands in for Listen(nil), which needs CAP_NET_ADMIN.
func Example() {
	k := taskstatstest.NewKernel()
	k.SetTime(500 * time.Second) // CLOCK_BOOTTIME of the reads
	l, err := k.Listen(&taskstats.Config{CPUs: "0-1"})
	if err != nil {
		fmt.Println(err)
		return
	}
	defer l.Close()

	// A process with two threads that each used 100 ms of CPU; the main
	// thread exits last, with status 3, 2 s after the process started.
	k.ExitProcess(4242, []taskstats.Record{
		{PID: 4243, Comm: [32]byte{'w', 'o', 'r', 'k'}, UserCPU: 100 * time.Millisecond,
			Elapsed: time.Second, ProcessElapsed: 2 * time.Second},
		{PID: 4242, Comm: [32]byte{'w', 'o', 'r', 'k'}, UserCPU: 100 * time.Millisecond,
			Elapsed: 2 * time.Second, ProcessElapsed: 2 * time.Second, ExitStatus: 3 << 8, PeakRSS: 64 << 20},
	})

	var ag taskstats.Aggregator
	buf := make([]taskstats.Record, 0, 2*taskstats.MaxBatch)
	for done := false; !done; {
		recs, err := l.Receive(buf[:0])
		if err != nil {
			fmt.Println(err)
			return
		}
		for i := range recs {
			if u, ok := ag.Add(&recs[i]); ok {
				fmt.Printf("pid %d %s: %d threads, user CPU %v, peak RSS %d MiB, exit status %d, started at tick %d\n",
					u.PID, u.CommString(), u.Threads, u.UserCPU, u.PeakRSS>>20, u.ExitStatus>>8, u.StartTicks)
				done = true
			}
		}
	}
	// Output:
	// pid 4242 work: 2 threads, user CPU 200ms, peak RSS 64 MiB, exit status 3, started at tick 49800
}
