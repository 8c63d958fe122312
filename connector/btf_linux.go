//go:build linux

package connector

import (
	"encoding/binary"
	"errors"
	"fmt"
	"os"

	"golang.org/x/sys/unix"
)

// kernelBTFPath is the running kernel's BTF.
const kernelBTFPath = "/sys/kernel/btf/vmlinux"

// BTF kinds (include/uapi/linux/btf.h).
const (
	btfKindInt       = 1
	btfKindPtr       = 2
	btfKindArray     = 3
	btfKindStruct    = 4
	btfKindUnion     = 5
	btfKindEnum      = 6
	btfKindFwd       = 7
	btfKindTypedef   = 8
	btfKindVolatile  = 9
	btfKindConst     = 10
	btfKindRestrict  = 11
	btfKindFunc      = 12
	btfKindFuncProto = 13
	btfKindVar       = 14
	btfKindDatasec   = 15
	btfKindFloat     = 16
	btfKindDeclTag   = 17
	btfKindTypeTag   = 18
	btfKindEnum64    = 19
)

const (
	btfMagic       = 0xeb9f
	btfHeaderLen   = 24 // struct btf_header
	btfTypeLen     = 12 // struct btf_type
	btfMemberLen   = 12 // struct btf_member
	btfResolveMax  = 32 // typedef/qualifier chains and anonymous member nesting
	btfPointerSize = 8
)

// noBTFError is a kernel BTF that cannot be read: the file is missing,
// or it is not BTF this reader understands.
type noBTFError struct{ err error }

func (e noBTFError) Error() string { return fmt.Sprintf("no kernel BTF (%v)", e.err) }
func (e noBTFError) Unwrap() error { return e.err }

// rawBTF is a BTF blob, read in place: its type and string sections and
// where every btfIndexStride-th type starts in the type section, by type
// ID (one offset a type would be 500 KiB for the kernel's 126,623 types).
type rawBTF struct {
	types []byte
	strs  []byte
	start []uint32 // start[i] is type i*btfIndexStride's offset in types; type 0 is void
	count uint32   // the number of types, void included
	task  uint32   // the ID of STRUCT task_struct with members, 0 if none
}

// btfIndexStride is how many types apart the index's offsets are.
const btfIndexStride = 16

// structField is a struct member a recorder reads: its name, its size in
// bytes, and where its byte offset goes.
type structField struct {
	name string
	size int
	dst  *uint32
}

// fields are the task_struct members whose offsets o holds.
func (o *taskOffsets) fields() []structField {
	return []structField{
		{"children", 16, &o.children},
		{"sibling", 16, &o.sibling},
		{"real_parent", 8, &o.realParent},
		{"pid", 4, &o.pid},
		{"tgid", 4, &o.tgid},
		{"start_boottime", 8, &o.startBoottime},
	}
}

// kernelOffsets are the offsets that the start-time and exec recorders
// read, from one read of the kernel BTF, and why either has none.
type kernelOffsets struct {
	start    taskOffsets
	startErr error
	exec     execOffsets
	execErr  error
}

// readKernelOffsets reads the recorders' offsets from the kernel BTF at
// path without building a full BTF spec: it maps the file, walks its
// type section once and resolves only the members it needs. A file that
// cannot be read or parsed is a noBTFError for both.
func readKernelOffsets(path string) kernelOffsets {
	var k kernelOffsets
	if err := withBTFFile(path, func(data []byte) { k = offsetsFromBTF(data) }); err != nil {
		k.startErr, k.execErr = err, err
	}
	return k
}

// withBTFFile calls use with the contents of the file at path, mapped
// (or read, where the file cannot be mapped), and unmaps them after.
func withBTFFile(path string, use func(data []byte)) error {
	f, err := os.Open(path)
	if err != nil {
		return noBTFError{err}
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return noBTFError{err}
	}
	size := fi.Size()
	if size < btfHeaderLen || size > 1<<31 {
		return noBTFError{fmt.Errorf("%s: %d bytes", path, size)}
	}
	data, err := unix.Mmap(int(f.Fd()), 0, int(size), unix.PROT_READ, unix.MAP_PRIVATE)
	if err != nil {
		// Older kernels cannot map the sysfs BTF file: read it.
		data, err = os.ReadFile(path)
		if err != nil {
			return noBTFError{err}
		}
		use(data)
		return nil
	}
	use(data)
	if err := unix.Munmap(data); err != nil {
		return fmt.Errorf("unmapping %s: %w", path, err)
	}
	return nil
}

