package h1

import (
	"io"
	"net"
	"sync"
	"time"
)

// connReader sits under the connection's bufio.Reader. It returns first a
// byte the client watch (WatchClient) read ahead, if any.
type connReader struct {
	r          io.Reader
	pending    byte
	hasPending bool
}

func (r *connReader) Read(p []byte) (int, error) {
	if r.hasPending && len(p) > 0 {
		p[0], r.hasPending = r.pending, false
		return 1, nil
	}
	return r.r.Read(p)
}

// deadline is the connection's read deadline as last set, so that it is
// changed only when it must be: each change is a runtime timer update, and
// a request on a kept-alive connection normally needs none.
type deadline struct {
	c      net.Conn
	at     time.Time // zero: none
	isIdle bool      // at ends a wait for the next request
}

func (d *deadline) set(t time.Time, idle bool) {
	d.c.SetReadDeadline(t)
	d.at, d.isIdle = t, idle
}

// idle makes sure a wait for the next request that begins at now ends by
// now+timeout. An idle deadline set for an earlier wait is kept while it is
// at least half the timeout away: then it can only fire early, and the wait
// sets the exact one (Server.awaitRequest).
func (d *deadline) idle(now time.Time, timeout time.Duration) {
	if d.isIdle && d.at.Sub(now) >= timeout/2 {
		return
	}
	d.set(now.Add(timeout), true)
}

// head starts the read-header timeout, once per request.
func (d *deadline) head(timeout time.Duration) {
	if timeout > 0 && (d.isIdle || d.at.IsZero()) {
		d.set(time.Now().Add(timeout), false)
	}
}

// prefixConn replays bytes already read before reading the connection.
type prefixConn struct {
	net.Conn
	prefix []byte
}

func (c *prefixConn) Read(p []byte) (int, error) {
	if len(c.prefix) > 0 {
		n := copy(p, c.prefix)
		c.prefix = c.prefix[n:]
		return n, nil
	}
	return c.Conn.Read(p)
}

// chanListener hands connections to the fallback net/http server.
type chanListener struct {
	addr net.Addr
	ch   chan net.Conn
	done chan struct{}
	once sync.Once
}

func newChanListener(a net.Addr) *chanListener {
	return &chanListener{addr: a, ch: make(chan net.Conn), done: make(chan struct{})}
}

func (l *chanListener) Accept() (net.Conn, error) {
	select {
	case c := <-l.ch:
		return c, nil
	case <-l.done:
		return nil, net.ErrClosed
	}
}

func (l *chanListener) Close() error {
	l.once.Do(func() { close(l.done) })
	return nil
}

func (l *chanListener) Addr() net.Addr { return l.addr }

func (l *chanListener) deliver(c net.Conn) bool {
	select {
	case l.ch <- c:
		return true
	case <-l.done:
		return false
	}
}
