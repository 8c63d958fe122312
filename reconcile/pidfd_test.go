package reconcile

import (
	"errors"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"testing"
	"time"

	"go.uber.org/goleak"
	"golang.org/x/sys/unix"
)

// hangGuard bounds a wait that the code under test must end; it only
// turns a hang into a failure and asserts nothing about how long it took.
const hangGuard = 30 * time.Second

func startSleep(t *testing.T) *exec.Cmd {
	t.Helper()
	c := exec.Command("sleep", "3600")
	if err := c.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = c.Process.Kill()
		_ = c.Wait()
	})
	return c
}

func TestPIDFDExit(t *testing.T) {
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	checkNoFDLeak(t)
	fs := realFS(t)
	c := startSleep(t)
	pid := c.Process.Pid
	p, err := OpenPIDFD(fs, pid, startTicksOf(t, fs, pid))
	if errors.Is(err, ErrPIDFDUnsupported) {
		t.Skipf("skipping: %v", err)
	}
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	if p.PID() != pid || p.HasExited() {
		t.Fatalf("PID %d, exited %v for a sleeping process", p.PID(), p.HasExited())
	}
	// The exit is seen while the process is an unreaped zombie, with no
	// poll of /proc.
	if err := p.Signal(unix.SIGKILL); err != nil {
		t.Fatal(err)
	}
	select {
	case <-p.Exited():
	case <-time.After(hangGuard):
		t.Fatal("Exited not closed after the process was killed")
	}
	if st, err := fs.ReadStat(pid); err != nil || st.State != 'Z' {
		t.Errorf("the process should be an unreaped zombie: %+v, %v", st, err)
	}
	_ = c.Wait()
	if err := p.Signal(unix.SIGTERM); !errors.Is(err, ErrGone) {
		t.Errorf("Signal to a reaped process = %v, want ErrGone", err)
	}
	if err := p.Close(); err != nil {
		t.Errorf("Close: %v", err)
	}
	if err := p.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
}

func TestPIDFDCloseBeforeExit(t *testing.T) {
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	checkNoFDLeak(t)
	fs := realFS(t)
	c := startSleep(t)
	for range 50 {
		p, err := OpenPIDFD(fs, c.Process.Pid, startTicksOf(t, fs, c.Process.Pid))
		if errors.Is(err, ErrPIDFDUnsupported) {
			t.Skipf("skipping: %v", err)
		}
		if err != nil {
			t.Fatal(err)
		}
		if err := p.Close(); err != nil {
			t.Fatal(err)
		}
		if p.HasExited() {
			t.Fatal("Close closed Exited")
		}
	}
}

func TestPIDFDZombieAndRefusals(t *testing.T) {
	checkNoFDLeak(t)
	fs := realFS(t)
	c := startSleep(t)
	pid := c.Process.Pid
	start := startTicksOf(t, fs, pid)
	// Another start time: refused as a reuse, not as gone.
	if _, err := OpenPIDFD(fs, pid, start+1); !errors.Is(err, ErrReused) || errors.Is(err, ErrGone) {
		t.Errorf("OpenPIDFD with another start time = %v, want ErrReused", err)
	}
	// A thread's ID is not a process: ErrThread, not gone.
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	if tid := unix.Gettid(); tid != os.Getpid() {
		if _, err := OpenPIDFD(fs, tid, 0); !errors.Is(err, ErrThread) || errors.Is(err, ErrGone) {
			t.Errorf("OpenPIDFD of a thread = %v, want ErrThread", err)
		}
	}
	if _, err := OpenPIDFD(fs, 1<<30, 0); !errors.Is(err, ErrGone) {
		t.Errorf("OpenPIDFD of a missing PID = %v, want ErrGone", err)
	}
	// A zombie opens, and has exited.
	_ = c.Process.Kill()
	waitZombie(t, pid)
	p, err := OpenPIDFD(fs, pid, start)
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	select {
	case <-p.Exited():
	case <-time.After(hangGuard):
		t.Fatal("a zombie's Exited is not closed")
	}
}

// TestIntegrationPIDFDReusedPID makes the kernel give a dead child's PID to
// a new process (through ns_last_pid) and checks that the old identity is
// refused.
func TestIntegrationPIDFDReusedPID(t *testing.T) {
	requireRoot(t, "writing /proc/sys/kernel/ns_last_pid")
	fs := realFS(t)
	for try := 0; try < 50; try++ {
		a := exec.Command("true")
		if err := a.Start(); err != nil {
			t.Fatal(err)
		}
		pid := a.Process.Pid
		waitZombie(t, pid)
		st, err := fs.ReadStat(pid)
		if err != nil {
			t.Fatal(err)
		}
		_ = a.Wait()
		// A reuse within the same clock tick would carry the same start
		// time, which no reader of /proc can tell apart: wait for the
		// boot clock to pass the next tick.
		for bootTicks() <= st.StartTicks+1 {
			runtime.Gosched()
		}
		if err := os.WriteFile("/proc/sys/kernel/ns_last_pid", []byte(strconv.Itoa(pid-1)), 0); err != nil {
			t.Skipf("skipping: cannot force a PID: %v", err)
		}
		b := exec.Command("sleep", "3600")
		if err := b.Start(); err != nil {
			t.Fatal(err)
		}
		got := b.Process.Pid
		if got != pid {
			// Another process on the host took the PID first.
			_ = b.Process.Kill()
			_ = b.Wait()
			continue
		}
		_, err = OpenPIDFD(fs, pid, st.StartTicks)
		_ = b.Process.Kill()
		_ = b.Wait()
		if !errors.Is(err, ErrReused) {
			t.Fatalf("OpenPIDFD(%d, start of the dead process) after reuse = %v, want ErrReused", pid, err)
		}
		return
	}
	t.Skip("skipping: other processes took the PID in 50 tries")
}

// requireRoot skips the test, saying why, unless it runs as root. Under CI
// (CI=true), which runs as root, it fails instead.
func requireRoot(t testing.TB, why string) {
	t.Helper()
	if os.Geteuid() != 0 {
		if os.Getenv("CI") == "true" {
			t.Fatalf("needs root for %s, and CI=true runs as root", why)
		}
		t.Skipf("skipping: needs root for %s (CI runs these tests as root)", why)
	}
}

// bootTicks is CLOCK_BOOTTIME in clock ticks, the clock of start times.
func bootTicks() uint64 {
	var ts unix.Timespec
	_ = unix.ClockGettime(unix.CLOCK_BOOTTIME, &ts)
	return uint64(ts.Nano()) / uint64(time.Second/UserHZ)
}
