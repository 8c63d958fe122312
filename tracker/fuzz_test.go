package tracker

import (
	"testing"
	"time"
)

// FuzzTracker feeds random sequences of every entry point (forks with and
// without parent observations, threads, execs, task exits, exit
// confirmations, immediate and deferred scans with their confirmations,
// overruns, Takes) and checks the invariants every consumer relies on: the
// live set follows from the deltas and from the change log, no identity is
// added twice, every member had a member parent when it joined.
func FuzzTracker(f *testing.F) {
	f.Add([]byte{0, 1, 2, 0, 2, 3, 1, 2, 3, 4, 0})
	f.Add([]byte{0, 0, 5, 0, 5, 6, 3, 9, 1, 5, 2, 6, 4, 7, 7})
	f.Add([]byte{0, 0, 1, 2, 6, 1, 0, 3, 1, 1, 7, 1, 5, 8, 1, 2, 9, 3, 4, 4})
	f.Add([]byte{0x40, 0, 1, 2, 10, 1, 0, 11, 1, 1, 3, 2, 9, 1, 2, 12, 0, 0, 4, 4, 4})
	f.Fuzz(func(t *testing.T, ops []byte) { fuzzOps(t, ops) })
}

// fuzzOps is FuzzTracker's body.
func fuzzOps(t testing.TB, ops []byte) {
	{
		cfg := Config{}
		if len(ops) > 0 {
			cfg.MaxDepth = int(ops[0] % 4)
			cfg.MaxMembers = int(ops[0]/4) % 6
			cfg.IncludeRoot = ops[0]&0x80 != 0
			cfg.Tombstones = int(ops[0] % 3)
		}
		root := Identity{PID: 1, StartTicks: 1}
		tr := New(root, cfg, t0)
		prev := map[Identity]bool{}
		logLive := map[Identity]bool{root: true}
		everAdded := map[Identity]bool{root: true}
		everPID := map[int]bool{root.PID: true}
		// The host as /proc shows it: time runs one way, so a process
		// that exited never shows again.
		host := map[int]Identity{root.PID: root}
		dead := map[Identity]bool{}
		// A scan read at one op and applied at a later one, as the hub
		// applies scans behind a barrier.
		var pending []Entry
		var pendingAt time.Time
		havePending := false
		at := t0
		tick := uint64(10)
		observe := func(pid int) Observation {
			id, ok := host[pid]
			if !ok {
				return Observation{PID: pid, Seen: SeenGone, At: at}
			}
			return Observation{PID: pid, Seen: SeenAlive, StartTicks: id.StartTicks, At: at, Comm: "c"}
		}
		kill := func(pid int) {
			if id, ok := host[pid]; ok && id != root {
				dead[id] = true
				delete(host, pid)
			}
		}
		for i := 0; i+2 < len(ops); i += 3 {
			at = at.Add(time.Millisecond)
			a, b := int(ops[i+1]%12)+1, int(ops[i+2]%12)+1
			switch ops[i] % 10 {
			case 0: // a process fork; b's old holder is gone
				if _, ok := host[a]; !ok || a == b || b == root.PID {
					break
				}
				kill(b)
				tick++
				child := Identity{PID: b, StartTicks: tick}
				host[b] = child
				var pobs *Observation
				if tr.NeedsParentCheck(a) {
					o := observe(a)
					pobs = &o
				}
				tr.Fork(a, child, false, at, 0, pobs)
			case 1: // a task exit: the whole process when tid == tgid
				tid := a
				if ops[i]&0x10 != 0 {
					tid = a + 100 // another thread
				} else {
					kill(a)
				}
				if tr.ExitTask(tid, a, 0, uint32(b), at, 0) {
					tr.ConfirmExits([]Observation{observe(a)}, at)
				}
			case 2:
				tr.Thread(a)
			case 3: // an exec: with the kernel's image when it may apply
				if ops[i]&0x10 != 0 && tr.ExecImage(a, "img", []string{"img"}, false, true, at, 0) {
					break
				}
				o := observe(a)
				tr.Exec(a, &o, at, 0)
			case 4: // an immediate scan of the host
				tr.ApplyScan(fuzzHost(host, ops[i+1:]), at, ScanOptions{Repair: true, Epoch: tr.Epoch()})
			case 5: // a scan read now, applied later
				pending, pendingAt, havePending = fuzzHost(host, ops[i+1:]), at, true
			case 6: // the late application, after the events since
				if !havePending {
					break
				}
				// What exited since the read must not come back: the
				// tracker's gone record is what protects it.
				tr.ApplyScan(pending, pendingAt, ScanOptions{Repair: true, Since: pendingAt})
				havePending = false
			case 7:
				tr.Overrun()
			case 8: // a confirmation of every pending exit
				var obs []Observation
				for _, id := range tr.PendingExits(nil) {
					obs = append(obs, observe(id.PID))
				}
				tr.ConfirmExits(obs, at)
			case 9:
				c := tr.Take()
				for _, id := range c.Added {
					prev[id] = true
				}
				for _, id := range c.Removed {
					delete(prev, id)
				}
				members := tr.Members(nil)
				if len(members) != len(prev) {
					t.Fatalf("op %d: %d members, deltas give %d", i, len(members), len(prev))
				}
				for _, p := range members {
					if !prev[p.ID] {
						t.Fatalf("op %d: member %v missing from the deltas", i, p.ID)
					}
				}
			}
			for _, c := range tr.DrainChanges(nil) {
				switch c.Kind {
				case Added:
					if everAdded[c.Proc.ID] {
						t.Fatalf("op %d: %v added twice", i, c.Proc.ID)
					}
					if !everPID[c.Proc.Parent] {
						t.Fatalf("op %d: %v joined under %d, never a member", i, c.Proc.ID, c.Proc.Parent)
					}
					everAdded[c.Proc.ID] = true
					everPID[c.Proc.ID.PID] = true
					logLive[c.Proc.ID] = true
				case Removed:
					if !logLive[c.Proc.ID] {
						t.Fatalf("op %d: %v removed while not live", i, c.Proc.ID)
					}
					delete(logLive, c.Proc.ID)
				}
			}
			// Structural invariants after every operation.
			n := 0
			for pid, p := range tr.members {
				if p.ID.PID != pid {
					t.Fatalf("member %v filed under %d", p.ID, pid)
				}
				if !logLive[p.ID] {
					t.Fatalf("op %d: member %v not live by the change log", i, p.ID)
				}
				if p.ID == root {
					if p.Depth != 0 {
						t.Fatalf("root depth %d", p.Depth)
					}
					continue
				}
				n++
				if p.Depth < 1 || (cfg.MaxDepth > 0 && p.Depth > cfg.MaxDepth) {
					t.Fatalf("member %v at depth %d (max %d)", p.ID, p.Depth, cfg.MaxDepth)
				}
			}
			if len(logLive) != len(tr.members) {
				t.Fatalf("op %d: change log gives %d live, tracker has %d", i, len(logLive), len(tr.members))
			}
			if n != tr.Len() {
				t.Fatalf("Len %d, counted %d", tr.Len(), n)
			}
			if cfg.MaxMembers > 0 && n > cfg.MaxMembers {
				t.Fatalf("%d members over the cap %d", n, cfg.MaxMembers)
			}
			if len(tr.PendingExits(nil)) != tr.leaders {
				t.Fatalf("pending count %d, listed %v", tr.leaders, tr.PendingExits(nil))
			}
			rp, ok := tr.members[root.PID]
			if rootIn := ok && rp.ID == root; rootIn != tr.RootAlive() {
				t.Fatalf("root among members %v, RootAlive %v", rootIn, tr.RootAlive())
			}
		}
	}
}

// fuzzHost lists the host as a scan does, each live process once, with
// parents drawn from the bytes (a reparent is a parent change).
func fuzzHost(host map[int]Identity, b []byte) []Entry {
	var es []Entry
	for pid, id := range host {
		ppid := 0
		if len(b) > 0 {
			ppid = int(b[pid%len(b)]%12) + 1
		}
		es = append(es, Entry{PID: pid, PPID: ppid, StartTicks: id.StartTicks, Live: true, State: 'S'})
	}
	return es
}
