// Package connector subscribes to the Linux proc connector
// (NETLINK_CONNECTOR, CN_IDX_PROC) and decodes its process events: fork,
// exec, uid/gid/sid changes, ptrace, comm, coredump and exit.
//
// The package knows nothing about process trees. It offers three layers:
//
//   - Decode, a pure decoder of one netlink message payload (struct cn_msg
//     followed by struct proc_event) into a flat, allocation-free Event.
//   - Conn, a subscription: Dial opens the socket, asks the kernel to
//     multicast events (PROC_CN_MCAST_LISTEN), waits for the kernel's
//     acknowledgement, and Receive then returns batches of events read with
//     recvmmsg(2) into a reused buffer. Messages that do not come from the
//     kernel, that belong to another connector, or that are malformed are
//     dropped and counted in Stats, never returned.
//   - Socket, the seam under Conn. The real one wraps
//     github.com/mdlayher/netlink; package connectortest provides a fake
//     kernel so that code built on Conn can be tested without privileges.
//
// # Kernel behaviour this package relies on
//
// The kernel only registers listeners that live in the initial user and PID
// namespaces; elsewhere it stays silent. Dial checks /proc/self/ns/user and
// /proc/self/ns/pid first and fails at once with ErrNotSupported there.
//
// The acknowledgement of PROC_CN_MCAST_LISTEN is a multicast WhatNone
// message delivered to every listener. Since Linux 4.x the kernel overwrites
// the cn_msg sequence number of every message, acknowledgements included,
// with a per-CPU counter, so only the ack number (the request's ack + 1)
// identifies the reply; Conn picks a random ack number and ignores
// acknowledgements of other listeners.
//
// Since Linux 6.6 a listener may send struct proc_input {mcast_op,
// event_type} to have the kernel filter events for it. The kernel filter
// also drops WhatNone messages, including the listener's own
// acknowledgement, unless every event type is requested. Conn therefore
// subscribes in two steps: a plain 4-byte PROC_CN_MCAST_LISTEN (understood
// by every kernel, acknowledged because the socket asks for everything),
// then, if Config.Events is narrower, a proc_input that installs the kernel
// filter (silently ignored by kernels before 6.6). The same filter is
// always applied in user space as well, so every kernel yields the same
// stream.
//
// When the socket's receive buffer is full the kernel drops events and
// reports ENOBUFS once, then drops everything until a read empties the
// queue; Receive turns that into ErrOverrun and the Conn stays usable.
// With Config.NoENOBUFS (NETLINK_NO_ENOBUFS) the kernel drops only what
// does not fit and never goes deaf; Receive then reads the socket's drop
// counter around full batches and reports drops as a *DropError with their
// count. Conn.MemInfo exposes the kernel's per-socket drop counter, which
// counts every dropped message.
//
// Conn.Mark queues a marker datagram addressed to the socket's own port,
// behind every event already queued: an exact barrier for "every event
// the kernel sent before now has been read". It needs CAP_NET_ADMIN
// (Conn.CanMark).
//
// Conn.AttachTreeFilter loads an eBPF socket filter that drops, in the
// kernel, the events of processes outside a set of member TGIDs, a set
// that grows by itself on members' forks (see TreeFilter). It needs
// CAP_BPF or CAP_SYS_ADMIN; without it the Conn filters in user space as
// before. With CAP_PERFMON (or CAP_SYS_ADMIN) and kernel BTF the filter
// also records each new process's start time where user space reads it
// without a system call (TreeFilter.ForkStart), and each member's exec'd
// program name and command line, taken at the exec, so that they are
// known even when the process exited before its event was read
// (TreeFilter.ExecImage).
//
// Receive waits for datagrams in the runtime's poller and, under load
// (5,000 events a second or more), lets events queue up for up to 5 ms
// between reads, so that one wake-up reads many; BenchmarkReaderCPU and
// BenchmarkReaderLatency measure this against other strategies and
// forkstat.
package connector
