package reconcile

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"
)

func TestParseMountinfoHidePID(t *testing.T) {
	tests := []struct {
		line, at string
		want     HidePID
		ok       bool
	}{
		{"22 27 0:21 / /proc rw,relatime - proc proc rw", "/proc", HidePIDOff, true},
		{"90 89 0:50 / /tmp/p rw,relatime - proc proc rw,hidepid=invisible", "/tmp/p", HidePIDInvisible, true},
		{"90 89 0:50 / /tmp/p rw shared:5 - proc proc rw,hidepid=2", "/tmp/p", HidePIDInvisible, true},
		{"90 89 0:50 / /tmp/p rw - proc proc rw,hidepid=noaccess", "/tmp/p", HidePIDNoAccess, true},
		{"90 89 0:50 / /tmp/p rw - proc proc rw,hidepid=ptraceable,subset=pid", "/tmp/p", HidePIDPtraceable, true},
		{`90 89 0:50 / /tmp/a\040b rw - proc proc rw,hidepid=1`, "/tmp/a b", HidePIDNoAccess, true},
		{"90 89 0:50 / /tmp/p rw - tmpfs tmpfs rw", "/tmp/p", 0, false},
		{"90 89 0:50 / /tmp/q rw - proc proc rw,hidepid=2", "/tmp/p", 0, false},
		{"garbage", "/proc", 0, false},
	}
	for _, tt := range tests {
		got, ok := parseMountinfoHidePID([]byte(tt.line), tt.at)
		if got != tt.want || ok != tt.ok {
			t.Errorf("%q at %s = %v, %v; want %v, %v", tt.line, tt.at, got, ok, tt.want, tt.ok)
		}
	}
	if got := realFS(t).HidePID(); got != HidePIDOff && os.Geteuid() == 0 {
		t.Logf("this host's /proc has hidepid=%v", got)
	}
	if fakeFS(t).HidePID() != HidePIDOff {
		t.Error("a fake tree has a hidepid mode")
	}
}

