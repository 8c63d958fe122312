//go:build linux

// Package cstorm builds and drives storm.c, the C processes of the
// benchmark suite: a fork storm root that waits at a gate, so that its PID
// and its count of children are known before it starts and watchers attach
// first, and idle trees that fill the host. The C source is built with gcc
// at run time (Build), since a Go root paces a storm by its own cost.
package cstorm

import (
	"bufio"
	_ "embed"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

//go:embed csrc/storm.c
var source []byte

// Build compiles storm.c with gcc -O2 into dir and returns the binary's path.
func Build(dir string) (string, error) {
	src := filepath.Join(dir, "storm.c")
	if err := os.WriteFile(src, source, 0o644); err != nil {
		return "", err
	}
	bin := filepath.Join(dir, "storm")
	out, err := exec.Command("gcc", "-O2", "-o", bin, src).CombinedOutput()
	if err != nil {
		return "", fmt.Errorf("gcc storm.c: %v: %s", err, strings.TrimSpace(string(out)))
	}
	return bin, nil
}

// Storm is a storm root waiting at its gate (stdin).
type Storm struct {
	cmd  *exec.Cmd
	gate *os.File
	out  *os.File
	// Children is how many children it forks.
	Children int
}

// Start starts a storm root of n children (rate a second, 0 = flat out)
// held at its gate.
func Start(bin string, n, rate int) (*Storm, error) {
	gr, gw, err := os.Pipe()
	if err != nil {
		return nil, err
	}
	or, ow, err := os.Pipe()
	if err != nil {
		gr.Close()
		gw.Close()
		return nil, err
	}
	cmd := exec.Command(bin, strconv.Itoa(n), strconv.Itoa(rate))
	cmd.Stdin, cmd.Stdout, cmd.Stderr = gr, ow, os.Stderr
	err = cmd.Start()
	gr.Close()
	ow.Close()
	if err != nil {
		gw.Close()
		or.Close()
		return nil, err
	}
	return &Storm{cmd: cmd, gate: gw, out: or, Children: n}, nil
}

// PID is the storm root's PID.
func (s *Storm) PID() int { return s.cmd.Process.Pid }

// Go opens the gate.
func (s *Storm) Go() error {
	_, err := s.gate.Write([]byte{'\n'})
	s.gate.Close()
	return err
}

// Wait waits until the root has exited (after all its children) and
// returns how long its forks took.
func (s *Storm) Wait() (time.Duration, error) {
	line, _ := bufio.NewReader(s.out).ReadString('\n')
	s.out.Close()
	err := s.cmd.Wait()
	if err != nil {
		return 0, fmt.Errorf("storm: %v", err)
	}
	return ParseForked(line)
}

// Kill ends a storm that will not be waited for.
func (s *Storm) Kill() {
	s.gate.Close()
	_ = s.cmd.Process.Kill()
	s.out.Close()
	_ = s.cmd.Wait()
}

// ParseForked reads the storm's "forked N in SECONDS s" line.
func ParseForked(line string) (time.Duration, error) {
	var n int
	var sec float64
	if _, err := fmt.Sscanf(strings.TrimSpace(line), "forked %d in %g s", &n, &sec); err != nil {
		return 0, fmt.Errorf("storm: unexpected output %q", line)
	}
	return time.Duration(sec * float64(time.Second)), nil
}

// Listener is storm.c's latency anchor: a proc connector listener with
// one blocking recv per event and no processing, which times the forks of
// one parent from the kernel's timestamp to its recv.
type Listener struct {
	cmd *exec.Cmd
	out *bufio.Reader
}

// StartListener starts the listener for n forks of parent and returns once
// it listens.
func StartListener(bin string, parent, n int) (*Listener, error) {
	cmd := exec.Command(bin, "listen", strconv.Itoa(parent), strconv.Itoa(n))
	cmd.Stderr = os.Stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	l := &Listener{cmd: cmd, out: bufio.NewReader(out)}
	if line, err := l.out.ReadString('\n'); strings.TrimSpace(line) != "ready" {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
		return nil, fmt.Errorf("storm listen: %q, %v", line, err)
	}
	return l, nil
}

// Stop ends the listener (at once if it has its n forks, else by
// SIGTERM) and returns the latencies it measured, in the order of the
// forks.
func (l *Listener) Stop() ([]time.Duration, error) {
	_ = l.cmd.Process.Signal(unix.SIGTERM)
	var lat []time.Duration
	for {
		line, err := l.out.ReadString('\n')
		if line = strings.TrimSpace(line); line != "" {
			ns, perr := strconv.ParseInt(line, 10, 64)
			if perr != nil {
				_ = l.cmd.Wait()
				return nil, fmt.Errorf("storm listen: %q", line)
			}
			lat = append(lat, time.Duration(ns))
		}
		if err != nil {
			break
		}
	}
	if err := l.cmd.Wait(); err != nil {
		return lat, fmt.Errorf("storm listen: %v", err)
	}
	return lat, nil
}

// Hold is a tree of idle processes: a root and its sleeping children, who
// die with it.
type Hold struct {
	cmd   *exec.Cmd
	stdin *os.File
}

// StartHold starts a tree of n processes (the root and n-1 children) and
// waits until all are there.
func StartHold(bin string, n int) (*Hold, error) {
	ir, iw, err := os.Pipe()
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(bin, "hold", strconv.Itoa(n))
	cmd.Stdin, cmd.Stderr = ir, os.Stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		ir.Close()
		iw.Close()
		return nil, err
	}
	err = cmd.Start()
	ir.Close()
	if err != nil {
		iw.Close()
		return nil, err
	}
	h := &Hold{cmd: cmd, stdin: iw}
	line, _ := bufio.NewReader(out).ReadString('\n')
	if strings.TrimSpace(line) != "ready" {
		h.Stop()
		return nil, fmt.Errorf("storm hold %d: %q", n, line)
	}
	return h, nil
}

