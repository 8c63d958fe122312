package tracker

import (
	"testing"
	"time"
)

// FuzzTracker feeds random sequences of forks, exits, leader exits and scans
// and checks the invariants that every consumer relies on.
func FuzzTracker(f *testing.F) {
	f.Add([]byte{0, 1, 2, 0, 2, 3, 1, 2, 3, 4, 0})
	f.Add([]byte{0, 0, 5, 0, 5, 6, 3, 9, 1, 5, 2, 6, 4, 7, 7})
	f.Fuzz(func(t *testing.T, ops []byte) {
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
		// Time runs one way: a process that exited, or that a scan did
		// not show, never shows again in a real /proc.
		dead := map[Identity]bool{}
		at := t0
		for i := 0; i+2 < len(ops); i += 3 {
			at = at.Add(time.Millisecond)
			a, b := int(ops[i+1]%16)+1, int(ops[i+2]%16)+1
			switch ops[i] % 5 {
			case 0:
				// A fork of PID b means its previous holder is gone.
				if p, ok := tr.Member(b); ok && a != b {
					dead[p.ID] = true
				}
				tr.Fork(a, Identity{PID: b, StartTicks: uint64(i)}, ops[i]&8 != 0, at)
			case 1:
				if p, ok := tr.Member(a); ok {
					dead[p.ID] = true
				}
				tr.Exit(a, uint32(b), at)
			case 2:
				tr.LeaderExited(a, 0, at)
			case 3:
				// A scan built from the bytes: PIDs 1..16 with parents.
				// A real scan lists each PID once.
				var es []Entry
				seen := map[int]bool{}
				for j := 0; j < b && i+3+j < len(ops); j++ {
					v := ops[i+3+j]
					e := Entry{PID: int(v%16) + 1, PPID: int(v/16) + 1, StartTicks: uint64(v % 3), Live: v&1 == 0}
					if seen[e.PID] || dead[Identity{PID: e.PID, StartTicks: e.StartTicks}] {
						continue
					}
					seen[e.PID] = true
					es = append(es, e)
				}
				alive := map[Identity]bool{}
				for _, e := range es {
					id := Identity{PID: e.PID, StartTicks: e.StartTicks}
					alive[id] = e.Live
					if !e.Live {
						dead[id] = true
					}
				}
				for _, p := range tr.members {
					if !alive[p.ID] {
						dead[p.ID] = true
					}
				}
				tr.ApplyScan(es, at, ScanOptions{Repair: true})
			case 4:
				c := tr.Take()
				for _, id := range c.Added {
					prev[id] = true
				}
				for _, id := range c.Removed {
					delete(prev, id)
				}
				// The live set follows from the deltas.
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
			// Structural invariants after every operation.
			n := 0
			for pid, p := range tr.members {
				if p.ID.PID != pid {
					t.Fatalf("member %v filed under %d", p.ID, pid)
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
			if n != tr.Len() {
				t.Fatalf("Len %d, counted %d", tr.Len(), n)
			}
			if cfg.MaxMembers > 0 && n > cfg.MaxMembers {
				t.Fatalf("%d members over the cap %d", n, cfg.MaxMembers)
			}
			if len(tr.PendingLeaders(nil)) != tr.leaders {
				t.Fatalf("leader count %d, listed %v", tr.leaders, tr.PendingLeaders(nil))
			}
			rp, ok := tr.members[root.PID]
			if rootIn := ok && rp.ID == root; rootIn != tr.RootAlive() {
				t.Fatalf("root among members %v, RootAlive %v", rootIn, tr.RootAlive())
			}
		}
	})
}
