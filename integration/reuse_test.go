package integration

import (
	"bufio"
	"fmt"
	"io"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/process-watchman/watchman"
	"github.com/process-watchman/watchman/internal/workload"
	"golang.org/x/sys/unix"
)

// A forker is this test binary re-executed (envForker set) as a tree root
// that forks and reaps on request, reading lines on stdin and answering
// each on stdout: "fork" starts a child (sleep 1000) and answers its PID;
// "forkat N" does so after setting ns_last_pid to N-1 (answering the PID
// it got, which other forks on the host may have taken); "kill PID" kills
// and reaps a child and answers "ok".
const envForker = "PWATCH_TEST_FORKER"

// nsLastPID is the PID namespace's last allocated PID; writing N-1 to it
// (as root) makes the next fork in the namespace get N if N is free.
const nsLastPID = "/proc/sys/kernel/ns_last_pid"

// forkAt runs start with ns_last_pid set to pid-1, under the file's lock
// (which other ns_last_pid writers, like CRIU, honour too).
func forkAt(pid int, start func() (int, error)) (int, error) {
	f, err := os.OpenFile(nsLastPID, os.O_RDWR, 0)
	if err != nil {
		return 0, err
	}
	defer f.Close()
	if err := unix.Flock(int(f.Fd()), unix.LOCK_EX); err != nil {
		return 0, err
	}
	defer unix.Flock(int(f.Fd()), unix.LOCK_UN)
	if _, err := f.WriteString(strconv.Itoa(pid - 1)); err != nil {
		return 0, err
	}
	return start()
}

func forkerMain() int {
	kids := map[int]*exec.Cmd{}
	defer func() {
		for _, c := range kids {
			c.Process.Kill()
			c.Wait()
		}
	}()
	start := func() (int, error) {
		c := exec.Command("sleep", "1000")
		if err := c.Start(); err != nil {
			return 0, err
		}
		kids[c.Process.Pid] = c
		return c.Process.Pid, nil
	}
	sc := bufio.NewScanner(os.Stdin)
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		var n int
		if len(f) == 2 {
			n, _ = strconv.Atoi(f[1])
		}
		var pid int
		var err error
		switch f[0] {
		case "fork":
			pid, err = start()
		case "forkat":
			pid, err = forkAt(n, start)
		case "kill":
			c, ok := kids[n]
			if !ok {
				err = fmt.Errorf("no child %d", n)
				break
			}
			delete(kids, n)
			c.Process.Kill()
			c.Wait()
		default:
			err = fmt.Errorf("unknown command %q", sc.Text())
		}
		if err != nil {
			fmt.Println("error", err)
			continue
		}
		fmt.Println(pid)
	}
	return 0
}

// forker is the test's side of a forker process.
type forker struct {
	cmd *exec.Cmd
	in  io.WriteCloser
	out *bufio.Scanner
}

// startForker starts a forker process with start (cmd.Start, or a wrapper
// that sets its PID).
func startForker(t *testing.T, start func(*exec.Cmd) error) *forker {
	t.Helper()
	cmd := exec.Command(os.Args[0])
	cmd.Env = append(os.Environ(), envForker+"=1")
	cmd.Stderr = os.Stderr
	in, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := start(cmd); err != nil {
		t.Fatal(err)
	}
	f := &forker{cmd: cmd, in: in, out: bufio.NewScanner(out)}
	t.Cleanup(f.close)
	return f
}

func (f *forker) pid() int { return f.cmd.Process.Pid }

// close ends the forker (its children are killed and reaped) and reaps it.
func (f *forker) close() {
	if f.cmd.ProcessState != nil {
		return
	}
	f.in.Close()
	f.cmd.Wait()
}

func (f *forker) do(t *testing.T, cmd string) int {
	t.Helper()
	fmt.Fprintln(f.in, cmd)
	if !f.out.Scan() {
		t.Fatalf("forker: no answer to %q: %v", cmd, f.out.Err())
	}
	n, err := strconv.Atoi(f.out.Text())
	if err != nil {
		t.Fatalf("forker: %q: %s", cmd, f.out.Text())
	}
	return n
}

// requireNsLastPID skips without the privilege to write ns_last_pid.
func requireNsLastPID(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("skipping: forcing PID reuse writes /proc/sys/kernel/ns_last_pid, which needs root (CI runs as root)")
	}
	f, err := os.OpenFile(nsLastPID, os.O_RDWR, 0)
	if err != nil {
		t.Skipf("skipping: %v", err)
	}
	f.Close()
}

