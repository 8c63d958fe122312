package watchman

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/process-watchman/watchman/connector"
	"github.com/process-watchman/watchman/reconcile"
	"golang.org/x/sys/unix"
)

// The watcher-level hidepid test (issue 13). The test binary re-executes
// itself in a private mount namespace (CLONE_NEWNS: Go makes every mount
// in it private before the child runs), where it mounts a fresh proc
// filesystem with hidepid over /proc. The host's /proc is never touched:
// since Linux 5.8 every proc mount is an instance of its own, with its own
// options. The child then drops to uid 65534 (root would see through
// hidepid) and watches trees with the default Config.ProcRoot, so the
// root's pidfd is used too.
//
// Environment of the re-executed binaries:
const (
	// envHidePIDMode holds the hidepid option of the namespace child.
	envHidePIDMode = "PWATCH_TEST_HIDEPID_MODE"
	// envHidePIDExe is a copy of the test binary that uid 65534 may run
	// (go test builds into a directory only root may enter).
	envHidePIDExe = "PWATCH_TEST_HIDEPID_EXE"
	// envHidePIDXOnly is a copy of cat that uid 65534 may execute but not
	// read: a process that runs it is not dumpable (the kernel will not
	// let its memory be read, so neither its /proc entry under hidepid),
	// hidden from birth though of uid 65534.
	envHidePIDXOnly = "PWATCH_TEST_HIDEPID_XONLY"
	// envHidePIDMember marks a member process: see hidePIDMember.
	envHidePIDMember = "PWATCH_TEST_HIDEPID_MEMBER"
)

// nobody is the unprivileged uid and gid the namespace child runs as.
const nobody = 65534

// TestIntegrationHidePIDWatcher runs the checks of hidePIDNamespace under
// hidepid=1 (noaccess: /proc/PID listed, its files EPERM), 2 (invisible)
// and 4 (ptraceable). It needs root, to mount proc in a mount namespace;
// without root it skips, and under CI (CI=true, as root) it fails instead.
func TestIntegrationHidePIDWatcher(t *testing.T) {
	if os.Getenv(envHidePIDMember) != "" {
		hidePIDMember(t)
		return
	}
	if opt := os.Getenv(envHidePIDMode); opt != "" {
		hidePIDNamespace(t, opt)
		return
	}
	skip := t.Skipf
	if os.Getenv("CI") == "true" {
		skip = t.Fatalf
	}
	if os.Geteuid() != 0 {
		skip("skipping: mounting proc with hidepid in a mount namespace needs root (CI runs this test as root)")
	}
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	// A copy of this binary that uid 65534 may execute, for the members.
	dir := t.TempDir()
	for _, d := range []string{filepath.Dir(dir), dir} {
		if err := os.Chmod(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	copyExe := filepath.Join(dir, "watchman.test")
	if err := copyFile(exe, copyExe, 0o755); err != nil {
		t.Fatal(err)
	}
	xonly := filepath.Join(dir, "cat-xonly")
	cat, err := exec.LookPath("cat")
	if err != nil {
		t.Fatal(err)
	}
	if err := copyFile(cat, xonly, 0o711); err != nil {
		t.Fatal(err)
	}
	for _, opt := range []string{"hidepid=1", "hidepid=2", "hidepid=4"} {
		t.Run(opt, func(t *testing.T) {
			c := exec.Command(exe, "-test.run=^TestIntegrationHidePIDWatcher$", "-test.v", "-test.count=1", "-test.timeout=5m")
			c.Env = append(os.Environ(), envHidePIDMode+"="+opt, envHidePIDExe+"="+copyExe, envHidePIDXOnly+"="+xonly)
			c.SysProcAttr = &syscall.SysProcAttr{Unshareflags: syscall.CLONE_NEWNS}
			out, err := c.CombinedOutput()
			if errors.Is(err, syscall.EPERM) {
				skip("skipping: no mount namespace here: %v", err)
			}
			t.Logf("namespace child (%s, uid %d):\n%s", opt, nobody, out)
			if err != nil {
				t.Fatalf("namespace child: %v", err)
			}
			if !strings.Contains(string(out), "--- PASS: TestIntegrationHidePIDWatcher") {
				t.Fatal("the namespace child did not pass")
			}
		})
	}
}

// copyFile copies src to dst with mode perm.
func copyFile(src, dst string, perm os.FileMode) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.OpenFile(dst, os.O_WRONLY|os.O_CREATE|os.O_EXCL, perm)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return err
	}
	return out.Close()
}

