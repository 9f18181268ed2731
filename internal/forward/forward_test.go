package forward

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"regexp"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/misaki-io/misaki/internal/proxy/config"
	"github.com/misaki-io/misaki/internal/waitfor"
)

var quiet = slog.New(slog.NewTextHandler(io.Discard, nil))

// front serves apps through f on a real loopback server.
func front(t *testing.T, f *Upstream) string {
	t.Helper()
	s := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		f.Forward(w, r, "direct")
	}))
	t.Cleanup(s.Close)
	return s.URL
}

func newForwarder(t *testing.T, upstreamURL string, mod func(*config.Route)) *Upstream {
	t.Helper()
	return newForwarderWith(t, upstreamURL, mod, Options{Log: quiet})
}

func newForwarderWith(t *testing.T, upstreamURL string, mod func(*config.Route), o Options) *Upstream {
	t.Helper()
	c := config.Config{Routes: []config.Route{{Name: "r", Hosts: []string{"svc.mesh"}, Upstream: upstreamURL}}}
	c.SetDefaults()
	if mod != nil {
		mod(&c.Routes[0])
	}
	f, err := New(c.Routes[0], o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(f.Close)
	return f
}

func do(t *testing.T, method, url string, hdr http.Header, body string) (*http.Response, string) {
	t.Helper()
	var rb io.Reader
	if body != "" {
		rb = strings.NewReader(body)
	}
	req, _ := http.NewRequest(method, url, rb)
	req.Host = "svc.mesh"
	for k, v := range hdr {
		req.Header[k] = v
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp, string(b)
}

// TestFastPathMatchesReverseProxy sends the same requests through the fast
// path and through ReverseProxy and compares what the upstream and the app see.
func TestFastPathMatchesReverseProxy(t *testing.T) {
	type seen struct {
		Method, URI, Host, Body string
		Header                  http.Header
	}
	got := make(chan seen, 1)
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		h := r.Header.Clone()
		got <- seen{r.Method, r.RequestURI, r.Host, string(b), h}
		w.Header().Set("X-Up", "1")
		w.Header().Set("Connection", "X-Up-Hop")
		w.Header().Set("X-Up-Hop", "dropped")
		w.Header().Add("Set-Cookie", "a=1")
		w.Header().Add("Set-Cookie", "b=2")
		w.WriteHeader(201)
		fmt.Fprint(w, "created")
	}))
	defer up.Close()
	fast := newForwarder(t, up.URL, nil)
	// The switch users have: every request through ReverseProxy.
	slow := newForwarderWith(t, up.URL, nil, Options{Log: quiet, NoFastPath: true})
	if slow.h1 != nil {
		t.Fatal("NoFastPath built the fast path's pool")
	}
	fastURL, slowURL := front(t, fast), front(t, slow)

	cases := []struct {
		name, method, path, body string
		hdr                      http.Header
	}{
		{"get", "GET", "/a/b?x=1&y=%20z", "", http.Header{"Accept": {"*/*"}, "X-Multi": {"1", "2"}}},
		{"post", "POST", "/submit", `{"k":"v"}`, http.Header{"Content-Type": {"application/json"}, "Idempotency-Key": {"k1"}}},
		{"hop-by-hop", "PUT", "/h", "x", http.Header{"Connection": {"X-Secret, keep-alive"}, "X-Secret": {"s"}, "Keep-Alive": {"5"},
			"Te": {"trailers, deflate"}, "Proxy-Authorization": {"p"}, "X-Forwarded-For": {"6.6.6.6"}, "Forwarded": {"for=6.6.6.6"}}},
		{"empty post", "POST", "/e", "", nil},
		{"delete", "DELETE", "/d", "", nil},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var ups [2]seen
			var apps [2]http.Header
			var bodies [2]string
			for i, base := range []string{fastURL, slowURL} {
				resp, body := do(t, tc.method, base+tc.path, tc.hdr, tc.body)
				ups[i] = <-got
				resp.Header.Del("Date")
				apps[i], bodies[i] = resp.Header, body
				if resp.StatusCode != 201 {
					t.Fatalf("status %d", resp.StatusCode)
				}
			}
			for _, s := range ups {
				s.Header.Del("Accept-Encoding") // the test client's own
				s.Header.Del("User-Agent")
			}
			if d := cmp.Diff(ups[1], ups[0]); d != "" {
				t.Errorf("upstream view differs (-reverseproxy +fast):\n%s", d)
			}
			if d := cmp.Diff(apps[1], apps[0]); d != "" {
				t.Errorf("app view differs (-reverseproxy +fast):\n%s", d)
			}
			if bodies[0] != bodies[1] || apps[0].Get("X-Up-Hop") != "" || apps[0].Get("Misaki-Delivery") != "direct" {
				t.Errorf("bodies %q %q, headers %v", bodies[0], bodies[1], apps[0])
			}
		})
	}
}

