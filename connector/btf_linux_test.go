//go:build linux

package connector

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/cilium/ebpf/btf"
)

// kernelTaskOffsets is the reference for readTaskOffsets: it finds the
// offsets in a cilium BTF spec; a nil spec
// is a kernel without BTF.
func kernelTaskOffsets(spec *btf.Spec) (taskOffsets, error) {
	var o taskOffsets
	if spec == nil {
		return o, errors.New("no kernel BTF")
	}
	var task *btf.Struct
	if err := spec.TypeByName("task_struct", &task); err != nil {
		return o, fmt.Errorf("kernel BTF has no struct task_struct: %w", err)
	}
	if err := specFieldOffsets(task, "task_struct", o.fields()); err != nil {
		return o, err
	}
	children, _, _ := findMember(task, "children", 0)
	prev, off, ok := findMember(children.Type, "prev", 0)
	if size, err := btf.Sizeof(prev.Type); !ok || err != nil || size != 8 || off%8 != 0 {
		return o, errors.New("struct list_head has no 8-byte prev in the kernel BTF")
	}
	o.listPrev = uint32(off / 8)
	return o, nil
}

// specFieldOffsets is fieldOffsets on a cilium type.
func specFieldOffsets(t btf.Type, name string, fields []structField) error {
	for _, fl := range fields {
		m, off, ok := findMember(t, fl.name, 0)
		if !ok {
			return fmt.Errorf("%s has no member %s in the kernel BTF", name, fl.name)
		}
		size, err := btf.Sizeof(m.Type)
		if err != nil || size != fl.size || m.BitfieldSize != 0 || off%8 != 0 {
			return fmt.Errorf("%s.%s is not a %d-byte field in the kernel BTF", name, fl.name, fl.size)
		}
		*fl.dst = uint32(off / 8)
	}
	return nil
}

// findMember looks for a member by name in a struct or union, and in the
// anonymous structs and unions inside it; off is in bits from the outer
// type's start.
func findMember(t btf.Type, name string, base btf.Bits) (btf.Member, btf.Bits, bool) {
	var members []btf.Member
	switch t := btf.UnderlyingType(t).(type) {
	case *btf.Struct:
		members = t.Members
	case *btf.Union:
		members = t.Members
	}
	for _, m := range members {
		if m.Name == name {
			return m, base + m.Offset, true
		}
		if m.Name != "" {
			continue
		}
		if found, off, ok := findMember(m.Type, name, base+m.Offset); ok {
			return found, off, true
		}
	}
	return btf.Member{}, 0, false
}

// readTaskOffsets reads the start-time recorder's offsets as
// newTreeMaps does.
func readTaskOffsets(path string) (taskOffsets, error) {
	k := readKernelOffsets(path)
	return k.start, k.startErr
}

// taskOffsetsFromBTF returns the start-time recorder's offsets in a raw
// BTF blob.
func taskOffsetsFromBTF(data []byte) (taskOffsets, error) {
	k := offsetsFromBTF(data)
	return k.start, k.startErr
}

// kernelSpecTaskOffsets is the cilium path newStartRecorder took before
// readTaskOffsets: load and index the whole kernel BTF.
func kernelSpecTaskOffsets() (taskOffsets, error) {
	spec, err := btf.LoadKernelSpec()
	if err != nil {
		return taskOffsets{}, fmt.Errorf("no kernel BTF (%v)", err)
	}
	return kernelTaskOffsets(spec)
}

func skipWithoutKernelBTF(tb testing.TB) {
	tb.Helper()
	if _, err := os.Stat(kernelBTFPath); err != nil {
		tb.Skipf("skipping: the kernel has no BTF to read (%v)", err)
	}
}

func TestReadTaskOffsetsMatchesCilium(t *testing.T) {
	skipWithoutKernelBTF(t)
	got, err := readTaskOffsets(kernelBTFPath)
	if err != nil {
		t.Fatal(err)
	}
	want, err := kernelSpecTaskOffsets()
	if err != nil {
		t.Fatal(err)
	}
	if got != want {
		t.Errorf("raw reader %+v, cilium %+v", got, want)
	}
}

