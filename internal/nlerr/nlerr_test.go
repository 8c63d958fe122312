package nlerr

import (
	"errors"
	"syscall"
	"testing"
)

func TestOp(t *testing.T) {
	kind := errors.New("pkg: not supported")
	perm := &Chained{Msg: "pkg: permission denied", Parent: kind}
	for _, tc := range []struct {
		e    Op
		text string
		is   []error
	}{
		{Op{Op: "dial"}, "pkg: dial", nil},
		{Op{Op: "dial", Kind: kind}, "pkg: dial: pkg: not supported", []error{kind}},
		{Op{Op: "dial", Kind: perm, Err: syscall.EPERM, Detail: "binding"},
			"pkg: dial: binding: operation not permitted", []error{perm, kind, syscall.EPERM}},
		{Op{Op: "receive", Err: syscall.ENOBUFS}, "pkg: receive: no buffer space available", []error{syscall.ENOBUFS}},
	} {
		if got := tc.e.Text("pkg"); got != tc.text {
			t.Errorf("%+v: text %q, want %q", tc.e, got, tc.text)
		}
		err := opErr(tc.e)
		for _, target := range tc.is {
			if !errors.Is(err, target) {
				t.Errorf("%+v does not match %v", tc.e, target)
			}
		}
		if len(tc.is) == 0 && tc.e.Unwrap() != nil {
			t.Errorf("%+v unwraps to %v, want nothing", tc.e, tc.e.Unwrap())
		}
	}
}

type opErr Op

func (e opErr) Error() string   { return Op(e).Text("pkg") }
func (e opErr) Unwrap() []error { return Op(e).Unwrap() }

func TestDecode(t *testing.T) {
	reason := errors.New("pkg: truncated message")
	if got, want := (Decode{Reason: reason, Detail: "short header", Len: 3}).Text(), "pkg: truncated message: short header (3 bytes)"; got != want {
		t.Errorf("text %q, want %q", got, want)
	}
}
