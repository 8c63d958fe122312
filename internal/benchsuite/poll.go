//go:build linux && (amd64 || arm64)

package main

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"time"

	"github.com/process-watchman/watchman/internal/cstorm"
)

const pidMaxPath = "/proc/sys/kernel/pid_max"

// psutilResult is what scripts/pollbench.py prints.
type psutilResult struct {
	Polls     int     `json:"polls"`
	Members   int     `json:"members"`
	HostProcs int     `json:"host_procs"`
	CPUms     float64 `json:"cpu_ms_per_poll"`
	Wallms    float64 `json:"wall_ms_per_poll"`
	Version   string  `json:"psutil"`
}

// sectionPollCost (issue 13): CPU per Watcher.Poll in polling mode
// (StrategyPoll, the defaults otherwise) on a 10-process tree on hosts of
// bs.opt.hosts processes, and on 100- and 1,000-process trees on the
// 5,000-process host, against psutil's children(recursive=True) plus
// create_time() on the same tree and host, in the same run. The host is
// filled with idle C processes (cstorm hold); pid_max is raised for them
// if needed and restored after.
func (bs *suite) sectionPollCost(t *table) error {
	var hosts []int
	for _, f := range strings.Split(bs.opt.hosts, ",") {
		h, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil || h <= 0 {
			return fmt.Errorf("bad host size %q", f)
		}
		hosts = append(hosts, h)
	}
	top := 0
	for _, h := range hosts {
		top = max(top, h)
	}
	if old, err := pidMax(); err == nil && old < top+12000 {
		want := max(65536, top+12000)
		if err := os.WriteFile(pidMaxPath, []byte(strconv.Itoa(want)), 0o644); err != nil {
			return fmt.Errorf("pid_max %d is too low for %d processes and cannot be raised: %v", old, top, err)
		}
		logf("poll: pid_max raised from %d to %d for the filler (restored after)", old, want)
		defer func() {
			if err := os.WriteFile(pidMaxPath, []byte(strconv.Itoa(old)), 0o644); err != nil {
				logf("poll: WARNING: could not restore pid_max %d: %v", old, err)
			}
		}()
	}
	psutilNote := ""
	if out, err := exec.Command(bs.opt.python, "-c", "import psutil").CombinedOutput(); err != nil {
		psutilNote = fmt.Sprintf("psutil not measured: %s -c 'import psutil': %v %s (apt-get install -y python3-psutil)", bs.opt.python, err, strings.TrimSpace(string(out)))
		logf("poll: %s", psutilNote)
	}
	for _, host := range hosts {
		trees := []int{10}
		if host == 5000 {
			trees = []int{10, 100, 1000}
		}
		for _, size := range trees {
			if err := bs.pollHost(t, host, size, psutilNote); err != nil {
				return err
			}
		}
	}
	return nil
}

// pollHost measures one tree size on one host size: the tree, then
// filler up to the host size (a fresh filler each time, so that every
// configuration has its size), then the polls.
func (bs *suite) pollHost(t *table, host, size int, psutilNote string) error {
	tree, stopTree, err := bs.hold(size)
	if err != nil {
		return err
	}
	defer stopTree()
	if n := host - procCount(); n > 1 {
		_, stopFill, err := bs.hold(n)
		if err != nil {
			return fmt.Errorf("filler of %d processes: %w", n, err)
		}
		defer stopFill()
	}
	return bs.pollOne(t, host, size, tree, psutilNote)
}

func (bs *suite) pollOne(t *table, host, size int, tree *cstorm.Hold, psutilNote string) error {
	procs := procCount()
	t.markLoad()
	logf("poll: %d-process tree on a %d-process host (load %s)", size, procs, t.load)
	polls := min(max(20000/size, 20), 500)
	if bs.opt.quick {
		polls = min(polls, 50)
	}
	rep, err := runWatcher(watcherArgs{Strategy: "poll", Roots: []int{tree.PID()}, Inside: 1, Polls: polls}, 0)
	if err != nil {
		return err
	}
	if rep.Polls == 0 {
		return fmt.Errorf("poll: no Poll completed")
	}
	per := rep.CPU / time.Duration(rep.Polls)
	wall := rep.Wall / time.Duration(rep.Polls)
	val := fmt.Sprintf("**%s CPU per Poll** (wall %s; %d Polls, the watcher process's getrusage; %d members + the root)", ms(per), ms(wall), rep.Polls, rep.Members)
	ok := per <= time.Millisecond
	if psutilNote != "" {
		val += "; " + psutilNote
		ok = false
	} else {
		ps, err := bs.psutilPolls(tree.PID(), host)
		if err != nil {
			val += fmt.Sprintf("; psutil failed: %v", err)
			ok = false
		} else {
			ratio := ps.CPUms / (float64(per) / 1e6)
			val += fmt.Sprintf("; psutil %s children(recursive=True)+create_time() **%.2f ms** per poll (%d polls, %d processes found, host %d listed): **%.0fx** ours",
				ps.Version, ps.CPUms, ps.Polls, ps.Members, ps.HostProcs, ratio)
			ok = ok && ratio >= 30
		}
	}
	name := fmt.Sprintf("Poll mode, %d-process tree, host of %d processes (%d listed)", size, host, procs)
	if size == 10 {
		t.add(7, name, val, "≤ 1 ms per Poll, ≥ 30x less than psutil", verdict(ok))
	} else {
		t.add(7, name, val, "(cost grows with the tree)", "—")
	}
	return nil
}

// psutilPolls runs scripts/pollbench.py on the tree.
func (bs *suite) psutilPolls(root, host int) (psutilResult, error) {
	var r psutilResult
	polls := 20
	if host >= 10000 {
		polls = 10
	}
	if bs.opt.quick {
		polls = 5
	}
	out, err := exec.Command(bs.opt.python, bs.opt.pollPy, "--pid", strconv.Itoa(root), "--polls", strconv.Itoa(polls)).Output()
	if err != nil {
		return r, fmt.Errorf("%s: %v", bs.opt.pollPy, err)
	}
	if err := json.Unmarshal(out, &r); err != nil {
		return r, fmt.Errorf("%s: %v: %q", bs.opt.pollPy, err, out)
	}
	return r, nil
}
