package main

import (
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/process-watchman/watchman"
	"golang.org/x/sys/unix"
)

// The tests of issue 13: pwatch run and pwatch watch inside new user, PID
// and mount namespaces (what a container gets), where the kernel's proc
// connector is silent and pwatch polls.

// hangGuard is how long a container test may run before it is taken for
// hung and killed.
const hangGuard = 2 * time.Minute

// unshareArgs are the namespaces of a rootless container, with a /proc of
// its own.
var unshareArgs = []string{"--user", "--map-root-user", "--pid", "--fork", "--mount-proc"}

// inContainer is a command that runs script with sh inside new
// namespaces, as uid (-1: as this process), with args as $0, $1...
func inContainer(t *testing.T, uid int, script string, args ...string) *exec.Cmd {
	t.Helper()
	unshare, err := exec.LookPath("unshare")
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("no unshare(1), and CI has util-linux")
		}
		t.Skip("skipping: no unshare(1) here")
	}
	c := pwatchCmd(uid)
	c.Path = unshare
	c.Args = append(append(append([]string{"unshare"}, unshareArgs...), "sh", "-c", script), args...)
	return c
}

// noNamespaces skips the test when the kernel refused the namespaces
// (unshare says so and fails at once), and fails it under CI.
func noNamespaces(t *testing.T, err error, stderr string) {
	t.Helper()
	var ee *exec.ExitError
	if errors.As(err, &ee) && strings.HasPrefix(stderr, "unshare: ") {
		if os.Getenv("CI") == "true" {
			t.Fatalf("unshare failed under CI: %s", stderr)
		}
		t.Skipf("skipping: no user namespaces here: %s", stderr)
	}
}

// containerUsers are who the tests run as: this process, and, as root,
// uid 65534 too (a container started by an unprivileged user).
func containerUsers() []runAs {
	users := []runAs{{name: "self", uid: -1}}
	if os.Geteuid() == 0 {
		users = append(users, runAs{name: "nobody", uid: nobody})
	}
	return users
}

func TestIntegrationRunInNamespaces(t *testing.T) {
	for _, u := range containerUsers() {
		t.Run(u.name, func(t *testing.T) {
			dir := sharedDir(t)
			events := filepath.Join(dir, "e.jsonl")
			// COMMAND exits 7 and leaves a subshell behind that exits 3:
			// pwatch is the namespace's init, and --wait reaps it, however
			// short-lived, whatever the polls saw.
			c := inContainer(t, u.uid, `exec "$0" run --wait --events "$1" -- sh -c '(sleep 1; exit 3) & exit 7'`, binPath, events)
			var stderr syncBuffer
			c.Stderr = &stderr
			if err := c.Start(); err != nil {
				t.Fatal(err)
			}
			// A hang guard, not a timing: pwatch as the namespace's init
			// once waited forever for its own cgroup guard.
			hung := time.AfterFunc(hangGuard, func() { c.Process.Kill() })
			err := c.Wait()
			if !hung.Stop() {
				t.Fatalf("pwatch run hung, killed after %v; stderr:\n%s", hangGuard, stderr.String())
			}
			noNamespaces(t, err, stderr.String())
			// COMMAND's status passes through pwatch and unshare.
			if code := c.ProcessState.ExitCode(); code != 7 {
				t.Fatalf("exit status %d, want COMMAND's 7; stderr:\n%s", code, stderr.String())
			}
			out := stderr.String()
			if !strings.Contains(out, "pwatch: poll mode: ") || !strings.Contains(out, "exited with status 7") ||
				!strings.Contains(out, " left behind when the root exited:") || strings.Contains(out, guardArg) {
				t.Errorf("summary:\n%s", out)
			}
			// Both reaps carry their status and wait4's usage.
			reaps := map[int]bool{}
			for _, l := range readJSONL(t, readFile(t, events)) {
				if l.Type == "reap" && l.ExitCode != nil && l.Usage != nil && l.Usage.Source == watchman.UsageWait4 {
					reaps[*l.ExitCode] = true
				}
			}
			if !reaps[7] || !reaps[3] {
				t.Errorf("reap lines for exit codes %v, want 7 (COMMAND) and 3 (the subshell):\n%s", reaps, readFile(t, events))
			}
		})
	}
}

