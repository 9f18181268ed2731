package forward

import (
	"net"
	"syscall"

	"golang.org/x/sys/unix"
)

// alive peeks at an idle pooled connection without blocking: a connection
// the upstream has closed (EOF pending) or that holds unexpected bytes must
// not carry the next request. One cheap syscall saves a failed exchange.
func alive(c net.Conn) bool {
	sc, ok := c.(syscall.Conn)
	if !ok {
		return true
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return false
	}
	ok = false
	var b [1]byte
	rc.Read(func(fd uintptr) bool {
		// Nothing to read (EAGAIN) is the healthy state; EOF (0 bytes) or
		// stray bytes mean the connection must not be reused.
		_, _, err := unix.Recvfrom(int(fd), b[:], unix.MSG_PEEK|unix.MSG_DONTWAIT)
		ok = err == unix.EAGAIN || err == unix.EWOULDBLOCK
		return true
	})
	return ok
}
