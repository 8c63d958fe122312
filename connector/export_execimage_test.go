package connector

import (
	"sync/atomic"
	"unsafe"
)

// ExecSlots is the number of exec-image slots: TGIDs equal modulo it
// share one.
const ExecSlots = execSlots

// ExecSlotTGID returns the TGID in the exec-image slot of tgid (0 when
// the filter records none).
func (f *TreeFilter) ExecSlotTGID(tgid int) uint32 {
	f.execs.mu.RLock()
	defer f.execs.mu.RUnlock()
	p, ok := slotAt(f.execs.mem, tgid&(execSlots-1), execSlotSize)
	if !ok {
		return 0
	}
	return atomic.LoadUint32((*uint32)(unsafe.Add(p, execTGID)))
}
