// Package hubtest starts a real hub on loopback for tests (the API, the
// CLI, the agent and the benchmarks): SQLite in a temp dir by default, or
// a PostgreSQL DSN, with helpers for an operator client and for enrolling
// a vehicle the way an agent does (bootstrap token, CSR, client
// certificate).
package hubtest

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	hubv1 "github.com/misaki-io/misaki/api/hub/v1"
	"github.com/misaki-io/misaki/internal/hub"
	"github.com/misaki-io/misaki/internal/hubclient"
)

// Hub is a running hub.
type Hub struct {
	URL     string
	DataDir string
	Token   string // the admin operator token
	CA      *x509.CertPool
	CAPEM   []byte
	Config  hub.Config
}

// Start runs a hub until the test ends. cfg's zero fields get test
// defaults (a temp data dir, 127.0.0.1:0).
func Start(t testing.TB, cfg hub.Config) *Hub {
	t.Helper()
	if cfg.DataDir == "" {
		cfg.DataDir = t.TempDir()
	}
	if cfg.Listen == "" {
		cfg.Listen = "127.0.0.1:0"
	}
	if len(cfg.Hosts) == 0 {
		cfg.Hosts = []string{"127.0.0.1"}
	}
	ready := make(chan string, 1)
	cfg.Ready = ready
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	if testing.Verbose() {
		log = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelInfo}))
	}
	go func() { done <- hub.Run(ctx, cfg, log) }()
	var url string
	select {
	case url = <-ready:
	case err := <-done:
		cancel()
		t.Fatalf("hub did not start: %v", err)
	case <-time.After(60 * time.Second):
		cancel()
		t.Fatal("hub did not start within 60s")
	}
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("hub: %v", err)
		}
	})
	h := &Hub{URL: url, DataDir: cfg.DataDir, Config: cfg}
	// A replica joining a store that has tokens makes none.
	if tok, err := os.ReadFile(filepath.Join(cfg.DataDir, "admin.token")); err == nil {
		h.Token = strings.TrimSpace(string(tok))
	}
	var err error
	h.CAPEM, err = os.ReadFile(filepath.Join(cfg.DataDir, "ca.crt"))
	if err != nil {
		t.Fatalf("hub CA: %v", err)
	}
	h.CA = x509.NewCertPool()
	h.CA.AppendCertsFromPEM(h.CAPEM)
	return h
}

// Client is an HTTP client that trusts the hub.
func (h *Hub) Client() *http.Client {
	return &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: h.CA}}, Timeout: 2 * time.Minute}
}

// Do sends a JSON request with the bearer token (none if token is "") and
// decodes a JSON answer into out (if non-nil and the status is 2xx). It
// returns the status and the raw body.
func (h *Hub) Do(t testing.TB, c *http.Client, token, method, path string, in, out any) (int, []byte) {
	t.Helper()
	var body io.Reader
	if in != nil {
		b, err := json.Marshal(in)
		if err != nil {
			t.Fatal(err)
		}
		body = bytes.NewReader(b)
	}
	req, err := http.NewRequest(method, h.URL+path, body)
	if err != nil {
		t.Fatal(err)
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	if in != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("%s %s: read: %v", method, path, err)
	}
	if out != nil && resp.StatusCode/100 == 2 && len(b) > 0 {
		if err := json.Unmarshal(b, out); err != nil {
			t.Fatalf("%s %s: decode %s: %v", method, path, b, err)
		}
	}
	return resp.StatusCode, b
}

// Admin sends a request with the admin token and fails the test unless
// the status is want.
func (h *Hub) Admin(t testing.TB, want int, method, path string, in, out any) []byte {
	t.Helper()
	code, b := h.Do(t, h.Client(), h.Token, method, path, in, out)
	if code != want {
		t.Fatalf("%s %s: status %d, want %d: %s", method, path, code, want, b)
	}
	return b
}

// Vehicle is an enrolled vehicle: its certificate and an mTLS client.
type Vehicle struct {
	ID     string
	Cert   tls.Certificate
	Client *http.Client
}

// Enrol creates vehicle id (with labels and allocatable; it may exist
// already), makes a bootstrap token, and enrols with a fresh key as an
// agent does.
func (h *Hub) Enrol(t testing.TB, id string, labels map[string]string, allocatable hubv1.ResourceList) *Vehicle {
	t.Helper()
	code, b := h.Do(t, h.Client(), h.Token, "POST", "/v1/vehicles", hubv1.Vehicle{ID: id, Labels: labels, Allocatable: allocatable}, nil)
	if code != http.StatusCreated && code != http.StatusConflict {
		t.Fatalf("create vehicle %s: %d %s", id, code, b)
	}
	var tok hubv1.BootstrapToken
	h.Admin(t, http.StatusCreated, "POST", "/v1/vehicles/"+id+"/tokens", nil, &tok)
	return h.EnrolToken(t, tok.Token)
}

// EnrolToken enrols with a bootstrap token made elsewhere (by the CLI,
// say) and a fresh key, as an agent does; the vehicle is the token's.
func (h *Hub) EnrolToken(t testing.TB, token string) *Vehicle {
	t.Helper()
	tc, cert, _, err := hubclient.New(h.URL, h.CA, nil).EnrolNew(context.Background(), token)
	if err != nil {
		t.Fatalf("enrol: %v", err)
	}
	return &Vehicle{ID: cert.Vehicle, Cert: tc, Client: &http.Client{
		Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: h.CA, Certificates: []tls.Certificate{tc}}},
		Timeout:   2 * time.Minute,
	}}
}

// NewCSR makes a P-256 key and a CSR for it.
func NewCSR(t testing.TB) (*ecdsa.PrivateKey, []byte) {
	t.Helper()
	key, err := hubclient.NewKey()
	if err != nil {
		t.Fatal(err)
	}
	csr, err := hubclient.NewCSR(key)
	if err != nil {
		t.Fatal(err)
	}
	return key, csr
}

// Desired long-polls the vehicle's desired state above after.
func (h *Hub) Desired(t testing.TB, v *Vehicle, half string, after int64, wait time.Duration) (int, *hubv1.Desired) {
	t.Helper()
	var d hubv1.Desired
	code, b := h.Do(t, v.Client, "", "GET", fmt.Sprintf("/v1/vehicles/%s/desired?half=%s&after=%d&wait=%s", v.ID, half, after, wait), nil, &d)
	switch code {
	case http.StatusOK:
		return code, &d
	case http.StatusNotModified:
		return code, nil
	}
	t.Fatalf("desired %s: %d %s", v.ID, code, b)
	return code, nil
}
