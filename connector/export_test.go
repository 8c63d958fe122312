package connector

import "time"

// SendToSelf exposes the Socket's SendToSelf to the external tests, so that
// they can forge datagrams from the Conn's own port.
func (c *Conn) SendToSelf(msg []byte) error {
	return c.sock.(interface{ SendToSelf([]byte) error }).SendToSelf(msg)
}

// RunReaderHelper runs the listener of BenchmarkReaderCPU in a re-executed
// test binary (see readerbench_linux_test.go); ok is false for other modes.
func RunReaderHelper(mode string) (code int, ok bool) { return runReaderHelper(mode) }

// Coalesced returns the number of coalescing waits of Receive.
func (c *Conn) Coalesced() uint64 {
	c.rmu.Lock()
	defer c.rmu.Unlock()
	return c.coalesced
}

// Coalescing reports whether Receive coalesces under load.
func (c *Conn) Coalescing() bool { return c.strategy.coalesce > 0 }

// SetClock replaces the clock by which Receive measures the event rate.
func (c *Conn) SetClock(now func() time.Time) {
	c.rmu.Lock()
	defer c.rmu.Unlock()
	c.now = now
}
