//go:build linux

package connector

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"os"
	"testing"
	"time"

	"github.com/cilium/ebpf"
	"golang.org/x/sys/unix"
)

// execProgram is a tree program loaded for BPF_PROG_TEST_RUN with its
// maps, with or without the exec recorder.
type execProgram struct {
	members, failOpen *ebpf.Map
	rec               *execRecorder
	prog              *ebpf.Program
}

// newExecProgram loads the tree program with the exec recorder when rec
// is true; members are the member TGIDs. It returns why not when the
// kernel has no offsets for it.
func newExecProgram(rec bool, members ...uint32) (*execProgram, string, error) {
	p := &execProgram{}
	var err error
	p.members, err = ebpf.NewMap(&ebpf.MapSpec{Type: ebpf.Hash, KeySize: 4, ValueSize: 8, MaxEntries: 64})
	if err != nil {
		return nil, "", err
	}
	for _, m := range members {
		if err := p.members.Put(m, uint64(1)); err != nil {
			p.close()
			return nil, "", err
		}
	}
	p.failOpen, err = ebpf.NewMap(&ebpf.MapSpec{Type: ebpf.Array, KeySize: 4, ValueSize: 4, MaxEntries: 1})
	if err != nil {
		p.close()
		return nil, "", err
	}
	if rec {
		var why string
		p.rec, why = newExecRecorder(readKernelOffsets(kernelBTFPath))
		if p.rec == nil {
			p.close()
			return nil, why, nil
		}
	}
	p.prog, err = loadTreeProgram(p.members, p.failOpen, nil, p.rec)
	if err != nil {
		p.close()
		return nil, "", err
	}
	return p, "", nil
}

func (p *execProgram) close() {
	// cilium's Close takes nil receivers.
	_ = p.prog.Close()
	_ = p.members.Close()
	_ = p.failOpen.Close()
	_ = p.rec.close()
}

// execDatagram returns BPF_PROG_TEST_RUN's input for an exec event of
// tgid at timestamp ts: an Ethernet header (the test run strips it), then
// the datagram.
func execDatagram(tgid uint32, ts uint64) []byte {
	in := make([]byte, 14+nlmsgHdrLen+CnMsgLen+ProcEventHeaderLen+24)
	msg := in[14:]
	binary.NativeEndian.PutUint32(msg[0:], uint32(len(msg)))
	binary.NativeEndian.PutUint32(msg[16:], IdxProc)
	binary.NativeEndian.PutUint32(msg[20:], ValProc)
	binary.NativeEndian.PutUint32(msg[offWhat:], uint32(WhatExec))
	binary.NativeEndian.PutUint64(msg[offTimestamp:], ts)
	binary.NativeEndian.PutUint32(msg[offTGID-4:], tgid)
	binary.NativeEndian.PutUint32(msg[offTGID:], tgid)
	return in
}

// run runs the program n times on an exec event of tgid at ts and
// returns its verdict and the kernel's time per run.
func (p *execProgram) run(tgid uint32, ts uint64, n int) (uint32, time.Duration, error) {
	return p.prog.Benchmark(execDatagram(tgid, ts), n, nil)
}

// TestTreeProgramExecRecords runs the program (BPF_PROG_TEST_RUN) in this
// test's thread, which is not the process of the datagrams: a member's
// exec passes with a header and no record (state 0, so ExecImage
// misses), a stranger's is dropped and leaves its slot alone.
func TestTreeProgramExecRecords(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("skipping: loading the tree filter needs root")
	}
	skipWithoutKernelBTF(t)
	const member, stranger, ts = 1_000_001, 1_000_002, 123_456_789_012
	p, why, err := newExecProgram(true, member)
	if err != nil {
		t.Fatal(err)
	}
	if p == nil {
		t.Fatalf("no exec recorder on a kernel with BTF: %s", why)
	}
	defer p.close()
	if ret, _, err := p.run(member, ts, 1); err != nil || ret == 0 {
		t.Fatalf("member's exec: verdict %d, %v; want it passed", ret, err)
	}
	slot := p.rec.mem[(member&(execSlots-1))*execSlotSize:]
	if tgid, got, state := binary.NativeEndian.Uint32(slot[execTGID:]), binary.NativeEndian.Uint64(slot[execTS:]), binary.NativeEndian.Uint32(slot[execState:]); tgid != member || got != ts || state != 0 {
		t.Errorf("slot header %d, %d, state %d; want %d, %d, state 0 (current is not the process)", tgid, got, state, member, ts)
	}
	if seq := binary.NativeEndian.Uint32(slot); seq != 2 {
		t.Errorf("seq %d after one write, want 2", seq)
	}
	if _, _, _, ok := readExecSlotHook(p.rec.mem, member, ts, nil, nil); ok {
		t.Error("a record of another process's exec")
	}
	if ret, _, err := p.run(stranger, ts, 1); err != nil || ret != 0 {
		t.Fatalf("stranger's exec: verdict %d, %v; want it dropped", ret, err)
	}
	if s := p.rec.mem[(stranger&(execSlots-1))*execSlotSize:]; !bytes.Equal(s[:execArgs], make([]byte, execArgs)) {
		t.Errorf("the stranger's slot was written: % x", s[:execArgs])
	}
}

// RunExecProgram runs, in a helper on its main thread (so that current's
// pid and tgid are the process's), the tree program on an exec event of
// this process n times without and with the exec recorder, checks the
// last record against /proc/self and prints the kernel's time per run.
func RunExecProgram(n int) error {
	pid := uint32(os.Getpid())
	if tid := unix.Gettid(); tid != int(pid) {
		return fmt.Errorf("on thread %d, not the main thread %d", tid, pid)
	}
	var ns [2]time.Duration
	for i, rec := range []bool{false, true} {
		p, why, err := newExecProgram(rec, pid)
		if err != nil {
			return err
		}
		if p == nil {
			return fmt.Errorf("no exec recorder: %s", why)
		}
		ts := uint64(time.Now().UnixNano())
		ret, d, err := p.run(pid, ts, n)
		if err == nil && ret == 0 {
			err = fmt.Errorf("the member's exec was dropped")
		}
		if err == nil && rec {
			err = checkOwnRecord(p.rec.mem, pid, ts)
		}
		p.close()
		if err != nil {
			return err
		}
		ns[i] = d
	}
	fmt.Printf("plain-ns=%d recorder-ns=%d\n", ns[0].Nanoseconds(), ns[1].Nanoseconds())
	return nil
}

// checkOwnRecord compares the record of this process's (pretended) exec
// with its /proc/self/comm and cmdline.
func checkOwnRecord(mem []byte, pid uint32, ts uint64) error {
	comm, args, full, ok := readExecSlotHook(mem, pid, ts, nil, nil)
	if !ok {
		return fmt.Errorf("no record of the process's own exec")
	}
	wantComm, err := os.ReadFile("/proc/self/comm")
	if err != nil {
		return err
	}
	cmdline, err := os.ReadFile("/proc/self/cmdline")
	if err != nil {
		return err
	}
	if got := string(bytes.TrimRight(comm[:], "\x00")); got != string(bytes.TrimSpace(wantComm)) {
		return fmt.Errorf("comm %q, /proc/self/comm %q", got, wantComm)
	}
	if full != len(cmdline) || !bytes.Equal(args, cmdline[:min(len(cmdline), ExecImageArgsMax)]) {
		return fmt.Errorf("command line %q (full %d), /proc/self/cmdline %q", args, full, cmdline)
	}
	return nil
}
