package connector

import (
	"encoding/binary"
	"encoding/hex"
	"errors"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

// fixture lays out a cn_msg and a proc_event field by field, following
// include/uapi/linux/connector.h and cn_proc.h: idx, val, seq, ack (u32),
// len, flags (u16), then what, cpu (u32), timestamp_ns (u64) and the union
// as u32 words. cnLen is cn_msg.len; the union is zero-padded to 24 bytes
// as the kernel's memset leaves it.
func fixture(idx, val, seq, ack uint32, cnLen uint16, what, cpu uint32, ts uint64, union ...uint32) []byte {
	ne := binary.NativeEndian
	var b []byte
	b = ne.AppendUint32(b, idx)
	b = ne.AppendUint32(b, val)
	b = ne.AppendUint32(b, seq)
	b = ne.AppendUint32(b, ack)
	b = ne.AppendUint16(b, cnLen)
	b = ne.AppendUint16(b, 0)
	b = ne.AppendUint32(b, what)
	b = ne.AppendUint32(b, cpu)
	b = ne.AppendUint64(b, ts)
	for i := range 6 {
		var w uint32
		if i < len(union) {
			w = union[i]
		}
		b = ne.AppendUint32(b, w)
	}
	return b
}

// proc is a well-formed kernel message: cn_msg.len 40.
func proc(seq uint32, what uint32, cpu uint32, ts uint64, union ...uint32) []byte {
	return fixture(1, 1, seq, 0, 40, what, cpu, ts, union...)
}

func le32(s string) uint32 { // four bytes of a string as a host-order word
	var b [4]byte
	copy(b[:], s)
	return binary.NativeEndian.Uint32(b[:])
}

func TestDecodeEvents(t *testing.T) {
	if !isLittleEndian() {
		t.Skip("the literal hex fixture is little-endian")
	}
	neg1 := uint32(0xffffffff)
	comm := Event{What: WhatComm, CPU: 1, Timestamp: 7, Seq: 3, PID: 501, TGID: 500}
	copy(comm.Comm[:], "worker-thread-1")

	tests := []struct {
		name string
		in   []byte
		want Event
	}{
		{
			name: "ack",
			in:   fixture(1, 1, 12, 43, 40, 0, 1, 99, 0),
			want: Event{What: WhatNone, CPU: 1, Timestamp: 99, Seq: 12, Ack: 43},
		},
		{
			name: "ack with error",
			in:   fixture(1, 1, 12, 43, 40, 0, 1, 99, 22),
			want: Event{What: WhatNone, CPU: 1, Timestamp: 99, Seq: 12, Ack: 43, Err: 22},
		},
		{
			name: "fork (literal bytes)",
			// idx 1, val 1, seq 5, ack 0, len 40, flags 0,
			// what 1, cpu 1, ts 0x0102030405060708,
			// parent 100/100, child 101/101, 8 zero bytes.
			in: mustHex("01000000" + "01000000" + "05000000" + "00000000" + "2800" + "0000" +
				"01000000" + "01000000" + "0807060504030201" +
				"64000000" + "64000000" + "65000000" + "65000000" + "0000000000000000"),
			want: Event{What: WhatFork, CPU: 1, Timestamp: 0x0102030405060708, Seq: 5,
				ParentPID: 100, ParentTGID: 100, PID: 101, TGID: 101},
		},
		{
			name: "fork of a thread",
			in:   proc(6, 1, 0, 10, 100, 100, 102, 100),
			want: Event{What: WhatFork, Timestamp: 10, Seq: 6, ParentPID: 100, ParentTGID: 100, PID: 102, TGID: 100},
		},
		{
			name: "exec",
			in:   proc(7, 2, 1, 11, 101, 101),
			want: Event{What: WhatExec, CPU: 1, Timestamp: 11, Seq: 7, PID: 101, TGID: 101},
		},
		{
			name: "uid",
			in:   proc(8, 4, 0, 12, 101, 101, 1000, 0),
			want: Event{What: WhatUID, Timestamp: 12, Seq: 8, PID: 101, TGID: 101, RUID: 1000, EUID: 0},
		},
		{
			name: "gid",
			in:   proc(9, 0x40, 0, 13, 101, 101, 100, 1000),
			want: Event{What: WhatGID, Timestamp: 13, Seq: 9, PID: 101, TGID: 101, RGID: 100, EGID: 1000},
		},
		{
			name: "sid",
			in:   proc(10, 0x80, 0, 14, 101, 101),
			want: Event{What: WhatSID, Timestamp: 14, Seq: 10, PID: 101, TGID: 101},
		},
		{
			name: "ptrace attach",
			in:   proc(11, 0x100, 0, 15, 101, 101, 200, 199),
			want: Event{What: WhatPtrace, Timestamp: 15, Seq: 11, PID: 101, TGID: 101, TracerPID: 200, TracerTGID: 199},
		},
		{
			name: "ptrace detach",
			in:   proc(12, 0x100, 0, 16, 101, 101, 0, 0),
			want: Event{What: WhatPtrace, Timestamp: 16, Seq: 12, PID: 101, TGID: 101},
		},
		{
			name: "comm",
			in:   proc(3, 0x200, 1, 7, 501, 500, le32("work"), le32("er-t"), le32("hrea"), le32("d-1")),
			want: comm,
		},
		{
			name: "coredump",
			in:   proc(13, 0x40000000, 0, 17, 101, 101, 100, 100),
			want: Event{What: WhatCoredump, Timestamp: 17, Seq: 13, PID: 101, TGID: 101, ParentPID: 100, ParentTGID: 100},
		},
		{
			name: "exit 3",
			in:   proc(14, 0x80000000, 1, 18, 101, 101, 0x300, 17, 100, 100),
			want: Event{What: WhatExit, CPU: 1, Timestamp: 18, Seq: 14, PID: 101, TGID: 101,
				ExitStatus: 0x300, ExitSignal: 17, ParentPID: 100, ParentTGID: 100},
		},
		{
			name: "exit of a thread",
			in:   proc(15, 0x80000000, 0, 19, 102, 100, 0, neg1, 100, 100),
			want: Event{What: WhatExit, Timestamp: 19, Seq: 15, PID: 102, TGID: 100,
				ExitSignal: -1, ParentPID: 100, ParentTGID: 100},
		},
		{
			name: "exit killed, parent gone",
			in:   proc(16, 0x80000000, 0, 20, 103, 103, 9, 17, 0, 0),
			want: Event{What: WhatExit, Timestamp: 20, Seq: 16, PID: 103, TGID: 103, ExitStatus: 9, ExitSignal: 17},
		},
		{
			name: "unknown type: header only",
			in:   proc(17, 0x400, 0, 21, 1, 2, 3, 4, 5, 6),
			want: Event{What: 0x400, Timestamp: 21, Seq: 17},
		},
		{
			name: "unknown type with a short union",
			in:   fixture(1, 1, 18, 0, 16, 0x800, 0, 22)[:36],
			want: Event{What: 0x800, Timestamp: 22, Seq: 18},
		},
		{
			name: "alignment padding after the data",
			in:   append(proc(19, 2, 0, 23, 7, 7), 0, 0, 0),
			want: Event{What: WhatExec, Timestamp: 23, Seq: 19, PID: 7, TGID: 7},
		},
		{
			name: "shorter cn_msg.len covering the member",
			in:   fixture(1, 1, 20, 0, 24, 2, 0, 24, 8, 8)[:44],
			want: Event{What: WhatExec, Timestamp: 24, Seq: 20, PID: 8, TGID: 8},
		},
		{
			name: "longer proc_event (future kernel)",
			in:   append(fixture(1, 1, 21, 0, 48, 2, 0, 25, 9, 9), make([]byte, 8)...),
			want: Event{What: WhatExec, Timestamp: 25, Seq: 21, PID: 9, TGID: 9},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			// Stale fields must be overwritten.
			got := Event{PID: -5, Comm: [16]byte{'x'}, ExitStatus: 1, Err: 3}
			if err := Decode(tt.in, &got); err != nil {
				t.Fatalf("Decode: %v", err)
			}
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("Decode mismatch (-want +got):\n%s", diff)
			}
		})
	}
}

