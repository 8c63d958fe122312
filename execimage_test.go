package watchman

import (
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/process-watchman/watchman/reconcile"
)

// TestExecImageCmdlineAsProc: a recorded command line gives what reading
// /proc/PID/cmdline with the same cap gives (reconcile.FS.Cmdline is the
// oracle), whether the record holds all of it or stops at 4096 bytes; a
// cap beyond what the record holds of a longer command line is refused.
func TestExecImageCmdlineAsProc(t *testing.T) {
	root := t.TempDir()
	if err := os.WriteFile(filepath.Join(root, "stat"), []byte("cpu 0 0 0 0\nbtime 1700000000\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	fs, err := reconcile.NewFS(root)
	if err != nil {
		t.Fatal(err)
	}
	long := strings.Repeat("x", 5000)
	lines := [][]string{
		{"/bin/true"},
		{"sh", "-c", "exit 5"},
		{"a", "", ""},
		{strings.Repeat("y", 9)},
		{strings.Repeat("y", 10)},
		{strings.Repeat("y", 11)},
		{"cc", long},
		{strings.Repeat("z", 4095)},
		{strings.Repeat("z", 4096)},
	}
	const recordMax = 4096
	for i, args := range lines {
		raw := []byte(strings.Join(args, "\x00") + "\x00")
		pid := 100 + i
		dir := filepath.Join(root, strconv.Itoa(pid))
		if err := os.MkdirAll(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, "cmdline"), raw, 0o644); err != nil {
			t.Fatal(err)
		}
		im := execImage{comm: "c", args: raw[:min(len(raw), recordMax)], fullLen: len(raw)}
		for _, max := range []int{1, 9, 10, 11, 12, 4095, 4096, 4097, 8192} {
			want, wantTrunc, err := fs.Cmdline(pid, max)
			if err != nil {
				t.Fatal(err)
			}
			got, trunc, ok := im.cmdline(max)
			short := min(max, len(raw)) > len(im.args) // the record stops before what the cap asks
			if ok == short {
				t.Errorf("line %d, cap %d: ok %v, with %d of %d bytes recorded", i, max, ok, len(im.args), len(raw))
				continue
			}
			if !ok {
				continue
			}
			if !slices.Equal(got, want) || trunc != wantTrunc {
				t.Errorf("line %d, cap %d: %d args (truncated %v), /proc gives %d (truncated %v)", i, max, len(got), trunc, len(want), wantTrunc)
			}
		}
	}
}
