//go:build linux

package connector_test

import (
	"errors"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	vnl "github.com/vishvananda/netlink"
	"go.uber.org/goleak"
	"golang.org/x/sys/unix"

	"github.com/process-watchman/watchman/connector"
	"github.com/process-watchman/watchman/connector/connectortest"
)

// requirePrivileged skips the test unless it runs as root in the initial
// user and PID namespaces, where the kernel delivers proc events.
func requirePrivileged(t *testing.T) {
	t.Helper()
	if os.Getenv("CI") == "true" {
		// CI runs as root in the initial namespaces: a skip there would
		// hide a failure, so these checks fail instead.
		defer func() {
			if t.Skipped() {
				t.Fatal("privileged test skipped under CI")
			}
		}()
	}
	if os.Geteuid() != 0 {
		t.Skip("skipping: the proc connector integration tests need root (CI runs them as root)")
	}
	for path, want := range map[string]string{
		"/proc/self/ns/user": "user:[4026531837]",
		"/proc/self/ns/pid":  "pid:[4026531836]",
	} {
		if got, err := os.Readlink(path); err != nil || got != want {
			t.Skipf("skipping: %s is %q (err %v), not the initial namespace %s: the kernel sends no proc events here", path, got, err, want)
		}
	}
}

// hangGuard bounds a read loop so that a missing event fails the test
// instead of hanging it; nothing is asserted about time. It covers a
// whole test (dialReal's read deadline) and kills a gated helper after
// it: generous, since under the hog with other tests beside it a 500-fork
// storm alone took 21 s, past the 20 s this was.
const hangGuard = 3 * time.Minute

func dialReal(t *testing.T, cfg *connector.Config) *connector.Conn {
	t.Helper()
	c, err := connector.Dial(cfg)
	if err != nil {
		t.Fatalf("Dial: %v", err)
	}
	t.Cleanup(func() { _ = c.Close() })
	if err := c.SetReadDeadline(time.Now().Add(hangGuard)); err != nil {
		t.Fatal(err)
	}
	return c
}

// collectUntil receives events until done reports true for the events so
// far, and returns them.
func collectUntil(t *testing.T, c *connector.Conn, done func([]connector.Event) bool) []connector.Event {
	t.Helper()
	var all []connector.Event
	buf := make([]connector.Event, 0, connector.MaxBatch)
	for !done(all) {
		evs, err := c.Receive(buf[:0])
		all = append(all, evs...)
		if err != nil && !errors.Is(err, connector.ErrOverrun) {
			t.Fatalf("Receive after %d events: %v", len(all), err)
		}
	}
	return all
}

func exitOf(evs []connector.Event, pid int) (connector.Event, bool) {
	for _, ev := range evs {
		if ev.What == connector.WhatExit && ev.PID == int32(pid) {
			return ev, true
		}
	}
	return connector.Event{}, false
}

// lifecycle returns the fork, exec and exit events of pid, in order.
func lifecycle(evs []connector.Event, pid int) []connector.Event {
	var out []connector.Event
	for _, ev := range evs {
		if ev.PID == int32(pid) && ev.What&(connector.WhatFork|connector.WhatExec|connector.WhatExit) != 0 {
			out = append(out, ev)
		}
	}
	return out
}

func run(t *testing.T, name string, args ...string) int {
	t.Helper()
	cmd := exec.Command(name, args...)
	err := cmd.Run()
	var ee *exec.ExitError
	if err != nil && !errors.As(err, &ee) {
		t.Fatalf("running %s: %v", name, err)
	}
	return cmd.Process.Pid
}

// monitor is vishvananda/netlink's ProcEventMonitor, an independent
// decoder of the same stream.
type monitor struct {
	done   chan struct{}
	events chan []vnl.ProcEvent
	seen   chan vnl.ProcEvent
}

func startMonitor(t *testing.T) *monitor {
	t.Helper()
	m := &monitor{done: make(chan struct{}), events: make(chan []vnl.ProcEvent, 1), seen: make(chan vnl.ProcEvent, 64)}
	ch := make(chan vnl.ProcEvent, 1024)
	errc := make(chan error, 1) // it sends one error when its socket closes
	if err := vnl.ProcEventMonitor(ch, m.done, errc); err != nil {
		t.Fatalf("ProcEventMonitor: %v", err)
	}
	go func() {
		var all []vnl.ProcEvent
		for ev := range ch { // closed by the monitor after m.done
			all = append(all, ev)
			if ev.What == uint32(connector.WhatExit) {
				select {
				case m.seen <- ev:
				default:
				}
			}
		}
		m.events <- all
	}()
	return m
}

