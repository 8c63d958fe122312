//go:build linux && (amd64 || arm64)

package workload

import (
	"os"
	"runtime"
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"
)

// Operations a raw child performs.
const (
	opLeaf    = 1 // sleep, then exit with code or kill itself with sig
	opWrapper = 2 // fork a leaf grandchild, report it, exit 0
	opChain   = 3 // vfork the next link (depth more times), wait, exit 0
	opExec    = 4 // report comm, sleep before, reset signals, execve
)

// Exit codes of a raw child that failed; the failure is also reported on
// the message pipe.
const (
	codeForkFailed = 125
	codeExecFailed = 127
)

// atFDCWD is AT_FDCWD (-100) as a system call argument.
const atFDCWD = ^uintptr(99)

// Message types on the message pipe.
const (
	msgLineage = 1 // PID was forked by PPID; Kind, Value = index
	msgError   = 2 // PID failed: Kind = stage, Value = errno
	msgThreads = 3 // PID saw Value threads
	msgComm    = 4 // PID's comm before exec is Comm
)

// Stages of msgError.
const (
	stageFork = 1
	stageExec = 2
	stageComm = 3
)

// wireMsg is one message on the message pipe. Raw children write it
// straight from memory, so it is in native byte order; 56 bytes is far below
// PIPE_BUF, so writes from many processes never interleave.
type wireMsg struct {
	Type  uint32
	Kind  uint32
	PID   int32
	PPID  int32
	Value int64
	Round int32
	_     int32
	Comm  [24]byte
}

const wireMsgSize = int(unsafe.Sizeof(wireMsg{}))

// kernelSigaction is struct sigaction as the rt_sigaction system call takes
// it; all zero means SIG_DFL.
type kernelSigaction struct {
	handler, flags, restorer, mask uint64
}

// plan is everything a raw child needs, allocated before the fork. The
// child reads it and writes only its own copy-on-write copy of it.
type plan struct {
	op    uintptr
	depth uintptr // opChain: links still to fork below this one
	index int64   // this process's Record.Index
	round int32   // the round, reported in lineage messages
	kind  uint32  // kind of the children this process reports

	sleep  syscall.Timespec // opLeaf: lifetime
	before syscall.Timespec // opExec: delay before execve
	code   uintptr          // exit code
	sig    uintptr          // 0, or the signal to kill itself with

	msgFD uintptr
	msg   wireMsg
	info  [128]byte // siginfo for waitid

	dfl     kernelSigaction
	sigset  uint64 // bit of sig
	all     uint64 // every signal
	none    uint64 // no signal
	oldMask uint64 // the forking thread's mask, restored in the parent

	// opExec
	path     *byte
	argv     *unsafe.Pointer // NULL-terminated
	envp     *unsafe.Pointer // NULL-terminated
	commPath *byte
	keep     [][]byte // keeps path, argv and envp strings alive
	ptrs     []unsafe.Pointer
}

// newPlan returns a plan with the constant parts filled in.
func newPlan(msgFD int) *plan {
	p := &plan{msgFD: uintptr(msgFD), all: ^uint64(0)}
	p.commPath = &[]byte("/proc/self/comm\x00")[0]
	return p
}

// setSleep sets a timespec from nanoseconds.
func setSleep(ts *syscall.Timespec, ns int64) {
	*ts = syscall.NsecToTimespec(ns)
}

// setSignal sets the signal the child kills itself with (0 for none).
func (p *plan) setSignal(sig syscall.Signal) {
	p.sig = uintptr(sig)
	p.sigset = 0
	if sig > 0 {
		p.sigset = 1 << (uint(sig) - 1)
	}
}

// setExec sets the program an opExec child runs. env may be empty.
func (p *plan) setExec(path string, argv, env []string) {
	cstr := func(s string) unsafe.Pointer {
		b := append([]byte(s), 0)
		p.keep = append(p.keep, b)
		return unsafe.Pointer(&b[0])
	}
	p.keep = nil
	p.path = (*byte)(cstr(path))
	p.ptrs = make([]unsafe.Pointer, 0, len(argv)+len(env)+2)
	for _, a := range argv {
		p.ptrs = append(p.ptrs, cstr(a))
	}
	p.ptrs = append(p.ptrs, nil)
	envStart := len(p.ptrs)
	for _, e := range env {
		p.ptrs = append(p.ptrs, cstr(e))
	}
	p.ptrs = append(p.ptrs, nil)
	p.argv = &p.ptrs[0]
	p.envp = &p.ptrs[envStart]
}

