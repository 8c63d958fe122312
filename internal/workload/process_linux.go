//go:build linux && (amd64 || arm64)

package workload

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"runtime/debug"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"
)

// Grace periods of the parent side.
const (
	// killGrace is how long after Spec.Timeout, or after Kill, the parent
	// waits for the root (which enforces the timeout itself, and on Kill
	// kills and reaps every descendant so that they are recorded) before
	// killing the group, which loses the records. It bounds a broken root
	// only: with both cores busy, a benchmark's storms beside and -race,
	// a root took more than 10 s to end a tree of 200 children.
	killGrace = 2 * time.Minute
	// sweepTime bounds the wait for stray group members after the root
	// has been reaped.
	sweepTime = 5 * time.Second
)

// Process is a started workload: its root held at the start gate until Go.
// Its methods are safe for concurrent use.
type Process struct {
	spec       Spec
	cmd        *exec.Cmd
	pid        int
	startTicks uint64
	resR       *os.File
	results    chan readResult

	killCh chan struct{} // closed by Kill
	reaped chan struct{} // closed when the root reaped Spec.NotifyReaped processes

	mu     sync.Mutex
	gate   *os.File // write end; nil once opened or closed
	killed bool

	waitOnce sync.Once
	res      *Result
	err      error
}

// readResult is what the result pipe gave.
type readResult struct {
	b   []byte
	err error
}

// Start validates spec and starts the workload root: the current
// executable, re-executed with EnvMode set, in its own process group. The
// root forks nothing until Go is called, so a watcher can attach to PID
// first. The executable's TestMain or main must call MaybeRun.
func Start(spec Spec) (*Process, error) {
	if err := spec.Validate(); err != nil {
		return nil, err
	}
	if needsRawFork(&spec) {
		if err := rawForkSafe(); err != nil {
			return nil, err
		}
	}
	for _, prog := range programs(&spec) {
		if _, err := os.Stat(prog); err != nil {
			return nil, fmt.Errorf("workload: the spec needs %s: %w", prog, err)
		}
	}
	js, err := json.Marshal(spec)
	if err != nil {
		return nil, fmt.Errorf("workload: encoding spec: %w", err)
	}
	exe, err := os.Executable()
	if err != nil {
		return nil, fmt.Errorf("workload: finding executable: %w", err)
	}
	gateR, gateW, err := os.Pipe()
	if err != nil {
		return nil, fmt.Errorf("workload: gate pipe: %w", err)
	}
	resR, resW, err := os.Pipe()
	if err != nil {
		gateR.Close()
		gateW.Close()
		return nil, fmt.Errorf("workload: result pipe: %w", err)
	}
	reapR, reapW, err := os.Pipe()
	if err != nil {
		gateR.Close()
		gateW.Close()
		resR.Close()
		resW.Close()
		return nil, fmt.Errorf("workload: notification pipe: %w", err)
	}
	env := slices.DeleteFunc(os.Environ(), func(kv string) bool {
		return strings.HasPrefix(kv, EnvMode+"=") || strings.HasPrefix(kv, envSpec+"=") || strings.HasPrefix(kv, envThreads+"=")
	})
	cmd := exec.Command(exe)
	cmd.Env = append(raceEnv(env), EnvMode+"="+modeRoot, envSpec+"="+string(js))
	cmd.ExtraFiles = []*os.File{gateR, resW, reapW} // fds 3, 4 and 5
	cmd.Stderr = os.Stderr                          // an *os.File: no copying goroutine
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	err = cmd.Start()
	gateR.Close()
	resW.Close()
	reapW.Close()
	if err != nil {
		gateW.Close()
		resR.Close()
		reapR.Close()
		return nil, fmt.Errorf("workload: starting root: %w", err)
	}
	p := &Process{
		spec:    spec,
		cmd:     cmd,
		pid:     cmd.Process.Pid,
		resR:    resR,
		gate:    gateW,
		results: make(chan readResult, 1),
		killCh:  make(chan struct{}),
		reaped:  make(chan struct{}),
	}
	go func() {
		b, err := io.ReadAll(resR)
		p.results <- readResult{b, err}
	}()
	go func() {
		// One byte when the count is reached; EOF when the root ends.
		var one [1]byte
		if n, _ := reapR.Read(one[:]); n == 1 {
			close(p.reaped)
		}
		reapR.Close()
	}()
	// The root is alive (it waits at the gate), so its stat is readable.
	if p.startTicks, err = ReadStartTicks(p.pid); err != nil {
		p.Kill()
		return nil, fmt.Errorf("workload: root %d: %w", p.pid, err)
	}
	return p, nil
}

