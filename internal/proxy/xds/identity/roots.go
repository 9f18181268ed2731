package identity

import (
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"os"
	"sync"
)

// Roots is a CA bundle file that is read again when it changes: the
// injected proxy's comes from a ConfigMap volume, which the kubelet
// updates in place when the controller's CA rotates.
type Roots struct {
	path string

	mu   sync.Mutex // guards the fields below
	raw  []byte
	pool *x509.CertPool
}

// LoadRoots reads the bundle at path; it must hold a certificate.
func LoadRoots(path string) (*Roots, error) {
	r := &Roots{path: path}
	if _, err := r.load(); err != nil {
		return nil, err
	}
	return r, nil
}

// Pool is the bundle as it is in the file now; if the file cannot be read
// or holds no certificate, the last good one.
func (r *Roots) Pool() *x509.CertPool {
	p, _ := r.load()
	return p
}

func (r *Roots) load() (*x509.CertPool, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	b, err := os.ReadFile(r.path)
	if err != nil {
		return r.pool, fmt.Errorf("xds.caFile: %w", err)
	}
	if r.pool != nil && bytes.Equal(b, r.raw) {
		return r.pool, nil
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(b) {
		return r.pool, fmt.Errorf("xds.caFile %s: no PEM certificates found", r.path)
	}
	r.raw, r.pool = b, pool
	return pool, nil
}

// ClientConfig is a TLS client config for server host (a name or an IP)
// that verifies the server against the bundle as it is at each handshake.
// cert, if not nil, presents the client's certificate.
func (r *Roots) ClientConfig(host string, cert func(*tls.CertificateRequestInfo) (*tls.Certificate, error)) *tls.Config {
	return &tls.Config{
		MinVersion: tls.VersionTLS12,
		ServerName: host,
		// The standard verification reads a fixed RootCAs; VerifyConnection
		// does the same against the current bundle.
		InsecureSkipVerify:   true,
		VerifyConnection:     r.verify(host),
		GetClientCertificate: cert,
	}
}

func (r *Roots) verify(host string) func(tls.ConnectionState) error {
	return func(cs tls.ConnectionState) error {
		if len(cs.PeerCertificates) == 0 {
			return errors.New("the server sent no certificate")
		}
		inter := x509.NewCertPool()
		for _, c := range cs.PeerCertificates[1:] {
			inter.AddCert(c)
		}
		_, err := cs.PeerCertificates[0].Verify(x509.VerifyOptions{
			Roots: r.Pool(), Intermediates: inter, DNSName: host,
			KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		})
		if err != nil {
			return fmt.Errorf("the controller's certificate (xds.caFile %s): %w", r.path, err)
		}
		return nil
	}
}
