// Package smuggletest is a corpus of HTTP/1.1 request-smuggling attempts
// (RFC 9112 §11.2) and a runner that sends each one on a raw connection to
// a proxy in front of a recording upstream. The edge's and the gateway's
// tests run it on every HTTP/1.1 server path they have.
//
// Each case hides a second request, for /smuggled/ID, behind a first one
// whose framing is broken, ambiguous or merely unusual. Whatever the trick,
// the hidden request must never reach the upstream unless the framing
// really is exact (then it is an ordinary pipelined request, and the
// upstream must see the same two requests as the proxy); and a connection
// whose framing broke, or was ambiguous, must be closed.
package smuggletest

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// Seen is a request as the upstream received it.
type Seen struct {
	Method, Path string
	Header       http.Header
	Trailer      http.Header
	Body         string
	BodyErr      error // the body did not arrive whole
}

// Upstream is a real HTTP server on loopback that records every request.
type Upstream struct {
	*httptest.Server
	mu   sync.Mutex // guards seen
	seen []Seen
}

// NewUpstream starts an upstream that reads each body to its end and
// answers 200 "ok PATH".
func NewUpstream(t testing.TB) *Upstream {
	u := &Upstream{}
	u.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, err := io.ReadAll(r.Body)
		u.mu.Lock()
		u.seen = append(u.seen, Seen{Method: r.Method, Path: r.URL.Path, Header: r.Header.Clone(),
			Trailer: r.Trailer.Clone(), Body: string(b), BodyErr: err})
		u.mu.Unlock()
		fmt.Fprintf(w, "ok %s", r.URL.Path)
	}))
	t.Cleanup(u.Close)
	return u
}

// Seen returns the requests received whose path ends in /id.
func (u *Upstream) Seen(id string) []Seen {
	u.mu.Lock()
	defer u.mu.Unlock()
	var out []Seen
	for _, s := range u.seen {
		if strings.HasSuffix(s.Path, "/"+id) {
			out = append(out, s)
		}
	}
	return out
}

// Outcome is what the client must see for a case.
type Outcome int

const (
	// Refused: the framing is broken. The client gets 400 (501 for a
	// transfer coding net/http does not implement), or nothing, and the
	// connection is closed. The first request reaches the upstream, if at
	// all, only with its body cut short.
	Refused Outcome = iota
	// Closed: the framing is ambiguous but resolvable (RFC 9112 §6.1:
	// Transfer-Encoding overrides Content-Length; an HTTP/1.0 message's
	// Transfer-Encoding is faulty). The first request is answered, or
	// refused, and the connection closed before anything after it is read
	// as a request.
	Closed
	// Pipelined: the framing is exact, so what follows the first request
	// is an ordinary next request: both are answered, in order, and the
	// upstream sees the first with exactly Body.
	Pipelined
	// NotForwarded: the first request is answered by the proxy itself
	// (it names no route the upstream serves); the connection may stay.
	NotForwarded
)

func (o Outcome) String() string {
	return [...]string{"refused", "closed", "pipelined", "not forwarded"}[o]
}

// Msg is what a case builds its bytes from.
type Msg struct {
	Host     string // routes to the upstream
	Path     string // the first request's path
	Extra    string // header lines for the first request, each ending in CRLF
	Smuggled string // the hidden request: no body, and it asks to close
}

// Case is one smuggling attempt.
type Case struct {
	Name  string
	Build func(m Msg) string
	Want  Outcome
	Body  string // Pipelined: the first request's body as the upstream must see it
}

// post is a first request with the given framing header lines and body.
func post(m Msg, framing, body string) string {
	return "POST " + m.Path + " HTTP/1.1\r\nHost: " + m.Host + "\r\n" + m.Extra + framing + "\r\n" + body
}

func cl(body string) string { return "Content-Length: " + strconv.Itoa(len(body)) + "\r\n" }

// chunked frames s as one chunk and the last chunk.
func chunked(s string) string {
	return strconv.FormatInt(int64(len(s)), 16) + "\r\n" + s + "\r\n0\r\n\r\n"
}

// requestInBody is a body that looks like a request.
const requestInBody = "helloGET /in-body HTTP/1.1\r\nHost: x\r\n\r\n"

