// Package h1 serves simple HTTP/1.1 requests on the mesh listener without
// net/http's per-request machinery, and hands every other connection to a
// net/http server.
//
// net/http's server runs a background read per request so that the request's
// context ends when the client hangs up, allocates a cancelable context and a
// response object per request, and more. For the sidecar's common case, a
// small HTTP/1.1 request to be forwarded at once, that costs more CPU than
// the proxying. This server parses the request head with httphead (a strict
// parser that leaves anything unusual to net/http), calls the handler with a
// lean ResponseWriter, and watches for
// the client hanging up only when the handler asks (see WatchClient), as the
// hold path does. Anything else — HTTP/1.0, HTTP/2 (h2c), upgrades, Expect,
// chunked or large bodies — goes to net/http with the bytes already read
// replayed, and that connection stays there. See
// docs/decisions/0001-edge-http1-server.md.
package h1

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/misaki-io/misaki/internal/httphead"
	"github.com/misaki-io/misaki/internal/sockio"
)

// MaxSimpleBody is the largest request body this server takes itself.
const MaxSimpleBody = 16 << 10

// Server serves simple requests and hands the rest to Fallback.
type Server struct {
	Handler           http.Handler
	Fallback          *http.Server // serves handed-off connections
	ReadHeaderTimeout time.Duration
	IdleTimeout       time.Duration
	Log               *slog.Logger

	handoff *chanListener
	ln      net.Listener
	mu      sync.Mutex // guards conns
	conns   map[net.Conn]struct{}
	closed  atomic.Bool // set under mu
	wg      sync.WaitGroup
}

// Serve accepts connections on ln until Shutdown or an accept error.
func (s *Server) Serve(ln net.Listener) error {
	s.mu.Lock()
	s.ln = ln
	s.conns = map[net.Conn]struct{}{}
	s.handoff = newChanListener(ln.Addr())
	s.mu.Unlock()
	go func() {
		// It ends only when Shutdown closes the hand-off listener.
		if err := s.Fallback.Serve(s.handoff); !errors.Is(err, http.ErrServerClosed) && !errors.Is(err, net.ErrClosed) {
			s.Log.Error("fallback HTTP server stopped", "err", err)
		}
	}()
	for {
		c, err := ln.Accept()
		if err != nil {
			if s.closing() {
				return http.ErrServerClosed
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				time.Sleep(5 * time.Millisecond)
				continue
			}
			return err
		}
		s.mu.Lock()
		if s.closing() {
			s.mu.Unlock()
			c.Close()
			return http.ErrServerClosed
		}
		s.conns[c] = struct{}{}
		s.wg.Add(1)
		s.mu.Unlock()
		go s.serveConn(c)
	}
}

// Shutdown stops accepting, closes idle connections, waits for requests in
// progress until ctx ends, and shuts the fallback server down.
func (s *Server) Shutdown(ctx context.Context) error {
	s.mu.Lock()
	s.closed.Store(true)
	if s.ln != nil {
		s.ln.Close()
	}
	for c := range s.conns {
		// Wake connections waiting for a next request; a request in
		// progress is not reading, so it finishes first.
		c.SetReadDeadline(time.Unix(1, 0))
	}
	s.mu.Unlock()
	done := make(chan struct{})
	go func() { s.wg.Wait(); close(done) }()
	var err error
	select {
	case <-done:
	case <-ctx.Done():
		err = ctx.Err()
	}
	s.handoff.Close()
	return errors.Join(err, s.Fallback.Shutdown(ctx))
}

func (s *Server) closing() bool { return s.closed.Load() }

func (s *Server) forget(c net.Conn) {
	s.mu.Lock()
	delete(s.conns, c)
	s.mu.Unlock()
	s.wg.Done()
}

// headBuffer is the size of a connection's read buffer, and so the longest
// request head this server parses; a longer one goes to net/http, which
// applies MaxHeaderBytes.
const headBuffer = 4096

