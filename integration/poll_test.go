package integration

import (
	"bufio"
	"maps"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/process-watchman/watchman"
	"github.com/process-watchman/watchman/internal/workload"
)

// The capture and reliability suites in polling mode (issue 13). Polling
// needs no privilege, so these tests run as any user.
//
// What polling guarantees, and so what these tests assert: a process that
// is alive when a Poll looks is found, whatever its shape (children,
// grandchildren, deep chains, children forked by a thread other than the
// first, orphans seen while their parent lived, and orphans whose parent
// exited between two Polls when the root is a child subreaper, since they
// are then the root's children); the live set after each Poll is exactly
// the tree /proc shows; each Delta chains the previous live set to the new
// one; identities are exact (polling reads the start time). The root's
// exit is seen through its pidfd without a Poll.
//
// What it cannot guarantee: a process that lives and dies between two
// looks is never seen, and neither is an orphan whose parent exited before
// a look saw it, when the root is not a subreaper (it was reparented out
// of the tree). An exit's status is never known (only a parent or the
// kernel's proc connector learns it). TestIntegrationPollShortLived holds
// polling to what it does promise there.

// pollView follows a polling Watcher Poll by Poll, checking each against
// /proc (through the workload's own stat parser, never the code under
// test).
type pollView struct {
	w    *watchman.Watcher
	pgid int // the held root: its process group is its tree
	live map[watchman.Identity]bool
	// removed and exited collect the Deltas.
	removed map[watchman.Identity]bool
	exited  map[watchman.Identity]watchman.Exit
}

func newPollView(w *watchman.Watcher, root int) *pollView {
	return &pollView{w: w, pgid: root, live: map[watchman.Identity]bool{},
		removed: map[watchman.Identity]bool{}, exited: map[watchman.Identity]watchman.Exit{}}
}

// poll polls once and checks: the live set is exactly the tree's live
// processes but unseen (which the caller says polling cannot see); the
// Delta chains the previous live set to this one; every identity is the
// one /proc shows. The tree must not change during the Poll: every
// process of a held tree waits on a pipe.
func (v *pollView) poll(t *testing.T, unseen ...int) watchman.Snapshot {
	t.Helper()
	s, err := v.w.Poll()
	if err != nil {
		t.Fatal(err)
	}
	// A held tree does not change between the commands' answers, so one
	// reading of /proc after the Poll is the truth the Poll saw.
	got, truth := s.PIDs(), groupMembers(t, v.pgid)
	want := slices.DeleteFunc(slices.Clone(truth), func(pid int) bool { return slices.Contains(unseen, pid) })
	if !slices.Equal(got, want) {
		t.Fatalf("after a Poll the live set is %v; /proc shows %v (%v of them unseen by polling)", got, truth, unseen)
	}
	next := maps.Clone(v.live)
	for _, id := range s.Delta.Added {
		if next[id] {
			t.Errorf("%v added twice", id)
		}
		next[id] = true
	}
	for _, id := range s.Delta.Removed {
		if !next[id] {
			t.Errorf("%v removed, but was not live", id)
		}
		delete(next, id)
		v.removed[id] = true
	}
	for _, x := range s.Delta.Exited {
		v.exited[x.Identity] = x
	}
	now := map[watchman.Identity]bool{}
	for _, p := range s.Processes {
		now[p.Identity] = true
		if st, err := workload.ReadStartTicks(p.PID); err != nil || st != p.StartTicks {
			t.Errorf("pid %d: start %d, /proc says %d (%v)", p.PID, p.StartTicks, st, err)
		}
	}
	if !maps.Equal(next, now) {
		t.Errorf("the Delta does not chain: previous live set plus Added minus Removed is %v, the snapshot holds %v", slices.Collect(maps.Keys(next)), slices.Collect(maps.Keys(now)))
	}
	v.live = now
	return s
}

// info returns the snapshot's record of pid.
func info(t *testing.T, s watchman.Snapshot, pid int) watchman.ProcessInfo {
	t.Helper()
	i := slices.IndexFunc(s.Processes, func(p watchman.ProcessInfo) bool { return p.PID == pid })
	if i < 0 {
		t.Fatalf("pid %d is not a member: %v", pid, s.PIDs())
	}
	return s.Processes[i]
}