// hidePIDMember is a member process (uid 65534). It answers each line on
// stdin with one on stdout: "hide" and "show" make it unreadable to other
// processes of its own uid and readable again (PR_SET_DUMPABLE 0 and 1:
// hidepid and ptrace_may_access refuse a process that is not dumpable to
// a reader without CAP_SYS_PTRACE), each answered "ok"; "fork" starts a
// child (cat) and answers its PID, "forkhidden" too, running the
// execute-only cat (envHidePIDXOnly): a child hidden from birth. At the end of stdin it ends its
// children (their stdin closes) and exits.
func hidePIDMember(t *testing.T) {
	var kids []*exec.Cmd
	var pipes []io.Closer
	defer func() {
		for i, c := range kids {
			pipes[i].Close()
			c.Wait()
		}
	}()
	sc := bufio.NewScanner(os.Stdin)
	for sc.Scan() {
		var reply string
		switch sc.Text() {
		case "hide", "show":
			v := 0
			if sc.Text() == "show" {
				v = 1
			}
			reply = "ok"
			if err := unix.Prctl(unix.PR_SET_DUMPABLE, uintptr(v), 0, 0, 0); err != nil {
				reply = "error " + err.Error()
			}
		case "fork", "forkhidden":
			c := exec.Command("cat")
			if sc.Text() == "forkhidden" {
				c = exec.Command(os.Getenv(envHidePIDXOnly))
			}
			in, err := c.StdinPipe()
			if err == nil {
				err = c.Start()
			}
			if err != nil {
				reply = "error " + err.Error()
				break
			}
			kids, pipes = append(kids, c), append(pipes, in)
			reply = strconv.Itoa(c.Process.Pid)
		default:
			reply = "error unknown command " + strconv.Quote(sc.Text())
		}
		fmt.Println(reply)
	}
}

// hpMember is the test's side of a member process.
type hpMember struct {
	cmd *exec.Cmd
	in  io.WriteCloser
	out *bufio.Scanner
}

func (m *hpMember) pid() int { return m.cmd.Process.Pid }

// startHPMember starts a member process as a child of this process.
func startHPMember(t *testing.T) *hpMember {
	t.Helper()
	c := exec.Command(os.Getenv(envHidePIDExe), "-test.run=^TestIntegrationHidePIDWatcher$", "-test.count=1")
	c.Env = append(os.Environ(), envHidePIDMember+"=1")
	c.Dir = "/"
	c.Stderr = os.Stderr
	in, err := c.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	out, err := c.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Start(); err != nil {
		t.Fatal(err)
	}
	m := &hpMember{cmd: c, in: in, out: bufio.NewScanner(out)}
	t.Cleanup(m.end)
	return m
}

// do sends one command and returns the answer.
func (m *hpMember) do(t *testing.T, cmd string) string {
	t.Helper()
	if _, err := fmt.Fprintln(m.in, cmd); err != nil {
		t.Fatalf("member %d: %q: %v", m.pid(), cmd, err)
	}
	if !m.out.Scan() {
		t.Fatalf("member %d: no answer to %q", m.pid(), cmd)
	}
	if a := m.out.Text(); !strings.HasPrefix(a, "error") {
		return a
	}
	t.Fatalf("member %d: %q: %s", m.pid(), cmd, m.out.Text())
	return ""
}

// fork has the member start a child ("fork", or "forkhidden") and
// returns its PID.
func (m *hpMember) fork(t *testing.T, how ...string) int {
	t.Helper()
	cmd := "fork"
	if len(how) > 0 {
		cmd = how[0]
	}
	pid, err := strconv.Atoi(m.do(t, cmd))
	if err != nil {
		t.Fatal(err)
	}
	return pid
}