// offsetsFromBTF returns the offsets in a raw BTF blob, with the checks
// and messages of kernelTaskOffsets and kernelExecOffsets (the cilium
// references in the tests).
func offsetsFromBTF(data []byte) kernelOffsets {
	var k kernelOffsets
	b, err := parseBTF(data)
	if err == nil && b.task == 0 {
		err = errors.New("kernel BTF has no struct task_struct")
	} else if err != nil {
		err = noBTFError{err}
	}
	if err != nil {
		k.startErr, k.execErr = err, err
		return k
	}
	k.startErr = b.startOffsets(&k.start)
	k.execErr = b.execOffsets(&k.exec)
	return k
}

// startOffsets finds the start-time recorder's offsets.
func (b *rawBTF) startOffsets(o *taskOffsets) error {
	if err := b.fieldOffsets(b.task, "task_struct", o.fields()); err != nil {
		return err
	}
	children, _ := b.findMember(b.task, "children", 0, 0)
	var prev uint32
	err := b.fieldOffsets(children.typ, "struct list_head", []structField{{"prev", 8, &prev}})
	if err != nil {
		return errors.New("struct list_head has no 8-byte prev in the kernel BTF")
	}
	o.listPrev = prev
	return nil
}

// execOffsets finds the exec recorder's offsets: task_struct's, then
// those of the struct its mm points to.
func (b *rawBTF) execOffsets(o *execOffsets) error {
	if err := b.fieldOffsets(b.task, "task_struct", o.taskFields()); err != nil {
		return err
	}
	mm, _ := b.findMember(b.task, "mm", 0, 0)
	mmStruct, ok := b.pointee(mm.typ)
	if !ok {
		return errors.New("task_struct.mm is not a pointer in the kernel BTF")
	}
	return b.fieldOffsets(mmStruct, "mm_struct", o.mmFields())
}

// fieldOffsets stores the byte offsets of fields in struct or union id,
// called name in the errors, each a whole member of its size at a byte
// boundary (in id or in an anonymous struct or union inside it).
func (b *rawBTF) fieldOffsets(id uint32, name string, fields []structField) error {
	for _, fl := range fields {
		m, ok := b.findMember(id, fl.name, 0, 0)
		if !ok {
			return fmt.Errorf("%s has no member %s in the kernel BTF", name, fl.name)
		}
		size, err := b.sizeof(m.typ)
		if err != nil || size != uint64(fl.size) || m.bitfieldSize != 0 || m.offset%8 != 0 {
			return fmt.Errorf("%s.%s is not a %d-byte field in the kernel BTF", name, fl.name, fl.size)
		}
		*fl.dst = uint32(m.offset / 8)
	}
	return nil
}

// parseBTF checks the header of a BTF blob in the host's byte order and
// indexes its types.
func parseBTF(data []byte) (*rawBTF, error) {
	le := binary.NativeEndian
	if len(data) < btfHeaderLen {
		return nil, fmt.Errorf("%d bytes, shorter than a BTF header", len(data))
	}
	if magic := le.Uint16(data[0:]); magic != btfMagic {
		return nil, fmt.Errorf("bad BTF magic %#04x", magic)
	}
	if v := data[2]; v != 1 {
		return nil, fmt.Errorf("BTF version %d, not 1", v)
	}
	hdrLen := uint64(le.Uint32(data[4:]))
	typeOff, typeLen := uint64(le.Uint32(data[8:])), uint64(le.Uint32(data[12:]))
	strOff, strLen := uint64(le.Uint32(data[16:])), uint64(le.Uint32(data[20:]))
	if hdrLen < btfHeaderLen || hdrLen > uint64(len(data)) {
		return nil, fmt.Errorf("BTF header length %d in %d bytes", hdrLen, len(data))
	}
	body := data[hdrLen:]
	if typeOff+typeLen > uint64(len(body)) || strOff+strLen > uint64(len(body)) {
		return nil, fmt.Errorf("BTF sections (types %d+%d, strings %d+%d) beyond the %d bytes after the header",
			typeOff, typeLen, strOff, strLen, len(body))
	}
	b := &rawBTF{types: body[typeOff : typeOff+typeLen], strs: body[strOff : strOff+strLen]}
	if err := b.index(); err != nil {
		return nil, err
	}
	return b, nil
}

