package main

import (
	"errors"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"runtime"
	"syscall"
	"time"

	"github.com/process-watchman/watchman"
	"github.com/spf13/cobra"
	"golang.org/x/sys/unix"
)

// runOptions are pwatch run's own flags.
type runOptions struct {
	wait, killLeft bool
	grace, timeout time.Duration
	cgroup         string
	survive        bool
}

// Bounds of pwatch run's last phases.
const (
	// settleTimeout bounds the wait for the Watcher to report COMMAND's
	// exit after pwatch reaped it.
	settleTimeout = 2 * time.Second
	// killBound bounds how long pwatch keeps killing a tree that keeps
	// forking, and maxKillRounds how many rounds of SIGKILL it sends.
	killBound     = 5 * time.Second
	maxKillRounds = 100
	// killRound is how long one round waits for its processes to go.
	killRound = 100 * time.Millisecond
)

func newRunCmd(a *app) *cobra.Command {
	var wf watchFlags
	var of outputFlags
	var ro runOptions
	cmd := &cobra.Command{
		Use:   "run [flags] -- COMMAND [ARGS...]",
		Short: "Run COMMAND and track its whole process tree",
		Long: `run starts COMMAND with pwatch already listening, so that even its first fork
is seen, and tracks its whole tree until COMMAND exits. COMMAND keeps the
terminal; pwatch ignores SIGINT and SIGQUIT meanwhile (the terminal sends
them to COMMAND too) and forwards SIGTERM and SIGHUP to it.

pwatch is a child subreaper: orphans of COMMAND's tree come back to it, not
to init, so none escapes (in polling mode too), and pwatch reaps them with
their exit status and resource usage. Where a writable cgroup v2 hierarchy
is found (--cgroup auto, as root), COMMAND starts in a fresh cgroup, which
--kill-left and --timeout kill at once (cgroup.kill); elsewhere they kill
through pidfds, in rounds, until no process is left. If pwatch itself is
killed, COMMAND gets SIGKILL (unless --survive-pwatch).

When COMMAND exits, pwatch prints a summary on stderr: how many processes
ran, how many at most at once, which failed, which were left behind (still
alive after COMMAND exited), and the resources they used: the tree's CPU and
the 5 processes with the most CPU and the highest peak RSS, their command
lines cut to $COLUMNS or the terminal's width (80 otherwise). The usage of
every exit comes from the kernel's taskstats records (as root, in the
initial namespaces; --usage=false turns it off); elsewhere only pwatch's own
children, COMMAND and the orphans it reaps, have theirs, from wait4. It exits with COMMAND's status (128+N
when a signal N killed it); 127 when COMMAND is not found, 126 when it
cannot be run, 124 when --timeout expired, 125 when pwatch could not write
a record or kill the tree, 2 for a usage error.`,
		Example: `  pwatch run -- make -j8
  pwatch run --events build.jsonl --trace build.json -- ./build.sh
  pwatch run --wait -- sh -c 'sleep 1 & echo started'
  pwatch run --kill-left --grace 2s -- ./test.sh
  pwatch run --timeout 10m --grace 30s -- ./integration-tests.sh
  pwatch run --metrics-addr 127.0.0.1:9400 -- ./server`,
		Args: func(cmd *cobra.Command, args []string) error {
			if len(args) == 0 {
				return usageError{fmt.Errorf("run needs a COMMAND to run, after --; see '%s --help'", cmd.CommandPath())}
			}
			return nil
		},
		RunE: func(cmd *cobra.Command, args []string) error {
			if of.events == "-" {
				return usageError{errors.New("--events -: stdout belongs to COMMAND in pwatch run; give a file")}
			}
			if ro.grace < 0 {
				return usageError{fmt.Errorf("--grace must not be negative, got %v", ro.grace)}
			}
			if ro.timeout < 0 {
				return usageError{fmt.Errorf("--timeout must not be negative, got %v", ro.timeout)}
			}
			switch ro.cgroup {
			case cgroupAuto, cgroupOn, cgroupOff:
			default:
				return usageError{fmt.Errorf("--cgroup must be auto, on or off, got %q", ro.cgroup)}
			}
			if err := of.check(); err != nil {
				return err
			}
			a.begin()
			return runCommand(a, &wf, &of, &ro, args)
		},
	}
	// Flags stop at COMMAND: "pwatch run ls -l" runs "ls -l".
	cmd.Flags().SetInterspersed(false)
	wf.register(cmd.Flags())
	of.register(cmd.Flags(), false)
	f := cmd.Flags()
	f.BoolVar(&ro.wait, "wait", false, "after COMMAND exits, wait for the processes it left behind too")
	f.BoolVar(&ro.killLeft, "kill-left", false, "after COMMAND exits, terminate the processes it left behind (SIGTERM, then SIGKILL after --grace)")
	f.DurationVar(&ro.grace, "grace", 5*time.Second, "with --kill-left and --timeout, how long to wait after SIGTERM before SIGKILL")
	f.DurationVar(&ro.timeout, "timeout", 0, "terminate the whole tree after this long (SIGTERM, then SIGKILL after --grace) and exit 124 (0 = never)")
	f.StringVar(&ro.cgroup, "cgroup", cgroupAuto, "start COMMAND in a fresh cgroup v2 group: auto (where a writable cgroup2 hierarchy is found), on (or fail), off")
	f.BoolVar(&ro.survive, "survive-pwatch", false, "let COMMAND run on if pwatch itself is killed (default: the kernel sends it SIGKILL)")
	return cmd
}

