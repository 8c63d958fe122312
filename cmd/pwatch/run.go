package main

import (
	"errors"
	"fmt"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/process-watchman/watchman"
	"github.com/process-watchman/watchman/reconcile"
	"github.com/process-watchman/watchman/tracker"
	"github.com/spf13/cobra"
	"golang.org/x/sys/unix"
)

// runOptions are pwatch run's own flags.
type runOptions struct {
	wait, killLeft bool
	grace          time.Duration
}

// Timeouts of pwatch run's last phase.
const (
	// settleTimeout bounds the wait for the Watcher to report the root's
	// exit after pwatch reaped it.
	settleTimeout = 2 * time.Second
	// killTimeout bounds the wait for processes sent SIGKILL to be gone.
	killTimeout = 5 * time.Second
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

When COMMAND exits, pwatch prints a summary on stderr: how many processes
ran, how many at most at once, which failed, and which were left behind
(still alive after COMMAND exited). It exits with COMMAND's status (128+N
when a signal N killed it); 127 when COMMAND is not found, 126 when it
cannot be run, 2 for a usage error.`,
		Example: `  pwatch run -- make -j8
  pwatch run --events build.jsonl --trace build.json -- ./build.sh
  pwatch run --wait -- sh -c 'sleep 1 & echo started'
  pwatch run --kill-left --grace 2s -- ./test.sh
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
	cmd.Flags().BoolVar(&ro.wait, "wait", false, "after COMMAND exits, wait for the processes it left behind too")
	cmd.Flags().BoolVar(&ro.killLeft, "kill-left", false, "after COMMAND exits, terminate the processes it left behind (SIGTERM, then SIGKILL after --grace)")
	cmd.Flags().DurationVar(&ro.grace, "grace", 5*time.Second, "with --kill-left, how long to wait after SIGTERM before SIGKILL")
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

func runCommand(a *app, wf *watchFlags, of *outputFlags, ro *runOptions, args []string) error {
	path, err := resolveCommand(args[0])
	if err != nil {
		return a.commandFailed(err)
	}
	// Catch the signals before COMMAND starts. SIGINT and SIGQUIT are
	// caught to be ignored: caught, not ignored, so that COMMAND starts
	// with them at their defaults.
	sigs, stopSignals := notifySignals(syscall.SIGINT, syscall.SIGQUIT, syscall.SIGTERM, syscall.SIGHUP)
	defer stopSignals()

	child, err := startGated(path, args, os.Stdin, a.stdout, a.stderr)
	if err != nil {
		return fmt.Errorf("starting %s: %w", args[0], err)
	}
	cfg := wf.config()
	cfg.KeepTombstones = true
	w, err := watchman.Attach(child.cmd.Process.Pid, cfg)
	if err != nil {
		child.abort()
		return attachError(err)
	}
	s, err := newSession(a, of, w)
	if err != nil {
		w.Close()
		child.abort()
		return err
	}
	s.sayMode()
	begin := time.Now()
	if err := s.start(begin); err != nil {
		s.finish(time.Now())
		child.abort()
		return err
	}
	root := s.rec.procs[w.Root()]
	root.exactStart = true

	// rootDone is closed when the command has exited. It is reaped only
	// once the Watcher has seen it go: until then its zombie keeps its
	// /proc entry for the Watcher to read.
	rootDone := make(chan struct{})
	go func() {
		defer close(rootDone)
		waitExited(child.cmd.Process.Pid)
	}()
	if err := child.release(); err != nil {
		<-rootDone
		child.cmd.Wait()
		s.finish(time.Now())
		return a.commandFailed(err)
	}

	evc := s.sub.C
	tick := time.NewTicker(of.pollInterval)
	defer tick.Stop()
	// Phase 1: COMMAND runs.
running:
	for {
		select {
		case ev, ok := <-evc:
			if !ok {
				evc = nil
				continue
			}
			s.handleBatch(ev)
		case <-tick.C:
			s.poll()
		case sig := <-sigs:
			if sig == syscall.SIGTERM || sig == syscall.SIGHUP {
				child.cmd.Process.Signal(sig)
			}
			// SIGINT, SIGQUIT: the terminal sent them to COMMAND as well.
		case <-rootDone:
			break running
		}
	}
	rootEnd := time.Now()

	// Phase 2: wait until the Watcher has seen the root exit, so that
	// every exit before it is accounted for, and see who is left.
	var left []watchman.ProcessInfo
	settle := time.NewTimer(settleTimeout)
	defer settle.Stop()
	short := time.NewTicker(5 * time.Millisecond)
	defer short.Stop()
settling:
	for {
		if snap, ok := s.poll(); ok && !snap.RootAlive {
			left = snap.Processes
			break
		} else if !ok {
			break
		}
		select {
		case ev, ok := <-evc:
			if !ok {
				evc = nil
				continue
			}
			s.handleBatch(ev)
		case <-short.C:
		case <-settle.C:
			s.warn("settle", fmt.Errorf("the watcher did not report the exit of %d in %v", w.Root().PID, settleTimeout))
			if snap, ok := s.poll(); ok {
				for _, p := range snap.Processes {
					if p.Identity != w.Root() {
						left = append(left, p)
					}
				}
			}
			break settling
		}
	}
	short.Stop()
	s.drainQueued()
	child.cmd.Wait()
	ws, _ := child.cmd.ProcessState.Sys().(syscall.WaitStatus)
	s.rec.ended(root, rootExit(w.Root(), ws, rootEnd), rootEnd)

	// Phase 3: --wait and --kill-left.
	var killed, stopped string
	end := rootEnd
	if (ro.wait || ro.killLeft) && len(left) > 0 {
		killed, stopped = s.waitLeft(ro, sigs)
		end = time.Now()
	}
	ferr := s.finish(end)
	sum := s.summary("run", end)
	sum.RootEnded, sum.Killed, sum.Stopped = true, killed, stopped
	sum.Waited = (ro.wait || ro.killLeft) && len(left) > 0
	for _, p := range left {
		// The record has the latest command line (an exec after the
		// root's exit, say).
		lp := leftProc{PID: p.PID, Age: max(rootEnd.Sub(p.Started), 0), Command: commandText(p.Name, p.Cmdline)}
		if r := s.rec.procs[p.Identity]; r != nil {
			lp.Command = commandText(r.name, r.cmdline)
			if r.exactStart {
				lp.Age = max(rootEnd.Sub(r.start), 0)
			}
		}
		sum.Left = append(sum.Left, lp)
	}
	writeSummary(a.stderr, sum)
	if ferr != nil {
		fmt.Fprintf(a.stderr, "pwatch: %v\n", ferr)
	}
	return exitError{statusCode(ws)}
}

