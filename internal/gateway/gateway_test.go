package gateway

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
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

	"github.com/misaki-io/misaki/internal/batch"
	"github.com/misaki-io/misaki/internal/devpki"
	"github.com/misaki-io/misaki/internal/forward"
	"github.com/misaki-io/misaki/internal/proxy/config"
)

// pki is a throwaway fleet PKI (devpki) as files, with the client side
// loaded for the test's HTTP clients.
type pki struct {
	devpki.Files
	pool       *x509.CertPool
	clientCert tls.Certificate
}

func newPKI(t *testing.T) *pki {
	t.Helper()
	f, err := devpki.Write(t.TempDir(), "VIN123")
	if err != nil {
		t.Fatal(err)
	}
	p := &pki{Files: f, pool: x509.NewCertPool()}
	ca, err := os.ReadFile(f.CA)
	if err != nil || !p.pool.AppendCertsFromPEM(ca) {
		t.Fatalf("CA: %v", err)
	}
	if p.clientCert, err = tls.LoadX509KeyPair(f.ClientCert, f.ClientKey); err != nil {
		t.Fatal(err)
	}
	return p
}

func (p *pki) client(withCert bool) *http.Client {
	c := &tls.Config{RootCAs: p.pool}
	if withCert {
		c.Certificates = []tls.Certificate{p.clientCert}
	}
	return &http.Client{Transport: &http.Transport{TLSClientConfig: c}, Timeout: 10 * time.Second}
}

// service is a cloud service that counts requests by Idempotency-Key.
type service struct {
	*httptest.Server
	mu       sync.Mutex
	byKey    map[string]int
	identity string
}

func newService(t *testing.T, h http.HandlerFunc) *service {
	s := &service{byKey: map[string]int{}}
	s.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s.mu.Lock()
		s.byKey[r.Header.Get("Idempotency-Key")]++
		s.identity = r.Header.Get("Misaki-Vehicle-Id")
		s.mu.Unlock()
		h(w, r)
	}))
	t.Cleanup(s.Close)
	return s
}

func (s *service) hits(key string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.byKey[key]
}

type gw struct {
	*Server
	stop func()
}

func startGateway(t *testing.T, p *pki, svcURL, dir string) *gw {
	t.Helper()
	return startGatewayConfig(t, p.GatewayYAML(dir, svcURL), nil)
}

// startGatewayConfig runs a gateway from a config file's text; prepare, if
// not nil, is called before it listens.
func startGatewayConfig(t *testing.T, yaml string, prepare func(*Server)) *gw {
	t.Helper()
	cfg, err := config.Parse([]byte(yaml))
	if err != nil {
		t.Fatal(err)
	}
	s, err := New(cfg, slog.New(slog.NewTextHandler(io.Discard, nil)), nil)
	if err != nil {
		t.Fatal(err)
	}
	if prepare != nil {
		prepare(s)
	}
	if err := s.Listen(); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx) }()
	var once sync.Once
	g := &gw{Server: s, stop: func() {
		once.Do(func() {
			cancel()
			if err := <-done; err != nil {
				t.Errorf("Run: %v", err)
			}
		})
	}}
	t.Cleanup(g.stop)
	for deadline := time.Now().Add(5 * time.Second); ; {
		if resp, err := http.Get("http://" + s.AdminAddr() + "/readyz"); err == nil {
			resp.Body.Close()
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("gateway not ready")
		}
		time.Sleep(10 * time.Millisecond)
	}
	return g
}

type answer struct {
	status int
	body   string
	header http.Header
}

func (g *gw) post(t *testing.T, c *http.Client, key, body string) answer {
	t.Helper()
	req, _ := http.NewRequest(http.MethodPost, "https://"+g.Addr()+"/v1/events", strings.NewReader(body))
	req.Host = "telemetry.cloud.misaki"
	if key != "" {
		req.Header.Set("Idempotency-Key", key)
	}
	req.Header.Set("Misaki-Vehicle-Id", "forged")
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return answer{resp.StatusCode, string(b), resp.Header}
}

