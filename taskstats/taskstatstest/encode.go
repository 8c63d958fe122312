package taskstatstest

import (
	"encoding/binary"
	"time"

	"github.com/process-watchman/watchman/internal/nlfake"
	"github.com/process-watchman/watchman/taskstats"
)

// StatsLen is the size of the version-16 struct taskstats EncodeStats
// writes.
const StatsLen = 560

// Offsets of the version-16 struct taskstats (include/uapi/linux/
// taskstats.h), written out independently of the decoder's table.
const (
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
	offFreepages   = 320
	offThrashing   = 336
	offBtime64     = 344
	offCompact     = 360
	offTGID        = 368
	offTGEtime     = 376
	offExeDev      = 384
	offExeInode    = 392
	offWPCopy      = 408
	offIRQ         = 424
)

// EncodeStats returns r as a version-16 struct taskstats in host byte
// order, as the kernel fills it (Version is written as 16 unless r has
// another; Kind, WithGroup, PID and Received are not part of the struct,
// and ac_pid is set from PID). Times are truncated to the struct's units
// (microseconds for CPU and elapsed times), sizes to KiB.
func EncodeStats(r *taskstats.Record) []byte {
	b := make([]byte, StatsLen)
	ne := binary.NativeEndian
	v := r.Version
	if v == 0 && r.Kind != taskstats.KindTGID {
		v = 16
	}
	ne.PutUint16(b[0:], v)
	put := func(off int, x uint64) { ne.PutUint64(b[off:], x) }
	us := func(off int, d time.Duration) { put(off, uint64(d/time.Microsecond)) }
	ns := func(off int, d time.Duration) { put(off, uint64(d)) }
	ne.PutUint32(b[offExitcode:], r.ExitStatus)
	b[offFlag] = byte(r.Flags)
	b[offNice] = byte(r.Nice)
	put(offCPUCount, r.CPUDelayCount)
	ns(offCPUTotal, r.CPUDelay)
	put(offBlkioCount, r.BlkioDelayCount)
	ns(offBlkioTotal, r.BlkioDelay)
	put(offSwapinCount, r.SwapinDelayCount)
	ns(offSwapinTotal, r.SwapinDelay)
	ns(offRunReal, r.CPURunReal)
	ns(offRunVirtual, r.CPURunVirtual)
	copy(b[offComm:offComm+32], r.Comm[:])
	b[offSched] = r.Sched
	ne.PutUint32(b[offUID:], r.UID)
	ne.PutUint32(b[offGID:], r.GID)
	ne.PutUint32(b[offPID:], uint32(r.PID))
	ne.PutUint32(b[offPPID:], uint32(r.PPID))
	ne.PutUint32(b[offBtime:], uint32(max(0, min(r.BeginTime, 1<<32-1))))
	us(offEtime, r.Elapsed)
	us(offUtime, r.UserCPU)
	us(offStime, r.SystemCPU)
	put(offMinflt, r.MinorFaults)
	put(offMajflt, r.MajorFaults)
	put(offHiwaterRSS, r.PeakRSS>>10)
	put(offHiwaterVM, r.PeakVM>>10)
	put(offReadChar, r.ReadChars)
	put(offWriteChar, r.WriteChars)
	put(offReadSysc, r.ReadSyscalls)
	put(offWriteSysc, r.WriteSyscalls)
	put(offReadBytes, r.ReadBytes)
	put(offWriteBytes, r.WriteBytes)
	put(offCancelled, r.CancelledWriteBytes)
	put(offNvcsw, r.VoluntarySwitches)
	put(offNivcsw, r.InvoluntarySwitches)
	us(offUtimeScaled, r.UserCPUScaled)
	us(offStimeScaled, r.SystemCPUScaled)
	ns(offFreepages, r.FreepagesDelay)
	ns(offThrashing, r.ThrashingDelay)
	put(offBtime64, uint64(r.BeginTime))
	ns(offCompact, r.CompactDelay)
	if r.Kind != taskstats.KindTGID {
		ne.PutUint32(b[offTGID:], uint32(r.TGID))
	}
	us(offTGEtime, r.ProcessElapsed)
	put(offExeDev, r.ExeDev)
	put(offExeInode, r.ExeInode)
	ns(offWPCopy, r.WPCopyDelay)
	ns(offIRQ, r.IRQDelay)
	return b
}

// appendAttr appends a netlink attribute with a 4-byte aligned payload.
func appendAttr(b []byte, typ uint16, data []byte) []byte {
	l := 4 + len(data)
	var h [4]byte
	binary.NativeEndian.PutUint16(h[0:], uint16(l))
	binary.NativeEndian.PutUint16(h[2:], typ)
	b = append(b, h[:]...)
	b = append(b, data...)
	for len(b)%4 != 0 {
		b = append(b, 0)
	}
	return b
}

// nest returns an AGGR_PID or AGGR_TGID nest with the id and the stats.
func nest(kind taskstats.Kind, id int32, stats []byte) []byte {
	var idb [4]byte
	binary.NativeEndian.PutUint32(idb[:], uint32(id))
	idType := uint16(taskstats.TypePID)
	if kind == taskstats.KindTGID {
		idType = taskstats.TypeTGID
	}
	inner := appendAttr(nil, idType, idb[:])
	inner = appendAttr(inner, taskstats.TypeStats, stats)
	return appendAttr(nil, uint16(kind), inner)
}

// EncodeMessage returns the generic netlink message (struct genlmsghdr
// and attributes, without the nlmsghdr) the kernel sends for an exiting
// task: TASKSTATS_CMD_NEW with an AGGR_PID nest of task (id task.PID),
// followed, when group is not nil, by an AGGR_TGID nest of group (id
// group.TGID).
func EncodeMessage(task *taskstats.Record, group *taskstats.Record) []byte {
	b := []byte{taskstats.CmdNew, 1, 0, 0}
	b = append(b, nest(taskstats.KindPID, task.PID, EncodeStats(task))...)
	if group != nil {
		g := *group
		g.Kind = taskstats.KindTGID
		b = append(b, nest(taskstats.KindTGID, g.TGID, EncodeStats(&g))...)
	}
	return b
}

// EncodeDatagram returns a netlink datagram: an nlmsghdr of type typ
// (the family id for records), sequence number seq and port id pid
// (0 for the kernel), followed by payload.
func EncodeDatagram(typ uint16, flags uint16, seq, pid uint32, payload []byte) []byte {
	b := make([]byte, nlfake.HeaderLen, nlfake.HeaderLen+len(payload)+3)
	nlfake.PutHeader(b, uint32(nlfake.HeaderLen+len(payload)), typ, flags, seq, pid)
	b = append(b, payload...)
	for len(b)%4 != 0 {
		b = append(b, 0)
	}
	return b
}
