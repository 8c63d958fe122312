package taskstats_test

import (
	"encoding/binary"
	"errors"
	"os"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/process-watchman/watchman/taskstats"
	"github.com/process-watchman/watchman/taskstats/taskstatstest"
)

// The fixtures under testdata are generic netlink messages (struct
// genlmsghdr and attributes, without the nlmsghdr) captured from Linux
// 6.18.44 on x86_64 (little endian):
//
//   - v16-single.genl: /bin/true, a single-threaded process.
//   - v16-thread.genl: a thread of a C program with three threads burning
//     about 100 ms of CPU each (not the last task: no AGROUP).
//   - v16-group.genl: that program's main thread, the last task, which
//     exited with status 3: its record and the per-TGID aggregate.
func readFixture(t testing.TB, name string) []byte {
	t.Helper()
	b, err := os.ReadFile("testdata/" + name)
	if err != nil {
		t.Fatal(err)
	}
	if binary.NativeEndian.Uint16([]byte{1, 0}) != 1 {
		t.Skip("fixtures are little endian")
	}
	return b
}

func comm(s string) (c [32]byte) {
	copy(c[:], s)
	return c
}

func TestDecodeMessageFixtures(t *testing.T) {
	for _, tc := range []struct {
		file string
		want []taskstats.Record
	}{{
		file: "v16-single.genl",
		want: []taskstats.Record{{
			Kind: taskstats.KindPID, Version: 16, PID: 10376, TGID: 10376, PPID: 10375,
			Comm: comm("true"), Flags: taskstats.FlagGroupDead,
			BeginTime: 1796147360, Elapsed: 665 * time.Microsecond, ProcessElapsed: 665 * time.Microsecond,
			PeakRSS: 988 << 10, InvoluntarySwitches: 1,
			CPUDelayCount: 2, CPUDelay: 22713,
		}},
	}, {
		file: "v16-thread.genl",
		want: []taskstats.Record{{
			Kind: taskstats.KindPID, Version: 16, PID: 10380, TGID: 10378, PPID: 10377,
			Comm: comm("mt"), BeginTime: 1796147360,
			Elapsed: 116385 * time.Microsecond, ProcessElapsed: 117236 * time.Microsecond,
			UserCPU: 100 * time.Millisecond, PeakRSS: 1452 << 10, InvoluntarySwitches: 56,
			CPUDelayCount: 57, CPUDelay: 16269089,
		}},
	}, {
		file: "v16-group.genl",
		want: []taskstats.Record{{
			Kind: taskstats.KindPID, WithGroup: true, Version: 16, PID: 10378, TGID: 10378, PPID: 10377,
			Comm: comm("mt"), ExitStatus: 768, Flags: taskstats.FlagGroupDead, BeginTime: 1796147360,
			Elapsed: 178721 * time.Microsecond, ProcessElapsed: 178721 * time.Microsecond,
			UserCPU: 52 * time.Millisecond, SystemCPU: 8 * time.Millisecond, PeakRSS: 1452 << 10,
			VoluntarySwitches: 2, InvoluntarySwitches: 35, CPUDelayCount: 38, CPUDelay: 72644261,
		}, {
			Kind: taskstats.KindTGID, Version: 16, TGID: 10378,
			Elapsed: 648444 * time.Microsecond, UserCPU: 348 * time.Millisecond, SystemCPU: 8 * time.Millisecond,
			VoluntarySwitches: 2, InvoluntarySwitches: 171, CPUDelayCount: 177, CPUDelay: 242116983,
		}},
	}} {
		t.Run(tc.file, func(t *testing.T) {
			got, err := taskstats.DecodeMessage(readFixture(t, tc.file), nil)
			if err != nil {
				t.Fatal(err)
			}
			// Fields not listed in the table vary with the machine; check
			// the ones that identify and measure the task.
			ignore := func(r *taskstats.Record) {
				r.MinorFaults, r.MajorFaults, r.PeakVM = 0, 0, 0
				r.ReadChars, r.WriteChars, r.ReadSyscalls, r.WriteSyscalls = 0, 0, 0, 0
				r.UserCPUScaled, r.SystemCPUScaled, r.CPURunReal, r.CPURunVirtual = 0, 0, 0, 0
				r.ExeDev, r.ExeInode, r.IRQDelay, r.Sched, r.Nice = 0, 0, 0, 0, 0
			}
			for i := range got {
				if got[i].Kind == taskstats.KindPID && (got[i].MinorFaults == 0 || got[i].ExeInode == 0) {
					t.Errorf("record %d: minor faults %d, exe inode %d: want both set", i, got[i].MinorFaults, got[i].ExeInode)
				}
				ignore(&got[i])
			}
			if d := cmp.Diff(tc.want, got); d != "" {
				t.Errorf("DecodeMessage (-want +got):\n%s", d)
			}
		})
	}
}

