package identity

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/misaki-io/misaki/internal/backoff"
	"github.com/misaki-io/misaki/internal/certtest"
	"github.com/misaki-io/misaki/internal/clock"
)

// fakeController plays the controller's certificate endpoint: it signs
// CSRs for lifetimes on the test's clock, or refuses.
type fakeController struct {
	t   *testing.T
	ca  *certtest.CA
	clk clock.Clock
	srv *httptest.Server

	mu      sync.Mutex // guards the fields below
	refuse  int        // answer this status instead; 0 signs
	tokens  []string
	issued  chan *x509.Certificate
	wrongPK bool
}

func startController(t *testing.T, clk clock.Clock) *fakeController {
	f := &fakeController{t: t, ca: certtest.New(t, "test CA"), clk: clk, issued: make(chan *x509.Certificate, 10)}
	f.srv = httptest.NewUnstartedServer(http.HandlerFunc(f.serve))
	cert := f.ca.Serving(t)
	f.srv.TLS = &tls.Config{Certificates: []tls.Certificate{cert}}
	f.srv.StartTLS()
	t.Cleanup(f.srv.Close)
	return f
}

func (f *fakeController) set(refuse int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.refuse = refuse
}

func (f *fakeController) serve(w http.ResponseWriter, r *http.Request) {
	f.mu.Lock()
	refuse, wrong := f.refuse, f.wrongPK
	f.tokens = append(f.tokens, strings.TrimPrefix(r.Header.Get("Authorization"), "Bearer "))
	f.mu.Unlock()
	if r.URL.Path != Path || r.Method != http.MethodPost {
		http.NotFound(w, r)
		return
	}
	if refuse != 0 {
		w.WriteHeader(refuse)
		json.NewEncoder(w).Encode(ErrorResponse{Error: "pod apps/p was deleted"})
		return
	}
	var req Request
	if err := json.NewDecoder(r.Body).Decode(&req); err != nil {
		http.Error(w, err.Error(), 400)
		return
	}
	blk, _ := pem.Decode([]byte(req.CSR))
	csr, err := x509.ParseCertificateRequest(blk.Bytes)
	if err != nil || csr.CheckSignature() != nil {
		http.Error(w, "bad csr", 400)
		return
	}
	pub := csr.PublicKey
	if wrong {
		k, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		pub = k.Public()
	}
	now := f.clk.Now()
	c := f.ca.Issue(f.t, &x509.Certificate{NotBefore: now.Add(-time.Hour), NotAfter: now.Add(24 * time.Hour),
		URIs:        []*url.URL{{Scheme: "spiffe", Host: "cluster.local", Path: "/ns/apps/pod/p"}},
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}, pub)
	json.NewEncoder(w).Encode(Response{CertificateChain: string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.Raw}))})
	f.issued <- c
}

func (f *fakeController) requests() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.tokens)
}

func (f *fakeController) addr() string { return strings.TrimPrefix(f.srv.URL, "https://") }

type fixture struct {
	ctl   *fakeController
	clk   *clock.Fake
	src   *Source
	token string // the token file
	roots string // the CA file
}

func newFixture(t *testing.T) *fixture {
	t.Helper()
	clk := clock.NewFake(time.Now())
	f := &fixture{ctl: startController(t, clk), clk: clk}
	dir := t.TempDir()
	f.token, f.roots = filepath.Join(dir, "token"), filepath.Join(dir, "ca.pem")
	write(t, f.token, "token-1\n")
	write(t, f.roots, string(f.ctl.ca.PEM()))
	roots, err := LoadRoots(f.roots)
	if err != nil {
		t.Fatal(err)
	}
	f.src, err = New(Options{Server: f.ctl.addr(), TokenFile: f.token, Roots: roots, Clock: clk,
		Backoff: backoff.Policy{Initial: time.Second, Max: 8 * time.Second, Jitter: backoff.NoJitter}})
	if err != nil {
		t.Fatal(err)
	}
	return f
}

func write(t *testing.T, path, s string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(s), 0o600); err != nil {
		t.Fatal(err)
	}
}

// issued waits for the controller to sign a certificate.
func (f *fixture) issued(t *testing.T, what string) *x509.Certificate {
	t.Helper()
	select {
	case c := <-f.ctl.issued:
		return c
	case <-time.After(10 * time.Second):
		t.Fatalf("no certificate issued: %s", what)
		return nil
	}
}

// noneIssued checks that the controller signs nothing for a moment.
func (f *fixture) noneIssued(t *testing.T, what string) {
	t.Helper()
	select {
	case <-f.ctl.issued:
		t.Fatalf("a certificate was issued: %s", what)
	case <-time.After(50 * time.Millisecond):
	}
}

// armed waits until the source waits on the fake clock.
func (f *fixture) armed(t *testing.T) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for f.clk.Timers() == 0 {
		if time.Now().After(deadline) {
			t.Fatal("the source never waited on the clock")
		}
		time.Sleep(time.Millisecond)
	}
}

func (f *fixture) serial() string {
	if c := f.src.Certificate(); c != nil {
		return c.Leaf.SerialNumber.String()
	}
	return ""
}