// serveConn serves requests on c until it closes, fails, or is handed off.
func (s *Server) serveConn(c net.Conn) {
	defer s.forget(c)
	sc := sockio.Wrap(c) // for reads and writes; deadlines and Close work on either
	cr := &connReader{r: sc}
	br := bufio.NewReaderSize(cr, headBuffer)
	bw := bufio.NewWriterSize(sc, 4096)
	remote := c.RemoteAddr().String()
	dl := &deadline{c: c}
	w := &responseWriter{conn: sc, bw: bw, br: br, cr: cr, dl: dl, header: make(http.Header, 8)}
	accepted := time.Now()
	for first := true; ; first = false {
		// headBy is when the request's head (and a simple request's body)
		// must be in: the read-header timeout from the connection's start
		// for the first request, as in net/http, and from the first byte
		// for later ones, fixed once the head has to be waited for. Zero
		// without a timeout, or until then.
		var headBy time.Time
		if first && s.ReadHeaderTimeout > 0 {
			headBy = accepted.Add(s.ReadHeaderTimeout)
		}
		if !s.awaitRequest(br, dl, headBy) {
			c.Close()
			return
		}
		// Nothing of the request is consumed from br until it is parsed,
		// so that a hand-off can replay every byte read.
		n, err := s.bufferHead(br, dl, &headBy)
		if err != nil {
			c.Close()
			return
		}
		var req *http.Request
		if n > 0 {
			head, _ := br.Peek(n)
			req = httphead.ParseRequest(head)
		}
		if req == nil || !simple(req) {
			// Not of the strict form (net/http decides, and answers
			// 400 or 431 with its own wording), or not simple.
			s.handOff(c, br, headBy)
			return
		}
		br.Discard(n)
		if req.ContentLength > 0 && !s.readBody(c, br, dl, req, &headBy) {
			return
		}
		req.RemoteAddr = remote
		w.reset(req)
		if !s.serveRequest(w, req) || s.closing() {
			c.Close()
			return
		}
	}
}

// awaitRequest waits for the first byte of a next request and reports
// whether one came: until headBy for a connection's first request (a
// client that connects and sends nothing is cut at the read-header
// timeout), else up to the idle timeout.
func (s *Server) awaitRequest(br *bufio.Reader, dl *deadline, headBy time.Time) bool {
	if br.Buffered() > 0 { // pipelined
		return !s.closing()
	}
	var since time.Time
	switch {
	case !headBy.IsZero():
		dl.head(headBy)
	case s.IdleTimeout > 0:
		since = time.Now()
		dl.idle(since, s.IdleTimeout)
	case !dl.at.IsZero():
		dl.set(time.Time{}, false) // an earlier request's head deadline
	}
	// Checked after the deadline is set: Shutdown sets closing before it
	// wakes waiting connections, so its wake-up is not overwritten unseen.
	if s.closing() {
		return false
	}
	for {
		_, err := br.Peek(1)
		if err == nil {
			return !s.closing()
		}
		if !errors.Is(err, os.ErrDeadlineExceeded) || s.closing() || since.IsZero() ||
			time.Since(since) >= s.IdleTimeout {
			return false
		}
		// A deadline kept from an earlier wait fired early.
		dl.set(since.Add(s.IdleTimeout), true)
	}
}

// bufferHead waits, until *headBy, for br to hold the whole request head,
// and returns its length; 0 if it cannot fit.
func (s *Server) bufferHead(br *bufio.Reader, dl *deadline, headBy *time.Time) (int, error) {
	for {
		b, _ := br.Peek(br.Buffered())
		if n, ok := httphead.HeadEnd(b); ok {
			return n, nil
		}
		if len(b) == br.Size() {
			return 0, nil
		}
		s.headDeadline(dl, headBy)
		if _, err := br.Peek(len(b) + 1); err != nil {
			return 0, err
		}
	}
}

// headDeadline makes reads end at the request's read-header deadline,
// *headBy, fixing it at the timeout from now if it is not yet.
func (s *Server) headDeadline(dl *deadline, headBy *time.Time) {
	if s.ReadHeaderTimeout <= 0 {
		return
	}
	if headBy.IsZero() {
		*headBy = time.Now().Add(s.ReadHeaderTimeout)
	}
	dl.head(*headBy)
}

