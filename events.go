package watchman

import (
	"time"
)

// EventType names the kind of an Event.
type EventType string

// The event types.
const (
	// EventFork: a process joined the tree (forked by a member).
	EventFork EventType = "fork"
	// EventExec: a member replaced its program (its Name and Cmdline are
	// the new ones).
	EventExec EventType = "exec"
	// EventExit: a member ended; Event.Exit says how.
	EventExit EventType = "exit"
	// EventLost: events were lost before this point, because this
	// subscriber fell behind (Lost counts them) or because the kernel
	// dropped events (Overrun; Lost counts what the socket dropped, all
	// processes of the host included, or 0 if unknown). The tree itself
	// stays exact: the Watcher repairs it with a /proc scan, and the
	// repairs arrive as Synthetic events.
	EventLost EventType = "lost"
)

// Event is one change to the tree, delivered to subscribers as it happens.
type Event struct {
	Type EventType
	// Time is when it happened: the kernel's timestamp as wall time, or,
	// for a Synthetic event, when the scan noticed it.
	Time time.Time
	// KernelTime is the kernel's CLOCK_MONOTONIC timestamp of the event
	// (zero for Synthetic and lost events), for measuring delivery latency
	// against unix.ClockGettime(unix.CLOCK_MONOTONIC).
	KernelTime time.Duration
	// Process is the process the event is about.
	Process Identity
	// PPID is the parent: the forking process of a fork, the parent at exit
	// of an exit.
	PPID int
	// Name and Cmdline describe the process as of the event (Cmdline with
	// Config.CaptureCmdline). A forked child shows its parent's, until it
	// execs.
	Name    string
	Cmdline []string
	// NameFromUsage says Name comes from Exit.Usage.Command (see
	// ProcessInfo.NameFromUsage).
	NameFromUsage bool
	// Depth is the process's generation below the root.
	Depth int
	// Exit is set for EventExit.
	Exit *Exit
	// Synthetic says no kernel event reported this: a /proc scan found the
	// change (polling mode, or a repair in connector mode).
	Synthetic bool
	// Upgrade marks an EventExit that carries the kernel's exit status for
	// a process already reported by a Synthetic exit: a scan found it gone
	// before its exit event, which the kernel may send a moment after the
	// process is reaped, came in. Replace the earlier exit with it.
	Upgrade bool
	// Lost and Overrun describe an EventLost.
	Lost    uint64
	Overrun bool
}

// DefaultEventBuffer is the channel capacity of a Subscription asked with
// a buffer of zero.
const DefaultEventBuffer = 4096

// Subscription delivers a Watcher's events on a channel. The Watcher never
// blocks on it: when C is full, events are counted as lost and an EventLost
// with the count is delivered once there is room. C is closed by
// Subscription.Close and by Watcher.Close.
type Subscription struct {
	// C delivers the events in the order they happened.
	C <-chan Event

	ch          chan Event
	w           *Watcher
	closed      bool
	pendingLost uint64
	pendingOver bool
	lost        uint64
}

// Subscribe starts delivering the tree's events (fork, exec, exit, lost) on
// a new Subscription's channel of the given capacity (zero or less means
// DefaultEventBuffer). Events that happened before the call are not
// delivered; Poll has them. After Close, the channel is returned closed.
func (w *Watcher) Subscribe(buffer int) *Subscription {
	if buffer <= 0 {
		buffer = DefaultEventBuffer
	}
	ch := make(chan Event, buffer)
	s := &Subscription{C: ch, ch: ch, w: w}
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.closed {
		s.closed = true
		close(ch)
		return s
	}
	w.subs = append(w.subs, s)
	return s
}

// Lost returns how many events this subscriber has missed because C was
// full.
func (s *Subscription) Lost() uint64 {
	s.w.mu.Lock()
	defer s.w.mu.Unlock()
	return s.lost
}