// TestIntegrationPollHeldTree runs the shapes of the capture suite in
// polling mode on a held tree (every process lives until released), with
// the root a child subreaper and not: after each step one Poll must show
// exactly the tree, with the lineage, depth, names and command lines the
// processes have.
func TestIntegrationPollHeldTree(t *testing.T) {
	for _, subreaper := range []bool{true, false} {
		name := "plain root"
		if subreaper {
			name = "subreaper root"
		}
		t.Run(name, func(t *testing.T) {
			h := startHeldTree(t, subreaper)
			root := h.pid()
			w, err := watchman.Attach(root, &watchman.Config{Strategy: watchman.StrategyPoll, CaptureCmdline: true})
			if err != nil {
				t.Fatal(err)
			}
			defer w.Close()
			if w.Mode() != watchman.ModePoll {
				t.Fatalf("mode %v", w.Mode())
			}
			v := newPollView(w, root)
			v.poll(t)

			// Children.
			kids := h.do(t, "kids 50")
			s := v.poll(t)
			for _, k := range kids {
				if p := info(t, s, k); p.Depth != 1 || p.Parent != root || p.PPID != root || p.Name != "cat" || !slices.Equal(p.Cmdline, []string{"cat"}) {
					t.Errorf("child %d: %+v", k, p)
				}
			}

			// Orphans seen while their parent lived stay members
			// after it exits, where they go (to this root as a
			// subreaper, else out of the tree to init or another
			// subreaper), with the wrapper as Parent.
			var wrappers, orphans []int
			for range 10 {
				wg := h.do(t, "wrap")
				wrappers, orphans = append(wrappers, wg[0]), append(orphans, wg[1])
			}
			s = v.poll(t)
			for i, g := range orphans {
				if p := info(t, s, g); p.Depth != 2 || p.Parent != wrappers[i] || p.PPID != wrappers[i] {
					t.Errorf("grandchild %d of wrapper %d: %+v", g, wrappers[i], p)
				}
			}
			for _, wr := range wrappers {
				h.do(t, "release %d", wr)
			}
			s = v.poll(t)
			if len(s.Delta.Removed) != len(wrappers) {
				t.Errorf("removed %v, want the %d wrappers", s.Delta.Removed, len(wrappers))
			}
			for i, g := range orphans {
				p := info(t, s, g)
				if p.Depth != 2 || p.Parent != wrappers[i] || p.PPID == wrappers[i] || subreaper && p.PPID != root {
					t.Errorf("orphan %d of wrapper %d (gone): %+v", g, wrappers[i], p)
				}
			}

			// Orphans whose parent exited before any Poll: the root's
			// children if it is a subreaper; else out of the tree.
			var fast []int
			for range 10 {
				fast = append(fast, h.do(t, "wrapfast")[1])
			}
			if subreaper {
				s = v.poll(t)
				for _, g := range fast {
					if p := info(t, s, g); p.Depth != 1 || p.Parent != root || p.PPID != root {
						t.Errorf("orphan %d adopted by the subreaper root: %+v", g, p)
					}
				}
			} else {
				// Polling cannot see them: by the Poll their parent has
				// exited and they were reparented out of the tree.
				s = v.poll(t, fast...)
				t.Logf("%d orphans whose parent exited before a Poll, reparented out of a plain root's tree: unseen, as polling cannot see them", len(fast))
			}

			// A chain of 30 nested shells.
			top := h.do(t, "chain 30")[0]
			unseen := []int{}
			if !subreaper {
				unseen = fast
			}
			s = v.poll(t, unseen...)
			chain := map[int]watchman.ProcessInfo{}
			for _, p := range s.Processes {
				chain[p.PID] = p
			}
			deepest := 0
			for pid, p := range chain {
				if !isBelow(chain, pid, top) {
					continue
				}
				if p.Parent != p.PPID {
					t.Errorf("chain link %+v: Parent is not its live parent", p)
				}
				deepest = max(deepest, p.Depth)
			}
			if deepest < 31 {
				t.Errorf("the chain reaches depth %d, want at least 31", deepest)
			}

			// A child with 20 threads, whose own child was forked by a
			// thread other than the first: found through that thread's
			// children file.
			tc := h.do(t, "threads 20")
			s = v.poll(t, unseen...)
			if p := info(t, s, tc[1]); p.Depth != 2 || p.Parent != tc[0] {
				t.Errorf("child %d of thread holder %d, forked by a thread other than the first: %+v", tc[1], tc[0], p)
			}

			// An exec.
			e := h.do(t, "exec")[0]
			s = v.poll(t, unseen...)
			if p := info(t, s, e); p.Name != "sh" {
				t.Errorf("before its exec: %+v", p)
			}
			h.do(t, "doexec %d", e)
			s = v.poll(t, unseen...)
			if p := info(t, s, e); p.Name != "cat" || !slices.Equal(p.Cmdline, []string{"cat"}) {
				t.Errorf("after its exec: %+v", p)
			}

			// Releases, in steps.
			for _, pid := range append(kids[:25], orphans[:5]...) {
				h.do(t, "release %d", pid)
			}
			s = v.poll(t, unseen...)
			if len(s.Delta.Removed) != 30 {
				t.Errorf("released 30, removed %v", s.Delta.Removed)
			}
			for _, x := range s.Delta.Exited {
				if x.StatusKnown {
					t.Errorf("polling claims to know the exit status of %v: %+v", x.Identity, x)
				}
			}
			for _, pid := range []int{top, tc[0], e} {
				h.do(t, "release %d", pid)
			}
			v.poll(t, unseen...)

			// The root releases the rest and exits: its pidfd tells
			// the Watcher, whose look finds the tree over, with no Poll.
			h.end()
			select {
			case <-w.Done():
			case <-time.After(60 * time.Second):
				t.Fatalf("Done still open 60 s after the root and its tree exited, without a Poll (live %v)", w.LivePIDs())
			}
			select {
			case <-w.RootExited():
			default:
				t.Error("Done closed before RootExited")
			}
			s, err = w.Poll()
			if err != nil {
				t.Fatal(err)
			}
			if s.RootAlive || len(s.Processes) != 0 {
				t.Errorf("after the end: root alive %v, members %v", s.RootAlive, s.PIDs())
			}
			seen := len(v.removed) + len(s.Delta.Removed)
			t.Logf("%d processes seen and removed, each Poll exact", seen)
		})
	}
}

