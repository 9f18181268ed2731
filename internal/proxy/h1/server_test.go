package h1

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// start serves h on loopback through a lean server whose fallback is
// net/http with the same handler, and returns the address.
func start(t testing.TB, h http.Handler, opts ...func(*Server)) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var protos http.Protocols
	protos.SetHTTP1(true)
	protos.SetUnencryptedHTTP2(true)
	s := &Server{
		Handler: h, Fallback: &http.Server{Handler: h, Protocols: &protos, MaxHeaderBytes: 4096},
		ReadHeaderTimeout: 2 * time.Second, IdleTimeout: 5 * time.Second,
		Log: slog.New(slog.NewTextHandler(io.Discard, nil)),
	}
	for _, o := range opts {
		o(s)
	}
	done := make(chan error, 1)
	go func() { done <- s.Serve(ln) }()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := s.Shutdown(ctx); err != nil {
			t.Errorf("Shutdown: %v", err)
		}
		if err := <-done; err != http.ErrServerClosed {
			t.Errorf("Serve: %v", err)
		}
	})
	return ln.Addr().String()
}

// which reports which server answered: the lean one or net/http.
func which(w http.ResponseWriter) string {
	if _, ok := w.(*responseWriter); ok {
		return "lean"
	}
	return "net/http"
}

func echo(w http.ResponseWriter, r *http.Request) {
	b, _ := io.ReadAll(r.Body)
	w.Header().Set("X-Server", which(w))
	fmt.Fprintf(w, "%s %s %s body=%q", r.Method, r.URL.RequestURI(), r.Proto, b)
}

func raw(t *testing.T, addr, req string) string {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	io.WriteString(c, req)
	c.SetReadDeadline(time.Now().Add(3 * time.Second))
	b, _ := io.ReadAll(c)
	return string(b)
}

func TestWhoServesWhat(t *testing.T) {
	addr := start(t, http.HandlerFunc(echo))
	for _, tc := range []struct {
		name, req, server, body string
	}{
		{"simple GET", "GET /a?b=1 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n", "lean", `GET /a?b=1 HTTP/1.1 body=""`},
		{"small POST", "POST /p HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nConnection: close\r\n\r\nabc", "lean", `body="abc"`},
		{"HTTP/1.0", "GET / HTTP/1.0\r\nHost: x\r\n\r\n", "net/http", "HTTP/1.0"},
		{"chunked body", "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n3\r\nabc\r\n0\r\n\r\n", "net/http", `body="abc"`},
		{"large body", "POST / HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: 20000\r\n\r\n" + strings.Repeat("z", 20000), "net/http", "body="},
		{"expect", "POST / HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: 1\r\nConnection: close\r\n\r\nq", "net/http", `body="q"`},
		{"bare LF line ends", "GET /lf HTTP/1.1\nHost: x\nConnection: close\n\n", "net/http", "GET /lf"},
		{"absolute-form", "GET http://x/abs HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n", "net/http", "GET /abs"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := raw(t, addr, tc.req)
			if !strings.Contains(got, "X-Server: "+tc.server) || !strings.Contains(got, tc.body) {
				t.Fatalf("got %q, want server %s and %q", got, tc.server, tc.body)
			}
		})
	}
	t.Run("malformed is 400 from net/http", func(t *testing.T) {
		// Longer than the h2c preface, which net/http waits for first.
		if got := raw(t, addr, "GARBAGE REQUEST LINE HTTP/9.9\r\nHost: x\r\n\r\n"); !strings.HasPrefix(got, "HTTP/1.1 400") {
			t.Fatalf("got %q", got)
		}
	})
	t.Run("two Host headers is 400 from net/http", func(t *testing.T) {
		if got := raw(t, addr, "GET / HTTP/1.1\r\nHost: x\r\nHost: y\r\n\r\n"); !strings.HasPrefix(got, "HTTP/1.1 400") {
			t.Fatalf("got %q", got)
		}
	})
	t.Run("head too large is 431", func(t *testing.T) {
		got := raw(t, addr, "GET / HTTP/1.1\r\nHost: x\r\nX-Big: "+strings.Repeat("a", 16<<10)+"\r\n\r\n")
		if !strings.HasPrefix(got, "HTTP/1.1 431") {
			t.Fatalf("got %.80q", got)
		}
	})
}

