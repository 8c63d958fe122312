//go:build linux

package connector

import (
	"errors"
	"fmt"
	"strings"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"golang.org/x/sys/unix"
)

// taskOffsets are the byte offsets in the kernel's struct task_struct
// (and struct list_head) that the start-time recorder reads, from the
// running kernel's BTF.
type taskOffsets struct {
	children, sibling, realParent, pid, tgid, startBoottime uint32
	listPrev                                                uint32 // in struct list_head
}

// Stack slots of the recorder, below those of treeProgram.
const (
	stackSlotKey = -80  // u32 array index
	stackRead    = -88  // a pointer read from the kernel
	stackIDs     = -96  // a candidate's pid and tgid
	stackStart   = -104 // its start_boottime, 0 when not found
)

// recordStart returns the recorder's instructions for treeProgram: for a
// fork of a new process whose child pid is in R8, it finds the child's
// task_struct and stores its pid and start_boottime in its slot of slots
// (see forkstart.go), then continues at the instruction labelled end. It
// uses R0-R7 and R9 (R6 and R7 are free in treeProgram's fork path) and
// keeps R8.
//
// The proc connector sends the fork event from copy_process in the
// forking task, after it linked the child, under tasklist_lock, at the
// tail of its real parent's children list: current's, or with
// CLONE_PARENT current's real parent's. The program looks at the tail of
// both lists and takes the task whose pid and tgid are the child's (the
// tail may have moved on: another thread forking with CLONE_PARENT, or an
// orphan reparented to a subreaper); when neither is the child it stores
// the pid with start 0, so that the slot no longer holds an earlier
// process with the PID.
func recordStart(slots *ebpf.Map, o taskOffsets, end string) asm.Instructions {
	const write = "rec-write"
	// R9 = &slots[pid & (startSlots-1)], taken.
	insns := takeSlot(slots, asm.R8, startSlots-1, end)
	insns = append(insns,
		asm.Mov.Imm(asm.R1, 0),
		asm.StoreMem(asm.RFP, stackStart, asm.R1, asm.DWord),
		asm.FnGetCurrentTask.Call(),
		asm.Mov.Reg(asm.R7, asm.R0), // the list's owner: current, then its real parent
	)
	read := func(dst int16, size int32, src asm.Register, off uint32) asm.Instructions {
		return probeRead(asm.FnProbeReadKernel, asm.RFP, int32(dst), size, src, off)
	}
	for i := range 2 {
		miss := fmt.Sprintf("rec-miss%d", i)
		// R6 = the task whose sibling is owner->children.prev, unless the
		// list is empty.
		insns = append(insns, read(stackRead, 8, asm.R7, o.children+o.listPrev)...)
		insns = append(insns,
			asm.JNE.Imm(asm.R0, 0, miss),
			asm.LoadMem(asm.R6, asm.RFP, stackRead, asm.DWord),
			asm.Mov.Reg(asm.R1, asm.R7),
			asm.Add.Imm(asm.R1, int32(o.children)),
			asm.JEq.Reg(asm.R6, asm.R1, miss),
			asm.Sub.Imm(asm.R6, int32(o.sibling)),
		)
		// Its pid and tgid must be the child's.
		insns = append(insns, idsAre(asm.R6, o.pid, o.tgid, asm.R8, miss)...)
		insns = append(insns, read(stackStart, 8, asm.R6, o.startBoottime)...)
		insns = append(insns,
			asm.JEq.Imm(asm.R0, 0, write),
			asm.Mov.Imm(asm.R1, 0),
			asm.StoreMem(asm.RFP, stackStart, asm.R1, asm.DWord),
			asm.Ja.Label(write),
		)
		if i == 0 {
			// Not current's: try its real parent's list (CLONE_PARENT).
			parent := read(stackRead, 8, asm.R7, o.realParent)
			parent[0] = parent[0].WithSymbol(miss)
			insns = append(insns, parent...)
			insns = append(insns,
				asm.JNE.Imm(asm.R0, 0, write),
				asm.LoadMem(asm.R7, asm.RFP, stackRead, asm.DWord),
			)
		} else {
			insns = append(insns, asm.Ja.Label(write).WithSymbol(miss))
		}
	}
	insns = append(insns,
		// Store pid and start, and release the slot.
		asm.LoadMem(asm.R1, asm.RFP, stackStart, asm.DWord).WithSymbol(write),
		asm.StoreMem(asm.R9, slotStart, asm.R1, asm.DWord),
		asm.StoreMem(asm.R9, slotPID, asm.R8, asm.Word),
	)
	return append(insns, releaseSlot()...)
}

