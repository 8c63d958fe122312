//go:build linux && (amd64 || arm64)

package workload

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// File descriptors in workload processes.
const (
	gateFD       = 3 // root: read end of the start gate
	resultFD     = 4 // root: write end of the result pipe
	reapedFD     = 5 // root: write end of the Spec.NotifyReaped pipe
	threadsMsgFD = 3 // threads child: write end of the message pipe
)

// Kind codes on the message pipe.
const (
	kindCodeStorm = iota + 1
	kindCodeWrapper
	kindCodeOrphan
	kindCodeChain
	kindCodeThreads
	kindCodeExec
)

// kindName maps a kind code to its Kind constant.
func kindName(code uint32) string {
	switch code {
	case kindCodeStorm:
		return KindStorm
	case kindCodeWrapper:
		return KindWrapper
	case kindCodeOrphan:
		return KindOrphan
	case kindCodeChain:
		return KindChain
	case kindCodeThreads:
		return KindThreads
	case kindCodeExec:
		return KindExec
	}
	return "unknown(" + strconv.Itoa(int(code)) + ")"
}

// marshal encodes m as the raw children write it.
func (m *wireMsg) marshal() []byte {
	b := make([]byte, wireMsgSize)
	ne := binary.NativeEndian
	ne.PutUint32(b[0:], m.Type)
	ne.PutUint32(b[4:], m.Kind)
	ne.PutUint32(b[8:], uint32(m.PID))
	ne.PutUint32(b[12:], uint32(m.PPID))
	ne.PutUint64(b[16:], uint64(m.Value))
	ne.PutUint32(b[24:], uint32(m.Round))
	copy(b[32:], m.Comm[:])
	return b
}

// unmarshalWire decodes one message.
func unmarshalWire(b []byte) wireMsg {
	ne := binary.NativeEndian
	m := wireMsg{
		Type:  ne.Uint32(b[0:]),
		Kind:  ne.Uint32(b[4:]),
		PID:   int32(ne.Uint32(b[8:])),
		PPID:  int32(ne.Uint32(b[12:])),
		Value: int64(ne.Uint64(b[16:])),
		Round: int32(ne.Uint32(b[24:])),
	}
	copy(m.Comm[:], b[32:])
	return m
}

// runRoot is the workload root. It returns the process exit code.
func runRoot() int {
	gate := os.NewFile(gateFD, "gate")
	out := os.NewFile(resultFD, "result")
	if gate == nil || out == nil {
		fmt.Fprintln(os.Stderr, "workload root: gate or result descriptor missing")
		return 2
	}
	syscall.CloseOnExec(gateFD)
	syscall.CloseOnExec(resultFD)
	syscall.CloseOnExec(reapedFD)
	defaultForChildren()
	res, ok := rootMain(gate, os.NewFile(reapedFD, "reaped"))
	if !ok {
		return 3 // the gate was closed without opening: nothing to report
	}
	b, err := json.Marshal(res)
	if err == nil {
		_, err = out.Write(b)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "workload root: writing result:", err)
		return 4
	}
	return 0
}

// defaultForChildren makes the Storm signals that the root was started
// with ignored (nohup ignores SIGHUP) reach its exec'd children at their
// default action. An ignored signal stays ignored across exec, so the
// shell of a ForkExec child would survive its own `kill -s HUP $$` and
// exit 0 (POSIX shells cannot reset a signal ignored on entry); seen in a
// hog run started with nohup. The root catches such a signal instead, into
// a channel nobody reads: it still takes no action on it, and a caught
// signal is reset to its default action at exec. (Raw-forked children
// reset their signal themselves before sending it.)
func defaultForChildren() {
	drop := make(chan os.Signal, 1)
	for _, sig := range stormSignals {
		if signal.Ignored(sig) { // never SIGKILL, which cannot be ignored
			signal.Notify(drop, sig)
		}
	}
}

