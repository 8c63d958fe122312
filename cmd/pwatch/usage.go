package main

import (
	"cmp"
	"fmt"
	"io"
	"os"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/process-watchman/watchman"
)

// topUsage is how many processes each top list of the summary names.
const topUsage = 5

// usageSummary is what the summary says of the processes' resource usage
// (--usage): the total CPU of the tree and the processes that used the
// most.
type usageSummary struct {
	// User and System are the CPU times summed over the exits that have a
	// Usage; Known counts those exits, Exited all exits.
	User, System  time.Duration
	Known, Exited int
	// Taskstats and Wait4 count the Usages by source.
	Taskstats, Wait4 int
	// ByCPU and ByRSS are the topUsage processes that used the most CPU
	// and the highest peak RSS, most first.
	ByCPU, ByRSS []*proc
	// Reason says why usage could not be captured at all (the Watcher's
	// UsageReason), or "".
	Reason string
}

// summarizeUsage sums the usage of the exits in procs (in order of
// appearance); reason is the Watcher's WatcherStats.UsageReason.
func summarizeUsage(procs []*proc, reason string) *usageSummary {
	u := &usageSummary{Reason: reason}
	var known []*proc
	for _, p := range procs {
		if !p.exited {
			continue
		}
		u.Exited++
		x := p.exit.Usage
		if x == nil {
			continue
		}
		known = append(known, p)
		u.User += x.UserCPU
		u.System += x.SystemCPU
		if x.Source == watchman.UsageWait4 {
			u.Wait4++
		} else {
			u.Taskstats++
		}
	}
	u.Known = len(known)
	u.ByCPU = top(known, func(p *proc) uint64 { return uint64(cpuOf(p.exit.Usage)) })
	u.ByRSS = top(known, func(p *proc) uint64 { return p.exit.Usage.PeakRSS })
	return u
}

// cpuOf is the user plus system CPU of u.
func cpuOf(u *watchman.Usage) time.Duration { return u.UserCPU + u.SystemCPU }

// top returns the topUsage processes with the highest key, highest first
// (ties in order of appearance), leaving those whose key is zero out.
func top(procs []*proc, key func(*proc) uint64) []*proc {
	var out []*proc
	for _, p := range procs {
		if key(p) > 0 {
			out = append(out, p)
		}
	}
	slices.SortStableFunc(out, func(a, b *proc) int { return cmp.Compare(key(b), key(a)) })
	return out[:min(len(out), topUsage)]
}

// write prints the usage part of the summary.
func (u *usageSummary) write(b *strings.Builder, s *summary) {
	if u.Exited == 0 {
		return
	}
	if u.Known > 0 {
		fmt.Fprintf(b, "pwatch: CPU of the tree %s (user %s, system %s) from %d of %d exits\n",
			fmtDuration(u.User+u.System), fmtDuration(u.User), fmtDuration(u.System), u.Known, u.Exited)
	}
	if u.Wait4 > 0 {
		fmt.Fprintf(b, "pwatch: %s from wait4 (reaped by pwatch), which counts the children each waited for\n", plural(u.Wait4, "figure is", "figures are"))
	}
	if missing := u.Exited - u.Known; missing > 0 {
		why := u.Reason
		if why == "" {
			why = "the kernel's record did not come in time, or was lost"
		}
		fmt.Fprintf(b, "pwatch: no resource usage for %s: %s\n", plural(missing, "exit", "exits"), why)
	}
	list := func(title string, ps []*proc, value func(*proc) string) {
		if len(ps) == 0 {
			return
		}
		fmt.Fprintf(b, "pwatch: top %d by %s:\n", len(ps), title)
		for _, p := range ps {
			s.line(b, fmt.Sprintf("  %7d  %-10s ", p.id.PID, value(p)), commandText(p.name, p.cmdline), "")
		}
	}
	list("CPU", u.ByCPU, func(p *proc) string { return fmtDuration(cpuOf(p.exit.Usage)) })
	list("peak RSS", u.ByRSS, func(p *proc) string { return fmtBytes(p.exit.Usage.PeakRSS) })
}

// plural is "1 one" or "N many".
func plural(n int, one, many string) string {
	if n == 1 {
		return "1 " + one
	}
	return fmt.Sprintf("%d %s", n, many)
}

// fmtBytes is a size for people: 512 B, 4.0 KiB, 110.3 MiB, 2.0 GiB.
func fmtBytes(n uint64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	div, exp := uint64(unit), 0
	for m := n / unit; m >= unit && exp < 4; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f %ciB", float64(n)/float64(div), "KMGTP"[exp])
}

// defaultSummaryWidth is the width of the summary's list lines when
// neither COLUMNS nor the terminal says one.
const defaultSummaryWidth = 80

// summaryWidth is the width the summary's list lines are cut to: COLUMNS
// when it is a positive number, else the terminal width of w
// (TIOCGWINSZ), else defaultSummaryWidth.
func summaryWidth(w io.Writer) int {
	if n, err := strconv.Atoi(os.Getenv("COLUMNS")); err == nil && n > 0 {
		return n
	}
	if n := terminalWidth(w); n > 0 {
		return n
	}
	return defaultSummaryWidth
}
