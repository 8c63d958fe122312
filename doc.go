// Package watchman tracks the process tree rooted at one PID on Linux, with
// identities that survive PID reuse.
//
// Attach to a running process, then call Poll whenever you want to know what
// the tree looks like and what changed:
//
//	w, err := watchman.Attach(pid, nil)
//	if err != nil {
//		return err
//	}
//	defer w.Close()
//	snap, err := w.Poll()
//	// snap.Processes: the live descendants, sorted by PID
//	// snap.Delta.Added, snap.Delta.Removed: since the previous Poll
//
// # Identity and membership
//
// A process is identified by its PID and its start time in clock ticks since
// boot (Identity), so a PID that the kernel hands to a later process is a
// different process; a reused root PID makes Snapshot.RootAlive false and is
// never adopted. Membership is fork lineage: a process forked by a member
// stays a member after its parent exits and it is reparented to init or a
// subreaper, until it exits itself. Zombies are not live.
//
// # Modes
//
// In connector mode (StrategyConnector, and StrategyAuto wherever the kernel
// allows it: the initial user and PID namespaces) the Watcher listens to the
// kernel's proc connector, which reports every fork, exec and exit as it
// happens, with exit statuses. Membership is kept incrementally from the
// events; a process that lives a microsecond is still seen, and so is a
// grandchild whose parent exits at once. A reconcile against /proc runs at
// Attach, every Config.ReconcileInterval as a safety net, and at once when
// the kernel drops events because the socket's buffer is full (the socket
// keeps delivering meanwhile: NETLINK_NO_ENOBUFS, drops read from its
// counter); Snapshot.Overruns and Snapshot.Repairs report both. A process
// whose exit a scan found before the kernel's exit event is reported by a
// Synthetic exit, and again, with its status, by an exit with Upgrade set
// when the event comes. Subscribe delivers the events live. Watchers that share a Hub
// share its socket, its reader goroutine and its host scans.
//
// In polling mode (StrategyPoll, or StrategyAuto where the connector cannot
// be used) the Watcher scans /proc at Attach and at every Poll, like the
// Python process-watchman it ports; a process that lives and dies between
// two scans is never seen, and a grandchild whose parent exits before the
// first scan that would have shown it is lost. The scanner reads each
// /proc/PID/stat with a reused buffer and no per-process allocation, at the
// speed of a bare read loop and about twice as fast as prometheus/procfs's
// AllProcs+Stat (BENCHMARKS.md).
//
// Mode and ModeReason say which mode a Watcher is in and why.
//
// # Concurrency
//
// Every method of Watcher, Hub and Subscription is safe for concurrent use.
// Inside, each tree has one writer:
//
//   - A Hub runs two goroutines while a Watcher uses it. Its writer
//     receives the kernel's events and applies them to every tree of the
//     hub; it is the only goroutine that changes a tree in connector mode.
//     It reads /proc (a child's start time, an exec's name and command
//     line) holding no lock, then applies what it read under the
//     Watcher's mutex, publishing the changes (subscribers, Done) in the
//     same critical section. Its repairer only reads /proc: the periodic
//     checks, and the repair an overrun starts at once. What it finds
//     goes to the writer, which applies it behind a marker that the
//     kernel queues after every event sent before (connector.Conn.Mark),
//     so a scan never overrules an event it did not see. Attach, Close and
//     the repairer hand work to the writer the same way.
//   - In polling mode the Watcher has no writer: Poll, or the background
//     loop of Config.ReconcileInterval, scans under the Watcher's scan
//     mutex and applies the scan under its mutex.
//   - Poll, LivePIDs, Tombstones, Stats and Subscribe take the Watcher's
//     mutex briefly and read what was published there.
//
// Locks: Hub.mu (opening and closing the socket), then a Watcher's scan
// mutex (polling mode), then its mutex; the hub's queue and watcher-list
// mutexes are leaves. No /proc read or channel send that could block
// happens under a Watcher's mutex (subscribers get non-blocking sends and
// EventLost markers). Close waits for the writer to let go of the Watcher,
// and the last Close of a Hub for both its goroutines.
//
// # Errors
//
// Attach returns typed errors: *PIDError (errors.Is ErrInvalidPID or
// ErrNoSuchProcess), *ConfigError (errors.Is ErrInvalidConfig, naming the
// field), and, for StrategyConnector where the connector cannot be used, an
// error matching ErrConnectorUnavailable and the connector's own cause.
// Poll after Close returns ErrClosed.
package watchman