// notifySignals delivers sigs on a new channel, except those this process
// was started with ignored (nohup, a background job): those stay ignored,
// for pwatch and for COMMAND. stop undoes it.
func notifySignals(sigs ...os.Signal) (ch chan os.Signal, stop func()) {
	ch = make(chan os.Signal, 8)
	var caught []os.Signal
	for _, s := range sigs {
		if !signal.Ignored(s) {
			caught = append(caught, s)
		}
	}
	if len(caught) > 0 {
		signal.Notify(ch, caught...)
	}
	return ch, func() { signal.Stop(ch) }
}

// runner is one pwatch run: the session, COMMAND, and what contains it.
type runner struct {
	s    *session
	ro   *runOptions
	cg   *cgroup // nil without a cgroup
	kids *children
	// cgNote says why there is no cgroup, when --cgroup auto found none.
	cgNote string
	// guard is the link to the cgroup's guard (see guardMain), or nil;
	// noGuard says why a cgroup has none.
	guard   *os.File
	noGuard string
	// unlock releases the thread that started COMMAND (startLocked).
	unlock func()
}

// contain makes the cgroup COMMAND starts in, as --cgroup says, and starts
// its guard.
func (r *runner) contain() error {
	if r.ro.cgroup == cgroupOff {
		r.cgNote = "--cgroup off"
		return nil
	}
	cg, err := newCgroup()
	switch {
	case err == nil && os.Getpid() == 1:
		// pwatch is the init of a PID namespace (a container): the
		// guard's double fork would make it pwatch's own child, since
		// orphans go to init, and so a member of the tree, left behind
		// and killed with it; nor could it outlive pwatch, since the
		// kernel kills every process of the namespace when its init
		// ends. So there is no guard.
		r.cg = cg
		r.noGuard = "no guard: pwatch is PID 1 of its PID namespace, and when it ends the kernel ends every process there"
	case err == nil:
		r.cg = cg
		r.guard, err = startGuard(cg, r.ro.survive)
		if err != nil {
			r.removeCgroup()
		}
	}
	if err != nil && r.ro.cgroup == cgroupOn {
		return fmt.Errorf("--cgroup on: %w", err)
	}
	if err != nil {
		r.cgNote = err.Error()
	}
	return nil
}

