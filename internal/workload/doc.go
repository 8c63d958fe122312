// Package workload starts real process trees whose every process is known
// exactly, for integration tests and benchmarks of the watcher.
//
// The ground truth comes from the workload itself, never from the code under
// test: the workload root is a child subreaper (PR_SET_CHILD_SUBREAPER), so
// every descendant, orphaned or not, is finally reaped by it. Before reaping a
// terminated child it reads that child's /proc/PID/stat (the zombie keeps its
// entry until it is reaped), so even a child that lived 0 ms is recorded with
// its exact identity (PID and start time in clock ticks) and wait status.
// Processes not forked by the root itself report their lineage (who forked
// whom) through a pipe, so a reparented orphan is still recorded with the
// wrapper that forked it as its parent.
//
// # How it runs
//
// A test binary re-executes itself. Its TestMain calls MaybeRun first:
//
//	func TestMain(m *testing.M) {
//		workload.MaybeRun() // runs the workload and exits in a workload process
//		os.Exit(m.Run())
//	}
//
// A test then starts a workload held at a start gate, attaches the watcher
// to the root PID, releases the gate and waits for the ground truth:
//
//	p, err := workload.Start(workload.Spec{Storm: &workload.Storm{Count: 1000, Lifetime: time.Millisecond}})
//	...
//	w := attach(p.PID())      // nothing has been forked yet
//	if err := p.Go(); err != nil { ... }
//	res, err := p.Wait()      // every descendant, exactly
//
// The gate and the result channel are pipes passed as extra files, so the
// workload's stdout and stderr stay free (stdout is /dev/null, stderr is
// the caller's). The root runs in its own process group. On Spec.Timeout or
// Kill the root stops forking, SIGKILLs every other member of its group and
// reaps (and records) them itself; if it does not finish within a grace
// period the caller kills the whole group. Wait returns only when every
// process of the workload has been reaped. The root's environment sets
// GORACE=atexit_sleep_ms=0 so that a -race root exits without the race
// runtime's one-second sleep.
//
// # Lineage and PID reuse
//
// The forker of every process is known exactly: the root notes the PIDs it
// forks, and raw children report the PIDs they fork on a message pipe. A
// process is matched to its lineage by PID, in order: if a PID is reused
// within one workload (likely with pid_max 32768 and a long soak), the n-th
// reaped process with that PID takes the n-th reported fork of it, and its
// parent is the recorded process with the parent's PID that started last
// at or before it. Anything that does not match is reported in
// Result.Problems.
//
// # Shapes
//
// A Spec holds one or more shapes; all present shapes run concurrently in
// each round, and rounds repeat for Spec.Rounds or Spec.Duration (a mixed
// soak workload):
//
//   - Storm: N children of the root, forked flat out or at a rate, each living
//     Lifetime and exiting with code i%256, every k-th killed by a signal it
//     sends itself. ForkOnly children are raw clone(2) children that never exec
//     (see below); ForkExec children exec /bin/sh (Lifetime 0) or /bin/bash
//     (Lifetime > 0) running only shell builtins, so they fork nothing.
//   - Orphans: N wrappers, each forking one grandchild and exiting at once;
//     the grandchild lives Lifetime, is reparented to the root and is recorded
//     there with the wrapper as its parent (raw clone at both levels).
//   - Chain: a Depth-deep chain; each link forks the next and waits for it,
//     the leaf lives Lifetime (see below).
//   - Threads: one child (the test binary re-executed in a threads mode) with
//     Threads OS threads alive at once for Lifetime.
//   - Exec: children that exec /bin/sleep, so their comm changes; the comm
//     before the exec is read by the child itself and recorded.
//
// # Raw fork
//
// Go cannot fork a running runtime safely in general. ForkOnly children,
// orphan wrappers, chain links and exec children are made the way the syscall
// package's forkAndExecInChild does it: with syscall.ForkLock held, the
// calling goroutine locked to its thread and all signals blocked on that
// thread, a //go:nosplit //go:norace function calls clone(SIGCHLD) through
// syscall.RawSyscall6, and the child runs only raw system calls on
// preallocated memory (nanosleep, write, waitid, kill, rt_sigaction, execve,
// exit_group): no allocation, no stack growth, no runtime calls. Because the
// child is a full copy (no CLONE_VM), the parent continues normally.
// Coverage instrumentation with -race (always atomic) adds calls into the
// race runtime inside these functions, which can deadlock in the child, so
// Start refuses specs that need raw forks in a -race -cover binary with
// ErrRaceCover. Plain -cover is fine.
//
// # Chain links and reaping
//
// Link 1 is a raw fork of the root; every deeper link is made with
// clone(CLONE_VM|CLONE_VFORK) through a copy of the syscall package's
// rawVforkSyscall (assembly, so the return address survives the shared
// stack), so all links share link 1's address space. Full forks of full
// copies would cost O(depth) anon_vma work per fork in the kernel (a chain
// of 800 took 8.8 s of system time that way, 63 ms with vfork). A link is
// suspended until its child exits, then waits for it with
// waitid(WEXITED|WNOWAIT) and exits without reaping it, so the zombie child
// is reparented to the root, which reads its stat and reaps it. The kernel
// and any watcher see the same fork/exit order as with a plain wait; only
// the reaper differs. Each deeper link reports its own lineage (getpid,
// getppid while its parent is suspended, so exact).
package workload
