package watchman

import (
	"github.com/process-watchman/watchman/connector"
	"github.com/process-watchman/watchman/reconcile"
)

// execImages gives the writer the name and command line of a member's new
// image without reading /proc: the kernel tree filter records them at the
// exec, in the exec'ing task's context, keyed by the event's TGID and
// timestamp (connector.TreeFilter.ExecImage). A /proc read after the
// event comes too late for a process that exits within microseconds of
// its exec (it is gone, and keeps its parent's name and command line),
// and the later the reader runs, the more processes that is: HubConfig's
// Coalesce holds reads back by design.
//
// A record is exactly the event's (the program copies the event's
// timestamp from the datagram itself, and checks that the running task is
// the event's process), and its offsets (task_struct.mm, mm_struct's
// arg_start and arg_end, task_struct.comm) come from the running kernel's
// BTF, so records are not checked against /proc as start times are
// (childStarts), whose record may be of another fork of the PID. Where
// there is no record (no kernel filter, a kernel that refuses the
// helpers, a slot another member's exec took since, a command line longer
// than the record holds and asked for in full) and for a member whose
// exit may have been missed (tracker.ExecImage), the writer reads /proc
// as before.
type execImages struct {
	f      execImager // nil: /proc is read
	buf    []byte     // the record's command line, reused
	reason string     // why /proc is read ("" while records are used)
}

// execImager is connector.TreeFilter's record of exec images (an
// interface for the tests).
type execImager interface {
	ExecImage(tgid int, timestampNS uint64, buf []byte) (comm string, args []byte, fullLen int, ok bool)
}

var _ execImager = (*connector.TreeFilter)(nil)

func newExecImages(hf *hubFilter) execImages {
	if hf == nil || hf.f == nil {
		return execImages{reason: "no kernel tree filter"}
	}
	if ok, why := hf.f.ExecImages(); !ok {
		return execImages{reason: why}
	}
	return execImages{f: hf.f, buf: make([]byte, 0, connector.ExecImageArgsMax)}
}

// execImage is one recorded image.
type execImage struct {
	comm    string
	args    []byte // the command line's first bytes, as /proc/PID/cmdline has them
	fullLen int    // the command line's whole length
}

// lookup returns the image recorded for the exec of tgid whose event has
// the timestamp ts. args is valid until the next lookup.
func (ei *execImages) lookup(tgid int, ts uint64) (execImage, bool) {
	if ei.f == nil {
		return execImage{}, false
	}
	comm, args, full, ok := ei.f.ExecImage(tgid, ts, ei.buf[:0])
	if !ok {
		return execImage{}, false
	}
	ei.buf = args[:0]
	return execImage{comm: comm, args: args, fullLen: full}, true
}

// cmdline returns the image's command line as reconcile.FS.Cmdline reads
// it with maxBytes (> 0): the arguments of its first maxBytes bytes, and
// whether there was more than the trailing NUL. ok is false when the
// record holds fewer bytes than that needs. The arguments at an exec end
// with a NUL (the kernel copies each with its own), which is what tells
// a command line one byte longer than maxBytes from a longer one where
// the record stops at maxBytes.
func (im *execImage) cmdline(maxBytes int) (args []string, truncated, ok bool) {
	n := im.fullLen
	if n > maxBytes {
		truncated = n > maxBytes+1 || (len(im.args) > maxBytes && im.args[maxBytes] != 0)
		n = maxBytes
	}
	if n > len(im.args) || n < 0 {
		return nil, false, false
	}
	return reconcile.SplitCmdline(im.args[:n]), truncated, true
}
