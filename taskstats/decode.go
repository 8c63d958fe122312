package taskstats

import (
	"encoding/binary"
	"errors"
	"strconv"
	"time"

	"github.com/process-watchman/watchman/internal/nlerr"
)

// Wire constants of include/uapi/linux/taskstats.h and genetlink.h.
const (
	// FamilyName is the generic netlink family of taskstats.
	FamilyName = "TASKSTATS"
	// CmdGet is TASKSTATS_CMD_GET, the command of user requests.
	CmdGet = 1
	// CmdNew is TASKSTATS_CMD_NEW, the command of the kernel's records.
	CmdNew = 2
	// AttrRegisterCPUMask and AttrDeregisterCPUMask are the
	// TASKSTATS_CMD_ATTR_* attributes of a CmdGet that register and
	// deregister an exit listener for a CPU list such as "0-3".
	AttrRegisterCPUMask = 3
	// AttrDeregisterCPUMask: see AttrRegisterCPUMask.
	AttrDeregisterCPUMask = 4
	// TypePID, TypeTGID, TypeStats and TypeNull are the attributes nested
	// in a KindPID or KindTGID nest (TASKSTATS_TYPE_*).
	TypePID = 1
	// TypeTGID: see TypePID.
	TypeTGID = 2
	// TypeStats: see TypePID.
	TypeStats = 3
	// TypeNull: see TypePID. It pads the stats to 64-bit alignment.
	TypeNull = 6

	// GenlHeaderLen is the size of struct genlmsghdr (cmd, version,
	// reserved).
	GenlHeaderLen = 4
	// NlaHeaderLen is the size of struct nlattr (nla_len, nla_type).
	NlaHeaderLen = 4

	// MinVersion is the oldest struct taskstats version Decode reads
	// (Linux 2.6.32); Version 0 is accepted for delay-only aggregates.
	MinVersion = 8
	// Version is the newest version whose layout Decode knows; newer
	// versions only append fields, so they decode as this one.
	Version = 16
)

// Decode errors. A *DecodeError matches exactly one of them with
// errors.Is.
var (
	// ErrTruncated means the input is shorter than its headers or its
	// version say.
	ErrTruncated = errors.New("taskstats: truncated record")
	// ErrForeign means the input is not a taskstats record this package
	// reads: another command, or a struct version it does not know.
	ErrForeign = errors.New("taskstats: foreign message")
	// ErrMalformed means the lengths or attributes are inconsistent.
	ErrMalformed = errors.New("taskstats: malformed message")
)

// A DecodeError reports why Decode or DecodeMessage rejected its input.
type DecodeError struct {
	// Reason is ErrTruncated, ErrForeign or ErrMalformed.
	Reason error
	// Detail says what exactly was wrong.
	Detail string
	// Len is the length of the input.
	Len int
}

// Error implements error.
func (e *DecodeError) Error() string { return nlerr.Decode(*e).Text() }

// Unwrap returns Reason.
func (e *DecodeError) Unwrap() error { return e.Reason }

// structSize returns the size of struct taskstats of version v, the
// bytes Decode needs, or -1 for a version it does not read.
func structSize(v uint16) int {
	switch {
	case v == 0:
		return offRunVirtual + 8 // delays only
	case v < MinVersion:
		return -1
	case v == 8:
		return 328
	case v == 9:
		return 344
	case v == 10:
		return 352
	case v == 11:
		return 368
	case v == 12:
		return 400
	case v == 13:
		return 416
	case v == 14:
		return 432
	}
	return 560 // 15 and 16; later versions append to 16
}

