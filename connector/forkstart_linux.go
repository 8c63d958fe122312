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
	insns := asm.Instructions{
		// R9 = &slots[pid & (startSlots-1)]
		asm.Mov.Reg(asm.R1, asm.R8),
		asm.And.Imm(asm.R1, startSlots-1),
		asm.StoreMem(asm.RFP, stackSlotKey, asm.R1, asm.Word),
		asm.LoadMapPtr(asm.R1, slots.FD()),
		asm.Mov.Reg(asm.R2, asm.RFP),
		asm.Add.Imm(asm.R2, stackSlotKey),
		asm.FnMapLookupElem.Call(),
		asm.JEq.Imm(asm.R0, 0, end),
		asm.Mov.Reg(asm.R9, asm.R0),
		// Take the slot: an even seq to seq+1 by compare-and-exchange.
		// An odd seq or a lost exchange: another CPU writes it; skip.
		asm.LoadMem(asm.R1, asm.R9, slotSeq, asm.Word),
		asm.Mov.Reg(asm.R2, asm.R1),
		asm.And.Imm(asm.R2, 1),
		asm.JNE.Imm(asm.R2, 0, end),
		asm.Mov.Reg(asm.R0, asm.R1),
		asm.Mov.Reg(asm.R2, asm.R1),
		asm.Add.Imm(asm.R2, 1),
		atomicMem(asm.CmpXchg, asm.R9, asm.R2, slotSeq),
		asm.JNE.Reg(asm.R0, asm.R1, end),
		asm.Mov.Imm(asm.R1, 0),
		asm.StoreMem(asm.RFP, stackStart, asm.R1, asm.DWord),
		asm.FnGetCurrentTask.Call(),
		asm.Mov.Reg(asm.R7, asm.R0), // the list's owner: current, then its real parent
	}
	read := func(dst int16, size int32, src asm.Register, off uint32) asm.Instructions {
		return asm.Instructions{
			asm.Mov.Reg(asm.R1, asm.RFP),
			asm.Add.Imm(asm.R1, int32(dst)),
			asm.Mov.Imm(asm.R2, size),
			asm.Mov.Reg(asm.R3, src),
			asm.Add.Imm(asm.R3, int32(off)),
			asm.FnProbeReadKernel.Call(),
		}
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
		if o.tgid == o.pid+4 {
			insns = append(insns, read(stackIDs, 8, asm.R6, o.pid)...)
			insns = append(insns,
				asm.JNE.Imm(asm.R0, 0, miss),
				asm.LoadMem(asm.R1, asm.RFP, stackIDs, asm.Word),
				asm.JNE.Reg(asm.R1, asm.R8, miss),
				asm.LoadMem(asm.R1, asm.RFP, stackIDs+4, asm.Word),
				asm.JNE.Reg(asm.R1, asm.R8, miss),
			)
		} else {
			for _, off := range []uint32{o.pid, o.tgid} {
				insns = append(insns, read(stackIDs, 4, asm.R6, off)...)
				insns = append(insns,
					asm.JNE.Imm(asm.R0, 0, miss),
					asm.LoadMem(asm.R1, asm.RFP, stackIDs, asm.Word),
					asm.JNE.Reg(asm.R1, asm.R8, miss),
				)
			}
		}
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
	return append(insns,
		// Store pid and start, and release the slot (seq even again)
		// with a fully ordered atomic add.
		asm.LoadMem(asm.R1, asm.RFP, stackStart, asm.DWord).WithSymbol(write),
		asm.StoreMem(asm.R9, slotStart, asm.R1, asm.DWord),
		asm.StoreMem(asm.R9, slotPID, asm.R8, asm.Word),
		asm.Mov.Imm(asm.R1, 1),
		atomicMem(asm.FetchAdd, asm.R9, asm.R1, slotSeq),
	)
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

// startRecorder is the state of the start-time recorder while the tree
// filter loads.
type startRecorder struct {
	offsets taskOffsets
	slots   *ebpf.Map
	mem     []byte // the slots, mapped read-only
}

// newStartRecorder makes the slot map and maps it; on failure it returns
// nil and why.
func newStartRecorder() (*startRecorder, string) {
	o, err := readTaskOffsets(kernelBTFPath)
	if err != nil {
		return nil, err.Error()
	}
	slots, err := ebpf.NewMap(&ebpf.MapSpec{
		Name: "pw_starts", Type: ebpf.Array, KeySize: 4, ValueSize: startSlotSize,
		MaxEntries: startSlots, Flags: unix.BPF_F_MMAPABLE,
	})
	if err != nil {
		return nil, fmt.Sprintf("creating the mmapable start-time map: %v", err)
	}
	mem, err := unix.Mmap(slots.FD(), 0, startSlots*startSlotSize, unix.PROT_READ, unix.MAP_SHARED)
	if err != nil {
		_ = slots.Close()
		return nil, fmt.Sprintf("mapping the start-time map: %v", err)
	}
	return &startRecorder{offsets: o, slots: slots, mem: mem}, ""
}

func (r *startRecorder) close() error {
	if r == nil {
		return nil
	}
	var err error
	if r.mem != nil {
		err = unix.Munmap(r.mem)
		r.mem = nil
	}
	return errors.Join(err, r.slots.Close())
}

// recorderRefused explains why the kernel refused the program with the
// recorder.
func recorderRefused(err error) string {
	var ve *ebpf.VerifierError
	log := err.Error()
	if errors.As(err, &ve) {
		log = strings.Join(ve.Log, "\n")
	}
	for _, helper := range []string{"bpf_get_current_task", "bpf_probe_read_kernel"} {
		if strings.Contains(log, helper+"#") {
			return helper + " not allowed in socket filters (it needs CAP_PERFMON or CAP_SYS_ADMIN, and bpf_probe_read_kernel a kernel not locked down)"
		}
	}
	return fmt.Sprintf("the kernel refused the start-time recorder: %v", err)
}
