package tracker

import "time"

// Fork applies the kernel's report that process parentTGID forked a new
// process child (not a thread: the caller drops thread forks). If the parent
// is a member, the child joins with the parent's name and command line (a
// fork runs the parent's image until it calls exec) and Fork returns it, so
// that the caller can fill in what it reads; otherwise it returns nil.
//
// approx marks a start time derived from the event's timestamp because
// /proc no longer showed the child.
func (t *Tracker) Fork(parentTGID int, child Identity, approx bool, at time.Time) *Proc {
	if child.PID == parentTGID || child.PID <= 0 {
		return nil
	}
	if old, ok := t.members[child.PID]; ok {
		if old.ID == child || (approx || old.Approx) && old.matchesTicks(child.StartTicks) {
			return nil // a scan found it first
		}
		// The PID was reused, so its old holder exited unseen.
		t.remove(old, Exit{Time: at})
		t.pending.Repairs++
	}
	parent, ok := t.members[parentTGID]
	if !ok {
		return nil
	}
	if !t.canAdd(parent.Depth + 1) {
		return nil
	}
	p := &Proc{
		ID:               child,
		PPID:             parentTGID,
		Depth:            parent.Depth + 1,
		Name:             parent.Name,
		Cmdline:          parent.Cmdline,
		CmdlineTruncated: parent.CmdlineTruncated,
		State:            'R',
		Approx:           approx,
		FirstSeen:        at,
	}
	t.add(p)
	return p
}

// Exit applies the end of process pid as a whole (its thread group), with
// the wait status the kernel reported. It reports whether pid was a member.
func (t *Tracker) Exit(pid int, status uint32, at time.Time) bool {
	p, ok := t.members[pid]
	if !ok {
		return false
	}
	t.remove(p, Exit{Status: status, Known: true, Time: at})
	return true
}

// LeaderExited records that the first thread of member pid exited while
// other threads of the process run on. The process stays a member until the
// caller calls Exit (or a scan shows it gone); PendingLeaders lists such
// members so that the caller can check them again.
func (t *Tracker) LeaderExited(pid int, status uint32, at time.Time) {
	if p, ok := t.members[pid]; ok && p.leaderExit == nil {
		p.leaderExit = &Exit{ID: p.ID, Status: status, Known: true, Time: at}
		t.leaders++
	}
}

// LeaderHasExited reports whether member pid's first thread has exited.
func (t *Tracker) LeaderHasExited(pid int) bool {
	p, ok := t.members[pid]
	return ok && p.leaderExit != nil
}

// Execed records that member pid replaced its program: the new image has a
// single thread, so a first-thread exit seen before the exec (the kernel
// ends the first thread when another one execs) is forgotten.
func (t *Tracker) Execed(pid int) {
	p, ok := t.members[pid]
	if !ok {
		return
	}
	if p.leaderExit != nil {
		p.leaderExit = nil
		t.leaders--
	}
	p.Threaded = false
}

// LeaderStatus returns the wait status the first thread of member pid left
// when it exited before the others, or 0.
func (t *Tracker) LeaderStatus(pid int) uint32 {
	if p, ok := t.members[pid]; ok && p.leaderExit != nil {
		return p.leaderExit.Status
	}
	return 0
}

// PendingLeaders appends the members whose first thread exited before the
// others to dst.
func (t *Tracker) PendingLeaders(dst []int) []int {
	if t.leaders == 0 {
		return dst
	}
	for pid, p := range t.members {
		if p.leaderExit != nil {
			dst = append(dst, pid)
		}
	}
	return dst
}