func TestDuplicatesAreAnsweredFromTheStore(t *testing.T) {
	p := newPKI(t)
	var n int
	var mu sync.Mutex
	svc := newService(t, func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		n++
		k := n
		mu.Unlock()
		w.Header().Set("X-Order", fmt.Sprint(k))
		w.WriteHeader(http.StatusCreated)
		fmt.Fprintf(w, "created #%d", k)
	})
	dir := t.TempDir()
	g := startGateway(t, p, svc.URL, dir)
	c := p.client(true)

	first := g.post(t, c, "k1", "payload")
	again := g.post(t, c, "k1", "payload")
	if first.status != 201 || again.status != 201 || again.body != first.body || again.header.Get("X-Order") != "1" {
		t.Fatalf("first %+v, repeat %+v", first, again)
	}
	if again.header.Get("Misaki-Replayed") != "true" || first.header.Get("Misaki-Replayed") != "" {
		t.Fatalf("Misaki-Replayed: first %q repeat %q", first.header.Get("Misaki-Replayed"), again.header.Get("Misaki-Replayed"))
	}
	if svc.hits("k1") != 1 {
		t.Fatalf("the service saw k1 %d times", svc.hits("k1"))
	}
	if svc.identity != devpki.VehicleURI("VIN123") {
		t.Fatalf("identity passed on: %q (a forged header must be replaced)", svc.identity)
	}
	if r := g.post(t, c, "k1", "another payload"); r.status != http.StatusUnprocessableEntity {
		t.Fatalf("same key, different body: %d %q", r.status, r.body)
	}
	if r := g.post(t, c, "", "x"); r.status != 201 || svc.hits("") != 1 {
		t.Fatalf("no key: %d", r.status)
	}

	// The store survives a restart.
	g.stop()
	g2 := startGateway(t, p, svc.URL, dir)
	if r := g2.post(t, c, "k1", "payload"); r.header.Get("Misaki-Replayed") != "true" || r.body != first.body {
		t.Fatalf("after restart: %+v", r)
	}
	if svc.hits("k1") != 1 {
		t.Fatalf("after restart the service saw k1 %d times", svc.hits("k1"))
	}
}

func TestInFlightConflictAndRetryableAnswers(t *testing.T) {
	p := newPKI(t)
	release := make(chan struct{})
	var fail sync.Once
	svc := newService(t, func(w http.ResponseWriter, r *http.Request) {
		switch r.Header.Get("Idempotency-Key") {
		case "slow":
			<-release
		case "flaky":
			failed := false
			fail.Do(func() { failed = true })
			if failed {
				http.Error(w, "busy", http.StatusServiceUnavailable)
				return
			}
		}
		io.WriteString(w, "ok")
	})
	g := startGateway(t, p, svc.URL, t.TempDir())
	c := p.client(true)

	done := make(chan answer, 1)
	go func() { done <- g.post(t, c, "slow", "b") }()
	for svc.hits("slow") == 0 {
		time.Sleep(5 * time.Millisecond)
	}
	if r := g.post(t, c, "slow", "b"); r.status != http.StatusConflict || r.header.Get(forward.HeaderIdempotency) != forward.IdempotencyInFlight || r.header.Get("Retry-After") == "" {
		t.Fatalf("repeat while in flight: %d %v %q", r.status, r.header, r.body)
	}
	close(release)
	if r := <-done; r.status != 200 {
		t.Fatalf("first: %d", r.status)
	}

	if r := g.post(t, c, "flaky", "b"); r.status != 503 {
		t.Fatalf("first flaky: %d", r.status)
	}
	if r := g.post(t, c, "flaky", "b"); r.status != 200 || r.header.Get("Misaki-Replayed") != "" {
		t.Fatalf("a 503 must not be stored: %d %v", r.status, r.header)
	}
	if svc.hits("flaky") != 2 {
		t.Fatalf("flaky reached the service %d times, want 2", svc.hits("flaky"))
	}
}

