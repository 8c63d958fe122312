//go:build linux

package connector

import (
	"encoding/binary"
	"errors"
	"os"
	"strings"
	"testing"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/btf"
)

func TestKernelTaskOffsets(t *testing.T) {
	if _, err := kernelTaskOffsets(nil); err == nil || err.Error() != "no kernel BTF" {
		t.Errorf("without BTF: %v", err)
	}
	spec, err := btf.LoadKernelSpec()
	if errors.Is(err, os.ErrNotExist) || errors.Is(err, btf.ErrNotSupported) {
		t.Skipf("skipping: no kernel BTF: %v", err)
	}
	if err != nil {
		t.Fatal(err)
	}
	o, err := kernelTaskOffsets(spec)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("task_struct offsets: children %d, sibling %d, real_parent %d, pid %d, tgid %d, start_boottime %d; list_head.prev %d",
		o.children, o.sibling, o.realParent, o.pid, o.tgid, o.startBoottime, o.listPrev)
	if o.sibling != o.children+16 || o.tgid != o.pid+4 || o.listPrev != 8 || o.startBoottime == 0 {
		t.Errorf("unlikely offsets %+v", o)
	}
}

func TestFindMemberInAnonymousMembers(t *testing.T) {
	u64 := &btf.Int{Name: "u64", Size: 8}
	u32 := &btf.Int{Name: "u32", Size: 4}
	inner := &btf.Struct{Size: 8, Members: []btf.Member{{Name: "deep", Type: u32, Offset: 32}}}
	union := &btf.Union{Size: 8, Members: []btf.Member{{Name: "alias", Type: u64}, {Type: inner}}}
	outer := &btf.Struct{Name: "task_struct", Size: 24, Members: []btf.Member{
		{Name: "first", Type: u64},
		{Type: union, Offset: 64},
		{Name: "last", Type: u64, Offset: 128},
	}}
	for name, want := range map[string]btf.Bits{"first": 0, "alias": 64, "deep": 96, "last": 128} {
		if _, off, ok := findMember(outer, name, 0); !ok || off != want {
			t.Errorf("findMember(%s) = %d, %v; want %d", name, off, ok, want)
		}
	}
	if _, _, ok := findMember(outer, "missing", 0); ok {
		t.Error("found a missing member")
	}
	// A kernel whose task_struct lacks a member: no recorder, and why.
	b, err := btf.NewBuilder([]btf.Type{outer}, nil)
	if err != nil {
		t.Fatal(err)
	}
	raw, err := b.Marshal(nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	spec, err := btf.LoadSpecFromReader(strings.NewReader(string(raw)))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := kernelTaskOffsets(spec); err == nil || !strings.Contains(err.Error(), "children") {
		t.Errorf("task_struct without children: %v", err)
	}
}

// BenchmarkTreeProgramFork runs the tree filter's program in the kernel
// (BPF_PROG_TEST_RUN) on a stranger's fork datagram, with and without
// the start-time recorder, and reports the kernel's time per run. In a
// test run the current task is the benchmark's thread, whose children
// list does not end with the datagram's child: the recorder walks both
// lists and stores a miss, as much work as a hit.
func BenchmarkTreeProgramFork(b *testing.B) {
	if os.Geteuid() != 0 {
		b.Skip("skipping: loading the tree filter needs root")
	}
	members, err := ebpf.NewMap(&ebpf.MapSpec{Type: ebpf.Hash, KeySize: 4, ValueSize: 8, MaxEntries: 64})
	if err != nil {
		b.Fatal(err)
	}
	defer members.Close()
	failOpen, err := ebpf.NewMap(&ebpf.MapSpec{Type: ebpf.Array, KeySize: 4, ValueSize: 4, MaxEntries: 1})
	if err != nil {
		b.Fatal(err)
	}
	defer failOpen.Close()
	rec, why := newStartRecorder(readKernelOffsets(kernelBTFPath))
	if rec == nil {
		b.Skipf("skipping: no recorder: %s", why)
	}
	defer rec.close()
	// An Ethernet header (the test run strips it), then the datagram.
	in := make([]byte, 14+68)
	msg := in[14:]
	binary.NativeEndian.PutUint32(msg[0:], uint32(len(msg)))
	binary.NativeEndian.PutUint32(msg[16:], IdxProc)
	binary.NativeEndian.PutUint32(msg[20:], ValProc)
	binary.NativeEndian.PutUint32(msg[offWhat:], uint32(WhatFork))
	for _, off := range []int{offTGID - 4, offTGID} {
		binary.NativeEndian.PutUint32(msg[off:], 999_999) // a stranger
	}
	for _, off := range []int{offChildPID, offChildTGID} {
		binary.NativeEndian.PutUint32(msg[off:], 1_000_000)
	}
	for _, tc := range []struct {
		name string
		rec  *startRecorder
	}{{"plain", nil}, {"recorder", rec}} {
		b.Run(tc.name, func(b *testing.B) {
			prog, err := loadTreeProgram(members, failOpen, tc.rec, nil)
			if err != nil {
				b.Fatal(err)
			}
			defer prog.Close()
			ret, d, err := prog.Benchmark(in, b.N, b.ResetTimer)
			if err != nil {
				b.Fatal(err)
			}
			if ret != 0 {
				b.Fatalf("the program passed a stranger's fork (%d)", ret)
			}
			b.ReportMetric(float64(d.Nanoseconds()), "kernel-ns/run")
		})
	}
}
