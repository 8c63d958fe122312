package integration

import (
	"bufio"
	"fmt"
	"io"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/process-watchman/watchman/internal/workload"
	"golang.org/x/sys/unix"
)

// A held tree is this test binary re-executed (envHeldRoot set) as a tree
// root whose every descendant lives until the test releases it: each
// waits on a pipe whose write end the root (or the test) holds. Tests of
// polling mode use it: a poll can only be asked to find what lives when it
// looks, and "when it looks" must be a barrier, never a sleep. Every
// command is answered once it has taken effect in /proc (a child answered
// has been started, a process released has been reaped).
//
// Commands on stdin, one a line, each answered with one line on stdout:
//
//	kids N      N children (cat, each on its own pipe); answers their PIDs
//	wrap        a wrapper (sh) that starts a grandchild (cat) and stays;
//	            answers "wrapper grandchild"
//	wrapfast    the same, but the wrapper exits at once and is reaped
//	            before the answer: the grandchild is an orphan
//	chain D     a chain of D nested subshells (sh), the deepest running
//	            cat; answers the top shell's PID once the deepest is up
//	threads N   a child (this binary, envThreadHolder) with N threads of
//	            its own, one of which (not the first) started a cat;
//	            answers "child cat"
//	exec        a child (sh) that execs cat when told; answers its PID
//	doexec PID  tells it to; answers "ok" once /proc shows it as cat,
//	            name and command line
//	release PID ends that process (closes its pipe) and answers "ok" once
//	            it is reaped by this root (its child, or an orphan it
//	            adopted as a subreaper), or is a zombie of whoever
//	            adopted it (not live: groupMembers and the watcher agree)
//
// At the end of stdin the root releases everything (wrappers first) and
// exits. With envHeldRoot=subreaper it is a child subreaper
// (PR_SET_CHILD_SUBREAPER): orphans of the tree are reparented to it.
const (
	envHeldRoot     = "PWATCH_TEST_HELDROOT"
	envThreadHolder = "PWATCH_TEST_THREADHOLDER"
)

// heldProc is a process the held root keeps alive.
type heldProc struct {
	cmd     *exec.Cmd // nil for a grandchild
	hold    io.Closer // closing it ends the process
	wrapper bool
}

// heldDeadline bounds the root's own waits (an exec to show in /proc, an
// orphan adopted by init to be reaped): only a broken run reaches it.
const heldDeadline = 60 * time.Second

func heldRootMain() int {
	if os.Getenv(envHeldRoot) == "subreaper" {
		if err := unix.Prctl(unix.PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0); err != nil {
			fmt.Fprintln(os.Stderr, "held root:", err)
			return 2
		}
	}
	procs := map[int]*heldProc{}
	sc := bufio.NewScanner(os.Stdin)
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		n := 0
		if len(f) == 2 {
			n, _ = strconv.Atoi(f[1])
		}
		var reply string
		var err error
		switch f[0] {
		case "kids":
			var pids []string
			for range n {
				var pid int
				if pid, err = heldStart(procs, exec.Command("cat")); err != nil {
					break
				}
				pids = append(pids, strconv.Itoa(pid))
			}
			reply = strings.Join(pids, " ")
		case "wrap", "wrapfast":
			reply, err = heldWrap(procs, f[0] == "wrapfast")
		case "chain":
			reply, err = heldChain(procs, n)
		case "threads":
			reply, err = heldThreads(procs, n)
		case "exec":
			var pid int
			pid, err = heldStart(procs, exec.Command("sh", "-c", "read x; exec cat"))
			reply = strconv.Itoa(pid)
		case "doexec":
			reply, err = heldDoExec(procs, n)
		case "release":
			reply, err = "ok", heldRelease(procs, n)
		default:
			err = fmt.Errorf("unknown command %q", sc.Text())
		}
		if err != nil {
			reply = "error " + err.Error()
		}
		fmt.Println(reply)
	}
	for _, wrappers := range []bool{true, false} {
		for pid, p := range procs {
			if p.wrapper == wrappers {
				if err := heldRelease(procs, pid); err != nil {
					fmt.Fprintln(os.Stderr, "held root:", err)
				}
			}
		}
	}
	return 0
}

// heldStart starts c with a pipe on its stdin, which holds it.
func heldStart(procs map[int]*heldProc, c *exec.Cmd) (int, error) {
	in, err := c.StdinPipe()
	if err != nil {
		return 0, err
	}
	if err := c.Start(); err != nil {
		return 0, err
	}
	procs[c.Process.Pid] = &heldProc{cmd: c, hold: in}
	return c.Process.Pid, nil
}