func runCommand(a *app, wf *watchFlags, of *outputFlags, ro *runOptions, args []string) error {
	path, err := resolveCommand(args[0])
	if err != nil {
		return a.commandFailed(err)
	}
	ln, err := listenMetrics(of.metricsAddr)
	if err != nil {
		return err
	}
	// Catch the signals before COMMAND starts. SIGINT and SIGQUIT are
	// caught to be ignored: caught, not ignored, so that COMMAND starts
	// with them at their defaults.
	sigs, stopSignals := notifySignals(syscall.SIGINT, syscall.SIGQUIT, syscall.SIGTERM, syscall.SIGHUP)
	defer stopSignals()
	r := &runner{ro: ro}
	if err := r.contain(); err != nil {
		closeListener(ln)
		return err
	}
	if r.guard != nil {
		defer func() {
			r.guard.Write([]byte{guardBye})
			r.guard.Close()
		}()
	}
	// os/exec checks once whether the kernel has pidfds, by forking a
	// child: do it before the Watcher attaches, so that the child is not
	// taken for part of the tree.
	if p, err := os.FindProcess(os.Getpid()); err == nil {
		p.Release()
	}
	// The Watcher's root is pwatch itself: COMMAND is its child, and the
	// orphans that come back to pwatch are members too, in every mode.
	cfg := wf.config()
	of.apply(cfg)
	if cfg.MaxDepth > 0 {
		cfg.MaxDepth++
	}
	if cfg.MaxDescendants > 0 {
		cfg.MaxDescendants++
	}
	kids, undo, err := becomeSubreaper()
	if err != nil {
		closeListener(ln)
		r.removeCgroup()
		return err
	}
	defer undo()
	r.kids = kids
	w, err := of.attach(os.Getpid(), cfg)
	if err != nil {
		closeListener(ln)
		r.removeCgroup()
		return attachError(err)
	}
	rec := newRecorder(watchman.Identity{})
	rec.self, rec.depthOff, rec.command, rec.noCmdline = w.Root(), 1, args, wf.noCmdline
	rec.commandName = commName(filepath.Base(args[0]))
	if st, err := readProcStat(os.Getpid()); err == nil {
		rec.launcherName = st.comm
	}
	r.s = newSession(a, of, w, rec)
	s := r.s
	s.kids = kids
	if err := s.openFiles(); err != nil {
		closeListener(ln)
		w.Close()
		r.removeCgroup()
		return usageError{err}
	}
	if ln != nil {
		s.metrics = newMetrics(w, s.others)
		s.metrics.serve(ln, a.stderr)
	}
	s.sayMode()
	begin := time.Now()
	if err := s.start(begin); err != nil {
		s.finish(time.Now())
		r.removeCgroup()
		return err
	}
	child, err := r.startCommand(path, args)
	defer func() {
		if r.unlock != nil {
			r.unlock()
		}
	}()
	if err != nil {
		s.finish(time.Now())
		r.removeCgroup()
		return fmt.Errorf("starting %s: %w", args[0], err)
	}
	r.sayContainment()
	defer func() {
		// pwatch reaped COMMAND itself: Wait only releases os/exec's
		// copying goroutines, and Release the pidfd that Wait keeps on
		// failing.
		child.cmd.Wait()
		child.cmd.Process.Release()
	}()
	kids.command = child.cmd.Process.Pid
	root := r.recordCommand(kids.command, begin)

	if err := child.release(); err != nil {
		// The launcher could not exec COMMAND and exits with the code.
		s.pump(pumpOpts{until: func() bool { return kids.commandDone }, timer: time.After(settleTimeout)})
		s.finish(time.Now())
		r.removeCgroup()
		return a.commandFailed(err)
	}

	// Phase 1: COMMAND runs, until pwatch reaps it or --timeout.
	var timeoutC <-chan time.Time
	if ro.timeout > 0 {
		t := time.NewTimer(ro.timeout)
		defer t.Stop()
		timeoutC = t.C
	}
	var notes []string
	killFailed, timedOut := false, false
	stop, _ := s.pump(pumpOpts{
		until: func() bool { return kids.commandDone },
		timer: timeoutC,
		sigs:  sigs,
		onSignal: func(sig os.Signal) bool {
			if sig == syscall.SIGTERM || sig == syscall.SIGHUP {
				child.cmd.Process.Signal(sig)
			}
			// SIGINT, SIGQUIT: the terminal sent them to COMMAND as well.
			return false
		},
	})
	if stop == stopTimer {
		timedOut = true
		report, ok := r.terminate()
		killFailed = !ok
		notes = append(notes, fmt.Sprintf("--timeout %v expired: %s", ro.timeout, report))
		s.pump(pumpOpts{until: func() bool { return kids.commandDone }, timer: time.After(settleTimeout)})
	}
	rootEnd := kids.commandEnd
	if !kids.commandDone {
		rootEnd = time.Now()
		notes = append(notes, "COMMAND could not be reaped")
		killFailed = true
	}

	// Phase 2: wait until the Watcher has seen COMMAND go, so that every
	// exit before it is accounted for, and see who is left.
	if !r.commandGone(root.id) {
		s.pump(pumpOpts{until: func() bool { return r.commandGone(root.id) }, tick: 5 * time.Millisecond, timer: time.After(settleTimeout)})
	}
	s.drainQueued()
	var left []watchman.ProcessInfo
	if snap, ok := s.poll(); ok {
		for _, p := range snap.Processes {
			if p.Identity != rec.self && p.Identity != root.id {
				left = append(left, p)
			}
		}
	}

	// Phase 3: --wait and --kill-left.
	var killed, stopped string
	end := rootEnd
	if (ro.wait || ro.killLeft) && (len(left) > 0 || !r.treeGone()) {
		if ro.killLeft {
			var ok bool
			killed, ok = r.terminate()
			killFailed = killFailed || !ok
		} else if _, sig := s.pump(pumpOpts{until: r.treeGone, tick: min(of.pollInterval, 20*time.Millisecond), sigs: sigs}); sig != nil {
			stopped = "stopped waiting on " + signalName(int(sig.(syscall.Signal)))
		}
		end = time.Now()
	}
	notes = append(notes, r.cgroupNotes()...)
	s.finish(end)
	sum := s.summary("run", end)
	sum.RootEnded, sum.Killed, sum.Stopped = true, killed, stopped
	sum.Waited = (ro.wait || ro.killLeft) && len(left) > 0
	for _, p := range left {
		lp := leftProc{PID: p.PID, Age: max(rootEnd.Sub(p.Started), 0), Command: commandText(p.Name, p.Cmdline), Approx: true}
		if rp := rec.procs[p.Identity]; rp != nil {
			// The record has the latest command line in connector mode
			// (an exec after COMMAND's exit, say); the snapshot has
			// what the last scan read.
			if s.mode == watchman.ModeConnector || len(p.Cmdline) == 0 {
				lp.Command = commandText(rp.name, rp.cmdline)
			}
			if rp.exactStart {
				lp.Age, lp.Approx = max(rootEnd.Sub(rp.start), 0), false
			}
		}
		sum.Left = append(sum.Left, lp)
	}
	if s.mode == watchman.ModePoll {
		notes = append(notes, fmt.Sprintf("poll mode: a process that lived less than --poll-interval (%v) and was reaped by its own parent is not seen; orphans came back to pwatch and are all counted (%d reaped by pwatch)",
			of.pollInterval, kids.reaped))
	} else if kids.reaped > 0 {
		what := "orphans came back to pwatch and were reaped"
		if kids.reaped == 1 {
			what = "orphan came back to pwatch and was reaped"
		}
		notes = append(notes, fmt.Sprintf("%d %s (reap lines in --events)", kids.reaped, what))
	}
	if killFailed {
		notes = append(notes, fmt.Sprintf("could not kill the whole tree: %d processes outlived %d rounds of SIGKILL in %v (exit status %d)",
			s.others(), maxKillRounds, killBound, exitOwnFailure))
	}
	if s.writeErr != nil {
		notes = append(notes, fmt.Sprintf("the record is incomplete: %v (exit status %d)", s.writeErr, exitOwnFailure))
	}
	if timedOut {
		notes = append(notes, fmt.Sprintf("exit status %d: --timeout expired", exitTimeout))
	}
	sum.Notes = notes
	writeSummary(a.stderr, sum)
	switch {
	case killFailed || s.writeErr != nil:
		return exitError{exitOwnFailure}
	case timedOut:
		return exitError{exitTimeout}
	}
	return exitError{statusCode(kids.commandWS)}
}