func TestClientCertificateRequired(t *testing.T) {
	p := newPKI(t)
	svc := newService(t, func(w http.ResponseWriter, r *http.Request) {})
	g := startGateway(t, p, svc.URL, t.TempDir())
	req, _ := http.NewRequest(http.MethodGet, "https://"+g.Addr()+"/", nil)
	req.Host = "telemetry.cloud.misaki"
	if _, err := p.client(false).Do(req); err == nil {
		t.Fatal("a client without a certificate was served")
	}
	// A certificate from another CA is refused too.
	other := newPKI(t)
	c := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: p.pool, Certificates: []tls.Certificate{other.clientCert}}}}
	if _, err := c.Do(req); err == nil {
		t.Fatal("a certificate from an unknown CA was accepted")
	}
	if svc.hits("") != 0 {
		t.Fatal("an unauthenticated request reached the service")
	}
}

// A vehicle that goes away while the service answers does not make the
// service act twice: the answer is stored, and the retry gets it.
func TestAnswerStoredWhenVehicleLeaves(t *testing.T) {
	p := newPKI(t)
	arrived, release := make(chan struct{}, 1), make(chan struct{})
	svc := newService(t, func(w http.ResponseWriter, r *http.Request) {
		arrived <- struct{}{}
		<-release // until the vehicle has gone
		io.WriteString(w, "done")
	})
	g := startGateway(t, p, svc.URL, t.TempDir())
	ctx, leave := context.WithCancel(context.Background())
	req, _ := http.NewRequestWithContext(ctx, http.MethodPost, "https://"+g.Addr()+"/v1/events", strings.NewReader("b"))
	req.Host = "telemetry.cloud.misaki"
	req.Header.Set("Idempotency-Key", "gone")
	left := make(chan error, 1)
	go func() {
		resp, err := p.client(true).Do(req)
		if err == nil {
			resp.Body.Close()
		}
		left <- err
	}()
	select {
	case <-arrived:
	case err := <-left:
		t.Fatalf("the request did not reach the service: %v", err)
	}
	leave() // the vehicle goes away while the service answers
	if err := <-left; err == nil {
		t.Fatal("the vehicle that left got an answer")
	}
	close(release)
	var r answer
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		if r = g.post(t, p.client(true), "gone", "b"); r.status != http.StatusConflict {
			break
		}
	}
	if r.status != 200 || r.header.Get("Misaki-Replayed") != "true" || svc.hits("gone") != 1 {
		t.Fatalf("retry: %d %v; the service saw it %d times", r.status, r.header, svc.hits("gone"))
	}
}