// heldShell starts sh -c script with fd 3 the read end of a new pipe,
// whose write end (hold) keeps what reads it alive, and pipes on its stdin
// and stdout; it returns the first line the shell writes. On an error
// nothing is left running.
func heldShell(script string) (c *exec.Cmd, in io.WriteCloser, line string, hold *os.File, err error) {
	r, hold, err := os.Pipe()
	if err != nil {
		return nil, nil, "", nil, err
	}
	defer r.Close()
	c = exec.Command("sh", "-c", script)
	c.ExtraFiles = []*os.File{r}
	in, err = c.StdinPipe()
	var out io.ReadCloser
	if err == nil {
		out, err = c.StdoutPipe()
	}
	if err == nil {
		err = c.Start()
	}
	if err != nil {
		hold.Close()
		return nil, nil, "", nil, err
	}
	if line, err = bufio.NewReader(out).ReadString('\n'); err != nil {
		hold.Close()
		in.Close()
		c.Wait()
		return nil, nil, "", nil, fmt.Errorf("%q said %q: %v", script, line, err)
	}
	return c, in, strings.TrimSpace(line), hold, nil
}

// heldWrap starts a wrapper shell whose grandchild (cat) reads a pipe the
// root holds; with fast the wrapper exits at once and is reaped.
func heldWrap(procs map[int]*heldProc, fast bool) (string, error) {
	script := "cat <&3 >/dev/null & echo $!; read x"
	if fast {
		script = "cat <&3 >/dev/null & echo $!"
	}
	c, in, line, hold, err := heldShell(script)
	if err != nil {
		return "", err
	}
	gpid, err := strconv.Atoi(line)
	if err != nil {
		hold.Close()
		in.Close()
		c.Wait()
		return "", fmt.Errorf("wrapper said %q", line)
	}
	procs[gpid] = &heldProc{hold: hold}
	if fast {
		in.Close()
		if err := c.Wait(); err != nil {
			return "", err
		}
	} else {
		procs[c.Process.Pid] = &heldProc{cmd: c, hold: in, wrapper: true}
	}
	return fmt.Sprintf("%d %d", c.Process.Pid, gpid), nil
}

// heldChain starts a chain of depth nested subshells; the deepest starts
// cat on a pipe the root holds, then says "up".
func heldChain(procs map[int]*heldProc, depth int) (string, error) {
	script := `f() { if [ "$1" -gt 0 ]; then f $(($1 - 1)) & wait; else cat <&3 >/dev/null & echo up; wait; fi; }; f ` + strconv.Itoa(depth)
	c, _, line, hold, err := heldShell(script)
	if err != nil {
		return "", err
	}
	procs[c.Process.Pid] = &heldProc{cmd: c, hold: hold}
	if line != "up" {
		return "", fmt.Errorf("chain said %q", line)
	}
	return strconv.Itoa(c.Process.Pid), nil
}

// heldThreads starts a thread holder (threadHolderMain) and waits for its
// cat.
func heldThreads(procs map[int]*heldProc, n int) (string, error) {
	c := exec.Command(os.Args[0])
	c.Env = append(os.Environ(), envThreadHolder+"="+strconv.Itoa(n))
	c.Env = withoutEnv(c.Env, envHeldRoot)
	c.Stderr = os.Stderr
	out, err := c.StdoutPipe()
	if err != nil {
		return "", err
	}
	pid, err := heldStart(procs, c)
	if err != nil {
		return "", err
	}
	line, err := bufio.NewReader(out).ReadString('\n')
	cat, ok := strings.CutPrefix(strings.TrimSpace(line), "ready ")
	if err != nil || !ok {
		return "", fmt.Errorf("thread holder said %q: %v", line, err)
	}
	return fmt.Sprintf("%d %s", pid, cat), nil
}

// withoutEnv returns env without the variable name.
func withoutEnv(env []string, name string) []string {
	out := env[:0:0]
	for _, e := range env {
		if !strings.HasPrefix(e, name+"=") {
			out = append(out, e)
		}
	}
	return out
}

// heldDoExec tells the exec child pid to exec cat and waits until /proc
// shows it, with its command line.
func heldDoExec(procs map[int]*heldProc, pid int) (string, error) {
	p, ok := procs[pid]
	if !ok {
		return "", fmt.Errorf("no process %d", pid)
	}
	if _, err := io.WriteString(p.hold.(io.Writer), "x\n"); err != nil {
		return "", err
	}
	deadline := time.Now().Add(heldDeadline)
	for {
		st, err := workload.ReadStat(pid)
		if err != nil {
			return "", err
		}
		// The kernel sets the new name first and the arguments a moment
		// later: the exec is over once both show.
		args, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/cmdline")
		if st.Comm == "cat" && err == nil && string(args) == "cat\x00" {
			return "ok", nil
		}
		if time.Now().After(deadline) {
			return "", fmt.Errorf("%d still shows as %q", pid, st.Comm)
		}
		time.Sleep(time.Millisecond)
	}
}

