package waitstatus

import "testing"

func TestDecode(t *testing.T) {
	for _, tt := range []struct {
		status       uint32
		code, signal int
		core         bool
	}{
		{0, 0, 0, false},
		{1 << 8, 1, 0, false},
		{255 << 8, 255, 0, false},
		{9, -1, 9, false},
		{0x80 | 11, -1, 11, true},
		{0x80, 0, 0, false}, // the core bit without a signal is no core dump
	} {
		code, sig, core := Decode(tt.status)
		if code != tt.code || sig != tt.signal || core != tt.core {
			t.Errorf("Decode(%#x) = %d %d %v, want %d %d %v", tt.status, code, sig, core, tt.code, tt.signal, tt.core)
		}
	}
}
