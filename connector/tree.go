package connector

import (
	"errors"
	"sync"
)

// A TreeFilter is an eBPF socket filter attached to a Conn's socket
// (SO_ATTACH_BPF) that drops, in the kernel and before they are queued,
// the proc events of every process outside a set of member TGIDs, kept in
// a bounded BPF hash map. A dropped event never wakes the reader and is
// not counted anywhere (not in Stats, not as a kernel drop).
//
// The program passes:
//   - a fork whose parent TGID is a member; for a new process (child pid
//     equal to child tgid) it also inserts the child into the map, so a
//     tree grows by itself in the kernel;
//   - a non-member's fork of a new process whose PID is in the map (a
//     member's exit was lost and its PID reused: user space must learn of
//     it); the child is not inserted;
//   - a thread creation (child pid != child tgid) whose TGID is a member
//     (for a thread the kernel reports the process's parent as the
//     parent, so the TGID is what tells);
//   - exec, exit, uid, gid, sid, ptrace, comm and coredump events whose
//     process TGID is a member (an exit of any thread of a member, the
//     leader's exit while threads run, the exit the kernel sends for the
//     first thread when another thread execs, and the exec itself all
//     carry the member's TGID);
//   - everything else: acknowledgements, markers of Mark, messages of
//     other types or connectors, messages too short to read (user space
//     filters these as before).
//
// A new process created with CLONE_PARENT reports the forking process's
// parent as its parent, as /proc does: it passes when that parent is a
// member.
//
// The map is bounded (AttachTreeFilter's maxEntries). When the program
// cannot insert a child because the map is full it fails open: it sets a
// flag (FailedOpen) and from then on passes everything it would have
// dropped, while still inserting what fits. User space should then free
// room (Remove the members that exited, or Replace with the true set) and
// call ClearFailOpen.
//
// User space removes members that exited (Remove), and seeds or repairs
// the set (Replace) from its own view, for example after a /proc scan.
// Entries carry the CLOCK_MONOTONIC time of their insertion; Replace
// keeps the entries that the kernel inserted after it began.
//
// A classic BPF filter (golang.org/x/net/bpf, which needs no privilege)
// was considered as a middle tier: without state it cannot tell a tree's
// events from others, and the only proc events it could drop safely are
// thread creations, which carry no membership change (exits of threads
// must be kept: a leader may exit before its threads). Measured on this
// project's 2-vCPU VM (Linux 6.18): thread creations are none of the
// events of a fork/exit process storm, and 1,520 of 59,109 host events
// (2.6%) while a cold `go build` ran beside other work. A cut of a few
// percent at best does not pay for a third code path, so classic BPF is
// not used.
//
// The program also records the start time of every new process whose
// fork it sees, member or not, in memory that user space maps (see
// ForkStart), so that a child's identity (pid and start time) is known
// without reading /proc/PID/stat, and for every exec event of a member
// it passes, the exec'd program's name and command line (see ExecImage),
// so that they are known without reading /proc/PID/cmdline, even after
// the process exited. Where the kernel does not allow either (ForkStarts
// and ExecImages say why) the filter works as without it. When the
// program fails open, the execs of non-members that it passes are not
// recorded.
//
// The methods may be called from any goroutine. Close (or the Conn's
// Close) detaches the program and frees the maps and the mappings.
type TreeFilter struct {
	conn *Conn

	mu   sync.Mutex
	impl treeMaps // nil after Close

	starts slotTable // the recorded start times (forkstart.go)
	execs  slotTable // the recorded exec images (execimage.go)
}

// treeMaps is the eBPF side of a TreeFilter (tree_linux.go).
type treeMaps interface {
	add(tgid uint32) error
	remove(tgid uint32) error
	removeOlder(tgid uint32, before uint64) (bool, error)
	removeBatch(tgids []uint32) (int, error)
	replace(tgids []uint32) error
	contains(tgid uint32) (bool, error)
	len() (int, error)
	failedOpen() (bool, error)
	clearFailOpen() error
	// startMemory returns the mapped start-time slots, or nil and why
	// the program does not record them.
	startMemory() ([]byte, string)
	// execMemory returns the mapped exec-image slots, or nil and why
	// the program does not record them.
	execMemory() ([]byte, string)
	close() error
}

var errTreeClosed = errors.New("tree filter closed")

func (f *TreeFilter) do(op string, fn func(treeMaps) error) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.impl == nil {
		return &OpError{Op: op, Kind: ErrClosed, Err: errTreeClosed}
	}
	if err := fn(f.impl); err != nil {
		return &OpError{Op: op, Err: err}
	}
	return nil
}

// Add inserts tgid into the member set. Adding a member twice is not an
// error. When the map is full the error says so and nothing changes.
func (f *TreeFilter) Add(tgid uint32) error {
	return f.do("tree add", func(m treeMaps) error { return m.add(tgid) })
}

// Remove deletes tgid from the member set; removing a non-member is not an
// error. Remove members when they exit, so that the map does not fill up
// and a reused PID does not inherit membership.
func (f *TreeFilter) Remove(tgid uint32) error {
	return f.do("tree remove", func(m treeMaps) error { return m.remove(tgid) })
}