// reuse makes a new process with exactly the PID pid, by start (which
// forks after setting ns_last_pid). Another fork on the host can take the
// PID first; then the process it got is killed (by kill) and it tries
// again once the PID is free: with other packages' tests running beside
// (go test's default), the PID was taken by a process that lived on, and
// 100 quick tries all lost. The 60 s bound only ends a broken run (a PID
// held for good).
func reuse(t *testing.T, pid int, start func() int, kill func(int)) int {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	tries := 0
	for time.Now().Before(deadline) {
		if _, err := os.Stat("/proc/" + strconv.Itoa(pid)); err == nil {
			time.Sleep(5 * time.Millisecond) // held by another process
			continue
		}
		tries++
		got := start()
		if got == pid {
			return got
		}
		kill(got)
	}
	t.Fatalf("could not get PID %d in 60 s (%d tries): another process held it, or the host forked first every time", pid, tries)
	return 0
}

// identity reads pid's identity from /proc.
func identity(t *testing.T, pid int) watchman.Identity {
	t.Helper()
	st, err := workload.ReadStartTicks(pid)
	if err != nil {
		t.Fatal(err)
	}
	return watchman.Identity{PID: pid, StartTicks: st}
}

// deltas accumulates the Deltas of a Watcher's Polls.
type deltas struct {
	w              *watchman.Watcher
	added, removed []watchman.Identity
	exited         []watchman.Exit
	last           watchman.Snapshot
}

func (d *deltas) poll(t *testing.T) watchman.Snapshot {
	t.Helper()
	s, err := d.w.Poll()
	if err != nil {
		t.Fatal(err)
	}
	d.added = append(d.added, s.Delta.Added...)
	d.removed = append(d.removed, s.Delta.Removed...)
	d.exited = append(d.exited, s.Delta.Exited...)
	d.last = s
	return s
}

// checks waits until the watcher has made n more checks of the tree
// against /proc (walks of the tree or host scans; in polling mode each
// Poll is one), then polls.
func (d *deltas) checks(t *testing.T, n uint64) {
	t.Helper()
	// Any background check (a walk of the tree or a host scan) is applied
	// before it is counted, so the next Poll has what it found.
	target := d.w.Stats().Reconciles + n
	if !eventually(30*time.Second, func() bool { d.poll(t); return d.w.Stats().Reconciles >= target }) {
		t.Fatal("no background checks")
	}
	d.poll(t)
}

func hasPID(ps []watchman.ProcessInfo, pid int) (watchman.ProcessInfo, bool) {
	for _, p := range ps {
		if p.PID == pid {
			return p, true
		}
	}
	return watchman.ProcessInfo{}, false
}

