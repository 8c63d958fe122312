package reconcile

import (
	"errors"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestParseStat(t *testing.T) {
	tail := " 0 0 0 0 0 0 0 0 20 0 7 0 123456 1000 100 18446744073709551615 1 1 0"
	tests := []struct {
		name string
		in   string
		want Stat
	}{
		{"plain", "42 (sleep) S 1 42 42 0 -1 4194560" + tail + "\n",
			Stat{PID: 42, Comm: "sleep", State: 'S', PPID: 1, NumThreads: 7, StartTicks: 123456}},
		{"spaces and parens", "42 (a) (b c) R 9 42 42 0 -1 4194560" + tail,
			Stat{PID: 42, Comm: "a) (b c", State: 'R', PPID: 9, NumThreads: 7, StartTicks: 123456}},
		{"newline in name", "42 (x\ny) Z 9 42 42 0 -1 4194560" + tail,
			Stat{PID: 42, Comm: "x\ny", State: 'Z', PPID: 9, NumThreads: 7, StartTicks: 123456}},
		{"15-byte comm", "42 (abcdefghijklmno) S 9 42 42 0 -1 4194560" + tail,
			Stat{PID: 42, Comm: "abcdefghijklmno", State: 'S', PPID: 9, NumThreads: 7, StartTicks: 123456}},
		{"empty name", "42 () S 0 0 0 0 -1 4194560" + tail,
			Stat{PID: 42, Comm: "", State: 'S', PPID: 0, NumThreads: 7, StartTicks: 123456}},
		{"ends at starttime", "42 (k) I 2 0 0 0 -1 0 0 0 0 0 0 0 0 0 20 0 1 0 99",
			Stat{PID: 42, Comm: "k", State: 'I', PPID: 2, NumThreads: 1, StartTicks: 99}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ParseStat([]byte(tt.in))
			if err != nil {
				t.Fatalf("ParseStat: %v", err)
			}
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("ParseStat mismatch (-want +got):\n%s", diff)
			}
		})
	}
}

func TestParseStatErrors(t *testing.T) {
	good := "42 (sleep) S 1 42 42 0 -1 4194560 0 0 0 0 0 0 0 0 20 0 7 0 123456 1000"
	tests := []struct {
		name, in, reason string
	}{
		{"empty", "", "no command name"},
		{"no parens", "42 sleep S 1", "no command name"},
		{"bad pid", "4x2 (sleep) S 1", "bad pid"},
		{"zero pid", "0 (sleep) S 1", "bad pid"},
		{"negative pid", "-1 (sleep) S 1", "bad pid"},
		{"unterminated", "42 (sleep S 1 2 3", "unterminated command name"},
		{"truncated after name", "42 (sleep)", "missing state"},
		{"truncated before starttime", good[:strings.Index(good, " 123456")], "bad starttime"},
		{"bad state", "42 (sleep) SS 1", "bad state"},
		{"bad ppid", "42 (sleep) S x 42", "bad ppid"},
		{"huge ppid", "42 (sleep) S 99999999999 42 42 0 -1 4194560 0 0 0 0 0 0 0 0 20 0 7 0 123456", "bad ppid"},
		{"double space", "42 (sleep) S  1", "field 4: empty"},
		{"no space after name", "42 (sleep)S 1", "field 3: expected a space"},
		{"starttime overflow", "42 (sleep) S 1 42 42 0 -1 4194560 0 0 0 0 0 0 0 0 20 0 7 0 99999999999999999999999", "bad starttime"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := ParseStat([]byte(tt.in))
			if !errors.Is(err, ErrBadStat) {
				t.Fatalf("ParseStat(%q) = %v, want ErrBadStat", tt.in, err)
			}
			var se *StatError
			if !errors.As(err, &se) || se.Reason != tt.reason {
				t.Errorf("reason = %v, want %q", err, tt.reason)
			}
		})
	}
}

func TestIsLive(t *testing.T) {
	tests := []struct {
		state   byte
		threads int
		want    bool
	}{
		{'R', 1, true}, {'S', 1, true}, {'D', 1, true}, {'T', 1, true}, {'I', 1, true},
		{'Z', 1, false}, {'Z', 0, false}, {'X', 1, false},
		{'Z', 4, true}, // a zombie leader whose other threads run on
	}
	for _, tt := range tests {
		if got := IsLive(tt.state, tt.threads); got != tt.want {
			t.Errorf("IsLive(%c, %d) = %v, want %v", tt.state, tt.threads, got, tt.want)
		}
	}
}

func FuzzParseStat(f *testing.F) {
	f.Add([]byte("42 (sleep) S 1 42 42 0 -1 4194560 0 0 0 0 0 0 0 0 20 0 7 0 123456 1000 100\n"))
	f.Add([]byte("1 (a) (b) Z 0 0 0 0 -1 0 0 0 0 0 0 0 0 0 20 0 1 0 1"))
	f.Add([]byte("7 ()"))
	f.Fuzz(func(t *testing.T, b []byte) {
		st, err := ParseStat(b)
		if err != nil {
			if !errors.Is(err, ErrBadStat) {
				t.Fatalf("error %v does not wrap ErrBadStat", err)
			}
			return
		}
		if st.PID <= 0 || st.PPID < 0 || st.NumThreads < 0 {
			t.Fatalf("accepted impossible values: %+v", st)
		}
	})
}