// heldRelease ends process pid and waits until it is reaped.
func heldRelease(procs map[int]*heldProc, pid int) error {
	p, ok := procs[pid]
	if !ok {
		return fmt.Errorf("no process %d", pid)
	}
	delete(procs, pid)
	p.hold.Close()
	if p.cmd != nil {
		p.cmd.Wait()
		return nil
	}
	// A grandchild: reaped by this root if it adopted it, else by its
	// parent or whoever adopted it.
	deadline := time.Now().Add(heldDeadline)
	for {
		st, err := workload.ReadStat(pid)
		if err != nil {
			return nil // reaped: its PID has no /proc entry
		}
		if st.PPID != os.Getpid() && st.State == 'Z' {
			return nil // another's zombie, which is not live (init may reap late)
		}
		if st.PPID == os.Getpid() {
			var ws unix.WaitStatus
			_, err := unix.Wait4(pid, &ws, 0, nil)
			return err
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("orphan %d not reaped by its parent %d", pid, st.PPID)
		}
		time.Sleep(time.Millisecond)
	}
}

// threadHolderMain is a child with n threads of its own (goroutines
// locked to their threads, idle), one of which, not the first thread,
// starts a cat: the kernel lists that child in that thread's children
// file only. It writes "ready CATPID" and ends the cat and exits at the
// end of stdin.
func threadHolderMain() int {
	n, err := strconv.Atoi(os.Getenv(envThreadHolder))
	if err != nil || n < 2 {
		fmt.Fprintln(os.Stderr, "thread holder: bad thread count")
		return 2
	}
	type thread struct {
		tid  int
		fork chan chan *exec.Cmd
	}
	ready := make(chan thread)
	stop := make(chan struct{})
	for range n {
		go func() {
			runtime.LockOSThread()
			th := thread{tid: unix.Gettid(), fork: make(chan chan *exec.Cmd)}
			ready <- th
			select {
			case reply := <-th.fork:
				c := exec.Command("cat")
				c.Stdin = os.Stdin
				if err := c.Start(); err != nil {
					fmt.Fprintln(os.Stderr, "thread holder:", err)
					c = nil
				}
				reply <- c
				<-stop
			case <-stop:
			}
		}()
	}
	var forker thread
	for range n {
		if th := <-ready; th.tid != os.Getpid() && forker.fork == nil {
			forker = th
		}
	}
	if forker.fork == nil {
		fmt.Fprintln(os.Stderr, "thread holder: every locked goroutine is on the first thread")
		return 2
	}
	reply := make(chan *exec.Cmd)
	forker.fork <- reply
	cat := <-reply
	if cat == nil {
		return 2
	}
	fmt.Printf("ready %d\n", cat.Process.Pid)
	// The cat shares stdin: it ends at its end, and so does this process.
	cat.Wait()
	close(stop)
	return 0
}

// heldTree is the test's side of a held root.
type heldTree struct {
	cmd *exec.Cmd
	in  io.WriteCloser
	out *bufio.Scanner
}

// startHeldTree starts a held root in a process group of its own (its
// PID is the group's ID), as a child subreaper or not.
func startHeldTree(t *testing.T, subreaper bool) *heldTree {
	t.Helper()
	c := exec.Command(os.Args[0])
	mode := "plain"
	if subreaper {
		mode = "subreaper"
	}
	c.Env = append(os.Environ(), envHeldRoot+"="+mode)
	c.Stderr = os.Stderr
	c.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
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
	h := &heldTree{cmd: c, in: in, out: bufio.NewScanner(out)}
	t.Cleanup(func() {
		h.end()
		syscall.Kill(-c.Process.Pid, syscall.SIGKILL) // a failed test's leftovers
	})
	return h
}

func (h *heldTree) pid() int { return h.cmd.Process.Pid }

// do sends a command and returns the numbers of its answer.
func (h *heldTree) do(t *testing.T, format string, args ...any) []int {
	t.Helper()
	cmd := fmt.Sprintf(format, args...)
	if _, err := fmt.Fprintln(h.in, cmd); err != nil {
		t.Fatalf("held root: %q: %v", cmd, err)
	}
	if !h.out.Scan() {
		t.Fatalf("held root: no answer to %q", cmd)
	}
	a := h.out.Text()
	if strings.HasPrefix(a, "error") {
		t.Fatalf("held root: %q: %s", cmd, a)
	}
	if a == "ok" {
		return nil
	}
	var out []int
	for _, f := range strings.Fields(a) {
		n, err := strconv.Atoi(f)
		if err != nil {
			t.Fatalf("held root: %q answered %q", cmd, a)
		}
		out = append(out, n)
	}
	return out
}

// end closes the root's stdin (it releases everything and exits) and
// reaps it: when end returns the whole tree is gone, but for orphans that
// another process adopted, which heldRelease waited for.
func (h *heldTree) end() {
	if h.in != nil {
		h.in.Close()
		h.in = nil
		h.cmd.Wait()
	}
}
