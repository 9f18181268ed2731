package server

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/misaki-io/misaki/internal/clock"
	"github.com/misaki-io/misaki/internal/deadaddr"
	"github.com/misaki-io/misaki/internal/proxy/config"
	"github.com/misaki-io/misaki/internal/waitfor"
)

// upstream is a real HTTP server on loopback that counts requests by their
// X-Req-Id header.
type upstream struct {
	*httptest.Server
	mu   sync.Mutex
	seen map[string]int
	last *http.Request
}

func newUpstream(t *testing.T, h http.HandlerFunc) *upstream {
	t.Helper()
	u := &upstream{seen: map[string]int{}}
	if h == nil {
		h = func(w http.ResponseWriter, r *http.Request) {
			io.Copy(io.Discard, r.Body)
			fmt.Fprintf(w, "hello %s", r.Header.Get("X-Req-Id"))
		}
	}
	u.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		u.mu.Lock()
		u.seen[r.Header.Get("X-Req-Id")]++
		u.last = r.Clone(context.Background())
		u.mu.Unlock()
		h(w, r)
	}))
	t.Cleanup(u.Close)
	return u
}

func (u *upstream) count(id string) int {
	u.mu.Lock()
	defer u.mu.Unlock()
	return u.seen[id]
}

func (u *upstream) total() int {
	u.mu.Lock()
	defer u.mu.Unlock()
	n := 0
	for _, c := range u.seen {
		n += c
	}
	return n
}

func (u *upstream) lastRequest() *http.Request {
	u.mu.Lock()
	defer u.mu.Unlock()
	return u.last
}

// proxy is a running Server with its addresses.
type proxy struct {
	*Server
	mesh, admin string
	clock       *clock.Fake // nil with the real clock
	stop        func()      // ends Run (as SIGTERM does) and waits for it
}

// testLinks are driven through the admin API, as a connectivity manager would.
const testLinks = `
links:
  - {name: wlan, class: wifi}
  - {name: modem, class: cellular, metered: true}
`

// http1Server is one of the proxy's two HTTP/1.1 paths, each a server on
// the mesh listener (config http1Server) with a client to the upstream
// (config http1Upstream): "lean", Misaki's own server (internal/proxy/h1)
// in front of net/http, which takes every connection the lean one hands
// over, and forward's fast path in front of http.Transport, which takes
// every request the fast path does not; or "stdlib", net/http alone on both
// sides. One suite runs on both: every test that sends requests to the
// mesh listener runs once per path (onEachServer).
type http1Server string

// http1Servers are both, in the order their subtests run.
var http1Servers = []http1Server{config.HTTP1Lean, config.HTTP1Stdlib}

// yaml is the config lines that choose the server and the upstream client.
func (h http1Server) yaml() string {
	return "http1Server: " + string(h) + "\nhttp1Upstream: " + string(h) + "\n"
}

// start is startProxy on this server. It checks that the upstream client
// is the one chosen: every http:// route's forwarder has the fast path on
// "lean" only.
func (h http1Server) start(t testing.TB, yaml string, fake bool) *proxy {
	t.Helper()
	p := startProxy(t, h.yaml()+yaml, fake)
	for _, rt := range p.set.Load().routes {
		if strings.HasPrefix(rt.cfg.Upstream, "http://") && rt.fwd.FastPath() != (h == config.HTTP1Lean) {
			t.Fatalf("route %s: fast path %v with http1Upstream: %s", rt.cfg.Name, rt.fwd.FastPath(), h)
		}
	}
	return p
}

// onEachServer runs test once per HTTP/1.1 path, as the subtests "lean"
// and "stdlib".
func onEachServer(t *testing.T, test func(t *testing.T, srv http1Server)) {
	t.Helper()
	for _, srv := range http1Servers {
		t.Run(string(srv), func(t *testing.T) { test(t, srv) })
	}
}