// TestRoundTrip checks Decode against the independent encoder of
// taskstatstest.
func TestRoundTrip(t *testing.T) {
	task := taskstats.Record{
		Kind: taskstats.KindPID, Version: 16, PID: 42, TGID: 40, PPID: 1, UID: 1000, GID: 100,
		Comm: comm("worker"), ExitStatus: 9, Flags: taskstats.FlagSignaled | taskstats.FlagGroupDead,
		Nice: -5, Sched: 1, BeginTime: 1 << 33, Elapsed: 3 * time.Second, ProcessElapsed: 4 * time.Second,
		UserCPU: 1500 * time.Millisecond, SystemCPU: 200 * time.Millisecond,
		UserCPUScaled: time.Second, SystemCPUScaled: time.Millisecond,
		MinorFaults: 10, MajorFaults: 2, PeakRSS: 100 << 20, PeakVM: 1 << 30,
		ReadChars: 1 << 20, WriteChars: 2 << 20, ReadSyscalls: 1024, WriteSyscalls: 2048,
		ReadBytes: 4096, WriteBytes: 10 << 20, CancelledWriteBytes: 1024,
		VoluntarySwitches: 7, InvoluntarySwitches: 8,
		CPUDelay: 11, CPUDelayCount: 12, CPURunReal: 13, CPURunVirtual: 14,
		BlkioDelay: 15, BlkioDelayCount: 16, SwapinDelay: 17, SwapinDelayCount: 18,
		FreepagesDelay: 19, ThrashingDelay: 20, CompactDelay: 21, WPCopyDelay: 22, IRQDelay: 23,
		ExeDev: 0x801, ExeInode: 1234,
	}
	group := taskstats.Record{Kind: taskstats.KindTGID, Version: 16, TGID: 40, UserCPU: 3 * time.Second, CPUDelay: 99}
	got, err := taskstats.DecodeMessage(taskstatstest.EncodeMessage(&task, &group), nil)
	if err != nil {
		t.Fatal(err)
	}
	wantTask := task
	wantTask.WithGroup = true
	if d := cmp.Diff([]taskstats.Record{wantTask, group}, got); d != "" {
		t.Errorf("round trip (-want +got):\n%s", d)
	}
}

// stats returns a version-v struct of size n with the version field set
// and a recognisable ac_utime (1,000 µs) at the offset of version 15 or the
// others.
func stats(v uint16, n int) []byte {
	b := make([]byte, n)
	binary.NativeEndian.PutUint16(b, v)
	off := 152
	if v == 15 {
		off = 200
	}
	if off+8 <= n {
		binary.NativeEndian.PutUint64(b[off:], 1000)
	}
	return b
}

func TestDecodeVersions(t *testing.T) {
	for _, tc := range []struct {
		name    string
		b       []byte
		err     error
		utime   time.Duration
		hasTGID bool
	}{
		{"empty", nil, taskstats.ErrTruncated, 0, false},
		{"one byte", []byte{16}, taskstats.ErrTruncated, 0, false},
		{"v0 delays only", stats(0, 80), nil, 0, false},
		{"v0 short", stats(0, 79), taskstats.ErrTruncated, 0, false},
		{"v7 foreign", stats(7, 560), taskstats.ErrForeign, 0, false},
		{"v8", stats(8, 328), nil, time.Millisecond, false},
		{"v8 short", stats(8, 327), taskstats.ErrTruncated, 0, false},
		{"v11", stats(11, 368), nil, time.Millisecond, false},
		{"v12", stats(12, 400), nil, time.Millisecond, true},
		{"v14", stats(14, 432), nil, time.Millisecond, true},
		{"v15 layout", stats(15, 560), nil, time.Millisecond, true},
		{"v16", stats(16, 560), nil, time.Millisecond, true},
		{"v16 short", stats(16, 559), taskstats.ErrTruncated, 0, false},
		{"v17 longer", stats(17, 592), nil, time.Millisecond, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var r taskstats.Record
			err := taskstats.Decode(tc.b, &r)
			if !errors.Is(err, tc.err) || (err == nil) != (tc.err == nil) {
				t.Fatalf("Decode: %v, want %v", err, tc.err)
			}
			var de *taskstats.DecodeError
			if err != nil && !errors.As(err, &de) {
				t.Fatalf("error %T is not a *DecodeError", err)
			}
			if r.UserCPU != tc.utime {
				t.Errorf("UserCPU %v, want %v", r.UserCPU, tc.utime)
			}
		})
	}
}

