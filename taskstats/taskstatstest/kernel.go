// Package taskstatstest provides a fake taskstats kernel for tests of code
// built on package taskstats, in the style of mdlayher/genetlink's genltest:
// a Kernel implements taskstats.Socket, answers registration requests the
// way kernel/taskstats.c does, and lets a test report task and process
// exits (encoded to real wire bytes, so the decoder is exercised), raw or
// forged datagrams, and overruns. No privileges are needed.
package taskstatstest

import (
	"encoding/binary"
	"net"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/process-watchman/watchman/internal/nlfake"
	"github.com/process-watchman/watchman/taskstats"
)

// Defaults of a new Kernel.
const (
	// DefaultFamily is the TASKSTATS family id of a new Kernel (the
	// kernel assigns one dynamically; 31 on the machine this was written
	// on).
	DefaultFamily = 31
	// DefaultPortID is the netlink port id of a new Kernel's socket.
	DefaultPortID = 0x7e57
)

// A Request is a TASKSTATS_CMD_GET the Kernel received.
type Request struct {
	// Cmd is the generic netlink command.
	Cmd uint8
	// Register and Deregister are the CPU lists of the
	// TASKSTATS_CMD_ATTR_REGISTER_CPUMASK and DEREGISTER_CPUMASK
	// attributes ("" when absent).
	Register, Deregister string
	// Seq is the request's sequence number.
	Seq uint32
}

// Kernel is a fake taskstats kernel with one socket. It implements
// taskstats.Socket and is safe for concurrent use.
type Kernel struct {
	mu         sync.Mutex
	q          *nlfake.Queue // the socket's receive queue
	portID     uint32
	family     uint16
	seq        uint32 // the socket's request counter
	kseq       uint32 // the kernel's message counter
	requests   []Request
	registered string // CPU list registered, "" if none
	refuse     syscall.Errno
	silent     bool
	now        time.Duration
	capacity   int
	drops      uint32
	beforeAck  []taskstats.Record
}

// NewKernel returns a fake kernel that accepts registrations at once.
func NewKernel() *Kernel {
	return &Kernel{
		q:      nlfake.NewQueue(),
		portID: DefaultPortID,
		family: DefaultFamily,
		seq:    1000,
	}
}

// Listen returns taskstats.NewListener(k, cfg).
func (k *Kernel) Listen(cfg *taskstats.Config) (*taskstats.Listener, error) {
	return taskstats.NewListener(k, cfg)
}

// Refuse makes later registrations fail with errno in the
// acknowledgement (syscall.EPERM as for a caller without CAP_NET_ADMIN,
// syscall.EINVAL as outside the initial namespaces); 0 accepts them.
func (k *Kernel) Refuse(errno syscall.Errno) {
	k.mu.Lock()
	defer k.mu.Unlock()
	k.refuse = errno
}

// SetBeforeAck sets task records the kernel sends, one message each, after
// it registers the next listener and before it acknowledges the
// registration, as exits on other CPUs do in that window.
func (k *Kernel) SetBeforeAck(tasks ...taskstats.Record) {
	k.mu.Lock()
	defer k.mu.Unlock()
	k.beforeAck = append([]taskstats.Record(nil), tasks...)
}

// SetSilent makes the kernel never acknowledge requests.
func (k *Kernel) SetSilent(silent bool) {
	k.mu.Lock()
	defer k.mu.Unlock()
	k.silent = silent
}

// SetTime sets the CLOCK_BOOTTIME reading stamped on the datagrams read
// from now on (Datagram.Time, which becomes Record.Received).
func (k *Kernel) SetTime(d time.Duration) {
	k.mu.Lock()
	defer k.mu.Unlock()
	k.now = d
}

// SetCapacity bounds the receive queue to n datagrams (0, the default,
// means unbounded). A message sent while the queue is full is dropped,
// counted in Drops, and the next ReadBatch fails with ENOBUFS, as
// netlink_unicast does for a full socket.
func (k *Kernel) SetCapacity(n int) {
	k.mu.Lock()
	defer k.mu.Unlock()
	k.capacity = n
}

// Registered returns the CPU list of the current registration, "" if
// none.
func (k *Kernel) Registered() string {
	k.mu.Lock()
	defer k.mu.Unlock()
	return k.registered
}

// Requests returns the requests received so far.
func (k *Kernel) Requests() []Request {
	k.mu.Lock()
	defer k.mu.Unlock()
	return append([]Request(nil), k.requests...)
}

