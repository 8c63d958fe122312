//go:build linux && (amd64 || arm64)

package main

import (
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/process-watchman/watchman"
	"github.com/process-watchman/watchman/internal/workload"
)

// exitSeen is what a Watcher's exit events said of one process.
type exitSeen struct {
	name      string
	fromUsage bool // the name came from the taskstats record (Event.NameFromUsage)
	usage     bool // Exit.Usage was set
}

// namesRun is one fork+exec storm under one connector Watcher, CaptureUsage
// off or on, counted against the workload's ground truth.
type namesRun struct {
	children  int    // the storm's children in the ground truth
	exits     int    // of them, those with an exit event
	named     int    // ... whose exit event had a name
	right     int    // ... the name the kernel had at the exit (the ground truth's comm)
	fromUsage int    // ... named from the taskstats record
	withUsage int    // ... whose exit carried a Usage
	lost      uint64 // events the subscription lost
	stats     watchman.WatcherStats
	usageFrom string // where usage comes from (ModeReason)
}

// exitNames: the share of fork+exec children whose exit event carries a
// name, by lifetime, with Config.CaptureUsage off and on. A child that
// execs and exits before the watcher reads its /proc entry loses the name
// it took at the exec; with usage on, the taskstats record's command name
// fills it in (Event.NameFromUsage). Each lifetime's two runs are separate
// workloads, one watcher each, so neither watcher slows the other.
func (bs *suite) exitNames(t *table) error {
	count := 500
	if bs.opt.quick {
		count = 100
	}
	var errs []error
	for _, life := range lifetimes() {
		spec := workload.Spec{Storm: &workload.Storm{Count: count, Lifetime: life, Mode: workload.ForkExec}}
		var runs [2]namesRun
		var loads []string
		var err error
		for i, usage := range []bool{false, true} {
			t.markLoad()
			loads = append(loads, t.load)
			logf("exit names: fork+exec sh, children live %v, CaptureUsage %v (load %s)", life, usage, t.load)
			if runs[i], err = bs.namesOne(spec, usage); err != nil {
				err = fmt.Errorf("CaptureUsage %v: %w", usage, err)
				break
			}
		}
		t.load = strings.Join(loads, "/")
		measure := fmt.Sprintf("exit names: fork+exec sh, children live %v, CaptureUsage off · on", life)
		target := "CaptureUsage on: 100% named"
		if err != nil {
			logf("exit names %v: %v", life, err)
			errs = append(errs, fmt.Errorf("exit names, children live %v: %w", life, err))
			t.add(1, measure, "failed: "+err.Error(), target, "**FAILED**")
			continue
		}
		off, on := runs[0], runs[1]
		val := fmt.Sprintf("off **%s** named (%s) · on **%s** named (%s); %s",
			pct(off.named, off.children), off.describe(false), pct(on.named, on.children), on.describe(true), on.usageFrom)
		t.add(1, measure, val, target, verdict(on.children > 0 && on.named == on.children))
	}
	return errors.Join(errs...)
}

// describe gives a run's counts.
func (r namesRun) describe(usage bool) string {
	s := fmt.Sprintf("%d/%d, %d with the kernel's comm at exit, %d exit events, %d lost", r.named, r.children, r.right, r.exits, r.lost)
	if usage {
		s += fmt.Sprintf(", %d of the names from taskstats, Exit.Usage on %d (UsageMatched %d, UsageMissing %d)",
			r.fromUsage, r.withUsage, r.stats.UsageMatched, r.stats.UsageMissing)
		if r.stats.UsageReason != "" {
			s += ", no usage: " + r.stats.UsageReason
		}
	}
	return s
}

// namesOne runs one workload under a connector Watcher whose exit events
// are read from Subscribe, and counts the names they carried.
func (bs *suite) namesOne(spec workload.Spec, usage bool) (namesRun, error) {
	var r namesRun
	p, err := bs.startWorkload(spec)
	if err != nil {
		return r, err
	}
	w, err := watchman.Attach(p.PID(), &watchman.Config{Strategy: watchman.StrategyConnector, CaptureUsage: usage})
	if err != nil {
		bs.kill(p)
		return r, fmt.Errorf("attach: %w", err)
	}
	defer w.Close()
	if w.Mode() != watchman.ModeConnector {
		bs.kill(p)
		return r, fmt.Errorf("watcher in %s mode: %s", w.Mode(), w.ModeReason())
	}
	if usage {
		r.usageFrom = usageSource(w.ModeReason())
	}
	sub := w.Subscribe(1 << 16)
	seen := map[watchman.Identity]exitSeen{}
	lost := uint64(0)
	done := make(chan struct{})
	go func() {
		defer close(done)
		for ev := range sub.C {
			switch ev.Type {
			case watchman.EventLost:
				lost += ev.Lost
			case watchman.EventExit:
				// An upgrade follows a scan's exit: what either said counts.
				x := seen[ev.Process]
				if x.name == "" {
					x.name, x.fromUsage = ev.Name, ev.NameFromUsage
				}
				x.usage = x.usage || (ev.Exit != nil && ev.Exit.Usage != nil)
				seen[ev.Process] = x
			}
		}
	}()
	if err := p.Go(); err != nil {
		bs.kill(p)
		return r, err
	}
	res, err := bs.finish(p)
	if err != nil {
		return r, fmt.Errorf("workload: %w", err)
	}
	select {
	case <-w.Done():
	case <-time.After(10 * time.Second):
		return r, fmt.Errorf("watcher: tree not over 10 s after the workload")
	}
	r.stats = w.Stats()
	sub.Close()
	<-done
	r.lost = lost
	for _, rec := range res.Kind(workload.KindStorm) {
		r.children++
		x, ok := lookupApprox(seen, rec)
		if !ok {
			continue
		}
		r.exits++
		if x.name != "" {
			r.named++
		}
		if x.name != "" && x.name == rec.Comm {
			r.right++
		}
		if x.fromUsage {
			r.fromUsage++
		}
		if x.usage {
			r.withUsage++
		}
	}
	return r, nil
}
