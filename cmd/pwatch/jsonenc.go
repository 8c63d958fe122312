package main

import (
	"math"
	"slices"
	"strconv"
	"strings"
	"unicode/utf8"

	"github.com/process-watchman/watchman"
)

// appendEventLine appends l as encoding/json would marshal it (the same
// bytes: field order, omitempty, escaping), without reflection or
// allocation. Measured on the 2-vCPU VM (BenchmarkEncodeLine, medians of
// 6): encoding/json took 1.4 µs and one allocation per line, this
// 0.53 µs and none; in a CPU profile of pwatch watch --events on a fork
// storm, encoding/json was 2.8% of pwatch's samples. TestAppendEventLine
// checks it against encoding/json, every field set, so a field added to
// eventLine or watchman.Usage must be added here too.
func appendEventLine(b []byte, l *eventLine) []byte {
	b = append(b, `{"time":`...)
	b = appendJSONString(b, l.Time)
	b = append(b, `,"type":`...)
	b = appendJSONString(b, l.Type)
	if l.PID != 0 {
		b = appendIntField(b, "pid", int64(l.PID))
	}
	if l.PPID != 0 {
		b = appendIntField(b, "ppid", int64(l.PPID))
	}
	if l.StartTicks != 0 {
		b = appendUintField(b, "start_ticks", l.StartTicks)
	}
	if l.Comm != "" {
		b = append(b, `,"comm":`...)
		b = appendJSONString(b, l.Comm)
	}
	if len(l.Cmdline) > 0 {
		b = appendStringsField(b, "cmdline", l.Cmdline)
	}
	if l.CommBase64 != "" {
		b = append(b, `,"comm_base64":`...)
		b = appendJSONString(b, l.CommBase64)
	}
	if len(l.CmdlineBase64) > 0 {
		b = appendStringsField(b, "cmdline_base64", l.CmdlineBase64)
	}
	if l.Depth != nil {
		b = appendIntField(b, "depth", int64(*l.Depth))
	}
	if l.Synthetic != nil {
		b = appendBoolField(b, "synthetic", *l.Synthetic)
	}
	if l.Upgrade {
		b = appendBoolField(b, "upgrade", true)
	}
	if l.NameFromUsage {
		b = appendBoolField(b, "name_from_usage", true)
	}
	if l.ExitCode != nil {
		b = appendIntField(b, "exit_code", int64(*l.ExitCode))
	}
	if l.Signal != 0 {
		b = appendIntField(b, "signal", int64(l.Signal))
	}
	if l.CoreDumped {
		b = appendBoolField(b, "core_dumped", true)
	}
	if l.LifetimeNS != 0 {
		b = appendIntField(b, "lifetime_ns", l.LifetimeNS)
	}
	if r := l.Rusage; r != nil {
		b = append(b, `,"rusage":{"user_ns":`...)
		b = strconv.AppendInt(b, r.UserNS, 10)
		b = appendIntField(b, "system_ns", r.SystemNS)
		b = appendIntField(b, "max_rss_kib", r.MaxRSSKiB)
		b = append(b, '}')
	}
	if l.Usage != nil {
		b = appendUsage(append(b, `,"usage":`...), l.Usage)
	}
	if l.Lost != nil {
		b = appendUintField(b, "lost", *l.Lost)
	}
	if l.Overrun != nil {
		b = appendBoolField(b, "overrun", *l.Overrun)
	}
	if l.Live != nil {
		b = appendIntField(b, "live", int64(*l.Live))
	}
	if l.RootAlive != nil {
		b = appendBoolField(b, "root_alive", *l.RootAlive)
	}
	if len(l.PIDs) > 0 {
		b = append(b, `,"pids":[`...)
		for i, pid := range l.PIDs {
			if i > 0 {
				b = append(b, ',')
			}
			b = strconv.AppendInt(b, int64(pid), 10)
		}
		b = append(b, ']')
	}
	return append(b, '}')
}

// appendUsage appends u as the object its JSON tags describe.
func appendUsage(b []byte, u *watchman.Usage) []byte {
	b = append(b, `{"user_cpu_ns":`...)
	b = strconv.AppendInt(b, int64(u.UserCPU), 10)
	b = appendIntField(b, "system_cpu_ns", int64(u.SystemCPU))
	b = appendIntField(b, "wall_ns", int64(u.Wall))
	b = appendUintField(b, "peak_rss_bytes", u.PeakRSS)
	b = appendUintField(b, "read_bytes", u.ReadBytes)
	b = appendUintField(b, "write_bytes", u.WriteBytes)
	b = appendUintField(b, "voluntary_switches", u.VoluntarySwitches)
	b = appendUintField(b, "involuntary_switches", u.InvoluntarySwitches)
	b = appendIntField(b, "cpu_delay_ns", int64(u.CPUDelay))
	b = appendIntField(b, "blkio_delay_ns", int64(u.BlkioDelay))
	b = appendIntField(b, "swapin_delay_ns", int64(u.SwapinDelay))
	if u.Threads != 0 {
		b = appendIntField(b, "threads", int64(u.Threads))
	}
	if u.Command != "" {
		b = append(b, `,"command":`...)
		b = appendJSONString(b, u.Command)
	}
	b = append(b, `,"source":`...)
	b = appendJSONString(b, u.Source)
	return append(b, '}')
}

// appendIntField appends ,"name":n (name needs no escaping).
func appendIntField(b []byte, name string, n int64) []byte {
	b = append(append(append(b, `,"`...), name...), `":`...)
	return strconv.AppendInt(b, n, 10)
}

// appendUintField appends ,"name":n.
func appendUintField(b []byte, name string, n uint64) []byte {
	b = append(append(append(b, `,"`...), name...), `":`...)
	return strconv.AppendUint(b, n, 10)
}