// Close stops the deliveries and closes C. It is idempotent.
func (s *Subscription) Close() {
	s.w.mu.Lock()
	defer s.w.mu.Unlock()
	if s.closed {
		return
	}
	s.closed = true
	close(s.ch)
	for i, o := range s.w.subs {
		if o == s {
			s.w.subs = append(s.w.subs[:i], s.w.subs[i+1:]...)
			break
		}
	}
}

// lostRetry is how soon the Watcher retries delivering a pending EventLost
// marker to a subscriber whose channel was full, when no later event
// carries it.
const lostRetry = 20 * time.Millisecond

// deliver sends ev without blocking; the caller holds w.mu. A marker that
// becomes pending is retried by the Watcher's loop, so that it arrives even
// if no later event does.
func (s *Subscription) deliver(ev *Event) {
	if s.pendingLost > 0 || s.pendingOver {
		s.send(ev)
		return
	}
	s.send(ev)
	s.notePending()
}

// send does deliver's work.
func (s *Subscription) send(ev *Event) {
	if s.pendingLost > 0 || s.pendingOver {
		marker := Event{Type: EventLost, Time: ev.Time, Lost: s.pendingLost, Overrun: s.pendingOver}
		select {
		case s.ch <- marker:
			s.pendingLost, s.pendingOver = 0, false
		default:
			if ev.Type == EventLost {
				s.pendingOver = s.pendingOver || ev.Overrun
				s.pendingLost += ev.Lost
			} else {
				s.pendingLost++
				s.lost++
			}
			return
		}
	}
	select {
	case s.ch <- *ev:
	default:
		if ev.Type == EventLost {
			s.pendingOver = s.pendingOver || ev.Overrun
			s.pendingLost += ev.Lost
			return
		}
		s.pendingLost++
		s.lost++
	}
}

// notePending arms the retry of a marker that became pending, so that it
// arrives even if no later event does; the caller holds w.mu.
func (s *Subscription) notePending() {
	if s.pendingLost == 0 && !s.pendingOver {
		return
	}
	w := s.w
	if w.lostT == nil {
		w.lostT = time.AfterFunc(lostRetry, w.retryLost)
	} else {
		w.lostT.Reset(lostRetry)
	}
}

// retryLost is the retry timer's function.
func (w *Watcher) retryLost() {
	w.mu.Lock()
	defer w.mu.Unlock()
	if !w.closed && w.flushLost() {
		w.lostT.Reset(lostRetry)
	}
}

// flush delivers the pending EventLost marker if there is room now; the
// caller holds w.mu.
func (s *Subscription) flush(now time.Time) {
	if s.pendingLost == 0 && !s.pendingOver {
		return
	}
	select {
	case s.ch <- Event{Type: EventLost, Time: now, Lost: s.pendingLost, Overrun: s.pendingOver}:
		s.pendingLost, s.pendingOver = 0, false
	default:
	}
}

// flushLost retries the pending markers of every subscriber and reports
// whether some are still pending; the caller holds w.mu.
func (w *Watcher) flushLost() bool {
	pending := false
	now := time.Now()
	for _, s := range w.subs {
		s.flush(now)
		pending = pending || s.pendingLost > 0 || s.pendingOver
	}
	return pending
}

// emit delivers ev to every subscriber; the caller holds w.mu.
func (w *Watcher) emit(ev Event) {
	for _, s := range w.subs {
		s.deliver(&ev)
	}
}

// closeSubs closes every subscription; the caller holds w.mu. One that
// missed events gets a last EventLost saying how many: if its channel is
// full, the oldest event it holds makes room (and counts as lost).
func (w *Watcher) closeSubs() {
	w.flushHeldLocked() // a batch's events are delivered before the end
	now := time.Now()
	for _, s := range w.subs {
		if s.closed {
			continue
		}
		if s.pendingLost > 0 || s.pendingOver {
			select {
			case <-s.ch:
				s.pendingLost++
				s.lost++
			default:
			}
			s.flush(now)
		}
		s.closed = true
		close(s.ch)
	}
	w.subs = nil
}