// commName is name as the kernel keeps a command name: at most 15 bytes.
func commName(name string) string {
	if len(name) > 15 {
		return name[:15]
	}
	return name
}

// startCommand starts pwatch's launcher for COMMAND: in the cgroup if
// there is one, and with SIGKILL as its parent-death signal unless
// --survive-pwatch. With --cgroup auto, a cgroup the kernel refuses to
// start the child in is given up.
func (r *runner) startCommand(path string, args []string) (*gatedChild, error) {
	attr := &syscall.SysProcAttr{}
	if !r.ro.survive {
		attr.Pdeathsig = syscall.SIGKILL
	}
	if r.cg != nil {
		attr.UseCgroupFD, attr.CgroupFD = true, r.cg.fd
	}
	a := r.s.a
	start := func() (*gatedChild, error) {
		return r.startLocked(func() (*gatedChild, error) {
			return startGated(path, args, os.Stdin, a.stdout, a.stderr, attr)
		})
	}
	child, err := start()
	if err != nil && r.cg != nil && r.ro.cgroup == cgroupAuto {
		r.cgNote = fmt.Sprintf("starting in %s: %v", r.cg.dir, err)
		r.removeCgroup()
		attr.UseCgroupFD, attr.CgroupFD = false, 0
		child, err = start()
	}
	return child, err
}

