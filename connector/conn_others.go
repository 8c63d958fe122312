//go:build !linux

package connector

// Dial fails on every system but Linux: the proc connector is a Linux
// netlink family. The error matches ErrNotSupported.
func Dial(cfg *Config) (*Conn, error) {
	return nil, &OpError{Op: "dial", Kind: ErrNotSupported, Detail: "the proc connector exists only on Linux"}
}