// RemoveOlder deletes tgid if the entry was inserted before the
// CLOCK_MONOTONIC time before (nanoseconds, as Event.Timestamp), and
// reports whether it did. Removing a member at its exit with the exit
// event's timestamp keeps the entry when the PID was since reused by a
// new child of a member, which the kernel inserted later. The check and
// the delete are two map operations: a reuse in between (the PID freed,
// the allocator reaching it and a member forking, within microseconds) is
// still deleted, and the caller must watch for that (a fork of a member
// whose timestamp is not after the call).
func (f *TreeFilter) RemoveOlder(tgid uint32, before uint64) (bool, error) {
	var ok bool
	err := f.do("tree remove", func(m treeMaps) (err error) { ok, err = m.removeOlder(tgid, before); return err })
	return ok, err
}

// RemoveBatch deletes every tgid in tgids from the member set and returns
// how many entries it deleted (non-members are skipped). Where the kernel
// has batch map operations (Linux 5.6) it takes one system call for the
// lot, else one per entry. Unlike RemoveOlder it does not look at when an
// entry was inserted: a PID that a member's new child took since the
// caller decided to remove it is deleted too, and the caller must watch
// for that (a fork of a member whose timestamp is not after the call).
func (f *TreeFilter) RemoveBatch(tgids []uint32) (int, error) {
	var n int
	err := f.do("tree remove", func(m treeMaps) (err error) { n, err = m.removeBatch(tgids); return err })
	return n, err
}

// Replace makes the member set tgids, except that entries the kernel
// inserted (forks of members) after Replace began are kept. It is for
// seeding and repair; it is not atomic with respect to the kernel, which
// keeps filtering by the set as it changes.
func (f *TreeFilter) Replace(tgids []uint32) error {
	return f.do("tree replace", func(m treeMaps) error { return m.replace(tgids) })
}

// Contains reports whether tgid is in the member set.
func (f *TreeFilter) Contains(tgid uint32) (bool, error) {
	var ok bool
	err := f.do("tree contains", func(m treeMaps) (err error) { ok, err = m.contains(tgid); return err })
	return ok, err
}

// Len returns the number of members (it walks the map).
func (f *TreeFilter) Len() (int, error) {
	var n int
	err := f.do("tree len", func(m treeMaps) (err error) { n, err = m.len(); return err })
	return n, err
}

// FailedOpen reports whether the program found the map full since the
// last ClearFailOpen; it then passes every event (see TreeFilter).
func (f *TreeFilter) FailedOpen() (bool, error) {
	var ok bool
	err := f.do("tree failed-open", func(m treeMaps) (err error) { ok, err = m.failedOpen(); return err })
	return ok, err
}

// ClearFailOpen resets the fail-open flag, so that the program drops
// non-members again. Free room in the map first.
func (f *TreeFilter) ClearFailOpen() error {
	return f.do("tree clear-fail-open", func(m treeMaps) error { return m.clearFailOpen() })
}

// Close detaches the program from the socket (events are no longer
// filtered in the kernel) and frees the program, its maps and the mapped
// start times and exec images (ForkStart and ExecImage then miss). It is
// idempotent.
func (f *TreeFilter) Close() error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.impl == nil {
		return nil
	}
	f.starts.forget("tree filter closed") // before the memory is unmapped
	f.execs.forget("tree filter closed")
	err := f.impl.close()
	f.impl = nil
	if f.conn != nil {
		f.conn.treeDetached(f)
	}
	if err != nil {
		return &OpError{Op: "tree close", Err: err}
	}
	return nil
}

// AttachTreeFilter loads the tree filter (see TreeFilter) with a member
// map of at most maxEntries TGIDs, empty, and attaches it to the socket:
// from then on the kernel drops the events of non-members, so seed it
// (Add, Replace) right away. A Conn holds at most one.
//
// Where the program cannot be loaded nothing changes and the Conn keeps
// working with user-space filtering only: the error matches ErrPermission
// without CAP_BPF (or CAP_SYS_ADMIN) and ErrNotSupported on a kernel
// without eBPF socket filters or a Socket that is not a real one (the
// fake kernel). maxEntries must be positive.
func (c *Conn) AttachTreeFilter(maxEntries int) (*TreeFilter, error) {
	if maxEntries <= 0 || maxEntries > 1<<24 {
		return nil, &OpError{Op: "tree attach", Detail: "maxEntries must be in 1..16777216"}
	}
	if c.closed.Load() {
		return nil, &OpError{Op: "tree attach", Kind: ErrClosed}
	}
	c.tmu.Lock()
	defer c.tmu.Unlock()
	if c.tree != nil {
		return nil, &OpError{Op: "tree attach", Detail: "a tree filter is attached already"}
	}
	fs, ok := c.sock.(filterSocket)
	if !ok {
		return nil, &OpError{Op: "tree attach", Kind: ErrNotSupported, Detail: "the socket takes no eBPF filter"}
	}
	m, err := newTreeMaps(fs, maxEntries)
	if err != nil {
		return nil, err
	}
	f := &TreeFilter{conn: c, impl: m}
	f.starts.mem, f.starts.reason = m.startMemory()
	f.execs.mem, f.execs.reason = m.execMemory()
	c.tree = f
	return f, nil
}

// filterSocket is a Socket that takes an eBPF socket filter.
type filterSocket interface {
	attachFilter(progFD int) error
	detachFilter() error
}

// treeDetached forgets f as the Conn's filter.
func (c *Conn) treeDetached(f *TreeFilter) {
	c.tmu.Lock()
	defer c.tmu.Unlock()
	if c.tree == f {
		c.tree = nil
	}
}

// closeTree closes the Conn's tree filter, if any.
func (c *Conn) closeTree() {
	c.tmu.Lock()
	f := c.tree
	c.tmu.Unlock()
	if f != nil {
		_ = f.Close()
	}
}