// Offsets of struct taskstats, versions 8 to 14 and 16 and later (the
// fields of each version are a prefix of the next). Version 15 put eight
// max/min pairs in the middle (fixed by version 16, Linux 6.15); decode
// moves them back.
const (
	offVersion     = 0
	offExitcode    = 4
	offFlag        = 8
	offNice        = 9
	offCPUCount    = 16
	offCPUTotal    = 24
	offBlkioCount  = 32
	offBlkioTotal  = 40
	offSwapinCount = 48
	offSwapinTotal = 56
	offRunReal     = 64
	offRunVirtual  = 72
	offComm        = 80
	offSched       = 112
	offUID         = 120
	offGID         = 124
	offPID         = 128
	offPPID        = 132
	offBtime       = 136
	offEtime       = 144
	offUtime       = 152
	offStime       = 160
	offMinflt      = 168
	offMajflt      = 176
	offHiwaterRSS  = 200
	offHiwaterVM   = 208
	offReadChar    = 216
	offWriteChar   = 224
	offReadSysc    = 232
	offWriteSysc   = 240
	offReadBytes   = 248
	offWriteBytes  = 256
	offCancelled   = 264
	offNvcsw       = 272
	offNivcsw      = 280
	offUtimeScaled = 288
	offStimeScaled = 296
	offFreepages   = 320 // freepages_delay_total
	offThrashing   = 336 // thrashing_delay_total, version 9
	offBtime64     = 344 // version 10
	offCompact     = 360 // compact_delay_total, version 11
	offTGID        = 368 // version 12
	offTGEtime     = 376
	offExeDev      = 384
	offExeInode    = 392
	offWPCopy      = 408 // wpcopy_delay_total, version 13
	offIRQ         = 424 // irq_delay_total, version 14
)

// maxStructLen is the largest struct Decode reads: version 16's size.
const maxStructLen = 560

// Decode decodes a struct taskstats (the payload of a TASKSTATS_TYPE_STATS
// attribute, in host byte order) into *r by its version field. It sets
// the fields of the struct and leaves Kind, WithGroup, PID, TGID (except
// from ac_tgid) and Received zero: DecodeMessage sets those.
//
// Versions 8 to 16 are read with their own layout (version 15's differs);
// later versions, which only append fields, as version 16. Version 0 is
// read as the delay-only aggregate older kernels send for a thread group.
// Versions 1 to 7 are ErrForeign; a b shorter than its version's struct is
// ErrTruncated. Bytes past the struct are ignored.
//
// Errors are *DecodeError values; Decode never panics and never
// allocates on success.
func Decode(b []byte, r *Record) error {
	if d, reason := decode(b, r); reason != nil {
		return &DecodeError{Reason: reason, Detail: d, Len: len(b)}
	}
	return nil
}