// takeSlot returns the instructions that take a recorder's slot for the
// u32 in key: R9 = &slots[key & mask], its seq (at 0) moved from even to
// odd by compare-and-exchange; when the seq is odd or the exchange fails
// (another CPU writes the slot), or the lookup fails, they jump to skip.
// They use R0-R2 and keep key, which must not be R0-R2.
func takeSlot(slots *ebpf.Map, key asm.Register, mask int32, skip string) asm.Instructions {
	return asm.Instructions{
		asm.Mov.Reg(asm.R1, key),
		asm.And.Imm(asm.R1, mask),
		asm.StoreMem(asm.RFP, stackSlotKey, asm.R1, asm.Word),
		asm.LoadMapPtr(asm.R1, slots.FD()),
		asm.Mov.Reg(asm.R2, asm.RFP),
		asm.Add.Imm(asm.R2, stackSlotKey),
		asm.FnMapLookupElem.Call(),
		asm.JEq.Imm(asm.R0, 0, skip),
		asm.Mov.Reg(asm.R9, asm.R0),
		asm.LoadMem(asm.R1, asm.R9, slotSeq, asm.Word),
		asm.Mov.Reg(asm.R2, asm.R1),
		asm.And.Imm(asm.R2, 1),
		asm.JNE.Imm(asm.R2, 0, skip),
		asm.Mov.Reg(asm.R0, asm.R1),
		asm.Mov.Reg(asm.R2, asm.R1),
		asm.Add.Imm(asm.R2, 1),
		atomicMem(asm.CmpXchg, asm.R9, asm.R2, slotSeq),
		asm.JNE.Reg(asm.R0, asm.R1, skip),
	}
}

// releaseSlot returns the instructions that release the slot at R9 that
// takeSlot took: its seq even again, by a fully ordered atomic add.
func releaseSlot() asm.Instructions {
	return asm.Instructions{
		asm.Mov.Imm(asm.R1, 1),
		atomicMem(asm.FetchAdd, asm.R9, asm.R1, slotSeq),
	}
}

// idsAre returns the instructions that jump to miss unless the
// task_struct at task (pid and tgid at those offsets) has pid and tgid
// equal to the u32 in want, or cannot be read; they read into stackIDs,
// use R0-R5 and keep task and want, which must not be R0-R5.
func idsAre(task asm.Register, pid, tgid uint32, want asm.Register, miss string) asm.Instructions {
	if tgid == pid+4 { // one read
		return append(probeRead(asm.FnProbeReadKernel, asm.RFP, stackIDs, 8, task, pid),
			asm.JNE.Imm(asm.R0, 0, miss),
			asm.LoadMem(asm.R1, asm.RFP, stackIDs, asm.Word),
			asm.JNE.Reg(asm.R1, want, miss),
			asm.LoadMem(asm.R1, asm.RFP, stackIDs+4, asm.Word),
			asm.JNE.Reg(asm.R1, want, miss),
		)
	}
	var insns asm.Instructions
	for _, off := range []uint32{pid, tgid} {
		insns = append(insns, probeRead(asm.FnProbeReadKernel, asm.RFP, stackIDs, 4, task, off)...)
		insns = append(insns,
			asm.JNE.Imm(asm.R0, 0, miss),
			asm.LoadMem(asm.R1, asm.RFP, stackIDs, asm.Word),
			asm.JNE.Reg(asm.R1, want, miss),
		)
	}
	return insns
}