// startLocked runs start on an OS thread that stays alive, locked, until
// the run ends (r.unlock): the kernel sends the parent-death signal when
// the thread that forked the child exits, not the process, and the Go
// runtime may end threads.
func (r *runner) startLocked(start func() (*gatedChild, error)) (*gatedChild, error) {
	type result struct {
		c   *gatedChild
		err error
	}
	done := make(chan result)
	release := make(chan struct{})
	go func() {
		runtime.LockOSThread()
		c, err := start()
		done <- result{c, err}
		<-release
		runtime.UnlockOSThread()
	}()
	res := <-done
	prev := r.unlock
	r.unlock = func() {
		close(release)
		if prev != nil {
			prev()
		}
	}
	return res.c, res.err
}

// sayContainment prints how the tree is contained.
func (r *runner) sayContainment() {
	if r.cg != nil && r.noGuard != "" {
		fmt.Fprintf(r.s.a.stderr, "pwatch: containment: cgroup %s (%s)\n", escape(r.cg.dir), r.noGuard)
		return
	}
	if r.cg != nil {
		fmt.Fprintf(r.s.a.stderr, "pwatch: containment: cgroup %s\n", escape(r.cg.dir))
		return
	}
	fmt.Fprintf(r.s.a.stderr, "pwatch: containment: no cgroup (%s); killing goes through pidfds, in rounds\n", escape(r.cgNote))
}

// recordCommand records COMMAND, started at begin, as the root.
func (r *runner) recordCommand(pid int, begin time.Time) *proc {
	rec := r.s.rec
	id := watchman.Identity{PID: pid}
	// COMMAND cannot go away before pwatch reaps it.
	if st, err := readProcStat(pid); err == nil {
		id.StartTicks = st.startTicks
	}
	rec.root = id
	p := rec.add(id, begin)
	p.ppid, p.exactStart = rec.self.PID, true
	p.name, p.cmdline = rec.view(id, rec.launcherName, nil)
	r.s.startTrace()
	return p
}

// commandGone says whether the Watcher no longer lists COMMAND.
func (r *runner) commandGone(id watchman.Identity) bool {
	for _, pid := range r.s.w.LivePIDs() {
		if pid == id.PID {
			return false
		}
	}
	return true
}

// treeGone says whether no process of the tree is left: none among the
// Watcher's members (pwatch aside), no orphan that came back to pwatch,
// none in the cgroup.
func (r *runner) treeGone() bool {
	if r.s.others() > 0 || len(liveChildren(r.kids.command)) > 0 {
		return false
	}
	if r.cg == nil {
		return true
	}
	populated, err := r.cg.populated()
	if err != nil {
		r.s.warn("cgroup.events", err)
		return true
	}
	return !populated
}

// signalAll sends sig to every live member but pwatch, each through a
// pidfd after checking its identity (Watcher.Signal), and returns how
// many it reached.
func (r *runner) signalAll(sig syscall.Signal) int {
	snap, ok := r.s.poll()
	if !ok {
		return 0
	}
	n := 0
	for _, p := range snap.Processes {
		if p.Identity == r.s.rec.self {
			continue
		}
		err := r.s.w.Signal(p.Identity, sig)
		switch {
		case err == nil:
			n++
			if rp := r.s.rec.procs[p.Identity]; rp != nil {
				rp.killed = true
			}
		case errors.Is(err, watchman.ErrNotMember), errors.Is(err, watchman.ErrNoSuchProcess):
			// It exited since the Poll.
		default:
			r.s.warn(fmt.Sprint("signal", p.PID), err)
		}
	}
	return n
}

