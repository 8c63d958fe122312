// Package nlsock is the netlink socket under packages connector and
// taskstats: a mdlayher/netlink Conn whose datagrams are read in batches
// with one recvmmsg(2) call into buffers the caller owns and reuses, with
// the socket options both need (SO_RCVBUF(FORCE), NETLINK_NO_ENOBUFS,
// SO_MEMINFO, socket filters) and an optional blocking read mode, in which
// the socket leaves the runtime's poller (datagrams that arrive while
// nobody reads wake no thread) and reads block in recvmmsg(2), woken for
// Close and deadlines by a datagram the socket sends itself. It exists on
// Linux only.
package nlsock
