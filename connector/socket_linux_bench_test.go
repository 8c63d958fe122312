//go:build linux

package connector

import (
	"encoding/binary"
	"os"
	"testing"

	"github.com/mdlayher/netlink"
	"golang.org/x/sys/unix"
)

// BenchmarkSocketRead compares the two ways to read a burst of MaxBatch
// datagrams from a real NETLINK_CONNECTOR socket: ReadBatch (one
// recvmmsg(2) into reused slots, as Receive does) and mdlayher/netlink's
// Conn.Receive (one peek and one allocation per message). A second socket
// unicasts the datagrams, outside the timer. Needs root.
func BenchmarkSocketRead(b *testing.B) {
	if os.Geteuid() != 0 {
		b.Skip("skipping: needs root")
	}
	tx, err := unix.Socket(unix.AF_NETLINK, unix.SOCK_RAW|unix.SOCK_CLOEXEC, unix.NETLINK_CONNECTOR)
	if err != nil {
		b.Fatal(err)
	}
	defer unix.Close(tx)
	if err := unix.Bind(tx, &unix.SockaddrNetlink{Family: unix.AF_NETLINK}); err != nil {
		b.Fatal(err)
	}
	sa, err := unix.Getsockname(tx)
	if err != nil {
		b.Fatal(err)
	}
	txPort := sa.(*unix.SockaddrNetlink).Pid
	msg := make([]byte, 76)
	putBenchMessage(msg)
	burst := func(b *testing.B, to uint32) {
		b.StopTimer()
		for range MaxBatch {
			if err := unix.Sendto(tx, msg, 0, &unix.SockaddrNetlink{Family: unix.AF_NETLINK, Pid: to}); err != nil {
				b.Fatal(err)
			}
		}
		b.StartTimer()
	}

	b.Run("recvmmsg", func(b *testing.B) {
		s, err := dialSocket()
		if err != nil {
			b.Fatal(err)
		}
		defer s.Close()
		slots := make([]Datagram, MaxBatch)
		for i := range slots {
			slots[i].Buf = make([]byte, DatagramSize)
		}
		b.ReportAllocs()
		for i := 0; i < b.N; i++ {
			burst(b, s.PortID())
			// Only the burst's datagrams count: the socket is in the
			// proc connector's group, so other listeners' traffic (the
			// host's events) may arrive too.
			for got := 0; got < MaxBatch; {
				n, err := s.ReadBatch(slots)
				if err != nil {
					b.Fatal(err)
				}
				for _, d := range slots[:n] {
					if d.Port == txPort {
						got++
					}
				}
			}
		}
		b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*MaxBatch), "ns/datagram")
	})

	b.Run("mdlayher-Receive", func(b *testing.B) {
		nc, err := netlink.Dial(unix.NETLINK_CONNECTOR, nil)
		if err != nil {
			b.Fatal(err)
		}
		defer nc.Close()
		b.ReportAllocs()
		for i := 0; i < b.N; i++ {
			burst(b, nc.PID())
			for got := 0; got < MaxBatch; {
				ms, err := nc.Receive()
				if err != nil {
					b.Fatal(err)
				}
				got += len(ms) // this socket is in no group: only the burst arrives
			}
		}
		b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*MaxBatch), "ns/datagram")
	})
}

// putBenchMessage writes a 76-byte kernel-shaped fork message.
func putBenchMessage(b []byte) {
	ne := binary.NativeEndian
	ne.PutUint32(b[0:], 76)
	ne.PutUint16(b[4:], nlmsgDone)
	ne.PutUint32(b[16:], IdxProc)
	ne.PutUint32(b[20:], ValProc)
	ne.PutUint16(b[32:], ProcEventLen)
	ne.PutUint32(b[36:], uint32(WhatFork))
}