// raceEnv returns env with the race detector's one-second sleep at exit
// turned off (GORACE atexit_sleep_ms=0); other binaries ignore GORACE.
// The threads child inherits it from the root.
func raceEnv(env []string) []string {
	for i, kv := range env {
		if v, ok := strings.CutPrefix(kv, "GORACE="); ok {
			env[i] = "GORACE=" + strings.TrimSpace(v+" atexit_sleep_ms=0")
			return env
		}
	}
	return append(env, "GORACE=atexit_sleep_ms=0")
}

// needsRawFork reports whether spec makes raw clone children.
func needsRawFork(spec *Spec) bool {
	return (spec.Storm != nil && spec.Storm.Mode == ForkOnly) || spec.Orphans != nil || spec.Chain != nil || spec.Exec != nil
}

// rawForkSafe returns ErrRaceCover if this binary was built with -race and
// -cover (whose mode is then always atomic). It cannot tell which packages
// are instrumented, so it also refuses when only other packages are.
func rawForkSafe() error {
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		return nil
	}
	var race, cover bool
	for _, s := range bi.Settings {
		switch s.Key {
		case "-race":
			race = s.Value == "true"
		case "-cover":
			cover = s.Value == "true"
		}
	}
	if race && cover {
		return ErrRaceCover
	}
	return nil
}

// programs lists the programs a spec execs besides this executable.
func programs(spec *Spec) []string {
	var progs []string
	if s := spec.Storm; s != nil && s.Mode == ForkExec {
		if s.Lifetime > 0 {
			progs = append(progs, "/bin/bash")
		} else {
			progs = append(progs, "/bin/sh")
		}
	}
	if spec.Exec != nil {
		progs = append(progs, "/bin/sleep")
	}
	return progs
}

// PID returns the workload root's PID, which is also its process group ID.
func (p *Process) PID() int { return p.pid }

// StartTicks returns the workload root's start time in clock ticks since
// boot; with PID it identifies the root.
func (p *Process) StartTicks() uint64 { return p.startTicks }

// Reaped is closed once the root has reaped Spec.NotifyReaped processes
// (never if that is 0, or the workload ends before).
func (p *Process) Reaped() <-chan struct{} { return p.reaped }

// Go opens the start gate: the root starts forking. Calling it again does
// nothing; after Kill it returns an error.
func (p *Process) Go() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.killed {
		return fmt.Errorf("workload: root %d was killed", p.pid)
	}
	if p.gate == nil {
		return nil
	}
	_, err := p.gate.Write([]byte{1})
	p.gate.Close()
	p.gate = nil
	if err != nil {
		return fmt.Errorf("workload: opening the gate of root %d: %w", p.pid, err)
	}
	return nil
}

// Wait opens the gate if Go was not called, waits until the workload has
// finished and returns its ground truth. Every process of the workload has
// been reaped when it returns. The error wraps ErrTimeout if the workload
// ran past Spec.Timeout, or ErrIncomplete if Result.Problems is not empty;
// the Result is then still returned with what was recorded. Later calls
// return the same values.
func (p *Process) Wait() (*Result, error) {
	p.waitOnce.Do(func() { p.res, p.err = p.wait() })
	return p.res, p.err
}

