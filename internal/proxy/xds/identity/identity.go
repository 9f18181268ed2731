// Package identity gets the edge proxy its certificate from the
// controller's CA and keeps it fresh, as Istio's agent does from istiod:
// the proxy reads its pod's projected service-account token (audience
// misaki, rotated by the kubelet), makes a new key, and posts the token
// and a certificate request to the controller over HTTPS (Path); the
// controller checks the token with the API server and answers with a
// short-lived certificate naming the pod, which the proxy presents on its
// ADS connection.
//
// A certificate is renewed half way through its life, with a new key;
// a failed renewal is retried with backoff while the current certificate
// is kept, so a controller that is down costs nothing until the
// certificate expires, and a proxy whose certificate expired while it was
// cut off gets a new one before it reconnects. The key never leaves
// memory. The controller is trusted through xds.caFile (Roots), read
// again when it changes.
//
// The package speaks HTTPS and JSON with the standard library: the edge
// proxy imports no Kubernetes client.
package identity

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/misaki-io/misaki/internal/backoff"
	"github.com/misaki-io/misaki/internal/clock"
)

// Path is where the controller's certificate endpoint takes a Request.
const Path = "/v1/certificate"

// Request is the JSON body a proxy POSTs to Path, with its pod's
// service-account token as the bearer token (Authorization header).
type Request struct {
	// CSR is a PEM CERTIFICATE REQUEST signed by the proxy's new key. The
	// controller takes only its public key: what the certificate names
	// comes from the token.
	CSR string `json:"csr"`
}

// Response answers a Request (200).
type Response struct {
	// CertificateChain is PEM: the proxy's certificate first.
	CertificateChain string `json:"certificateChain"`
}

// ErrorResponse is the body of a refusal (4xx, 5xx).
type ErrorResponse struct {
	Error string `json:"error"`
}

// Options configure a Source.
type Options struct {
	// Server is the controller's certificate endpoint, host:port.
	Server string
	// TokenFile is the pod's projected service-account token, read at
	// each request (the kubelet rotates it).
	TokenFile string
	// Roots are the CAs the controller's certificate must chain to.
	Roots *Roots
	// Clock times renewals. Default the real clock.
	Clock clock.Clock
	// Backoff spaces retries of a failed request. Default 1s growing to
	// 1m, with jitter.
	Backoff backoff.Policy
	Log     *slog.Logger
}

// Source holds the proxy's current certificate and renews it.
type Source struct {
	o    Options
	host string
	hc   *http.Client

	mu  sync.Mutex // held for a request: one at a time
	cur atomic.Pointer[held]
}

// held is a certificate and when it is due for renewal: half way from its
// arrival to its end, or at once once it is stale.
type held struct {
	cert  *tls.Certificate
	renew time.Time
	stale bool // Invalidate: replace it before it is used again
}

// New returns a Source; it does no I/O.
func New(o Options) (*Source, error) {
	host, _, err := net.SplitHostPort(o.Server)
	if err != nil {
		return nil, fmt.Errorf("xds.identity.server %q: %w", o.Server, err)
	}
	if o.TokenFile == "" || o.Roots == nil {
		return nil, errors.New("identity: a token file and the controller's CA are required")
	}
	if o.Clock == nil {
		o.Clock = clock.Real{}
	}
	if o.Backoff == (backoff.Policy{}) {
		o.Backoff = backoff.Policy{Initial: time.Second, Max: time.Minute}
	}
	if o.Log == nil {
		o.Log = slog.New(slog.DiscardHandler)
	}
	tr := &http.Transport{
		TLSClientConfig:     o.Roots.ClientConfig(host, nil),
		TLSHandshakeTimeout: 10 * time.Second,
		IdleConnTimeout:     time.Minute,
	}
	return &Source{o: o, host: host, hc: &http.Client{Transport: tr, Timeout: 30 * time.Second}}, nil
}

// Certificate is the current certificate, or nil.
func (s *Source) Certificate() *tls.Certificate {
	if h := s.cur.Load(); h != nil {
		return h.cert
	}
	return nil
}

// GetClientCertificate presents the current certificate
// (tls.Config.GetClientCertificate); none before the first.
func (s *Source) GetClientCertificate(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
	if h := s.cur.Load(); h != nil {
		return h.cert, nil
	}
	return &tls.Certificate{}, nil
}

// Ensure gets a certificate now unless the current one is valid.
func (s *Source) Ensure(ctx context.Context) error {
	return s.refresh(ctx, func(h *held) bool {
		now := s.o.Clock.Now()
		return h.stale || !now.Before(h.cert.Leaf.NotAfter) || now.Before(h.cert.Leaf.NotBefore)
	})
}

// Invalidate marks c for replacement if it is still the current
// certificate: the controller refused it (its CA was replaced, say). It is
// still presented until a new one comes.
func (s *Source) Invalidate(c *tls.Certificate) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if h := s.cur.Load(); h != nil && h.cert == c {
		s.cur.Store(&held{cert: h.cert, stale: true})
	}
}