func TestFastPathReusesAndRecoversConnections(t *testing.T) {
	var conns atomic.Int32
	up := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/close" {
			w.Header().Set("Connection", "close")
		}
		fmt.Fprint(w, "ok")
	}))
	up.Config.ConnState = func(_ net.Conn, s http.ConnState) {
		if s == http.StateNew {
			conns.Add(1)
		}
	}
	up.Start()
	defer up.Close()
	f := newForwarder(t, up.URL, nil)
	url := front(t, f)
	for range 5 {
		if resp, body := do(t, "GET", url+"/", nil, ""); resp.StatusCode != 200 || body != "ok" {
			t.Fatalf("%d %q", resp.StatusCode, body)
		}
	}
	if n := conns.Load(); n != 1 {
		t.Fatalf("5 sequential requests used %d upstream connections, want 1", n)
	}
	do(t, "GET", url+"/close", nil, "")
	do(t, "GET", url+"/", nil, "")
	if n := conns.Load(); n != 2 {
		t.Fatalf("after Connection: close, %d connections, want 2", n)
	}
	// The upstream drops its idle connections (as a keep-alive timeout does):
	// the pooled one is found dead and a new one is dialed, for a POST too.
	up.CloseClientConnections()
	waitfor.True(t, "the pooled connection seen dead", func() bool {
		f.h1.mu.Lock()
		defer f.h1.mu.Unlock()
		return len(f.h1.idle) == 1 && !alive(f.h1.idle[0].c)
	})
	f.h1.mu.Lock()
	f.h1.idle[0].idleFrom = time.Now().Add(-peekAfter) // idle long enough to be checked
	f.h1.mu.Unlock()
	if resp, body := do(t, "POST", url+"/", nil, "data"); resp.StatusCode != 200 || body != "ok" {
		t.Fatalf("after the upstream closed idle connections: %d %q", resp.StatusCode, body)
	}
}

func TestFastPathResponseShapes(t *testing.T) {
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/trailers":
			w.Header().Set("Trailer", "X-Checksum")
			w.Write([]byte("part1 "))
			w.(http.Flusher).Flush()
			w.Write([]byte("part2"))
			w.Header().Set("X-Checksum", "42")
		case "/early":
			w.Header().Set("Link", "</style.css>; rel=preload")
			w.WriteHeader(http.StatusEarlyHints)
			fmt.Fprint(w, "final")
		case "/head":
			w.Header().Set("Content-Length", "1000")
		}
	}))
	defer up.Close()
	url := front(t, newForwarder(t, up.URL, nil))

	resp, body := do(t, "GET", url+"/trailers", nil, "")
	if body != "part1 part2" || resp.Trailer.Get("X-Checksum") != "42" {
		t.Errorf("trailers: body %q trailer %v", body, resp.Trailer)
	}
	if resp, body := do(t, "GET", url+"/early", nil, ""); resp.StatusCode != 200 || body != "final" {
		t.Errorf("after 103: %d %q", resp.StatusCode, body)
	}
	if resp, body := do(t, "HEAD", url+"/head", nil, ""); resp.StatusCode != 200 || body != "" || resp.ContentLength != 1000 {
		t.Errorf("HEAD: %d %q length %d", resp.StatusCode, body, resp.ContentLength)
	}
}

