package main

import (
	"fmt"
	"io"
	"strconv"
	"strings"
	"syscall"
	"time"
	"unicode/utf8"

	"github.com/process-watchman/watchman"
	"golang.org/x/sys/unix"
)

// eventTimeLayout is the clock time of human event lines.
const eventTimeLayout = "15:04:05.000000"

// formatEvent is the human line of one event, without a newline:
//
//	15:04:05.123456 fork  pid=1240 ppid=1234 depth=1 sh -c 'exit 5'
//	15:04:05.124001 exit  pid=1240 ppid=1234 code=5 after=551µs cpu=420µs rss=1.5MiB sh -c 'exit 5'
//
// lifetime is how long the process lived, for exits (0: not shown).
func formatEvent(ev *watchman.Event, name string, cmdline []string, depth int, lifetime time.Duration) string {
	return string(appendEvent(nil, ev, name, cmdline, depth, lifetime))
}

// appendEvent appends formatEvent's line to dst, escaped (escape), and
// returns the extended slice. It builds the line in place with strconv
// and time.AppendFormat: fmt and a string per part cost four times the
// JSON line's encoding (BenchmarkHumanLine), and pwatch watch writes
// both for every event.
func appendEvent(dst []byte, ev *watchman.Event, name string, cmdline []string, depth int, lifetime time.Duration) []byte {
	from := len(dst)
	b := ev.Time.AppendFormat(dst, eventTimeLayout)
	b = append(b, ' ')
	b = append(b, ev.Type...)
	for i := len(ev.Type); i < 5; i++ {
		b = append(b, ' ')
	}
	if ev.Type == watchman.EventLost {
		if ev.Overrun {
			b = append(b, " kernel overrun, "...)
			b = strconv.AppendUint(b, ev.Lost, 10)
			b = append(b, " events dropped host-wide; repairing from /proc"...)
		} else {
			b = append(b, ' ')
			b = strconv.AppendUint(b, ev.Lost, 10)
			b = append(b, " events dropped: pwatch fell behind"...)
		}
		return escapeFrom(b, from)
	}
	b = append(b, " pid="...)
	b = strconv.AppendInt(b, int64(ev.Process.PID), 10)
	if ev.PPID > 0 {
		b = append(b, " ppid="...)
		b = strconv.AppendInt(b, int64(ev.PPID), 10)
	}
	switch ev.Type {
	case watchman.EventFork, watchman.EventExec:
		b = append(b, " depth="...)
		b = strconv.AppendInt(b, int64(depth), 10)
	case watchman.EventExit:
		if ev.Exit != nil {
			b = append(b, ' ')
			b = append(b, exitText(ev.Exit, "=")...)
		}
		if lifetime > 0 {
			b = append(b, " after="...)
			b = append(b, fmtDuration(lifetime)...)
		}
		if ev.Exit != nil && ev.Exit.Usage != nil {
			b = append(b, " cpu="...)
			b = append(b, fmtDuration(cpuOf(ev.Exit.Usage))...)
			b = append(b, " rss="...)
			b = append(b, strings.ReplaceAll(fmtBytes(ev.Exit.Usage.PeakRSS), " ", "")...)
		}
	}
	if ev.Synthetic {
		b = append(b, " (found by /proc scan)"...)
	}
	if ev.NameFromUsage {
		b = append(b, " (name from the kernel's accounting)"...)
	}
	b = append(b, ' ')
	b = appendCommandText(b, name, cmdline)
	return escapeFrom(b, from)
}

// escapeFrom escapes b[from:] in place (escape), when it needs it.
func escapeFrom(b []byte, from int) []byte {
	if clean(b[from:]) {
		return b
	}
	return append(b[:from], escape(string(b[from:]))...)
}

