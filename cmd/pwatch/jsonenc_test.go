package main

import (
	"bytes"
	"encoding/json"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/process-watchman/watchman"
	"golang.org/x/sys/unix"
)

// hostileStrings are command-line arguments that JSON must escape, or
// that look like they must.
var hostileStrings = []string{
	"", "plain", `quote " and backslash \`, "tab\tnewline\nreturn\rbackspace\bformfeed\f",
	"nul \x00 bell \x07 esc \x1b[2J unit \x1f del \x7f", "<script>&amp;</script>",
	"é 日本 🎉 combining e\u0301", "line sep \u2028 para sep \u2029", "bidi \u202e override",
	"c1 \u0085 next line", "bad utf-8 \xff\xfe end", "truncated \xe6\x97", "lone continuation \x80",
	"surrogate half \xed\xa0\x80", "replacement char itself \ufffd", "/slash/ and 'single'",
}

// allSet fills every field of the struct v points to, recursively, with a
// value that is not zero, so that a field added later shows in
// encoding/json's output.
func allSet(t *testing.T, v reflect.Value, n *int) {
	t.Helper()
	*n++
	switch v.Kind() {
	case reflect.Pointer:
		v.Set(reflect.New(v.Type().Elem()))
		allSet(t, v.Elem(), n)
	case reflect.Struct:
		for i := range v.NumField() {
			allSet(t, v.Field(i), n)
		}
	case reflect.String:
		v.SetString(hostileStrings[*n%len(hostileStrings)] + "x")
	case reflect.Int, reflect.Int64:
		v.SetInt(int64(*n) * -1e9)
	case reflect.Uint64:
		v.SetUint(uint64(*n) << 40)
	case reflect.Bool:
		v.SetBool(true)
	case reflect.Slice:
		s := reflect.MakeSlice(v.Type(), 3, 3)
		for i := range 3 {
			allSet(t, s.Index(i), n)
		}
		v.Set(s)
	default:
		t.Fatalf("allSet: no value for a %v", v.Type())
	}
}

// TestAppendEventLine: appendEventLine writes the bytes encoding/json
// writes, for lines of every type, hostile command lines, and a line
// with every field set.
func TestAppendEventLine(t *testing.T) {
	at := time.Date(2025, 3, 1, 12, 0, 0, 1, time.UTC)
	id := watchman.Identity{PID: 4242, StartTicks: 1 << 40}
	var lines []eventLine
	for _, s := range hostileStrings {
		for _, typ := range []watchman.EventType{watchman.EventFork, watchman.EventExec, watchman.EventExit} {
			ev := watchman.Event{Type: typ, Time: at, Process: id, PPID: 1, Name: s, Cmdline: []string{s, "-c", s}, Depth: 3}
			if typ == watchman.EventExit {
				ev.Exit = &watchman.Exit{StatusKnown: true, Code: 0}
			}
			lines = append(lines, newEventLine(&ev, ev.Name, ev.Cmdline, ev.Depth, time.Millisecond))
		}
	}
	_, _, evs := fixedEvents()
	for i := range evs {
		lines = append(lines, newEventLine(&evs[i], evs[i].Name, evs[i].Cmdline, evs[i].Depth, 0))
	}
	exitSig := watchman.Event{Type: watchman.EventExit, Time: at, Process: id, Synthetic: true, Upgrade: true,
		Exit: &watchman.Exit{StatusKnown: true, Code: -1, Signal: 11, CoreDumped: true,
			Usage: &watchman.Usage{UserCPU: -1, PeakRSS: 1<<64 - 1, Source: "taskstats"}}}
	lines = append(lines, newEventLine(&exitSig, "", []string{}, 0, -5))
	p := &proc{id: id, ppid: 1, name: "sh", cmdline: []string{"sh", "\xff"}, exited: true, end: at,
		exit: watchman.Exit{StatusKnown: true, Code: 7}, rusage: rusage{UserNS: 1, SystemNS: 2, MaxRSSKiB: 3}}
	lines = append(lines, reapLine(p, wait4Usage(&unix.Rusage{Utime: unix.Timeval{Sec: 1}, Maxrss: 10, Nvcsw: 4})))
	snap := watchman.Snapshot{Time: at, Processes: []watchman.ProcessInfo{{Identity: id}, {Identity: watchman.Identity{PID: 1}}}}
	lines = append(lines, snapshotLine(&snap), snapshotLine(&watchman.Snapshot{Time: at}))
	lost, over := uint64(0), false
	lines = append(lines, eventLine{Time: jsonTime(at), Type: "lost", Lost: &lost, Overrun: &over}, eventLine{})
	var full eventLine
	n := 0
	allSet(t, reflect.ValueOf(&full).Elem(), &n)
	lines = append(lines, full)

	for i := range lines {
		want, err := json.Marshal(&lines[i])
		if err != nil {
			t.Fatal(err)
		}
		if got := appendEventLine(nil, &lines[i]); !bytes.Equal(got, want) {
			t.Errorf("line %d:\n got %s\nwant %s", i, got, want)
		}
	}
	// Appending keeps what the buffer held.
	if got := string(appendEventLine([]byte("x"), &lines[0])); !strings.HasPrefix(got, `x{"time"`) {
		t.Errorf("appended to %q", got)
	}
}

// FuzzAppendJSONString: any string is quoted as encoding/json quotes it.
func FuzzAppendJSONString(f *testing.F) {
	for _, s := range hostileStrings {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		want, err := json.Marshal(s)
		if err != nil {
			t.Fatal(err)
		}
		if got := appendJSONString(nil, s); !bytes.Equal(got, want) {
			t.Errorf("%q:\n got %s\nwant %s", s, got, want)
		}
	})
}
