package main

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"os"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/process-watchman/watchman"
)

// writeLog records each Write it is given, whole.
type writeLog struct {
	mu     sync.Mutex
	writes []string
}

func (w *writeLog) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.writes = append(w.writes, string(p))
	return len(p), nil
}

func (w *writeLog) get() []string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return append([]string(nil), w.writes...)
}

// TestOutputBufferedAndFlushed: --events lines are buffered, not written
// one by one; the flush timer, armed by the first buffered line, writes
// them out (flushEvery, at most 100 ms); what is buffered when a signal
// stops pwatch is written by finish; stdout output, on a terminal, is
// written at the end of each batch of events.
func TestOutputBufferedAndFlushed(t *testing.T) {
	if flushEvery <= 0 || flushEvery > 100*time.Millisecond {
		t.Fatalf("flushEvery is %v: lines would stay buffered longer than 100 ms", flushEvery)
	}
	w, err := watchman.Attach(os.Getpid(), &watchman.Config{Strategy: watchman.StrategyPoll, ReconcileInterval: -1})
	if err != nil {
		t.Fatal(err)
	}
	var file, stdout writeLog
	s := newSession(&app{stdout: &stdout, stderr: &bytes.Buffer{}}, &outputFlags{pollInterval: time.Hour}, w, newRecorder(w.Root()))
	if s.liveStdout {
		t.Fatal("a writer that is no file taken for a terminal")
	}
	s.liveStdout = true // as on a terminal
	s.events = newJSONLWriter(&file)
	s.stdJSON = newJSONLWriter(&stdout)
	evc := make(chan watchman.Event, 8)
	s.evc = evc
	fork := forkAt(time.Now())

	// One event: on stdout at once (end of its batch), in the file only
	// when the flush timer fires.
	evc <- fork(11)
	stop, _ := s.pump(pumpOpts{until: func() bool { return s.flushArmed }})
	if stop != stopDone || len(file.get()) != 0 {
		t.Fatalf("the line was written before the flush timer: %q", file.get())
	}
	if got := stdout.get(); len(got) != 1 || !strings.Contains(got[0], `"pid":11`) {
		t.Fatalf("stdout after the batch: %q", got)
	}
	s.pump(pumpOpts{until: func() bool { return len(file.get()) > 0 }})
	if got := file.get(); len(got) != 1 || !strings.Contains(got[0], `"pid":11`) || s.flushArmed {
		t.Fatalf("after the flush timer: %q (armed %v)", got, s.flushArmed)
	}

	// Two more events, then a signal: they are written at the end, in one
	// write (or by the timer, if it came first).
	evc <- fork(12)
	evc <- fork(13)
	s.pump(pumpOpts{until: func() bool { return s.rec.procs[watchman.Identity{PID: 13, StartTicks: 1}] != nil }})
	sigs := make(chan os.Signal, 1)
	sigs <- syscall.SIGTERM
	if stop, sig := s.pump(pumpOpts{sigs: sigs}); stop != stopSignal || sig != syscall.SIGTERM {
		t.Fatalf("pump returned %v %v on a signal", stop, sig)
	}
	s.finish(time.Now())
	all := strings.Join(file.get(), "")
	if strings.Count(all, "\n") != 3 || !strings.Contains(all, `"pid":12`) || !strings.HasSuffix(all, "}\n") {
		t.Errorf("the file after a signal and finish:\n%s", all)
	}
	if s.writeErr != nil {
		t.Errorf("write error: %v", s.writeErr)
	}
}

// TestStdoutNotTerminalFlushedByTimer: when stdout is no terminal, its
// lines are not written at the end of each batch but with the files', by
// the flush timer, in one write for many events, and by finish.
func TestStdoutNotTerminalFlushedByTimer(t *testing.T) {
	w, err := watchman.Attach(os.Getpid(), &watchman.Config{Strategy: watchman.StrategyPoll, ReconcileInterval: -1})
	if err != nil {
		t.Fatal(err)
	}
	var stdout writeLog
	s := newSession(&app{stdout: &stdout, stderr: &bytes.Buffer{}}, &outputFlags{pollInterval: time.Hour}, w, newRecorder(w.Root()))
	s.human = bufio.NewWriter(&stdout)
	evc := make(chan watchman.Event, 8)
	s.evc = evc
	fork := forkAt(time.Now())
	evc <- fork(21)
	if stop, _ := s.pump(pumpOpts{until: func() bool { return s.flushArmed }}); stop != stopDone {
		t.Fatalf("pump stopped with %v", stop)
	}
	if got := stdout.get(); len(got) != 0 {
		t.Fatalf("stdout (no terminal) written at the end of the batch: %q", got)
	}
	evc <- fork(22)
	evc <- fork(23)
	s.pump(pumpOpts{until: func() bool { return len(stdout.get()) > 0 }})
	got := stdout.get()
	if len(got) != 1 || strings.Count(got[0], "\n") != 3 {
		t.Fatalf("the timer's flush: %q, want one write of 3 lines", got)
	}
	evc <- fork(24)
	s.pump(pumpOpts{until: func() bool { return s.flushArmed }})
	s.finish(time.Now())
	if got := stdout.get(); len(got) != 2 || !strings.Contains(got[1], "24") {
		t.Fatalf("after finish: %q", got)
	}
}

// TestIsTerminal: a pseudo-terminal is one; a pipe, /dev/null and a
// writer that is no file are not.
func TestIsTerminal(t *testing.T) {
	ptmx, err := os.OpenFile("/dev/ptmx", os.O_RDWR|syscall.O_NOCTTY, 0)
	if err != nil {
		t.Skipf("no pseudo-terminals here (/dev/ptmx: %v)", err)
	}
	defer ptmx.Close()
	if err := unix.IoctlSetPointerInt(int(ptmx.Fd()), unix.TIOCSPTLCK, 0); err != nil {
		t.Fatal(err)
	}
	n, err := unix.IoctlGetInt(int(ptmx.Fd()), unix.TIOCGPTN)
	if err != nil {
		t.Fatal(err)
	}
	pts, err := os.OpenFile(fmt.Sprintf("/dev/pts/%d", n), os.O_RDWR|syscall.O_NOCTTY, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer pts.Close()
	if !isTerminal(pts) {
		t.Error("a pseudo-terminal not taken for a terminal")
	}
	pr, pw, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer pr.Close()
	defer pw.Close()
	null, err := os.OpenFile(os.DevNull, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer null.Close()
	for name, w := range map[string]io.Writer{"pipe": pw, "/dev/null": null, "buffer": &bytes.Buffer{}} {
		if isTerminal(w) {
			t.Errorf("%s taken for a terminal", name)
		}
	}
}

// forkAt returns a maker of fork events at at, of a child of PID 1.
func forkAt(at time.Time) func(pid int) watchman.Event {
	return func(pid int) watchman.Event {
		return watchman.Event{Type: watchman.EventFork, Time: at, Process: watchman.Identity{PID: pid, StartTicks: 1}, PPID: 1, Name: "x", Depth: 1}
	}
}