// end ends the member and its children and reaps it: when end returns,
// they are gone.
func (m *hpMember) end() {
	if m.in != nil {
		m.in.Close()
		m.in = nil
		m.cmd.Wait()
	}
}

// hpEventually retries cond until it holds, failing the test after a
// deadline that only bounds a broken run (the machine may be loaded).
func hpEventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("still waiting after 60 s for %s", what)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

// hpLook brings w's view up to date and returns its live PIDs: a Poll in
// polling mode; in connector mode a tree-local check (a walk of the tree),
// run now and applied after the events queued before it. Connector mode's
// periodic checks are off in these tests (ReconcileInterval -1): every
// tenth of them is a full host scan, whose effect on hidden members
// hpFullScans tests on its own.
func hpLook(t *testing.T, w *Watcher) []int {
	t.Helper()
	if w.Mode() == ModePoll {
		s := mustPoll(t, w)
		return s.PIDs()
	}
	if err := w.reconcile(false, 0); err != nil {
		t.Fatal(err)
	}
	return w.LivePIDs()
}

// dropToNobody makes this process uid and gid 65534, on every thread, and
// dumpable again (a change of credentials clears it).
func dropToNobody(t *testing.T) {
	t.Helper()
	if err := syscall.Setgroups(nil); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Setresgid(nobody, nobody, nobody); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Setresuid(nobody, nobody, nobody); err != nil {
		t.Fatal(err)
	}
	if err := unix.Prctl(unix.PR_SET_DUMPABLE, 1, 0, 0, 0); err != nil {
		t.Fatal(err)
	}
}

// hidePIDNamespace runs in the namespace child, as root until dropToNobody.
func hidePIDNamespace(t *testing.T, opt string) {
	if err := unix.Mount("proc", "/proc", "proc", unix.MS_NOSUID|unix.MS_NODEV|unix.MS_NOEXEC, opt); err != nil {
		t.Fatalf("mount proc on /proc with %s in the private namespace: %v", opt, err)
	}
	// Root's processes: one outside the tree this process roots
	// (orphaned: its shell exits), one in it (a child).
	outsiderIn, outsiderOut, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	sh := exec.Command("sh", "-c", "cat <&3 >/dev/null & echo $!")
	sh.ExtraFiles = []*os.File{outsiderIn}
	sh.Stderr = os.Stderr // not a pipe Output would wait on: cat keeps it
	b, err := sh.Output()
	outsiderIn.Close()
	if err != nil {
		t.Fatal(err)
	}
	defer outsiderOut.Close()
	outsider, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil {
		t.Fatal(err)
	}
	other := exec.Command("cat")
	otherIn, err := other.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := other.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { otherIn.Close(); other.Wait() }()

	dropToNobody(t)
	fs, err := reconcile.NewFS("")
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("/proc is mounted with %s (reconcile reads hidepid=%v); uid %d", opt, fs.HidePID(), os.Getuid())
	if fs.HidePID() == reconcile.HidePIDOff {
		t.Fatalf("/proc shows no hidepid after mounting it with %s", opt)
	}

	strategies := []Strategy{StrategyPoll}
	if c, err := connector.Dial(nil); err != nil {
		t.Logf("connector mode not tested: uid %d cannot subscribe to the proc connector here: %v", nobody, err)
	} else {
		c.Close()
		strategies = append(strategies, StrategyConnector)
	}
	for _, strategy := range strategies {
		t.Run(string(strategy), func(t *testing.T) {
			cfg := func() *Config {
				return &Config{Strategy: strategy, ReconcileInterval: -1}
			}
			t.Run("unreadable root", func(t *testing.T) { hpUnreadableRoot(t, cfg(), outsider, other.Process.Pid) })
			t.Run("member hidden and shown", func(t *testing.T) { hpMemberHidden(t, cfg()) })
			t.Run("hidden member through full scans", func(t *testing.T) { hpFullScans(t, cfg()) })
			t.Run("member of another uid", func(t *testing.T) { hpOtherUID(t, cfg(), other.Process.Pid) })
			t.Run("child hidden from birth", func(t *testing.T) { hpHiddenChild(t, cfg()) })
			t.Run("mode reason", func(t *testing.T) { hpModeReason(t, cfg(), opt) })
		})
	}
}

