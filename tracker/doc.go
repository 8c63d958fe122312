// Package tracker is the pure state machine at the heart of process-watchman:
// kernel events and /proc scans go in, the membership of one process tree and
// the changes to it come out.
//
// It does no I/O and reads no clock: it imports no os, syscall or netlink,
// and every time it records is handed to it. The same inputs always give the
// same outputs, so it is tested table-driven and fuzzed without privileges.
//
// Membership is fork lineage. The root is a member while it lives; a process
// forked by a member (or first seen in a scan as the child of a member) is a
// member from then on, at a depth one more than its parent's, and stays a
// member after its parent exits and it is reparented, until it exits itself.
// Identities are (PID, start ticks), so a reused PID is a new process.
//
// Changes accumulate between calls to Take: every process added, every
// process removed (including those added and removed in between, which
// appear in both), and every exit with its status.
package tracker