// TestIntegrationPIDReuse forces a member's PID to be reused: first by a
// new child of the root (a member, with another identity), then by a
// process outside the tree (never a member).
func TestIntegrationPIDReuse(t *testing.T) {
	requireConnector(t)
	requireNsLastPID(t)
	for _, strategy := range []watchman.Strategy{watchman.StrategyConnector, watchman.StrategyPoll} {
		t.Run(string(strategy), func(t *testing.T) {
			f := startForker(t, (*exec.Cmd).Start)
			w, err := watchman.Attach(f.pid(), &watchman.Config{Strategy: strategy, ReconcileInterval: 10 * time.Millisecond})
			if err != nil {
				t.Fatal(err)
			}
			defer w.Close()
			d := &deltas{w: w}
			a := f.do(t, "fork")
			aID := identity(t, a)
			if !eventually(10*time.Second, func() bool { _, ok := hasPID(d.poll(t).Processes, a); return ok }) {
				t.Fatalf("child %d not seen", a)
			}
			// Identities are (PID, start tick): let a tick (10 ms) pass so
			// the new process's differs.
			time.Sleep(30 * time.Millisecond)
			f.do(t, "kill "+strconv.Itoa(a))
			b := reuse(t, a, func() int { return f.do(t, "forkat "+strconv.Itoa(a)) }, func(pid int) { f.do(t, "kill "+strconv.Itoa(pid)) })
			bID := identity(t, b)
			if bID == aID {
				t.Fatalf("old and new process have the same identity %v", aID)
			}
			if !eventually(10*time.Second, func() bool {
				d.poll(t)
				p, ok := hasPID(d.last.Processes, b)
				return ok && p.Identity == bID && slices.Contains(d.removed, aID) && slices.Contains(d.added, bID)
			}) {
				t.Fatalf("PID %d reused by a child: old %v, new %v; added %v removed %v; now %+v", a, aID, bID, d.added, d.removed, d.last.Processes)
			}
			if strategy == watchman.StrategyConnector {
				i := slices.IndexFunc(d.exited, func(x watchman.Exit) bool { return x.Identity == aID })
				if i < 0 || !d.exited[i].StatusKnown || d.exited[i].Signal != int(unix.SIGKILL) {
					t.Errorf("old process's exit: %+v", d.exited)
				}
			}

			// Now a process outside the tree takes b's PID.
			time.Sleep(30 * time.Millisecond)
			f.do(t, "kill "+strconv.Itoa(b))
			var outsiders []*exec.Cmd
			defer func() {
				for _, c := range outsiders {
					c.Process.Kill()
					c.Wait()
				}
			}()
			c := reuse(t, b, func() int {
				pid, err := forkAt(b, func() (int, error) {
					cmd := exec.Command("sleep", "1000")
					if err := cmd.Start(); err != nil {
						return 0, err
					}
					outsiders = append(outsiders, cmd)
					return cmd.Process.Pid, nil
				})
				if err != nil {
					t.Fatal(err)
				}
				return pid
			}, func(int) {})
			cID := identity(t, c)
			d.checks(t, 3)
			if _, ok := hasPID(d.last.Processes, c); ok || slices.Contains(d.added, cID) {
				t.Errorf("outsider %v with a member's old PID was adopted: %+v", cID, d.last.Processes)
			}
			if !slices.Contains(d.removed, bID) || !d.last.RootAlive {
				t.Errorf("member %v not removed (removed %v), root alive %v", bID, d.removed, d.last.RootAlive)
			}
			t.Logf("PID %d: %v, then member %v, then outsider %v", a, aID, bID, cID)
		})
	}
}

// TestIntegrationRootPIDReuse: the root exits and a process outside the
// tree, which then forks children, takes its PID. The root is reported
// gone and neither the new process nor its children are adopted.
func TestIntegrationRootPIDReuse(t *testing.T) {
	requireConnector(t)
	requireNsLastPID(t)
	for _, strategy := range []watchman.Strategy{watchman.StrategyConnector, watchman.StrategyPoll} {
		t.Run(string(strategy), func(t *testing.T) {
			root := exec.Command("sleep", "1000")
			if err := root.Start(); err != nil {
				t.Fatal(err)
			}
			rootID := identity(t, root.Process.Pid)
			w, err := watchman.Attach(rootID.PID, &watchman.Config{Strategy: strategy, IncludeRoot: true, ReconcileInterval: 10 * time.Millisecond})
			if err != nil {
				root.Process.Kill()
				root.Wait()
				t.Fatal(err)
			}
			defer w.Close()
			d := &deltas{w: w}
			d.poll(t)
			time.Sleep(30 * time.Millisecond)
			root.Process.Kill()
			root.Wait()

			var impostor *forker
			reuse(t, rootID.PID, func() int {
				impostor = startForker(t, func(cmd *exec.Cmd) error {
					_, err := forkAt(rootID.PID, func() (int, error) { return 0, cmd.Start() })
					return err
				})
				return impostor.pid()
			}, func(int) { impostor.close() })
			newID := identity(t, rootID.PID)
			kids := []int{impostor.do(t, "fork"), impostor.do(t, "fork")}
			d.checks(t, 3)
			s := d.last
			if s.RootAlive || len(s.Processes) != 0 || len(d.added) != 1 || d.added[0] != rootID {
				t.Errorf("root %v replaced by %v with children %v: alive %v, processes %+v, added %v", rootID, newID, kids, s.RootAlive, s.Processes, d.added)
			}
			select {
			case <-w.RootExited():
			default:
				t.Error("RootExited not closed")
			}
			if i := slices.IndexFunc(d.exited, func(x watchman.Exit) bool { return x.Identity == rootID }); i < 0 {
				t.Errorf("no exit for the root: %+v", d.exited)
			}
			t.Logf("root %v, impostor %v with children %v: not adopted", rootID, newID, kids)
		})
	}
}
