package watchman

import (
	"encoding/binary"
	"errors"
	"math"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/process-watchman/watchman/connector"
	"github.com/process-watchman/watchman/connector/connectortest"
	"github.com/process-watchman/watchman/internal/fakeproc"
	"golang.org/x/sys/unix"
)

// badMessages returns forged messages about the tree of root: another
// connector's idx and val, inconsistent lengths, another netlink message
// type, a truncated message, and two forks in one datagram.
func badMessages(root int) map[string][]byte {
	ne := binary.NativeEndian
	fork := func() []byte {
		return connectortest.EncodeMessage(connector.Event{What: connector.WhatFork, ParentPID: int32(root),
			ParentTGID: int32(root), PID: 4000001, TGID: 4000001})
	}
	exit := connectortest.EncodeMessage(connector.Event{What: connector.WhatExit, PID: int32(root), TGID: int32(root), ExitStatus: 9})
	m := map[string][]byte{}
	b := fork()
	ne.PutUint32(b[16:], 7)
	m["other idx"] = b
	b = fork()
	ne.PutUint32(b[20:], 9)
	m["other val"] = b
	b = fork()
	ne.PutUint32(b[0:], 300)
	m["nlmsg_len past the datagram"] = b
	b = fork()
	ne.PutUint32(b[0:], 4)
	m["nlmsg_len below the header"] = b
	b = fork()
	ne.PutUint16(b[32:], 200)
	m["cn_msg len past the message"] = b
	b = fork()
	ne.PutUint16(b[32:], 8)
	m["cn_msg len too short for an event"] = b
	b = fork()
	ne.PutUint16(b[4:], unix.NLMSG_ERROR)
	m["NLMSG_ERROR type"] = b
	m["truncated"] = fork()[:50]
	m["exit and fork in one datagram"] = append(append([]byte(nil), exit...), fork()...)
	return m
}

// TestIntegrationForgedMessagesChangeNothing sends forged messages about the
// watched tree to the hub's port from a second netlink socket: well-formed
// forks and exits, and badly formed and foreign ones. A datagram from user space carries its sender's port, so
// the connector drops each one as spoofed before decoding it (Foreign and
// Malformed stay unchanged: those count what the kernel's own port sends,
// see TestForeignAndMalformedFromKernelPort); none changes the tree.
func TestIntegrationForgedMessagesChangeNothing(t *testing.T) {
	requireConnector(t)
	sleeper := exec.Command("sleep", "30")
	if err := sleeper.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { sleeper.Process.Kill(); sleeper.Wait() })
	root := sleeper.Process.Pid
	// Without the kernel tree filter: it would drop the forged messages
	// about non-members before the spoofing check counts them, and the
	// marker's events (an outsider's) that this test waits for. Forged
	// messages about members pass the filter and meet the same check.
	hub := NewHub(&HubConfig{FilterEntries: -1})
	w := mustAttach(t, root, &Config{Hub: hub, Strategy: StrategyConnector, IncludeRoot: true})
	mustPoll(t, w)
	w.hub.mu.Lock()
	port, before := w.run.conn.PortID(), w.run.conn.Stats()
	w.hub.mu.Unlock()

	fd, err := unix.Socket(unix.AF_NETLINK, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, unix.NETLINK_CONNECTOR)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(fd)
	msgs := badMessages(root)
	msgs["well-formed fork by the root"] = connectortest.EncodeMessage(connector.Event{What: connector.WhatFork,
		ParentPID: int32(root), ParentTGID: int32(root), PID: 4000000, TGID: 4000000})
	msgs["well-formed exit of the root"] = connectortest.EncodeMessage(connector.Event{What: connector.WhatExit,
		PID: int32(root), TGID: int32(root), ExitStatus: 9})
	for name, b := range msgs {
		if err := unix.Sendto(fd, b, 0, &unix.SockaddrNetlink{Family: unix.AF_NETLINK, Pid: port}); err != nil {
			t.Fatalf("%s: %v", name, err)
		}
	}
	marker := exec.Command("sh", "-c", "true")
	hubEvents := func() uint64 { s := w.Hub().Stats(); return s.Forks + s.Execs + s.Exits }
	n := hubEvents()
	if err := marker.Run(); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the marker's events", func() bool { return hubEvents() >= n+3 })
	s := mustPoll(t, w)
	if !s.RootAlive || !slices.Equal(s.PIDs(), []int{root}) || !s.Delta.Empty() {
		t.Errorf("forged messages changed the tree: %+v", s)
	}
	w.hub.mu.Lock()
	after := w.run.conn.Stats()
	w.hub.mu.Unlock()
	if got := after.Spoofed - before.Spoofed; got != uint64(len(msgs)) {
		t.Errorf("Spoofed grew by %d, want %d", got, len(msgs))
	}
	if after.Foreign != before.Foreign || after.Malformed != before.Malformed {
		t.Errorf("forged datagrams were decoded: Foreign %d→%d, Malformed %d→%d", before.Foreign, after.Foreign, before.Malformed, after.Malformed)
	}
}

