//go:build linux

package connector

import (
	"errors"
	"fmt"
	"os"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"golang.org/x/sys/unix"
)

// Offsets in a proc connector datagram, from the nlmsghdr on
// (include/uapi/linux/connector.h, cn_proc.h; see decode): the program
// loads the 52 bytes from the cn_msg's idx up to the fork's child tgid.
const (
	treeLoadOff  = nlmsgHdrLen                      // 16: cn_msg.idx
	treeLoadLen  = 68 - treeLoadOff                 // through the child tgid at 64
	offWhat      = nlmsgHdrLen + CnMsgLen           // 36: proc_event.what
	offTGID      = offWhat + ProcEventHeaderLen + 4 // 56: process (or fork parent) tgid
	offChildPID  = offTGID + 4                      // 60: fork child pid
	offChildTGID = offChildPID + 4                  // 64: fork child tgid

	// Stack layout: the loaded bytes at fp-56 (8-aligned), the fail-open
	// key (0) at fp-64 and a map value at fp-72.
	stackBuf   = -56
	stackKey0  = -64
	stackValue = -72
)

// bufSlot returns the stack offset of datagram offset off.
func bufSlot(off int) int16 { return int16(stackBuf + off - treeLoadOff) }

// treeProgram returns the filter's instructions for the given maps, with
// rec not nil the start-time recorder (forkstart_linux.go), and with
// execRec not nil the exec recorder (execimage_linux.go).
func treeProgram(members, failOpen *ebpf.Map, rec *startRecorder, execRec *execRecorder) asm.Instructions {
	const (
		pass = "pass"
		drop = "drop"
	)
	memberCheck := func(label string, keySlot int16) asm.Instructions {
		return asm.Instructions{
			asm.LoadMapPtr(asm.R1, members.FD()).WithSymbol(label),
			asm.Mov.Reg(asm.R2, asm.RFP),
			asm.Add.Imm(asm.R2, int32(keySlot)),
			asm.FnMapLookupElem.Call(),
			asm.JNE.Imm(asm.R0, 0, pass),
			asm.Ja.Label(drop),
		}
	}
	insns := asm.Instructions{
		asm.Mov.Reg(asm.R6, asm.R1), // the skb
		// bpf_skb_load_bytes(skb, 16, fp-56, 52); a shorter message passes.
		asm.Mov.Imm(asm.R2, treeLoadOff),
		asm.Mov.Reg(asm.R3, asm.RFP),
		asm.Add.Imm(asm.R3, stackBuf),
		asm.Mov.Imm(asm.R4, treeLoadLen),
		asm.FnSkbLoadBytes.Call(),
		asm.JNE.Imm(asm.R0, 0, pass),
		// Only the proc connector's messages are filtered.
		asm.LoadMem(asm.R1, asm.RFP, bufSlot(treeLoadOff), asm.Word),
		asm.JNE.Imm(asm.R1, IdxProc, pass),
		asm.LoadMem(asm.R1, asm.RFP, bufSlot(treeLoadOff+4), asm.Word),
		asm.JNE.Imm(asm.R1, ValProc, pass),
		asm.LoadMem(asm.R7, asm.RFP, bufSlot(offWhat), asm.Word),
		asm.JEq.Imm32(asm.R7, int32(WhatFork), "fork"),
	}
	if execRec != nil {
		insns = append(insns, asm.JEq.Imm32(asm.R7, int32(uint32(WhatExec)), "exec"))
	}
	// Events about a process: its tgid decides.
	for _, w := range []What{WhatExec, WhatUID, WhatGID, WhatSID, WhatPtrace, WhatComm, WhatCoredump, WhatExit} {
		insns = append(insns, asm.JEq.Imm32(asm.R7, int32(uint32(w)), "process"))
	}
	insns = append(insns, asm.Ja.Label(pass)) // acks, markers, unknown types
	insns = append(insns, memberCheck("process", bufSlot(offTGID))...)
	if execRec != nil {
		// A member's exec passes, recorded.
		insns = append(insns,
			asm.LoadMapPtr(asm.R1, members.FD()).WithSymbol("exec"),
			asm.Mov.Reg(asm.R2, asm.RFP),
			asm.Add.Imm(asm.R2, int32(bufSlot(offTGID))),
			asm.FnMapLookupElem.Call(),
			asm.JEq.Imm(asm.R0, 0, drop),
			asm.LoadMem(asm.R8, asm.RFP, bufSlot(offTGID), asm.Word),
		)
		insns = append(insns, recordExec(execRec.slots, execRec.offsets, pass)...)
		insns = append(insns, asm.Ja.Label(pass))
	}

	insns = append(insns,
		// A fork: a thread (child pid != child tgid) passes when its
		// process is a member.
		asm.LoadMem(asm.R8, asm.RFP, bufSlot(offChildPID), asm.Word).WithSymbol("fork"),
		asm.LoadMem(asm.R9, asm.RFP, bufSlot(offChildTGID), asm.Word),
		asm.JNE.Reg(asm.R8, asm.R9, "thread"),
	)
	// A new process: record its start time, whoever forked it (the
	// program may fail open, and user space then needs them all). The
	// recorder may use R6, R7 and R9: nothing after this point reads them.
	joins := asm.LoadMapPtr(asm.R1, members.FD())
	if rec != nil {
		insns = append(insns, recordStart(rec.slots, rec.offsets, "joins")...)
		joins = joins.WithSymbol("joins")
	}
	insns = append(insns,
		// A new process passes when its parent is a member, and joins.
		joins,
		asm.Mov.Reg(asm.R2, asm.RFP),
		asm.Add.Imm(asm.R2, int32(bufSlot(offTGID))),
		asm.FnMapLookupElem.Call(),
		asm.JEq.Imm(asm.R0, 0, "reused"),
		asm.FnKtimeGetNs.Call(),
		asm.StoreMem(asm.RFP, stackValue, asm.R0, asm.DWord),
		asm.LoadMapPtr(asm.R1, members.FD()),
		asm.Mov.Reg(asm.R2, asm.RFP),
		asm.Add.Imm(asm.R2, int32(bufSlot(offChildTGID))),
		asm.Mov.Reg(asm.R3, asm.RFP),
		asm.Add.Imm(asm.R3, stackValue),
		asm.Mov.Imm(asm.R4, int32(ebpf.UpdateAny)),
		asm.FnMapUpdateElem.Call(),
		asm.JEq.Imm(asm.R0, 0, pass),
		// The map is full: fail open.
		asm.StoreImm(asm.RFP, stackKey0, 0, asm.Word),
		asm.LoadMapPtr(asm.R1, failOpen.FD()),
		asm.Mov.Reg(asm.R2, asm.RFP),
		asm.Add.Imm(asm.R2, stackKey0),
		asm.FnMapLookupElem.Call(),
		asm.JEq.Imm(asm.R0, 0, pass),
		asm.StoreImm(asm.R0, 0, 1, asm.Word),
		asm.Ja.Label(pass),
	)
	insns = append(insns, memberCheck("thread", bufSlot(offChildTGID))...)
	// A stranger's new process whose PID is a member's: the member's exit
	// was lost (an overrun) and its PID reused; it passes, so that user
	// space learns of the reuse, and is not inserted.
	insns = append(insns, memberCheck("reused", bufSlot(offChildTGID))...)
	insns = append(insns,
		// Not a member's: drop, unless the program failed open.
		asm.StoreImm(asm.RFP, stackKey0, 0, asm.Word).WithSymbol(drop),
		asm.LoadMapPtr(asm.R1, failOpen.FD()),
		asm.Mov.Reg(asm.R2, asm.RFP),
		asm.Add.Imm(asm.R2, stackKey0),
		asm.FnMapLookupElem.Call(),
		asm.JEq.Imm(asm.R0, 0, "really-drop"),
		asm.LoadMem(asm.R1, asm.R0, 0, asm.Word),
		asm.JNE.Imm(asm.R1, 0, pass),
		asm.Mov.Imm(asm.R0, 0).WithSymbol("really-drop"),
		asm.Return(),
		// Keep the whole message.
		asm.Mov.Imm(asm.R0, -1).WithSymbol(pass),
		asm.Return(),
	)
	return insns
}

