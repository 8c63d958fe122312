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
		// exec from a thread other than the first: a goroutine locks
		// itself to its thread and, if that is the first one, hands on
		// to another goroutine (which then runs on another thread).
		waitGo()
		done := make(chan error)
		var try func()
		try = func() {
			runtime.LockOSThread() // never unlocked: the thread is not reused
			if syscall.Gettid() == syscall.Getpid() {
				go try()
				return
			}
			done <- syscall.Exec("/bin/sh", []string{"sh", "-c", "exit 4"}, os.Environ())
		}
		go try()
		fmt.Println("error:", <-done)
		return 1, true
	}
	return runExecHelper(mode)
}

// waitGo says "ready" and waits for a line on stdin.
func waitGo() {
	fmt.Println("ready")
	_, _ = bufio.NewReader(os.Stdin).ReadString('\n')
}
