// Package reconcile reads process state from a proc filesystem: one process,
// a process's command line, and the whole host in one scan.
//
// It is the ground truth that the event-driven tracker is repaired against,
// and the only source of truth in polling mode. It knows nothing of netlink
// or of trees: it reports what /proc says, and the caller decides what is a
// descendant.
//
// Reads are built for speed. The host scan lists /proc with getdents into a
// reused buffer, opens each /proc/PID/stat with a path built in place, and
// parses it without fmt, reflection or per-process allocation. A file that
// vanishes during a read (ENOENT, ESRCH) means the process is gone, which is
// reported as ErrGone for single reads and silently skipped during a scan.
//
// The proc root is injectable (NewFS), so tests run against a fake tree under
// testdata.
package reconcile
