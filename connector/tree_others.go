//go:build !linux

package connector

func newTreeMaps(filterSocket, int) (treeMaps, error) {
	return nil, &OpError{Op: "tree attach", Kind: ErrNotSupported, Detail: "eBPF socket filters exist only on Linux"}
}