// isBelow reports whether pid is top or descends from it through Parent
// links among ps.
func isBelow(ps map[int]watchman.ProcessInfo, pid, top int) bool {
	for range len(ps) + 1 {
		if pid == top {
			return true
		}
		p, ok := ps[pid]
		if !ok {
			return false
		}
		pid = p.Parent
	}
	return false
}

// TestIntegrationRootExitSeenAtOnce: the root exits while its child lives
// on. RootExited closes without a Poll in both modes (through the root's
// pidfd, or the kernel's exit event), Done stays open while the child
// lives, and closes once it has exited: by itself in connector mode and in
// polling mode with background polls, at the next Poll without them.
func TestIntegrationRootExitSeenAtOnce(t *testing.T) {
	cases := []struct {
		name string
		cfg  watchman.Config
	}{
		{"poll", watchman.Config{Strategy: watchman.StrategyPoll}},
		{"poll in the background", watchman.Config{Strategy: watchman.StrategyPoll, ReconcileInterval: 10 * time.Millisecond}},
		{"connector", watchman.Config{Strategy: watchman.StrategyConnector}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if c.cfg.Strategy == watchman.StrategyConnector {
				requireConnector(t)
			}
			r, hold, err := os.Pipe()
			if err != nil {
				t.Fatal(err)
			}
			defer hold.Close()
			root := exec.Command("sh", "-c", "cat <&3 >/dev/null & echo $!; read x")
			root.ExtraFiles = []*os.File{r}
			quit, err := root.StdinPipe()
			if err != nil {
				t.Fatal(err)
			}
			out, err := root.StdoutPipe()
			if err != nil {
				t.Fatal(err)
			}
			if err := root.Start(); err != nil {
				t.Fatal(err)
			}
			r.Close()
			defer func() { quit.Close(); root.Wait() }()
			line, err := bufio.NewReader(out).ReadString('\n')
			if err != nil {
				t.Fatal(err)
			}
			kid, err := strconv.Atoi(strings.TrimSpace(line))
			if err != nil {
				t.Fatal(err)
			}
			cfg := c.cfg
			w, err := watchman.Attach(root.Process.Pid, &cfg)
			if err != nil {
				t.Fatal(err)
			}
			defer w.Close()
			// The child was started before Attach: every mode finds it
			// in Attach's look.
			if live := w.LivePIDs(); !slices.Equal(live, []int{kid}) {
				t.Fatalf("members %v, want the child %d", live, kid)
			}

			if _, err := quit.Write([]byte("x\n")); err != nil { // the root exits
				t.Fatal(err)
			}
			if err := root.Wait(); err != nil {
				t.Fatal(err)
			}
			select {
			case <-w.RootExited():
			case <-time.After(60 * time.Second):
				t.Fatal("RootExited still open 60 s after the root exited, without a Poll")
			}
			select {
			case <-w.Done():
				t.Fatal("Done closed while the child lives")
			default:
			}
			if live := w.LivePIDs(); !slices.Equal(live, []int{kid}) {
				t.Errorf("members %v after the root exited, want its child %d: orphans stay members", live, kid)
			}

			hold.Close() // the child exits, reaped by whoever adopted it
			if !eventually(60*time.Second, func() bool { _, err := workload.ReadStat(kid); return err != nil }) {
				t.Fatalf("child %d not reaped", kid)
			}
			if c.cfg.Strategy == watchman.StrategyPoll && c.cfg.ReconcileInterval == 0 {
				// No look at /proc happens without a Poll.
				if _, err := w.Poll(); err != nil {
					t.Fatal(err)
				}
			}
			select {
			case <-w.Done():
			case <-time.After(60 * time.Second):
				t.Fatalf("Done still open 60 s after the tree ended (live %v)", w.LivePIDs())
			}
		})
	}
}