// Corpus is every case.
var Corpus = []Case{
	// Content-Length and Transfer-Encoding together: Transfer-Encoding
	// wins, and the connection must close after (RFC 9112 §6.1).
	{Name: "CL.TE", Want: Closed, Build: func(m Msg) string {
		body := "0\r\n\r\n" + m.Smuggled
		return post(m, cl(body)+"Transfer-Encoding: chunked\r\n", body)
	}},
	{Name: "TE.CL", Want: Closed, Build: func(m Msg) string {
		inner := "G" + m.Smuggled
		return post(m, "Content-Length: 4\r\nTransfer-Encoding: chunked\r\n", chunked(inner))
	}},
	{Name: "TE.CL, Content-Length first and zero", Want: Closed, Build: func(m Msg) string {
		return post(m, "Content-Length: 0\r\nTransfer-Encoding: chunked\r\n", chunked(m.Smuggled))
	}},

	// Transfer-Encoding obfuscations (TE.TE).
	{Name: "TE xchunked", Want: Refused, Build: func(m Msg) string {
		return post(m, "Transfer-Encoding: xchunked\r\n"+cl("0\r\n\r\n"), "0\r\n\r\n"+m.Smuggled)
	}},
	{Name: "TE chunked, identity", Want: Refused, Build: func(m Msg) string {
		return post(m, "Transfer-Encoding: chunked, identity\r\n", "0\r\n\r\n"+m.Smuggled)
	}},
	{Name: "TE identity, chunked", Want: Refused, Build: func(m Msg) string {
		return post(m, "Transfer-Encoding: identity, chunked\r\n", "0\r\n\r\n"+m.Smuggled)
	}},
	{Name: "TE twice", Want: Refused, Build: func(m Msg) string {
		return post(m, "Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n", "0\r\n\r\n"+m.Smuggled)
	}},
	{Name: "TE chunked and x", Want: Refused, Build: func(m Msg) string {
		return post(m, "Transfer-Encoding: chunked\r\nTransfer-Encoding: x\r\n"+cl("0\r\n\r\n"), "0\r\n\r\n"+m.Smuggled)
	}},
	{Name: "TE leading space and CL", Want: Closed, Build: func(m Msg) string {
		body := "0\r\n\r\n" + m.Smuggled
		return post(m, "Transfer-Encoding:  chunked\r\n"+cl(body), body)
	}},
	{Name: "TE tab and CL", Want: Closed, Build: func(m Msg) string {
		body := "0\r\n\r\n" + m.Smuggled
		return post(m, "Transfer-Encoding:\tchunked\r\n"+cl(body), body)
	}},
	{Name: "TE uppercase and CL", Want: Closed, Build: func(m Msg) string {
		body := "0\r\n\r\n" + m.Smuggled
		return post(m, "TRANSFER-ENCODING: CHUNKED\r\n"+cl(body), body)
	}},
	{Name: "TE space before colon", Want: Refused, Build: func(m Msg) string {
		body := "0\r\n\r\n" + m.Smuggled
		return post(m, "Transfer-Encoding : chunked\r\n"+cl(body), body)
	}},
	{Name: "TE vertical tab", Want: Refused, Build: func(m Msg) string {
		body := "0\r\n\r\n" + m.Smuggled
		return post(m, "Transfer-Encoding:\x0bchunked\r\n"+cl(body), body)
	}},
	{Name: "TE quoted", Want: Refused, Build: func(m Msg) string {
		return post(m, "Transfer-Encoding: \"chunked\"\r\n", "0\r\n\r\n"+m.Smuggled)
	}},
	// net/http replaces obs-fold with a space (RFC 9112 §5.2 allows it;
	// nginx refuses): a folded Transfer-Encoding is one...
	{Name: "TE obs-folded", Want: Closed, Build: func(m Msg) string {
		body := "0\r\n\r\n" + m.Smuggled
		return post(m, "Transfer-Encoding:\r\n chunked\r\n"+cl(body), body)
	}},
	// ...and one folded into another header is that header's value.
	{Name: "TE folded into another header", Want: Pipelined, Body: "0\r\n\r\n" + requestInBody, Build: func(m Msg) string {
		body := "0\r\n\r\n" + requestInBody
		return post(m, "X-A: a\r\n Transfer-Encoding: chunked\r\n"+cl(body), body) + m.Smuggled
	}},
	{Name: "TE on HTTP/1.0", Want: Closed, Build: func(m Msg) string {
		body := "0\r\n\r\n" + m.Smuggled
		return "POST " + m.Path + " HTTP/1.0\r\nHost: " + m.Host + "\r\nConnection: keep-alive\r\n" + m.Extra +
			"Transfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n" + body
	}},

	// Content-Length tricks.
	{Name: "CL twice, differing", Want: Refused, Build: func(m Msg) string {
		return post(m, "Content-Length: 0\r\nContent-Length: 5\r\n", "hello"+m.Smuggled)
	}},
	{Name: "CL list", Want: Refused, Build: func(m Msg) string {
		return post(m, "Content-Length: 5, 5\r\n", "hello"+m.Smuggled)
	}},
	{Name: "CL plus sign", Want: Refused, Build: func(m Msg) string {
		return post(m, "Content-Length: +5\r\n", "hello"+m.Smuggled)
	}},
	{Name: "CL negative", Want: Refused, Build: func(m Msg) string {
		return post(m, "Content-Length: -1\r\n", "hello"+m.Smuggled)
	}},
	{Name: "CL hex", Want: Refused, Build: func(m Msg) string {
		return post(m, "Content-Length: 0x5\r\n", "hello"+m.Smuggled)
	}},
	{Name: "CL overflow", Want: Refused, Build: func(m Msg) string {
		return post(m, "Content-Length: 18446744073709551621\r\n", "hello"+m.Smuggled)
	}},
	{Name: "CL space inside", Want: Refused, Build: func(m Msg) string {
		return post(m, "Content-Length: 1 0\r\n", "hello"+m.Smuggled)
	}},
	{Name: "CL in header name with space", Want: Refused, Build: func(m Msg) string {
		return post(m, "Content Length: 5\r\n", "hello"+m.Smuggled)
	}},
	{Name: "CL twice, same", Want: Pipelined, Body: "hello", Build: func(m Msg) string {
		return post(m, "Content-Length: 5\r\nContent-Length: 5\r\n", "hello"+m.Smuggled)
	}},
	{Name: "request after a body shorter than the data", Want: Pipelined, Body: "hello", Build: func(m Msg) string {
		return post(m, "Content-Length: 5\r\n", "hello"+m.Smuggled)
	}},
	{Name: "request inside a longer body", Want: Pipelined, Body: requestInBody, Build: func(m Msg) string {
		return post(m, cl(requestInBody), requestInBody) + m.Smuggled
	}},

	// Chunked framing errors: a bad size line must not resynchronise.
	{Name: "chunk size too large", Want: Refused, Build: func(m Msg) string {
		return post(m, "Transfer-Encoding: chunked\r\n", "ffffffffffffffff1\r\nx\r\n0\r\n\r\n"+m.Smuggled)
	}},
	{Name: "chunk size negative", Want: Refused, Build: func(m Msg) string {
		return post(m, "Transfer-Encoding: chunked\r\n", "-1\r\nx\r\n0\r\n\r\n"+m.Smuggled)
	}},
	{Name: "chunk size 0x", Want: Refused, Build: func(m Msg) string {
		return post(m, "Transfer-Encoding: chunked\r\n", "0x1\r\nx\r\n0\r\n\r\n"+m.Smuggled)
	}},
	{Name: "chunk size not hex", Want: Refused, Build: func(m Msg) string {
		return post(m, "Transfer-Encoding: chunked\r\n", "zz\r\n"+m.Smuggled)
	}},
	{Name: "chunk size with NUL", Want: Refused, Build: func(m Msg) string {
		return post(m, "Transfer-Encoding: chunked\r\n", "1\x00\r\nx\r\n0\r\n\r\n"+m.Smuggled)
	}},
	// net/http skips chunk extensions unread, whatever they hold: the
	// message parses, and only the close keeps what follows from being
	// read as a request.
	{Name: "chunk extension with NUL", Want: Closed, Build: func(m Msg) string {
		return post(m, "Transfer-Encoding: chunked\r\n", "1;\x00\r\nx\r\n0\r\n\r\n"+m.Smuggled)
	}},
	{Name: "chunk extension with a quoted line end", Want: Closed, Build: func(m Msg) string {
		return post(m, "Transfer-Encoding: chunked\r\n", "1;a=\"\r\nx\r\n0\r\n\r\n\"\r\nx\r\n0\r\n\r\n"+m.Smuggled)
	}},
	{Name: "chunk extension with a bare LF", Want: Refused, Build: func(m Msg) string {
		return post(m, "Transfer-Encoding: chunked\r\n", "1;a\nx\r\n0\r\n\r\n"+m.Smuggled)
	}},
	{Name: "chunk size line ends in bare LF", Want: Refused, Build: func(m Msg) string {
		return post(m, "Transfer-Encoding: chunked\r\n", "1\nx\r\n0\r\n\r\n"+m.Smuggled)
	}},
	{Name: "chunk data longer than its size", Want: Refused, Build: func(m Msg) string {
		return post(m, "Transfer-Encoding: chunked\r\n", "1\r\nxyz\r\n0\r\n\r\n"+m.Smuggled)
	}},
	{Name: "chunk data ends in bare LF", Want: Refused, Build: func(m Msg) string {
		return post(m, "Transfer-Encoding: chunked\r\n", "1\r\nx\n0\r\n\r\n"+m.Smuggled)
	}},
	{Name: "last chunk without its CRLF", Want: Refused, Build: func(m Msg) string {
		return post(m, "Transfer-Encoding: chunked\r\n", "0\r\n"+m.Smuggled)
	}},

	// Trailers: framing and routing fields in them change nothing, and
	// never reach the upstream.
	{Name: "trailer Content-Length", Want: Closed, Build: func(m Msg) string {
		return post(m, "Transfer-Encoding: chunked\r\nTrailer: X-Sum\r\n", "1\r\nx\r\n0\r\nX-Sum: 1\r\nContent-Length: 40\r\n\r\n"+m.Smuggled)
	}},
	{Name: "trailer Transfer-Encoding", Want: Closed, Build: func(m Msg) string {
		return post(m, "Transfer-Encoding: chunked\r\nTrailer: X-Sum\r\n", "1\r\nx\r\n0\r\nX-Sum: 1\r\nTransfer-Encoding: chunked\r\n\r\n"+m.Smuggled)
	}},
	{Name: "trailer Host", Want: Closed, Build: func(m Msg) string {
		return post(m, "Transfer-Encoding: chunked\r\nTrailer: X-Sum\r\n", "1\r\nx\r\n0\r\nX-Sum: 1\r\nHost: other.example\r\n\r\n"+m.Smuggled)
	}},
	{Name: "Trailer declares Content-Length", Want: Refused, Build: func(m Msg) string {
		return post(m, "Transfer-Encoding: chunked\r\nTrailer: Content-Length\r\n", "1\r\nx\r\n0\r\nContent-Length: 40\r\n\r\n"+m.Smuggled)
	}},

	// Line ends, control characters and folding in the head.
	{Name: "bare LF head", Want: Pipelined, Body: "hello", Build: func(m Msg) string {
		return strings.ReplaceAll(post(m, "Content-Length: 5\r\n", ""), "\r\n", "\n") + "hello" + m.Smuggled
	}},
	{Name: "bare LF head with TE and CL", Want: Closed, Build: func(m Msg) string {
		body := "0\r\n\r\n" + m.Smuggled
		return strings.ReplaceAll(post(m, "Transfer-Encoding: chunked\r\n"+cl(body), ""), "\r\n", "\n") + body
	}},
	{Name: "bare CR in a header", Want: Refused, Build: func(m Msg) string {
		return post(m, "X-A: a\rContent-Length: 0\r\nContent-Length: 5\r\n", "hello"+m.Smuggled)
	}},
	{Name: "NUL in a header value", Want: Refused, Build: func(m Msg) string {
		return post(m, "X-A: a\x00b\r\nContent-Length: 5\r\n", "hello"+m.Smuggled)
	}},
	{Name: "NUL in a header name", Want: Refused, Build: func(m Msg) string {
		return post(m, "X-\x00A: b\r\nContent-Length: 5\r\n", "hello"+m.Smuggled)
	}},
	{Name: "obs-fold header injection", Want: Pipelined, Body: "hello", Build: func(m Msg) string {
		return post(m, "X-A: a\r\n Content-Length: 40\r\nContent-Length: 5\r\n", "hello"+m.Smuggled)
	}},
	{Name: "whitespace before the first header", Want: Refused, Build: func(m Msg) string {
		return "POST " + m.Path + " HTTP/1.1\r\n Content-Length: 40\r\nHost: " + m.Host + "\r\n" + m.Extra + "Content-Length: 5\r\n\r\nhello" + m.Smuggled
	}},

	// Request-line tricks.
	{Name: "absolute-form naming another host", Want: NotForwarded, Build: func(m Msg) string {
		return "GET http://nowhere.invalid" + strings.Replace(m.Path, "/first/", "/smuggled/", 1) + " HTTP/1.1\r\nHost: " + m.Host + "\r\n" + m.Extra + "Connection: close\r\n\r\n"
	}},
	{Name: "two request lines", Want: Refused, Build: func(m Msg) string {
		return "GET " + m.Path + " HTTP/1.1\r\n" + strings.TrimSuffix(m.Smuggled, "\r\n\r\n") + "\r\n" + m.Extra + "\r\n"
	}},
}