// testTaskStruct returns a task_struct for hand-built BTF blobs, with
// real_parent in an anonymous struct inside an anonymous union, pid
// behind a typedef and start_boottime behind const and typedef. edit may
// change its members before the blob is built.
func testTaskStruct(edit func(members []btf.Member) []btf.Member) *btf.Struct {
	u64 := &btf.Int{Name: "u64", Size: 8}
	s32 := &btf.Int{Name: "int", Size: 4, Encoding: btf.Signed}
	pidT := &btf.Typedef{Name: "pid_t", Type: s32}
	listHead := &btf.Struct{Name: "list_head", Size: 16}
	listHead.Members = []btf.Member{
		{Name: "next", Type: &btf.Pointer{Target: listHead}},
		{Name: "prev", Type: &btf.Pointer{Target: listHead}, Offset: 64},
	}
	task := &btf.Struct{Name: "task_struct", Size: 96}
	parents := &btf.Struct{Size: 16, Members: []btf.Member{
		{Name: "parent", Type: &btf.Pointer{Target: task}},
		{Name: "real_parent", Type: &btf.Pointer{Target: task}, Offset: 64},
	}}
	union := &btf.Union{Size: 16, Members: []btf.Member{
		{Name: "raw", Type: &btf.Array{Index: s32, Type: u64, Nelems: 2}},
		{Type: parents},
	}}
	task.Members = []btf.Member{
		{Name: "state", Type: u64},
		{Name: "children", Type: listHead, Offset: 64},
		{Name: "sibling", Type: listHead, Offset: 192},
		{Type: union, Offset: 320},
		{Name: "pid", Type: pidT, Offset: 448},
		{Name: "tgid", Type: pidT, Offset: 480},
		{Name: "start_boottime", Type: &btf.Const{Type: &btf.Typedef{Name: "u64_t", Type: u64}}, Offset: 512},
		{Name: "flags", Type: s32, Offset: 576},
	}
	if edit != nil {
		task.Members = edit(task.Members)
	}
	return task
}

func marshalBTF(tb testing.TB, types ...btf.Type) []byte {
	tb.Helper()
	b, err := btf.NewBuilder(types, nil)
	if err != nil {
		tb.Fatal(err)
	}
	raw, err := b.Marshal(nil, nil)
	if err != nil {
		tb.Fatal(err)
	}
	return raw
}

func TestTaskOffsetsFromBTF(t *testing.T) {
	// A forward declaration first: the reader takes the struct with members.
	raw := marshalBTF(t, &btf.Fwd{Name: "task_struct", Kind: btf.FwdStruct}, testTaskStruct(nil))
	got, err := taskOffsetsFromBTF(raw)
	if err != nil {
		t.Fatal(err)
	}
	want := taskOffsets{children: 8, sibling: 24, realParent: 48, pid: 56, tgid: 60, startBoottime: 64, listPrev: 8}
	if got != want {
		t.Errorf("got %+v, want %+v", got, want)
	}

	// Types of every kind before task_struct, more than the index's
	// stride, and qualifiers in the members' types.
	s32 := &btf.Int{Name: "int", Size: 4, Encoding: btf.Signed}
	var fillers []btf.Type
	for i := range 3 {
		proto := &btf.FuncProto{Return: s32, Params: []btf.FuncParam{{Name: "a", Type: s32}, {Name: "b", Type: s32}}}
		v := &btf.Var{Name: fmt.Sprintf("v%d", i), Type: s32, Linkage: btf.GlobalVar}
		fillers = append(fillers,
			&btf.Enum{Name: fmt.Sprintf("e%d", i), Size: 4, Values: []btf.EnumValue{{Name: "A", Value: 1}, {Name: "B", Value: 2}}},
			&btf.Enum{Name: fmt.Sprintf("e64_%d", i), Size: 8, Values: []btf.EnumValue{{Name: "C", Value: 1 << 40}}},
			&btf.Func{Name: fmt.Sprintf("f%d", i), Type: proto, Linkage: btf.GlobalFunc},
			&btf.Datasec{Name: fmt.Sprintf(".data%d", i), Size: 4, Vars: []btf.VarSecinfo{{Type: v, Size: 4}}},
			&btf.Float{Name: fmt.Sprintf("float%d", i), Size: 8},
			&btf.Volatile{Type: &btf.Restrict{Type: &btf.TypeTag{Value: "user", Type: s32}}},
			&btf.Fwd{Name: "task_struct", Kind: btf.FwdStruct},
		)
	}
	task := testTaskStruct(func(ms []btf.Member) []btf.Member {
		ms[4].Type = &btf.Volatile{Type: &btf.Restrict{Type: &btf.TypeTag{Value: "tag", Type: ms[4].Type}}}
		ms[5].Tags = []string{"member_decl"}
		return ms
	})
	task.Tags = []string{"decl"} // DECL_TAG types
	fillers = append(fillers, task)
	many := marshalBTF(t, fillers...)
	if got, err := taskOffsetsFromBTF(many); err != nil || got != want {
		t.Errorf("after other kinds: %+v, %v", got, err)
	}
	b, err := parseBTF(many)
	if err != nil {
		t.Fatal(err)
	}
	if b.count <= 2*btfIndexStride || b.task < btfIndexStride {
		t.Errorf("%d types, task_struct is %d: not past the index's stride", b.count, b.task)
	}

	spec, err := btf.LoadSpecFromReader(bytes.NewReader(raw))
	if err != nil {
		t.Fatal(err)
	}
	if ref, err := kernelTaskOffsets(spec); err != nil || ref != got {
		t.Errorf("cilium reads %+v, %v; the raw reader %+v", ref, err, got)
	}

	// The same blob from a file, mapped as the kernel's is.
	path := filepath.Join(t.TempDir(), "vmlinux")
	if err := os.WriteFile(path, raw, 0o600); err != nil {
		t.Fatal(err)
	}
	if got, err := readTaskOffsets(path); err != nil || got != want {
		t.Errorf("from a file: %+v, %v", got, err)
	}
}

