package watchman

import (
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/process-watchman/watchman/internal/fakeproc"
)

// TestSlowCmdlineDoesNotBlockTheHub: a command line whose read never
// returns (here a FIFO nobody writes, as /proc/PID/cmdline of a process
// whose memory map lock is held) is left unread after a bounded wait: the
// exec is applied with its name, later events go on, and Close returns.
func TestSlowCmdlineDoesNotBlockTheHub(t *testing.T) {
	fw := newFakeWorld(t)
	w := fw.attach(Config{CaptureCmdline: true})
	closed := false
	defer func() {
		if !closed {
			w.Close()
		}
	}()
	waitFor(t, "the initial member", hasPIDs(w, 101))
	t102 := ticks()
	fw.host.Set(fakeproc.Proc{PID: 102, PPID: 101, Comm: "stuck", StartTicks: t102, Cmdline: []string{"x"}})
	fw.emit(forkEv(101, 102))
	waitFor(t, "the fork", hasPIDs(w, 101, 102))
	fifo := filepath.Join(fw.host.Root(), "102", "cmdline")
	if err := os.Remove(fifo); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Mkfifo(fifo, 0o600); err != nil {
		t.Fatal(err)
	}
	// Let the stuck read end once the test is over (goleak checks).
	defer func() {
		f, err := os.OpenFile(fifo, os.O_WRONLY, 0)
		if err == nil {
			f.Close()
		}
	}()
	sub := w.Subscribe(0)
	fw.emit(execEv(102))
	t103 := ticks()
	fw.host.Set(fakeproc.Proc{PID: 103, PPID: 101, Comm: "next", StartTicks: t103, Cmdline: []string{"next"}})
	fw.emit(forkEv(101, 103))
	waitFor(t, "the fork after the stuck exec", hasPIDs(w, 101, 102, 103))
	ev := <-sub.C
	if ev.Type != EventExec || ev.Name != "stuck" || ev.Cmdline != nil {
		t.Errorf("first event %+v: want the exec, named, without a command line", ev)
	}
	if n := fw.hub.Stats().SlowReads; n != 1 {
		t.Errorf("HubStats.SlowReads = %d, want 1", n)
	}
	done := make(chan struct{})
	go func() { w.Close(); close(done) }()
	select {
	case <-done:
		closed = true
	case <-time.After(10 * time.Second):
		t.Fatal("Close blocked behind the stuck command line read")
	}
}