// ebpfTree is the Linux treeMaps.
type ebpfTree struct {
	sock     filterSocket
	prog     *ebpf.Program
	members  *ebpf.Map // u32 tgid -> u64 insertion time (CLOCK_MONOTONIC ns)
	failOpen *ebpf.Map // [1]u32
	rec      *startRecorder
	noStarts string // why rec is nil
	execRec  *execRecorder
	noExecs  string // why execRec is nil
}

func newTreeMaps(fs filterSocket, maxEntries int) (treeMaps, error) {
	t := &ebpfTree{sock: fs}
	var err error
	t.members, err = ebpf.NewMap(&ebpf.MapSpec{
		Name: "pw_members", Type: ebpf.Hash, KeySize: 4, ValueSize: 8, MaxEntries: uint32(maxEntries),
	})
	if err != nil {
		return nil, loadError("creating the member map", err)
	}
	t.failOpen, err = ebpf.NewMap(&ebpf.MapSpec{
		Name: "pw_failopen", Type: ebpf.Array, KeySize: 4, ValueSize: 4, MaxEntries: 1,
	})
	if err != nil {
		_ = t.members.Close()
		return nil, loadError("creating the fail-open map", err)
	}
	k := readKernelOffsets(kernelBTFPath)
	t.rec, t.noStarts = newStartRecorder(k)
	t.execRec, t.noExecs = newExecRecorder(k)
	t.prog, err = t.loadProgram()
	if err == nil {
		err = fs.attachFilter(t.prog.FD())
		if err != nil {
			_ = t.prog.Close()
			err = fmt.Errorf("SO_ATTACH_BPF: %w", err)
		}
	}
	if err != nil {
		_ = t.members.Close()
		_ = t.failOpen.Close()
		_ = t.rec.close()
		_ = t.execRec.close()
		return nil, loadError("loading the socket filter", err)
	}
	return t, nil
}