// exitText says how a process ended: "code=5", "signal=SIGKILL(9)",
// "status=unknown" (with sep "="), or "exit 5", "signal SIGKILL(9)",
// "status unknown" (with sep " ").
func exitText(x *watchman.Exit, sep string) string {
	switch {
	case !x.StatusKnown:
		return "status" + sep + "unknown"
	case x.Signal > 0:
		s := "signal" + sep + signalName(x.Signal)
		if x.CoreDumped {
			s += " (core dumped)"
		}
		return s
	case sep == "=":
		return fmt.Sprintf("code=%d", x.Code)
	}
	return fmt.Sprintf("exit %d", x.Code)
}

// signalName is "SIGKILL(9)", or "9" for a number without a name.
func signalName(n int) string {
	if name := unix.SignalName(syscall.Signal(n)); name != "" {
		return fmt.Sprintf("%s(%d)", name, n)
	}
	return fmt.Sprint(n)
}

// commandText is the command line, quoted as a shell would need where an
// argument has spaces, or [comm] when there is none.
func commandText(name string, cmdline []string) string {
	return string(appendCommandText(nil, name, cmdline))
}

// appendCommandText appends commandText's text to b.
func appendCommandText(b []byte, name string, cmdline []string) []byte {
	if len(cmdline) == 0 {
		if name == "" {
			return append(b, "(command unknown)"...)
		}
		b = append(b, '[')
		b = append(b, name...)
		return append(b, ']')
	}
	for i, a := range cmdline {
		if i > 0 {
			b = append(b, ' ')
		}
		b = appendShellQuoted(b, a)
	}
	return b
}

// appendShellQuoted appends s to b, quoted as a shell would need it
// where it has to be.
func appendShellQuoted(b []byte, s string) []byte {
	if s != "" && !strings.ContainsAny(s, shellSpecial) {
		return append(b, s...)
	}
	b = append(b, '\'')
	for {
		i := strings.IndexByte(s, '\'')
		if i < 0 {
			break
		}
		b = append(b, s[:i]...)
		b = append(b, `'\''`...)
		s = s[i+1:]
	}
	b = append(b, s...)
	return append(b, '\'')
}

// shellSpecial are the bytes that make appendShellQuoted quote an argument.
const shellSpecial = " \t\n'\"\\$`&|;<>()*?[]{}!#~"

// escape makes s safe to print on one line: control characters (C0, DEL,
// C1), the bidirectional-text controls that reorder what a terminal shows,
// and bytes that are not UTF-8 are written as Go escapes (\n, \x1b,
// \u202e), so that a command line can neither break a line, forge one,
// nor drive the terminal.
func escape(s string) string {
	if clean(s) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); {
		r, n := utf8.DecodeRuneInString(s[i:])
		switch {
		case r == utf8.RuneError && n == 1:
			fmt.Fprintf(&b, `\x%02x`, s[i])
		case r == '\n':
			b.WriteString(`\n`)
		case r == '\t':
			b.WriteString(`\t`)
		case r == '\r':
			b.WriteString(`\r`)
		case r < 0x80 && needsEscape(r):
			fmt.Fprintf(&b, `\x%02x`, r)
		case needsEscape(r):
			fmt.Fprintf(&b, `\u%04x`, r)
		default:
			b.WriteString(s[i : i+n])
		}
		i += n
	}
	return b.String()
}

// clean says whether s needs no escape: the common case, checked a byte
// at a time while the bytes are printable ASCII.
func clean[T string | []byte](s T) bool {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c >= 0x80 {
			for _, r := range string(s[i:]) {
				if needsEscape(r) {
					return false
				}
			}
			return true
		} else if c < ' ' || c == 0x7f {
			return false
		}
	}
	return true
}

func needsEscape(r rune) bool {
	switch {
	case r < ' ', r == 0x7f, r >= 0x80 && r < 0xa0, r == utf8.RuneError:
		return true
	case r == 0x200e, r == 0x200f, r >= 0x202a && r <= 0x202e, r >= 0x2066 && r <= 0x2069:
		return true
	}
	return false
}

// cut shortens s to width columns (counting runes), ending in "…".
// width <= 0 means no cut.
func cut(s string, width int) string {
	if width <= 0 || utf8.RuneCountInString(s) <= width {
		return s
	}
	r := []rune(s)
	return string(r[:max(width-1, 0)]) + "…"
}