func TestKeepAliveAndPipelining(t *testing.T) {
	addr := start(t, http.HandlerFunc(echo))
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	// Three requests in one write, the last one upgrading to net/http's
	// care (HTTP/1.0): answered in order on one connection.
	io.WriteString(c, "GET /1 HTTP/1.1\r\nHost: x\r\n\r\nPOST /2 HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\nhiGET /3 HTTP/1.0\r\nHost: x\r\n\r\n")
	br := bufio.NewReader(c)
	for i, want := range []string{"GET /1 HTTP/1.1", `POST /2 HTTP/1.1 body="hi"`, "GET /3 HTTP/1.0"} {
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			t.Fatalf("response %d: %v", i+1, err)
		}
		b, _ := io.ReadAll(resp.Body)
		if !strings.HasPrefix(string(b), want) {
			t.Fatalf("response %d: %q, want %q", i+1, b, want)
		}
	}
}

func TestResponseFraming(t *testing.T) {
	addr := start(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/length":
			w.Header().Set("Content-Length", "5")
			io.WriteString(w, "hello")
		case "/chunked":
			w.Header().Set("Trailer", "X-Sum")
			io.WriteString(w, "part1 ")
			w.(http.Flusher).Flush()
			io.WriteString(w, "part2")
			w.Header().Set("X-Sum", "11")
			w.Header().Set(http.TrailerPrefix+"X-Late", "yes")
		case "/nocontent":
			w.WriteHeader(http.StatusNoContent)
		case "/empty":
		}
	}))
	client := &http.Client{}
	get := func(method, path string) (*http.Response, string) {
		req, _ := http.NewRequest(method, "http://"+addr+path, nil)
		resp, err := client.Do(req)
		if err != nil {
			t.Fatalf("%s %s: %v", method, path, err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp, string(b)
	}
	if resp, b := get("GET", "/length"); b != "hello" || resp.ContentLength != 5 || resp.Header.Get("Date") == "" {
		t.Errorf("length: %q %d %v", b, resp.ContentLength, resp.Header)
	}
	if resp, b := get("HEAD", "/length"); b != "" || resp.ContentLength != 5 {
		t.Errorf("HEAD: %q %d", b, resp.ContentLength)
	}
	resp, b := get("GET", "/chunked")
	if b != "part1 part2" || resp.Trailer.Get("X-Sum") != "11" || resp.Trailer.Get("X-Late") != "yes" {
		t.Errorf("chunked: %q trailers %v", b, resp.Trailer)
	}
	if resp, b := get("GET", "/nocontent"); resp.StatusCode != 204 || b != "" {
		t.Errorf("204: %d %q", resp.StatusCode, b)
	}
	if resp, b := get("GET", "/empty"); resp.StatusCode != 200 || b != "" {
		t.Errorf("empty: %d %q", resp.StatusCode, b)
	}
}

// TestWatchClient: the watch ends the context when the client hangs up, and
// hands back a pipelined byte intact when the client stays.
func TestWatchClient(t *testing.T) {
	watching := make(chan string, 1) // a request's path, once its client is watched
	gone := make(chan bool, 1)
	addr := start(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.ReadAll(r.Body)
		rw := w.(*responseWriter)
		ctx, stop := rw.WatchClient(r.Context())
		defer stop()
		var read <-chan struct{}
		var stay <-chan time.Time
		switch r.URL.Path {
		case "/leave": // until the client hangs up
		case "/one": // until the watch has read the next request's first byte
			read = rw.watch.done
		default: // the client stays, and sends nothing more
			stay = time.After(300 * time.Millisecond)
		}
		watching <- r.URL.Path
		select {
		case <-ctx.Done():
			gone <- true
		case <-read:
			fmt.Fprintf(w, "stayed %s %s", r.Method, r.URL.Path)
		case <-stay:
			fmt.Fprintf(w, "stayed %s %s", r.Method, r.URL.Path)
		case <-time.After(10 * time.Second): // a failure: the test's own waits end sooner
			fmt.Fprintf(w, "still watching %s", r.URL.Path)
		}
	}))
	watched := func(path string) {
		t.Helper()
		select {
		case got := <-watching:
			if got != path {
				t.Fatalf("%s watched, want %s", got, path)
			}
		case <-time.After(5 * time.Second):
			t.Fatalf("%s not watched", path)
		}
	}
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	io.WriteString(c, "GET /leave HTTP/1.1\r\nHost: x\r\n\r\n")
	watched("/leave")
	c.Close()
	select {
	case <-gone:
	case <-time.After(5 * time.Second):
		t.Fatal("the watch did not see the client leave")
	}

	c, err = net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	io.WriteString(c, "GET /one HTTP/1.1\r\nHost: x\r\n\r\n")
	watched("/one")
	io.WriteString(c, "GET /two HTTP/1.1\r\nHost: x\r\n\r\n")
	br := bufio.NewReader(c)
	for _, want := range []string{"stayed GET /one", "stayed GET /two"} { // not "ET /two": the byte read ahead is handed back
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		if string(b) != want {
			t.Fatalf("got %q, want %q", b, want)
		}
	}
}

