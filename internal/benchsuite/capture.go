//go:build linux && (amd64 || arm64)

package main

import (
	"fmt"
	"slices"
	"time"

	"github.com/process-watchman/watchman"
	"github.com/process-watchman/watchman/internal/workload"
)

// captureMode is one way of watching in section 1.
type captureMode struct {
	name string
	cfg  watchman.Config
}

var captureModes = []captureMode{
	{"connector", watchman.Config{Strategy: watchman.StrategyConnector}},
	{"poll 100 ms", watchman.Config{Strategy: watchman.StrategyPoll, ReconcileInterval: 100 * time.Millisecond}},
	{"poll 10 ms", watchman.Config{Strategy: watchman.StrategyPoll, ReconcileInterval: 10 * time.Millisecond}},
}

type shape struct {
	name string
	spec func(life time.Duration) workload.Spec
}

func captureShapes() []shape {
	n := func(full, quick int) int {
		if opt.quick {
			return quick
		}
		return full
	}
	return []shape{
		{"fork only", func(l time.Duration) workload.Spec {
			return workload.Spec{Storm: &workload.Storm{Count: n(500, 100), Lifetime: l}}
		}},
		{"fork+exec sh", func(l time.Duration) workload.Spec {
			return workload.Spec{Storm: &workload.Storm{Count: n(200, 50), Lifetime: l, Mode: workload.ForkExec}}
		}},
		{"orphans", func(l time.Duration) workload.Spec {
			return workload.Spec{Orphans: &workload.Orphans{Count: n(200, 50), Lifetime: l}}
		}},
		{"chain 200 deep", func(l time.Duration) workload.Spec {
			return workload.Spec{Chain: &workload.Chain{Depth: 200, Lifetime: l}}
		}},
	}
}

var lifetimes = []time.Duration{0, time.Millisecond, 10 * time.Millisecond, 100 * time.Millisecond}

// sectionCapture: every shape and lifetime watched at once by a connector
// watcher and two polling watchers (100 ms and 10 ms background scans,
// plus a Poll at the end); capture is the share of the ground truth's
// identities that appear in Delta.Added over the run.
func sectionCapture(t *table) error {
	allFull := true
	for _, sh := range captureShapes() {
		for _, life := range lifetimes {
			res, got, overruns, err := captureOne(sh.spec(life))
			if err != nil {
				return fmt.Errorf("%s %v: %w", sh.name, life, err)
			}
			total := len(res.Records)
			cells := ""
			full := got[0] == total && overruns == 0
			allFull = allFull && full
			for i, m := range captureModes {
				if i > 0 {
					cells += " · "
				}
				cells += fmt.Sprintf("%s **%s**", m.name, pct(got[i], total))
				if i == 0 {
					cells += fmt.Sprintf(" (%d/%d, %d overruns)", got[i], total, overruns)
				}
			}
			t.add(1, fmt.Sprintf("capture: %s, children live %v", sh.name, life), cells,
				"connector 100%, no overrun", verdict(full))
		}
	}
	_ = allFull
	return nil
}