// index walks the type section once, recording where every
// btfIndexStride-th type starts and the ID of the struct task_struct that
// has members.
func (b *rawBTF) index() error {
	// The kernel's vmlinux BTF has some 25 bytes a type on average
	// (6.18: 126,623 types in 3.2 MB).
	b.start = make([]uint32, 0, len(b.types)/(20*btfIndexStride)+2)
	b.start = append(b.start, 0) // void's: type 1 starts at 0
	id := uint32(1)
	for off := 0; off < len(b.types); id++ {
		n, err := b.typeLen(off, id)
		if err != nil {
			return err
		}
		if id%btfIndexStride == 0 {
			b.start = append(b.start, uint32(off))
		}
		if b.task == 0 {
			info := binary.NativeEndian.Uint32(b.types[off+4:])
			if (info>>24)&0x1f == btfKindStruct && info&0xffff > 0 &&
				b.nameIs(binary.NativeEndian.Uint32(b.types[off:]), "task_struct") {
				b.task = id
			}
		}
		off += n
	}
	b.count = id
	return nil
}

// typeLen is the length of type id, which starts at off in the type
// section: its header and the kind's data after it, all within the
// section.
func (b *rawBTF) typeLen(off int, id uint32) (int, error) {
	if off < 0 || len(b.types)-off < btfTypeLen {
		return 0, fmt.Errorf("BTF type %d truncated", id)
	}
	info := binary.NativeEndian.Uint32(b.types[off+4:])
	vlen, kind := int(info&0xffff), (info>>24)&0x1f
	var extra int
	switch kind {
	case btfKindPtr, btfKindFwd, btfKindTypedef, btfKindVolatile, btfKindConst,
		btfKindRestrict, btfKindFunc, btfKindFloat, btfKindTypeTag:
	case btfKindInt, btfKindVar, btfKindDeclTag:
		extra = 4
	case btfKindArray:
		extra = 12
	case btfKindStruct, btfKindUnion, btfKindDatasec, btfKindEnum64:
		extra = vlen * 12
	case btfKindEnum, btfKindFuncProto:
		extra = vlen * 8
	default:
		return 0, fmt.Errorf("BTF type %d has unknown kind %d", id, kind)
	}
	if len(b.types)-off-btfTypeLen < extra {
		return 0, fmt.Errorf("BTF type %d truncated", id)
	}
	return btfTypeLen + extra, nil
}

// nameIs reports whether the string at off in the string section is name.
func (b *rawBTF) nameIs(off uint32, name string) bool {
	end := uint64(off) + uint64(len(name))
	if end >= uint64(len(b.strs)) {
		return false
	}
	return string(b.strs[off:end]) == name && b.strs[end] == 0
}

// typ returns type id's header: name offset, kind, vlen, kind_flag, its
// size or type, and the kind's data after the header. It walks from the
// nearest indexed type before id.
func (b *rawBTF) typ(id uint32) (nameOff, kind uint32, vlen int, kindFlag bool, sizeType uint32, data []byte, ok bool) {
	if id == 0 || id >= b.count {
		return 0, 0, 0, false, 0, nil, false
	}
	off := int(b.start[id/btfIndexStride])
	for at := id &^ (btfIndexStride - 1); at < id; at++ {
		if at == 0 {
			continue // void takes no bytes
		}
		n, err := b.typeLen(off, at)
		if err != nil {
			return 0, 0, 0, false, 0, nil, false
		}
		off += n
	}
	n, err := b.typeLen(off, id)
	if err != nil {
		return 0, 0, 0, false, 0, nil, false
	}
	le := binary.NativeEndian
	t := b.types[off : off+n]
	info := le.Uint32(t[4:])
	return le.Uint32(t), (info >> 24) & 0x1f, int(info & 0xffff), info>>31 == 1, le.Uint32(t[8:]), t[btfTypeLen:], true
}