func TestFastPathTimeoutsAndDepartures(t *testing.T) {
	release := make(chan struct{})
	upstreamSawCancel := make(chan struct{}, 1)
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body) // so the server watches for the client leaving
		select {
		case <-release:
		case <-r.Context().Done():
			upstreamSawCancel <- struct{}{}
		}
	}))
	defer up.Close()
	defer close(release)

	t.Run("silence past the response header timeout is not delivered", func(t *testing.T) {
		// Nothing of a response arrived: the request may be sent again
		// (GET), so the caller gets ErrNoResponse and the app nothing yet.
		f := newForwarder(t, up.URL, func(r *config.Route) { r.Timeouts.ResponseHeader = config.Duration(100 * time.Millisecond) })
		rec := httptest.NewRecorder()
		err := f.Forward(rec, httptest.NewRequest(http.MethodGet, "http://svc.mesh/", nil), "direct")
		if !errors.Is(err, ErrNoResponse) || rec.Code != 200 || rec.Body.Len() != 0 || len(rec.Header()) != 0 {
			t.Fatalf("err %v, wrote %d %q", err, rec.Code, rec.Body)
		}
		<-upstreamSawCancel
	})
	t.Run("response header timeout of a request that cannot be sent again is 504", func(t *testing.T) {
		// A POST without an Idempotency-Key cannot be sent twice.
		url := front(t, newForwarder(t, up.URL, func(r *config.Route) { r.Timeouts.ResponseHeader = config.Duration(100 * time.Millisecond) }))
		resp, body := do(t, "POST", url+"/", nil, "x")
		if resp.StatusCode != http.StatusGatewayTimeout {
			t.Fatalf("%d %q", resp.StatusCode, body)
		}
		<-upstreamSawCancel
	})
	t.Run("an app that leaves closes the upstream exchange", func(t *testing.T) {
		url := front(t, newForwarder(t, up.URL, nil))
		c, err := net.Dial("tcp", strings.TrimPrefix(url, "http://"))
		if err != nil {
			t.Fatal(err)
		}
		fmt.Fprint(c, "GET / HTTP/1.1\r\nHost: svc.mesh\r\n\r\n")
		bufio.NewReader(c).Peek(0)
		time.Sleep(50 * time.Millisecond) // let the request reach the upstream
		c.Close()
		select {
		case <-upstreamSawCancel:
		case <-time.After(10 * time.Second):
			t.Fatal("the upstream exchange outlived the app's connection")
		}
	})
}

// The response-header deadline is kept from one exchange to the next on a
// connection while it is far enough away, so it can fire before an
// exchange's own timeout: the wait must go on to the exact end. The
// upstream's answers to /slow take 0.9 s of a 1 s timeout.
func TestResponseHeaderTimeoutAfterKeptDeadline(t *testing.T) {
	t.Parallel()
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/slow" {
			time.Sleep(900 * time.Millisecond)
		}
		fmt.Fprint(w, r.URL.Path)
	}))
	defer up.Close()
	url := front(t, newForwarder(t, up.URL, func(r *config.Route) { r.Timeouts.ResponseHeader = config.Duration(time.Second) }))
	if resp, body := do(t, "GET", url+"/1", nil, ""); resp.StatusCode != 200 || body != "/1" { // deadline t0+1s
		t.Fatalf("/1: %d %q", resp.StatusCode, body)
	}
	time.Sleep(300 * time.Millisecond) // 0.7 s left: kept for the next exchange
	if resp, body := do(t, "GET", url+"/slow", nil, ""); resp.StatusCode != 200 || body != "/slow" {
		t.Fatalf("an answer 0.9 s into a 1 s response-header timeout: %d %q", resp.StatusCode, body)
	}
}

// A pooled connection whose kept deadline passed while it was idle is
// still reused: the deadline must not fail the liveness peek.
func TestIdleConnectionReusedAfterDeadlinePassed(t *testing.T) {
	t.Parallel()
	var conns atomic.Int32
	up := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {}))
	up.Config.ConnState = func(_ net.Conn, s http.ConnState) {
		if s == http.StateNew {
			conns.Add(1)
		}
	}
	up.Start()
	defer up.Close()
	url := front(t, newForwarder(t, up.URL, func(r *config.Route) { r.Timeouts.ResponseHeader = config.Duration(200 * time.Millisecond) }))
	do(t, "GET", url+"/1", nil, "")
	time.Sleep(peekAfter + 300*time.Millisecond)
	if resp, _ := do(t, "GET", url+"/2", nil, ""); resp.StatusCode != 200 {
		t.Fatalf("/2: %d", resp.StatusCode)
	}
	if n := conns.Load(); n != 1 {
		t.Fatalf("upstream saw %d connections, want 1 (the idle one reused)", n)
	}
}