// TestIntegrationHidePID mounts fresh proc filesystems with hidepid=1, 2
// and 4 in a private mount namespace of a re-executed child (never touching
// the host's /proc), drops the child to uid 65534, and reads a process of
// root's through each. See helperHidePID for the checks.
func TestIntegrationHidePID(t *testing.T) {
	requireRoot(t, "mounting proc with hidepid in a private mount namespace")
	// uid 65534 must reach the mount points.
	dir := t.TempDir()
	for _, d := range []string{filepath.Dir(dir), dir} {
		if err := os.Chmod(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	c := helperCmd(t, "hidepid", "PWATCH_HIDEPID_DIR="+dir)
	// Go makes the new namespace's mounts private (MS_REC|MS_PRIVATE on
	// /) before it runs the child.
	c.SysProcAttr = &syscall.SysProcAttr{Unshareflags: syscall.CLONE_NEWNS}
	out := runHelper(t, c)
	t.Logf("helper:\n%s", out)
}

func helperHidePID() int {
	var c checker
	base := os.Getenv("PWATCH_HIDEPID_DIR")
	modes := []struct {
		opt  string
		want HidePID
	}{{"hidepid=1", HidePIDNoAccess}, {"hidepid=2", HidePIDInvisible}, {"hidepid=4", HidePIDPtraceable}}
	roots := make([]string, len(modes))
	for i, m := range modes {
		roots[i] = filepath.Join(base, strconv.Itoa(int(m.want)))
		if err := os.Mkdir(roots[i], 0o755); err != nil {
			c.errorf("mkdir: %v", err)
			return c.exit()
		}
		if err := unix.Mount("proc", roots[i], "proc", unix.MS_NOSUID|unix.MS_NODEV|unix.MS_NOEXEC, m.opt); err != nil {
			c.errorf("mount proc %s: %v", m.opt, err)
			return c.exit()
		}
	}
	// The target: a process of root's, which the unprivileged reader may
	// not trace. It exits when its input closes.
	target := exec.Command("cat")
	in, err := target.StdinPipe()
	if err != nil {
		c.errorf("%v", err)
		return c.exit()
	}
	if err := target.Start(); err != nil {
		c.errorf("start target: %v", err)
		return c.exit()
	}
	tpid := target.Process.Pid
	host, _ := NewFS("")
	st, err := host.ReadStat(tpid)
	if err != nil {
		c.errorf("ReadStat(target) as root: %v", err)
		return c.exit()
	}
	tstart := st.StartTicks
	// A pidfd opened while the target is readable sees its exit later,
	// whatever /proc hides.
	pfd, err := OpenPIDFD(host, tpid, tstart)
	if err != nil {
		c.errorf("OpenPIDFD as root: %v", err)
		return c.exit()
	}
	defer pfd.Close()

	if err := syscall.Setgroups(nil); err != nil {
		c.errorf("setgroups: %v", err)
	}
	if err := syscall.Setresgid(65534, 65534, 65534); err != nil {
		c.errorf("setresgid: %v", err)
	}
	if err := syscall.Setresuid(65534, 65534, 65534); err != nil {
		c.errorf("setresuid: %v", err)
		return c.exit()
	}
	self := os.Getpid()
	const missing = 1 << 30
	for i, m := range modes {
		fs, err := NewFS(roots[i])
		if err != nil {
			c.errorf("%s: NewFS: %v", m.opt, err)
			continue
		}
		if got := fs.HidePID(); got != m.want {
			c.errorf("%s: HidePID() = %v", m.opt, got)
		}
		sc := fs.NewScanner()
		// What the target looks like.
		wantErr := error(unix.EPERM)
		if m.want != HidePIDNoAccess {
			wantErr = ErrHidden
		}
		isDenied := func(what string, err error) {
			if !errors.Is(err, ErrPermission) || !errors.Is(err, wantErr) || errors.Is(err, ErrGone) {
				c.errorf("%s: %s of root's process = %v, want %v (ErrPermission), not gone", m.opt, what, err, wantErr)
			}
		}
		_, _, ok, lookupErr := sc.Lookup(tpid)
		if ok {
			c.errorf("%s: Lookup(target) ok", m.opt)
		}
		isDenied("Lookup", lookupErr)
		_, err = fs.ReadStat(tpid)
		isDenied("ReadStat", err)
		_, _, err = fs.Cmdline(tpid, 0)
		isDenied("Cmdline", err)
		_, err = sc.Children(tpid, nil)
		isDenied("Children", err)
		var w Walk
		err = sc.Walk(&w, []Member{{PID: tpid, StartTicks: tstart}})
		isDenied("Walk", err)
		if len(w.Results) != 1 || w.Results[0].Status != StatusError {
			c.errorf("%s: Walk results %+v", m.opt, w.Results)
		}
		_, err = OpenPIDFD(fs, tpid, tstart)
		isDenied("OpenPIDFD", err)
		var s Scan
		if err := sc.Scan(&s); err != nil {
			c.errorf("%s: Scan: %v", m.opt, err)
		}
		listed := slices.ContainsFunc(s.Entries, func(e Entry) bool { return e.PID == tpid })
		denied := slices.Contains(s.Denied, tpid)
		if listed || denied != (m.want == HidePIDNoAccess) {
			c.errorf("%s: Scan lists the target in Entries %v, in Denied %v", m.opt, listed, denied)
		}
		// What this process's own processes and a missing PID look like.
		if _, _, ok, err := sc.Lookup(self); !ok || err != nil {
			c.errorf("%s: Lookup(self) = %v, %v", m.opt, ok, err)
		}
		// A walk from this process finds the target, its child, in its
		// own children file, even where /proc hides the target, and
		// reports it unreadable rather than dropping it.
		err = sc.Walk(&w, []Member{{PID: self, StartTicks: startTicksHelper(&c, fs, self)}})
		isDenied("Walk from its parent", err)
		if len(w.Results) != 2 || w.Results[0].Status != StatusAlive || !slices.Equal(w.Children(0), []int{tpid}) ||
			!w.Results[1].Found || w.Results[1].PID != tpid || w.Results[1].Status != StatusError {
			c.errorf("%s: Walk(self) = %+v, children %v", m.opt, w.Results, w.Children(0))
		}
		if _, _, ok, err := sc.Lookup(missing); ok || err != nil {
			c.errorf("%s: Lookup(missing) = %v, %v; want gone", m.opt, ok, err)
		}
		fmt.Printf("%s: Lookup of root's process: %v; a walk from its parent: %v\n", m.opt, lookupErr, w.Results[len(w.Results)-1].Err)
	}
	// The target exits: the pidfd says so, and every mount now says gone.
	in.Close()
	<-pfd.Exited()
	_ = target.Wait()
	for i, m := range modes {
		fs, err := NewFS(roots[i])
		if err != nil {
			continue
		}
		if _, _, ok, err := fs.NewScanner().Lookup(tpid); ok || err != nil {
			c.errorf("%s: Lookup of the exited target = %v, %v; want gone", m.opt, ok, err)
		}
	}
	if c.failed == 0 {
		fmt.Println("all checks passed as uid", os.Getuid())
	}
	return c.exit()
}
