package connector

// A MemberMatch is an eBPF socket filter program, for another netlink
// socket, that passes a datagram when the 32-bit id at a given offset is
// in a TreeFilter's member set (or the filter fails open), so that a
// second kernel stream about processes (taskstats' exit records, which
// carry the TGID at taskstats.FilterOffsetTGID) is cut down to the same
// trees in the kernel. It follows the TreeFilter's set as it changes.
// Attach it with the other socket's SO_ATTACH_BPF (for example
// taskstats.Listener.AttachBPF(m.FD())); the socket keeps the program
// after Close.
type MemberMatch struct {
	impl matchProgram
}

type matchProgram interface {
	fd() int
	close() error
}

// FD returns the program's file descriptor.
func (m *MemberMatch) FD() int { return m.impl.fd() }

// Close releases the program (a socket it is attached to keeps it).
func (m *MemberMatch) Close() error { return m.impl.close() }

// MatchProgram returns a MemberMatch that reads the id at byte offset off
// of each datagram (from its nlmsghdr; in host byte order). A datagram too
// short to hold it passes (acknowledgements, errors).
func (f *TreeFilter) MatchProgram(off int) (*MemberMatch, error) {
	if off < 0 || off > 1<<16 {
		return nil, &OpError{Op: "tree match", Detail: "offset out of range"}
	}
	var m *MemberMatch
	err := f.do("tree match", func(t treeMaps) error {
		p, err := newMatchProgram(t, off)
		if err == nil {
			m = &MemberMatch{impl: p}
		}
		return err
	})
	return m, err
}