func TestFastPathDialFailureLeavesBodyForRetry(t *testing.T) {
	ln, _ := net.Listen("tcp", "127.0.0.1:0")
	addr := ln.Addr().String()
	ln.Close()
	f := newForwarder(t, "http://"+addr, nil)
	var fwdErr error
	s := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fwdErr = f.Forward(w, r, "direct")
		b, _ := io.ReadAll(r.Body)
		w.Header().Set("X-Body-Left", string(b))
	}))
	defer s.Close()
	resp, _ := do(t, "POST", s.URL+"/", nil, "keep me")
	if !errors.Is(fwdErr, ErrNotSent) || resp.Header.Get("X-Body-Left") != "keep me" {
		t.Fatalf("err %v, body left %q", fwdErr, resp.Header.Get("X-Body-Left"))
	}
}

func benchRoute(upstreamURL string) config.Route {
	c := config.Config{Routes: []config.Route{{Name: "r", Hosts: []string{"svc.mesh"}, Upstream: upstreamURL}}}
	c.SetDefaults()
	return c.Routes[0]
}

// TestUpstreamConnectionCap releases a burst (as a hold release does) against
// a cap of 2: every request completes and the upstream never sees more than
// 2 connections.
func TestUpstreamConnectionCap(t *testing.T) {
	for _, path := range []string{"fast", "reverseproxy"} {
		t.Run(path, func(t *testing.T) {
			// An upstream per path: connections of the other path still
			// closing must not count here.
			var open, peak atomic.Int32
			up := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				time.Sleep(20 * time.Millisecond)
				fmt.Fprint(w, "ok")
			}))
			up.Config.ConnState = func(_ net.Conn, s http.ConnState) {
				switch s {
				case http.StateNew:
					n := open.Add(1)
					for p := peak.Load(); n > p && !peak.CompareAndSwap(p, n); p = peak.Load() {
					}
				case http.StateClosed, http.StateHijacked:
					open.Add(-1)
				}
			}
			up.Start()
			defer up.Close()
			f := newForwarderWith(t, up.URL, func(r *config.Route) { r.MaxUpstreamConnections = 2 },
				Options{Log: quiet, NoFastPath: path == "reverseproxy"})
			url := front(t, f)
			errs := make(chan string, 10)
			for i := range 10 {
				go func() {
					req, _ := http.NewRequest("GET", fmt.Sprintf("%s/%d", url, i), nil)
					req.Host = "svc.mesh"
					resp, err := (&http.Client{Transport: &http.Transport{}}).Do(req)
					if err != nil {
						errs <- err.Error()
						return
					}
					b, _ := io.ReadAll(resp.Body)
					resp.Body.Close()
					if resp.StatusCode != 200 || string(b) != "ok" {
						errs <- fmt.Sprintf("%d %q", resp.StatusCode, b)
						return
					}
					errs <- ""
				}()
			}
			for range 10 {
				if e := <-errs; e != "" {
					t.Error(e)
				}
			}
			if p := peak.Load(); p > 2 {
				t.Fatalf("upstream saw %d connections at once, cap is 2", p)
			}
		})
	}
}

// TestEndpointsChangeWhileConnectionBusy: a connection in use when the
// endpoints change is closed when it comes back, not reused to the
// endpoint that left.
func TestEndpointsChangeWhileConnectionBusy(t *testing.T) {
	release := make(chan struct{})
	started := make(chan struct{}, 1)
	a := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/slow" {
			started <- struct{}{}
			<-release
		}
		fmt.Fprint(w, "a")
	}))
	defer a.Close()
	b := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { fmt.Fprint(w, "b") }))
	defer b.Close()
	f := newForwarder(t, "http://echo.apps.svc:80", nil)
	f.SetEndpoints([]string{a.Listener.Addr().String()})
	url := front(t, f)
	done := make(chan string)
	go func() {
		_, body := do(t, "GET", url+"/slow", nil, "")
		done <- body
	}()
	<-started
	f.SetEndpoints([]string{b.Listener.Addr().String()}) // while the connection to a is busy
	close(release)
	if body := <-done; body != "a" {
		t.Fatalf("the busy request: %q", body)
	}
	for range 3 {
		if _, body := do(t, "GET", url+"/", nil, ""); body != "b" {
			t.Fatalf("after the endpoints changed: %q, want b (a connection to the old endpoint was reused)", body)
		}
	}
}

