package reconcile_test

import (
	"errors"
	"fmt"

	"github.com/process-watchman/watchman/reconcile"
)

// A polling pass by walk: check the known members, learn the new ones.
func ExampleScanner_Walk() {
	fs, err := reconcile.NewFS("testdata/proc")
	if err != nil {
		panic(err)
	}
	if !fs.HasChildrenFiles() {
		fmt.Println("fall back to a host scan:", reconcile.ErrNoChildrenFiles)
		return
	}
	sc := fs.NewScanner()
	var w reconcile.Walk // reused pass after pass
	known := []reconcile.Member{{PID: 100, StartTicks: 1000}, {PID: 150, StartTicks: 1400}}
	if err := sc.Walk(&w, known); err != nil && !errors.Is(err, reconcile.ErrPermission) {
		panic(err) // EMFILE and the like: keep every member, try again later
	}
	for i, r := range w.Results {
		switch {
		case r.Status == reconcile.StatusError:
			fmt.Printf("%d unreadable: %v\n", r.PID, r.Err)
		case r.Found && r.Status == reconcile.StatusAlive:
			fmt.Printf("%d (%s) joined under %d\n", r.PID, w.Comm(i), w.Results[r.Parent].PID)
		case !r.Found && r.Status != reconcile.StatusAlive:
			fmt.Printf("%d left (%v)\n", r.PID, r.Status)
		}
		// A found process that is not alive (103, a zombie) exited
		// before it was seen.
	}
	// Output:
	// 101 (sleep) joined under 100
	// 102 (a) (b c) joined under 101
	// 106 (threadkid) joined under 102
}
