//go:build linux

package taskstats

import "golang.org/x/sys/unix"

// Offsets in a record's datagram (from its nlmsghdr) for a socket filter,
// which the kernel runs on each message before queuing it, so that a
// dropped record never wakes the reader. They hold on architectures where
// the kernel does not pad struct taskstats to 8-byte alignment (x86-64,
// arm64: CONFIG_HAVE_EFFICIENT_UNALIGNED_ACCESS); values are in host byte
// order (classic BPF absolute loads read big-endian: swap them).
const (
	// FilterOffsetPID is the offset of the task id (the
	// TASKSTATS_TYPE_PID attribute of the AGGR_PID nest).
	FilterOffsetPID = 28
	// FilterOffsetStats is the offset of the task's struct taskstats.
	FilterOffsetStats = 36
	// FilterOffsetTGID is the offset of the task's process id (ac_tgid,
	// version 12 and later).
	FilterOffsetTGID = FilterOffsetStats + offTGID
	// FilterOffsetFlags is the offset of the accounting flags byte
	// (ac_flag; FlagGroupDead marks a process's last task).
	FilterOffsetFlags = FilterOffsetStats + offFlag
)

// SetFilter attaches a classic BPF socket filter (SO_ATTACH_FILTER) to the
// Listener's socket, replacing any filter: the kernel then queues only the
// messages the program accepts. A nil or empty program detaches the
// filter (SO_DETACH_FILTER). Its error matches ErrNotSupported when the
// Socket cannot take filters.
func (l *Listener) SetFilter(prog []unix.SockFilter) error {
	f, ok := l.sock.(interface {
		SetFilter(prog []unix.SockFilter) error
	})
	if !ok {
		return &OpError{Op: "set-filter", Kind: ErrNotSupported, Detail: "the socket does not take filters"}
	}
	if err := f.SetFilter(prog); err != nil {
		return &OpError{Op: "set-filter", Err: err}
	}
	return nil
}

// AttachBPF attaches an eBPF socket filter program (SO_ATTACH_BPF,
// BPF_PROG_TYPE_SOCKET_FILTER) by its file descriptor, replacing any
// filter; an eBPF filter may look records up in maps (for example the
// TGIDs of the members of a tree). The Listener does not own progFD. Its
// error matches ErrNotSupported when the Socket cannot take filters.
func (l *Listener) AttachBPF(progFD int) error {
	f, ok := l.sock.(interface{ AttachBPF(progFD int) error })
	if !ok {
		return &OpError{Op: "attach-bpf", Kind: ErrNotSupported, Detail: "the socket does not take filters"}
	}
	if err := f.AttachBPF(progFD); err != nil {
		return &OpError{Op: "attach-bpf", Err: err}
	}
	return nil
}