// TestDecodeV15 checks the version-15 layout, with delay max/min pairs in
// the middle, on every field the two layouts place differently.
func TestDecodeV15(t *testing.T) {
	b := make([]byte, 560)
	ne := binary.NativeEndian
	ne.PutUint16(b, 15)
	for off, v := range map[int]uint64{
		24: 1, 56: 2, 88: 3, 176: 77, 192: 5, 200: 6, 208: 7, 248: 8, 304: 9, 320: 10, 328: 11,
		368: 12, 400: 13, 424: 1700000000, 440: 14, 464: 4242, 472: 15, 504: 16, 536: 17,
	} {
		if off == 176 || off == 464 {
			ne.PutUint32(b[off:], uint32(v))
			continue
		}
		ne.PutUint64(b[off:], v)
	}
	copy(b[128:], "v15")
	var r taskstats.Record
	if err := taskstats.Decode(b, &r); err != nil {
		t.Fatal(err)
	}
	want := taskstats.Record{
		Version: 15, CPUDelay: 1, BlkioDelay: 2, SwapinDelay: 3, Comm: comm("v15"), PID: 0, PPID: 0,
		Elapsed: 5 * time.Microsecond, UserCPU: 6 * time.Microsecond, SystemCPU: 7 * time.Microsecond,
		PeakRSS: 8 << 10, WriteBytes: 9, VoluntarySwitches: 10, InvoluntarySwitches: 11,
		FreepagesDelay: 12, ThrashingDelay: 13, BeginTime: 1700000000, CompactDelay: 14,
		TGID: 4242, ProcessElapsed: 15 * time.Microsecond, WPCopyDelay: 16, IRQDelay: 17,
	}
	// ac_pid is at 176 in version 15; Decode leaves PID to the message.
	if d := cmp.Diff(want, r); d != "" {
		t.Errorf("Decode v15 (-want +got):\n%s", d)
	}
}

func TestDecodeMessageErrors(t *testing.T) {
	good := taskstatstest.EncodeMessage(&taskstats.Record{PID: 5, TGID: 5}, nil)
	ne := binary.NativeEndian
	mod := func(f func(b []byte) []byte) []byte { return f(append([]byte(nil), good...)) }
	for _, tc := range []struct {
		name string
		b    []byte
		err  error
	}{
		{"empty", nil, taskstats.ErrTruncated},
		{"get command", mod(func(b []byte) []byte { b[0] = taskstats.CmdGet; return b }), taskstats.ErrForeign},
		{"no attributes", good[:4], taskstats.ErrMalformed},
		{"truncated attribute header", good[:6], taskstats.ErrMalformed},
		{"attribute past the end", good[:100], taskstats.ErrMalformed},
		{"stats truncated", mod(func(b []byte) []byte {
			// Shrink the nest and its stats by 8 bytes.
			ne.PutUint16(b[4:], ne.Uint16(b[4:])-8)
			ne.PutUint16(b[16:], ne.Uint16(b[16:])-8)
			return b[:len(b)-8]
		}), taskstats.ErrTruncated},
		{"id of 2 bytes", mod(func(b []byte) []byte { ne.PutUint16(b[8:], 6); return b }), taskstats.ErrMalformed},
		{"unknown nested attribute", mod(func(b []byte) []byte { ne.PutUint16(b[10:], 9); return b }), taskstats.ErrMalformed},
		{"two ids", append(append([]byte(nil), good[:4]...), nestOf(4, attrOf(1, 4), attrOf(1, 4), attrOf(3, 560))...), taskstats.ErrMalformed},
		{"no stats", append(append([]byte(nil), good[:4]...), nestOf(4, attrOf(1, 4))...), taskstats.ErrMalformed},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dst := make([]taskstats.Record, 1, 4)
			got, err := taskstats.DecodeMessage(tc.b, dst)
			if !errors.Is(err, tc.err) {
				t.Fatalf("DecodeMessage: %v, want %v", err, tc.err)
			}
			if len(got) != 1 {
				t.Errorf("dst grew to %d records on error", len(got))
			}
		})
	}
	// Unknown top-level attributes and NULL padding are skipped.
	b := append(append([]byte(nil), good[:4]...), attrOf(9, 8)...)
	b = append(b, good[4:]...)
	if got, err := taskstats.DecodeMessage(b, nil); err != nil || len(got) != 1 || got[0].PID != 5 {
		t.Errorf("with an unknown attribute: %v, %+v", err, got)
	}
}

// attrOf returns an attribute of type typ with n zero bytes of payload,
// except that a stats payload gets version 16.
func attrOf(typ uint16, n int) []byte {
	b := make([]byte, 4+n, 4+n+3)
	binary.NativeEndian.PutUint16(b[0:], uint16(4+n))
	binary.NativeEndian.PutUint16(b[2:], typ)
	if typ == 3 && n >= 2 {
		binary.NativeEndian.PutUint16(b[4:], 16)
	}
	for len(b)%4 != 0 {
		b = append(b, 0)
	}
	return b
}

func nestOf(typ uint16, attrs ...[]byte) []byte {
	var inner []byte
	for _, a := range attrs {
		inner = append(inner, a...)
	}
	b := make([]byte, 4, 4+len(inner))
	binary.NativeEndian.PutUint16(b[0:], uint16(4+len(inner)))
	binary.NativeEndian.PutUint16(b[2:], typ)
	return append(b, inner...)
}

func TestDecodeAllocs(t *testing.T) {
	msg := readFixture(t, "v16-group.genl")
	dst := make([]taskstats.Record, 0, 2)
	if n := testing.AllocsPerRun(100, func() {
		_, _ = taskstats.DecodeMessage(msg, dst[:0])
	}); n != 0 {
		t.Errorf("DecodeMessage allocates %v times", n)
	}
}
