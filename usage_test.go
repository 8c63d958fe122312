package watchman

import (
	"testing"
	"time"
)

func TestSplitCPU(t *testing.T) {
	for _, tc := range []struct {
		run, ut, st, user, sys time.Duration
	}{
		{0, 30, 10, 30, 10},   // no run time: the samples
		{100, 0, 0, 100, 0},   // no samples: all user
		{100, 30, 10, 75, 25}, // the samples' proportion
		{100, 0, 40, 0, 100},  // all system
		{3 * time.Hour, time.Hour, time.Hour, 90 * time.Minute, 90 * time.Minute},
	} {
		u, s := splitCPU(tc.run, tc.ut, tc.st)
		if u != tc.user || s != tc.sys || (tc.run > 0 && u+s != tc.run) {
			t.Errorf("splitCPU(%v, %v, %v) = %v, %v; want %v, %v", tc.run, tc.ut, tc.st, u, s, tc.user, tc.sys)
		}
	}
}
