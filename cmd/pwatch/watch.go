package main

import (
	"bufio"
	"fmt"
	"net"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/process-watchman/watchman"
	"github.com/spf13/cobra"
)

func newWatchCmd(a *app) *cobra.Command {
	var wf watchFlags
	var of outputFlags
	var asJSON bool
	var interval time.Duration
	cmd := &cobra.Command{
		Use:   "watch [flags] PID",
		Short: "Follow the process tree under a running PID, event by event",
		Long: `watch attaches to a running process and prints every fork, exec and exit in
its tree as it happens, one line per event (--json: one JSON object per
line). It ends when the root and all its descendants are gone, or on SIGINT
or SIGTERM, and prints a summary on stderr (with the tree's CPU and the
processes that used the most, as in pwatch run). Processes that were already
there when it attached are members from the start; they get no fork line.
Exit lines carry each process's resource usage (--usage, as root). In
polling mode pwatch scans the tree every --poll-interval by itself and
prints what changed.`,
		Example: `  pwatch watch 1234
  pwatch watch --json 1234 | jq -c 'select(.type == "exit" and .exit_code != 0)'
  pwatch watch --interval 5s --events tree.jsonl --trace tree.json $(pgrep -o make)
  pwatch watch --metrics-addr 127.0.0.1:9400 1234`,
		Args: exactArgs(1, "PID"),
		RunE: func(cmd *cobra.Command, args []string) error {
			pid, err := parsePID(args[0])
			if err != nil {
				return err
			}
			if interval < 0 {
				return usageError{fmt.Errorf("--interval must not be negative, got %v", interval)}
			}
			if err := of.check(); err != nil {
				return err
			}
			a.begin()
			return watchPID(a, pid, &wf, &of, asJSON, interval)
		},
	}
	wf.register(cmd.Flags())
	of.register(cmd.Flags(), true)
	cmd.Flags().BoolVar(&asJSON, "json", false, "print events as JSON Lines (the --events schema) instead of text")
	cmd.Flags().DurationVar(&interval, "interval", 0, "also print a snapshot of the live tree this often (0 = never)")
	return cmd
}

func watchPID(a *app, pid int, wf *watchFlags, of *outputFlags, asJSON bool, interval time.Duration) error {
	ln, err := listenMetrics(of.metricsAddr)
	if err != nil {
		return err
	}
	sigs, stopSignals := notifySignals(syscall.SIGINT, syscall.SIGTERM, syscall.SIGHUP)
	defer stopSignals()
	kids, stopReaping := adoptOrphans()
	defer stopReaping()
	cfg := wf.config()
	of.apply(cfg)
	w, err := of.attach(pid, cfg)
	if err != nil {
		closeListener(ln)
		return attachError(err)
	}
	s := newSession(a, of, w, newRecorder(w.Root()))
	s.kids = kids
	if err := s.openFiles(); err != nil {
		closeListener(ln)
		w.Close()
		return usageError{err}
	}
	if ln != nil {
		s.metrics = newMetrics(w, s.others)
		s.metrics.serve(ln, a.stderr)
	}
	if asJSON || of.events == "-" {
		s.stdJSON = newJSONLWriter(a.stdout)
	} else {
		s.human = bufio.NewWriter(a.stdout)
	}
	s.sayMode()
	if err := s.start(time.Now()); err != nil {
		s.finish(time.Now())
		return err
	}
	s.startTrace()
	// Children that exited before pwatch listened (pwatch exec'd by a
	// shell that had them) are reaped now that the members are known.
	s.reapChildren()
	if root := s.rec.procs[w.Root()]; root != nil {
		capped := ""
		if s.truncated {
			capped = "; --max-depth or --max-descendants kept processes out"
		}
		fmt.Fprintf(a.stderr, "pwatch: watching %s (pid %d) and %d descendants%s\n",
			cut(escape(commandText(root.name, root.cmdline)), defaultSummaryWidth), pid, len(s.rec.order)-1, capped)
	}

	var snapC <-chan time.Time
	if interval > 0 {
		t := time.NewTicker(interval)
		defer t.Stop()
		snapC = t.C
	}
	stopped := ""
	_, sig := s.pump(pumpOpts{
		until: func() bool { return len(w.LivePIDs()) == 0 },
		every: snapC,
		onEvery: func() {
			if snap, ok := s.poll(); ok {
				s.drainQueued()
				if s.stdJSON != nil {
					l := snapshotLine(&snap)
					s.stdJSON.write(&l)
				} else {
					fmt.Fprintln(s.human, formatSnapshot(&snap))
				}
				s.flushLive()
			}
		},
		sigs: sigs,
	})
	if sig != nil {
		stopped = "stopped by " + signalName(int(sig.(syscall.Signal)))
	}
	end := time.Now()
	s.finish(end)
	sum := s.summary("watch", end)
	sum.RootEnded = sum.Root != nil && sum.Root.exited
	sum.Stopped = stopped
	if note := kids.strayNote(); note != "" {
		sum.Notes = append(sum.Notes, note)
	}
	if s.writeErr != nil {
		sum.Notes = append(sum.Notes, fmt.Sprintf("the record is incomplete: %v (exit status %d)", s.writeErr, exitOwnFailure))
	}
	writeSummary(a.stderr, sum)
	if s.writeErr != nil {
		return exitError{exitOwnFailure}
	}
	return nil
}

// closeListener closes ln if there is one.
func closeListener(ln net.Listener) {
	if ln != nil {
		ln.Close()
	}
}

// formatSnapshot is the human line of a periodic snapshot.
func formatSnapshot(s *watchman.Snapshot) string {
	root := "alive"
	if !s.RootAlive {
		root = "gone"
	}
	pids := make([]string, len(s.Processes))
	for i := range s.Processes {
		pids[i] = strconv.Itoa(s.Processes[i].PID)
	}
	return fmt.Sprintf("%s snapshot live=%d root=%s pids=%s", s.Time.Format(eventTimeLayout), len(s.Processes), root, strings.Join(pids, ","))
}