func TestDecodeErrors(t *testing.T) {
	good := proc(1, 1, 0, 1, 1, 1, 2, 2)
	tests := []struct {
		name string
		in   []byte
		want error
	}{
		{"nil", nil, ErrTruncated},
		{"shorter than cn_msg", good[:19], ErrTruncated},
		{"cn_msg only", good[:20], ErrTruncated},
		{"wrong idx", fixture(2, 1, 0, 0, 40, 1, 0, 0), ErrForeign},
		{"wrong val", fixture(1, 2, 0, 0, 40, 1, 0, 0), ErrForeign},
		{"len beyond data", good[:59], ErrTruncated},
		{"len much beyond data", fixture(1, 1, 0, 0, 0xffff, 1, 0, 0), ErrTruncated},
		{"len shorter than proc_event header", fixture(1, 1, 0, 0, 12, 1, 0, 0)[:32], ErrTruncated},
		{"fork union too short", fixture(1, 1, 0, 0, 28, 1, 0, 0)[:48], ErrTruncated},
		{"exit union too short", fixture(1, 1, 0, 0, 36, 0x80000000, 0, 0)[:56], ErrTruncated},
		{"comm union too short", fixture(1, 1, 0, 0, 39, 0x200, 0, 0)[:59], ErrTruncated},
		{"ack without err", fixture(1, 1, 0, 0, 16, 0, 0, 0)[:36], ErrTruncated},
		{"trailing bytes beyond padding", append(append([]byte{}, good...), 0, 0, 0, 0), ErrMalformed},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ev := Event{PID: 42}
			err := Decode(tt.in, &ev)
			if !errors.Is(err, tt.want) {
				t.Fatalf("Decode error = %v, want %v", err, tt.want)
			}
			var de *DecodeError
			if !errors.As(err, &de) || de.Len != len(tt.in) || de.Detail == "" {
				t.Fatalf("Decode error %#v is not a complete *DecodeError", err)
			}
			if !strings.Contains(err.Error(), de.Detail) {
				t.Errorf("Error() = %q lacks the detail %q", err.Error(), de.Detail)
			}
			for _, other := range []error{ErrTruncated, ErrForeign, ErrMalformed} {
				if other != tt.want && errors.Is(err, other) {
					t.Errorf("error also matches %v", other)
				}
			}
			if ev != (Event{}) {
				t.Errorf("event after a failed Decode = %+v, want zero", ev)
			}
		})
	}
}