// startProxy starts a proxy from yaml (after listen and admin on free
// loopback ports), on the fake clock if fake, and stops it when the test
// ends. It returns once the proxy is ready. Tests of the mesh listener
// call it through http1Server.start.
func startProxy(t testing.TB, yaml string, fake bool) *proxy {
	t.Helper()
	cfg, err := config.Parse([]byte("listen: 127.0.0.1:0\nadmin: 127.0.0.1:0\n" + yaml))
	if err != nil {
		t.Fatalf("config: %v", err)
	}
	p := &proxy{}
	opt := Options{}
	if fake {
		p.clock = clock.NewFake(time.Unix(1_700_000_000, 0))
		opt.Clock = p.clock
	}
	level := slog.LevelWarn
	if testing.Verbose() {
		level = slog.LevelDebug
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level}))
	p.Server, err = New(cfg, log, opt)
	if err != nil {
		t.Fatal(err)
	}
	if err := p.Listen(); err != nil {
		t.Fatal(err)
	}
	p.mesh, p.admin = p.MeshAddr(), p.AdminAddr()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- p.Run(ctx) }()
	var once sync.Once
	p.stop = func() {
		once.Do(func() {
			cancel()
			if err := <-done; err != nil {
				t.Errorf("Run: %v", err)
			}
		})
	}
	t.Cleanup(p.stop)
	waitfor.True(t, "ready", func() bool {
		resp, err := http.Get("http://" + p.admin + "/readyz")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == 200
	})
	return p
}

// setLink drives a link through the real admin API.
func (p *proxy) setLink(t *testing.T, name, state string) {
	t.Helper()
	req, _ := http.NewRequest(http.MethodPut, "http://"+p.admin+"/v1/links/"+name, strings.NewReader(`{"state":"`+state+`"}`))
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != 200 {
		b, _ := io.ReadAll(resp.Body)
		t.Fatalf("PUT link %s: %d %s", name, resp.StatusCode, b)
	}
}

// runClock advances the proxy's fake clock a second every millisecond
// until the test ends, so that every timer the proxy arms is due at once.
func (p *proxy) runClock(t *testing.T) {
	stop := make(chan struct{})
	var done sync.WaitGroup
	done.Go(func() {
		for {
			select {
			case <-stop:
				return
			default:
				p.clock.Advance(time.Second)
				time.Sleep(time.Millisecond)
			}
		}
	})
	t.Cleanup(func() { close(stop); done.Wait() })
}

// offline takes every test link down: no route has a usable link.
func (p *proxy) offline(t *testing.T) {
	t.Helper()
	p.setLink(t, "wlan", "down")
	p.setLink(t, "modem", "down")
}

// sendHeld sends a request to the telemetry route in the background and
// returns once the proxy holds it; its result arrives on the channel.
func (p *proxy) sendHeld(t *testing.T, ctx context.Context, id string, hdr map[string]string, body []byte) <-chan result {
	t.Helper()
	before := p.held(t, "telemetry")
	done := make(chan result, 1)
	go func() { done <- p.send(ctx, "telemetry.cloud.misaki", id, hdr, body) }()
	waitfor.True(t, "request "+id+" held", func() bool { return p.held(t, "telemetry") == before+1 })
	return done
}

// held returns how many requests route holds now, from the admin API.
func (p *proxy) held(t *testing.T, routeName string) int {
	t.Helper()
	resp, err := http.Get("http://" + p.admin + "/v1/routes")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var body struct {
		Routes []struct {
			Name string `json:"name"`
			Held int    `json:"heldRequests"`
		} `json:"routes"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&body); err != nil {
		t.Fatal(err)
	}
	for _, r := range body.Routes {
		if r.Name == routeName {
			return r.Held
		}
	}
	t.Fatalf("route %s not in /v1/routes", routeName)
	return 0
}

type result struct {
	status   int
	body     string
	header   http.Header
	err      error
	duration time.Duration
}

// send makes one request through the proxy to host, tagged with id.
func (p *proxy) send(ctx context.Context, host, id string, hdr map[string]string, body []byte) result {
	var rb io.Reader
	method := http.MethodGet
	if body != nil {
		rb, method = bytes.NewReader(body), http.MethodPost
	}
	req, _ := http.NewRequestWithContext(ctx, method, "http://"+p.mesh+"/x", rb)
	req.Host = host
	req.Header.Set("X-Req-Id", id)
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	start := time.Now()
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return result{err: err, duration: time.Since(start)}
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return result{status: resp.StatusCode, body: string(b), header: resp.Header, err: err, duration: time.Since(start)}
}

// newUpstreamOn starts a counting upstream on the port dead held refused.
func newUpstreamOn(t *testing.T, dead *deadaddr.Socket) *upstream {
	t.Helper()
	u := &upstream{seen: map[string]int{}}
	u.Server = httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		u.mu.Lock()
		u.seen[r.Header.Get("X-Req-Id")]++
		u.mu.Unlock()
		io.Copy(io.Discard, r.Body)
		fmt.Fprintf(w, "hello %s", r.Header.Get("X-Req-Id"))
	}))
	ln, err := dead.Listen()
	if err != nil {
		t.Fatal(err)
	}
	u.Listener = ln
	u.Start()
	t.Cleanup(u.Close)
	return u
}