// probeRead returns a call of the probe-read helper fn (kernel or user)
// that reads size bytes at src+off into dst+dstOff; R0 is then 0 on
// success.
func probeRead(fn asm.BuiltinFunc, dst asm.Register, dstOff, size int32, src asm.Register, off uint32) asm.Instructions {
	return asm.Instructions{
		asm.Mov.Reg(asm.R1, dst),
		asm.Add.Imm(asm.R1, dstOff),
		asm.Mov.Imm(asm.R2, size),
		asm.Mov.Reg(asm.R3, src),
		asm.Add.Imm(asm.R3, int32(off)),
		fn.Call(),
	}
}

// atomicMem returns the 32-bit atomic op on *(u32 *)(dst + off) with
// src. cilium/ebpf v0.22.0's Instruction.Marshal takes the immediate from
// Constant before it derives it from the opcode's atomic op, so that
// every atomic op would be encoded as a plain BPF_ADD (imm 0); setting
// Constant to the same immediate makes it right with or without that
// bug.
func atomicMem(op asm.AtomicOp, dst, src asm.Register, off int16) asm.Instruction {
	ins := op.Mem(dst, src, asm.Word, off)
	ins.Constant = int64(op >> 8)
	return ins
}

// recorder is the state of a recorder while the tree filter loads: the
// offsets its instructions read and its mapped slots.
type recorder[O any] struct {
	offsets O
	mappedSlots
}

// startRecorder is the start-time recorder.
type startRecorder = recorder[taskOffsets]

// newRecorder makes a recorder's slot map (n slots of size bytes, called
// name, and what in messages) and maps it; without offsets (err) or on
// failure it returns nil and why.
func newRecorder[O any](offsets O, err error, name, what string, n, size int) (*recorder[O], string) {
	if err != nil {
		return nil, err.Error()
	}
	s, why := newMappedSlots(name, what, n, size)
	if why != "" {
		return nil, why
	}
	return &recorder[O]{offsets: offsets, mappedSlots: s}, ""
}

// newStartRecorder makes the start-time recorder, or says why not.
func newStartRecorder(k kernelOffsets) (*startRecorder, string) {
	return newRecorder(k.start, k.startErr, "pw_starts", "start-time", startSlots, startSlotSize)
}

func (r *recorder[O]) close() error {
	if r == nil {
		return nil
	}
	return r.mappedSlots.close()
}

// mappedSlots is a recorder's BPF array of slots, mapped read-only.
type mappedSlots struct {
	slots *ebpf.Map
	mem   []byte
}

// newMappedSlots makes an mmapable BPF array called name of n slots of
// size bytes and maps it; on failure it returns why, naming the map by
// what.
func newMappedSlots(name, what string, n, size int) (mappedSlots, string) {
	slots, err := ebpf.NewMap(&ebpf.MapSpec{
		Name: name, Type: ebpf.Array, KeySize: 4, ValueSize: uint32(size),
		MaxEntries: uint32(n), Flags: unix.BPF_F_MMAPABLE,
	})
	if err != nil {
		return mappedSlots{}, fmt.Sprintf("creating the mmapable %s map: %v", what, err)
	}
	mem, err := unix.Mmap(slots.FD(), 0, n*size, unix.PROT_READ, unix.MAP_SHARED)
	if err != nil {
		_ = slots.Close()
		return mappedSlots{}, fmt.Sprintf("mapping the %s map: %v", what, err)
	}
	return mappedSlots{slots: slots, mem: mem}, ""
}

func (s *mappedSlots) close() error {
	var err error
	if s.mem != nil {
		err = unix.Munmap(s.mem)
		s.mem = nil
	}
	return errors.Join(err, s.slots.Close())
}

// recorderRefused explains why the kernel refused the program with the
// recorder called what.
func recorderRefused(what string, err error) string {
	var ve *ebpf.VerifierError
	log := err.Error()
	if errors.As(err, &ve) {
		log = strings.Join(ve.Log, "\n")
	}
	for _, helper := range []string{"bpf_get_current_task", "bpf_probe_read_kernel", "bpf_probe_read_user"} {
		if strings.Contains(log, helper+"#") {
			return helper + " not allowed in socket filters (it needs CAP_PERFMON or CAP_SYS_ADMIN, and the probe reads a kernel not locked down)"
		}
	}
	return fmt.Sprintf("the kernel refused the %s recorder: %v", what, err)
}