// rootMain prepares the root, waits at the gate and runs the workload. It
// returns ok false if the gate closed without opening.
func rootMain(gate, reaped *os.File) (*Result, bool) {
	res := &Result{RootPID: os.Getpid()}
	fail := func(format string, args ...any) (*Result, bool) {
		res.Problems = append(res.Problems, fmt.Sprintf(format, args...))
		return res, true
	}
	var spec Spec
	if err := json.Unmarshal([]byte(os.Getenv(envSpec)), &spec); err != nil {
		return fail("decoding spec: %v", err)
	}
	if err := spec.Validate(); err != nil {
		return fail("%v", err)
	}
	if err := unix.Prctl(unix.PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0); err != nil {
		return fail("prctl(PR_SET_CHILD_SUBREAPER): %v", err)
	}
	st, err := ReadStat(res.RootPID)
	if err != nil {
		return fail("reading own stat: %v", err)
	}
	res.RootStartTicks, res.RootComm = st.StartTicks, st.Comm
	r, err := newRoot(spec, res)
	if err != nil {
		return fail("%v", err)
	}
	defer r.close()
	if spec.NotifyReaped > 0 && reaped != nil {
		r.reapedW, r.notifyAt = reaped, spec.NotifyReaped
	} else if reaped != nil {
		reaped.Close()
	}

	var one [1]byte
	if n, _ := gate.Read(one[:]); n != 1 {
		return nil, false
	}
	gate.Close()
	r.run()
	return res, true
}

// lineageEntry says who forked a process.
type lineageEntry struct {
	ppid  int
	kind  uint32
	index int
	round int
}

// root is the state of the workload root.
type root struct {
	spec Spec
	res  *Result
	exe  string

	msgR, msgW     *os.File // message pipe; raw children write msgW
	neverR, neverW *os.File // nothing is ever written: stdin of bash children
	devNull        *os.File

	kick chan struct{} // a driver forked; wakes the reaper

	mu       sync.Mutex
	lineage  map[int][]lineageEntry // by PID, in fork order
	notes    map[int][]wireMsg      // threads and comm messages by PID
	problems []string

	statPPID []int // parent at reaping time, parallel to res.Records

	reapedW  *os.File // told once notifyAt processes are reaped (Spec.NotifyReaped)
	notifyAt int
	finished atomic.Bool // the run is over; stops the timeout killer
}

// newRoot opens the pipes the workload needs.
func newRoot(spec Spec, res *Result) (*root, error) {
	r := &root{
		spec:    spec,
		res:     res,
		kick:    make(chan struct{}, 1),
		lineage: make(map[int][]lineageEntry),
		notes:   make(map[int][]wireMsg),
	}
	var err error
	if r.exe, err = os.Executable(); err != nil {
		return nil, fmt.Errorf("finding executable: %w", err)
	}
	// Blocking mode: raw children must never lose a message to EAGAIN.
	if r.msgR, r.msgW, err = blockingPipe("messages"); err != nil {
		return nil, fmt.Errorf("message pipe: %w", err)
	}
	if r.neverR, r.neverW, err = blockingPipe("never"); err != nil {
		r.close()
		return nil, fmt.Errorf("stdin pipe: %w", err)
	}
	if r.devNull, err = os.Open(os.DevNull); err != nil {
		r.close()
		return nil, fmt.Errorf("opening %s: %w", os.DevNull, err)
	}
	return r, nil
}

// blockingPipe returns a close-on-exec pipe in blocking mode (os.Pipe's
// ends are non-blocking, and the mode is shared with every process that
// inherits them).
func blockingPipe(name string) (r, w *os.File, err error) {
	var fds [2]int
	if err := syscall.Pipe2(fds[:], syscall.O_CLOEXEC); err != nil {
		return nil, nil, os.NewSyscallError("pipe2", err)
	}
	return os.NewFile(uintptr(fds[0]), name), os.NewFile(uintptr(fds[1]), name), nil
}

// close closes every file newRoot opened.
func (r *root) close() {
	for _, f := range []*os.File{r.msgR, r.msgW, r.neverR, r.neverW, r.devNull, r.reapedW} {
		if f != nil {
			f.Close()
		}
	}
}

// problem records something that went wrong.
func (r *root) problem(format string, args ...any) {
	r.mu.Lock()
	r.problems = append(r.problems, fmt.Sprintf(format, args...))
	r.mu.Unlock()
}

// forked records a child the root forked itself and wakes the reaper.
func (r *root) forked(pid int, kind uint32, index, round int) {
	r.mu.Lock()
	r.lineage[pid] = append(r.lineage[pid], lineageEntry{ppid: r.res.RootPID, kind: kind, index: index, round: round})
	r.mu.Unlock()
	select {
	case r.kick <- struct{}{}:
	default:
	}
}