// startContainer starts c, a container (inContainer), with its stderr in
// stderr, and kills it at the end of the test if it is still running.
// done gets c.Wait's error (whoever takes it puts it back); running fails
// the test, saying that the container ended when, if it has ended.
func startContainer(t *testing.T, c *exec.Cmd, stderr *syncBuffer) (done chan error, running func(when string)) {
	t.Helper()
	c.Stderr = stderr
	if err := c.Start(); err != nil {
		t.Fatal(err)
	}
	done = make(chan error, 1)
	go func() { done <- c.Wait() }()
	t.Cleanup(func() {
		select {
		case <-done:
		default:
			// Killing unshare leaves the namespace's init running (and
			// holding stderr): kill it, which ends the whole namespace.
			for _, pid := range childPIDs(strconv.Itoa(c.Process.Pid)) {
				unix.Kill(pid, unix.SIGKILL)
			}
			c.Process.Kill()
			<-done
		}
	})
	return done, func(when string) {
		t.Helper()
		select {
		case err := <-done:
			done <- err
			noNamespaces(t, err, stderr.String())
			t.Fatalf("pwatch ended %s: %v\n%s", when, err, stderr.String())
		default:
		}
	}
}

// fifo makes a named pipe that uid 65534 may read too.
func fifo(t *testing.T, path string) {
	t.Helper()
	if err := unix.Mkfifo(path, 0o666); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(path, 0o666); err != nil {
		t.Fatal(err)
	}
}

// release writes a line to the named pipe path once its reader has
// opened it, or fails the test if done says the reader's container
// ended first.
func release(t *testing.T, path string, done chan error) {
	t.Helper()
	waitFor(t, "the tree to wait on "+filepath.Base(path), func() bool {
		select {
		case err := <-done:
			done <- err
			t.Fatalf("the container ended before reading %s: %v", path, err)
		default:
		}
		f, err := os.OpenFile(path, os.O_WRONLY|unix.O_NONBLOCK, 0)
		if err != nil {
			return false // ENXIO: no reader yet
		}
		defer f.Close()
		if _, err := f.Write([]byte("go\n")); err != nil {
			t.Fatal(err)
		}
		return true
	})
}

func TestIntegrationWatchInNamespaces(t *testing.T) {
	for _, u := range containerUsers() {
		t.Run(u.name, func(t *testing.T) {
			dir := sharedDir(t)
			start, stop, childPID := filepath.Join(dir, "start"), filepath.Join(dir, "stop"), filepath.Join(dir, "child")
			fifo(t, start)
			fifo(t, stop)
			// The root waits for start, forks a sleep, writes its PID (as
			// the namespace numbers it), waits for stop, kills the sleep
			// and exits; it forks nothing else (read, echo, kill and wait
			// are built in). pwatch watches it, as PID 1.
			root := `read x < "$0"; sleep 30 & echo $! > "$2"; read x < "$1"; kill $!; wait; exit 0`
			c := inContainer(t, u.uid, `sh -c "$4" "$1" "$2" "$3" & exec "$0" watch --json $!`, binPath, start, stop, childPID, root)
			var stdout, stderr syncBuffer
			c.Stdout = &stdout
			done, running := startContainer(t, c, &stderr)
			waitFor(t, "pwatch watch to attach", func() bool {
				running("before the tree started")
				return strings.Contains(stderr.String(), "pwatch: watching ")
			})
			if !strings.Contains(stderr.String(), "pwatch: poll mode: ") {
				t.Errorf("polling mode is not announced:\n%s", stderr.String())
			}
			release(t, start, done)
			var pid int
			waitFor(t, "the child's PID", func() bool {
				b, err := os.ReadFile(childPID)
				pid, _ = strconv.Atoi(strings.TrimSpace(string(b)))
				return err == nil && pid > 0
			})
			// The child lives until stop: its fork line comes from a poll
			// nobody asked for, while it runs.
			forkLine := `"type":"fork","pid":` + strconv.Itoa(pid) + ","
			waitFor(t, "the child's fork line", func() bool { return strings.Contains(stdout.String(), forkLine) })
			release(t, stop, done)
			var err error
			waitFor(t, "pwatch watch to end with the tree", func() bool {
				select {
				case err = <-done:
					done <- err
					return true
				default:
					return false
				}
			})
			if err != nil {
				t.Fatalf("pwatch watch: %v\n%s", err, stderr.String())
			}
			var exits []int
			for _, l := range readJSONL(t, []byte(stdout.String())) {
				if l.Type == "exit" {
					exits = append(exits, l.PID)
				}
			}
			if len(exits) != 2 || !slices.Contains(exits, pid) {
				t.Errorf("exit lines for %v, want the child %d and the root:\n%s", exits, pid, stdout.String())
			}
			if !strings.Contains(stderr.String(), "pwatch: 2 processes (1 there at the start)") {
				t.Errorf("summary:\n%s", stderr.String())
			}
		})
	}
}

