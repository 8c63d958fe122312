package reconcile

import (
	"bufio"
	"bytes"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// HidePID is the hidepid mount option of a proc filesystem: what it shows
// of the processes a reader may not trace (ptrace_may_access in read mode:
// another user's processes, or set-user-ID ones). Root (CAP_SYS_PTRACE)
// and members of the mount's gid= group see everything whatever the mode.
//
// What each mode looks like to reconcile, for such a process:
//
//   - HidePIDOff: everything is readable; ENOENT and ESRCH mean gone.
//   - HidePIDNoAccess (hidepid=1): /proc/PID is listed, but every file
//     below it gives EPERM. Reads return a *ProcError matching
//     ErrPermission; a host scan lists the PID in Scan.Denied. Gone is
//     still told apart: a gone process gives ENOENT.
//   - HidePIDInvisible (hidepid=2) and HidePIDPtraceable (hidepid=4):
//     /proc/PID is neither listed nor found (ENOENT), exactly as if the
//     process were gone. Where the proc filesystem belongs to the caller's
//     own PID namespace, a read that finds no /proc/PID probes the PID
//     with kill(pid, 0): if it is in use, the read returns a *ProcError
//     matching ErrHidden (and ErrPermission), not ErrGone. The probe cannot
//     tell whether the PID still names the same process (its start time is
//     hidden too); a PIDFD opened while it was readable can. A host scan
//     cannot list hidden processes at all.
type HidePID uint8

// The hidepid modes (see HidePID).
const (
	HidePIDOff        HidePID = 0
	HidePIDNoAccess   HidePID = 1
	HidePIDInvisible  HidePID = 2
	HidePIDPtraceable HidePID = 4
)

// String returns the mode's name in the kernel's mount options.
func (h HidePID) String() string {
	switch h {
	case HidePIDOff:
		return "off"
	case HidePIDNoAccess:
		return "noaccess"
	case HidePIDInvisible:
		return "invisible"
	case HidePIDPtraceable:
		return "ptraceable"
	}
	return "hidepid=" + strconv.Itoa(int(h))
}

// HidePID returns the hidepid option of the proc filesystem, read from
// /proc/self/mountinfo when NewFS ran. A root that is not a proc
// filesystem (a fake tree) gives HidePIDOff.
func (fs *FS) HidePID() HidePID { return fs.hidePID }

// mountHidePID finds the hidepid option of the proc filesystem mounted at
// root, and whether a missing /proc/PID should be probed for a hidden
// process: the mode hides processes and root shows this process's own PID
// namespace (root/self names this process).
func mountHidePID(root string) (HidePID, bool) {
	var sfs unix.Statfs_t
	if err := unix.Statfs(root, &sfs); err != nil || sfs.Type != unix.PROC_SUPER_MAGIC {
		return HidePIDOff, false
	}
	abs, err := filepath.Abs(root)
	if err != nil {
		return HidePIDOff, false
	}
	if r, err := filepath.EvalSymlinks(abs); err == nil {
		abs = r
	}
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return HidePIDOff, false
	}
	defer f.Close()
	mode, found := HidePIDOff, false
	s := bufio.NewScanner(f)
	s.Buffer(make([]byte, 4096), 1<<20)
	for s.Scan() {
		if m, ok := parseMountinfoHidePID(s.Bytes(), abs); ok {
			// The last mount at a point is the one on top.
			mode, found = m, true
		}
	}
	if !found || (mode != HidePIDInvisible && mode != HidePIDPtraceable) {
		return mode, false
	}
	self, err := os.Readlink(filepath.Join(root, "self"))
	return mode, err == nil && self == strconv.Itoa(os.Getpid())
}

// parseMountinfoHidePID reads one line of /proc/self/mountinfo and, if it
// is a proc mount at mountPoint, returns its hidepid option.
//
//	36 35 98:0 / /proc rw,nosuid master:1 - proc proc rw,hidepid=invisible
func parseMountinfoHidePID(line []byte, mountPoint string) (HidePID, bool) {
	fields := bytes.Fields(line)
	if len(fields) < 5 || unescapeMountinfo(string(fields[4])) != mountPoint {
		return 0, false
	}
	sep := -1
	for i := 5; i < len(fields); i++ {
		if string(fields[i]) == "-" {
			sep = i
			break
		}
	}
	if sep < 0 || sep+3 >= len(fields) || string(fields[sep+1]) != "proc" {
		return 0, false
	}
	for _, opt := range strings.Split(string(fields[sep+3]), ",") {
		v, ok := strings.CutPrefix(opt, "hidepid=")
		if !ok {
			continue
		}
		switch v {
		case "1", "noaccess":
			return HidePIDNoAccess, true
		case "2", "invisible":
			return HidePIDInvisible, true
		case "4", "ptraceable":
			return HidePIDPtraceable, true
		}
		return HidePIDOff, true
	}
	return HidePIDOff, true
}

// unescapeMountinfo undoes the octal escapes (\040 for a space, ...) of a
// path in /proc/self/mountinfo.
func unescapeMountinfo(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+4 <= len(s) {
			if n, err := strconv.ParseUint(s[i+1:i+4], 8, 8); err == nil {
				b.WriteByte(byte(n))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}
