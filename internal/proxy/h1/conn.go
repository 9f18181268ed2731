package h1

import (
	"errors"
	"io"
	"net"
	"sync"
)

// errHeadTooLarge ends a request head longer than MaxHeaderBytes.
var errHeadTooLarge = errors.New("h1: request head too large")

// recordingReader sits under the connection's bufio.Reader. While a request
// head is read it keeps a copy of every byte (for a hand-off to net/http) and
// caps how many bytes the head may take.
type recordingReader struct {
	r       io.Reader
	rec     bool
	buf     []byte
	limit   int  // bytes left while reading a head; < 0: no limit
	tripped bool // the head limit was reached
	// pending is a byte the client watch read ahead; it is returned first.
	pending    byte
	hasPending bool
}

func (r *recordingReader) start(limit int) {
	r.rec, r.buf, r.limit, r.tripped = true, r.buf[:0], limit, false
}

func (r *recordingReader) stop() []byte {
	r.rec, r.limit = false, -1
	return r.buf
}

func (r *recordingReader) Read(p []byte) (int, error) {
	if r.limit == 0 {
		r.tripped = true
		return 0, errHeadTooLarge
	}
	if r.limit > 0 && len(p) > r.limit {
		p = p[:r.limit]
	}
	if r.hasPending && len(p) > 0 {
		p[0], r.hasPending = r.pending, false
		n := 1
		if r.rec {
			r.buf = append(r.buf, p[0])
		}
		if r.limit > 0 {
			r.limit--
		}
		return n, nil
	}
	n, err := r.r.Read(p)
	if r.rec {
		r.buf = append(r.buf, p[:n]...)
	}
	if r.limit > 0 {
		r.limit -= n
	}
	return n, err
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
