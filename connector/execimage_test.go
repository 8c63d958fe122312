package connector

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"unsafe"
)

// newExecSlots returns zeroed exec-image slot memory.
func newExecSlots() []byte { return alignedSlots(execSlots, execSlotSize) }

// execRecord is a slot's contents as the program writes them.
type execRecord struct {
	seq, tgid, state uint32
	ts, fullLen      uint64
	comm             string
	args             []byte // at most ExecImageArgsMax bytes
}

// putExecSlot writes r into the slot of r.tgid with atomic stores, so
// that it may run beside a reader; seq is stored as given, last.
func putExecSlot(mem []byte, r execRecord) {
	p := unsafe.Pointer(&mem[int(r.tgid&(execSlots-1))*execSlotSize])
	at := func(off int) unsafe.Pointer { return unsafe.Add(p, off) }
	atomic.StoreUint32((*uint32)(at(execTGID)), r.tgid)
	atomic.StoreUint64((*uint64)(at(execTS)), r.ts)
	atomic.StoreUint64((*uint64)(at(execFullLen)), r.fullLen)
	atomic.StoreUint32((*uint32)(at(execState)), r.state)
	var comm [execCommLen]byte
	copy(comm[:], r.comm)
	for i := 0; i < execCommLen; i += 8 {
		atomic.StoreUint64((*uint64)(at(execComm+i)), binary.NativeEndian.Uint64(comm[i:]))
	}
	var word [8]byte
	for i := 0; i < len(r.args); i += 8 {
		clear(word[:])
		copy(word[:], r.args[i:])
		atomic.StoreUint64((*uint64)(at(execArgs+i)), binary.NativeEndian.Uint64(word[:]))
	}
	atomic.StoreUint32((*uint32)(p), r.seq)
}

func TestReadExecSlot(t *testing.T) {
	const tgid, ts = 4242, 1_000_000_007
	long := bytes.Repeat([]byte("0123456789abcde\x00"), 600) // 9,600 bytes
	hit := execRecord{seq: 2, tgid: tgid, state: execComplete, ts: ts, fullLen: 8, comm: "sh", args: []byte("sh\x00-c\x00x\x00")[:8]}
	with := func(edit func(*execRecord)) execRecord {
		r := hit
		edit(&r)
		return r
	}
	for _, tc := range []struct {
		name      string
		rec       execRecord
		tgid      uint32
		ts        uint64
		wantComm  string
		wantArgs  []byte
		wantFull  int
		wantOK    bool
		changeSeq bool // a writer passes between the reads
	}{
		{name: "empty", tgid: tgid, ts: 0},
		{name: "hit", rec: hit, tgid: tgid, ts: ts, wantComm: "sh", wantArgs: hit.args, wantFull: 8, wantOK: true},
		{name: "hit after the seq wrapped", rec: with(func(r *execRecord) { r.seq = 0 }), tgid: tgid, ts: ts,
			wantComm: "sh", wantArgs: hit.args, wantFull: 8, wantOK: true},
		{name: "empty command line", rec: with(func(r *execRecord) { r.fullLen, r.args = 0, nil }), tgid: tgid, ts: ts,
			wantComm: "sh", wantArgs: []byte{}, wantFull: 0, wantOK: true},
		{name: "comm of 16 bytes", rec: with(func(r *execRecord) { r.comm = "0123456789abcdef" }), tgid: tgid, ts: ts,
			wantComm: "0123456789abcdef", wantArgs: hit.args, wantFull: 8, wantOK: true},
		{name: "truncated", rec: with(func(r *execRecord) { r.fullLen, r.args = uint64(len(long)), long[:ExecImageArgsMax] }),
			tgid: tgid, ts: ts, wantComm: "sh", wantArgs: long[:ExecImageArgsMax], wantFull: len(long), wantOK: true},
		{name: "odd seq: being written", rec: with(func(r *execRecord) { r.seq = 3 }), tgid: tgid, ts: ts},
		{name: "seq changed between the reads", rec: hit, tgid: tgid, ts: ts, changeSeq: true},
		{name: "wrong timestamp, later", rec: hit, tgid: tgid, ts: ts + 1},
		{name: "wrong timestamp, earlier", rec: hit, tgid: tgid, ts: ts - 1},
		{name: "another tgid in the slot", rec: with(func(r *execRecord) { r.tgid = tgid + execSlots }), tgid: tgid, ts: ts},
		{name: "the slot's other tgid", rec: with(func(r *execRecord) { r.tgid = tgid + execSlots }), tgid: tgid + execSlots, ts: ts,
			wantComm: "sh", wantArgs: hit.args, wantFull: 8, wantOK: true},
		{name: "could not read (state 0)", rec: with(func(r *execRecord) { r.state = 0 }), tgid: tgid, ts: ts},
		{name: "absurd length", rec: with(func(r *execRecord) { r.fullLen = 1 << 40 }), tgid: tgid, ts: ts},
	} {
		t.Run(tc.name, func(t *testing.T) {
			mem := newExecSlots()
			putExecSlot(mem, tc.rec)
			var between func()
			if tc.changeSeq {
				// A writer took the slot and released it with another
				// exec of the same process: what was read may be torn.
				between = func() {
					putExecSlot(mem, with(func(r *execRecord) { r.seq, r.ts, r.args = tc.rec.seq+2, ts+5, []byte("true\x00\x00\x00\x00") }))
				}
			}
			comm, args, full, ok := readExecSlotHook(mem, tc.tgid, tc.ts, nil, between)
			got := string(bytes.TrimRight(comm[:], "\x00"))
			if ok != tc.wantOK || got != tc.wantComm || !bytes.Equal(args, tc.wantArgs) || full != tc.wantFull {
				t.Errorf("read = %q, %q, %d, %v; want %q, %q, %d, %v", got, args, full, ok, tc.wantComm, tc.wantArgs, tc.wantFull, tc.wantOK)
			}
			if !ok && args != nil {
				t.Errorf("a miss returned args %q", args)
			}
		})
	}
	if _, _, _, ok := readExecSlotHook(nil, tgid, ts, nil, nil); ok {
		t.Error("a hit in no memory")
	}
	mem := newExecSlots()
	putExecSlot(mem, with(func(r *execRecord) { r.tgid = execSlots - 1 }))
	if _, _, _, ok := readExecSlotHook(mem[:len(mem)-1], execSlots-1, ts, nil, nil); ok {
		t.Error("a hit beyond the memory")
	}
}

