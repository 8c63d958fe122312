package connector

import (
	"errors"
	"io/fs"
	"strings"
	"testing"
)

func TestCheckNamespaces(t *testing.T) {
	links := func(user, pid string) func(string) (string, error) {
		return func(p string) (string, error) {
			v := map[string]string{"/proc/self/ns/user": user, "/proc/self/ns/pid": pid}[p]
			if v == "" {
				return "", &fs.PathError{Op: "readlink", Path: p, Err: fs.ErrNotExist}
			}
			return v, nil
		}
	}
	tests := []struct {
		name     string
		readlink func(string) (string, error)
		wantIn   string // substring of the error; empty: no error
	}{
		{"initial namespaces", links(initUserNS, initPIDNS), ""},
		{"no /proc", links("", ""), ""},
		{"user namespace", links("user:[4026532201]", initPIDNS), "initial user namespace"},
		{"PID namespace", links(initUserNS, "pid:[4026532202]"), "initial PID namespace"},
		{"both", links("user:[4026532201]", "pid:[4026532202]"), "initial user namespace"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := checkNamespaces(tt.readlink)
			if tt.wantIn == "" {
				if err != nil {
					t.Fatalf("checkNamespaces = %v, want nil", err)
				}
				return
			}
			if !errors.Is(err, ErrNotSupported) || !strings.Contains(err.Error(), tt.wantIn) {
				t.Fatalf("checkNamespaces = %v, want ErrNotSupported mentioning %q", err, tt.wantIn)
			}
			if errors.Is(err, ErrPermission) {
				t.Errorf("namespace error also matches ErrPermission")
			}
		})
	}
}

func TestErrPermissionIsNotSupported(t *testing.T) {
	if !errors.Is(ErrPermission, ErrNotSupported) {
		t.Error("ErrPermission does not match ErrNotSupported")
	}
	if errors.Is(ErrNotSupported, ErrPermission) {
		t.Error("ErrNotSupported matches ErrPermission")
	}
}