// TestForeignAndMalformedFromKernelPort sends the same messages from the
// kernel's port (a fake kernel): each is dropped and counted as Foreign or
// Malformed, and the tree does not change.
func TestForeignAndMalformedFromKernelPort(t *testing.T) {
	fw := newFakeWorld(t)
	w := fw.attach(Config{IncludeRoot: true})
	first := mustPoll(t, w)
	fw.hub.mu.Lock()
	before := fw.hub.run.conn.Stats()
	fw.hub.mu.Unlock()
	msgs := badMessages(100)
	delete(msgs, "exit and fork in one datagram") // well formed: from the kernel's port it is the truth
	foreign := 0
	for name, b := range msgs {
		if strings.HasPrefix(name, "other") || strings.HasPrefix(name, "NLMSG") {
			foreign++
		}
		fw.kernel.EmitRaw(0, b)
	}
	fw.emit(forkEv(1, 999)) // a marker outside the tree
	fw.sync()
	s := mustPoll(t, w)
	if !slices.Equal(s.PIDs(), first.PIDs()) || !s.Delta.Empty() || !s.RootAlive {
		t.Errorf("bad messages changed the tree: %+v", s)
	}
	fw.hub.mu.Lock()
	after := fw.hub.run.conn.Stats()
	fw.hub.mu.Unlock()
	gotF, gotM := after.Foreign-before.Foreign, after.Malformed-before.Malformed
	if gotF != uint64(foreign) || gotM != uint64(len(msgs)-foreign) || after.Received-before.Received != 1 {
		t.Errorf("Foreign +%d (want %d), Malformed +%d (want %d), Received +%d (want 1, the marker)",
			gotF, foreign, gotM, len(msgs)-foreign, after.Received-before.Received)
	}
}

// TestAttachRacesExitingRoot attaches to processes that exit (or are
// killed) while Attach runs: every result is a Watcher or ErrNoSuchProcess,
// never another error or a panic.
func TestAttachRacesExitingRoot(t *testing.T) {
	strategies := []Strategy{StrategyPoll}
	if os.Geteuid() == 0 {
		if c, err := connector.Dial(nil); err == nil {
			c.Close()
			strategies = append(strategies, StrategyConnector)
		}
	}
	for _, strategy := range strategies {
		t.Run(string(strategy), func(t *testing.T) {
			hub := NewHub(nil) // shared: keeps the socket open across attaches
			var ok, gone int
			for i := range 300 {
				cmd := exec.Command("sh", "-c", "exit 0")
				if i%2 == 1 {
					cmd = exec.Command("sleep", "1")
				}
				if err := cmd.Start(); err != nil {
					t.Fatal(err)
				}
				pid := cmd.Process.Pid
				if i%2 == 1 {
					go func() {
						time.Sleep(time.Duration(i%7) * 100 * time.Microsecond)
						syscall.Kill(pid, syscall.SIGKILL)
					}()
				}
				cfg := &Config{Strategy: strategy}
				if strategy == StrategyConnector {
					cfg.Hub = hub
				}
				w, err := Attach(pid, cfg)
				switch {
				case err == nil:
					ok++
					w.Close()
				case errors.Is(err, ErrNoSuchProcess):
					gone++
				default:
					t.Errorf("Attach(%d) = %v", pid, err)
				}
				syscall.Kill(pid, syscall.SIGKILL)
				cmd.Wait()
			}
			t.Logf("%s: %d attached, %d gone (ErrNoSuchProcess)", strategy, ok, gone)
		})
	}
}