// hpUnreadableRoot: Attach to a process that cannot be read gives the
// typed ErrUnreadable, never ErrNoSuchProcess: root's processes, and a
// process of our own uid that is not dumpable.
func hpUnreadableRoot(t *testing.T, cfg *Config, outsider, other int) {
	m := startHPMember(t)
	m.do(t, "hide")
	for _, c := range []struct {
		what string
		pid  int
	}{{"root's process outside the tree", outsider}, {"root's child of this process", other}, {"a process of uid 65534 that is not dumpable", m.pid()}} {
		w, err := Attach(c.pid, cfg)
		if err == nil {
			w.Close()
			t.Errorf("Attach(%s, pid %d) succeeded", c.what, c.pid)
			continue
		}
		var pe *PIDError
		if !errors.Is(err, ErrUnreadable) || errors.Is(err, ErrNoSuchProcess) || !errors.As(err, &pe) || pe.PID != c.pid {
			t.Errorf("Attach(%s, pid %d) = %v; want a *PIDError matching ErrUnreadable", c.what, c.pid, err)
		}
		t.Logf("%s: %v", c.what, err)
	}
	// The same process once readable again can be watched.
	m.do(t, "show")
	w := mustAttach(t, m.pid(), cfg)
	if s := mustPoll(t, w); !s.RootAlive {
		t.Errorf("member shown again: root alive %v", s.RootAlive)
	}
}

// hpMemberHidden watches this process's tree: a member that becomes
// unreadable stays a member and is counted in Stats().Unreadable and
// Snapshot.Unreadable; its child forked while it is hidden joins (at once
// in connector mode; in polling mode once the member can be read again,
// since its children files are hidden with it); once readable it is
// counted no more; when it exits hidden, it and its child are removed.
func hpMemberHidden(t *testing.T, cfg *Config) {
	w := mustAttach(t, os.Getpid(), cfg)
	m := startHPMember(t)
	hpEventually(t, "the member to join", func() bool { return slices.Contains(hpLook(t, w), m.pid()) })
	hpLook(t, w)
	base := w.Stats().Unreadable // root's child "other" may be counted

	m.do(t, "hide")
	if live := hpLook(t, w); !slices.Contains(live, m.pid()) {
		t.Fatalf("hidden member %d dropped: live %v", m.pid(), live)
	}
	if got := w.Stats().Unreadable; got != base+1 {
		t.Errorf("Stats().Unreadable = %d with a member hidden, want %d", got, base+1)
	}
	if w.Mode() == ModePoll {
		if s := mustPoll(t, w); s.Unreadable != base+1 || !slices.Contains(s.PIDs(), m.pid()) || len(s.Delta.Removed) != 0 {
			t.Errorf("Poll with a member hidden: Unreadable %d (want %d), members %v, removed %v", s.Unreadable, base+1, s.PIDs(), s.Delta.Removed)
		}
	}

	kid := m.fork(t)
	if w.Mode() == ModeConnector {
		hpEventually(t, "the hidden member's child to join through its fork event", func() bool { return slices.Contains(w.LivePIDs(), kid) })
	} else if live := hpLook(t, w); slices.Contains(live, kid) {
		t.Logf("polling found the hidden member's child %d", kid)
	}

	m.do(t, "show")
	hpEventually(t, "the member to be readable again", func() bool {
		hpLook(t, w)
		return w.Stats().Unreadable == base
	})
	s := mustPoll(t, w)
	live := w.LivePIDs()
	if !slices.Contains(live, m.pid()) || !slices.Contains(live, kid) {
		t.Fatalf("member %d shown again with child %d: live %v", m.pid(), kid, live)
	}
	for _, p := range s.Processes {
		if p.PID == kid && (p.Parent != m.pid() || p.Depth != 2) {
			t.Errorf("the child forked while its parent was hidden: %+v, want parent %d at depth 2", p, m.pid())
		}
	}

	// It exits while hidden.
	m.do(t, "hide")
	hpLook(t, w)
	m.end()
	hpEventually(t, "the hidden member's exit", func() bool {
		live := hpLook(t, w)
		return !slices.Contains(live, m.pid()) && !slices.Contains(live, kid)
	})
	if got := w.Stats().Unreadable; got != base {
		t.Errorf("Stats().Unreadable = %d after the hidden member exited, want %d", got, base)
	}
	if s := mustPoll(t, w); !s.RootAlive {
		t.Error("the root (this process) is reported gone")
	}
}