func TestIntegrationOrphansReapedAsInit(t *testing.T) {
	// pwatch as the init of a PID namespace (a container's entrypoint):
	// the namespace's orphans come to it, and it reaps them while it runs,
	// or they stay zombies. pwatch run reaps them as their subreaper;
	// pwatch watch must too.
	//
	// The root forks a shell that forks the orphan and exits at once; the
	// orphan writes its PID (as the namespace numbers it) and waits for
	// its pipe, then exits 3; the root waits for stop, then exits 5. Each
	// script gets $0 the orphan's pipe, $1 the PID file, and the root $2
	// stop, $3 the middle's script, $4 the orphan's.
	orphan := `echo $$ > "$1"; read x < "$0"; exit 3`
	middle := `sh -c "$2" "$0" "$1" & exit 0`
	root := `sh -c "$3" "$0" "$1" "$4"; read x < "$2"; exit 5`
	for _, mode := range []struct {
		name, script, ready string
		code                int
	}{
		// The shell, PID 1, forks the root and becomes pwatch watch: the
		// root is pwatch's child too.
		{"watch", `sh -c "$1" "$2" "$3" "$4" "$5" "$6" & exec "$0" watch --events "$7" $!`, "pwatch: watching ", 0},
		{"run", `exec "$0" run --events "$7" -- sh -c "$1" "$2" "$3" "$4" "$5" "$6"`, "pwatch: containment: ", 5},
	} {
		for _, u := range containerUsers() {
			t.Run(mode.name+"-"+u.name, func(t *testing.T) {
				dir := sharedDir(t)
				orphanGo, pidFile, stop, events := filepath.Join(dir, "orphan"), filepath.Join(dir, "orphan.pid"), filepath.Join(dir, "stop"), filepath.Join(dir, "e.jsonl")
				fifo(t, orphanGo)
				fifo(t, stop)
				c := inContainer(t, u.uid, mode.script, binPath, root, orphanGo, pidFile, stop, middle, orphan, events)
				var stderr syncBuffer
				done, running := startContainer(t, c, &stderr)
				const early = "while the root waits for stop"
				waitFor(t, "pwatch to start", func() bool { running(early); return strings.Contains(stderr.String(), mode.ready) })
				// pwatch, as this namespace numbers it: unshare's child.
				inits := childPIDs(strconv.Itoa(c.Process.Pid))
				if len(inits) != 1 {
					t.Fatalf("unshare has children %v, want the namespace's init", inits)
				}
				pid1 := inits[0]
				// The orphan comes to pwatch once its parent has exited.
				var pid int
				waitFor(t, "the orphan to come to pwatch", func() bool {
					running(early)
					b, _ := os.ReadFile(pidFile)
					inner, err := strconv.Atoi(strings.TrimSpace(string(b)))
					if err != nil {
						return false
					}
					for _, child := range childPIDs(strconv.Itoa(pid1)) {
						if nsPID(child) == inner {
							pid = child
							return true
						}
					}
					return false
				})
				st, err := readProcStat(pid)
				if err != nil {
					t.Fatalf("the orphan %d: %v", pid, err)
				}
				release(t, orphanGo, done)
				// It exits; pwatch reaps it, while it runs (the root waits).
				waitFor(t, "pwatch to reap the orphan", func() bool {
					running(early)
					now, err := readProcStat(pid)
					return err != nil || now.startTicks != st.startTicks
				})
				release(t, stop, done)
				hung := time.AfterFunc(hangGuard, func() { c.Process.Kill() })
				err = <-done
				done <- err
				if !hung.Stop() {
					t.Fatalf("pwatch hung, killed after %v; stderr:\n%s", hangGuard, stderr.String())
				}
				if code := c.ProcessState.ExitCode(); code != mode.code {
					t.Fatalf("exit status %d, want %d; stderr:\n%s", code, mode.code, stderr.String())
				}
				// The root is pwatch's child: pwatch reaped it, and so knows
				// its status, though it polls.
				reaps := map[int]int{}
				for _, l := range readJSONL(t, readFile(t, events)) {
					if l.Type == "reap" && l.ExitCode != nil {
						reaps[*l.ExitCode]++
					}
				}
				if reaps[5] != 1 || !strings.Contains(stderr.String(), "exited with status 5") {
					t.Errorf("reap lines by exit code %v, want one for the root's 5; stderr:\n%s", reaps, stderr.String())
				}
			})
		}
	}
}

// nsPID is the PID of process pid in its own PID namespace (the last of
// NSpid in /proc/PID/status), or 0.
func nsPID(pid int) int {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/status")
	if err != nil {
		return 0
	}
	for line := range strings.Lines(string(b)) {
		if f := strings.Fields(line); len(f) > 1 && f[0] == "NSpid:" {
			n, _ := strconv.Atoi(f[len(f)-1])
			return n
		}
	}
	return 0
}
