package integration

import (
	"os"
	"testing"
	"time"

	"github.com/process-watchman/watchman/internal/workload"
)

// envSoak holds the soak's duration (a Go duration, e.g. 60s or 30m);
// without it TestIntegrationSoak skips. scripts/soak.sh sets it.
const envSoak = "PWATCH_SOAK"

// TestIntegrationSoak runs workload.Mixed (rounds of short-lived children,
// orphans, a threaded child and exec children) for $PWATCH_SOAK against
// four watchers in a watcher process of their own: two on a shared hub,
// two on private hubs (two of them keeping tombstones and command lines).
// At the end each watcher must have seen exactly the workload's processes,
// each exit with its status, and have nothing left; the watcher process's
// RSS at the end must be within 10% of its RSS after the first minute (for
// runs shorter than 2 minutes: after the first third).
func TestIntegrationSoak(t *testing.T) {
	v := os.Getenv(envSoak)
	if v == "" {
		t.Skip("skipping the soak: set " + envSoak + "=60s (or run scripts/soak.sh 60s)")
	}
	d, err := time.ParseDuration(v)
	if err != nil || d <= 0 {
		t.Fatalf("%s=%q: want a positive duration such as 60s", envSoak, v)
	}
	requireConnector(t)
	p := startWorkload(t, workload.Mixed(d))
	const watchers = 4
	wp := startWatchProc(t, watchProcSpec{Root: p.PID(), Watchers: watchers, Shared: 2, Stream: true})
	pid := wp.cmd.Process.Pid
	base := rssKiB(t, pid)
	if err := p.Go(); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	sampleAt, sampleName := time.Minute, "after the first minute"
	if d < 2*time.Minute {
		sampleAt, sampleName = d/3, "after the first third ("+(d/3).String()+"; the run is shorter than 2 minutes)"
	}
	time.Sleep(sampleAt)
	early := wp.report(t, "rss")
	res, err := p.Wait()
	if err != nil {
		t.Fatalf("workload: %v", err)
	}
	ran := time.Since(start)
	var rep procReport
	if !eventually(60*time.Second, func() bool {
		rep = wp.report(t, "report")
		for _, w := range rep.Watchers {
			if w.RootAlive || len(w.Live) > 0 {
				return false
			}
		}
		return true
	}) {
		t.Fatalf("the workload is over, the watchers still see %+v", rep.Watchers)
	}
	late := wp.report(t, "rss")
	for i, w := range late.Watchers {
		added, exits := wp.snapshot(i)
		missed, badExit := 0, 0
		for _, r := range res.Records {
			id, ok := matchRecord(added, r)
			if !ok {
				missed++
				continue
			}
			if x, ok := exits[id]; !ok || !x.Known || x.Code != r.Code || x.Signal != int(r.Signal) {
				badExit++
				if badExit <= 5 {
					t.Logf("watcher %d: %s pid %d start %d (round %d, index %d, threads %d): exit seen %v %+v, want code %d signal %d",
						i, r.Kind, r.PID, r.StartTicks, r.Round, r.Index, r.Threads, ok, x, r.Code, r.Signal)
				}
			}
		}
		if missed > 0 || badExit > 0 || len(added) != len(res.Records) {
			t.Errorf("watcher %d: %d of %d processes missed, %d with a wrong or missing exit, %d added", i, missed, len(res.Records), badExit, len(added))
		}
		t.Logf("watcher %d (hub %d): %d processes seen of %d, exits all known; overruns %d, repairs %d, reconciles %d",
			i, w.Hub, len(added), len(res.Records), w.Stats.Overruns, w.Repairs, w.Stats.Reconciles)
	}
	limit := early.RSSKiB + early.RSSKiB/10
	t.Logf("soak %v (%d rounds, %d processes): watcher process RSS %d KiB at start, %d KiB %s, %d KiB at the end (limit %d); Go heap in use %d KiB then %d KiB",
		ran.Round(time.Second), res.Rounds, len(res.Records), base, early.RSSKiB, sampleName, late.RSSKiB, limit, early.HeapInuse>>10, late.HeapInuse>>10)
	if late.RSSKiB > limit {
		t.Errorf("RSS grew from %d KiB %s to %d KiB at the end, more than 10%%", early.RSSKiB, sampleName, late.RSSKiB)
	}
	wp.stop(t)
}
