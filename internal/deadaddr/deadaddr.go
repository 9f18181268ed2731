// Package deadaddr gives tests a loopback TCP address where every
// connection is refused, for as long as the test runs, and that can later
// come back to life on the same port.
//
// The usual way, listening on port 0 and closing the listener, frees the
// port: on a busy machine the next listener (often one the same test
// starts a moment later) can be given it, and the "dead" upstream answers
// 404, or accepts and says nothing. Here the port stays bound by a socket
// that does not listen: the kernel answers each SYN with a reset, so a
// dial fails with ECONNREFUSED at once, and no other socket can bind the
// port or take it as an ephemeral port until the test ends. Listen turns
// that same socket into a listener, so an upstream that "returns" gets the
// address with no moment in which anyone else could take it.
package deadaddr

import (
	"fmt"
	"net"
	"os"
	"testing"

	"golang.org/x/sys/unix"
)

// Socket is a bound, not listening, loopback TCP socket.
type Socket struct {
	fd   int
	addr string
}

// New binds a socket on 127.0.0.1 and an unused port; it is closed when t
// ends, unless Listen has taken it.
func New(t testing.TB) *Socket {
	t.Helper()
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM, 0)
	if err != nil {
		t.Fatalf("deadaddr: socket: %v", err)
	}
	unix.CloseOnExec(fd) // SOCK_CLOEXEC is Linux's; this is every Unix's
	s := &Socket{fd: fd}
	t.Cleanup(func() {
		if s.fd >= 0 {
			unix.Close(s.fd)
		}
	})
	if err := unix.Bind(fd, &unix.SockaddrInet4{Addr: [4]byte{127, 0, 0, 1}}); err != nil {
		t.Fatalf("deadaddr: bind: %v", err)
	}
	sa, err := unix.Getsockname(fd)
	if err != nil {
		t.Fatalf("deadaddr: getsockname: %v", err)
	}
	s.addr = (&net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: sa.(*unix.SockaddrInet4).Port}).String()
	return s
}

// TCP returns "127.0.0.1:port" that refuses connections until t ends.
func TCP(t testing.TB) string { return New(t).Addr() }

// Addr is the socket's "127.0.0.1:port".
func (s *Socket) Addr() string { return s.addr }

// Listen makes the socket listen and returns it as a net.Listener, which
// the caller closes. It can be called once.
func (s *Socket) Listen() (net.Listener, error) {
	if s.fd < 0 {
		return nil, fmt.Errorf("deadaddr: %s is already listening", s.addr)
	}
	if err := unix.Listen(s.fd, unix.SOMAXCONN); err != nil {
		return nil, fmt.Errorf("deadaddr: listen %s: %w", s.addr, err)
	}
	f := os.NewFile(uintptr(s.fd), s.addr)
	s.fd = -1
	defer f.Close() // FileListener has its own copy of the descriptor
	ln, err := net.FileListener(f)
	if err != nil {
		return nil, fmt.Errorf("deadaddr: listener on %s: %w", s.addr, err)
	}
	return ln, nil
}
