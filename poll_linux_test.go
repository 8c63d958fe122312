package watchman

import (
	"bufio"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestPollOddNames is TestIntegrationOddNames in polling mode, which needs
// no privilege: names with spaces, parentheses, a newline and ") S 1", 15
// and 16 bytes, read by a walk of the tree. The shell says when every
// sleeper has been started; the test then polls until each has exec'd
// (the name a fork shows first is the shell's), and the Poll that shows
// them all must list exactly the shell's children, with the names cut to
// the kernel's 15 bytes and the command lines whole.
func TestPollOddNames(t *testing.T) {
	dir := t.TempDir()
	names := []string{"a) (b c", "x)y", "fifteen_bytes_x", "sixteen_bytes_xy", "new\nline) S 1"}
	script := "read x"
	for _, n := range names {
		if err := os.Symlink("/bin/sleep", dir+"/"+n); err != nil {
			t.Fatal(err)
		}
		script += "\n'" + dir + "/" + n + "' 1000 &"
	}
	script += "\necho started\nwait"
	sh := exec.Command("sh", "-c", script)
	stdin, err := sh.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := sh.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	sh.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := sh.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { syscall.Kill(-sh.Process.Pid, syscall.SIGKILL); sh.Wait() })
	w := mustAttach(t, sh.Process.Pid, &Config{Strategy: StrategyPoll, CaptureCmdline: true})
	if _, err := stdin.Write([]byte("go\n")); err != nil {
		t.Fatal(err)
	}
	if l, err := bufio.NewReader(stdout).ReadString('\n'); err != nil || l != "started\n" {
		t.Fatalf("shell said %q: %v", l, err)
	}
	want := []string{"a) (b c", "fifteen_bytes_x", "new\nline) S 1", "sixteen_bytes_x", "x)y"} // comm keeps 15 bytes
	var s Snapshot
	deadline := time.Now().Add(60 * time.Second)
	for {
		s = mustPoll(t, w)
		var got []string
		for _, p := range s.Processes {
			got = append(got, p.Name)
		}
		slices.Sort(got)
		if slices.Equal(got, want) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("names %q 60 s after the shell started the sleepers, want %q", got, want)
		}
		time.Sleep(time.Millisecond)
	}
	if kids := childrenOf(t, sh.Process.Pid); !slices.Equal(s.PIDs(), kids) {
		t.Errorf("members %v, the shell's children %v", s.PIDs(), kids)
	}
	for _, p := range s.Processes {
		if len(p.Cmdline) != 2 || !strings.HasPrefix(p.Cmdline[0], dir+"/") || p.Cmdline[1] != "1000" || p.Depth != 1 || p.Parent != sh.Process.Pid {
			t.Errorf("%q: %+v", p.Name, p)
		}
	}
	t.Logf("names read by walking the tree: %s", strconv.Quote(strings.Join(want, "|")))
}
