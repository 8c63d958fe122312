// Package reconcile reads process state from a proc filesystem: one process,
// a process's command line, a process's children, a tree walked down from
// known members, and the whole host in one scan; and it watches one
// process's exit through a pidfd.
//
// It is the ground truth that the event-driven tracker is repaired against,
// and the only source of truth in polling mode. It knows nothing of netlink
// or of membership: it reports what /proc says, and the caller decides what
// is a descendant.
//
// Reads are built for speed. The host scan lists /proc with getdents into a
// reused buffer, opens each /proc/PID/stat with a path built in place, and
// parses it without fmt, reflection or per-process allocation. A walk
// (Scanner.Walk) reads each member's stat and its threads' children files
// (/proc/PID/task/TID/children) through one descriptor of /proc/PID, so its
// cost grows with the tree, not the host.
//
// # Errors
//
// Only ENOENT and ESRCH mean that a process is gone: single reads report
// it as an error matching ErrGone (Scanner.Lookup as ok == false with a nil
// error), and a scan skips it. A zombie is not gone to a read: Entry.Live
// and Stat.Live say it has exited. Every other failure is a *ProcError
// naming the PID and file: ErrPermission for a process this reader may not
// read, and EMFILE, ENFILE, ENOMEM, EIO or ErrBadStat for a read that
// failed, which say nothing about the process.
//
// # hidepid
//
// A proc filesystem mounted with hidepid hides other users' processes from
// an unprivileged reader (see HidePID for each mode). With hidepid=1 their
// files give EPERM (ErrPermission). With hidepid=2 or 4 they give ENOENT,
// as a gone process does; on a proc filesystem of the caller's own PID
// namespace, reconcile then probes the PID with kill(pid, 0) and reports
// ErrHidden if it is in use. What can be told apart:
//
//   - gone from hidden: yes, by the probe (and pidfd_open, which needs no
//     permission, succeeds for a hidden process);
//   - a hidden process from another that reused its PID: no, its start
//     time is hidden; a PIDFD opened while it was readable follows the
//     process itself and sees its exit;
//   - a hidden child of a readable member: its PID is listed in the
//     member's children file, so a Walk reports it (Found, StatusError with
//     ErrHidden) instead of missing it; a host scan cannot list it at all.
//
// # Proc root
//
// The proc root is injectable (NewFS), so tests run against a fake tree under
// testdata. A fake tree holds PID/stat, PID/cmdline and, for walks,
// PID/task/TID/children files; 1/task/1/children tells HasChildrenFiles that
// the tree has them.
package reconcile
