package connector

import (
	"encoding/binary"
	"sync"
	"sync/atomic"
	"testing"
	"unsafe"
)

// newSlots returns zeroed start-time slot memory.
func newSlots() []byte { return alignedSlots(startSlots, startSlotSize) }

// alignedSlots returns zeroed memory for n slots of size bytes, 8-byte
// aligned as the mapping is.
func alignedSlots(n, size int) []byte {
	words := make([]uint64, n*size/8)
	return unsafe.Slice((*byte)(unsafe.Pointer(&words[0])), len(words)*8)
}

func putSlot(mem []byte, slot int, seq, pid uint32, start uint64) {
	b := mem[slot*startSlotSize:]
	binary.NativeEndian.PutUint32(b[slotSeq:], seq)
	binary.NativeEndian.PutUint32(b[slotPID:], pid)
	binary.NativeEndian.PutUint64(b[slotStart:], start)
}

func TestReadStartSlot(t *testing.T) {
	const pid = 4242
	slot := pid & (startSlots - 1)
	for _, tc := range []struct {
		name      string
		seq, pid  uint32
		start     uint64
		lookup    uint32
		want      uint64
		wantOK    bool
		changeSeq bool // a writer passes between the reads
	}{
		{name: "empty", lookup: pid},
		{name: "hit", seq: 2, pid: pid, start: 123_456_789, lookup: pid, want: 123_456_789, wantOK: true},
		{name: "hit after the seq wrapped", seq: 0, pid: pid, start: 5, lookup: pid, want: 5, wantOK: true},
		{name: "odd seq: being written", seq: 3, pid: pid, start: 123_456_789, lookup: pid},
		{name: "seq changed between the reads", seq: 4, pid: pid, start: 123_456_789, lookup: pid, changeSeq: true},
		{name: "another pid in the slot", seq: 2, pid: pid + startSlots, start: 123_456_789, lookup: pid},
		{name: "the slot's other pid", seq: 2, pid: pid + startSlots, start: 77, lookup: pid + startSlots, want: 77, wantOK: true},
		{name: "child not found (start 0)", seq: 2, pid: pid, start: 0, lookup: pid},
	} {
		t.Run(tc.name, func(t *testing.T) {
			mem := newSlots()
			putSlot(mem, slot, tc.seq, tc.pid, tc.start)
			var between func()
			if tc.changeSeq {
				// A writer took the slot and released it with the same
				// pid and a new start: the pair read may be torn.
				between = func() { putSlot(mem, slot, tc.seq+2, tc.pid, tc.start+1) }
			}
			got, ok := readStartSlotHook(mem, tc.lookup, between)
			if got != tc.want || ok != tc.wantOK {
				t.Errorf("read = %d, %v; want %d, %v", got, ok, tc.want, tc.wantOK)
			}
		})
	}
	if _, ok := readStartSlot(nil, pid); ok {
		t.Error("a hit in no memory")
	}
	if _, ok := readStartSlot(make([]byte, startSlotSize), 1); ok {
		t.Error("a hit beyond the memory")
	}
}

// TestReadStartSlotConcurrentWriter runs the program's write protocol in
// a goroutine on one slot, alternating two pids with their own start
// times; the reader must never pair a pid with the other's time.
func TestReadStartSlotConcurrentWriter(t *testing.T) {
	const a, b = 100, 100 + startSlots
	start := func(pid uint32) uint64 { return uint64(pid) * 1000 }
	mem := newSlots()
	p := unsafe.Pointer(&mem[(a&(startSlots-1))*startSlotSize])
	seq := (*uint32)(unsafe.Add(p, slotSeq))
	var stop atomic.Bool
	var wg sync.WaitGroup
	wg.Go(func() {
		for i := 0; !stop.Load(); i++ {
			pid := uint32(a)
			if i%2 == 1 {
				pid = b
			}
			if s := atomic.LoadUint32(seq); s&1 != 0 || !atomic.CompareAndSwapUint32(seq, s, s+1) {
				continue
			}
			atomic.StoreUint32((*uint32)(unsafe.Add(p, slotPID)), pid)
			atomic.StoreUint64((*uint64)(unsafe.Add(p, slotStart)), start(pid))
			atomic.AddUint32(seq, 1)
		}
	})
	hits := 0
	for range 200_000 {
		for _, pid := range []uint32{a, b} {
			if got, ok := readStartSlot(mem, pid); ok {
				hits++
				if got != start(pid) {
					t.Fatalf("pid %d read with start %d, want %d", pid, got, start(pid))
				}
			}
		}
	}
	stop.Store(true)
	wg.Wait()
	t.Logf("%d hits in 400,000 reads beside a writer", hits)
}

func TestForkStartWithoutRecorder(t *testing.T) {
	f := &TreeFilter{}
	f.starts.reason = "no kernel BTF"
	if _, ok := f.ForkStart(1); ok {
		t.Error("ForkStart hit without slots")
	}
	if ok, why := f.ForkStarts(); ok || why != "no kernel BTF" {
		t.Errorf("ForkStarts = %v, %q", ok, why)
	}
	f.starts.mem = newSlots()
	putSlot(f.starts.mem, 7, 2, 7, 99)
	big := int64(1) << 40
	for _, pid := range []int{0, -7, int(big)} {
		if _, ok := f.ForkStart(pid); ok {
			t.Errorf("ForkStart(%d) hit", pid)
		}
	}
	if got, ok := f.ForkStart(7); !ok || got != 99 {
		t.Errorf("ForkStart(7) = %d, %v", got, ok)
	}
	if ok, _ := f.ForkStarts(); !ok {
		t.Error("ForkStarts false with slots")
	}
}

func BenchmarkForkStart(b *testing.B) {
	f := &TreeFilter{}
	f.starts.mem = newSlots()
	for pid := range 1024 {
		putSlot(f.starts.mem, pid, 2, uint32(pid), uint64(pid)+1)
	}
	b.ReportAllocs()
	pid := 0
	for b.Loop() {
		if _, ok := f.ForkStart(pid&1023 + 1); !ok && pid&1023 != 1023 {
			b.Fatal("miss")
		}
		pid++
	}
}