// TestIntegrationPollShortLived runs the capture suite's workloads (storms
// of children living a millisecond, orphans, a deep chain, threads, execs)
// in polling mode, polling in the background every 10 ms. Polling cannot
// promise to see a process that lives less than its interval (or any
// process, on a loaded machine, if the poller does not get a CPU in its
// lifetime), nor any exit status. What it does promise, and this test
// asserts: it never reports a process that is not in the tree (every
// identity it adds is exactly one the workload made); every process it
// added is removed once the tree is over, with an exit that is either of
// unknown status or the right one; the stream (the background polls'
// events, all Synthetic) loses nothing; the root's end and the tree's are
// seen. How many processes it saw is logged.
func TestIntegrationPollShortLived(t *testing.T) {
	cases := []struct {
		name string
		spec workload.Spec
	}{
		{"storm of 1000 children", workload.Spec{Storm: &workload.Storm{Count: 1000, Lifetime: time.Millisecond, SignalEvery: 7}}},
		{"storm fork-exec", workload.Spec{Storm: &workload.Storm{Count: 200, Mode: workload.ForkExec, SignalEvery: 5, Signal: 15}}},
		{"orphans", workload.Spec{Orphans: &workload.Orphans{Count: 40, Lifetime: 300 * time.Millisecond, Code: 3}}},
		{"chain 200 deep", workload.Spec{Chain: &workload.Chain{Depth: 200, Lifetime: 50 * time.Millisecond, Code: 9}}},
		{"threads", workload.Spec{Threads: &workload.Threads{Threads: 50, Lifetime: 200 * time.Millisecond, Code: 4}}},
		{"exec", workload.Spec{Exec: &workload.Exec{Count: 5, Before: 20 * time.Millisecond, Lifetime: 50 * time.Millisecond}}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			res, obs := watchWorkload(t, c.spec, watchman.Config{Strategy: watchman.StrategyPoll, ReconcileInterval: 10 * time.Millisecond, CaptureCmdline: true})
			records := map[watchman.Identity]workload.Record{}
			for _, r := range res.Records {
				records[watchman.Identity{PID: r.PID, StartTicks: r.StartTicks}] = r
			}
			for id := range obs.added {
				r, ok := records[id]
				if !ok {
					t.Errorf("polling added %v, which the workload did not make", id)
					continue
				}
				x, ok := obs.exits[id]
				switch {
				case !ok:
					t.Errorf("%s %v added, never removed", r.Kind, id)
				case x.StatusKnown && (x.Code != r.Code || x.Signal != int(r.Signal)):
					t.Errorf("%s %v: exit %+v, want code %d signal %d", r.Kind, id, x, r.Code, r.Signal)
				}
			}
			if obs.lost != 0 {
				t.Errorf("%d lost markers", obs.lost)
			}
			for _, evs := range []map[int]watchman.Event{obs.forks, obs.execs} {
				for _, ev := range evs {
					if !ev.Synthetic {
						t.Errorf("polling mode's event %+v is not Synthetic", ev)
					}
				}
			}
			if obs.snap.Mode != watchman.ModePoll || obs.snap.RootAlive || len(obs.snap.Processes) != 0 {
				t.Errorf("at the end: mode %v, root alive %v, members %v", obs.snap.Mode, obs.snap.RootAlive, obs.snap.PIDs())
			}
			t.Logf("polling every 10 ms saw %d of the %d processes (%s); no stranger, each removed", len(obs.added), len(res.Records), c.name)
		})
	}
}
