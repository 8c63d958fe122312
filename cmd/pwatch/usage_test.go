package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/process-watchman/watchman"
	"github.com/spf13/pflag"
	"golang.org/x/sys/unix"
)

// usageProcs are exited processes with known usage, of both sources, and
// one without.
func usageProcs() []*proc {
	mk := func(pid int, cmd string, u *watchman.Usage) *proc {
		return &proc{id: watchman.Identity{PID: pid, StartTicks: 1}, name: strings.Fields(cmd)[0], cmdline: strings.Fields(cmd),
			exited: true, exit: watchman.Exit{StatusKnown: true, Usage: u}}
	}
	ts := func(user, sys time.Duration, rss uint64) *watchman.Usage {
		return &watchman.Usage{UserCPU: user, SystemCPU: sys, PeakRSS: rss, Threads: 1, Source: watchman.UsageTaskstats}
	}
	return []*proc{
		mk(10, "make -j8 all", &watchman.Usage{UserCPU: 2 * time.Second, SystemCPU: time.Second, PeakRSS: 20 << 20, Source: watchman.UsageWait4}),
		mk(11, "cc -c a.c", ts(300*time.Millisecond, 20*time.Millisecond, 110<<20)),
		mk(12, "cc -c b.c "+strings.Repeat("-Dlong ", 20), ts(900*time.Millisecond, 30*time.Millisecond, 90<<20)),
		mk(13, "ld -o prog", ts(100*time.Millisecond, 0, 300<<20)),
		mk(14, "true", ts(0, 0, 0)),
		mk(15, "as a.s", ts(50*time.Millisecond, 10*time.Millisecond, 5<<20)),
		mk(16, "as b.s", ts(40*time.Millisecond, 10*time.Millisecond, 6<<20)),
		mk(17, "gone", nil),
		{id: watchman.Identity{PID: 18}, name: "alive"},
	}
}

func TestSummarizeUsage(t *testing.T) {
	u := summarizeUsage(usageProcs(), "")
	if u.Known != 7 || u.Exited != 8 || u.Taskstats != 6 || u.Wait4 != 1 {
		t.Errorf("counts: %+v", u)
	}
	if want := 3390 * time.Millisecond; u.User != want || u.System != 1070*time.Millisecond {
		t.Errorf("user %v system %v", u.User, u.System)
	}
	pids := func(ps []*proc) []int {
		var out []int
		for _, p := range ps {
			out = append(out, p.id.PID)
		}
		return out
	}
	// true used nothing: it is in no list; as a.s and as b.s tie on CPU
	// (60 ms and 50 ms: no tie) and only five are listed.
	if got := pids(u.ByCPU); !equalInts(got, []int{10, 12, 11, 13, 15}) {
		t.Errorf("top by CPU: %v", got)
	}
	if got := pids(u.ByRSS); !equalInts(got, []int{13, 11, 12, 10, 16}) {
		t.Errorf("top by peak RSS: %v", got)
	}
}

func equalInts(a, b []int) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

func TestSummaryUsageGolden(t *testing.T) {
	var b bytes.Buffer
	procs := usageProcs()
	b.WriteString("--- both sources, 72 columns\n")
	writeSummary(&b, &summary{Verb: "run", Root: procs[0], RootEnded: true, Wall: 5 * time.Second, Processes: 9, Peak: 4,
		Width: 72, Usage: summarizeUsage(procs, "")})
	b.WriteString("--- taskstats missing for some\n")
	writeSummary(&b, &summary{Verb: "watch", Root: procs[1], RootEnded: true, Wall: time.Second, Processes: 3, Peak: 2,
		Width: 200, Usage: summarizeUsage([]*proc{procs[1], procs[7], procs[8]}, "")})
	b.WriteString("--- no usage at all\n")
	writeSummary(&b, &summary{Verb: "watch", Root: procs[7], RootEnded: true, Wall: time.Second, Processes: 1, Peak: 1,
		Width: 200, Usage: summarizeUsage(procs[7:], "taskstats: needs CAP_NET_ADMIN in the initial user namespace")})
	golden(t, "summary_usage.golden", b.Bytes())
	for _, line := range strings.Split(strings.TrimSuffix(b.String(), "\n"), "\n") {
		if strings.HasPrefix(line, "  ") && len([]rune(line)) > 72 {
			t.Errorf("list line longer than 72 columns: %q", line)
		}
	}
}

