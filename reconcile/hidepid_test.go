package reconcile

import "fmt"

// helperHidePID is filled in by the hidepid tests.
func helperHidePID() int { fmt.Println("not yet"); return 0 }