// appendBoolField appends ,"name":v.
func appendBoolField(b []byte, name string, v bool) []byte {
	b = append(append(append(b, `,"`...), name...), `":`...)
	return strconv.AppendBool(b, v)
}

// appendStringsField appends ,"name":[...].
func appendStringsField(b []byte, name string, ss []string) []byte {
	b = append(append(append(b, `,"`...), name...), `":[`...)
	for i, s := range ss {
		if i > 0 {
			b = append(b, ',')
		}
		b = appendJSONString(b, s)
	}
	return append(b, ']')
}

// jsonHex are the digits of \u escapes.
const jsonHex = "0123456789abcdef"

// appendJSONString appends s quoted as encoding/json.Marshal quotes it:
// ", \ and the control characters escaped (\b \f \n \r \t by name, the
// others as \u00XX), <, > and & as \u003c \u003e \u0026 (HTML-safe),
// U+2028 and U+2029 as \u2028 \u2029, and each byte that is not UTF-8 as
// \ufffd.
func appendJSONString(b []byte, s string) []byte {
	b = append(b, '"')
	start := 0
	for i := 0; i < len(s); {
		c := s[i]
		if c < utf8.RuneSelf {
			if c >= ' ' && c != '"' && c != '\\' && c != '<' && c != '>' && c != '&' {
				i++
				continue
			}
			b = append(b, s[start:i]...)
			switch c {
			case '"', '\\':
				b = append(b, '\\', c)
			case '\b':
				b = append(b, '\\', 'b')
			case '\f':
				b = append(b, '\\', 'f')
			case '\n':
				b = append(b, '\\', 'n')
			case '\r':
				b = append(b, '\\', 'r')
			case '\t':
				b = append(b, '\\', 't')
			default:
				b = append(b, '\\', 'u', '0', '0', jsonHex[c>>4], jsonHex[c&0xf])
			}
			i++
			start = i
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		switch {
		case r == utf8.RuneError && size == 1:
			b = append(append(b, s[start:i]...), `\ufffd`...)
		case r == '\u2028' || r == '\u2029':
			b = append(append(b, s[start:i]...), '\\', 'u', '2', '0', '2', jsonHex[r&0xf])
		default:
			i += size
			continue
		}
		i += size
		start = i
	}
	return append(append(b, s[start:]...), '"')
}

// appendTraceEvent appends ev as encoding/json would marshal it with Args
// a map (keys sorted), without reflection or allocation. A short
// process's two trace events (its name and its span, usage included) cost
// about 24 µs and 75 allocations through maps and encoding/json, and 2.9 µs
// and 6 allocations this way (BenchmarkTraceProcess, medians of 4-5 on the
// 2-vCPU VM). TestAppendTraceEvent checks it against encoding/json.
func appendTraceEvent(b []byte, ev *traceEvent) []byte {
	b = append(b, `{"name":`...)
	b = appendJSONString(b, ev.Name)
	if ev.Cat != "" {
		b = append(b, `,"cat":`...)
		b = appendJSONString(b, ev.Cat)
	}
	b = append(b, `,"ph":`...)
	b = appendJSONString(b, ev.Ph)
	b = appendJSONFloat(append(b, `,"ts":`...), ev.TS)
	if ev.Dur != nil {
		b = appendJSONFloat(append(b, `,"dur":`...), *ev.Dur)
	}
	b = appendIntField(b, "pid", int64(ev.PID))
	b = appendIntField(b, "tid", int64(ev.TID))
	if ev.S != "" {
		b = append(b, `,"s":`...)
		b = appendJSONString(b, ev.S)
	}
	if len(ev.Args) > 0 {
		// The keys' order, sorted as indexes: moving the args themselves
		// (pointers, under write barriers) cost more than the rest.
		var order [32]uint8
		sorted := len(ev.Args) > len(order)
		if sorted {
			slices.SortFunc(ev.Args, func(x, y traceArg) int { return strings.Compare(x.key, y.key) })
		} else {
			for i := range ev.Args {
				order[i] = uint8(i)
			}
			slices.SortFunc(order[:len(ev.Args)], func(x, y uint8) int { return strings.Compare(ev.Args[x].key, ev.Args[y].key) })
		}
		b = append(b, `,"args":{`...)
		for i := range ev.Args {
			a := &ev.Args[i]
			if !sorted {
				a = &ev.Args[order[i]]
			}
			if i > 0 {
				b = append(b, ',')
			}
			b = append(appendJSONString(b, a.key), ':')
			switch a.kind {
			case 's':
				b = appendJSONString(b, a.s)
			case 'i':
				b = strconv.AppendInt(b, a.i, 10)
			case 'u':
				b = strconv.AppendUint(b, a.u, 10)
			default:
				b = strconv.AppendBool(b, a.u != 0)
			}
		}
		b = append(b, '}')
	}
	return append(b, '}')
}

// appendJSONFloat appends f as encoding/json writes a float64: the
// shortest decimal, in exponent form below 1e-6 and from 1e21 on (with
// e-7, not e-07). f must be finite.
func appendJSONFloat(b []byte, f float64) []byte {
	format := byte('f')
	if abs := math.Abs(f); abs != 0 && (abs < 1e-6 || abs >= 1e21) {
		format = 'e'
	}
	b = strconv.AppendFloat(b, f, format, -1, 64)
	if format == 'e' {
		if n := len(b); n >= 4 && b[n-4] == 'e' && b[n-3] == '-' && b[n-2] == '0' {
			b[n-2] = b[n-1]
			b = b[:n-1]
		}
	}
	return b
}