// Closed reports whether Close was called.
func (k *Kernel) Closed() bool {
	k.mu.Lock()
	defer k.mu.Unlock()
	return k.q.Closed()
}

// ReadBuffer returns the last size given to SetReadBuffer (0 if none).
func (k *Kernel) ReadBuffer() int {
	k.mu.Lock()
	defer k.mu.Unlock()
	return k.q.ReadBuffer()
}

// Queued returns the number of datagrams waiting to be read.
func (k *Kernel) Queued() int {
	k.mu.Lock()
	defer k.mu.Unlock()
	return k.q.Len()
}

// ExitTask queues the message the kernel sends when a task exits: the
// task's KindPID record and, when group is not nil, the per-TGID aggregate
// after it. As the kernel, it sends nothing while no listener is
// registered.
func (k *Kernel) ExitTask(task *taskstats.Record, group *taskstats.Record) {
	k.mu.Lock()
	defer k.mu.Unlock()
	k.sendLocked(EncodeMessage(task, group))
}

// ExitProcess reports the exit of a process whose tasks are threads, in
// exit order, as kernel/taskstats.c does: every task's record gets TGID
// tgid (ac_tgid) and the last one FlagGroupDead; when there is more than
// one task, the last message also carries the per-TGID aggregate, which
// sums the tasks' CPU times, elapsed times, context switches, run times
// and delays (as Linux 6.18 does). It returns that aggregate (nil for one
// task).
func (k *Kernel) ExitProcess(tgid int32, threads []taskstats.Record) *taskstats.Record {
	if len(threads) == 0 {
		return nil
	}
	k.mu.Lock()
	defer k.mu.Unlock()
	var g *taskstats.Record
	if len(threads) > 1 {
		g = &taskstats.Record{Kind: taskstats.KindTGID, Version: taskstats.Version, TGID: tgid}
	}
	for i := range threads {
		t := threads[i]
		t.Kind, t.TGID = taskstats.KindPID, tgid
		t.Flags &^= taskstats.FlagGroupDead
		if g != nil {
			g.UserCPU += t.UserCPU
			g.SystemCPU += t.SystemCPU
			g.Elapsed += t.Elapsed
			g.VoluntarySwitches += t.VoluntarySwitches
			g.InvoluntarySwitches += t.InvoluntarySwitches
			g.CPUDelay += t.CPUDelay
			g.CPUDelayCount += t.CPUDelayCount
			g.CPURunReal += t.CPURunReal
			g.CPURunVirtual += t.CPURunVirtual
			g.BlkioDelay += t.BlkioDelay
			g.BlkioDelayCount += t.BlkioDelayCount
			g.SwapinDelay += t.SwapinDelay
			g.SwapinDelayCount += t.SwapinDelayCount
		}
		if i < len(threads)-1 {
			k.sendLocked(EncodeMessage(&t, nil))
			continue
		}
		t.Flags |= taskstats.FlagGroupDead
		k.sendLocked(EncodeMessage(&t, g))
	}
	return g
}

// sendLocked queues a TASKSTATS_CMD_NEW message as genlmsg_unicast does.
func (k *Kernel) sendLocked(msg []byte) {
	if k.registered == "" || k.q.Closed() {
		return
	}
	if k.capacity > 0 && k.q.Len() >= k.capacity {
		k.drops++
		k.q.Overrun()
		return
	}
	// prepare_reply: the kernel's per-CPU sequence number, port id 0.
	k.q.Push(EncodeDatagram(k.family, 0, k.kseq, 0, msg), 0)
	k.kseq++
}

// EmitRaw queues one datagram with arbitrary content (nlmsghdr included)
// from the given source port id (0 is the kernel; anything else is a
// user-space sender), registered or not. b is not copied: do not modify
// it afterwards.
func (k *Kernel) EmitRaw(fromPort uint32, b []byte) {
	k.mu.Lock()
	defer k.mu.Unlock()
	k.q.Push(b, fromPort)
}

// Overrun makes the next ReadBatch fail with ENOBUFS, as after the kernel
// dropped messages for a full receive buffer. Queued datagrams stay queued.
func (k *Kernel) Overrun() {
	k.mu.Lock()
	defer k.mu.Unlock()
	k.q.Overrun()
}

// Drops implements the optional taskstats.Socket method: the messages
// dropped for a full queue (SetCapacity).
func (k *Kernel) Drops() (uint32, error) {
	k.mu.Lock()
	defer k.mu.Unlock()
	return k.drops, nil
}