// hpFullScans: a host scan cannot list a process hidepid hides (hidepid=2
// and 4), or lists it without its stat (hidepid=1). A member hidden across
// full scans must stay a member: connector mode's full repairs (every
// tenth periodic check is one; here they are run on demand), polling
// mode's Config.FullScanInterval.
func hpFullScans(t *testing.T, cfg *Config) {
	if cfg.Strategy == StrategyPoll {
		cfg.FullScanInterval = time.Nanosecond // every Poll scans the host
	}
	w := mustAttach(t, os.Getpid(), cfg)
	m := startHPMember(t)
	hpEventually(t, "the member to join", func() bool { return slices.Contains(hpLook(t, w), m.pid()) })
	m.do(t, "hide")
	var live []int
	if w.Mode() == ModePoll {
		s := mustPoll(t, w)
		live = s.PIDs()
	} else {
		if err := w.reconcile(true, 0); err != nil {
			t.Fatal(err)
		}
		live = w.LivePIDs()
	}
	if !slices.Contains(live, m.pid()) {
		t.Errorf("member %d hidden across full host scans was dropped: live %v, Stats %+v", m.pid(), live, w.Stats())
	}
	m.do(t, "show")
}

// hpOtherUID: this process's tree holds a child of root's (started before
// the drop to uid 65534), which uid 65534 cannot read. It must be a member
// or be counted in Stats().Unreadable, never dropped without a word.
func hpOtherUID(t *testing.T, cfg *Config, other int) {
	w := mustAttach(t, os.Getpid(), cfg)
	live := hpLook(t, w)
	st := w.Stats()
	if !slices.Contains(live, other) && st.Unreadable == 0 {
		t.Errorf("root's child %d of the watched root is neither a member (live %v) nor counted unreadable (Stats %+v)", other, live, st)
	}
}

// hpModeReason: the mode reason says that /proc hides processes.
func hpModeReason(t *testing.T, cfg *Config, opt string) {
	w := mustAttach(t, os.Getpid(), cfg)
	if r := w.ModeReason(); !strings.Contains(r, "hidepid") {
		t.Errorf("ModeReason %q does not say that /proc is mounted with %s", r, opt)
	}
}

// hpHiddenChild: a member forks, after Attach, a child that is hidden from
// birth (it runs an execute-only binary). It must be a member or be
// counted in Stats().Unreadable, never dropped without a word; when it
// exits it is neither.
func hpHiddenChild(t *testing.T, cfg *Config) {
	w := mustAttach(t, os.Getpid(), cfg)
	m := startHPMember(t)
	hpEventually(t, "the member to join", func() bool { return slices.Contains(hpLook(t, w), m.pid()) })
	base := w.Stats().Unreadable
	kid := m.fork(t, "forkhidden")
	if _, err := Attach(kid, cfg); !errors.Is(err, ErrUnreadable) {
		t.Fatalf("Attach(the child running an execute-only binary) = %v, want ErrUnreadable: it is not hidden", err)
	}
	// In connector mode the check hpLook runs is applied after the events
	// queued before it: the child's fork event among them.
	live := hpLook(t, w)
	if st := w.Stats(); !slices.Contains(live, kid) && st.Unreadable <= base {
		t.Errorf("child %d hidden from birth is neither a member (live %v) nor counted unreadable (Stats %+v, %d before)", kid, live, st, base)
	} else {
		t.Logf("child %d hidden from birth: live %v, unreadable %d (%d before)", kid, live, st.Unreadable, base)
	}
	m.end()
	hpEventually(t, "the hidden child's exit", func() bool {
		live := hpLook(t, w)
		return !slices.Contains(live, kid) && !slices.Contains(live, m.pid())
	})
}