// waitExits waits until the monitor reported exits of all pids, then
// stops it and returns everything it decoded.
func (m *monitor) waitExits(t *testing.T, pids ...int) []vnl.ProcEvent {
	t.Helper()
	left := map[uint32]bool{}
	for _, p := range pids {
		left[uint32(p)] = true
	}
	timeout := time.After(hangGuard)
	for len(left) > 0 {
		select {
		case ev := <-m.seen:
			delete(left, ev.Msg.(*vnl.ExitProcEvent).ProcessPid)
		case <-timeout:
			close(m.done)
			<-m.events
			t.Fatalf("vishvananda/netlink did not report the exits of %v", left)
		}
	}
	close(m.done)
	return <-m.events
}

// fromVishvananda converts the other decoder's fork, exec and exit events
// of pid into Events.
func fromVishvananda(evs []vnl.ProcEvent, pid int) []connector.Event {
	var out []connector.Event
	for _, pe := range evs {
		ev := connector.Event{What: connector.What(pe.What), CPU: pe.CPU, Timestamp: pe.Timestamp}
		switch m := pe.Msg.(type) {
		case *vnl.ForkProcEvent:
			ev.ParentPID, ev.ParentTGID, ev.PID, ev.TGID = int32(m.ParentPid), int32(m.ParentTgid), int32(m.ChildPid), int32(m.ChildTgid)
		case *vnl.ExecProcEvent:
			ev.PID, ev.TGID = int32(m.ProcessPid), int32(m.ProcessTgid)
		case *vnl.ExitProcEvent:
			ev.PID, ev.TGID = int32(m.ProcessPid), int32(m.ProcessTgid)
			ev.ExitStatus, ev.ExitSignal = m.ExitCode, int32(m.ExitSignal)
			ev.ParentPID, ev.ParentTGID = int32(m.ParentPid), int32(m.ParentTgid)
		default:
			continue
		}
		if ev.PID == int32(pid) {
			out = append(out, ev)
		}
	}
	return out
}

func TestIntegrationForkExecExit(t *testing.T) {
	requirePrivileged(t)
	c := dialReal(t, nil)
	mon := startMonitor(t)

	truePID := run(t, "/bin/true")
	exit3PID := run(t, "/bin/sh", "-c", "exit 3")

	evs := collectUntil(t, c, func(evs []connector.Event) bool {
		_, a := exitOf(evs, truePID)
		_, b := exitOf(evs, exit3PID)
		return a && b
	})
	me := int32(os.Getpid())
	for _, tc := range []struct {
		pid      int
		status   uint32
		code     int
		execName string
	}{
		{truePID, 0, 0, "/bin/true"},
		{exit3PID, 0x300, 3, "/bin/sh"},
	} {
		got := lifecycle(evs, tc.pid)
		if len(got) != 3 {
			t.Fatalf("%s (pid %d): events %+v, want fork, exec, exit", tc.execName, tc.pid, got)
		}
		fork, execEv, exitEv := got[0], got[1], got[2]
		p := int32(tc.pid)
		if fork.What != connector.WhatFork || fork.TGID != p || fork.ParentTGID != me || fork.IsThread() {
			t.Errorf("%s fork = %+v, want child %d of process %d", tc.execName, fork, p, me)
		}
		if execEv.What != connector.WhatExec || execEv.TGID != p {
			t.Errorf("%s exec = %+v", tc.execName, execEv)
		}
		code, sig := exitEv.ExitCode()
		// The exit's parent is 0 when the parent reaped the child before
		// the kernel sent the event (proc_exit_connector follows
		// exit_notify, and reads the parent only while the task is not yet
		// released): run's Wait can, on a busy host.
		if exitEv.What != connector.WhatExit || exitEv.TGID != p || exitEv.ExitStatus != tc.status ||
			code != tc.code || sig != 0 || exitEv.ExitSignal != int32(syscall.SIGCHLD) ||
			(exitEv.ParentTGID != me && exitEv.ParentTGID != 0) || exitEv.IsThread() {
			t.Errorf("%s exit = %+v (code %d, signal %d), want status %#x, parent %d", tc.execName, exitEv, code, sig, tc.status, me)
		}
		if !(fork.Timestamp <= execEv.Timestamp && execEv.Timestamp <= exitEv.Timestamp) {
			t.Errorf("%s timestamps not monotonic: %d %d %d", tc.execName, fork.Timestamp, execEv.Timestamp, exitEv.Timestamp)
		}
	}

	// The same stream through an independent decoder.
	other := mon.waitExits(t, truePID, exit3PID)
	for _, pid := range []int{truePID, exit3PID} {
		want := fromVishvananda(other, pid)
		got := lifecycle(evs, pid)
		if diff := cmp.Diff(want, got, cmp.FilterPath(func(p cmp.Path) bool {
			return p.Last().String() == ".Seq"
		}, cmp.Ignore())); diff != "" {
			t.Errorf("pid %d: vishvananda/netlink decoded (-) vs connector (+):\n%s", pid, diff)
		}
	}
}