// Send implements taskstats.Socket: it parses a TASKSTATS_CMD_GET and
// answers it as taskstats_user_cmd does, with an acknowledgement
// (NLMSG_ERROR) carrying 0 or the refusal's errno.
func (k *Kernel) Send(cmd uint8, attrs []byte) (uint32, error) {
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.q.Closed() {
		return 0, net.ErrClosed
	}
	k.seq++
	req := Request{Cmd: cmd, Seq: k.seq}
	ne := binary.NativeEndian
	for b := attrs; len(b) >= 4; {
		l := int(ne.Uint16(b[0:]))
		if l < 4 || l > len(b) {
			break
		}
		s := strings.TrimRight(string(b[4:l]), "\x00")
		switch ne.Uint16(b[2:]) {
		case taskstats.AttrRegisterCPUMask:
			req.Register = s
		case taskstats.AttrDeregisterCPUMask:
			req.Deregister = s
		}
		b = b[min(len(b), (l+3)&^3):]
	}
	k.requests = append(k.requests, req)
	errno := syscall.Errno(0)
	switch {
	case cmd != taskstats.CmdGet:
		errno = syscall.EOPNOTSUPP
	case req.Register != "":
		if k.refuse != 0 {
			errno = k.refuse
		} else {
			k.registered = req.Register
			for i := range k.beforeAck {
				k.sendLocked(EncodeMessage(&k.beforeAck[i], nil))
			}
			k.beforeAck = nil
		}
	case req.Deregister != "":
		k.registered = ""
	default:
		errno = syscall.EINVAL
	}
	if !k.silent {
		// struct nlmsgerr: -errno, then the request's nlmsghdr.
		p := make([]byte, 4+16)
		ne.PutUint32(p[0:], uint32(-int32(errno)))
		ne.PutUint32(p[4:], 16+4+uint32(len(attrs)))
		ne.PutUint16(p[8:], k.family)
		ne.PutUint32(p[12:], k.seq)
		ne.PutUint32(p[16:], k.portID)
		k.q.Push(EncodeDatagram(2, 0, k.seq, k.portID, p), 0)
	}
	return k.seq, nil
}

// ReadBatch implements taskstats.Socket.
func (k *Kernel) ReadBatch(ds []taskstats.Datagram) (int, error) {
	k.mu.Lock()
	defer k.mu.Unlock()
	if err := k.q.Wait(&k.mu); err != nil {
		return 0, err
	}
	return k.takeLocked(ds), nil
}

// ReadQueued implements taskstats.Socket: ReadBatch without waiting.
func (k *Kernel) ReadQueued(ds []taskstats.Datagram) (int, error) {
	k.mu.Lock()
	defer k.mu.Unlock()
	if err := k.q.ReadErr(); err != nil {
		return 0, err
	}
	return k.takeLocked(ds), nil
}

// takeLocked moves up to len(ds) queued datagrams into ds.
func (k *Kernel) takeLocked(ds []taskstats.Datagram) int {
	n := 0
	for ; n < len(ds); n++ {
		d, ok := k.q.Pop()
		if !ok {
			break
		}
		ds[n].N, ds[n].Truncated = d.CopyTo(ds[n].Buf)
		ds[n].Port = d.Port
		ds[n].Time = k.now
	}
	return n
}

// SetReadDeadline implements taskstats.Socket.
func (k *Kernel) SetReadDeadline(t time.Time) error {
	k.mu.Lock()
	defer k.mu.Unlock()
	k.q.SetReadDeadline(t)
	return nil
}

// SetReadBuffer implements taskstats.Socket.
func (k *Kernel) SetReadBuffer(bytes int) error {
	k.mu.Lock()
	defer k.mu.Unlock()
	k.q.SetReadBuffer(bytes)
	return nil
}

// Family implements taskstats.Socket.
func (k *Kernel) Family() uint16 {
	k.mu.Lock()
	defer k.mu.Unlock()
	return k.family
}

// PortID implements taskstats.Socket.
func (k *Kernel) PortID() uint32 {
	k.mu.Lock()
	defer k.mu.Unlock()
	return k.portID
}

// Close implements taskstats.Socket. Like the kernel, it forgets the
// registration of a closed socket.
func (k *Kernel) Close() error {
	k.mu.Lock()
	defer k.mu.Unlock()
	k.registered = ""
	return k.q.Close()
}
