//go:build !linux

package connector

func newMatchProgram(treeMaps, int) (matchProgram, error) {
	return nil, &OpError{Op: "tree match", Kind: ErrNotSupported, Detail: "eBPF socket filters exist only on Linux"}
}