// rawFork forks a child that runs p and returns its PID. It holds
// syscall.ForkLock, locks the goroutine to its thread and blocks every signal
// on that thread around the clone, so the child starts with all signals
// blocked and no Go signal handler can run in it.
func rawFork(p *plan) (int, error) {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	syscall.ForkLock.Lock()
	defer syscall.ForkLock.Unlock()
	if _, _, e := syscall.RawSyscall6(syscall.SYS_RT_SIGPROCMASK, unix.SIG_SETMASK,
		uintptr(unsafe.Pointer(&p.all)), uintptr(unsafe.Pointer(&p.oldMask)), 8, 0, 0); e != 0 {
		return 0, os.NewSyscallError("rt_sigprocmask", e)
	}
	pid, e := forkRun(p)
	syscall.RawSyscall6(syscall.SYS_RT_SIGPROCMASK, unix.SIG_SETMASK,
		uintptr(unsafe.Pointer(&p.oldMask)), 0, 8, 0, 0)
	runtime.KeepAlive(p)
	if e != 0 {
		return 0, os.NewSyscallError("clone", e)
	}
	return int(pid), nil
}

// forkRun clones. In the parent it returns the child's PID; the child runs
// p and never returns. Everything the child executes is nosplit, norace and
// makes only raw system calls on preallocated memory.
//
//go:nosplit
//go:norace
func forkRun(p *plan) (uintptr, syscall.Errno) {
	pid, _, e := syscall.RawSyscall6(syscall.SYS_CLONE, uintptr(syscall.SIGCHLD), 0, 0, 0, 0, 0)
	if e != 0 || pid != 0 {
		return pid, e
	}
	childRun(p)
	return 0, 0 // not reached
}

// rawVfork is syscall.rawVforkSyscall, in assembly: a clone system call
// whose return address survives a CLONE_VM child sharing the stack.
//
//go:noescape
func rawVfork(trap, a1, a2, a3 uintptr) (r1 uintptr, err syscall.Errno)

// childRun is the raw child. It never returns.
//
//go:nosplit
//go:norace
func childRun(p *plan) {
	switch p.op {
	case opWrapper:
		pid, _, e := syscall.RawSyscall6(syscall.SYS_CLONE, uintptr(syscall.SIGCHLD), 0, 0, 0, 0, 0)
		if e != 0 {
			childFail(p, stageFork, e, codeForkFailed)
		}
		if pid == 0 {
			childLeaf(p)
		}
		childLineage(p, pid, p.index)
		childExit(0)
	case opChain:
		// Links below the first share its address space: each vforks
		// the next (CLONE_VM|CLONE_VFORK), so a deep chain costs no
		// page-table copies (full forks of a full copy cost O(depth) in
		// anon_vma chains per fork). A parent is suspended until its
		// child exits, then waits for it without reaping (the zombie is
		// reparented to the root) and exits 0. After the vfork returns
		// the parent uses only pid, e and p, never state the child may
		// have changed on the shared stack or in *p.
		for p.depth > 0 {
			pid, e := rawVfork(syscall.SYS_CLONE, syscall.CLONE_VM|syscall.CLONE_VFORK|uintptr(syscall.SIGCHLD), 0, 0)
			if e != 0 {
				childFail(p, stageFork, e, codeForkFailed)
			}
			if pid != 0 {
				syscall.RawSyscall6(syscall.SYS_WAITID, unix.P_PID, pid,
					uintptr(unsafe.Pointer(&p.info[0])), syscall.WEXITED|syscall.WNOWAIT, 0, 0)
				childExit(0)
			}
			p.depth--
			p.index++
			// The parent is alive (suspended), so getppid is the forker.
			self, _, _ := syscall.RawSyscall6(syscall.SYS_GETPID, 0, 0, 0, 0, 0, 0)
			parent, _, _ := syscall.RawSyscall6(syscall.SYS_GETPPID, 0, 0, 0, 0, 0, 0)
			childReport(p, self, parent, p.index)
		}
		childLeaf(p)
	case opExec:
		childComm(p)
		if p.before.Sec != 0 || p.before.Nsec != 0 {
			syscall.RawSyscall6(syscall.SYS_NANOSLEEP, uintptr(unsafe.Pointer(&p.before)), 0, 0, 0, 0, 0)
		}
		// Default dispositions and an empty mask for the new program.
		// Exec would reset caught signals anyway; this also undoes
		// inherited SIG_IGN and the blocked mask.
		for sig := uintptr(1); sig <= 64; sig++ {
			if sig != uintptr(syscall.SIGKILL) && sig != uintptr(syscall.SIGSTOP) {
				syscall.RawSyscall6(syscall.SYS_RT_SIGACTION, sig, uintptr(unsafe.Pointer(&p.dfl)), 0, 8, 0, 0)
			}
		}
		syscall.RawSyscall6(syscall.SYS_RT_SIGPROCMASK, unix.SIG_SETMASK, uintptr(unsafe.Pointer(&p.none)), 0, 8, 0, 0)
		_, _, e := syscall.RawSyscall6(syscall.SYS_EXECVE, uintptr(unsafe.Pointer(p.path)),
			uintptr(unsafe.Pointer(p.argv)), uintptr(unsafe.Pointer(p.envp)), 0, 0, 0)
		childFail(p, stageExec, e, codeExecFailed)
	}
	childLeaf(p)
}