func TestTaskOffsetsFromBTFRefused(t *testing.T) {
	rename := func(from, to string) func([]btf.Member) []btf.Member {
		return func(ms []btf.Member) []btf.Member {
			for i := range ms {
				if ms[i].Name == from {
					ms[i].Name = to
				}
			}
			return ms
		}
	}
	for _, tc := range []struct {
		name  string
		types []btf.Type
		want  string
	}{
		{"no task_struct", []btf.Type{&btf.Fwd{Name: "task_struct"}, &btf.Struct{Name: "mm_struct"}},
			"kernel BTF has no struct task_struct"},
		{"missing member", []btf.Type{testTaskStruct(rename("tgid", "tgid_gone"))},
			"task_struct has no member tgid in the kernel BTF"},
		{"bitfield", []btf.Type{testTaskStruct(func(ms []btf.Member) []btf.Member {
			ms[4].BitfieldSize = 4
			return ms
		})}, "task_struct.pid is not a 4-byte field in the kernel BTF"},
		{"unaligned", []btf.Type{testTaskStruct(func(ms []btf.Member) []btf.Member {
			ms[6].Offset = 516
			return ms
		})}, "task_struct.start_boottime is not a 8-byte field in the kernel BTF"},
		{"wrong size", []btf.Type{testTaskStruct(func(ms []btf.Member) []btf.Member {
			ms[5].Type = &btf.Int{Name: "short", Size: 2}
			return ms
		})}, "task_struct.tgid is not a 4-byte field in the kernel BTF"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			raw := marshalBTF(t, tc.types...)
			_, err := taskOffsetsFromBTF(raw)
			if err == nil || err.Error() != tc.want {
				t.Errorf("got %v, want %s", err, tc.want)
			}
			spec, err := btf.LoadSpecFromReader(bytes.NewReader(raw))
			if err != nil {
				t.Fatal(err)
			}
			if _, err := kernelTaskOffsets(spec); err == nil {
				t.Error("cilium's reference accepts it")
			}
		})
	}
}

func TestTaskOffsetsFromBadBTF(t *testing.T) {
	good := marshalBTF(t, testTaskStruct(nil))
	noBTF := func(t *testing.T, what string, data []byte) {
		t.Helper()
		_, err := taskOffsetsFromBTF(data)
		var nb noBTFError
		if !errors.As(err, &nb) || !strings.HasPrefix(err.Error(), "no kernel BTF (") {
			t.Errorf("%s: %v, want a no kernel BTF error", what, err)
		}
	}
	for n := range len(good) {
		_, err := taskOffsetsFromBTF(good[:n])
		if err == nil {
			t.Errorf("truncated to %d bytes: no error", n)
		}
	}
	noBTF(t, "empty", nil)
	noBTF(t, "header only", good[:btfHeaderLen])

	swapped := bytes.Clone(good)
	swapped[0], swapped[1] = swapped[1], swapped[0]
	noBTF(t, "bad magic", swapped)
	if _, err := taskOffsetsFromBTF(swapped); err == nil || !strings.Contains(err.Error(), "magic") {
		t.Errorf("bad magic: %v", err)
	}

	// A type section cut inside its last type, the header consistent.
	typeLen := binary.NativeEndian.Uint32(good[12:])
	for k := uint32(1); k < btfTypeLen; k++ {
		cut := bytes.Clone(good)
		binary.NativeEndian.PutUint32(cut[12:], typeLen-k)
		noBTF(t, fmt.Sprintf("type section %d bytes short", k), cut)
	}

	// An unknown kind.
	unknown := bytes.Clone(good)
	hdrLen := binary.NativeEndian.Uint32(good[4:])
	typeOff := binary.NativeEndian.Uint32(good[8:])
	unknown[hdrLen+typeOff+7] = 0x1f
	noBTF(t, "unknown kind", unknown)

	// Any one byte changed: an answer or an error, never a panic.
	for i := range good {
		for _, v := range []byte{0, 0x7f, 0xff} {
			bad := bytes.Clone(good)
			bad[i] = v
			_, _ = taskOffsetsFromBTF(bad)
		}
	}

	_, err := readTaskOffsets(filepath.Join(t.TempDir(), "absent"))
	if err == nil || !strings.HasPrefix(err.Error(), "no kernel BTF (open ") {
		t.Errorf("absent file: %v", err)
	}
}

// BenchmarkTaskOffsets reads the running kernel's task_struct offsets
// with the raw reader, as each hub open does.
func BenchmarkTaskOffsets(b *testing.B) {
	skipWithoutKernelBTF(b)
	b.ReportAllocs()
	for b.Loop() {
		if _, err := readTaskOffsets(kernelBTFPath); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkTaskOffsetsCilium reads them as hub opens did before: load
// the kernel's BTF spec with cilium/ebpf and look the members up.
func BenchmarkTaskOffsetsCilium(b *testing.B) {
	skipWithoutKernelBTF(b)
	b.ReportAllocs()
	for b.Loop() {
		if _, err := kernelSpecTaskOffsets(); err != nil {
			b.Fatal(err)
		}
	}
}
