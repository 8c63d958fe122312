package reconcile

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

// helperEnv names the helper a re-executed test binary runs instead of the
// tests (see TestMain).
const helperEnv = "PWATCH_RECONCILE_HELPER"

func TestMain(m *testing.M) {
	switch h := os.Getenv(helperEnv); h {
	case "":
		os.Exit(m.Run())
	case "emfile":
		os.Exit(helperEMFILE())
	case "threads":
		helperThreads()
		os.Exit(0)
	case "hidepid":
		os.Exit(helperHidePID())
	case "nopidfd":
		os.Exit(helperNoPIDFD())
	default:
		fmt.Fprintf(os.Stderr, "unknown helper %q\n", h)
		os.Exit(2)
	}
}

// helperCmd returns a command that re-executes this test binary as the
// named helper.
func helperCmd(t testing.TB, name string, env ...string) *exec.Cmd {
	t.Helper()
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	c := exec.Command(exe, "-test.run=^$")
	c.Env = append(append(os.Environ(), helperEnv+"="+name), env...)
	return c
}

// runHelper runs a helper to its end and fails the test, with its output,
// unless it exits 0. Helpers print one line per failed check.
func runHelper(t *testing.T, c *exec.Cmd) string {
	t.Helper()
	var out bytes.Buffer
	c.Stdout, c.Stderr = &out, &out
	if err := c.Run(); err != nil {
		t.Fatalf("helper %v: %v\n%s", c.Env[len(c.Env)-1], err, out.String())
	}
	return out.String()
}

// checker collects the failed checks of a helper process, which has no
// testing.T.
type checker struct{ failed int }

func (c *checker) errorf(format string, args ...any) {
	c.failed++
	fmt.Printf("FAIL: "+format+"\n", args...)
}

func (c *checker) exit() int {
	if c.failed > 0 {
		return 1
	}
	return 0
}

// countFDs returns the number of descriptors this process has open.
func countFDs(t testing.TB) int {
	t.Helper()
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatal(err)
	}
	return len(ents)
}

// checkNoFDLeak fails the test if, at its end, this process has more
// descriptors open than when checkNoFDLeak was called.
func checkNoFDLeak(t *testing.T) {
	t.Helper()
	before := countFDs(t)
	t.Cleanup(func() {
		if after := countFDs(t); after > before {
			links := listFDs()
			t.Errorf("descriptors leaked: %d open before, %d after:\n%s", before, after, links)
		}
	})
}

func listFDs() string {
	ents, _ := os.ReadDir("/proc/self/fd")
	var b strings.Builder
	for _, e := range ents {
		l, _ := os.Readlink(filepath.Join("/proc/self/fd", e.Name()))
		fmt.Fprintf(&b, "  %s -> %s\n", e.Name(), l)
	}
	return b.String()
}

// tempProcRoot is a temporary fake proc root with a stat file that NewFS
// accepts; files maps paths below it to contents.
func tempProcRoot(t *testing.T, files map[string]string) (*FS, string) {
	t.Helper()
	root := t.TempDir()
	all := map[string]string{"stat": "cpu 1 2 3\nbtime 1700000000\n"}
	for k, v := range files {
		all[k] = v
	}
	for name, content := range all {
		p := filepath.Join(root, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	fs, err := NewFS(root)
	if err != nil {
		t.Fatal(err)
	}
	return fs, root
}

// startTicksOf reads a live process's start time or fails the test.
func startTicksOf(t testing.TB, fs *FS, pid int) uint64 {
	t.Helper()
	st, err := fs.ReadStat(pid)
	if err != nil {
		t.Fatalf("ReadStat(%d): %v", pid, err)
	}
	return st.StartTicks
}

// realFS returns the FS of /proc.
func realFS(t testing.TB) *FS {
	t.Helper()
	fs, err := NewFS("")
	if err != nil {
		t.Skipf("no /proc here: %v", err)
	}
	return fs
}

// waitZombie blocks until pid, a child of this process, has exited, and
// leaves it unreaped (a zombie), using waitid with WNOWAIT: a barrier, not
// a sleep.
func waitZombie(t testing.TB, pid int) {
	t.Helper()
	var info unix.Siginfo
	for {
		err := unix.Waitid(unix.P_PID, pid, &info, unix.WEXITED|unix.WNOWAIT, nil)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			t.Fatalf("waitid(%d): %v", pid, err)
		}
		return
	}
}