func TestFmtBytes(t *testing.T) {
	for n, want := range map[uint64]string{0: "0 B", 1023: "1023 B", 1024: "1.0 KiB", 110 << 20: "110.0 MiB", 3 << 30: "3.0 GiB", 5 << 40: "5.0 TiB"} {
		if got := fmtBytes(n); got != want {
			t.Errorf("fmtBytes(%d) = %q, want %q", n, got, want)
		}
	}
}

func TestSummaryWidth(t *testing.T) {
	var b bytes.Buffer // not a terminal
	t.Setenv("COLUMNS", "")
	if got := summaryWidth(&b); got != defaultSummaryWidth {
		t.Errorf("no COLUMNS, no terminal: %d, want %d", got, defaultSummaryWidth)
	}
	t.Setenv("COLUMNS", "132")
	if got := summaryWidth(&b); got != 132 {
		t.Errorf("COLUMNS=132: %d", got)
	}
	for _, bad := range []string{"wide", "0", "-5"} {
		t.Setenv("COLUMNS", bad)
		if got := summaryWidth(&b); got != defaultSummaryWidth {
			t.Errorf("COLUMNS=%q: %d, want %d", bad, got, defaultSummaryWidth)
		}
	}
}

func TestWait4Usage(t *testing.T) {
	ru := unix.Rusage{Utime: unix.Timeval{Sec: 1, Usec: 500}, Stime: unix.Timeval{Usec: 2500}, Maxrss: 2048, Nvcsw: 7, Nivcsw: 3}
	want := watchman.Usage{UserCPU: time.Second + 500*time.Microsecond, SystemCPU: 2500 * time.Microsecond, PeakRSS: 2 << 20,
		VoluntarySwitches: 7, InvoluntarySwitches: 3, Source: watchman.UsageWait4}
	if got := wait4Usage(&ru); *got != want {
		t.Errorf("wait4Usage = %+v, want %+v", *got, want)
	}
}

// TestUsageMerge: whatever the order of the Watcher's exit and pwatch's
// reap, a process keeps the taskstats Usage when there is one, and wait4's
// otherwise.
func TestUsageMerge(t *testing.T) {
	id := watchman.Identity{PID: 50, StartTicks: 9}
	at := time.Unix(1700000000, 0)
	ts := &watchman.Usage{UserCPU: time.Millisecond, Source: watchman.UsageTaskstats}
	w4 := &watchman.Usage{UserCPU: 5 * time.Millisecond, Source: watchman.UsageWait4}
	exitEv := func(u *watchman.Usage) *watchman.Event {
		return &watchman.Event{Type: watchman.EventExit, Time: at, Process: id, Depth: 2,
			Exit: &watchman.Exit{Identity: id, StatusKnown: true, Time: at, Usage: u}}
	}
	reapExit := watchman.Exit{Identity: id, StatusKnown: true, Time: at, Usage: w4}
	for _, tt := range []struct {
		name       string
		eventFirst bool
		evUsage    *watchman.Usage
		want       *watchman.Usage
	}{
		{"event with taskstats, then reap", true, ts, ts},
		{"reap, then event with taskstats", false, ts, ts},
		{"event without usage, then reap", true, nil, w4},
		{"reap, then event without usage", false, nil, w4},
	} {
		r := newRecorder(watchman.Identity{PID: 1})
		r.depthOff = 1
		if tt.eventFirst {
			r.apply(exitEv(tt.evUsage))
			r.reaped(id, "x", 1, reapExit, rusage{})
		} else {
			r.reaped(id, "x", 1, reapExit, rusage{})
			r.apply(exitEv(tt.evUsage))
		}
		if got := r.procs[id].exit.Usage; got != tt.want {
			t.Errorf("%s: usage %+v, want %+v", tt.name, got, tt.want)
		}
	}
	// A tombstone (status unknown) that came first gives way to the
	// kernel's status, and its usage stays when the later one has none.
	r := newRecorder(watchman.Identity{PID: 1})
	r.tombstone(&watchman.Tombstone{ProcessInfo: watchman.ProcessInfo{Identity: id}, Removed: at,
		Exit: watchman.Exit{Identity: id, Code: -1, Usage: ts}})
	r.apply(exitEv(nil))
	if p := r.procs[id]; !p.exit.StatusKnown || p.exit.Usage != ts || r.unknown != 0 {
		t.Errorf("tombstone then event: %+v, unknown %d", p.exit, r.unknown)
	}
}

