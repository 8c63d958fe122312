package connector

// SendToSelf exposes the Socket's SendToSelf to the external tests, so that
// they can forge datagrams from the Conn's own port.
func (c *Conn) SendToSelf(msg []byte) error {
	return c.sock.(interface{ SendToSelf([]byte) error }).SendToSelf(msg)
}