// waitExited blocks until the child pid has exited, without reaping it.
func waitExited(pid int) {
	var si unix.Siginfo
	for {
		err := unix.Waitid(unix.P_PID, pid, &si, unix.WEXITED|unix.WNOWAIT, nil)
		if err != unix.EINTR {
			return
		}
	}
}

// rootExit is the root's exit as wait4 reported it.
func rootExit(id watchman.Identity, ws syscall.WaitStatus, at time.Time) watchman.Exit {
	x := watchman.Exit{Identity: id, StatusKnown: true, Code: -1, Time: at}
	switch {
	case ws.Exited():
		x.Code = ws.ExitStatus()
	case ws.Signaled():
		x.Signal, x.CoreDumped = int(ws.Signal()), ws.CoreDump()
	}
	return x
}

// statusCode is the exit status pwatch passes on, as a shell does.
func statusCode(ws syscall.WaitStatus) int {
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
		fmt.Fprintf(a.stderr, "pwatch: %s\n", ce.msg)
		return exitError{ce.code}
	}
	return err
}

// waitLeft waits until the tree is empty, terminating it first with
// --kill-left. It returns what it killed and why it stopped early, if it
// did.
func (s *session) waitLeft(ro *runOptions, sigs <-chan os.Signal) (killed, stopped string) {
	evc := s.sub.C
	tick := time.NewTicker(min(s.out.pollInterval, 20*time.Millisecond))
	defer tick.Stop()
	var killTimer, giveUp <-chan time.Time
	fs, fsErr := reconcile.NewFS("")
	var termed int
	if ro.killLeft {
		if fsErr != nil {
			s.warn("kill", fsErr)
		} else {
			termed = s.signalMembers(fs, unix.SIGTERM)
			killed = fmt.Sprintf("sent SIGTERM to %d", termed)
			t := time.NewTimer(ro.grace)
			defer t.Stop()
			killTimer = t.C
		}
	}
	for len(s.w.LivePIDs()) > 0 {
		select {
		case ev, ok := <-evc:
			if !ok {
				evc = nil
				continue
			}
			s.handleBatch(ev)
		case <-tick.C:
			s.poll()
		case <-killTimer:
			killTimer = nil
			n := s.signalMembers(fs, unix.SIGKILL)
			killed += fmt.Sprintf(", then SIGKILL to %d still alive after %v", n, ro.grace)
			t := time.NewTimer(killTimeout)
			defer t.Stop()
			giveUp = t.C
		case <-giveUp:
			return killed, fmt.Sprintf("gave up: processes outlived SIGKILL by %v", killTimeout)
		case sig := <-sigs:
			return killed, "stopped waiting on " + signalName(int(sig.(syscall.Signal)))
		}
	}
	s.poll()
	s.drainQueued()
	return killed, ""
}

// signalMembers sends sig to every live member and returns how many it
// reached. A PID is signalled through a pidfd, after checking that it is
// still the same process (its start time), so that a reused PID is never
// hit.
func (s *session) signalMembers(fs *reconcile.FS, sig unix.Signal) int {
	snap, ok := s.poll()
	if !ok {
		return 0
	}
	n := 0
	for _, p := range snap.Processes {
		if err := signalProcess(fs, &p, sig); err == nil {
			n++
		} else if !errors.Is(err, unix.ESRCH) && !errors.Is(err, reconcile.ErrGone) {
			s.warn(fmt.Sprint("signal", p.PID), fmt.Errorf("signalling %d: %w", p.PID, err))
		}
	}
	return n
}

// errReused says a PID now names another process.
var errReused = errors.New("pid reused by another process")

func signalProcess(fs *reconcile.FS, p *watchman.ProcessInfo, sig unix.Signal) error {
	fd, err := unix.PidfdOpen(p.PID, 0)
	if err != nil {
		return err
	}
	defer unix.Close(fd)
	st, err := fs.ReadStat(p.PID)
	if err != nil {
		return err
	}
	d := int64(st.StartTicks) - int64(p.StartTicks)
	if d != 0 && (!p.ApproxStart || d < -tracker.ApproxTolerance || d > tracker.ApproxTolerance) {
		return errReused
	}
	return unix.PidfdSendSignal(fd, sig, nil, 0)
}