// captureOne runs one workload under the three watchers and returns the
// ground truth, each watcher's captured count and the connector's overruns.
func captureOne(spec workload.Spec) (*workload.Result, []int, int, error) {
	p, err := startWorkload(spec)
	if err != nil {
		return nil, nil, 0, err
	}
	ws := make([]*watchman.Watcher, len(captureModes))
	defer func() {
		for _, w := range ws {
			if w != nil {
				w.Close()
			}
		}
	}()
	for i, m := range captureModes {
		cfg := m.cfg
		w, err := watchman.Attach(p.PID(), &cfg)
		if err != nil {
			kill(p)
			return nil, nil, 0, fmt.Errorf("attach %s: %w", m.name, err)
		}
		ws[i] = w
	}
	seen := make([]idSet, len(ws))
	overruns := 0
	collect := func(i int) error {
		s, err := ws[i].Poll()
		if err != nil {
			return err
		}
		seen[i].addAll(s.Delta.Added)
		if i == 0 {
			overruns += s.Overruns
		}
		return nil
	}
	for i := range ws {
		seen[i] = idSet{}
		if err := collect(i); err != nil {
			kill(p)
			return nil, nil, 0, err
		}
	}
	if err := p.Go(); err != nil {
		kill(p)
		return nil, nil, 0, err
	}
	res, err := finish(p)
	if err != nil {
		return nil, nil, 0, fmt.Errorf("workload: %w", err)
	}
	// The connector watcher: wait until the root's exit, the last event,
	// is in.
	select {
	case <-ws[0].Done():
	case <-time.After(10 * time.Second):
		return nil, nil, 0, fmt.Errorf("connector watcher: tree not over 10 s after the workload")
	}
	got := make([]int, len(ws))
	for i := range ws {
		if err := collect(i); err != nil {
			return nil, nil, 0, err
		}
		got[i] = captured(res.Records, seen[i])
	}
	if extra := len(seen[0]) - got[0]; extra > 0 {
		logf("capture: the connector watcher added %d processes not in the ground truth", extra)
	}
	return res, got, overruns, nil
}

// sectionLatency: fork-to-delivery latency through Subscribe, for a paced
// storm and for a flat-out one.
func sectionLatency(t *table) error {
	runs := []struct {
		name string
		st   workload.Storm
	}{
		{"paced 1,000 forks/s", workload.Storm{Count: 2000, Rate: 1000}},
		{"flat-out storm", workload.Storm{Count: 3000}},
	}
	if opt.quick {
		runs[0].st.Count, runs[1].st.Count = 500, 1000
	}
	for i, r := range runs {
		lat, lost, err := latencyOne(workload.Spec{Storm: &r.st})
		if err != nil {
			return err
		}
		slices.Sort(lat)
		p50, p90, p99 := percentile(lat, 50), percentile(lat, 90), percentile(lat, 99)
		val := fmt.Sprintf("p50 %s, p90 %s, p99 %s, max %s (%d forks, %d lost)", us(p50), us(p90), us(p99), us(lat[len(lat)-1]), len(lat), lost)
		if i == 0 {
			t.add(2, "fork-to-delivery latency, "+r.name, val, "p50 ≤ 50 µs, p99 ≤ 1 ms",
				verdict(p50 <= 50*time.Microsecond && p99 <= time.Millisecond))
		} else {
			t.add(2, "fork-to-delivery latency, "+r.name+" (queueing included)", val, "(informative)", "—")
		}
	}
	return nil
}

func latencyOne(spec workload.Spec) ([]time.Duration, int, error) {
	p, err := startWorkload(spec)
	if err != nil {
		return nil, 0, err
	}
	w, err := watchman.Attach(p.PID(), &watchman.Config{Strategy: watchman.StrategyConnector})
	if err != nil {
		kill(p)
		return nil, 0, err
	}
	defer w.Close()
	sub := w.Subscribe(1 << 16)
	lat := make([]time.Duration, 0, 4096)
	lost := 0
	done := make(chan struct{})
	go func() {
		defer close(done)
		for ev := range sub.C {
			now := monoNow()
			switch {
			case ev.Type == watchman.EventLost:
				lost += int(ev.Lost)
			case ev.Type == watchman.EventFork && !ev.Synthetic:
				lat = append(lat, now-ev.KernelTime)
			}
		}
	}()
	if err := p.Go(); err != nil {
		kill(p)
		return nil, 0, err
	}
	if _, err := finish(p); err != nil {
		return nil, 0, err
	}
	select {
	case <-w.Done():
	case <-time.After(10 * time.Second):
	}
	sub.Close()
	<-done
	if len(lat) == 0 {
		return nil, 0, fmt.Errorf("no fork events delivered")
	}
	return lat, lost, nil
}