// TestRenewal runs the renewal loop on a fake clock: a certificate at
// once, a new one (with a new key) half way through its life and not
// before, the token read again each time; with the controller refusing,
// the current certificate is kept and the request retried with growing
// delays; once it answers again the next certificate comes.
func TestRenewal(t *testing.T) {
	f := newFixture(t)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- f.src.Run(ctx) }()
	defer func() { cancel(); <-done }()

	first := f.issued(t, "at start")
	f.armed(t)
	if f.serial() != first.SerialNumber.String() {
		t.Fatal("the issued certificate is not the current one")
	}
	key1 := f.src.Certificate().PrivateKey.(*ecdsa.PrivateKey)

	// 24h certificate: due 12h after it arrived.
	write(t, f.token, "token-2")
	f.clk.Advance(12*time.Hour - time.Minute)
	f.noneIssued(t, "before half its life")
	f.clk.Advance(time.Minute)
	second := f.issued(t, "half way")
	f.armed(t)
	if key2 := f.src.Certificate().PrivateKey.(*ecdsa.PrivateKey); key2.Equal(key1) {
		t.Error("the renewed certificate has the old key")
	}
	f.ctl.mu.Lock()
	tokens := append([]string(nil), f.ctl.tokens...)
	f.ctl.mu.Unlock()
	if len(tokens) != 2 || tokens[0] != "token-1" || tokens[1] != "token-2" {
		t.Errorf("tokens sent %q, want the file's at each request", tokens)
	}

	// The controller refuses: keep the certificate, retry after 1s, 2s, 4s.
	f.ctl.set(http.StatusServiceUnavailable)
	f.clk.Advance(12 * time.Hour)
	for i, d := range []time.Duration{time.Second, 2 * time.Second, 4 * time.Second} {
		f.armed(t)
		if f.serial() != second.SerialNumber.String() {
			t.Fatal("the current certificate was dropped while the controller refused")
		}
		if n := f.ctl.requests(); n != 3+i {
			t.Fatalf("%d requests, want %d", n, 3+i)
		}
		f.clk.Advance(d - time.Millisecond)
		time.Sleep(20 * time.Millisecond) // a retry too early would show
		if n := f.ctl.requests(); n != 3+i {
			t.Fatalf("retried before %v", d)
		}
		f.clk.Advance(time.Millisecond)
	}
	f.ctl.set(0)
	f.armed(t)
	f.clk.Advance(8 * time.Second)
	third := f.issued(t, "after the controller came back")
	f.armed(t)
	if f.serial() != third.SerialNumber.String() {
		t.Error("the certificate after the outage is not current")
	}
}

// Ensure requests a certificate only when there is no valid one.
func TestEnsure(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	if err := f.src.Ensure(ctx); err != nil {
		t.Fatal(err)
	}
	f.issued(t, "none yet")
	f.clk.Advance(23 * time.Hour)
	if err := f.src.Ensure(ctx); err != nil {
		t.Fatal(err)
	}
	f.noneIssued(t, "a valid certificate")
	f.clk.Advance(time.Hour)
	if err := f.src.Ensure(ctx); err != nil {
		t.Fatal(err)
	}
	f.issued(t, "an expired certificate")
	// A certificate the controller refused is replaced before it is used
	// again, though it is valid.
	refused := f.src.Certificate()
	f.src.Invalidate(refused)
	if err := f.src.Ensure(ctx); err != nil {
		t.Fatal(err)
	}
	f.issued(t, "an invalidated certificate")
	f.src.Invalidate(refused) // too late: it was replaced
	if err := f.src.Ensure(ctx); err != nil {
		t.Fatal(err)
	}
	f.noneIssued(t, "the new certificate")
}

// Refusals and bad answers are errors that say why; nothing is kept.
func TestRequestErrors(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	f.ctl.set(http.StatusForbidden)
	if err := f.src.Ensure(ctx); err == nil || !strings.Contains(err.Error(), "403 Forbidden: pod apps/p was deleted") {
		t.Errorf("a refusal: %v, want the status and the controller's reason", err)
	}
	f.ctl.set(0)
	f.ctl.mu.Lock()
	f.ctl.wrongPK = true
	f.ctl.mu.Unlock()
	if err := f.src.Ensure(ctx); err == nil || !strings.Contains(err.Error(), "not for the key") {
		t.Errorf("a certificate for another key: %v", err)
	}
	if f.src.Certificate() != nil {
		t.Error("a refused or bad answer left a certificate")
	}
	write(t, f.token, "")
	if err := f.src.Ensure(ctx); err == nil || !strings.Contains(err.Error(), "xds.identity.tokenFile") {
		t.Errorf("an empty token file: %v", err)
	}
}

// The controller's certificate must chain to the CA file, which is read
// again when it changes (a rotated CA).
func TestRootsRotate(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	other := certtest.New(t, "test CA")
	write(t, f.roots, string(other.PEM()))
	if err := f.src.Ensure(ctx); err == nil || !strings.Contains(err.Error(), "certificate") {
		t.Fatalf("a controller the CA file does not vouch for: %v", err)
	}
	write(t, f.roots, string(other.PEM())+string(f.ctl.ca.PEM()))
	// A new connection, verified against the file as it is now.
	f.src.hc.CloseIdleConnections()
	if err := f.src.Ensure(ctx); err != nil {
		t.Fatalf("after the bundle gained the controller's CA: %v", err)
	}
	// A file that breaks keeps the last good bundle.
	write(t, f.roots, "garbage")
	if p := f.src.o.Roots.Pool(); p == nil || !p.Equal(mustPool(t, string(other.PEM())+string(f.ctl.ca.PEM()))) {
		t.Error("a broken CA file replaced the last good bundle")
	}
	if _, err := LoadRoots(f.roots); err == nil {
		t.Error("LoadRoots accepted a file without certificates")
	}
}

func mustPool(t *testing.T, s string) *x509.CertPool {
	p := x509.NewCertPool()
	if !p.AppendCertsFromPEM([]byte(s)) {
		t.Fatal("no certificates")
	}
	return p
}