// TestExecImageBuffer: the command line goes into the caller's buffer
// when it is large enough, and ExecImage trims comm at its NUL.
func TestExecImageBuffer(t *testing.T) {
	f := &TreeFilter{}
	f.execs.mem = newExecSlots()
	args := []byte("/bin/true\x00x\x00")
	putExecSlot(f.execs.mem, execRecord{seq: 4, tgid: 77, state: execComplete, ts: 9, fullLen: uint64(len(args)), comm: "true", args: args})
	buf := make([]byte, 3, 64)
	comm, got, full, ok := f.ExecImage(77, 9, buf)
	if !ok || comm != "true" || !bytes.Equal(got, args) || full != len(args) {
		t.Fatalf("ExecImage = %q, %q, %d, %v", comm, got, full, ok)
	}
	if &got[0] != &buf[:1][0] {
		t.Error("the command line was not put in buf")
	}
	small := make([]byte, 0, 2)
	if _, got, _, _ := f.ExecImage(77, 9, small); !bytes.Equal(got, args) {
		t.Errorf("with a small buffer: %q", got)
	}
	if allocs := testing.AllocsPerRun(100, func() { f.ExecImage(77, 9, buf) }); allocs > 1 {
		t.Errorf("%.0f allocations a lookup with a large buffer; want at most comm's", allocs)
	}
}