// fmtDuration rounds d for people: 850µs, 12.3ms, 1.523s, 2m3s.
func fmtDuration(d time.Duration) string {
	switch {
	case d < time.Millisecond:
		return d.Round(time.Microsecond).String()
	case d < time.Second:
		return d.Round(100 * time.Microsecond).String()
	case d < time.Minute:
		return d.Round(time.Millisecond).String()
	}
	return d.Round(time.Second).String()
}

// summary is what pwatch says on stderr when a run or a watch ends.
type summary struct {
	// Verb is "run" or "watch".
	Verb string
	// Root is the root process; RootEnded says whether it ended while
	// watched, RootExit how.
	Root      *proc
	RootEnded bool
	// Wall is how long the run or the watch lasted.
	Wall time.Duration
	// Processes counts the processes seen, the root included; AtStart
	// those already there when the watch began; Peak the most alive at
	// once.
	Processes, AtStart, Peak int
	// Failed are the processes that exited non-zero or were killed.
	Failed []*proc
	// Left are the processes still alive when the root exited (run), with
	// their age then.
	Left    []leftProc
	Waited  bool   // --wait or --kill-left waited for them
	Killed  string // what --kill-left did, or ""
	Alive   int    // members still alive at the end
	Unknown int    // exits with an unknown status
	// Lost, Markers and Overrun describe lost events.
	Lost    uint64
	Markers int
	Overrun bool
	// Truncated says --max-depth or --max-descendants kept processes out.
	Truncated bool
	// Usage is the resource usage of the exits (--usage), or nil.
	Usage *usageSummary
	// Stopped says why a watch ended early ("interrupted by SIGINT"), or
	// "".
	Stopped string
	// Notes are lines of their own at the end (containment, blind spots,
	// failures of pwatch's own work).
	Notes []string
	// Limit caps each list (0 = no cap); Width is the width of a line
	// (lines are cut to it); Events is the --events file, where the whole
	// lists are.
	Limit, Width int
	Events       string
}

// leftProc is a process left behind by the root.
type leftProc struct {
	PID     int
	Age     time.Duration
	Command string
	// Approx says Age comes from the start time in /proc, which counts
	// in clock ticks (10 ms).
	Approx bool
}

// ageText is a left-behind process's age.
func (l *leftProc) ageText() string {
	if l.Approx && l.Age < 10*time.Millisecond {
		return "<10ms"
	}
	return fmtDuration(l.Age)
}