// FuzzConnection feeds arbitrary bytes to a live server: it must neither
// panic nor hang, and must still serve a well-formed request afterwards.
func FuzzConnection(f *testing.F) {
	f.Add([]byte("GET / HTTP/1.1\r\nHost: x\r\n\r\n"))
	f.Add([]byte("POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabcGET /2 HTTP/1.1\r\nHost: x\r\n\r\n"))
	f.Add([]byte("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"))
	f.Add([]byte("GET / HTTP/1.1\r\nHost: x\r\nContent-Length: -1\r\n\r\n"))
	f.Add([]byte("GET / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n"))
	f.Add([]byte("\r\n\r\n\r\nGET"))
	addr := start(f, http.HandlerFunc(echo))
	f.Fuzz(func(t *testing.T, in []byte) {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		c.Write(in)
		c.SetReadDeadline(time.Now().Add(100 * time.Millisecond))
		io.Copy(io.Discard, c)
		c.Close()
		resp, err := http.Get("http://" + addr + "/after")
		if err != nil {
			t.Fatalf("server unusable after %q: %v", in, err)
		}
		resp.Body.Close()
	})
}

// A small body is read before the handler runs, within the read-header
// timeout: a body split across packets arrives whole, and an app that
// trickles its body gets 408 and never reaches the handler (nor holds a
// pooled upstream connection through it).
func TestBodyWithinReadHeaderTimeout(t *testing.T) {
	var calls atomic.Int32
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		calls.Add(1)
		echo(w, r)
	})
	// The split body on a server whose read-header timeout no loaded
	// machine reaches between the two writes; the trickled one on a server
	// with a short one, to wait for.
	addr := start(t, h, func(s *Server) { s.ReadHeaderTimeout = time.Minute })
	short := start(t, h, func(s *Server) { s.ReadHeaderTimeout = 300 * time.Millisecond })

	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	io.WriteString(c, "POST /a HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\nhello")
	time.Sleep(50 * time.Millisecond) // the client's pause, so that the body comes in two reads
	io.WriteString(c, "world")
	c.SetReadDeadline(time.Now().Add(3 * time.Second))
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	if resp.Header.Get("X-Server") != "lean" || !strings.Contains(string(b), `body="helloworld"`) {
		t.Fatalf("split body: %s %q from %s", resp.Status, b, resp.Header.Get("X-Server"))
	}

	began := time.Now()
	got := raw(t, short, "POST /b HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\nonly ten b")
	if !strings.HasPrefix(got, "HTTP/1.1 408 ") || !strings.Contains(got, "Connection: close") {
		t.Fatalf("trickled body: got %q, want 408 and close", got)
	}
	if d := time.Since(began); d > 2*time.Second {
		t.Fatalf("408 after %v, want about the 300ms read-header timeout", d)
	}
	if n := calls.Load(); n != 1 {
		t.Fatalf("handler ran %d times, want 1 (never for the trickled body)", n)
	}
}

// The connection's response writer is reused: nothing of one response may
// leak into the next.
func TestNoLeakBetweenRequests(t *testing.T) {
	var n atomic.Int32
	addr := start(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if n.Add(1) == 1 {
			w.Header().Set("X-First", "1")
			w.WriteHeader(http.StatusTeapot)
			io.WriteString(w, "first")
			return
		}
		io.WriteString(w, "second") // no Content-Length: chunked
	}))
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	br := bufio.NewReader(c)
	c.SetDeadline(time.Now().Add(3 * time.Second))
	for i, want := range []struct {
		status int
		body   string
		first  string
	}{{http.StatusTeapot, "first", "1"}, {http.StatusOK, "second", ""}} {
		io.WriteString(c, "GET / HTTP/1.1\r\nHost: x\r\n\r\n")
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		if resp.StatusCode != want.status || string(b) != want.body || resp.Header.Get("X-First") != want.first {
			t.Fatalf("response %d: %d %q X-First=%q, want %d %q %q", i, resp.StatusCode, b, resp.Header.Get("X-First"), want.status, want.body, want.first)
		}
	}
}

