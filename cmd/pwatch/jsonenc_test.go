package main

import (
	"bytes"
	"encoding/json"
	"reflect"
	"strconv"
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
	exitSig := watchman.Event{Type: watchman.EventExit, Time: at, Process: id, Synthetic: true, Upgrade: true, NameFromUsage: true,
		Exit: &watchman.Exit{StatusKnown: true, Code: -1, Signal: 11, CoreDumped: true,
			Usage: &watchman.Usage{UserCPU: -1, PeakRSS: 1<<64 - 1, Command: "true", Source: "taskstats"}}}
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

// decodedTrace is a trace event as a reader decodes it (and, marshalled
// by encoding/json, the reference for appendTraceEvent).
type decodedTrace struct {
	Name string         `json:"name"`
	Cat  string         `json:"cat,omitempty"`
	Ph   string         `json:"ph"`
	TS   float64        `json:"ts"`
	Dur  *float64       `json:"dur,omitempty"`
	PID  int            `json:"pid"`
	TID  int            `json:"tid"`
	S    string         `json:"s,omitempty"`
	Args map[string]any `json:"args,omitempty"`
}

// TestAppendTraceEvent: appendTraceEvent writes the bytes encoding/json
// writes for the same event with its args in a map.
func TestAppendTraceEvent(t *testing.T) {
	floats := []float64{0, 1, -1, 0.001, 1.5, 123456.789, 1e-6, 9.99e-7, 1e-7, 1.234e-9, 1e20, 1e21, 1.5e25, -2e-8, 1<<53 + 1}
	var evs []traceEvent
	for i, f := range floats {
		s := hostileStrings[i%len(hostileStrings)]
		dur := floats[len(floats)-1-i]
		ev := traceEvent{Name: s, Cat: s, Ph: "X", TS: f, Dur: &dur, PID: -i, TID: i << 20, S: s, Args: traceArgs{
			strArg("cmdline", s), intArg("pid", int64(i)-3), uintArg("start_ticks", 1<<63+uint64(i)), boolArg("alive_at_end", i%2 == 0),
			strArg(s+"key", "v"), intArg("min", -1<<63),
		}}
		evs = append(evs, ev)
	}
	var many traceArgs // more args than appendTraceEvent sorts by index
	for i := range 40 {
		many = append(many, intArg(strconv.Itoa(i*7919%40), int64(i)))
	}
	evs = append(evs, traceEvent{Name: "many", Args: many})
	evs = append(evs, traceEvent{Name: "pwatch", Ph: "i"}, traceEvent{Args: traceArgs{}}, traceEvent{Name: "m", Ph: "M", Args: traceArgs{strArg("name", "x")}})
	// And the events of a real trace.
	begin := time.Date(2025, 3, 1, 12, 0, 0, 0, time.UTC)
	u := &watchman.Usage{UserCPU: 3, Threads: 2, Source: watchman.UsageTaskstats}
	p := &proc{id: watchman.Identity{PID: 9, StartTicks: 4}, ppid: 1, depth: 1, name: "a\nb", cmdline: []string{"a", "<&>"},
		start: begin, started: begin, exited: true, end: begin.Add(time.Millisecond), exit: watchman.Exit{StatusKnown: true, Usage: u}}
	evs = append(evs, traceEvent{Name: "x", Ph: "X", Args: addUsageArgs(traceArgs{strArg("exit", exitText(&p.exit, " "))}, u)})

	for i := range evs {
		ref := decodedTrace{Name: evs[i].Name, Cat: evs[i].Cat, Ph: evs[i].Ph, TS: evs[i].TS, Dur: evs[i].Dur,
			PID: evs[i].PID, TID: evs[i].TID, S: evs[i].S}
		if len(evs[i].Args) > 0 {
			ref.Args = map[string]any{}
			for _, a := range evs[i].Args {
				switch a.kind {
				case 's':
					ref.Args[a.key] = a.s
				case 'i':
					ref.Args[a.key] = a.i
				case 'u':
					ref.Args[a.key] = a.u
				default:
					ref.Args[a.key] = a.u != 0
				}
			}
		}
		want, err := json.Marshal(&ref)
		if err != nil {
			t.Fatal(err)
		}
		if got := appendTraceEvent(nil, &evs[i]); !bytes.Equal(got, want) {
			t.Errorf("event %d:\n got %s\nwant %s", i, got, want)
		}
	}
	var b bytes.Buffer
	tw := newTraceWriter(&b, begin, 1, 0, "poll")
	tw.update(p)
	if err := tw.close(&recorder{order: []*proc{p}}, begin.Add(time.Second)); err != nil {
		t.Fatal(err)
	}
	var back []decodedTrace
	if err := json.Unmarshal(b.Bytes(), &back); err != nil || len(back) != 4 {
		t.Fatalf("%v: %s", err, b.Bytes())
	}
}
