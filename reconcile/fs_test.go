package reconcile

import (
	"errors"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

const fakeRoot = "testdata/proc"

func fakeFS(t *testing.T) *FS {
	t.Helper()
	fs, err := NewFS(fakeRoot)
	if err != nil {
		t.Fatalf("NewFS: %v", err)
	}
	return fs
}

func TestNewFSRejectsNonProcfs(t *testing.T) {
	empty := t.TempDir()
	noBtime := t.TempDir()
	if err := os.WriteFile(filepath.Join(noBtime, "stat"), []byte("cpu 1 2 3\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, root := range []string{empty, noBtime, filepath.Join(empty, "missing")} {
		if _, err := NewFS(root); !errors.Is(err, ErrNotProcfs) {
			t.Errorf("NewFS(%q) = %v, want ErrNotProcfs", root, err)
		}
	}
}

func TestFakeFS(t *testing.T) {
	fs := fakeFS(t)
	if got, want := fs.BootTime(), time.Unix(1700000000, 0); !got.Equal(want) {
		t.Errorf("BootTime = %v, want %v", got, want)
	}
	if got, want := fs.TicksToTime(1050), time.Unix(1700000010, 500e6); !got.Equal(want) {
		t.Errorf("TicksToTime = %v, want %v", got, want)
	}
	if n, err := fs.PIDMax(); err != nil || n != 32768 {
		t.Errorf("PIDMax = %d, %v", n, err)
	}
	st, err := fs.ReadStat(102)
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(Stat{PID: 102, Comm: "a) (b c", State: 'R', PPID: 101, NumThreads: 3, StartTicks: 1200}, st); diff != "" {
		t.Errorf("ReadStat(102) (-want +got):\n%s", diff)
	}
	if _, err := fs.ReadStat(999); !errors.Is(err, ErrGone) {
		t.Errorf("ReadStat(999) = %v, want ErrGone", err)
	}
}

func TestCmdline(t *testing.T) {
	fs := fakeFS(t)
	tests := []struct {
		pid, max  int
		want      []string
		truncated bool
	}{
		{100, 0, []string{"bash", "-c", "sleep 100"}, false},
		{100, 7, []string{"bash", "-c"}, true},
		{100, 6, []string{"bash", "-"}, true},
		{100, 17, []string{"bash", "-c", "sleep 100"}, false}, // "bash -c sleep 100" fits exactly
		{100, 16, []string{"bash", "-c", "sleep 10"}, true},
		{103, 0, nil, false},
	}
	for _, tt := range tests {
		got, trunc, err := fs.Cmdline(tt.pid, tt.max)
		if err != nil {
			t.Fatalf("Cmdline(%d): %v", tt.pid, err)
		}
		if diff := cmp.Diff(tt.want, got); diff != "" || trunc != tt.truncated {
			t.Errorf("Cmdline(%d, %d) truncated=%v (-want +got):\n%s", tt.pid, tt.max, trunc, diff)
		}
	}
	if _, _, err := fs.Cmdline(999, 0); !errors.Is(err, ErrGone) {
		t.Errorf("Cmdline(999) = %v, want ErrGone", err)
	}
}

func TestScanFake(t *testing.T) {
	fs := fakeFS(t)
	sc := fs.NewScanner()
	var s Scan
	if err := sc.Scan(&s); err != nil {
		t.Fatal(err)
	}
	type row struct {
		PID, PPID int
		Comm      string
		Live      bool
		Start     uint64
	}
	var got []row
	for i := range s.Entries {
		e := &s.Entries[i]
		got = append(got, row{e.PID, e.PPID, s.Comm(i), e.Live(), e.StartTicks})
	}
	// The fake tree lists in directory order, which is not sorted on every
	// filesystem; compare as a set.
	byPID := map[int]row{}
	for _, r := range got {
		byPID[r.PID] = r
	}
	want := map[int]row{
		1:   {1, 0, "init", true, 5},
		100: {100, 1, "bash", true, 1000},
		101: {101, 100, "sleep", true, 1100},
		102: {102, 101, "a) (b c", true, 1200},
		103: {103, 100, "dead", false, 1300},
		150: {150, 1, "orphan", true, 1400},
		200: {200, 1, "other", true, 900},
		201: {201, 200, "otherkid", true, 950},
		106: {106, 102, "threadkid", true, 1250},
	}
	if diff := cmp.Diff(want, byPID); diff != "" || len(got) != len(want) {
		t.Errorf("Scan (-want +got):\n%s", diff)
	}
	// A second scan into the same value reuses it and gives the same result.
	if err := sc.Scan(&s); err != nil || len(s.Entries) != len(want) {
		t.Errorf("rescan: %d entries, %v", len(s.Entries), err)
	}
}

func TestScanRealProc(t *testing.T) {
	fs, err := NewFS("")
	if err != nil {
		t.Skipf("no /proc here: %v", err)
	}
	sc := fs.NewScanner()
	var s Scan
	if err := sc.Scan(&s); err != nil {
		t.Fatal(err)
	}
	self := os.Getpid()
	found := false
	for i := range s.Entries {
		e := &s.Entries[i]
		if e.PID == self {
			found = true
			if e.PPID != os.Getppid() {
				t.Errorf("own ppid = %d, want %d", e.PPID, os.Getppid())
			}
			st, err := fs.ReadStat(self)
			if err != nil || st.StartTicks != e.StartTicks || st.Comm != s.Comm(i) {
				t.Errorf("ReadStat(self) = %+v, %v; scan has %v %q", st, err, e, s.Comm(i))
			}
		}
	}
	if !found {
		t.Errorf("scan of %d processes did not list this process %d", len(s.Entries), self)
	}
	e, comm, ok, err := sc.Lookup(self)
	if err != nil || !ok || e.PID != self || string(comm) != "reconcile.test" {
		t.Errorf("Lookup(self) = %v, %q, %v, %v", e, comm, ok, err)
	}
	if _, _, ok, err := sc.Lookup(1 << 30); ok || err != nil {
		t.Errorf("Lookup of a missing PID = %v, %v", ok, err)
	}
}

func TestAppendDirentPIDsRejectsGarbage(t *testing.T) {
	// A record whose length runs past the buffer stops the parse instead of
	// reading out of bounds.
	b := make([]byte, 24)
	b[16] = 200
	if got := appendDirentPIDs(nil, b); len(got) != 0 {
		t.Errorf("got %v from a broken record", got)
	}
	if got := appendDirentPIDs(nil, b[:5]); len(got) != 0 {
		t.Errorf("got %v from a short buffer", got)
	}
}

func TestSplitCmdlineKeepsEmptyArguments(t *testing.T) {
	for _, tt := range []struct {
		in   string
		want []string
	}{
		{"", nil},
		{"sh\x00", []string{"sh"}},
		{"sh\x00-c\x00\x00", []string{"sh", "-c", ""}},
		{"a\x00\x00\x00", []string{"a", "", ""}},
		{"rewritten title", []string{"rewritten title"}},
	} {
		if got := SplitCmdline([]byte(tt.in)); !slices.Equal(got, tt.want) {
			t.Errorf("SplitCmdline(%q) = %q, want %q", tt.in, got, tt.want)
		}
	}
}