// writeSummary prints the summary, each line starting with "pwatch: " or
// two spaces.
func writeSummary(w io.Writer, s *summary) {
	var b strings.Builder
	root := "root"
	if s.Root != nil {
		root = fmt.Sprintf("%s (pid %d)", escape(s.Root.name), s.Root.id.PID)
		switch {
		case s.RootEnded && s.Root.exited:
			fmt.Fprintf(&b, "pwatch: %s %s after %s%s\n", root, endText(&s.Root.exit), fmtDuration(s.Root.lifetime(time.Time{})), usageText(s.Root))
		case s.RootEnded:
			fmt.Fprintf(&b, "pwatch: %s has ended\n", root)
		default:
			fmt.Fprintf(&b, "pwatch: %s is still running\n", root)
		}
	}
	if s.Stopped != "" {
		fmt.Fprintf(&b, "pwatch: %s %s\n", s.Verb, s.Stopped)
	}
	fmt.Fprintf(&b, "pwatch: %s, %d at most at once, in %s\n", countText(s), s.Peak, fmtDuration(s.Wall))
	if len(s.Failed) > 0 {
		fmt.Fprintf(&b, "pwatch: %d failed:\n", len(s.Failed))
		for i, p := range s.Failed {
			if s.Limit > 0 && i == s.Limit {
				s.more(&b, len(s.Failed)-i)
				break
			}
			mark := ""
			if s.Root != nil && p == s.Root {
				mark = " (root)"
			}
			s.line(&b, fmt.Sprintf("  %7d  %-22s ", p.id.PID, exitText(&p.exit, " ")), commandText(p.name, p.cmdline), mark)
		}
	}
	if s.Unknown > 0 {
		fmt.Fprintf(&b, "pwatch: %d exited with an unknown status (found gone by a /proc scan)\n", s.Unknown)
	}
	if s.Usage != nil {
		s.Usage.write(&b, s)
	}
	if s.Verb == "run" {
		if len(s.Left) == 0 {
			b.WriteString("pwatch: nothing left behind\n")
		} else {
			fmt.Fprintf(&b, "pwatch: %d left behind when the root exited:\n", len(s.Left))
			for i, l := range s.Left {
				if s.Limit > 0 && i == s.Limit {
					s.more(&b, len(s.Left)-i)
					break
				}
				s.line(&b, fmt.Sprintf("  %7d  age %-18s ", l.PID, l.ageText()), l.Command, "")
			}
			if s.Killed != "" {
				fmt.Fprintf(&b, "pwatch: %s\n", s.Killed)
			}
		}
	}
	if s.Alive > 0 && (s.Verb != "run" || s.Waited) {
		fmt.Fprintf(&b, "pwatch: %d still alive\n", s.Alive)
	}
	if s.Truncated {
		b.WriteString("pwatch: --max-depth or --max-descendants kept processes out of the tree\n")
	}
	if s.Markers > 0 {
		why := "pwatch fell behind"
		if s.Overrun {
			why = "the kernel's socket buffer overran"
		}
		fmt.Fprintf(&b, "pwatch: events were lost %d times (%d events; %s): the tree was repaired from /proc, but processes that lived in the gap may be missing\n",
			s.Markers, s.Lost, why)
	}
	for _, n := range s.Notes {
		fmt.Fprintf(&b, "pwatch: %s\n", escape(n))
	}
	io.WriteString(w, b.String())
}

// line writes one list line: prefix, then the command line escaped and cut
// so that the line fits s.Width, then mark.
func (s *summary) line(b *strings.Builder, prefix, command, mark string) {
	room := s.Width - utf8.RuneCountInString(prefix) - utf8.RuneCountInString(mark)
	if s.Width <= 0 {
		room = 0
	} else if room < 20 {
		room = 20
	}
	b.WriteString(prefix + cut(escape(command), room) + mark + "\n")
}

// more says how many a list left out, and where they are.
func (s *summary) more(b *strings.Builder, n int) {
	where := "see --events"
	if s.Events == "" {
		where = "--events FILE records every one"
	} else if s.Events != "-" {
		where = "see " + escape(s.Events)
	}
	fmt.Fprintf(b, "  … and %d more (%s)\n", n, where)
}

func countText(s *summary) string {
	n := fmt.Sprintf("%d processes", s.Processes)
	if s.Processes == 1 {
		n = "1 process"
	}
	if s.Verb == "run" {
		return n + " (root included)"
	}
	return fmt.Sprintf("%s (%d there at the start)", n, s.AtStart)
}

// usageText is the CPU time wait4 reported for p, when pwatch reaped it:
// its own and that of the descendants it waited for. (Its peak RSS, in
// the reap line, would be the launcher's for a small COMMAND.)
func usageText(p *proc) string {
	if !p.reaped {
		return ""
	}
	return fmt.Sprintf(" (CPU %s user, %s system, with the children it waited for)",
		fmtDuration(time.Duration(p.rusage.UserNS)), fmtDuration(time.Duration(p.rusage.SystemNS)))
}

// endText says how the root ended: "exited with status 7", "was killed by
// SIGTERM(15)".
func endText(x *watchman.Exit) string {
	switch {
	case !x.StatusKnown:
		return "exited (status unknown)"
	case x.Signal > 0:
		return "was killed by " + signalName(x.Signal)
	}
	return fmt.Sprintf("exited with status %d", x.Code)
}