// loadProgram loads the program with the recorders t has, and where the
// kernel refuses it, without one or both: with each alone, then with
// neither (the filter never fails for a recorder). A recorder left out
// is closed and its reason is the kernel's refusal of the last program
// that had it.
func (t *ebpfTree) loadProgram() (*ebpf.Program, error) {
	type try struct {
		rec     *startRecorder
		execRec *execRecorder
	}
	tries := []try{{t.rec, t.execRec}}
	if t.rec != nil && t.execRec != nil {
		tries = append(tries, try{t.rec, nil}, try{nil, t.execRec})
	}
	if t.rec != nil || t.execRec != nil {
		tries = append(tries, try{nil, nil})
	}
	var err error
	for _, tr := range tries {
		var prog *ebpf.Program
		prog, err = loadTreeProgram(t.members, t.failOpen, tr.rec, tr.execRec)
		if err == nil {
			if tr.rec == nil && t.rec != nil {
				_ = t.rec.close()
				t.rec = nil
			}
			if tr.execRec == nil && t.execRec != nil {
				_ = t.execRec.close()
				t.execRec = nil
			}
			return prog, nil
		}
		if tr.rec != nil {
			t.noStarts = recorderRefused("start-time", err)
		}
		if tr.execRec != nil {
			t.noExecs = recorderRefused("exec image", err)
		}
	}
	return nil, err
}

func loadTreeProgram(members, failOpen *ebpf.Map, rec *startRecorder, execRec *execRecorder) (*ebpf.Program, error) {
	return ebpf.NewProgram(&ebpf.ProgramSpec{
		Name:         "pw_tree",
		Type:         ebpf.SocketFilter,
		License:      "GPL",
		Instructions: treeProgram(members, failOpen, rec, execRec),
	})
}

func loadError(what string, err error) error {
	kind := ErrNotSupported
	if errors.Is(err, os.ErrPermission) || errors.Is(err, unix.EPERM) || errors.Is(err, unix.EACCES) {
		kind = ErrPermission
	}
	return &OpError{Op: "tree attach", Kind: kind, Err: err, Detail: what + " (needs CAP_BPF or CAP_SYS_ADMIN and eBPF socket filters)"}
}

func monotonicNow() uint64 {
	var ts unix.Timespec
	_ = unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts)
	return uint64(ts.Nano())
}

