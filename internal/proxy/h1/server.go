// Package h1 serves simple HTTP/1.1 requests on the mesh listener without
// net/http's per-request machinery, and hands every other connection to a
// net/http server.
//
// net/http's server runs a background read per request so that the request's
// context ends when the client hangs up, allocates a cancelable context and a
// response object per request, and more. For the sidecar's common case, a
// small HTTP/1.1 request to be forwarded at once, that costs more CPU than
// the proxying. This server parses the request with http.ReadRequest (the
// same parser), calls the handler with a lean ResponseWriter, and watches for
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
	"time"

	"github.com/misaki-io/misaki/internal/sockio"
)

// MaxSimpleBody is the largest request body this server takes itself.
const MaxSimpleBody = 16 << 10

// Server serves simple requests and hands the rest to Fallback.
type Server struct {
	Handler           http.Handler
	Fallback          *http.Server // serves handed-off connections
	MaxHeaderBytes    int
	ReadHeaderTimeout time.Duration
	IdleTimeout       time.Duration
	Log               *slog.Logger

	handoff *chanListener
	ln      net.Listener
	mu      sync.Mutex // guards conns and closed
	conns   map[net.Conn]struct{}
	closed  bool
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
			s.mu.Lock()
			closed := s.closed
			s.mu.Unlock()
			if closed {
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
		if s.closed {
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
	s.closed = true
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

func (s *Server) closing() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.closed
}

func (s *Server) forget(c net.Conn) {
	s.mu.Lock()
	delete(s.conns, c)
	s.mu.Unlock()
	s.wg.Done()
}

// serveConn serves requests on c until it closes, fails, or is handed off.
func (s *Server) serveConn(c net.Conn) {
	defer s.forget(c)
	sc := sockio.Wrap(c) // for reads and writes; deadlines and Close work on either
	rec := &recordingReader{r: sc, limit: -1}
	br := bufio.NewReaderSize(rec, 4096)
	bw := bufio.NewWriterSize(sc, 4096)
	remote := c.RemoteAddr().String()
	w := &responseWriter{conn: sc, bw: bw, br: br, rec: rec, header: make(http.Header, 8)}
	for {
		// Wait for the next request up to the idle timeout, then give its
		// head the read-header timeout.
		if s.IdleTimeout > 0 {
			c.SetReadDeadline(time.Now().Add(s.IdleTimeout))
		}
		// Remember every byte from the start of this request, for a
		// hand-off: with nothing buffered (no pipelining, the usual case)
		// the recording starts with the read that brings its first byte;
		// otherwise the bytes already buffered are copied first. As
		// net/http, the head may take MaxHeaderBytes plus one buffer.
		headLimit := s.MaxHeaderBytes + 4096
		var start []byte
		fresh := br.Buffered() == 0
		if fresh {
			rec.start(headLimit)
		}
		if _, err := br.Peek(1); err != nil || s.closing() {
			c.Close()
			return
		}
		if s.ReadHeaderTimeout > 0 {
			c.SetReadDeadline(time.Now().Add(s.ReadHeaderTimeout))
		}
		if !fresh {
			pending, _ := br.Peek(br.Buffered())
			start = append([]byte(nil), pending...)
			rec.start(max(headLimit-len(start), 1))
		}
		req, err := http.ReadRequest(br)
		if err != nil {
			if rec.tripped {
				writeStatus(c, http.StatusRequestHeaderFieldsTooLarge, "request header fields too large")
			} else if !errors.Is(err, io.EOF) && !errors.Is(err, io.ErrUnexpectedEOF) {
				var ne net.Error
				if !errors.As(err, &ne) {
					// Not a read failure: a malformed request, or a
					// protocol this server does not parse. Let net/http
					// decide (it answers 400 with its own wording).
					s.handOff(c, start, rec.stop(), br)
					return
				}
			}
			c.Close()
			return
		}
		raw := rec.stop()
		if !simple(req) {
			s.handOff(c, start, raw, br)
			return
		}
		if req.ContentLength > 0 && !readBody(c, req) {
			return
		}
		c.SetReadDeadline(time.Time{})
		req.RemoteAddr = remote
		w.reset(req)
		if !s.serveRequest(w, req) || s.closing() {
			c.Close()
			return
		}
	}
}

// readBody reads a simple request's body (at most MaxSimpleBody bytes)
// still under the read-header deadline, so that an app trickling it cannot
// keep a handler, and the pooled upstream connection the handler may have
// taken, waiting. A body that does not arrive in time is answered 408 and
// the connection closed; one cut short just closes it. It reports whether
// the request can be served.
func readBody(c net.Conn, req *http.Request) bool {
	b := make([]byte, req.ContentLength)
	if _, err := io.ReadFull(req.Body, b); err != nil {
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

// handOff gives the connection, with the bytes of the current request
// replayed, to the fallback server.
func (s *Server) handOff(c net.Conn, start, raw []byte, br *bufio.Reader) {
	// raw holds every byte read from the socket for this request; bytes
	// already in br before it began are in start. Whatever br still holds
	// was read within raw, so replaying start+raw is exact.
	replay := append(start, raw...)
	c.SetReadDeadline(time.Time{})
	pc := &prefixConn{Conn: c, prefix: replay}
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