// A head that arrives in pieces is still the lean server's; one that stops
// arriving is cut at the read-header timeout.
func TestHeadInPieces(t *testing.T) {
	// The pieces on a server whose read-header timeout no loaded machine
	// reaches between them; the stalled head on a server with a short one,
	// to wait for.
	addr := start(t, http.HandlerFunc(echo), func(s *Server) { s.ReadHeaderTimeout = time.Minute })
	short := start(t, http.HandlerFunc(echo), func(s *Server) { s.ReadHeaderTimeout = 300 * time.Millisecond })
	get := func(c net.Conn, br *bufio.Reader, path string, pieces ...string) {
		t.Helper()
		for i, piece := range pieces {
			if i > 0 {
				time.Sleep(30 * time.Millisecond) // the client's pause, so that the head comes in pieces
			}
			io.WriteString(c, piece)
		}
		c.SetReadDeadline(time.Now().Add(3 * time.Second))
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		if resp.Header.Get("X-Server") != "lean" || !strings.HasPrefix(string(b), "GET "+path) {
			t.Fatalf("got %q from %s, want the lean server's answer", b, resp.Header.Get("X-Server"))
		}
	}
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	get(c, bufio.NewReader(c), "/pieces", "GET /pieces HTTP/1.1\r\nHo", "st: x\r\n", "\r\n")

	c, err = net.Dial("tcp", short)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	br := bufio.NewReader(c)
	get(c, br, "/whole", "GET /whole HTTP/1.1\r\nHost: x\r\n\r\n") // then a head that stalls
	began := time.Now()
	io.WriteString(c, "GET /stalled HTTP/1.1\r\nHost: x\r\n")
	if n, err := br.Read(make([]byte, 1)); n != 0 || err == nil || errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("stalled head: read %d, %v; want the connection closed", n, err)
	}
	if d := time.Since(began); d < 250*time.Millisecond || d > 2*time.Second {
		t.Fatalf("stalled head cut after %v, want about the 300ms read-header timeout", d)
	}
}

// The idle deadline is kept from one request to the next while it is far
// enough away, so it can fire before a wait's own timeout; the wait must then
// go on to the exact end, and close the connection there.
//
// The deadlines are the connection's, which no fake clock reaches, so real
// time passes: the pauses are the client's. A pause that a loaded machine makes
// longer must not turn the test's request into one past the wait's end:
// request 3 comes 2.1 s into a 3 s wait (0.9 s to spare), and 0.3 s after
// the kept deadline (request 1's, 3 s after it) fired. Request 2 comes
// 1.2 s after request 1, with 1.8 s of that deadline left (it is kept
// while 1.5 s or more are).
func TestIdleTimeoutAfterKeptDeadline(t *testing.T) {
	t.Parallel()
	const idle = 3 * time.Second
	addr := start(t, http.HandlerFunc(echo), func(s *Server) { s.IdleTimeout = idle })
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	br := bufio.NewReader(c)
	get := func(path string) error {
		io.WriteString(c, "GET "+path+" HTTP/1.1\r\nHost: x\r\n\r\n")
		c.SetReadDeadline(time.Now().Add(3 * time.Second))
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			return err
		}
		_, err = io.Copy(io.Discard, resp.Body)
		return err
	}
	if err := get("/1"); err != nil { // idle deadline: t0 + 3s
		t.Fatal(err)
	}
	time.Sleep(1200 * time.Millisecond)
	if err := get("/2"); err != nil { // 1.8s left: the deadline is kept
		t.Fatal(err)
	}
	time.Sleep(2100 * time.Millisecond) // past the kept deadline, within this wait's 3s
	began := time.Now()                 // before the request: the server's wait after it begins later
	if err := get("/3"); err != nil {
		t.Fatalf("request 2.1s into a 3s idle wait: %v", err)
	}
	c.SetReadDeadline(time.Now().Add(2 * idle))
	if _, err := br.Read(make([]byte, 1)); err == nil || errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("idle connection: %v, want it closed by the server", err)
	}
	if d := time.Since(began); d < idle-200*time.Millisecond {
		t.Fatalf("idle connection closed after %v, want %v", d, idle)
	}
}

