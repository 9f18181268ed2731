// Package sockio reads and writes TCP sockets with plain system calls that
// do not pass through the Go scheduler's syscall bookkeeping.
//
// Every read and write on a net.Conn goes through entersyscall and
// exitsyscall. When the process has been idle, entersyscall also wakes the
// runtime's monitor thread (sysmon), which then polls every 20 µs until the
// process is idle again, and takes the P away from a thread whose syscall
// lasts longer than that — a loopback write that runs the receiver's TCP
// stack inline often does — handing it to another thread. For a sidecar at a
// few thousand requests per second on one CPU, those wake-ups and thread
// switches cost more than the proxying (docs/benchmarks.md has the figures).
//
// The sockets the runtime opens are non-blocking, so read(2) and write(2) on
// them return at once: with data, with EAGAIN, or with an error. A Conn from
// Wrap issues them with RawSyscall inside syscall.RawConn's Read and Write,
// which park the goroutine on the runtime's network poller on EAGAIN exactly
// as net.Conn does; deadlines, Close and the poller work unchanged. Race
// builds use syscall.Read and syscall.Write instead, which carry the race
// detector's annotations for data passed through sockets. Only
// TCP connections are wrapped (a wrapper that exposes its *net.TCPConn with a
// NetConn method counts); other connections are returned as they are.
package sockio

import (
	"io"
	"net"
	"os"
	"sync"
	"syscall"
)

// Conn is a TCP connection whose Read and Write bypass the scheduler's
// syscall state. Everything else (deadlines, Close, addresses) is the
// wrapped connection's.
type Conn struct {
	net.Conn
	rc syscall.RawConn
	r  op // the read in progress
	w  op // the write in progress
}

// op is the state of one read or write, kept in the Conn so that the
// callback handed to the raw connection (bound once, in Wrap) allocates
// nothing per call. mu serializes callers, as the fd's own lock would.
type op struct {
	mu   sync.Mutex
	fn   func(fd uintptr) bool
	p    []byte
	n    int
	errn syscall.Errno
}

// Wrap returns c as a *Conn when it is, or wraps, a *net.TCPConn on a
// platform with raw socket calls, and c itself otherwise.
func Wrap(c net.Conn) net.Conn {
	if !supported {
		return c
	}
	inner := c
	for {
		u, ok := inner.(interface{ NetConn() net.Conn })
		if !ok {
			break
		}
		inner = u.NetConn()
	}
	tc, ok := inner.(*net.TCPConn)
	if !ok {
		return c
	}
	rc, err := tc.SyscallConn()
	if err != nil {
		return c
	}
	sc := &Conn{Conn: c, rc: rc}
	sc.r.fn, sc.w.fn = sc.read, sc.write
	return sc
}

// SyscallConn returns the raw connection of the TCP socket.
func (c *Conn) SyscallConn() (syscall.RawConn, error) { return c.rc, nil }

// Read reads up to len(p) bytes, waiting on the network poller while none
// are available.
func (c *Conn) Read(p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	n, err := c.do(&c.r, p, false)
	if err != nil {
		return 0, err
	}
	if n == 0 {
		return 0, io.EOF
	}
	return n, nil
}

// do runs one read or write of p through the raw connection and returns
// the bytes moved and the error as net.TCPConn would.
func (c *Conn) do(o *op, p []byte, write bool) (int, error) {
	o.mu.Lock()
	o.p, o.n, o.errn = p, 0, 0
	var err error
	name := "read"
	if write {
		name = "write"
		err = c.rc.Write(o.fn)
	} else {
		err = c.rc.Read(o.fn)
	}
	n, errn := o.n, o.errn
	o.p = nil
	o.mu.Unlock()
	if err == nil && errn != 0 {
		err = os.NewSyscallError(name, errn)
	}
	if err != nil {
		return n, c.opError(name, err)
	}
	return n, nil
}

// read is the raw read callback: false asks the poller to wait.
func (c *Conn) read(fd uintptr) bool {
	o := &c.r
	o.n, o.errn = rawRead(fd, o.p)
	return o.errn != syscall.EAGAIN
}

// Write writes all of p, waiting on the network poller while the socket
// buffer is full.
func (c *Conn) Write(p []byte) (int, error) { return c.do(&c.w, p, true) }

// write is the raw write callback: false asks the poller to wait for room.
func (c *Conn) write(fd uintptr) bool {
	o := &c.w
	for o.n < len(o.p) {
		m, errn := rawWrite(fd, o.p[o.n:])
		if errn != 0 {
			o.errn = errn
			return errn != syscall.EAGAIN
		}
		o.n += m
	}
	o.errn = 0
	return true
}

// opError returns err as net.TCPConn's Read and Write would, so that
// callers' checks (os.ErrDeadlineExceeded, net.ErrClosed,
// syscall.ECONNRESET, net.Error's Timeout) keep working. The raw
// connection's own errors (deadline, closed) are already *net.OpError with
// Op "raw-read" or "raw-write".
func (c *Conn) opError(op string, err error) error {
	if oe, ok := err.(*net.OpError); ok {
		oe.Op = op
		return oe
	}
	return &net.OpError{Op: op, Net: "tcp", Source: c.LocalAddr(), Addr: c.RemoteAddr(), Err: err}
}