// decode is Decode without the allocation of an error value.
func decode(b []byte, r *Record) (detail string, reason error) {
	*r = Record{}
	if len(b) < 2 {
		return "shorter than the version field", ErrTruncated
	}
	ne := binary.NativeEndian
	v := ne.Uint16(b[offVersion:])
	size := structSize(v)
	if size < 0 {
		return "struct taskstats version " + strconv.Itoa(int(v)) + " is older than 8", ErrForeign
	}
	if len(b) < size {
		return "shorter than struct taskstats of its version", ErrTruncated
	}
	// Copy the struct into a zeroed array in the standard layout, so that
	// fields past the version's size read as 0 and every read below is
	// at a constant offset.
	var a [maxStructLen]byte
	if v == 15 {
		// Each {from, to, shift} moves the standard bytes [from, to)
		// from offset from+shift of version 15, where every delay block
		// of version 14 was followed by a max and a min (16 bytes each).
		v15Segments := [...]struct{ from, to, shift int }{
			{0, offBlkioCount, 0},               // header, cpu count and total
			{offBlkioCount, offSwapinCount, 16}, // after cpu max/min
			{offSwapinCount, offRunReal, 32},    // after blkio max/min
			{offRunReal, offFreepages + 8, 48},  // after swapin max/min
			{offFreepages + 8, offBtime64, 64},  // thrashing, after freepages max/min
			{offBtime64, offTGID, 80},           // btime64, compact, after thrashing max/min
			{offTGID, offWPCopy + 8, 96},        // tgid..wpcopy, after compact max/min
			{offWPCopy + 8, offIRQ + 8, 112},    // irq, after wpcopy max/min
		}
		for _, sg := range v15Segments {
			copy(a[sg.from:sg.to], b[sg.from+sg.shift:])
		}
	} else {
		copy(a[:], b[:size])
	}
	u64 := func(off int) uint64 { return ne.Uint64(a[off : off+8]) }
	u32 := func(off int) uint32 { return ne.Uint32(a[off : off+4]) }
	ns := func(off int) time.Duration { return clampDuration(u64(off), 1) }
	us := func(off int) time.Duration { return clampDuration(u64(off), int64(time.Microsecond)) }

	r.Version = v
	r.ExitStatus = u32(offExitcode)
	r.Flags = Flags(a[offFlag])
	r.Nice = int8(a[offNice])
	r.CPUDelayCount = u64(offCPUCount)
	r.CPUDelay = ns(offCPUTotal)
	r.BlkioDelayCount = u64(offBlkioCount)
	r.BlkioDelay = ns(offBlkioTotal)
	r.SwapinDelayCount = u64(offSwapinCount)
	r.SwapinDelay = ns(offSwapinTotal)
	r.CPURunReal = ns(offRunReal)
	r.CPURunVirtual = ns(offRunVirtual)
	if v == 0 {
		return "", nil
	}
	copy(r.Comm[:], a[offComm:])
	r.Sched = a[offSched]
	r.UID = u32(offUID)
	r.GID = u32(offGID)
	r.PPID = int32(u32(offPPID))
	r.BeginTime = int64(u32(offBtime))
	if v >= 10 {
		r.BeginTime = int64(u64(offBtime64))
	}
	r.Elapsed = us(offEtime)
	r.UserCPU = us(offUtime)
	r.SystemCPU = us(offStime)
	r.MinorFaults = u64(offMinflt)
	r.MajorFaults = u64(offMajflt)
	r.PeakRSS = kib(u64(offHiwaterRSS))
	r.PeakVM = kib(u64(offHiwaterVM))
	r.ReadChars = u64(offReadChar)
	r.WriteChars = u64(offWriteChar)
	r.ReadSyscalls = u64(offReadSysc)
	r.WriteSyscalls = u64(offWriteSysc)
	r.ReadBytes = u64(offReadBytes)
	r.WriteBytes = u64(offWriteBytes)
	r.CancelledWriteBytes = u64(offCancelled)
	r.VoluntarySwitches = u64(offNvcsw)
	r.InvoluntarySwitches = u64(offNivcsw)
	r.UserCPUScaled = us(offUtimeScaled)
	r.SystemCPUScaled = us(offStimeScaled)
	r.FreepagesDelay = ns(offFreepages)
	r.ThrashingDelay = ns(offThrashing)
	r.CompactDelay = ns(offCompact)
	r.TGID = int32(u32(offTGID))
	r.ProcessElapsed = us(offTGEtime)
	r.ExeDev = u64(offExeDev)
	r.ExeInode = u64(offExeInode)
	r.WPCopyDelay = ns(offWPCopy)
	r.IRQDelay = ns(offIRQ)
	return "", nil
}

// clampDuration returns v units as a Duration, saturating instead of
// overflowing.
func clampDuration(v uint64, unit int64) time.Duration {
	const maxD = uint64(1<<63 - 1)
	if v > maxD/uint64(unit) {
		return time.Duration(maxD)
	}
	return time.Duration(int64(v) * unit)
}

// kib returns v KiB in bytes, saturating.
func kib(v uint64) uint64 {
	if v > ^uint64(0)>>10 {
		return ^uint64(0)
	}
	return v << 10
}

// attr is one netlink attribute: its type (without the NLA_F_NESTED and
// NLA_F_NET_BYTEORDER flags) and payload.
type attr struct {
	typ  uint16
	data []byte
}

// nextAttr splits the first attribute off b. ok is false at the end of
// b; detail is non-empty when the attribute is malformed.
func nextAttr(b []byte) (a attr, rest []byte, ok bool, detail string) {
	if len(b) == 0 {
		return attr{}, nil, false, ""
	}
	if len(b) < NlaHeaderLen {
		return attr{}, nil, false, "trailing bytes shorter than an attribute header"
	}
	ne := binary.NativeEndian
	l := int(ne.Uint16(b[0:]))
	if l < NlaHeaderLen || l > len(b) {
		return attr{}, nil, false, "attribute length out of bounds"
	}
	a = attr{typ: ne.Uint16(b[2:]) & 0x3fff, data: b[NlaHeaderLen:l]}
	if al := (l + 3) &^ 3; al < len(b) {
		rest = b[al:]
	}
	return a, rest, true, ""
}