// TestAttachBadInputRealProc checks bad PIDs and proc roots against the
// real /proc (TestAttachErrors covers a fake one).
func TestAttachBadInputRealProc(t *testing.T) {
	b, err := os.ReadFile("/proc/sys/kernel/pid_max")
	if err != nil {
		t.Fatal(err)
	}
	pidMax, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil {
		t.Fatal(err)
	}
	free := 0
	for pid := pidMax - 1; pid > 1; pid-- {
		if _, err := os.Stat("/proc/" + strconv.Itoa(pid)); os.IsNotExist(err) {
			free = pid
			break
		}
	}
	zombie := exec.Command("sh", "-c", "exit 0")
	if err := zombie.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { zombie.Wait() })
	waitFor(t, "the zombie", func() bool {
		b, err := os.ReadFile("/proc/" + strconv.Itoa(zombie.Process.Pid) + "/stat")
		return err == nil && strings.Contains(string(b), ") Z ")
	})
	file := t.TempDir() + "/proc"
	if err := os.WriteFile(file, []byte("not a directory"), 0o644); err != nil {
		t.Fatal(err)
	}
	fake := fakeproc.New(t)
	fake.Set(fakeproc.Proc{PID: 1, Comm: "init", StartTicks: 1})
	self := os.Getpid()
	tests := []struct {
		name   string
		pid    int
		cfg    *Config
		target error
	}{
		{"zero", 0, nil, ErrInvalidPID},
		{"minus one", -1, nil, ErrInvalidPID},
		{"MinInt", math.MinInt, nil, ErrInvalidPID},
		{"pid_max", pidMax, nil, ErrInvalidPID},
		{"above int32", math.MaxInt32 + 1, nil, ErrInvalidPID},
		{"MaxInt", math.MaxInt, nil, ErrInvalidPID},
		{"nonexistent", free, nil, ErrNoSuchProcess},
		{"zombie", zombie.Process.Pid, nil, ErrNoSuchProcess},
		{"zombie, poll", zombie.Process.Pid, &Config{Strategy: StrategyPoll}, ErrNoSuchProcess},
		{"ProcRoot a file", self, &Config{ProcRoot: file}, ErrInvalidConfig},
		{"ProcRoot sysfs", self, &Config{ProcRoot: "/sys"}, ErrInvalidConfig},
		{"ProcRoot empty dir", self, &Config{ProcRoot: t.TempDir()}, ErrInvalidConfig},
		{"ProcRoot relative garbage", self, &Config{ProcRoot: "no/such/dir"}, ErrInvalidConfig},
		{"Hub with another ProcRoot", self, &Config{Hub: NewHub(&HubConfig{ProcRoot: fake.Root()})}, ErrInvalidConfig},
		{"negative ReconcileInterval is fine, negative TombstoneLimit not", self, &Config{ReconcileInterval: -1, TombstoneLimit: -1}, ErrInvalidConfig},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			w, err := Attach(tt.pid, tt.cfg)
			if err == nil {
				w.Close()
				t.Fatal("Attach succeeded")
			}
			if !errors.Is(err, tt.target) {
				t.Fatalf("Attach = %v, want %v", err, tt.target)
			}
			var pe *PIDError
			var ce *ConfigError
			if !errors.As(err, &pe) && !errors.As(err, &ce) {
				t.Errorf("error %T is neither *PIDError nor *ConfigError", err)
			}
		})
	}
}
