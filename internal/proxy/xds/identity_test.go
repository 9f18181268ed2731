package xds_test

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"io"
	"log/slog"
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
	"github.com/misaki-io/misaki/internal/certtest"
	"github.com/misaki-io/misaki/internal/controller/translate"
	"github.com/misaki-io/misaki/internal/proxy/xds"
	"github.com/misaki-io/misaki/internal/proxy/xds/identity"
)

// TestClientMutualTLS runs the client with an identity against
// go-control-plane's server over mutual TLS. The first certificate the
// endpoint issues is from a CA the server does not trust (as after the
// controller's CA was replaced): the handshake is refused, and the client
// gets a new certificate before it tries again, instead of presenting the
// refused one until its renewal time.
func TestClientMutualTLS(t *testing.T) {
	trusted, other := certtest.New(t, "controller CA"), certtest.New(t, "old CA")
	dir := t.TempDir()
	caFile, tokenFile := filepath.Join(dir, "ca.pem"), filepath.Join(dir, "token")
	os.WriteFile(caFile, trusted.PEM(), 0o600)
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
		c := issuer.Issue(t, &x509.Certificate{ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}, csr.PublicKey)
		json.NewEncoder(w).Encode(identity.Response{CertificateChain: string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.Raw}))})
	}))
	endpoint.TLS = &tls.Config{Certificates: []tls.Certificate{trusted.Serving(t)}}
	endpoint.StartTLS()
	t.Cleanup(endpoint.Close)

	// The ADS server requires a client certificate from the trusted CA.
	pool := x509.NewCertPool()
	pool.AddCert(trusted.Cert)
	creds := credentials.NewTLS(&tls.Config{Certificates: []tls.Certificate{trusted.Serving(t)}, ClientCAs: pool, ClientAuth: tls.RequireAndVerifyClientCert})
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
	applied := runClient(t, xds.Options{
		Server: ln.Addr().String(), CAFile: caFile, Cache: filepath.Join(dir, "xds.yaml"),
		Identity: xds.IdentityOptions{TokenFile: tokenFile, Server: strings.TrimPrefix(endpoint.URL, "https://")},
		Log: slog.New(slog.NewTextHandler(writerFunc(func(p []byte) (int, error) {
			logMu.Lock()
			defer logMu.Unlock()
			return logs.Write(p)
		}), nil)),
		BackoffMin: 10 * time.Millisecond, BackoffMax: 50 * time.Millisecond,
	})
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
