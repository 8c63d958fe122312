package taskstats_test

import (
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"runtime"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/process-watchman/watchman/internal/workload"
	"github.com/process-watchman/watchman/taskstats"
	"golang.org/x/sys/unix"
)

// helperEnv selects the helper mode of a re-executed test binary.
const helperEnv = "TASKSTATS_TEST_HELPER"

// maybeRunHelper runs the helper the environment asks for and exits, or
// returns in the test process. Every helper first waits for its stdin to
// close: the parent reads /proc/PID/stat of the live child, then releases
// it.
func maybeRunHelper() {
	workload.MaybeRun()
	mode := os.Getenv(helperEnv)
	if mode == "" {
		return
	}
	if mode == "listen" {
		listenHelper()
	}
	_, _ = io.Copy(io.Discard, os.Stdin)
	switch mode {
	case "burn":
		burn(220 * time.Millisecond)
	case "touch":
		touch(100 << 20)
	case "write":
		if err := writeFile(os.Getenv("TASKSTATS_TEST_FILE"), 10<<20); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(2)
		}
	case "threads":
		threads(4, 100*time.Millisecond)
	case "exit":
	default:
		fmt.Fprintln(os.Stderr, "unknown helper", mode)
		os.Exit(2)
	}
	os.Exit(3)
}

// threadCPU returns the CPU time of the calling thread.
func threadCPU() time.Duration {
	var ts unix.Timespec
	if err := unix.ClockGettime(unix.CLOCK_THREAD_CPUTIME_ID, &ts); err != nil {
		return 0
	}
	return time.Duration(ts.Nano())
}

var sink atomic.Uint64

// spin burns the calling thread's CPU for d.
func spin(d time.Duration) {
	start := threadCPU()
	x := uint64(1)
	for threadCPU()-start < d {
		for i := range 100000 {
			x = x*6364136223846793005 + uint64(i)
		}
	}
	sink.Add(x)
}

// burn spins on a locked thread until the process has used d of user CPU.
func burn(d time.Duration) {
	runtime.LockOSThread()
	for {
		var ru syscall.Rusage
		_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
		if time.Duration(ru.Utime.Nano()) >= d {
			return
		}
		spin(10 * time.Millisecond)
	}
}

// touch allocates n bytes and writes every page.
func touch(n int) {
	b := make([]byte, n)
	for i := 0; i < n; i += 4096 {
		b[i] = 1
	}
	runtime.KeepAlive(b)
}

// writeFile writes n bytes to name and fsyncs them.
func writeFile(name string, n int) error {
	f, err := os.Create(name)
	if err != nil {
		return err
	}
	buf := make([]byte, 1<<20)
	for i := range buf {
		buf[i] = byte(i)
	}
	for done := 0; done < n; done += len(buf) {
		if _, err := f.Write(buf); err != nil {
			return err
		}
	}
	if err := f.Sync(); err != nil {
		return err
	}
	return f.Close()
}

// threads runs n locked OS threads that each burn d of CPU and then exit
// (a goroutine that ends locked to its thread takes the thread with it).
func threads(n int, d time.Duration) {
	var wg sync.WaitGroup
	for range n {
		wg.Go(func() {
			runtime.LockOSThread() // never unlocked: the thread exits
			spin(d)
		})
	}
	wg.Wait()
}

// helperChild is a started helper, held before its work until release.
type helperChild struct {
	cmd   *exec.Cmd
	stdin io.WriteCloser
	// StartTicks is field 22 of the child's /proc/PID/stat, read while
	// it was held.
	StartTicks uint64
}

// startHelper re-executes the test binary in helper mode and reads its
// start time while it waits on its stdin.
func startHelper(t *testing.T, mode string, env ...string) *helperChild {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(append(os.Environ(), helperEnv+"="+mode), env...)
	cmd.Stderr = os.Stderr
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	h := &helperChild{cmd: cmd, stdin: stdin}
	t.Cleanup(func() {
		_ = stdin.Close()
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
	})
	ticks, err := workload.ReadStartTicks(cmd.Process.Pid)
	if err != nil {
		t.Fatalf("reading the helper's start time: %v", err)
	}
	h.StartTicks = ticks
	return h
}

// PID returns the child's process id.
func (h *helperChild) PID() int32 { return int32(h.cmd.Process.Pid) }

// Finish releases the child and waits for it; it must exit with status 3.
func (h *helperChild) Finish(t *testing.T) {
	t.Helper()
	_ = h.stdin.Close()
	err := h.cmd.Wait()
	if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() != 3 {
		t.Fatalf("helper %v: %v, want exit status 3", h.cmd.Env[len(h.cmd.Env)-1], err)
	}
}

// lockThread locks the calling goroutine to its thread for good, so that
// threadCPU measures it.
func lockThread() { runtime.LockOSThread() }

// Exit codes of the "listen" helper.
const (
	listenOK           = 0
	listenPermission   = 10 // ErrPermission (which also matches ErrNotSupported)
	listenNotSupported = 11 // ErrNotSupported only
	listenOther        = 12
)

// listenHelper tries Listen and exits with a code saying how it failed.
func listenHelper() {
	l, err := taskstats.Listen(nil)
	switch {
	case err == nil:
		_ = l.Close()
		os.Exit(listenOK)
	case errors.Is(err, taskstats.ErrPermission):
		fmt.Fprintln(os.Stderr, err)
		os.Exit(listenPermission)
	case errors.Is(err, taskstats.ErrNotSupported):
		fmt.Fprintln(os.Stderr, err)
		os.Exit(listenNotSupported)
	}
	fmt.Fprintln(os.Stderr, err)
	os.Exit(listenOther)
}
