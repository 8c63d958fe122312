//go:build linux

package connector

import (
	"bytes"
	"errors"
	"fmt"
	"testing"

	"github.com/cilium/ebpf/btf"
)

// kernelExecOffsets is the reference for the raw reader's exec offsets:
// it finds them in a cilium BTF spec.
func kernelExecOffsets(spec *btf.Spec) (execOffsets, error) {
	var o execOffsets
	var task *btf.Struct
	if err := spec.TypeByName("task_struct", &task); err != nil {
		return o, fmt.Errorf("kernel BTF has no struct task_struct: %w", err)
	}
	if err := specFieldOffsets(task, "task_struct", o.taskFields()); err != nil {
		return o, err
	}
	mm, _, _ := findMember(task, "mm", 0)
	ptr, ok := btf.UnderlyingType(mm.Type).(*btf.Pointer)
	if !ok {
		return o, errors.New("task_struct.mm is not a pointer in the kernel BTF")
	}
	return o, specFieldOffsets(ptr.Target, "mm_struct", o.mmFields())
}

func TestReadExecOffsetsMatchesCilium(t *testing.T) {
	skipWithoutKernelBTF(t)
	k := readKernelOffsets(kernelBTFPath)
	if k.execErr != nil {
		t.Fatal(k.execErr)
	}
	spec, err := btf.LoadKernelSpec()
	if err != nil {
		t.Fatal(err)
	}
	want, err := kernelExecOffsets(spec)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("task_struct: pid %d, tgid %d, mm %d, comm %d; mm_struct: arg_start %d, arg_end %d",
		want.pid, want.tgid, want.mm, want.comm, want.argStart, want.argEnd)
	if k.exec != want {
		t.Errorf("raw reader %+v, cilium %+v", k.exec, want)
	}
	if k.exec.pid != k.start.pid || k.exec.tgid != k.start.tgid {
		t.Errorf("pid and tgid differ between the recorders: %+v, %+v", k.exec, k.start)
	}
}

// testExecTask returns testTaskStruct with mm (a pointer to an mm_struct
// whose arg_start and arg_end are in an anonymous struct, as in Linux
// 6.x) and comm (char[16]) added; edit may change the mm_struct's
// members, and the task's, before the blob is built.
func testExecTask(editMM, editTask func([]btf.Member) []btf.Member) *btf.Struct {
	ulong := &btf.Int{Name: "long unsigned int", Size: 8}
	char := &btf.Int{Name: "char", Size: 1, Encoding: btf.Char}
	s32 := &btf.Int{Name: "int", Size: 4, Encoding: btf.Signed}
	inner := &btf.Struct{Size: 32, Members: []btf.Member{
		{Name: "start_stack", Type: ulong},
		{Name: "arg_start", Type: ulong, Offset: 64},
		{Name: "arg_end", Type: &btf.Typedef{Name: "ulong_t", Type: ulong}, Offset: 128},
		{Name: "env_start", Type: ulong, Offset: 192},
	}}
	mm := &btf.Struct{Name: "mm_struct", Size: 48, Members: []btf.Member{
		{Name: "mm_users", Type: s32},
		{Type: inner, Offset: 64},
		{Name: "flags", Type: ulong, Offset: 320},
	}}
	if editMM != nil {
		mm.Members = editMM(mm.Members)
	}
	task := testTaskStruct(func(ms []btf.Member) []btf.Member {
		ms = append(ms,
			btf.Member{Name: "mm", Type: &btf.Pointer{Target: mm}, Offset: 640},
			btf.Member{Name: "comm", Type: &btf.Array{Index: s32, Type: char, Nelems: 16}, Offset: 704},
		)
		if editTask != nil {
			ms = editTask(ms)
		}
		return ms
	})
	task.Size = 112
	return task
}

func TestExecOffsetsFromBTF(t *testing.T) {
	raw := marshalBTF(t, testExecTask(nil, nil))
	k := offsetsFromBTF(raw)
	want := execOffsets{pid: 56, tgid: 60, mm: 80, comm: 88, argStart: 16, argEnd: 24}
	if k.execErr != nil || k.exec != want {
		t.Errorf("got %+v, %v; want %+v", k.exec, k.execErr, want)
	}
	if k.startErr != nil {
		t.Errorf("start offsets: %v", k.startErr)
	}
	spec, err := btf.LoadSpecFromReader(bytes.NewReader(raw))
	if err != nil {
		t.Fatal(err)
	}
	if ref, err := kernelExecOffsets(spec); err != nil || ref != want {
		t.Errorf("cilium reads %+v, %v", ref, err)
	}
	// The task_struct without mm and comm: start offsets, no exec offsets.
	k = offsetsFromBTF(marshalBTF(t, testTaskStruct(nil)))
	if k.startErr != nil || k.execErr == nil || k.execErr.Error() != "task_struct has no member mm in the kernel BTF" {
		t.Errorf("without mm: start %v, exec %v", k.startErr, k.execErr)
	}
}

func TestExecOffsetsFromBTFRefused(t *testing.T) {
	ulong := &btf.Int{Name: "long unsigned int", Size: 8}
	member := func(name string, edit func(*btf.Member)) func([]btf.Member) []btf.Member {
		return func(ms []btf.Member) []btf.Member {
			for i := range ms {
				if ms[i].Name == name {
					edit(&ms[i])
				}
			}
			return ms
		}
	}
	innerMember := func(name string, edit func(*btf.Member)) func([]btf.Member) []btf.Member {
		return func(ms []btf.Member) []btf.Member {
			inner := *ms[1].Type.(*btf.Struct)
			inner.Members = member(name, edit)(append([]btf.Member(nil), inner.Members...))
			ms[1].Type = &inner
			return ms
		}
	}
	for _, tc := range []struct {
		name           string
		editMM, editTk func([]btf.Member) []btf.Member
		want           string
	}{
		{"mm not a pointer", nil, member("mm", func(m *btf.Member) { m.Type = ulong }),
			"task_struct.mm is not a pointer in the kernel BTF"},
		{"comm of 8 bytes", nil, member("comm", func(m *btf.Member) { m.Type.(*btf.Array).Nelems = 8 }),
			"task_struct.comm is not a 16-byte field in the kernel BTF"},
		{"no arg_end", innerMember("arg_end", func(m *btf.Member) { m.Name = "arg_stop" }), nil,
			"mm_struct has no member arg_end in the kernel BTF"},
		{"arg_start of 4 bytes", innerMember("arg_start", func(m *btf.Member) { m.Type = &btf.Int{Name: "u32", Size: 4} }), nil,
			"mm_struct.arg_start is not a 8-byte field in the kernel BTF"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			raw := marshalBTF(t, testExecTask(tc.editMM, tc.editTk))
			k := offsetsFromBTF(raw)
			if k.execErr == nil || k.execErr.Error() != tc.want {
				t.Errorf("got %v, want %s", k.execErr, tc.want)
			}
			if k.startErr != nil {
				t.Errorf("the start offsets failed too: %v", k.startErr)
			}
			spec, err := btf.LoadSpecFromReader(bytes.NewReader(raw))
			if err != nil {
				t.Fatal(err)
			}
			if _, err := kernelExecOffsets(spec); err == nil || err.Error() != tc.want {
				t.Errorf("cilium's reference: %v", err)
			}
		})
	}
	// No BTF at all: both recorders say so.
	k := offsetsFromBTF(nil)
	var nb noBTFError
	if !errors.As(k.execErr, &nb) || !errors.As(k.startErr, &nb) {
		t.Errorf("no BTF: start %v, exec %v", k.startErr, k.execErr)
	}
}