func TestExitCode(t *testing.T) {
	tests := []struct {
		status       uint32
		code, signal int
		core         bool
	}{
		{0, 0, 0, false},
		{256, 1, 0, false},
		{0x300, 3, 0, false},
		{0xff00, 255, 0, false},
		{9, -1, 9, false},
		{15, -1, 15, false},
		{0x86, -1, 6, true},  // SIGABRT with core dump
		{0x8b, -1, 11, true}, // SIGSEGV with core dump
	}
	for _, tt := range tests {
		ev := Event{What: WhatExit, ExitStatus: tt.status}
		code, sig := ev.ExitCode()
		if code != tt.code || sig != tt.signal || ev.CoreDumped() != tt.core {
			t.Errorf("status %#x: ExitCode() = (%d, %d), CoreDumped() = %v; want (%d, %d), %v",
				tt.status, code, sig, ev.CoreDumped(), tt.code, tt.signal, tt.core)
		}
	}
}

func TestWhatString(t *testing.T) {
	tests := []struct {
		w    What
		want string
	}{
		{WhatNone, "none"},
		{WhatFork, "fork"},
		{WhatExec, "exec"},
		{WhatUID, "uid"},
		{WhatGID, "gid"},
		{WhatSID, "sid"},
		{WhatPtrace, "ptrace"},
		{WhatComm, "comm"},
		{WhatNonzeroExit, "nonzero-exit"},
		{WhatCoredump, "coredump"},
		{WhatExit, "exit"},
		{WhatMark, "mark"},
		{WhatFork | WhatExec | WhatExit, "fork|exec|exit"},
		{0x400, "0x400"},
		{WhatExit | 0x400, "exit|0x400"},
	}
	for _, tt := range tests {
		if got := tt.w.String(); got != tt.want {
			t.Errorf("What(%#x).String() = %q, want %q", uint32(tt.w), got, tt.want)
		}
	}
}

func TestEventHelpers(t *testing.T) {
	ev := Event{PID: 5, TGID: 5}
	if ev.IsThread() {
		t.Error("leader reported as a thread")
	}
	ev.PID = 6
	if !ev.IsThread() {
		t.Error("thread not reported as a thread")
	}
	copy(ev.Comm[:], "sh")
	if got := ev.CommString(); got != "sh" {
		t.Errorf("CommString() = %q, want %q", got, "sh")
	}
	copy(ev.Comm[:], "0123456789abcdef")
	if got := ev.CommString(); got != "0123456789abcdef" {
		t.Errorf("CommString() of a full name = %q", got)
	}
}

func TestFilterMirrorsKernel(t *testing.T) {
	tests := []struct {
		mask What
		ev   Event
		want bool
	}{
		{WhatFork, Event{What: WhatFork}, true},
		{WhatFork, Event{What: WhatExec}, false},
		{WhatExit, Event{What: WhatExit}, true},
		{WhatNonzeroExit, Event{What: WhatExit}, false},
		{WhatNonzeroExit, Event{What: WhatExit, ExitStatus: 256}, true},
		{WhatNonzeroExit | WhatExit, Event{What: WhatExit}, true},
		{WhatAll, Event{What: 0x400}, false},
		{WhatAll, Event{What: WhatComm}, true},
	}
	for _, tt := range tests {
		if got := tt.mask.accepts(&tt.ev); got != tt.want {
			t.Errorf("mask %v accepts %v (status %d) = %v, want %v", tt.mask, tt.ev.What, tt.ev.ExitStatus, got, tt.want)
		}
	}
}

func TestDecodeDoesNotAllocate(t *testing.T) {
	in := proc(14, 0x80000000, 1, 18, 101, 101, 0x300, 17, 100, 100)
	var ev Event
	if n := testing.AllocsPerRun(100, func() { _ = Decode(in, &ev) }); n != 0 {
		t.Errorf("Decode allocates %v times per event", n)
	}
}

func mustHex(s string) []byte {
	b, err := hex.DecodeString(s)
	if err != nil {
		panic(err)
	}
	return b
}

func isLittleEndian() bool {
	var b [2]byte
	binary.NativeEndian.PutUint16(b[:], 1)
	return b[0] == 1
}