// Kill stops the workload and waits until every process of it is gone. A
// root still at the gate exits at once; a running root kills and reaps all
// its descendants itself (so they are recorded), and if it does not finish
// within a grace period the whole process group is killed. Kill returns an
// error only if processes of the group could not be made to go away; Wait
// then returns the Result with Killed set and an error wrapping ErrKilled.
func (p *Process) Kill() error {
	p.mu.Lock()
	if !p.killed {
		p.killed = true
		close(p.killCh)
		if p.gate != nil {
			p.gate.Close() // the root exits at the gate
			p.gate = nil
		} else {
			syscall.Kill(p.pid, syscall.SIGTERM) // not yet reaped: the PID is still the root's
		}
	}
	p.mu.Unlock()
	_, err := p.Wait()
	var stray *StrayError
	if errors.As(err, &stray) {
		return stray
	}
	return nil
}

// StrayError is returned when processes of a workload's group were still
// there after the root was reaped, and did not go away when killed.
type StrayError struct {
	PGID int // the workload's process group
}

// Error describes the stray group.
func (e *StrayError) Error() string {
	return fmt.Sprintf("workload: process group %d still had members after the root was reaped", e.PGID)
}

// wait does the work of Wait.
func (p *Process) wait() (*Result, error) {
	goErr := p.Go()
	hard := time.NewTimer(p.spec.timeout() + killGrace)
	defer hard.Stop()
	var rr readResult
	hardKilled := false
	killCh := p.killCh
	for got := false; !got; {
		select {
		case rr = <-p.results:
			got = true
		case <-killCh:
			killCh = nil
			hard.Reset(killGrace)
		case <-hard.C:
			// The root did not stop in time: kill everything.
			hardKilled = true
			syscall.Kill(-p.pid, syscall.SIGKILL)
			select {
			case rr = <-p.results:
			case <-time.After(sweepTime):
				p.resR.Close() // unblocks the reader
				rr = <-p.results
			}
			got = true
		}
	}
	p.resR.Close()
	waitErr := p.cmd.Wait()
	strayErr := sweep(p.pid)

	p.mu.Lock()
	killed := p.killed
	p.mu.Unlock()
	var res *Result
	if len(rr.b) > 0 {
		res = new(Result)
		if err := json.Unmarshal(rr.b, res); err != nil {
			return nil, errors.Join(fmt.Errorf("workload: root %d: decoding result: %w", p.pid, err), strayErr)
		}
	}
	switch {
	case hardKilled:
		return res, errors.Join(fmt.Errorf("%w: root %d did not stop within %v, killed its group", ErrTimeout, p.pid, killGrace), strayErr)
	case killed && (res == nil || res.Killed):
		return res, errors.Join(fmt.Errorf("%w: root %d", ErrKilled, p.pid), strayErr)
	case res == nil:
		return nil, errors.Join(fmt.Errorf("workload: root %d exited without a result: %v, %v, %v", p.pid, waitErr, rr.err, goErr), strayErr)
	case res.TimedOut:
		return res, errors.Join(fmt.Errorf("%w after %v: %s", ErrTimeout, p.spec.timeout(), strings.Join(res.Problems, "; ")), strayErr)
	case len(res.Problems) > 0:
		return res, errors.Join(fmt.Errorf("%w: %s", ErrIncomplete, summarize(res.Problems)), strayErr)
	case waitErr != nil:
		return res, errors.Join(fmt.Errorf("workload: root %d: %w", p.pid, waitErr), strayErr)
	}
	if strayErr != nil {
		return res, strayErr
	}
	return res, nil
}

// summarize joins the first few problems.
func summarize(problems []string) string {
	const max = 5
	if len(problems) <= max {
		return strings.Join(problems, "; ")
	}
	return strings.Join(problems[:max], "; ") + fmt.Sprintf("; and %d more", len(problems)-max)
}

// sweep makes sure no member of process group pgid is left, killing any
// that is. The group's root must have been reaped already.
func sweep(pgid int) error {
	deadline := time.Now().Add(sweepTime)
	for {
		if err := syscall.Kill(-pgid, 0); errors.Is(err, syscall.ESRCH) {
			return nil
		}
		if time.Now().After(deadline) {
			return &StrayError{PGID: pgid}
		}
		syscall.Kill(-pgid, syscall.SIGKILL)
		time.Sleep(10 * time.Millisecond)
	}
}