// TestReadExecSlotConcurrentWriter runs the program's write protocol in
// a goroutine on one slot, alternating records of two processes (new
// timestamps each time) whose bytes all derive from their TGID and
// timestamp; the reader must never return a mixture. After each write
// the writer waits until the reader has begun two reads: the first then
// reads that record whole (it must hit), the second runs beside the next
// write.
func TestReadExecSlotConcurrentWriter(t *testing.T) {
	const a, b = 100, 100 + execSlots
	const reads = 20_000
	tgidOf := func(ts uint64) uint32 { return [2]uint32{a, b}[ts%2] }
	record := func(tgid uint32, ts uint64) execRecord {
		n := int(ts%3000) + 1
		args := bytes.Repeat([]byte{byte(tgid) ^ byte(ts)}, n)
		return execRecord{tgid: tgid, ts: ts, state: execComplete, fullLen: uint64(n), comm: fmt.Sprintf("c%d-%d", tgid, ts%1000), args: args}
	}
	mem := newExecSlots()
	seq := (*uint32)(unsafe.Pointer(&mem[(a&(execSlots-1))*execSlotSize]))
	var stop atomic.Bool
	var wg sync.WaitGroup
	var written, begun atomic.Uint64 // the latest timestamp written; reads begun
	wg.Go(func() {
		for i := uint64(1); !stop.Load(); i++ {
			s := atomic.LoadUint32(seq)
			if !atomic.CompareAndSwapUint32(seq, s, s+1) {
				t.Error("the only writer lost the slot")
				return
			}
			r := record(tgidOf(i), i)
			r.seq = s + 1 // stored last by putExecSlot: still odd
			putExecSlot(mem, r)
			atomic.AddUint32(seq, 1)
			written.Store(i)
			for target := begun.Load() + 2; begun.Load() < target && !stop.Load(); {
				runtime.Gosched()
			}
		}
	})
	hits, misses := 0, 0
	buf := make([]byte, 0, ExecImageArgsMax)
	for range reads {
		begun.Add(1)
		ts := written.Load()
		if ts == 0 {
			continue
		}
		comm, args, full, ok := readExecSlotHook(mem, tgidOf(ts), ts, buf, nil)
		if !ok {
			misses++
			continue
		}
		hits++
		want := record(tgidOf(ts), ts)
		if string(bytes.TrimRight(comm[:], "\x00")) != want.comm || !bytes.Equal(args, want.args) || full != int(want.fullLen) {
			t.Fatalf("(%d, %d) read as %q, %d bytes of %d, full %d: a mixture", tgidOf(ts), ts, comm, len(args), want.fullLen, full)
		}
		// The other process's record of the time before is gone.
		if _, _, _, ok := readExecSlotHook(mem, tgidOf(ts-1), ts-1, buf, nil); ok && ts > 1 {
			t.Fatalf("(%d, %d) read after (%d, %d) was written", tgidOf(ts-1), ts-1, tgidOf(ts), ts)
		}
	}
	stop.Store(true)
	wg.Wait()
	t.Logf("%d hits and %d misses (the slot rewritten during the read) in %d reads beside a writer", hits, misses, reads)
	if hits < int(written.Load())-1 {
		t.Errorf("%d hits for %d records, each read whole once", hits, written.Load())
	}
}

func TestExecImageWithoutRecorder(t *testing.T) {
	f := &TreeFilter{}
	f.execs.reason = "no kernel BTF"
	if _, _, _, ok := f.ExecImage(1, 1, nil); ok {
		t.Error("ExecImage hit without slots")
	}
	if ok, why := f.ExecImages(); ok || why != "no kernel BTF" {
		t.Errorf("ExecImages = %v, %q", ok, why)
	}
	f.execs.mem = newExecSlots()
	putExecSlot(f.execs.mem, execRecord{seq: 2, tgid: 7, state: execComplete, ts: 5, fullLen: 2, comm: "x", args: []byte("x\x00")})
	for _, tgid := range []int{0, -7, 1 << 40, 7 - execSlots} {
		if _, _, _, ok := f.ExecImage(tgid, 5, nil); ok {
			t.Errorf("ExecImage(%d) hit", tgid)
		}
	}
	if comm, args, _, ok := f.ExecImage(7, 5, nil); !ok || comm != "x" || string(args) != "x\x00" {
		t.Errorf("ExecImage(7) = %q, %q, %v", comm, args, ok)
	}
	if ok, _ := f.ExecImages(); !ok {
		t.Error("ExecImages false with slots")
	}
	f.execs.forget("tree filter closed")
	if _, _, _, ok := f.ExecImage(7, 5, nil); ok {
		t.Error("ExecImage hit after forget")
	}
	if ok, why := f.ExecImages(); ok || why != "tree filter closed" {
		t.Errorf("ExecImages after forget = %v, %q", ok, why)
	}
}

// BenchmarkExecImage looks up a 300-byte command line into a reused
// buffer.
func BenchmarkExecImage(b *testing.B) {
	f := &TreeFilter{}
	f.execs.mem = newExecSlots()
	args := bytes.Repeat([]byte("argument\x00"), 34)[:300]
	putExecSlot(f.execs.mem, execRecord{seq: 2, tgid: 1234, state: execComplete, ts: 42, fullLen: 300, comm: "sh", args: args})
	buf := make([]byte, 0, ExecImageArgsMax)
	b.ReportAllocs()
	for b.Loop() {
		if _, _, _, ok := f.ExecImage(1234, 42, buf); !ok {
			b.Fatal("miss")
		}
	}
}