// PID is the tree's root.
func (h *Hold) PID() int { return h.cmd.Process.Pid }

// Stop ends the tree: the root kills and reaps its children, a hundred at
// a time, and exits. If that takes more than a minute (20,000 processes
// on a very busy machine), the root is killed, and the kernel kills its
// children all at once.
func (h *Hold) Stop() {
	h.stdin.Close()
	done := make(chan struct{})
	go func() { _ = h.cmd.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(time.Minute):
		_ = h.cmd.Process.Kill()
		<-done
	}
}

// Gate is a FIFO a storm root started by someone else (pwatch run) waits
// at: storm -g PATH.
type Gate struct{ path string }

// NewGate makes the FIFO in dir.
func NewGate(dir string) (*Gate, error) {
	p := filepath.Join(dir, fmt.Sprintf("gate-%d", time.Now().UnixNano()))
	if err := unix.Mkfifo(p, 0o600); err != nil {
		return nil, err
	}
	return &Gate{path: p}, nil
}

// Path is the FIFO's path.
func (g *Gate) Path() string { return g.path }

// Open waits until the storm root is at the gate (has opened the FIFO),
// at most timeout, then lets it go. It removes the FIFO.
func (g *Gate) Open(timeout time.Duration) error {
	defer os.Remove(g.path)
	deadline := time.Now().Add(timeout)
	for {
		// Non-blocking open for writing fails with ENXIO until a reader
		// has the FIFO open.
		fd, err := unix.Open(g.path, unix.O_WRONLY|unix.O_NONBLOCK|unix.O_CLOEXEC, 0)
		if err == nil {
			_, err = unix.Write(fd, []byte{'\n'})
			unix.Close(fd)
			return err
		}
		if !errors.Is(err, unix.ENXIO) {
			return err
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("gate %s: no storm at it after %v", g.path, timeout)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

// ZombieCPU waits until process pid (a child of this process) has exited,
// leaving it a zombie (waitid WNOWAIT), and reads its own user+system CPU
// from /proc/PID/stat (clock ticks), without its children's: wait4's
// rusage would include the children it reaped (a storm root under pwatch
// run). The caller reaps it afterwards (exec.Cmd.Wait).
func ZombieCPU(pid int) (time.Duration, error) {
	var si unix.Siginfo
	for {
		err := unix.Waitid(unix.P_PID, pid, &si, unix.WEXITED|unix.WNOWAIT, nil)
		if err == nil {
			break
		}
		if !errors.Is(err, unix.EINTR) {
			return 0, err
		}
	}
	return ProcCPU(pid)
}

// ProcCPU is process pid's own user+system CPU from /proc/PID/stat
// (fields 14 and 15, in clock ticks of 10 ms).
func ProcCPU(pid int) (time.Duration, error) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return 0, err
	}
	s := string(b)
	end := strings.LastIndexByte(s, ')')
	if end < 0 {
		return 0, errors.New("bad /proc stat")
	}
	f := strings.Fields(s[end+1:])
	if len(f) < 13 {
		return 0, errors.New("bad /proc stat")
	}
	ut, _ := strconv.ParseUint(f[11], 10, 64)
	st, _ := strconv.ParseUint(f[12], 10, 64)
	return time.Duration(ut+st) * 10 * time.Millisecond, nil
}