// A batch: every item is handled as if it came alone, in order, and the
// de-duplication holds across batches and single requests.
func TestBatch(t *testing.T) {
	p := newPKI(t)
	svc := newService(t, func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		if string(body) == "broken" { // the answer breaks off after its status
			io.WriteString(w, "stored, and then")
			w.(http.Flusher).Flush()
			panic(http.ErrAbortHandler)
		}
		io.WriteString(w, "stored "+string(body))
	})
	g := startGateway(t, p, svc.URL, t.TempDir())
	c := p.client(true)
	post := func(items []batch.Item) []batch.Item {
		t.Helper()
		var body bytes.Buffer
		ct := batch.Write(&body, items)
		req, _ := http.NewRequest(http.MethodPost, "https://"+g.Addr()+batch.Path, &body)
		req.Header.Set("Content-Type", ct)
		resp, err := c.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			b, _ := io.ReadAll(resp.Body)
			t.Fatalf("batch: %d %s", resp.StatusCode, b)
		}
		answers, err := batch.Read(resp.Body, resp.Header.Get("Content-Type"), false, 1<<20)
		if err != nil || len(answers) != len(items) {
			t.Fatalf("batch answers: %d, %v", len(answers), err)
		}
		return answers
	}
	item := func(host, key, body string) batch.Item {
		h := http.Header{}
		if key != "" {
			h.Set("Idempotency-Key", key)
		}
		return batch.Item{Method: http.MethodPost, Target: "/v1/events", Host: host, Header: h, Body: []byte(body)}
	}
	a := post([]batch.Item{
		item("telemetry.cloud.misaki", "k1", "one"),
		item("telemetry.cloud.misaki", "k2", "two"),
		item("telemetry.cloud.misaki", "", "no key"),
		item("unknown.example", "k3", "three"),
		{Method: http.MethodPost, Target: batch.Path, Host: "telemetry.cloud.misaki"},
		item("telemetry.cloud.misaki", "k4", "broken"),
	})
	for i, want := range []int{http.StatusOK, http.StatusOK, http.StatusOK, http.StatusNotFound, http.StatusBadRequest, http.StatusBadGateway} {
		if a[i].Status != want {
			t.Errorf("item %d: %d %q, want %d", i, a[i].Status, a[i].Body, want)
		}
	}
	// Each item has its own answer, in order.
	for i, want := range []string{"stored one", "stored two", "stored no key"} {
		if string(a[i].Body) != want {
			t.Errorf("item %d: body %q, want %q", i, a[i].Body, want)
		}
	}
	// An answer that broke off is not passed on as a short success; as for
	// a request of its own, the retry gets the status that was stored,
	// without reaching the service again.
	if strings.Contains(string(a[5].Body), "and then") {
		t.Errorf("the broken answer's partial body was passed on: %q", a[5].Body)
	}
	if a := post([]batch.Item{item("telemetry.cloud.misaki", "k4", "broken")}); a[0].Status != http.StatusOK || a[0].Header.Get("Misaki-Replayed") != "true" || svc.hits("k4") != 1 {
		t.Errorf("the retry of a broken answer: %d %v, the service saw k4 %d times", a[0].Status, a[0].Header, svc.hits("k4"))
	}
	if svc.hits("k1") != 1 || svc.hits("k2") != 1 || svc.identity != devpki.VehicleURI("VIN123") {
		t.Fatalf("service: k1 %d, k2 %d times, identity %q", svc.hits("k1"), svc.hits("k2"), svc.identity)
	}
	// Again, in a batch and alone: answered from the store; a changed body
	// is refused.
	a = post([]batch.Item{item("telemetry.cloud.misaki", "k1", "one"), item("telemetry.cloud.misaki", "k2", "changed")})
	if a[0].Status != http.StatusOK || a[0].Header.Get("Misaki-Replayed") != "true" {
		t.Fatalf("repeat in a batch: %d %v", a[0].Status, a[0].Header)
	}
	if a[1].Status != http.StatusUnprocessableEntity {
		t.Fatalf("changed body in a batch: %d %q", a[1].Status, a[1].Body)
	}
	if r := g.post(t, c, "k2", "two"); r.status != http.StatusOK || r.header.Get("Misaki-Replayed") != "true" {
		t.Fatalf("a single repeat of a batch item: %d %v", r.status, r.header)
	}
	if svc.hits("k1") != 1 || svc.hits("k2") != 1 {
		t.Fatalf("repeats reached the service: k1 %d, k2 %d", svc.hits("k1"), svc.hits("k2"))
	}
	// Not a batch: refused whole, with the reason.
	req, _ := http.NewRequest(http.MethodPost, "https://"+g.Addr()+batch.Path, strings.NewReader("{}"))
	req.Header.Set("Content-Type", "application/json")
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusBadRequest || !strings.Contains(string(b), "multipart/mixed") {
		t.Fatalf("not a batch: %d %q", resp.StatusCode, b)
	}
}