// DecodeMessage decodes a generic netlink message of the TASKSTATS family
// (the bytes after the nlmsghdr: struct genlmsghdr and attributes) and
// appends its records to dst: one per TASKSTATS_TYPE_AGGR_PID or
// TASKSTATS_TYPE_AGGR_TGID nest, in message order, so a KindTGID
// aggregate follows the KindPID record of the same message (which has
// WithGroup set).
//
// A command other than TASKSTATS_CMD_NEW is ErrForeign. Each nest must
// hold exactly one id (TASKSTATS_TYPE_PID for AGGR_PID, TYPE_TGID for
// AGGR_TGID) of 4 bytes and one TASKSTATS_TYPE_STATS that Decode accepts;
// TASKSTATS_TYPE_NULL padding and unknown top-level attributes are
// skipped. A message without records is ErrMalformed. On error dst is
// returned unchanged.
//
// Errors are *DecodeError values; DecodeMessage never panics and does not
// allocate when dst has room.
func DecodeMessage(b []byte, dst []Record) ([]Record, error) {
	out, d, reason := decodeMessage(b, dst)
	if reason != nil {
		return dst, &DecodeError{Reason: reason, Detail: d, Len: len(b)}
	}
	return out, nil
}

func decodeMessage(b []byte, dst []Record) (out []Record, detail string, reason error) {
	if len(b) < GenlHeaderLen {
		return dst, "shorter than struct genlmsghdr", ErrTruncated
	}
	if b[0] != CmdNew {
		return dst, "generic netlink command " + strconv.Itoa(int(b[0])) + " is not TASKSTATS_CMD_NEW", ErrForeign
	}
	n0 := len(dst)
	rest := b[GenlHeaderLen:]
	for {
		a, next, ok, bad := nextAttr(rest)
		if bad != "" {
			return dst[:n0], bad, ErrMalformed
		}
		if !ok {
			break
		}
		rest = next
		var kind Kind
		var idType uint16
		switch a.typ {
		case uint16(KindPID):
			kind, idType = KindPID, TypePID
		case uint16(KindTGID):
			kind, idType = KindTGID, TypeTGID
		default:
			continue
		}
		var id []byte
		var stats []byte
		nested := a.data
		for {
			na, nnext, nok, nbad := nextAttr(nested)
			if nbad != "" {
				return dst[:n0], "in a nest: " + nbad, ErrMalformed
			}
			if !nok {
				break
			}
			nested = nnext
			switch na.typ {
			case idType:
				if id != nil {
					return dst[:n0], "two ids in one nest", ErrMalformed
				}
				id = na.data
			case TypeStats:
				if stats != nil {
					return dst[:n0], "two stats in one nest", ErrMalformed
				}
				stats = na.data
			case TypeNull:
			default:
				return dst[:n0], "unexpected attribute " + strconv.Itoa(int(na.typ)) + " in a nest", ErrMalformed
			}
		}
		if id == nil || stats == nil {
			return dst[:n0], "nest without an id or stats", ErrMalformed
		}
		if len(id) != 4 {
			return dst[:n0], "id attribute is not 4 bytes", ErrMalformed
		}
		dst = append(dst, Record{})
		r := &dst[len(dst)-1]
		if d, reason := decode(stats, r); reason != nil {
			return dst[:n0], "stats: " + d, reason
		}
		r.Kind = kind
		v := int32(binary.NativeEndian.Uint32(id))
		if kind == KindPID {
			r.PID = v
		} else {
			r.TGID = v
			if len(dst)-n0 >= 2 {
				if p := &dst[len(dst)-2]; p.Kind == KindPID && (p.TGID == 0 || p.TGID == v) {
					p.WithGroup = true
					p.TGID = v
				}
			}
		}
	}
	if len(dst) == n0 {
		return dst, "no record in the message", ErrMalformed
	}
	return dst, "", nil
}
