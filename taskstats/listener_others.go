//go:build !linux

package taskstats

// Listen fails on every system but Linux: taskstats is a Linux generic
// netlink family. The error matches ErrNotSupported.
func Listen(cfg *Config) (*Listener, error) {
	return nil, &OpError{Op: "listen", Kind: ErrNotSupported, Detail: "taskstats exists only on Linux"}
}