func TestReapLineUsage(t *testing.T) {
	u := wait4Usage(&unix.Rusage{Utime: unix.Timeval{Sec: 2}, Maxrss: 1024, Nvcsw: 1})
	p := &proc{id: watchman.Identity{PID: 7, StartTicks: 3}, ppid: 1, name: "sh", cmdline: []string{"sh", "-c", "exit 1"},
		exited: true, end: time.Date(2025, 3, 1, 12, 0, 0, 0, time.UTC), exit: watchman.Exit{StatusKnown: true, Code: 1, Usage: u},
		rusage: rusage{UserNS: 2e9, MaxRSSKiB: 1024}}
	l := reapLine(p, u)
	b, err := json.Marshal(&l)
	if err != nil {
		t.Fatal(err)
	}
	want := `{"time":"2025-03-01T12:00:00.000000000Z","type":"reap","pid":7,"ppid":1,"start_ticks":3,"comm":"sh","cmdline":["sh","-c","exit 1"],"depth":0,"exit_code":1,` +
		`"rusage":{"user_ns":2000000000,"system_ns":0,"max_rss_kib":1024},` +
		`"usage":{"user_cpu_ns":2000000000,"system_cpu_ns":0,"wall_ns":0,"peak_rss_bytes":1048576,"read_bytes":0,"write_bytes":0,"voluntary_switches":1,"involuntary_switches":0,"cpu_delay_ns":0,"blkio_delay_ns":0,"swapin_delay_ns":0,"source":"wait4"}}`
	if string(b) != want {
		t.Errorf("reap line\n got %s\nwant %s", b, want)
	}
	// An exit line carries the Watcher's usage only.
	ev := watchman.Event{Type: watchman.EventExit, Time: p.end, Process: p.id, Exit: &watchman.Exit{StatusKnown: true}}
	if l := newEventLine(&ev, "sh", nil, 1, 0); l.Usage != nil {
		t.Errorf("exit line without usage has %+v", l.Usage)
	}
	// A name the library took from the kernel's accounting is marked.
	ev.NameFromUsage, ev.Name = true, "true"
	ev.Exit.Usage = &watchman.Usage{Command: "true", Source: watchman.UsageTaskstats}
	if l := newEventLine(&ev, "true", nil, 1, 0); !l.NameFromUsage || l.Usage.Command != "true" {
		t.Errorf("exit line named from usage: %+v", l)
	}
	if s := formatEvent(&ev, "true", nil, 1, 0); !strings.Contains(s, "(name from the kernel's accounting) [true]") {
		t.Errorf("human line named from usage: %q", s)
	}
}

