//go:build linux

package connector

import (
	"errors"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
)

type ebpfMatch struct{ prog *ebpf.Program }

func (m ebpfMatch) fd() int      { return m.prog.FD() }
func (m ebpfMatch) close() error { return m.prog.Close() }

func newMatchProgram(t treeMaps, off int) (matchProgram, error) {
	et, ok := t.(*ebpfTree)
	if !ok {
		return nil, errors.New("not an eBPF tree filter")
	}
	const (
		key  = -8  // the loaded id
		key0 = -16 // the fail-open key
	)
	insns := asm.Instructions{
		asm.Mov.Reg(asm.R6, asm.R1),
		// bpf_skb_load_bytes(skb, off, fp-8, 4); a shorter datagram passes.
		asm.Mov.Imm(asm.R2, int32(off)),
		asm.Mov.Reg(asm.R3, asm.RFP),
		asm.Add.Imm(asm.R3, key),
		asm.Mov.Imm(asm.R4, 4),
		asm.FnSkbLoadBytes.Call(),
		asm.JNE.Imm(asm.R0, 0, "pass"),
		asm.LoadMapPtr(asm.R1, et.members.FD()),
		asm.Mov.Reg(asm.R2, asm.RFP),
		asm.Add.Imm(asm.R2, key),
		asm.FnMapLookupElem.Call(),
		asm.JNE.Imm(asm.R0, 0, "pass"),
		// Not a member's: drop, unless the tree filter fails open.
		asm.StoreImm(asm.RFP, key0, 0, asm.Word),
		asm.LoadMapPtr(asm.R1, et.failOpen.FD()),
		asm.Mov.Reg(asm.R2, asm.RFP),
		asm.Add.Imm(asm.R2, key0),
		asm.FnMapLookupElem.Call(),
		asm.JEq.Imm(asm.R0, 0, "drop"),
		asm.LoadMem(asm.R1, asm.R0, 0, asm.Word),
		asm.JNE.Imm(asm.R1, 0, "pass"),
		asm.Mov.Imm(asm.R0, 0).WithSymbol("drop"),
		asm.Return(),
		asm.Mov.Imm(asm.R0, -1).WithSymbol("pass"),
		asm.Return(),
	}
	prog, err := ebpf.NewProgram(&ebpf.ProgramSpec{
		Name: "pw_match", Type: ebpf.SocketFilter, License: "GPL", Instructions: insns,
	})
	if err != nil {
		return nil, loadError("loading the member match", err)
	}
	return ebpfMatch{prog}, nil
}