// Target is a proxy under test.
type Target struct {
	Dial func() (net.Conn, error)
	Host string // routes to Upstream
	// Extra returns header lines, each ending in CRLF, for the first
	// request of the case with this id; nil for none.
	Extra    func(id string) string
	Upstream *Upstream
}

// Run runs every case of the corpus against tg, each as a subtest on its
// own connection.
func Run(t *testing.T, tg Target) {
	for i, c := range Corpus {
		id := fmt.Sprintf("%s-%02d", strings.ReplaceAll(t.Name(), "/", "-"), i)
		t.Run(c.Name, func(t *testing.T) { runCase(t, tg, c, id) })
	}
}

func runCase(t *testing.T, tg Target, c Case, id string) {
	m := Msg{
		Host: tg.Host, Path: "/first/" + id,
		Smuggled: "GET /smuggled/" + id + " HTTP/1.1\r\nHost: " + tg.Host + "\r\nConnection: close\r\n\r\n",
	}
	if tg.Extra != nil {
		m.Extra = tg.Extra(id)
	}
	raw := c.Build(m)
	conn, err := tg.Dial()
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(5 * time.Second))
	io.WriteString(conn, raw) // the server may close before reading it all
	got, err := io.ReadAll(conn)
	open := errors.Is(err, os.ErrDeadlineExceeded)
	var resps []*http.Response
	br := bufio.NewReader(bytes.NewReader(got))
	for {
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			break
		}
		io.Copy(io.Discard, resp.Body)
		resps = append(resps, resp)
	}
	statuses := make([]int, len(resps))
	for i, r := range resps {
		statuses[i] = r.StatusCode
	}
	seen := tg.Upstream.Seen(id)
	var smuggled []Seen
	var first []Seen
	for _, s := range seen {
		switch {
		case strings.HasPrefix(s.Path, "/smuggled/"):
			smuggled = append(smuggled, s)
		case strings.HasPrefix(s.Path, "/first/"):
			first = append(first, s)
		}
		for _, k := range []string{"Content-Length", "Transfer-Encoding", "Host"} {
			if _, ok := s.Trailer[k]; ok {
				t.Errorf("the upstream got %s in the trailers of %s", k, s.Path)
			}
		}
	}
	t.Logf("statuses %v, left open %v, upstream saw %d first and %d smuggled", statuses, open, len(first), len(smuggled))
	switch c.Want {
	case Refused, Closed, NotForwarded:
		if len(smuggled) > 0 {
			t.Errorf("the smuggled request reached the upstream: %+v", smuggled[0])
		}
	}
	if c.Want == Refused || c.Want == Closed {
		for _, r := range resps {
			if !r.Close {
				t.Errorf("a %d before the close does not say Connection: close", r.StatusCode)
			}
		}
	}
	switch c.Want {
	case Refused:
		if open {
			t.Errorf("connection left open after a framing error (got %q)", got)
		}
		for _, s := range statuses {
			if s != http.StatusBadRequest && s != http.StatusNotImplemented {
				t.Errorf("statuses %v, want 400 (or 501) or nothing, and a close (got %q)", statuses, got)
				break
			}
		}
		if len(statuses) > 1 {
			t.Errorf("%d responses to one broken request", len(statuses))
		}
		for _, s := range first {
			if s.BodyErr == nil {
				t.Errorf("the upstream got the first request whole (body %q)", s.Body)
			}
		}
	case Closed:
		if open {
			t.Errorf("connection left open after an ambiguous request (got %q)", got)
		}
		if len(statuses) != 1 {
			t.Errorf("statuses %v, want one answer, then the close (got %q)", statuses, got)
		}
	case Pipelined:
		if len(statuses) != 2 || statuses[0] != http.StatusOK || statuses[1] != http.StatusOK {
			t.Errorf("statuses %v, want two 200s (got %q)", statuses, got)
		}
		if len(first) != 1 || first[0].Body != c.Body || first[0].BodyErr != nil || len(smuggled) != 1 {
			t.Errorf("the upstream saw %+v, want the first with body %q and the second on its own", seen, c.Body)
		}
	case NotForwarded:
		if len(first) > 0 || len(statuses) != 1 || statuses[0] == http.StatusOK {
			t.Errorf("statuses %v and %d forwarded, want one answer from the proxy itself", statuses, len(first))
		}
	}
}