// withTimeouts sets the read-header and idle timeouts of the lean server
// and of its fallback alike, as the proxy does.
func withTimeouts(readHeader, idle time.Duration) func(*Server) {
	return func(s *Server) {
		s.ReadHeaderTimeout, s.IdleTimeout = readHeader, idle
		s.Fallback.ReadHeaderTimeout, s.Fallback.IdleTimeout = readHeader, idle
	}
}

// closedWithin reads from c until the server closes it and reports how long
// after began that was. The bounds are loose (0.9x to 1.6x) for a loaded
// machine; what they tell apart is one timeout from two, or from the idle
// timeout. The deadlines are the connection's, which no fake clock
// reaches: the tests take a timeout of 2 s, so that a close 1.2 s late
// still passes, and one that restarted the timeout at a hand-off 1.6 s in
// (3.6 s) still fails.
func closedWithin(t *testing.T, c net.Conn, began time.Time, timeout time.Duration) {
	t.Helper()
	c.SetReadDeadline(time.Now().Add(4 * timeout))
	_, err := io.Copy(io.Discard, c)
	d := time.Since(began)
	if errors.Is(err, os.ErrDeadlineExceeded) { // EOF or a reset is the server closing
		t.Fatalf("not closed by the server within %v", 4*timeout)
	}
	if d < timeout*9/10 || d >= timeout*16/10 {
		t.Fatalf("closed after %v, want about the %v read-header timeout", d, timeout)
	}
}

// A connection that never sends a byte is closed at the read-header
// timeout, as net/http does, not kept for the idle timeout.
func TestSilentConnectionClosedAtReadHeaderTimeout(t *testing.T) {
	t.Parallel()
	const timeout = 2 * time.Second
	addr := start(t, http.HandlerFunc(echo), withTimeouts(timeout, 20*time.Second))
	began := time.Now()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	closedWithin(t, c, began, timeout)
}

// A head that is still arriving when it outgrows the lean server's buffer
// is handed to net/http, which must not start the read-header timeout
// afresh: the head is cut at the timeout measured from the connection's
// start (first request) or from the request's first byte (later ones).
func TestSlowHeadCutAcrossHandOff(t *testing.T) {
	t.Parallel()
	const timeout = 2 * time.Second
	addr := start(t, http.HandlerFunc(echo), withTimeouts(timeout, 20*time.Second))
	slowHead := func(t *testing.T, c net.Conn) {
		io.WriteString(c, "GET /slow HTTP/1.1\r\nHost: x\r\nX-A: "+strings.Repeat("a", 2000))
		// The client is slow, not the test waiting for the server.
		time.Sleep(timeout * 8 / 10)
		io.WriteString(c, strings.Repeat("b", 3000)) // past 4 KiB: handed off, never ended
	}
	t.Run("first request", func(t *testing.T) {
		t.Parallel()
		began := time.Now()
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		slowHead(t, c)
		closedWithin(t, c, began, timeout)
	})
	t.Run("after a kept-alive request", func(t *testing.T) {
		t.Parallel()
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		io.WriteString(c, "GET /first HTTP/1.1\r\nHost: x\r\n\r\n")
		c.SetReadDeadline(time.Now().Add(3 * time.Second))
		br := bufio.NewReader(c)
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		time.Sleep(timeout) // idle between requests does not count
		began := time.Now()
		slowHead(t, c)
		c.SetReadDeadline(time.Now().Add(4 * timeout))
		_, err = io.Copy(io.Discard, br)
		if d := time.Since(began); errors.Is(err, os.ErrDeadlineExceeded) || d < timeout*9/10 || d >= timeout*16/10 {
			t.Fatalf("closed after %v (%v), want about the %v read-header timeout from the head's first byte", d, err, timeout)
		}
	})
}

// A handler's "Connection: close" is sent and obeyed: nothing after that
// response is read as a request.
func TestHandlerClosesConnection(t *testing.T) {
	var calls atomic.Int32
	addr := start(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		calls.Add(1)
		w.Header().Set("Connection", "close")
		http.Error(w, "no", http.StatusBadRequest)
	}))
	got := raw(t, addr, "GET /1 HTTP/1.1\r\nHost: x\r\n\r\nGET /2 HTTP/1.1\r\nHost: x\r\n\r\n")
	if !strings.HasPrefix(got, "HTTP/1.1 400 ") || !strings.Contains(got, "\r\nConnection: close\r\n") ||
		strings.Count(got, "HTTP/1.1") != 1 || calls.Load() != 1 {
		t.Fatalf("got %q after %d handler calls; want one 400 with Connection: close, then the connection closed", got, calls.Load())
	}
}