// A service that answers before reading the body: the answer is stored
// with the body's fingerprint all the same (the gateway reads the rest once
// the forwarder is done with it), and a repeat gets the stored answer.
func TestServiceAnswersBeforeReadingTheBody(t *testing.T) {
	p := newPKI(t)
	svc := newService(t, func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(http.StatusCreated) // the body is never read
		io.WriteString(w, "early")
	})
	g := startGateway(t, p, svc.URL, t.TempDir())
	c := p.client(true)
	body := strings.Repeat("b", 1<<20) // past the forwarder's fast path: streamed
	for i := range 2 {
		r := g.post(t, c, "early-key", body)
		if r.status != http.StatusCreated || r.body != "early" {
			t.Fatalf("send %d: %d %q", i, r.status, r.body)
		}
		if i == 1 && r.header.Get("Misaki-Replayed") != "true" {
			t.Fatalf("the repeat was not answered from the store: %v", r.header)
		}
	}
	if n := svc.hits("early-key"); n != 1 {
		t.Fatalf("the service saw the request %d times", n)
	}
}

// The vehicle's body breaks off after the service has answered (it did not
// need the body): the answer is stored all the same, keyed on the method
// and target only, and the vehicle's retry gets it instead of a 422.
func TestBodyBrokenOffAfterTheAnswer(t *testing.T) {
	p := newPKI(t)
	svc := newService(t, func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(http.StatusCreated)
		io.WriteString(w, "early")
	})
	reached := make(chan struct{}, 1) // the service's answer reached the gateway
	g := startGatewayConfig(t, p.GatewayYAML(t.TempDir(), svc.URL), func(s *Server) {
		for _, f := range s.routes {
			f.OnReach(func(answered bool) {
				if answered {
					select {
					case reached <- struct{}{}:
					default:
					}
				}
			})
		}
	})
	conn, err := tls.Dial("tcp", g.Addr(), &tls.Config{RootCAs: p.pool, Certificates: []tls.Certificate{p.clientCert}, NextProtos: []string{"http/1.1"}})
	if err != nil {
		t.Fatal(err)
	}
	fmt.Fprintf(conn, "POST /v1/events HTTP/1.1\r\nHost: telemetry.cloud.misaki\r\nIdempotency-Key: broken\r\nContent-Length: %d\r\n\r\n", 1<<20)
	conn.Write([]byte(strings.Repeat("b", 200<<10)))
	select {
	case <-reached:
	case <-time.After(5 * time.Second):
		t.Fatal("the service's answer never reached the gateway")
	}
	conn.Close() // the rest of the body never comes

	var r answer
	for deadline := time.Now().Add(5 * time.Second); ; {
		r = g.post(t, p.client(true), "broken", strings.Repeat("b", 1<<20))
		if r.status != http.StatusConflict || time.Now().After(deadline) {
			break // 409 while the gateway still waits on the broken body
		}
		time.Sleep(20 * time.Millisecond)
	}
	if r.status != http.StatusCreated || r.body != "early" || r.header.Get("Misaki-Replayed") != "true" {
		t.Fatalf("retry after a broken body: %d %q %v", r.status, r.body, r.header)
	}
	if n := svc.hits("broken"); n != 1 {
		t.Fatalf("the service saw the request %d times", n)
	}
}

// http1Upstream reaches the gateway's forwarders: "stdlib" takes the fast
// path away from an http:// route, "lean" (the default) keeps it.
func TestHTTP1UpstreamReachesTheForwarders(t *testing.T) {
	p := newPKI(t)
	for _, tc := range []struct {
		line string
		fast bool
	}{{"", true}, {"http1Upstream: stdlib\n", false}, {"http1Upstream: lean\n", true}} {
		g := startGatewayConfig(t, tc.line+p.GatewayYAML(t.TempDir(), "http://127.0.0.1:1"), nil)
		if len(g.routes) != 1 || g.routes[0].FastPath() != tc.fast {
			t.Errorf("%q: %d routes, fast path %v, want %v", tc.line, len(g.routes), len(g.routes) > 0 && g.routes[0].FastPath(), tc.fast)
		}
	}
}
