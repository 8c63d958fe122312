//go:build linux && (amd64 || arm64)

package main

import (
	"fmt"
	"slices"
	"time"

	"github.com/process-watchman/watchman"
	"github.com/process-watchman/watchman/internal/benchref"
	"github.com/process-watchman/watchman/reconcile"
	"github.com/prometheus/procfs"
)

const hostTarget = 5000

// sectionReconcile: full host scans per 1,000 processes (the scanner,
// prometheus/procfs, a raw reused-buffer loop), and the tree-local
// reconcile of a 10-process tree, on a host with 5,000 processes.
func (bs *suite) sectionReconcile(t *table) error {
	tree, err := bs.startPool(10)
	if err != nil {
		return err
	}
	defer tree.stop()
	var fill *pool
	if n := hostTarget - procCount(); n > 0 {
		if fill, err = bs.startPool(n); err != nil {
			return err
		}
		defer fill.stop()
	}
	procs := procCount()
	logf("reconcile: %d processes on the host", procs)

	fs, err := reconcile.NewFS("")
	if err != nil {
		return err
	}
	pfs, err := procfs.NewFS("/proc")
	if err != nil {
		return err
	}
	sc := fs.NewScanner()
	var scan reconcile.Scan
	buf := make([]byte, 4096)
	methods := []struct {
		name string
		fn   func() error
	}{
		{"reconcile.Scanner", func() error { return sc.Scan(&scan) }},
		{"raw loop", func() error { return benchref.RawLoop(buf) }},
		{"procfs AllProcs+Stat", func() error {
			all, err := pfs.AllProcs()
			if err != nil {
				return err
			}
			for _, p := range all {
				_, _ = p.Stat()
			}
			return nil
		}},
	}
	iters := 15
	if bs.opt.quick {
		iters = 5
	}
	times := make([][]time.Duration, len(methods))
	for i := range iters + 1 {
		for j, m := range methods {
			t0 := time.Now()
			if err := m.fn(); err != nil {
				return fmt.Errorf("%s: %w", m.name, err)
			}
			if i > 0 { // the first round warms the caches
				times[j] = append(times[j], time.Since(t0))
			}
		}
	}
	med := make([]time.Duration, len(methods))
	per := func(d time.Duration) time.Duration { return d * 1000 / time.Duration(procs) }
	for j := range methods {
		slices.Sort(times[j])
		med[j] = percentile(times[j], 50)
	}
	scanner, raw, pf := per(med[0]), per(med[1]), per(med[2])
	t.add(4, fmt.Sprintf("full host scan per 1,000 processes (%d on the host, median of %d)", procs, iters),
		fmt.Sprintf("scanner **%s**, raw loop %s, procfs %s: scanner = %.2fx raw loop, procfs = %.2fx scanner",
			ms(scanner), ms(raw), ms(pf), float64(scanner)/float64(raw), float64(pf)/float64(scanner)),
		"≤ 1.1x raw loop, ≥ 1.5x faster than procfs",
		verdict(float64(scanner) <= 1.1*float64(raw) && float64(pf) >= 1.5*float64(scanner)))

	// Tree-local: Watcher.Stats() sampled faster than the reconciles run;
	// each reconcile that is not a full scan is a tree-local check
	// (checkMembers) whose duration LastReconcile holds.
	w, err := watchman.Attach(tree.root, &watchman.Config{Strategy: watchman.StrategyConnector, ReconcileInterval: 10 * time.Millisecond})
	if err != nil {
		return err
	}
	defer w.Close()
	var local, full []time.Duration
	prev := w.Stats()
	window := 3 * time.Second
	if bs.opt.quick {
		window = time.Second
	}
	for end := time.Now().Add(window); time.Now().Before(end); {
		time.Sleep(500 * time.Microsecond)
		st := w.Stats()
		switch {
		case st.Reconciles == prev.Reconciles+1 && st.FullScans == prev.FullScans:
			local = append(local, st.LastReconcile)
		case st.Reconciles == prev.Reconciles+1 && st.FullScans == prev.FullScans+1:
			full = append(full, st.LastReconcile)
		}
		prev = st
	}
	s, _ := w.Poll()
	if len(local) == 0 {
		return fmt.Errorf("no tree-local reconcile observed")
	}
	slices.Sort(local)
	slices.Sort(full)
	p50, p90, mx := percentile(local, 50), percentile(local, 90), local[len(local)-1]
	t.add(4, fmt.Sprintf("tree-local reconcile, %d-process tree on a %d-process host (Watcher.Stats, %d samples)", len(s.Processes)+1, procs, len(local)),
		fmt.Sprintf("p50 **%s**, p90 %s, max %s; the periodic full scans (every 10th) took p50 %s", us(p50), us(p90), us(mx), ms(percentile(full, 50))),
		"≤ 1 ms", verdict(p50 <= time.Millisecond))
	return nil
}

// sectionIdle: a default connector watcher on a quiet 10-process tree,
// in its own process, over bs.opt.idle.
func (bs *suite) sectionIdle(t *table) error {
	tree, err := bs.startPool(10)
	if err != nil {
		return err
	}
	defer tree.stop()
	logf("idle: %v window", bs.opt.idle)
	rep, err := runWatcher(watcherArgs{Strategy: "connector", Roots: []int{tree.root}, Inside: 1, Memory: true}, bs.opt.idle)
	if err != nil {
		return err
	}
	share := float64(rep.CPU) / float64(rep.Wall)
	bs.idleShare = share
	t.add(5, fmt.Sprintf("idle CPU, default connector watcher, %d-member tree, %.0f s", rep.Members, rep.Wall.Seconds()),
		fmt.Sprintf("**%.3f%% of a core** (%s CPU; %d reconciles, %d full scans; %d host events arrived meanwhile); RSS %.1f MiB",
			100*share, ms(rep.CPU), rep.Reconciles, rep.FullScans, hubEvents(rep.Hub), float64(rep.RSSAfter)/(1<<20)),
		"≤ 0.1% of a core", verdict(share <= 0.001))
	return nil
}

// sectionMembers: heap and RSS of a watcher attached to a tree of 10,000
// sleeping children.
func (bs *suite) sectionMembers(t *table) error {
	n := 10000
	if bs.opt.quick {
		n = 2000
	}
	if max, err := pidMax(); err == nil && procCount()+n+100 > max {
		return fmt.Errorf("pid_max %d is too low for %d more processes", max, n)
	}
	tree, err := bs.startPool(n)
	if err != nil {
		return err
	}
	defer tree.stop()
	rep, err := runWatcher(watcherArgs{Strategy: "connector", Roots: []int{tree.root}, Inside: 1, Memory: true}, 0)
	if err != nil {
		return err
	}
	heap := int64(rep.HeapAfter) - int64(rep.HeapBefore)
	rss := rep.RSSAfter - rep.RSSBefore
	perMember := float64(heap) / float64(rep.Members)
	t.add(5, fmt.Sprintf("memory with %d members (no command lines), attach %v", rep.Members, rep.Attach.Round(time.Millisecond)),
		fmt.Sprintf("**%.0f B per member** of heap (%.1f MiB); RSS +%.1f MiB (%.0f B per member), %.1f MiB in all",
			perMember, float64(heap)/(1<<20), float64(rss)/(1<<20), float64(rss)/float64(rep.Members), float64(rep.RSSAfter)/(1<<20)),
		"≤ 1 KiB per member", verdict(perMember <= 1024))
	return nil
}

func pidMax() (int, error) {
	fs, err := reconcile.NewFS("")
	if err != nil {
		return 0, err
	}
	return fs.PIDMax()
}
