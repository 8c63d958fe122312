package connector

import "fmt"

// Namespace links of the initial user and PID namespaces
// (PROC_USER_INIT_INO, PROC_PID_INIT_INO in include/linux/proc_ns.h).
const (
	initUserNS = "user:[4026531837]"
	initPIDNS  = "pid:[4026531836]"
)

// checkNamespaces returns an error matching ErrNotSupported when the
// caller is not in the initial user and PID namespaces, where the kernel
// ignores PROC_CN_MCAST_LISTEN. readlink is os.Readlink outside tests. A
// link that cannot be read (no /proc) is not an error: the acknowledgement
// timeout decides then.
func checkNamespaces(readlink func(string) (string, error)) error {
	for _, ns := range [...]struct{ path, want, name string }{
		{"/proc/self/ns/user", initUserNS, "user"},
		{"/proc/self/ns/pid", initPIDNS, "PID"},
	} {
		got, err := readlink(ns.path)
		if err != nil {
			continue
		}
		if got != ns.want {
			return &OpError{Op: "dial", Kind: ErrNotSupported, Detail: fmt.Sprintf(
				"not in the initial %s namespace (%s is %s, want %s): the kernel sends proc events only to listeners there",
				ns.name, ns.path, got, ns.want)}
		}
	}
	return nil
}