// terminate ends the whole tree: SIGTERM to every process, then, after
// --grace, SIGKILL until none is left. It says what it did, and whether
// the tree is gone.
func (r *runner) terminate() (string, bool) {
	s := r.s
	report := fmt.Sprintf("sent SIGTERM to %d", r.signalAll(syscall.SIGTERM))
	grace := time.NewTimer(r.ro.grace)
	defer grace.Stop()
	if stop, _ := s.pump(pumpOpts{until: r.treeGone, tick: min(s.out.pollInterval, 20*time.Millisecond), timer: grace.C}); stop == stopDone {
		return report, true
	}
	n, ok := r.killAll()
	how := ""
	if r.cg != nil {
		how = " (and cgroup.kill)"
	}
	return report + fmt.Sprintf(", then SIGKILL to %d still alive after %v%s", n, r.ro.grace, how), ok
}

// killAll kills the tree in rounds: cgroup.kill where there is a cgroup,
// and SIGKILL to every member, until a round finds no process left and
// no fork arrives, for at most maxKillRounds rounds and killBound. It
// returns how many processes the first round signalled, and whether the
// tree is gone.
func (r *runner) killAll() (int, bool) {
	s := r.s
	bound := time.NewTimer(killBound)
	defer bound.Stop()
	first := -1
	for round := 0; ; round++ {
		s.reapChildren()
		if r.treeGone() {
			// A fork in flight shows as an event or in the next scan.
			s.pump(pumpOpts{tick: 5 * time.Millisecond, timer: time.After(20 * time.Millisecond)})
			s.poll()
			if r.treeGone() {
				return max(first, 0), true
			}
		}
		select {
		case <-bound.C:
			return max(first, 0), false
		default:
		}
		if round == maxKillRounds {
			return max(first, 0), false
		}
		// Each member first (which counts them), then the cgroup at once,
		// which catches the forks in between.
		n := r.signalAll(syscall.SIGKILL)
		if r.cg != nil {
			if err := r.cg.kill(); err != nil {
				s.warn("cgroup.kill", err)
			}
		}
		// pwatch's own children (the orphans that came back to it) are
		// killed whatever the Watcher knows: a child's PID cannot be
		// reused before pwatch reaps it, and each round's kills hand
		// their children to pwatch for the next.
		for _, pid := range liveChildren(-1) {
			unix.Kill(pid, unix.SIGKILL)
		}
		if first < 0 {
			first = n
		}
		s.pump(pumpOpts{until: r.treeGone, tick: 5 * time.Millisecond, timer: time.After(killRound)})
	}
}

// cgroupNotes reads the cgroup's totals, removes it, and says both.
func (r *runner) cgroupNotes() []string {
	if r.cg == nil {
		return nil
	}
	var notes []string
	if st, err := r.cg.stats(); err == nil {
		n := fmt.Sprintf("cgroup: CPU %s (user %s, system %s)", fmtDuration(st.usage), fmtDuration(st.user), fmtDuration(st.system))
		if st.memPeak >= 0 {
			n += fmt.Sprintf(", memory peak %.1f MiB", float64(st.memPeak)/(1<<20))
		}
		notes = append(notes, n)
	}
	if !r.treeGone() {
		notes = append(notes, fmt.Sprintf("cgroup %s is kept while processes of the tree run in it, and removed after the last one (kill them all with: echo 1 > %s/cgroup.kill)", r.cg.dir, r.cg.dir))
		unix.Close(r.cg.fd)
		r.cg = nil
		return notes
	}
	if err := r.cg.remove(); err != nil {
		notes = append(notes, fmt.Sprintf("cgroup could not be removed: %v", err))
	}
	r.cg = nil
	return notes
}

// removeCgroup removes the cgroup, if there is one, when the run ends
// early.
func (r *runner) removeCgroup() {
	if r.cg != nil {
		r.cg.remove()
		r.cg = nil
	}
}

// statusCode is the exit status pwatch passes on, as a shell does.
func statusCode(ws unix.WaitStatus) int {
	switch {
	case ws.Exited():
		return ws.ExitStatus()
	case ws.Signaled():
		return 128 + int(ws.Signal())
	}
	return 1
}

// commandFailed prints why COMMAND could not run and returns its exit
// status, or returns err as is.
func (a *app) commandFailed(err error) error {
	var ce *commandError
	if errors.As(err, &ce) {
		fmt.Fprintf(a.stderr, "pwatch: %s\n", escape(ce.msg))
		return exitError{ce.code}
	}
	return err
}