// Run renews the certificate half way through its life (getting one at
// once if there is none) until ctx ends, retrying failures with backoff
// and keeping the current certificate meanwhile. It returns nil when ctx
// ends.
func (s *Source) Run(ctx context.Context) error {
	retry := backoff.New(s.o.Backoff, s.o.Clock)
	for {
		if backoff.Sleep(ctx, s.o.Clock, s.untilRenewal()) != nil {
			return nil
		}
		err := s.refresh(ctx, func(h *held) bool { return !s.o.Clock.Now().Before(h.renew) })
		if err == nil {
			retry.Reset()
			continue
		}
		if ctx.Err() != nil {
			return nil
		}
		attrs := []any{"err", err}
		if h := s.cur.Load(); h != nil {
			attrs = append(attrs, "current_expires", h.cert.Leaf.NotAfter.UTC())
		}
		s.o.Log.Warn("identity: no new certificate; keeping the current one", attrs...)
		if retry.Wait(ctx) != nil {
			return nil
		}
	}
}

// untilRenewal is how long the current certificate is good before it is
// due; 0 if there is none.
func (s *Source) untilRenewal() time.Duration {
	h := s.cur.Load()
	if h == nil {
		return 0
	}
	return h.renew.Sub(s.o.Clock.Now())
}

// refresh requests a certificate if there is none or need says the
// current one needs replacing; one request at a time, so that a caller
// that waited finds the certificate another got.
func (s *Source) refresh(ctx context.Context, need func(*held) bool) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if h := s.cur.Load(); h != nil && !need(h) {
		return nil
	}
	c, err := s.request(ctx)
	if err != nil {
		return err
	}
	now := s.o.Clock.Now()
	if !now.Before(c.Leaf.NotAfter) {
		return fmt.Errorf("identity: the certificate ended at %v, before it arrived (%v): is this machine's clock right?", c.Leaf.NotAfter.UTC(), now.UTC())
	}
	s.cur.Store(&held{cert: c, renew: now.Add(c.Leaf.NotAfter.Sub(now) / 2)})
	s.o.Log.Info("identity: certificate issued", "id", uris(c.Leaf), "not_after", c.Leaf.NotAfter.UTC(), "serial", c.Leaf.SerialNumber.Text(16))
	return nil
}

// request exchanges the token and a new key's CSR for a certificate.
func (s *Source) request(ctx context.Context) (*tls.Certificate, error) {
	tok, err := os.ReadFile(s.o.TokenFile)
	if err != nil {
		return nil, fmt.Errorf("xds.identity.tokenFile: %w", err)
	}
	token := strings.TrimSpace(string(tok))
	if token == "" {
		return nil, fmt.Errorf("xds.identity.tokenFile %s is empty", s.o.TokenFile)
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	der, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{}, key)
	if err != nil {
		return nil, err
	}
	body, _ := json.Marshal(Request{CSR: string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: der}))})
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, "https://"+s.o.Server+Path, bytes.NewReader(body))
	if err != nil {
		return nil, err
	}
	req.Header.Set("Authorization", "Bearer "+token)
	req.Header.Set("Content-Type", "application/json")
	resp, err := s.hc.Do(req)
	if err != nil {
		return nil, fmt.Errorf("identity: %w", err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return nil, fmt.Errorf("identity: read the answer: %w", err)
	}
	if resp.StatusCode != http.StatusOK {
		var e ErrorResponse
		if json.Unmarshal(b, &e) != nil || e.Error == "" {
			e.Error = strings.TrimSpace(string(b))
		}
		return nil, fmt.Errorf("identity: the controller refused the certificate request: %s: %s", resp.Status, e.Error)
	}
	var out Response
	if err := json.Unmarshal(b, &out); err != nil {
		return nil, fmt.Errorf("identity: decode the answer: %w", err)
	}
	cert := &tls.Certificate{PrivateKey: key}
	rest := []byte(out.CertificateChain)
	for {
		var blk *pem.Block
		if blk, rest = pem.Decode(rest); blk == nil {
			break
		}
		if blk.Type == "CERTIFICATE" {
			cert.Certificate = append(cert.Certificate, blk.Bytes)
		}
	}
	if len(cert.Certificate) == 0 {
		return nil, errors.New("identity: the answer holds no certificate")
	}
	if cert.Leaf, err = x509.ParseCertificate(cert.Certificate[0]); err != nil {
		return nil, fmt.Errorf("identity: the certificate: %w", err)
	}
	if pub, ok := cert.Leaf.PublicKey.(*ecdsa.PublicKey); !ok || !pub.Equal(key.Public()) {
		return nil, errors.New("identity: the certificate is not for the key the proxy sent")
	}
	return cert, nil
}

func uris(c *x509.Certificate) []string {
	var out []string
	for _, u := range c.URIs {
		out = append(out, u.String())
	}
	return out
}