func (t *ebpfTree) add(tgid uint32) error {
	return t.members.Update(tgid, monotonicNow(), ebpf.UpdateAny)
}

func (t *ebpfTree) remove(tgid uint32) error {
	if err := t.members.Delete(tgid); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
		return err
	}
	return nil
}

func (t *ebpfTree) removeOlder(tgid uint32, before uint64) (bool, error) {
	var stamp uint64
	err := t.members.Lookup(tgid, &stamp)
	if errors.Is(err, ebpf.ErrKeyNotExist) || err == nil && stamp >= before {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	if err := t.remove(tgid); err != nil {
		return false, err
	}
	return true, nil
}

func (t *ebpfTree) removeBatch(tgids []uint32) (int, error) {
	deleted := 0
	for len(tgids) > 0 {
		// The kernel stops at the first key it cannot delete and reports
		// how many it deleted before it: a missing key is skipped and the
		// rest go in the next call.
		n, err := t.members.BatchDelete(tgids, nil)
		n = max(0, min(n, len(tgids)))
		deleted += n
		switch {
		case err == nil:
			return deleted, nil
		case errors.Is(err, ebpf.ErrKeyNotExist) && n < len(tgids):
			tgids = tgids[n+1:]
		case errors.Is(err, ebpf.ErrNotSupported):
			for _, p := range tgids[n:] {
				err := t.members.Delete(p)
				switch {
				case err == nil:
					deleted++
				case !errors.Is(err, ebpf.ErrKeyNotExist):
					return deleted, err
				}
			}
			return deleted, nil
		default:
			return deleted, err
		}
	}
	return deleted, nil
}

func (t *ebpfTree) replace(tgids []uint32) error {
	start := monotonicNow()
	want := make(map[uint32]bool, len(tgids))
	for _, p := range tgids {
		want[p] = true
	}
	var (
		key   uint32
		stamp uint64
		stale []uint32
	)
	it := t.members.Iterate()
	for it.Next(&key, &stamp) {
		if !want[key] && stamp < start {
			stale = append(stale, key)
		}
	}
	if err := it.Err(); err != nil {
		return err
	}
	for _, p := range stale {
		if err := t.remove(p); err != nil {
			return err
		}
	}
	for _, p := range tgids {
		if err := t.add(p); err != nil {
			return err
		}
	}
	return nil
}

func (t *ebpfTree) contains(tgid uint32) (bool, error) {
	var stamp uint64
	err := t.members.Lookup(tgid, &stamp)
	if errors.Is(err, ebpf.ErrKeyNotExist) {
		return false, nil
	}
	return err == nil, err
}

func (t *ebpfTree) len() (int, error) {
	var (
		key   uint32
		stamp uint64
		n     int
	)
	it := t.members.Iterate()
	for it.Next(&key, &stamp) {
		n++
	}
	return n, it.Err()
}

func (t *ebpfTree) failedOpen() (bool, error) {
	var v uint32
	err := t.failOpen.Lookup(uint32(0), &v)
	return v != 0, err
}

func (t *ebpfTree) clearFailOpen() error {
	return t.failOpen.Update(uint32(0), uint32(0), ebpf.UpdateAny)
}

func (t *ebpfTree) close() error {
	err := t.sock.detachFilter()
	if errors.Is(err, unix.ENOENT) { // no filter attached: nothing to detach
		err = nil
	}
	return errors.Join(err, t.prog.Close(), t.members.Close(), t.failOpen.Close(), t.rec.close(), t.execRec.close())
}

func (t *ebpfTree) startMemory() ([]byte, string) {
	if t.rec == nil {
		return nil, t.noStarts
	}
	return t.rec.mem, ""
}

func (t *ebpfTree) execMemory() ([]byte, string) {
	if t.execRec == nil {
		return nil, t.noExecs
	}
	return t.execRec.mem, ""
}

// attachFilter implements filterSocket (SO_ATTACH_BPF).
func (s *nlSocket) attachFilter(progFD int) error { return s.AttachBPF(progFD) }

// detachFilter implements filterSocket (SO_DETACH_BPF).
func (s *nlSocket) detachFilter() error { return s.DetachFilter() }
