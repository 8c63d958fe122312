//go:build linux

package connector

import (
	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
)

// execOffsets are the byte offsets in the kernel's struct task_struct and
// struct mm_struct that the exec recorder reads, from the running
// kernel's BTF.
type execOffsets struct {
	pid, tgid, mm, comm uint32 // in task_struct
	argStart, argEnd    uint32 // in mm_struct
}

// taskFields are the task_struct members whose offsets o holds.
func (o *execOffsets) taskFields() []structField {
	return []structField{
		{"pid", 4, &o.pid},
		{"tgid", 4, &o.tgid},
		{"mm", 8, &o.mm},
		{"comm", execCommLen, &o.comm},
	}
}

// mmFields are the mm_struct members whose offsets o holds.
func (o *execOffsets) mmFields() []structField {
	return []structField{
		{"arg_start", 8, &o.argStart},
		{"arg_end", 8, &o.argEnd},
	}
}

// offTimestamp is the offset of proc_event.timestamp_ns in a datagram.
const offTimestamp = offWhat + 8

// Stack slots of the exec recorder, below those of treeProgram (the
// start-time recorder's, which runs on another path, are reused).
const (
	stackArgStart = stackRead
	stackArgEnd   = stackStart
)

// recordExec returns the exec recorder's instructions for treeProgram:
// for an exec event of the member whose TGID is in R8, it stores the
// event's TGID and timestamp, current's comm and its command line (see
// execimage.go) in its slot of slots, then continues at the instruction
// labelled end. It uses R0-R7 and R9 (treeProgram's exec path reads none
// after it) and keeps R8.
//
// The proc connector sends the exec event from the exec'ing task after
// de_thread, with the new mm installed and the arguments copied to the
// top of its stack, whose pages are therefore present: the program reads
// them with bpf_probe_read_user, which does not fault pages in, and gives
// up (the slot's state stays 0) if the read fails. It records nothing
// unless current is the event's process (pid and tgid both the event's
// TGID, as for every exec after de_thread): a datagram sent to the
// connector's group by another process is not an exec.
//
// Cost, measured with BPF_PROG_TEST_RUN on a helper's main thread
// (BenchmarkTreeProgramExec, this project's 2-vCPU VM, kernel 6.18, at a
// load of 20-25): the program took 45-48 ns per member exec event
// without the recorder and 126 ns with it for a 60-byte command line
// (some 80 ns added), 181 ns for a 4,000-byte one (some 135 ns added).
// That is lost beside an exec's own cost: on the same VM at a load of
// 13-20, bash running /bin/true 2,000 times took 13 ms of CPU (user and
// system) per run, so that a timing of execs with and without the
// recorder could not see it. A non-member's exec costs what it did (one
// lookup in the member map, then dropped).
func recordExec(slots *ebpf.Map, o execOffsets, end string) asm.Instructions {
	const release = "exec-release"
	// R9 = &slots[tgid & (execSlots-1)], taken.
	insns := takeSlot(slots, asm.R8, execSlots-1, end)
	kernel := func(dst asm.Register, dstOff int16, size int32, src asm.Register, off uint32) asm.Instructions {
		return append(probeRead(asm.FnProbeReadKernel, dst, int32(dstOff), size, src, off),
			asm.JNE.Imm(asm.R0, 0, release))
	}
	insns = append(insns,
		// The header, with no record yet.
		asm.StoreImm(asm.R9, execState, 0, asm.Word),
		asm.StoreMem(asm.R9, execTGID, asm.R8, asm.Word),
		asm.LoadMem(asm.R1, asm.RFP, bufSlot(offTimestamp), asm.Word),
		asm.StoreMem(asm.R9, execTS, asm.R1, asm.Word),
		asm.LoadMem(asm.R1, asm.RFP, bufSlot(offTimestamp+4), asm.Word),
		asm.StoreMem(asm.R9, execTS+4, asm.R1, asm.Word),
		asm.Mov.Imm(asm.R1, 0),
		asm.StoreMem(asm.R9, execFullLen, asm.R1, asm.DWord),
		asm.FnGetCurrentTask.Call(),
		asm.Mov.Reg(asm.R7, asm.R0),
	)
	// current's pid and tgid must be the event's TGID.
	insns = append(insns, idsAre(asm.R7, o.pid, o.tgid, asm.R8, release)...)
	// comm, straight into the slot.
	insns = append(insns, kernel(asm.R9, execComm, execCommLen, asm.R7, o.comm)...)
	// R6 = current->mm, not NULL; then its arg_start and arg_end.
	insns = append(insns, kernel(asm.RFP, stackRead, 8, asm.R7, o.mm)...)
	insns = append(insns,
		asm.LoadMem(asm.R6, asm.RFP, stackRead, asm.DWord),
		asm.JEq.Imm(asm.R6, 0, release),
	)
	insns = append(insns, kernel(asm.RFP, stackArgStart, 8, asm.R6, o.argStart)...)
	insns = append(insns, kernel(asm.RFP, stackArgEnd, 8, asm.R6, o.argEnd)...)
	insns = append(insns,
		// R7 = arg_start, R6 = the full length (end >= start).
		asm.LoadMem(asm.R7, asm.RFP, stackArgStart, asm.DWord),
		asm.LoadMem(asm.R6, asm.RFP, stackArgEnd, asm.DWord),
		asm.JGT.Reg(asm.R7, asm.R6, release),
		asm.Sub.Reg(asm.R6, asm.R7),
		asm.StoreMem(asm.R9, execFullLen, asm.R6, asm.DWord),
		// Copy min(length, ExecImageArgsMax) bytes.
		asm.JLE.Imm(asm.R6, ExecImageArgsMax, "exec-copy"),
		asm.Mov.Imm(asm.R6, ExecImageArgsMax),
		asm.Mov.Reg(asm.R1, asm.R9).WithSymbol("exec-copy"),
		asm.Add.Imm(asm.R1, execArgs),
		asm.Mov.Reg(asm.R2, asm.R6),
		asm.Mov.Reg(asm.R3, asm.R7),
		asm.FnProbeReadUser.Call(),
		asm.JNE.Imm(asm.R0, 0, release),
		asm.StoreImm(asm.R9, execState, execComplete, asm.Word),
	)
	release0 := releaseSlot()
	release0[0] = release0[0].WithSymbol(release)
	return append(insns, release0...)
}

// execRecorder is the exec recorder.
type execRecorder = recorder[execOffsets]

// newExecRecorder makes the exec recorder, or says why not.
func newExecRecorder(k kernelOffsets) (*execRecorder, string) {
	return newRecorder(k.exec, k.execErr, "pw_execs", "exec image", execSlots, execSlotSize)
}
