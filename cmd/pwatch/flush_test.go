package main

import (
	"bytes"
	"os"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

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
// stops pwatch is written by finish; live stdout output is written at the
// end of each batch of events.
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
	s.events = newJSONLWriter(&file)
	s.stdJSON = newJSONLWriter(&stdout)
	evc := make(chan watchman.Event, 4)
	s.evc = evc
	at := time.Now()
	fork := func(pid int) watchman.Event {
		return watchman.Event{Type: watchman.EventFork, Time: at, Process: watchman.Identity{PID: pid, StartTicks: 1}, PPID: 1, Name: "x", Depth: 1}
	}

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
