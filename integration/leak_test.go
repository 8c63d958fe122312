package integration

import (
	"os/exec"
	"runtime"
	"testing"
	"time"

	"github.com/process-watchman/watchman"
)

// TestIntegrationAttachCloseCycles attaches and closes 250 times with the
// real connector, on private hubs and on a shared one (two watchers per
// cycle, so its socket opens and closes each time), and in polling mode
// (each Watcher holds the root's pidfd, and one of the two per cycle
// polls in the background), with a subscription and a Poll each:
// descriptors and goroutines come back to where they were. (TestMain's
// goleak check covers the goroutines once more.) A leak on every cycle
// shows after one; 250 cycles also catch one on a path taken once in
// a hundred (a read racing Close), at a quarter of the 48 s that 1,000
// took.
func TestIntegrationAttachCloseCycles(t *testing.T) {
	root := exec.Command("sleep", "1000")
	if err := root.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { root.Process.Kill(); root.Wait() })
	const cycles = 250
	for _, name := range []string{"private", "shared", "poll"} {
		shared, poll := name == "shared", name == "poll"
		t.Run(name, func(t *testing.T) {
			if !poll {
				requireConnector(t)
			}
			hub := watchman.NewHub(nil)
			cycle := func() {
				n := 1
				if shared || poll {
					n = 2
				}
				var ws []*watchman.Watcher
				for i := range n {
					cfg := &watchman.Config{Strategy: watchman.StrategyConnector}
					if shared {
						cfg.Hub = hub
					}
					if poll {
						cfg = &watchman.Config{Strategy: watchman.StrategyPoll}
						if i == 1 {
							cfg.ReconcileInterval = 10 * time.Millisecond
						}
					}
					w, err := watchman.Attach(root.Process.Pid, cfg)
					if err != nil {
						t.Fatal(err)
					}
					w.Subscribe(1)
					if _, err := w.Poll(); err != nil {
						t.Fatal(err)
					}
					ws = append(ws, w)
				}
				for _, w := range ws {
					if err := w.Close(); err != nil {
						t.Fatal(err)
					}
				}
			}
			cycle() // warm up what the runtime opens once
			fds, gs := openFDs(t), runtime.NumGoroutine()
			for range cycles {
				cycle()
			}
			after := openFDs(t)
			if after != fds {
				t.Errorf("%d descriptors before %d Attach/Close cycles, %d after", fds, cycles, after)
			}
			var g int
			if !eventually(5*time.Second, func() bool { g = runtime.NumGoroutine(); return g <= gs }) {
				t.Errorf("%d goroutines before %d Attach/Close cycles, %d after", gs, cycles, g)
			}
			t.Logf("%s: %d cycles, descriptors %d before and %d after, goroutines %d and %d", name, cycles, fds, after, gs, g)
		})
	}
}