func TestTraceSpanUsage(t *testing.T) {
	begin := time.Date(2025, 3, 1, 12, 0, 0, 0, time.UTC)
	u := &watchman.Usage{UserCPU: 3 * time.Millisecond, SystemCPU: time.Millisecond, Wall: 5 * time.Millisecond, PeakRSS: 4096,
		ReadBytes: 1, WriteBytes: 2, VoluntarySwitches: 3, InvoluntarySwitches: 4, CPUDelay: 5, BlkioDelay: 6, SwapinDelay: 7,
		Threads: 3, Source: watchman.UsageTaskstats}
	// One process ends before any flush (an "X" span), one after its "B".
	short := &proc{id: watchman.Identity{PID: 2}, ppid: 1, depth: 1, name: "short", start: begin, exactStart: true,
		exited: true, end: begin.Add(5 * time.Millisecond), exit: watchman.Exit{StatusKnown: true, Usage: u}}
	long := &proc{id: watchman.Identity{PID: 3}, ppid: 1, depth: 1, name: "long", start: begin, exactStart: true}
	var b bytes.Buffer
	tw := newTraceWriter(&b, begin, 1, 0, "connector")
	tw.update(short)
	tw.update(long)
	if err := tw.flush(); err != nil {
		t.Fatal(err)
	}
	long.exited, long.end, long.exit = true, begin.Add(time.Second), watchman.Exit{StatusKnown: true, Usage: u}
	tw.update(long)
	if err := tw.close(&recorder{order: []*proc{short, long}}, begin.Add(2*time.Second)); err != nil {
		t.Fatal(err)
	}
	var evs []decodedTrace
	if err := json.Unmarshal(b.Bytes(), &evs); err != nil {
		t.Fatal(err)
	}
	want := map[string]float64{"user_cpu_ns": 3e6, "system_cpu_ns": 1e6, "wall_ns": 5e6, "peak_rss_bytes": 4096, "read_bytes": 1,
		"write_bytes": 2, "voluntary_switches": 3, "involuntary_switches": 4, "cpu_delay_ns": 5, "blkio_delay_ns": 6,
		"swapin_delay_ns": 7, "threads": 3}
	checked := map[string]bool{}
	for _, e := range evs {
		if e.Ph != "X" && e.Ph != "E" {
			continue
		}
		key := e.Ph + " " + e.Name
		checked[key] = true
		for k, v := range want {
			if got, _ := e.Args[k].(float64); got != v {
				t.Errorf("%s: %s = %v, want %v", key, k, e.Args[k], v)
			}
		}
		if e.Args["usage_source"] != "taskstats" {
			t.Errorf("%s: usage_source %v", key, e.Args["usage_source"])
		}
	}
	if !checked["X short"] || !checked["E long"] {
		t.Errorf("spans checked: %v\n%s", checked, b.Bytes())
	}
}

func TestUsageFlag(t *testing.T) {
	for _, tt := range []struct {
		args []string
		want bool
	}{{nil, true}, {[]string{"--usage=false"}, false}, {[]string{"--usage"}, true}} {
		var of outputFlags
		fs := pflag.NewFlagSet("x", pflag.ContinueOnError)
		of.register(fs, false)
		if err := fs.Parse(tt.args); err != nil {
			t.Fatal(err)
		}
		var cfg watchman.Config
		of.apply(&cfg)
		if cfg.CaptureUsage != tt.want || !cfg.KeepTombstones {
			t.Errorf("%v: CaptureUsage %v, KeepTombstones %v", tt.args, cfg.CaptureUsage, cfg.KeepTombstones)
		}
	}
	for _, cmd := range []string{"run", "watch"} {
		stdout, _, _ := runPwatch(cmd, "--help")
		if !strings.Contains(stdout, "--usage") || !strings.Contains(stdout, "taskstats") {
			t.Errorf("%s --help does not document --usage:\n%s", cmd, stdout)
		}
	}
}

// TestCoalesceFlag: --coalesce gives the watcher a hub of its own that
// holds events that long; without it the hub is given autoCoalesce
// (attach decides whether it stays); 0 leaves the library's default (a
// private hub); a negative value is a usage error.
func TestCoalesceFlag(t *testing.T) {
	for _, tt := range []struct {
		args    []string
		want    time.Duration
		withHub bool
	}{{nil, autoCoalesce, true}, {[]string{"--coalesce=2ms"}, 2 * time.Millisecond, true}, {[]string{"--coalesce=0"}, 0, false}} {
		var of outputFlags
		fs := pflag.NewFlagSet("x", pflag.ContinueOnError)
		of.register(fs, false)
		if err := fs.Parse(tt.args); err != nil {
			t.Fatal(err)
		}
		of.pollInterval = time.Second
		if err := of.check(); err != nil {
			t.Fatalf("%v: %v", tt.args, err)
		}
		var cfg watchman.Config
		of.apply(&cfg)
		if of.coalescing() != tt.want || (cfg.Hub != nil) != tt.withHub {
			t.Errorf("%v: coalescing %v (want %v), hub %v (want one: %v)", tt.args, of.coalescing(), tt.want, cfg.Hub, tt.withHub)
		}
	}
	of := outputFlags{pollInterval: time.Second, coalesce: -time.Millisecond}
	var ue usageError
	if err := of.check(); !errors.As(err, &ue) {
		t.Errorf("--coalesce=-1ms: check = %v, want a usage error", err)
	}
	for _, cmd := range []string{"run", "watch"} {
		stdout, _, _ := runPwatch(cmd, "--help")
		if !strings.Contains(stdout, "--coalesce") {
			t.Errorf("%s --help does not document --coalesce:\n%s", cmd, stdout)
		}
	}
}

