package xds_test

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"io"
	"log/slog"
	"math/big"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	discoverygrpc "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	cachev3 "github.com/envoyproxy/go-control-plane/pkg/cache/v3"
	serverv3 "github.com/envoyproxy/go-control-plane/pkg/server/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/peer"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	meshv1 "github.com/misaki-io/misaki/api/v1alpha1"
	"github.com/misaki-io/misaki/internal/controller/translate"
	"github.com/misaki-io/misaki/internal/proxy/config"
	"github.com/misaki-io/misaki/internal/proxy/xds"
	"github.com/misaki-io/misaki/internal/proxy/xds/identity"
)

type testCA struct {
	cert *x509.Certificate
	key  crypto.Signer
}

func newTestCA(t *testing.T, name string) *testCA {
	t.Helper()
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: name},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		t.Fatal(err)
	}
	c, _ := x509.ParseCertificate(der)
	return &testCA{c, key}
}

func (ca *testCA) issue(t *testing.T, tmpl *x509.Certificate, pub crypto.PublicKey) *x509.Certificate {
	t.Helper()
	serial, _ := rand.Int(rand.Reader, big.NewInt(1<<62))
	tmpl.SerialNumber, tmpl.NotBefore, tmpl.NotAfter = serial, time.Now().Add(-time.Hour), time.Now().Add(time.Hour)
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, pub, ca.key)
	if err != nil {
		t.Fatal(err)
	}
	c, _ := x509.ParseCertificate(der)
	return c
}

func (ca *testCA) serving(t *testing.T) tls.Certificate {
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	c := ca.issue(t, &x509.Certificate{IPAddresses: []net.IP{net.ParseIP("127.0.0.1")},
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}, key.Public())
	return tls.Certificate{Certificate: [][]byte{c.Raw}, PrivateKey: key}
}

// TestClientMutualTLS runs the client with an identity against
// go-control-plane's server over mutual TLS. The first certificate the
// endpoint issues is from a CA the server does not trust (as after the
// controller's CA was replaced): the handshake is refused, and the client
// gets a new certificate before it tries again, instead of presenting the
// refused one until its renewal time.
func TestClientMutualTLS(t *testing.T) {
	trusted, other := newTestCA(t, "controller CA"), newTestCA(t, "old CA")
	dir := t.TempDir()
	caFile, tokenFile := filepath.Join(dir, "ca.pem"), filepath.Join(dir, "token")
	os.WriteFile(caFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: trusted.cert.Raw}), 0o600)
	os.WriteFile(tokenFile, []byte("token"), 0o600)

	// The certificate endpoint: the old CA first, then the trusted one.
	var mu sync.Mutex
	issued := 0
	endpoint := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var req identity.Request
		json.NewDecoder(r.Body).Decode(&req)
		blk, _ := pem.Decode([]byte(req.CSR))
		csr, err := x509.ParseCertificateRequest(blk.Bytes)
		if err != nil {
			http.Error(w, err.Error(), 400)
			return
		}
		mu.Lock()
		issuer := trusted
		if issued == 0 {
			issuer = other
		}
		issued++
		mu.Unlock()
		c := issuer.issue(t, &x509.Certificate{ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}, csr.PublicKey)
		json.NewEncoder(w).Encode(identity.Response{CertificateChain: string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.Raw}))})
	}))
	endpoint.TLS = &tls.Config{Certificates: []tls.Certificate{trusted.serving(t)}}
	endpoint.StartTLS()
	t.Cleanup(endpoint.Close)

	// The ADS server requires a client certificate from the trusted CA.
	pool := x509.NewCertPool()
	pool.AddCert(trusted.cert)
	creds := credentials.NewTLS(&tls.Config{Certificates: []tls.Certificate{trusted.serving(t)}, ClientCAs: pool, ClientAuth: tls.RequireAndVerifyClientCert})
	cache := cachev3.NewSnapshotCache(true, cachev3.IDHash{}, nil)
	res := translate.Namespace(translate.Input{Namespace: "apps", Routes: []meshv1.Route{{ObjectMeta: metav1.ObjectMeta{Name: "a", Namespace: "apps"},
		Spec: meshv1.RouteSpec{Hosts: []meshv1.Host{"a.mesh"}, Destination: meshv1.Destination{URL: "http://10.0.0.1:80"}}}}})
	snap, err := cachev3.NewSnapshot("v1", res.Resources)
	if err != nil {
		t.Fatal(err)
	}
	cache.SetSnapshot(context.Background(), "apps/p1", snap)
	var peers sync.Map // client certificates' issuers seen on streams
	gs := grpc.NewServer(grpc.Creds(creds), grpc.StreamInterceptor(func(srv any, ss grpc.ServerStream, _ *grpc.StreamServerInfo, h grpc.StreamHandler) error {
		if p, ok := peer.FromContext(ss.Context()); ok {
			if ti, ok := p.AuthInfo.(credentials.TLSInfo); ok && len(ti.State.PeerCertificates) > 0 {
				peers.Store(ti.State.PeerCertificates[0].Issuer.CommonName, true)
			}
		}
		return h(srv, ss)
	}))
	sctx, cancel := context.WithCancel(context.Background())
	discoverygrpc.RegisterAggregatedDiscoveryServiceServer(gs, serverv3.NewServer(sctx, cache, nil))
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go gs.Serve(ln)
	t.Cleanup(func() { cancel(); gs.Stop() })

	var logs strings.Builder
	var logMu sync.Mutex
	applied := make(chan []config.Route, 10)
	c, err := xds.New(xds.Options{
		Server: ln.Addr().String(), Node: "apps/p1", CAFile: caFile, Cache: filepath.Join(dir, "xds.yaml"),
		Identity: xds.IdentityOptions{TokenFile: tokenFile, Server: strings.TrimPrefix(endpoint.URL, "https://")},
		Log: slog.New(slog.NewTextHandler(writerFunc(func(p []byte) (int, error) {
			logMu.Lock()
			defer logMu.Unlock()
			return logs.Write(p)
		}), nil)),
		BackoffMin: 10 * time.Millisecond, BackoffMax: 50 * time.Millisecond,
		Apply: func(_ context.Context, routes []config.Route, _ map[string][]string) error {
			applied <- routes
			return nil
		},
	}, nil)
	if err != nil {
		t.Fatal(err)
	}
	ctx, stop := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- c.Run(ctx) }()
	defer func() { stop(); <-done }()
	select {
	case r := <-applied:
		if len(r) != 1 || r[0].Name != "a" {
			t.Errorf("applied %+v", r)
		}
	case <-time.After(10 * time.Second):
		logMu.Lock()
		l := logs.String()
		logMu.Unlock()
		t.Fatalf("no config over mutual TLS; logs:\n%s", l)
	}
	mu.Lock()
	n := issued
	mu.Unlock()
	if n != 2 {
		t.Errorf("%d certificates issued, want the refused one and its replacement", n)
	}
	if _, ok := peers.Load("controller CA"); !ok {
		t.Error("no stream with the trusted CA's certificate")
	}
}

type writerFunc func([]byte) (int, error)

func (f writerFunc) Write(p []byte) (int, error) { return f(p) }

var _ io.Writer = writerFunc(nil)
