//go:build linux

package connector_test

import (
	"bufio"
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"syscall"
	"time"
)

// runProcessHelper runs the process shapes of the tree filter tests in a
// re-executed test binary. Each first waits for a line on stdin (the test
// adds it to the filter's map meanwhile), then prints the pids it made.
func runProcessHelper(mode string) (int, bool) {
	switch mode {
	case "cloneparent":
		// Fork a child with CLONE_PARENT: its parent is our parent.
		waitGo()
		cmd := exec.Command("/bin/sleep", "30")
		cmd.SysProcAttr = &syscall.SysProcAttr{Cloneflags: syscall.CLONE_PARENT}
		if err := cmd.Start(); err != nil {
			fmt.Println("error:", err)
			return 1, true
		}
		fmt.Println(cmd.Process.Pid)
		return 0, true
	case "cloneparent-tree":
		// A normal child that forks with CLONE_PARENT (its child is ours),
		// then our own CLONE_PARENT child (our parent's).
		waitGo()
		mid := exec.Command(os.Args[0])
		mid.Env = append(os.Environ(), helperEnv+"=cloneparent")
		mid.Stdin = strings.NewReader("go\n")
		out, err := mid.Output()
		if err != nil {
			fmt.Println("error:", err)
			return 1, true
		}
		sib := exec.Command("/bin/sleep", "30")
		sib.SysProcAttr = &syscall.SysProcAttr{Cloneflags: syscall.CLONE_PARENT}
		if err := sib.Start(); err != nil {
			fmt.Println("error:", err)
			return 1, true
		}
		f := strings.Fields(string(out)) // "ready", then the grandchild's pid
		fmt.Println(f[len(f)-1], sib.Process.Pid)
		return 0, true
	case "threadexec":
		// exec from a thread other than the first.
		waitGo()
		runtime.LockOSThread() // keeps the main goroutine on the first thread
		done := make(chan error)
		go func() {
			runtime.LockOSThread()
			if syscall.Gettid() == syscall.Getpid() {
				done <- fmt.Errorf("goroutine on the first thread")
				return
			}
			done <- syscall.Exec("/bin/sh", []string{"sh", "-c", "exit 4"}, os.Environ())
		}()
		fmt.Println("error:", <-done)
		return 1, true
	case "leaderexit":
		// The first thread exits while another runs; that one then forks
		// a child and ends the process with status 3.
		waitGo()
		runtime.LockOSThread()
		pid := os.Getpid()
		go func() {
			runtime.LockOSThread()
			for !leaderGone(pid) {
				time.Sleep(time.Millisecond)
			}
			cmd := exec.Command("/bin/true")
			_ = cmd.Run()
			fmt.Println(cmd.Process.Pid)
			os.Exit(3)
		}()
		syscall.RawSyscall(syscall.SYS_EXIT, 0, 0, 0) // this thread only
		return 1, true
	}
	return 0, false
}

// waitGo says "ready" and waits for a line on stdin.
func waitGo() {
	fmt.Println("ready")
	_, _ = bufio.NewReader(os.Stdin).ReadString('\n')
}

// leaderGone reports whether the first thread of pid is a zombie.
func leaderGone(pid int) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/task/%d/stat", pid, pid))
	if err != nil {
		return true
	}
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	return i < 0 || i+2 >= len(s) || s[i+2] == 'Z'
}