// TestDeadPooledConnectionThenRefused: a pooled connection takes a
// request and closes unanswered, and the upstream then refuses new
// connections. A request that may be sent again (a GET, or a POST with an
// Idempotency-Key and its body offered again by GetBody) comes back as
// ErrNoResponse (the upstream may
// have seen it), which the caller holds and retries, on both paths, with
// nothing written to the app. Both paths try it once more on a new
// connection first, and that try's failed dial is neither a 502 nor
// ErrNotSent.
func TestDeadPooledConnectionThenRefused(t *testing.T) {
	for _, tc := range []struct{ path, method string }{
		{"fast", http.MethodPost}, {"reverseproxy", http.MethodPost},
		// No body to touch: only the connection tells the refused
		// redial from a first dial.
		{"fast", http.MethodGet}, {"reverseproxy", http.MethodGet},
	} {
		path := tc.path
		t.Run(path+"/"+tc.method, func(t *testing.T) {
			ln, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			served := make(chan struct{})
			go func() {
				defer close(served)
				c, err := ln.Accept()
				if err != nil {
					return
				}
				br := bufio.NewReader(c)
				req, err := http.ReadRequest(br)
				if err != nil {
					return
				}
				io.Copy(io.Discard, req.Body)
				io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
				if req, err = http.ReadRequest(br); err == nil {
					io.Copy(io.Discard, req.Body)
				}
				ln.Close() // nothing listens when the proxy dials again
				c.Close()
			}()
			f := newForwarderWith(t, "http://"+ln.Addr().String(), nil, Options{Log: quiet, NoFastPath: path == "reverseproxy"})
			send := func(body string) (*httptest.ResponseRecorder, error) {
				r := httptest.NewRequest(http.MethodPost, "http://svc.mesh/readings", strings.NewReader(body))
				r.GetBody = func() (io.ReadCloser, error) { return io.NopCloser(strings.NewReader(body)), nil }
				r.Header.Set("Idempotency-Key", "k-"+body)
				if tc.method == http.MethodGet {
					r = httptest.NewRequest(http.MethodGet, "http://svc.mesh/readings?"+body, nil)
				}
				w := httptest.NewRecorder()
				return w, f.Forward(w, r, "direct")
			}
			if w, err := send("first"); err != nil || w.Code != 200 {
				t.Fatalf("first request: %v, status %d", err, w.Code)
			}
			w, err := send("second")
			<-served
			if !errors.Is(err, ErrNoResponse) {
				t.Fatalf("second request: %v (status %d written): want ErrNoResponse", err, w.Code)
			}
			if w.Body.Len() != 0 || len(w.Header()) != 0 {
				t.Errorf("wrote %d %v %q to the app", w.Code, w.Header(), w.Body)
			}
		})
	}
}

var addrs = regexp.MustCompile(`127\.0\.0\.1:\d+`)

// TestClosedAtOnce: the upstream's side (a relay, a NAT) accepts every
// connection and closes it at once. A request that may be sent again comes
// back as an error the caller holds and retries, on both paths, never a
// 502. How the race between the request's write and the close falls
// decides the error's words (EOF, a reset, a broken pipe, "use of closed
// network connection", "server closed idle connection"), and 50 requests
// meet several of them; the classification does not read the words: a
// connection and no byte of an answer is ErrNoResponse.
func TestClosedAtOnce(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			c.Close()
		}
	}()
	for _, path := range []string{"fast", "reverseproxy"} {
		t.Run(path, func(t *testing.T) {
			f := newForwarderWith(t, "http://"+ln.Addr().String(), nil, Options{Log: quiet, NoFastPath: path == "reverseproxy"})
			seen := map[string]int{} // the failures, less their addresses
			defer func() { t.Logf("failures: %v", seen) }()
			for i := range 50 {
				body := fmt.Sprintf("reading %d", i)
				r := httptest.NewRequest(http.MethodPost, "http://svc.mesh/readings", strings.NewReader(body))
				r.GetBody = func() (io.ReadCloser, error) { return io.NopCloser(strings.NewReader(body)), nil }
				r.Header.Set("Idempotency-Key", fmt.Sprint("k", i))
				w := httptest.NewRecorder()
				err := f.Forward(w, r, "direct")
				if !errors.Is(err, ErrNoResponse) && !errors.Is(err, ErrNotSent) {
					t.Fatalf("request %d: %v (status %d written): want ErrNoResponse or ErrNotSent", i, err, w.Code)
				}
				seen[addrs.ReplaceAllString(err.Error(), "ADDR")]++
			}
		})
	}
}
