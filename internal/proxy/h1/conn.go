package h1

import (
	"io"
	"net"
	"sync"
	"sync/atomic"
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

// head makes reads end at at, a request's read-header deadline.
func (d *deadline) head(at time.Time) {
	if d.isIdle || !d.at.Equal(at) {
		d.set(at, false)
	}
}

// prefixConn replays bytes already read before reading the connection.
type prefixConn struct {
	net.Conn
	prefix []byte
	// headBy is when the handed-off request's head must be in; zero for
	// no limit.
	headBy time.Time
	setOne atomic.Bool // the fallback server has set a read deadline
}

// SetReadDeadline holds the fallback server's first read deadline to
// headBy. net/http starts its read-header timeout afresh on a connection
// it accepts (one call with now+ReadHeaderTimeout, or none without that
// timeout), reads the head, and then sets the request's own deadline
// (zero, without ReadTimeout): only that first one may not outlast the
// deadline the lean server already gave the head, or a client could have
// close to twice the timeout by crossing the 4 KiB hand-off late. A zero
// first deadline is the one after the head, and passes.
func (c *prefixConn) SetReadDeadline(t time.Time) error {
	if !c.setOne.Swap(true) && !t.IsZero() && !c.headBy.IsZero() && t.After(c.headBy) {
		t = c.headBy
	}
	return c.Conn.SetReadDeadline(t)
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