// childLeaf sleeps, then kills itself with p.sig or exits with p.code.
//
//go:nosplit
//go:norace
func childLeaf(p *plan) {
	if p.sleep.Sec != 0 || p.sleep.Nsec != 0 {
		// All signals are blocked, so this cannot be interrupted.
		syscall.RawSyscall6(syscall.SYS_NANOSLEEP, uintptr(unsafe.Pointer(&p.sleep)), 0, 0, 0, 0, 0)
	}
	if p.sig != 0 {
		if p.sig != uintptr(syscall.SIGKILL) {
			// Default action instead of the inherited Go handler,
			// then unblock: the pending signal is delivered at once.
			syscall.RawSyscall6(syscall.SYS_RT_SIGACTION, p.sig, uintptr(unsafe.Pointer(&p.dfl)), 0, 8, 0, 0)
		}
		self, _, _ := syscall.RawSyscall6(syscall.SYS_GETPID, 0, 0, 0, 0, 0, 0)
		syscall.RawSyscall6(syscall.SYS_KILL, self, p.sig, 0, 0, 0, 0)
		syscall.RawSyscall6(syscall.SYS_RT_SIGPROCMASK, unix.SIG_UNBLOCK, uintptr(unsafe.Pointer(&p.sigset)), 0, 8, 0, 0)
	}
	childExit(p.code)
}

// childLineage reports that this process forked pid, whose Record.Index is
// index.
//
//go:nosplit
//go:norace
func childLineage(p *plan, pid uintptr, index int64) {
	self, _, _ := syscall.RawSyscall6(syscall.SYS_GETPID, 0, 0, 0, 0, 0, 0)
	childReport(p, pid, self, index)
}

// childReport reports that parent forked pid, whose Record.Index is index.
//
//go:nosplit
//go:norace
func childReport(p *plan, pid, parent uintptr, index int64) {
	p.msg.Type = msgLineage
	p.msg.Kind = p.kind
	p.msg.PID = int32(pid)
	p.msg.PPID = int32(parent)
	p.msg.Value = index
	p.msg.Round = p.round
	childWrite(p)
}

// childComm reports this process's comm, read from /proc/self/comm.
//
//go:nosplit
//go:norace
func childComm(p *plan) {
	self, _, _ := syscall.RawSyscall6(syscall.SYS_GETPID, 0, 0, 0, 0, 0, 0)
	fd, _, e := syscall.RawSyscall6(syscall.SYS_OPENAT, atFDCWD, uintptr(unsafe.Pointer(p.commPath)),
		syscall.O_RDONLY|syscall.O_CLOEXEC, 0, 0, 0)
	if e != 0 {
		childFail(p, stageComm, e, codeExecFailed)
	}
	n, _, e := syscall.RawSyscall6(syscall.SYS_READ, fd, uintptr(unsafe.Pointer(&p.msg.Comm[0])), uintptr(len(p.msg.Comm)), 0, 0, 0)
	syscall.RawSyscall6(syscall.SYS_CLOSE, fd, 0, 0, 0, 0, 0)
	if e != 0 {
		childFail(p, stageComm, e, codeExecFailed)
	}
	for i := n; i < uintptr(len(p.msg.Comm)); i++ {
		p.msg.Comm[i] = 0
	}
	p.msg.Type = msgComm
	p.msg.PID = int32(self)
	childWrite(p)
}

// childFail reports a failure and exits with code.
//
//go:nosplit
//go:norace
func childFail(p *plan, stage uint32, errno syscall.Errno, code uintptr) {
	self, _, _ := syscall.RawSyscall6(syscall.SYS_GETPID, 0, 0, 0, 0, 0, 0)
	p.msg.Type = msgError
	p.msg.Kind = stage
	p.msg.PID = int32(self)
	p.msg.Value = int64(errno)
	childWrite(p)
	childExit(code)
}

// childWrite writes p.msg to the message pipe.
//
//go:nosplit
//go:norace
func childWrite(p *plan) {
	syscall.RawSyscall6(syscall.SYS_WRITE, p.msgFD, uintptr(unsafe.Pointer(&p.msg)), unsafe.Sizeof(p.msg), 0, 0, 0)
}

// childExit ends the process.
//
//go:nosplit
//go:norace
func childExit(code uintptr) {
	for {
		syscall.RawSyscall6(syscall.SYS_EXIT_GROUP, code, 0, 0, 0, 0, 0)
	}
}