// TestKeepAuto: autoCoalesce stays where a late read loses nothing: in
// connector mode with exec images, and in polling mode, where it does
// nothing.
func TestKeepAuto(t *testing.T) {
	for _, tt := range []struct {
		mode   watchman.Mode
		reason string
		want   bool
	}{
		{watchman.ModeConnector, "", true},
		{watchman.ModeConnector, "no kernel tree filter", false},
		{watchman.ModePoll, "no kernel tree filter", true},
	} {
		if got := keepAuto(tt.mode, tt.reason); got != tt.want {
			t.Errorf("keepAuto(%s, %q) = %v, want %v", tt.mode, tt.reason, got, tt.want)
		}
	}
}

// TestAutoCoalesceSaid: as root, where the kernel filter records exec
// images, pwatch run reads events in batches by default and says so on
// its mode line; --coalesce=0 reads them at once.
func TestAutoCoalesceSaid(t *testing.T) {
	requireRoot(t, "the proc connector and the kernel filter's records need root")
	run := func(args ...string) (string, error) {
		out, err := exec.Command(binPath, append([]string{"run"}, append(args, "--", "/bin/true")...)...).CombinedOutput()
		return string(out), err
	}
	out, err := run()
	if err != nil || !strings.Contains(out, "pwatch: connector mode: ") || !strings.Contains(out, "up to 20ms late (--coalesce)") {
		t.Errorf("pwatch run (%v) did not say it reads in batches:\n%s", err, out)
	}
	out, err = run("--coalesce=0")
	if err != nil || strings.Contains(out, "late (--coalesce)") {
		t.Errorf("pwatch run --coalesce=0 (%v) says it reads in batches:\n%s", err, out)
	}
}

func TestMetricsUsageHistograms(t *testing.T) {
	w, err := watchman.Attach(os.Getpid(), &watchman.Config{Strategy: watchman.StrategyPoll, ReconcileInterval: -1})
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	m := newMetrics(w, func() int { return 0 })
	s := &session{metrics: m}
	u := &watchman.Usage{UserCPU: 1500 * time.Millisecond, SystemCPU: 500 * time.Millisecond, PeakRSS: 3 << 20, Source: watchman.UsageTaskstats}
	p := &proc{exited: true, exit: watchman.Exit{Usage: u}}
	s.countUsage(p)
	s.countUsage(p) // once per process
	s.countUsage(&proc{exited: true, exit: watchman.Exit{Usage: &watchman.Usage{UserCPU: time.Millisecond, PeakRSS: 1 << 30, Source: watchman.UsageWait4}}})
	s.countUsage(&proc{exited: true}) // no usage: not counted
	fams, err := m.reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	type key struct{ name, source string }
	got := map[key][2]float64{} // count, sum
	for _, f := range fams {
		for _, mt := range f.GetMetric() {
			if h := mt.GetHistogram(); h != nil {
				got[key{f.GetName(), mt.GetLabel()[0].GetValue()}] = [2]float64{float64(h.GetSampleCount()), h.GetSampleSum()}
			}
		}
	}
	want := map[key][2]float64{
		{"pwatch_exit_cpu_seconds", "taskstats"}:    {1, 2},
		{"pwatch_exit_cpu_seconds", "wait4"}:        {1, 0.001},
		{"pwatch_exit_peak_rss_bytes", "taskstats"}: {1, 3 << 20},
		{"pwatch_exit_peak_rss_bytes", "wait4"}:     {1, 1 << 30},
	}
	for k, v := range want {
		if got[k] != v {
			t.Errorf("%s{source=%q}: count, sum = %v, want %v", k.name, k.source, got[k], v)
		}
	}
	for _, name := range []string{"pwatch_usage_matched_total", "pwatch_usage_missing_total"} {
		found := false
		for _, f := range fams {
			found = found || f.GetName() == name
		}
		if !found {
			t.Errorf("no %s", name)
		}
	}
}