// underlying skips typedefs and qualifiers.
func (b *rawBTF) underlying(id uint32) (uint32, bool) {
	for range btfResolveMax {
		_, kind, _, _, next, _, ok := b.typ(id)
		if !ok {
			return 0, false
		}
		switch kind {
		case btfKindTypedef, btfKindVolatile, btfKindConst, btfKindRestrict, btfKindTypeTag:
			id = next
		default:
			return id, true
		}
	}
	return 0, false
}

// pointee is the type that pointer type id (after typedefs and
// qualifiers) points to.
func (b *rawBTF) pointee(id uint32) (uint32, bool) {
	id, ok := b.underlying(id)
	if !ok {
		return 0, false
	}
	_, kind, _, _, target, _, _ := b.typ(id)
	return target, kind == btfKindPtr
}

// sizeof is type id's size in bytes, as btf.Sizeof computes it.
func (b *rawBTF) sizeof(id uint32) (uint64, error) {
	n := uint64(1)
	for range btfResolveMax {
		_, kind, _, _, sizeType, data, ok := b.typ(id)
		if !ok {
			return 0, fmt.Errorf("BTF type %d: unsized or missing", id)
		}
		var elem uint64
		switch kind {
		case btfKindTypedef, btfKindVolatile, btfKindConst, btfKindRestrict, btfKindTypeTag:
			id = sizeType
			continue
		case btfKindArray:
			nelems := uint64(binary.NativeEndian.Uint32(data[8:]))
			if n > 0 && nelems > (1<<62)/n {
				return 0, fmt.Errorf("BTF type %d: array overflow", id)
			}
			n *= nelems
			id = binary.NativeEndian.Uint32(data)
			continue
		case btfKindPtr:
			elem = btfPointerSize
		case btfKindInt, btfKindStruct, btfKindUnion, btfKindEnum, btfKindEnum64, btfKindFloat, btfKindDatasec:
			elem = uint64(sizeType)
		default:
			return 0, fmt.Errorf("BTF type %d of kind %d has no size", id, kind)
		}
		if n > 0 && elem > (1<<62)/n {
			return 0, fmt.Errorf("BTF type %d: size overflow", id)
		}
		return n * elem, nil
	}
	return 0, fmt.Errorf("BTF type %d: chain too long", id)
}

// btfMember is a member found by findMember; offset is in bits from the
// outermost type's start.
type btfMember struct {
	typ          uint32
	offset       uint64
	bitfieldSize uint32
}

// findMember looks for a member by name in struct or union id, and in
// the anonymous structs and unions inside it (to a depth of
// btfResolveMax); base is the bit offset of id in the outermost type.
func (b *rawBTF) findMember(id uint32, name string, base uint64, depth int) (btfMember, bool) {
	if depth >= btfResolveMax {
		return btfMember{}, false
	}
	id, ok := b.underlying(id)
	if !ok {
		return btfMember{}, false
	}
	_, kind, vlen, kindFlag, _, data, _ := b.typ(id)
	if kind != btfKindStruct && kind != btfKindUnion {
		return btfMember{}, false
	}
	le := binary.NativeEndian
	for i := range vlen {
		m := data[i*btfMemberLen:]
		nameOff, typ, off := le.Uint32(m), le.Uint32(m[4:]), le.Uint32(m[8:])
		var bitfieldSize uint32
		if kindFlag {
			bitfieldSize, off = off>>24, off&0xffffff
		}
		if b.nameIs(nameOff, name) {
			return btfMember{typ: typ, offset: base + uint64(off), bitfieldSize: bitfieldSize}, true
		}
		if !b.nameIs(nameOff, "") {
			continue
		}
		if found, ok := b.findMember(typ, name, base+uint64(off), depth+1); ok {
			return found, true
		}
	}
	return btfMember{}, false
}