// readBody reads a simple request's body (at most MaxSimpleBody bytes)
// still under the read-header timeout, so that an app trickling it cannot
// keep a handler, and the pooled upstream connection the handler may have
// taken, waiting. A body that does not arrive in time is answered 408 and
// the connection closed; one cut short just closes it. It reports whether
// the request can be served.
func (s *Server) readBody(c net.Conn, br *bufio.Reader, dl *deadline, req *http.Request, headBy *time.Time) bool {
	if int64(br.Buffered()) < req.ContentLength {
		s.headDeadline(dl, headBy)
	}
	b := make([]byte, req.ContentLength)
	if _, err := io.ReadFull(br, b); err != nil {
		if errors.Is(err, os.ErrDeadlineExceeded) {
			writeStatus(c, http.StatusRequestTimeout, "request body not received within limits.readHeaderTimeout")
		}
		c.Close()
		return false
	}
	req.Body = &readBodyReader{Reader: bytes.NewReader(b), b: b}
	return true
}

// readBodyReader is a request body read in full before the handler ran.
type readBodyReader struct {
	*bytes.Reader
	b []byte
}

func (*readBodyReader) Close() error { return nil }

// Bytes returns the whole body, so that a handler that keeps it (the hold
// path) need not copy it. The handler must not also read it.
func (r *readBodyReader) Bytes() []byte { return r.b }

// simple reports whether this server takes req itself.
func simple(r *http.Request) bool {
	if r.ProtoMajor != 1 || r.ProtoMinor != 1 || r.ContentLength < 0 || r.ContentLength > MaxSimpleBody ||
		len(r.TransferEncoding) > 0 || r.Host == "" {
		return false
	}
	for _, k := range [...]string{"Upgrade", "Expect", "Trailer"} {
		if _, ok := r.Header[k]; ok {
			return false
		}
	}
	return true
}

// handOff gives the connection to the fallback server, with the bytes of
// the current request replayed: all of them are still in br. The request's
// head must still be in by headBy (see prefixConn.SetReadDeadline).
func (s *Server) handOff(c net.Conn, br *bufio.Reader, headBy time.Time) {
	buffered, _ := br.Peek(br.Buffered())
	replay := append([]byte(nil), buffered...)
	if headBy.IsZero() && s.ReadHeaderTimeout > 0 {
		headBy = time.Now().Add(s.ReadHeaderTimeout)
	}
	c.SetReadDeadline(headBy)
	pc := &prefixConn{Conn: c, prefix: replay, headBy: headBy}
	if !s.handoff.deliver(pc) {
		c.Close()
	}
}

// serveRequest runs the handler for one simple request and reports whether
// the connection may carry another.
// The connection's one responseWriter is reset for each request: the
// handler must not keep it, or its Header, after it returns (none of
// Misaki's do; net/http asks the same).
func (s *Server) serveRequest(w *responseWriter, req *http.Request) (keep bool) {
	if req.Body == nil {
		req.Body = http.NoBody
	}
	defer func() {
		if p := recover(); p != nil {
			if p != http.ErrAbortHandler {
				s.Log.Error("handler panic", "panic", p)
			}
			keep = false
		}
		w.stopWatch()
	}()
	s.Handler.ServeHTTP(w, req)
	if !w.finish() {
		return false
	}
	// Whatever body the handler left unread is consumed, so the next
	// request starts at its first byte.
	if _, err := io.Copy(io.Discard, req.Body); err != nil {
		return false
	}
	return !req.Close && !w.closeAfter
}

// writeStatus answers a request this server could not read, and the
// connection is closed after.
func writeStatus(c net.Conn, code int, msg string) {
	c.SetWriteDeadline(time.Now().Add(time.Second))
	body := "misaki: " + msg + "\n"
	io.WriteString(c, "HTTP/1.1 "+strconv.Itoa(code)+" "+http.StatusText(code)+
		"\r\nContent-Type: text/plain; charset=utf-8\r\nConnection: close\r\nContent-Length: "+
		strconv.Itoa(len(body))+"\r\n\r\n"+body)
}