// readMessages reads the message pipe until every writer has closed it.
func (r *root) readMessages() {
	buf := make([]byte, wireMsgSize)
	for {
		if _, err := io.ReadFull(r.msgR, buf); err != nil {
			if !errors.Is(err, io.EOF) {
				r.problem("reading message pipe: %v", err)
			}
			return
		}
		m := unmarshalWire(buf)
		switch m.Type {
		case msgLineage:
			r.mu.Lock()
			r.lineage[int(m.PID)] = append(r.lineage[int(m.PID)],
				lineageEntry{ppid: int(m.PPID), kind: m.Kind, index: int(m.Value), round: int(m.Round)})
			r.mu.Unlock()
		case msgThreads, msgComm:
			r.mu.Lock()
			r.notes[int(m.PID)] = append(r.notes[int(m.PID)], m)
			r.mu.Unlock()
		case msgError:
			stage := map[uint32]string{stageFork: "fork", stageExec: "exec", stageComm: "reading comm"}[m.Kind]
			r.problem("pid %d: %s failed: %v", m.PID, stage, syscall.Errno(m.Value))
		default:
			r.problem("unknown message type %d from pid %d", m.Type, m.PID)
		}
	}
}

// run runs the rounds, reaps everything and fills in the result.
func (r *root) run() {
	timeout := r.spec.timeout()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()

	// stop ends the workload early: drivers stop forking, and every other
	// process in the group is killed until the reaper has collected them
	// all. On timeout, or on SIGTERM (Process.Kill).
	var stopOnce sync.Once
	killerDone := make(chan struct{})
	stop := func(flag *bool) {
		stopOnce.Do(func() {
			*flag = true
			cancel()
			go func() {
				defer close(killerDone)
				for !r.finished.Load() {
					r.killOthers()
					time.Sleep(20 * time.Millisecond)
				}
			}()
		})
	}
	timer := time.AfterFunc(timeout, func() { stop(&r.res.TimedOut) })
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGTERM)
	sigDone := make(chan struct{})
	sigExited := make(chan struct{})
	go func() {
		defer close(sigExited)
		select {
		case <-sigs:
			stop(&r.res.Killed)
		case <-sigDone:
		}
	}()
	readerDone := make(chan struct{})
	go func() {
		defer close(readerDone)
		r.readMessages()
	}()

	r.res.Start = time.Now()
	deadline := r.res.Start.Add(r.spec.Duration)
	for round := 0; round < r.spec.maxRounds() && ctx.Err() == nil; round++ {
		if round > 0 && !time.Now().Before(deadline) {
			break
		}
		r.res.Rounds++
		done := make(chan struct{})
		var wg sync.WaitGroup
		for _, drive := range r.drivers() {
			wg.Go(func() { drive(ctx, round) })
		}
		go func() {
			wg.Wait()
			r.res.ForksDone = time.Now()
			close(done)
		}()
		r.reapRound(done)
	}
	r.res.End = time.Now()
	r.finished.Store(true)
	timer.Stop()
	signal.Stop(sigs)
	close(sigDone)
	<-sigExited
	stopOnce.Do(func() { close(killerDone) }) // no-op if stop ran
	<-killerDone
	if r.res.TimedOut {
		r.problem("timed out after %v: killed the workload", timeout)
	}
	// Every descendant is reaped, so the root holds the last write end.
	r.msgW.Close()
	<-readerDone
	r.assemble()
}

// drivers returns one function per shape in the Spec; each forks that
// shape's processes for one round.
func (r *root) drivers() []func(ctx context.Context, round int) {
	var ds []func(context.Context, int)
	if r.spec.Storm != nil {
		ds = append(ds, r.storm)
	}
	if r.spec.Orphans != nil {
		ds = append(ds, r.orphans)
	}
	if r.spec.Chain != nil {
		ds = append(ds, r.chain)
	}
	if r.spec.Threads != nil {
		ds = append(ds, r.threads)
	}
	if r.spec.Exec != nil {
		ds = append(ds, r.exec)
	}
	return ds
}