func TestIntegrationOverrun(t *testing.T) {
	requirePrivileged(t)
	c := dialReal(t, &connector.Config{ReadBuffer: 4096})
	before, err := c.MemInfo()
	if err != nil {
		t.Fatalf("MemInfo: %v", err)
	}
	// A burst of 300 forks (900 events, a hundred times what the queue
	// holds) while nobody reads.
	run(t, "/bin/sh", "-c", `i=0; while [ $i -lt 300 ]; do ( : ); i=$((i+1)); done`)
	// The hang guard counts from now: on a loaded machine the burst alone
	// outlasted it.
	if err := c.SetReadDeadline(time.Now().Add(hangGuard)); err != nil {
		t.Fatal(err)
	}

	var overrun error
	buf := make([]connector.Event, 0, connector.MaxBatch)
	for range 1000 { // the queue holds far fewer datagrams than this
		var evs []connector.Event
		evs, overrun = c.Receive(buf[:0])
		if overrun != nil || len(evs) == 0 {
			break
		}
	}
	if !errors.Is(overrun, connector.ErrOverrun) {
		t.Fatalf("Receive = %v, want ErrOverrun after a burst into a %d-byte buffer", overrun, before.Rcvbuf)
	}
	after, err := c.MemInfo()
	if err != nil {
		t.Fatalf("MemInfo: %v", err)
	}
	if st := c.Stats(); st.Overruns < 1 || after.Drops <= before.Drops {
		t.Errorf("Overruns = %d, kernel drops %d -> %d; want both to grow", st.Overruns, before.Drops, after.Drops)
	}

	// The kernel delivers nothing more until the queue is empty (it
	// clears its congestion flag only when a read empties the queue), so
	// drain what is queued before expecting new events.
	for {
		mi, err := c.MemInfo()
		if err != nil {
			t.Fatal(err)
		}
		if mi.RmemAlloc == 0 {
			break
		}
		if _, err := c.Receive(buf[:0]); err != nil && !errors.Is(err, connector.ErrOverrun) {
			t.Fatalf("draining: %v", err)
		}
	}

	st := c.Stats()
	t.Logf("rcvbuf %d bytes: %d events received, %d dropped by the kernel, %d ENOBUFS",
		after.Rcvbuf, st.Received, after.Drops-before.Drops, st.Overruns)

	// The Conn keeps delivering. The buffer is still tiny and the host
	// may be busy, so the exit may be dropped again: a barrier tells, and
	// only an attempt without a new overrun counts.
	for attempt := uint32(1); ; attempt++ {
		pid := run(t, "/bin/sh", "-c", "exit 7")
		overruns := c.Stats().Overruns
		evs := barrier(t, c, attempt)
		if ev, ok := exitOf(evs, pid); ok {
			if ev.ExitStatus != 0x700 {
				t.Errorf("exit after the overrun = %+v, want status 0x700", ev)
			}
			break
		}
		if c.Stats().Overruns == overruns {
			t.Fatalf("attempt %d: the exit of %d is missing before the barrier, with no overrun", attempt, pid)
		}
		if attempt == 50 {
			t.Fatal("50 attempts lost the exit to new overruns")
		}
	}
}

func TestIntegrationSpoofedUnicastIsDropped(t *testing.T) {
	requirePrivileged(t)
	c := dialReal(t, nil)

	fd, err := unix.Socket(unix.AF_NETLINK, unix.SOCK_RAW|unix.SOCK_CLOEXEC, unix.NETLINK_CONNECTOR)
	if err != nil {
		t.Fatalf("socket: %v", err)
	}
	defer unix.Close(fd)
	if err := unix.Bind(fd, &unix.SockaddrNetlink{Family: unix.AF_NETLINK}); err != nil {
		t.Fatalf("bind: %v", err)
	}
	const fakePID = 0x3ffffff0
	forged := connectortest.EncodeMessage(connector.Event{
		What: connector.WhatFork, ParentPID: int32(os.Getpid()), ParentTGID: int32(os.Getpid()), PID: fakePID, TGID: fakePID,
	}) // nlmsghdr port id 0, as the kernel writes it
	if err := unix.Sendto(fd, forged, 0, &unix.SockaddrNetlink{Family: unix.AF_NETLINK, Pid: c.PortID()}); err != nil {
		t.Fatalf("sendto port %d: %v", c.PortID(), err)
	}

	pid := run(t, "/bin/true") // its events are queued after the forged one
	evs := collectUntil(t, c, func(evs []connector.Event) bool { _, ok := exitOf(evs, pid); return ok })
	for _, ev := range evs {
		if ev.PID == fakePID {
			t.Fatalf("forged event delivered: %+v", ev)
		}
	}
	if st := c.Stats(); st.Spoofed != 1 {
		t.Errorf("Spoofed = %d, want 1", st.Spoofed)
	}
}

