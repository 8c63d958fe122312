package main

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// gateArg, as the first argument, makes pwatch the gated child of pwatch
// run: it waits on the gate pipe (fd 3), then execs the command in place,
// keeping its PID, or reports why it could not on the status pipe (fd 4).
// It is not a command for people.
const gateArg = "__pwatch-gate"

// The descriptors the gated child inherits (ExtraFiles 0 and 1).
const (
	gateFD   = 3
	statusFD = 4
)

// Exit statuses of a command that cannot be run, as shells use them.
const (
	exitNotFound      = 127
	exitNotExecutable = 126
)

// gateMain is the gated child: args are the resolved path and the argv of
// the command. It returns only when it could not exec.
func gateMain(args []string) int {
	var st unix.Stat_t
	if len(args) < 2 || unix.Fstat(gateFD, &st) != nil || st.Mode&unix.S_IFMT != unix.S_IFIFO ||
		unix.Fstat(statusFD, &st) != nil || st.Mode&unix.S_IFMT != unix.S_IFIFO {
		fmt.Fprintln(os.Stderr, "pwatch: "+gateArg+" is internal to pwatch run")
		return 2
	}
	// The status pipe closes by itself when the exec succeeds.
	unix.CloseOnExec(statusFD)
	var b [1]byte
	n, _ := readRetry(gateFD, b[:])
	unix.Close(gateFD)
	if n != 1 {
		// pwatch gave up before releasing the gate (it failed to attach,
		// or died): never run the command unwatched.
		return 1
	}
	err := syscall.Exec(args[0], args[1:], os.Environ())
	code, why := exitNotExecutable, err.Error()
	if errors.Is(err, syscall.ENOENT) || errors.Is(err, syscall.ENOTDIR) {
		if _, serr := os.Stat(args[0]); serr != nil {
			code = exitNotFound
		} else {
			// The file is there: its interpreter or loader is not.
			why = "bad interpreter or loader: " + why
		}
	}
	msg := fmt.Sprintf("%d %s: %s", code, args[1], why)
	unix.Write(statusFD, []byte(msg))
	return code
}

func readRetry(fd int, b []byte) (int, error) {
	for {
		n, err := unix.Read(fd, b)
		if err != unix.EINTR {
			return n, err
		}
	}
}

// commandError is a COMMAND that cannot be run: pwatch prints it and exits
// with its code (127 not found, 126 not executable).
type commandError struct {
	code int
	msg  string
}

func (e *commandError) Error() string { return e.msg }

// resolveCommand finds name as a shell would, telling "not found" (127)
// from "found but not runnable" (126).
func resolveCommand(name string) (string, error) {
	path, err := exec.LookPath(name)
	if errors.Is(err, exec.ErrDot) {
		// A shell runs it; so does pwatch.
		err = nil
	}
	if err == nil {
		return path, nil
	}
	switch {
	case errors.Is(err, exec.ErrNotFound) && !strings.Contains(name, "/"):
		return "", &commandError{exitNotFound, fmt.Sprintf("%s: command not found", name)}
	case errors.Is(err, fs.ErrNotExist):
		return "", &commandError{exitNotFound, fmt.Sprintf("%s: no such file or directory", name)}
	case errors.Is(err, syscall.EISDIR):
		return "", &commandError{exitNotExecutable, fmt.Sprintf("%s: is a directory", name)}
	case errors.Is(err, fs.ErrPermission):
		return "", &commandError{exitNotExecutable, fmt.Sprintf("%s: permission denied (not an executable file)", name)}
	}
	return "", &commandError{exitNotExecutable, fmt.Sprintf("%s: %v", name, err)}
}

// gatedChild is a command started behind a gate: its process exists (and
// can be attached to) but has not run the command yet.
type gatedChild struct {
	cmd    *exec.Cmd
	gate   *os.File // write end: one byte releases the child
	status *os.File // read end: EOF means the exec succeeded
}

// startGated starts pwatch's own binary as the gated child of path/argv,
// with the given standard streams.
func startGated(path string, argv []string, stdin io.Reader, stdout, stderr io.Writer, attr *syscall.SysProcAttr) (*gatedChild, error) {
	self, err := os.Executable()
	if err != nil {
		return nil, fmt.Errorf("finding pwatch's own binary: %w", err)
	}
	gateR, gateW, err := os.Pipe()
	if err != nil {
		return nil, err
	}
	statusR, statusW, err := os.Pipe()
	if err != nil {
		gateR.Close()
		gateW.Close()
		return nil, err
	}
	cmd := &exec.Cmd{
		Path:       self,
		Args:       append([]string{self, gateArg, path}, argv...),
		Stdin:      stdin,
		Stdout:     stdout,
		Stderr:     stderr,
		ExtraFiles: []*os.File{gateR, statusW},
		// Only matters when the streams are not files (tests): a process
		// left behind must not hold Wait forever.
		WaitDelay:   time.Second,
		SysProcAttr: attr,
	}
	err = cmd.Start()
	gateR.Close()
	statusW.Close()
	if err != nil {
		gateW.Close()
		statusR.Close()
		return nil, err
	}
	return &gatedChild{cmd: cmd, gate: gateW, status: statusR}, nil
}

// release lets the child exec the command and returns the error the child
// reported if the exec failed (a *commandError), after which the child
// exits with that code.
func (g *gatedChild) release() error {
	_, werr := g.gate.Write([]byte{1})
	g.gate.Close()
	msg, err := io.ReadAll(g.status)
	g.status.Close()
	if werr != nil {
		return fmt.Errorf("releasing the command: %w", werr)
	}
	if err != nil {
		return fmt.Errorf("reading the command's exec status: %w", err)
	}
	if len(msg) == 0 {
		return nil
	}
	code, text, _ := strings.Cut(string(msg), " ")
	c, err := strconv.Atoi(code)
	if err != nil {
		c = exitNotExecutable
	}
	return &commandError{c, text}
}