// sleepCtx sleeps for d or until ctx is done; it reports whether ctx is
// still live.
func sleepCtx(ctx context.Context, d time.Duration) bool {
	if d <= 0 {
		return ctx.Err() == nil
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}

// storm forks the Storm children of one round.
func (r *root) storm(ctx context.Context, round int) {
	s := r.spec.Storm
	p := newPlan(int(r.msgW.Fd()))
	p.op = opLeaf
	setSleep(&p.sleep, int64(s.Lifetime))
	start := time.Now()
	for i := 0; i < s.Count; i++ {
		if s.Rate > 0 && !sleepCtx(ctx, time.Until(start.Add(time.Duration(float64(i)/s.Rate*float64(time.Second))))) {
			return
		}
		if ctx.Err() != nil {
			return
		}
		sig := syscall.Signal(0)
		if s.SignalEvery > 0 && (i+1)%s.SignalEvery == 0 {
			sig = s.signal()
		}
		var pid int
		var err error
		if s.Mode == ForkExec {
			pid, err = r.forkExecLeaf(i%256, sig, s.Lifetime)
		} else {
			p.code = uintptr(i % 256)
			p.setSignal(sig)
			pid, err = rawFork(p)
		}
		if err != nil {
			r.problem("storm round %d child %d: %v", round, i, err)
			return
		}
		r.forked(pid, kindCodeStorm, i, round)
	}
}

// forkExecLeaf starts one ForkExec storm child: a shell running only
// builtins, so it forks nothing itself.
func (r *root) forkExecLeaf(code int, sig syscall.Signal, life time.Duration) (int, error) {
	end := "exit " + strconv.Itoa(code)
	if sig != 0 {
		end = "kill -s " + strings.TrimPrefix(unix.SignalName(sig), "SIG") + " $$"
	}
	path, script := "/bin/sh", end
	if life > 0 {
		// bash's read -t times out on a pipe nobody writes: a sleep
		// without a fork.
		path = "/bin/bash"
		script = "read -t " + strconv.FormatFloat(life.Seconds(), 'f', -1, 64) + " -u 0 _; " + end
	}
	return syscall.ForkExec(path, []string{path[strings.LastIndexByte(path, '/')+1:], "-c", script}, &syscall.ProcAttr{
		Env:   []string{"PATH=/usr/bin:/bin"},
		Files: []uintptr{r.neverR.Fd(), r.devNull.Fd(), 2},
	})
}

// orphans forks the Orphans wrappers of one round.
func (r *root) orphans(ctx context.Context, round int) {
	o := r.spec.Orphans
	p := newPlan(int(r.msgW.Fd()))
	p.op = opWrapper
	p.kind = kindCodeOrphan
	p.round = int32(round)
	p.code = uintptr(o.Code)
	setSleep(&p.sleep, int64(o.Lifetime))
	for i := 0; i < o.Count && ctx.Err() == nil; i++ {
		p.index = int64(i)
		pid, err := rawFork(p)
		if err != nil {
			r.problem("orphans round %d wrapper %d: %v", round, i, err)
			return
		}
		r.forked(pid, kindCodeWrapper, i, round)
	}
}

// chain forks link 1 of the Chain of one round.
func (r *root) chain(ctx context.Context, round int) {
	c := r.spec.Chain
	p := newPlan(int(r.msgW.Fd()))
	p.op = opChain
	p.kind = kindCodeChain
	p.round = int32(round)
	p.depth = uintptr(c.Depth - 1)
	p.index = 1
	p.code = uintptr(c.Code)
	setSleep(&p.sleep, int64(c.Lifetime))
	if ctx.Err() != nil {
		return
	}
	pid, err := rawFork(p)
	if err != nil {
		r.problem("chain round %d: %v", round, err)
		return
	}
	r.forked(pid, kindCodeChain, 1, round)
}

// threads starts the Threads child of one round: this executable again, in
// threads mode.
func (r *root) threads(ctx context.Context, round int) {
	t := r.spec.Threads
	if ctx.Err() != nil {
		return
	}
	env := slices.DeleteFunc(os.Environ(), func(kv string) bool {
		return strings.HasPrefix(kv, EnvMode+"=") || strings.HasPrefix(kv, envSpec+"=") || strings.HasPrefix(kv, envThreads+"=")
	})
	env = append(env, EnvMode+"="+modeThreads,
		fmt.Sprintf("%s=%d:%d:%d", envThreads, t.Threads, int64(t.Lifetime), t.Code))
	pid, err := syscall.ForkExec(r.exe, []string{r.exe}, &syscall.ProcAttr{
		Env:   env,
		Files: []uintptr{r.devNull.Fd(), r.devNull.Fd(), 2, r.msgW.Fd()},
	})
	if err != nil {
		r.problem("threads round %d: %v", round, err)
		return
	}
	r.forked(pid, kindCodeThreads, 0, round)
}

// exec forks the Exec children of one round.
func (r *root) exec(ctx context.Context, round int) {
	e := r.spec.Exec
	p := newPlan(int(r.msgW.Fd()))
	p.op = opExec
	setSleep(&p.before, int64(e.Before))
	p.setExec("/bin/sleep", []string{"sleep", strconv.FormatFloat(e.Lifetime.Seconds(), 'f', -1, 64)}, nil)
	for i := 0; i < e.Count && ctx.Err() == nil; i++ {
		pid, err := rawFork(p)
		if err != nil {
			r.problem("exec round %d child %d: %v", round, i, err)
			return
		}
		r.forked(pid, kindCodeExec, i, round)
	}
}

// siginfoChild is the start of siginfo_t for SIGCHLD on 64-bit Linux.
type siginfoChild struct {
	signo, errno, code, _ int32
	pid                   int32
	uid                   uint32
	status                int32
	_                     [100]byte
}

// waitAny waits until some child has terminated and returns its PID,
// leaving it a zombie (WNOWAIT).
func waitAny() (int, error) {
	var info siginfoChild
	for {
		_, _, e := syscall.Syscall6(syscall.SYS_WAITID, unix.P_ALL, 0, uintptr(unsafe.Pointer(&info)),
			syscall.WEXITED|syscall.WNOWAIT, 0, 0)
		switch e {
		case 0:
			return int(info.pid), nil
		case syscall.EINTR:
			continue
		}
		return 0, e
	}
}

// reapRound records and reaps children until the drivers are done (done
// closed) and no child is left.
func (r *root) reapRound(done <-chan struct{}) {
	driversDone := false
	for {
		pid, err := waitAny()
		if err == nil {
			r.reap(pid)
			continue
		}
		if !errors.Is(err, syscall.ECHILD) {
			r.problem("waitid: %v", err)
			<-done
			return
		}
		if driversDone {
			return // no child, and no driver can fork another
		}
		select {
		case <-done:
			driversDone = true
		case <-r.kick:
		}
	}
}

// reap records the terminated child pid from its /proc stat, then reaps it.
func (r *root) reap(pid int) {
	st, statErr := ReadStat(pid)
	var ws syscall.WaitStatus
	for {
		_, err := syscall.Wait4(pid, &ws, 0, nil)
		if err == syscall.EINTR {
			continue
		}
		if err != nil {
			r.problem("wait4(%d): %v", pid, err)
			return
		}
		break
	}
	if statErr != nil {
		r.problem("pid %d: reading stat of zombie: %v", pid, statErr)
	}
	rec := Record{PID: pid, StartTicks: st.StartTicks, ExitStatus: int(ws), Code: -1, Comm: st.Comm}
	if ws.Exited() {
		rec.Code = ws.ExitStatus()
	}
	if ws.Signaled() {
		rec.Signal = ws.Signal()
	}
	r.res.Records = append(r.res.Records, rec)
	r.statPPID = append(r.statPPID, st.PPID)
	if r.reapedW != nil && len(r.res.Records) >= r.notifyAt {
		if _, err := r.reapedW.Write([]byte{1}); err != nil {
			r.problem("telling that %d processes were reaped: %v", r.notifyAt, err)
		}
		r.reapedW.Close()
		r.reapedW = nil
	}
}

// killOthers sends SIGKILL to every process in the root's process group
// except the root.
func (r *root) killOthers() {
	d, err := os.Open("/proc")
	if err != nil {
		return
	}
	defer d.Close()
	names, _ := d.Readdirnames(-1)
	for _, name := range names {
		pid, err := strconv.Atoi(name)
		if err != nil || pid == r.res.RootPID {
			continue
		}
		if st, err := ReadStat(pid); err == nil && st.PGRP == r.res.RootPID {
			syscall.Kill(pid, syscall.SIGKILL)
		}
	}
}

// assemble joins the reaped records with the lineage and notes, computes
// depths and parents' start times, and collects problems.
func (r *root) assemble() {
	res := r.res
	for i := range res.Records {
		rec := &res.Records[i]
		q := r.lineage[rec.PID]
		if len(q) == 0 {
			r.problems = append(r.problems, fmt.Sprintf("pid %d (%s) was reaped but nobody reported forking it", rec.PID, rec.Comm))
			rec.PPID, rec.Kind = r.statPPID[i], "unknown"
			continue
		}
		l := q[0]
		r.lineage[rec.PID] = q[1:]
		rec.PPID, rec.Kind, rec.Index, rec.Round = l.ppid, kindName(l.kind), l.index, l.round
		rec.Reparented = r.statPPID[i] != rec.PPID
		if rec.Reparented && r.statPPID[i] != res.RootPID {
			r.problems = append(r.problems, fmt.Sprintf("pid %d: parent at reaping %d is neither its forker %d nor the root",
				rec.PID, r.statPPID[i], rec.PPID))
		}
		want := uint32(0)
		switch rec.Kind {
		case KindThreads:
			want = msgThreads
		case KindExec:
			want = msgComm
		}
		if want == 0 {
			continue
		}
		notes := r.notes[rec.PID]
		j := slices.IndexFunc(notes, func(m wireMsg) bool { return m.Type == want })
		if j < 0 {
			r.problems = append(r.problems, fmt.Sprintf("pid %d (%s) sent no report", rec.PID, rec.Kind))
			continue
		}
		m := notes[j]
		r.notes[rec.PID] = slices.Delete(notes, j, j+1)
		if want == msgThreads {
			rec.Threads = int(m.Value)
		} else {
			comm := m.Comm[:]
			if k := slices.Index(comm, 0); k >= 0 {
				comm = comm[:k]
			}
			rec.PreExecComm = strings.TrimSuffix(string(comm), "\n")
		}
	}
	for pid, q := range r.lineage {
		for _, l := range q {
			r.problems = append(r.problems, fmt.Sprintf("pid %d (%s, forked by %d) was never reaped", pid, kindName(l.kind), l.ppid))
		}
	}
	r.depths()
	res.Problems = append(res.Problems, r.problems...)
}

// depths fills in Depth and PPIDStartTicks. A parent is the record with the
// parent's PID that started last at or before the child (PIDs may be
// reused within a workload).
func (r *root) depths() {
	res := r.res
	byPID := make(map[int][]int)
	for i, rec := range res.Records {
		byPID[rec.PID] = append(byPID[rec.PID], i)
	}
	parent := func(i int) int {
		rec := &res.Records[i]
		best := -1
		for _, j := range byPID[rec.PPID] {
			if j != i && res.Records[j].StartTicks <= rec.StartTicks &&
				(best < 0 || res.Records[j].StartTicks >= res.Records[best].StartTicks) {
				best = j
			}
		}
		return best
	}
	const unknown, visiting = 0, -1
	depth := make([]int, len(res.Records))
	var walk func(i int) int
	walk = func(i int) int {
		switch depth[i] {
		case visiting:
			return 0 // a cycle: cannot happen with real lineage
		case unknown:
		default:
			return depth[i]
		}
		rec := &res.Records[i]
		depth[i] = visiting
		d := 0
		switch p := parent(i); {
		case rec.PPID == res.RootPID:
			d, rec.PPIDStartTicks = 1, res.RootStartTicks
		case p >= 0:
			d, rec.PPIDStartTicks = walk(p)+1, res.Records[p].StartTicks
		default:
			r.problems = append(r.problems, fmt.Sprintf("pid %d: parent %d is not a recorded process", rec.PID, rec.PPID))
		}
		depth[i] = d
		return d
	}
	for i := range res.Records {
		res.Records[i].Depth = walk(i)
	}
}

// runThreads is the Threads child: it starts the threads, reports how many
// it sees, lives, and exits.
func runThreads() int {
	var n, code int
	var life int64
	if _, err := fmt.Sscanf(os.Getenv(envThreads), "%d:%d:%d", &n, &life, &code); err != nil {
		fmt.Fprintln(os.Stderr, "workload threads:", err)
		return 2
	}
	out := os.NewFile(threadsMsgFD, "messages")
	if out == nil {
		fmt.Fprintln(os.Stderr, "workload threads: message descriptor missing")
		return 2
	}
	var ready sync.WaitGroup
	release := make(chan struct{})
	for range n {
		ready.Add(1)
		go func() {
			// A goroutine locked to its thread keeps that thread to
			// itself while it blocks.
			runtime.LockOSThread()
			ready.Done()
			<-release
		}()
	}
	ready.Wait()
	m := wireMsg{Type: msgThreads, PID: int32(os.Getpid()), Value: int64(countThreads())}
	if _, err := out.Write(m.marshal()); err != nil {
		fmt.Fprintln(os.Stderr, "workload threads:", err)
		return 2
	}
	time.Sleep(time.Duration(life))
	return code
}

// countThreads returns the Threads: line of /proc/self/status, or -1.
func countThreads() int {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return -1
	}
	for line := range strings.Lines(string(b)) {
		if v, ok := strings.CutPrefix(line, "Threads:"); ok {
			if n, err := strconv.Atoi(strings.TrimSpace(v)); err == nil {
				return n
			}
		}
	}
	return -1
}