func countFDs(t *testing.T) int {
	t.Helper()
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatal(err)
	}
	return len(ents)
}

func TestIntegrationCloseLeaksNothing(t *testing.T) {
	requirePrivileged(t)
	before := countFDs(t)
	for i := range 100 {
		c, err := connector.Dial(nil)
		if err != nil {
			t.Fatalf("Dial %d: %v", i, err)
		}
		if err := c.Close(); err != nil {
			t.Fatalf("Close %d: %v", i, err)
		}
	}
	if after := countFDs(t); after != before {
		t.Errorf("open fds %d -> %d after 100 Dial/Close", before, after)
	}

	// Close unblocks a Receive waiting for an event that does not come.
	c, err := connector.Dial(&connector.Config{Events: connector.WhatCoredump})
	if err != nil {
		t.Fatal(err)
	}
	errc := make(chan error, 1)
	go func() {
		_, err := c.Receive(nil)
		errc <- err
	}()
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	if err := <-errc; !errors.Is(err, connector.ErrClosed) {
		t.Errorf("blocked Receive after Close = %v, want ErrClosed", err)
	}
	goleak.VerifyNone(t)
}

// helper re-executes the test binary to Dial under attr and returns its
// one-line report.
func helper(t *testing.T, attr *syscall.SysProcAttr, bin string) string {
	t.Helper()
	if bin == "" {
		bin = os.Args[0]
	}
	cmd := exec.Command(bin)
	cmd.Env = append(os.Environ(), helperEnv+"=dial", "GORACE=atexit_sleep_ms=0")
	cmd.SysProcAttr = attr
	out, err := cmd.CombinedOutput()
	if err != nil {
		if errors.Is(err, syscall.EPERM) || errors.Is(err, syscall.EINVAL) || errors.Is(err, syscall.ENOSPC) {
			t.Skipf("skipping: cannot create the namespaces here: %v", err)
		}
		t.Fatalf("helper: %v\n%s", err, out)
	}
	return strings.TrimSpace(string(out))
}

func TestIntegrationNamespacesRefusedAtOnce(t *testing.T) {
	requirePrivileged(t)
	tests := []struct {
		name string
		attr *syscall.SysProcAttr
		want string
	}{
		{
			name: "user namespace",
			attr: &syscall.SysProcAttr{
				Cloneflags:  syscall.CLONE_NEWUSER,
				UidMappings: []syscall.SysProcIDMap{{ContainerID: 0, HostID: 0, Size: 1}},
				GidMappings: []syscall.SysProcIDMap{{ContainerID: 0, HostID: 0, Size: 1}},
			},
			want: "not in the initial user namespace",
		},
		{
			name: "PID namespace",
			attr: &syscall.SysProcAttr{Cloneflags: syscall.CLONE_NEWPID},
			want: "not in the initial PID namespace",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			out := helper(t, tt.attr, "")
			if !strings.HasPrefix(out, "error notsupported=true permission=false") || !strings.Contains(out, tt.want) {
				t.Errorf("Dial in a new %s: %q, want ErrNotSupported saying %q", tt.name, out, tt.want)
			}
		})
	}
}

// TestIntegrationUnprivileged dials as nobody. Since Linux 6.6 any user may
// listen; older kernels acknowledge with EPERM, which must be
// ErrPermission. Either is correct; anything else is not.
func TestIntegrationUnprivileged(t *testing.T) {
	requirePrivileged(t)
	bin := copyTestBinary(t)
	out := helper(t, &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534}}, bin)
	t.Logf("Dial as uid 65534: %s", out)
	if out != "ok" && !strings.HasPrefix(out, "error notsupported=true permission=true") {
		t.Errorf("Dial as nobody = %q, want success or ErrPermission", out)
	}
}
