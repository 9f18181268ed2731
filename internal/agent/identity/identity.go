// Package identity is the vehicle agent's identity: the private key and
// the client certificate the hub issued for it, which every call to the
// hub after enrolment presents (mTLS), and their renewal.
//
// An agent starts with a one-time bootstrap token (Enrol): it makes a key
// that never leaves the vehicle, sends the hub a CSR with the token, and
// gets a certificate whose URI SAN spiffe://misaki/vehicle/<id> names the
// vehicle (internal/hub/enrol). From then on it renews over mTLS with the
// current certificate (Renew, RunRenewal) at two thirds of its lifetime,
// as cert-manager does, leaving a third for retries while the vehicle is
// out of coverage.
//
// The state lives in the agent's state directory (a PVC or a hostPath),
// because a vehicle that loses its key must be enrolled again by an
// operator with a new token:
//
//   - identity.pem (FileName): the private key (PKCS#8), the certificate,
//     then the CA bundle that issued it. Key and certificate are one file,
//     replaced atomically (temp file, fsync, rename, fsync of the
//     directory, by framelog.WriteFile), so a crash never leaves a key
//     that does not match its certificate. The file is plain PEM so an
//     operator can read it with openssl; it needs no separate checksum
//     because Load checks what damage would break: every block parses,
//     the key is the certificate's, and the certificate's signature
//     verifies against the CA stored with it.
//   - hub-ca.pem (HubCAFile): the CA bundle the hub returned, which the
//     agent trusts for the hub's TLS in addition to the CA it was
//     installed with (Roots). It is written before identity.pem, so an
//     identity.pem always has one next to it.
//
// Both files are mode 0600. Load never enrols: a missing identity.pem is
// ErrNotEnrolled, and a damaged one an error naming the file, because
// enrolling again needs a token only an operator can make.
package identity

import (
	"bytes"
	"crypto"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	hubv1 "github.com/misaki-io/misaki/api/hub/v1"
	"github.com/misaki-io/misaki/internal/clock"
	"github.com/misaki-io/misaki/internal/framelog"
	"github.com/misaki-io/misaki/internal/hub/enrol"
	"github.com/misaki-io/misaki/internal/hubclient"
)

// File names in the state directory.
const (
	FileName  = "identity.pem"
	HubCAFile = "hub-ca.pem"
)

// Sentinel errors.
var (
	// ErrNotEnrolled: the state directory has no identity.pem; the agent
	// needs a bootstrap token (Enrol).
	ErrNotEnrolled = errors.New("identity: not enrolled (no " + FileName + "): enrol with a bootstrap token")
	// ErrTokenRefused: the hub refused the bootstrap token (401: unknown,
	// malformed, already used or expired). An operator must make a new
	// one; retrying the same token cannot succeed.
	ErrTokenRefused = errors.New("identity: the hub refused the bootstrap token (invalid, already used or expired): ask an operator for a new one")
)

// Identity is the agent's current key and certificate. Its methods are
// safe for concurrent use; Renew swaps the certificate under readers.
type Identity struct {
	dir string
	clk clock.Clock
	fp  framelog.Failpoint // fails file-system calls on purpose (tests)

	renewMu sync.Mutex // serialises Renew: one key, file write and swap at a time
	cur     atomic.Pointer[material]
}

// material is one certificate and everything derived from it; it is
// never modified once stored.
type material struct {
	cert    *tls.Certificate // key, leaf and intermediates; Leaf set
	vehicle string
	hubCA   []byte // hub-ca.pem's bytes
}

// Load reads the identity in dir. It returns an error wrapping
// ErrNotEnrolled if dir has no identity.pem, and an error naming the file
// if identity.pem or hub-ca.pem is damaged. clk (nil: the real clock) is
// the time RunRenewal and the expiry checks use.
func Load(dir string, clk clock.Clock) (*Identity, error) {
	path := filepath.Join(dir, FileName)
	b, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("%w: %s", ErrNotEnrolled, path)
	}
	if err != nil {
		return nil, fmt.Errorf("identity: %w", err)
	}
	m, err := parse(b)
	if err != nil {
		return nil, fmt.Errorf("identity: %s is damaged: %w (restore it, or remove it and enrol again with a new bootstrap token)", path, err)
	}
	caPath := filepath.Join(dir, HubCAFile)
	if m.hubCA, err = os.ReadFile(caPath); err != nil {
		return nil, fmt.Errorf("identity: %s is missing or unreadable next to %s: %w (enrolment writes it first; restore it, or enrol again)", caPath, FileName, err)
	}
	if _, err := parseCerts(m.hubCA); err != nil {
		return nil, fmt.Errorf("identity: %s is damaged: %w", caPath, err)
	}
	return newIdentity(dir, clk, m), nil
}

func newIdentity(dir string, clk clock.Clock, m *material) *Identity {
	if clk == nil {
		clk = clock.Real{}
	}
	id := &Identity{dir: dir, clk: clk}
	id.cur.Store(m)
	return id
}

// Vehicle is the vehicle ID, from the certificate's URI SAN.
func (id *Identity) Vehicle() string { return id.cur.Load().vehicle }

// NotBefore is when the current certificate became valid.
func (id *Identity) NotBefore() time.Time { return id.cur.Load().cert.Leaf.NotBefore }

// NotAfter is when the current certificate expires.
func (id *Identity) NotAfter() time.Time { return id.cur.Load().cert.Leaf.NotAfter }

// RenewAt is when to renew: two thirds of the way from NotBefore to
// NotAfter.
func (id *Identity) RenewAt() time.Time { return id.cur.Load().renewAt() }

func (m *material) renewAt() time.Time {
	nb, na := m.cert.Leaf.NotBefore, m.cert.Leaf.NotAfter
	return nb.Add(na.Sub(nb) / 3 * 2)
}

// TLSCertificate is the current certificate with its key, for a TLS
// client. The caller must not modify it. A tls.Config that should follow
// renewals uses ClientTLS instead of copying it.
func (id *Identity) TLSCertificate() *tls.Certificate { return id.cur.Load().cert }

// HubCA is the CA bundle (PEM) the hub returned with the certificate.
func (id *Identity) HubCA() []byte { return bytes.Clone(id.cur.Load().hubCA) }

// Roots is base (nil: none) plus the hub's CA bundle: what to trust for
// the hub's TLS. base is not modified.
func (id *Identity) Roots(base *x509.CertPool) *x509.CertPool {
	pool := x509.NewCertPool()
	if base != nil {
		pool = base.Clone()
	}
	pool.AppendCertsFromPEM(id.cur.Load().hubCA)
	return pool
}

// ClientTLS is a TLS client configuration that trusts roots and presents
// the current certificate. It asks for the certificate on each handshake,
// so after a renewal new connections present the new one without the
// configuration or its clients being rebuilt; connections already open
// keep the certificate they were made with.
func (id *Identity) ClientTLS(roots *x509.CertPool) *tls.Config {
	return &tls.Config{
		RootCAs:    roots,
		MinVersion: tls.VersionTLS12,
		GetClientCertificate: func(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
			return id.cur.Load().cert, nil
		},
	}
}

// Client is a hub client for url that trusts roots and presents the
// current certificate (ClientTLS), with its own connection pool.
func (id *Identity) Client(url string, roots *x509.CertPool) *hubclient.Client {
	return &hubclient.Client{URL: url, HTTP: &http.Client{Transport: &http.Transport{
		TLSClientConfig:   id.ClientTLS(roots),
		ForceAttemptHTTP2: true,
	}}}
}

// expired reports whether the current certificate has expired by the
// identity's clock.
func (id *Identity) expired() bool { return id.clk.Now().After(id.NotAfter()) }

// build checks the hub's answer to a CSR for key and returns the identity
// it makes and identity.pem's bytes. want, if set, is the vehicle the
// certificate must be for (a renewal).
func build(key crypto.Signer, hc hubv1.Certificate, want string) (*material, []byte, error) {
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, nil, fmt.Errorf("encode key: %w", err)
	}
	leafs, err := parseCerts([]byte(hc.Certificate))
	if err != nil {
		return nil, nil, fmt.Errorf("the hub's certificate: %w", err)
	}
	cas, err := parseCerts([]byte(hc.CA))
	if err != nil {
		return nil, nil, fmt.Errorf("the hub's CA bundle: %w", err)
	}
	var file bytes.Buffer
	pem.Encode(&file, &pem.Block{Type: "PRIVATE KEY", Bytes: keyDER})
	for _, c := range append(leafs, cas...) {
		pem.Encode(&file, &pem.Block{Type: "CERTIFICATE", Bytes: c.Raw})
	}
	// The same checks Load makes, so what is written is what loads.
	m, err := parse(file.Bytes())
	if err != nil {
		return nil, nil, fmt.Errorf("the hub's answer: %w", err)
	}
	if hc.Vehicle != m.vehicle {
		return nil, nil, fmt.Errorf("the hub's answer is for vehicle %q but its certificate for %q", hc.Vehicle, m.vehicle)
	}
	if want != "" && m.vehicle != want {
		return nil, nil, fmt.Errorf("the hub issued a certificate for vehicle %q, want %q", m.vehicle, want)
	}
	m.hubCA = []byte(hc.CA)
	return m, file.Bytes(), nil
}

// parse reads identity.pem: one PRIVATE KEY block, the certificate, then
// the CA bundle. It checks that the key is the certificate's, that the
// certificate's signature verifies against a CA of the bundle (which
// catches damage the parsers let through), and that it names a vehicle.
func parse(b []byte) (*material, error) {
	var key crypto.Signer
	var certs []*x509.Certificate
	rest := b
	for n := 1; ; n++ {
		var block *pem.Block
		block, rest = pem.Decode(rest)
		if block == nil {
			break
		}
		switch block.Type {
		case "PRIVATE KEY":
			if key != nil {
				return nil, fmt.Errorf("PEM block %d: a second private key", n)
			}
			k, err := x509.ParsePKCS8PrivateKey(block.Bytes)
			if err != nil {
				return nil, fmt.Errorf("PEM block %d: private key: %w", n, err)
			}
			s, ok := k.(crypto.Signer)
			if !ok {
				return nil, fmt.Errorf("PEM block %d: a %T cannot sign", n, k)
			}
			key = s
		case "CERTIFICATE":
			c, err := x509.ParseCertificate(block.Bytes)
			if err != nil {
				return nil, fmt.Errorf("PEM block %d: certificate: %w", n, err)
			}
			certs = append(certs, c)
		default:
			return nil, fmt.Errorf("PEM block %d: type %q, want PRIVATE KEY or CERTIFICATE", n, block.Type)
		}
	}
	switch {
	case len(bytes.TrimSpace(rest)) > 0:
		return nil, fmt.Errorf("%d bytes after the last PEM block that are not one (cut short?)", len(bytes.TrimSpace(rest)))
	case key == nil:
		return nil, errors.New("no PRIVATE KEY block")
	case len(certs) < 2:
		return nil, fmt.Errorf("%d CERTIFICATE blocks, want the vehicle's certificate and its CA", len(certs))
	}
	leaf, chain := certs[0], certs[1:]
	pub, ok := key.Public().(interface{ Equal(crypto.PublicKey) bool })
	if !ok || !pub.Equal(leaf.PublicKey) {
		return nil, errors.New("the private key is not the certificate's")
	}
	if err := signedByOneOf(leaf, chain); err != nil {
		return nil, err
	}
	vehicle, err := enrol.VehicleID(leaf)
	if err != nil {
		return nil, err
	}
	tc := &tls.Certificate{Certificate: [][]byte{leaf.Raw}, PrivateKey: key, Leaf: leaf}
	for _, c := range chain {
		// Intermediates go with the certificate; roots the peer has.
		if !bytes.Equal(c.RawIssuer, c.RawSubject) {
			tc.Certificate = append(tc.Certificate, c.Raw)
		}
	}
	return &material{cert: tc, vehicle: vehicle}, nil
}

func signedByOneOf(leaf *x509.Certificate, cas []*x509.Certificate) error {
	var errs []error
	for _, ca := range cas {
		err := leaf.CheckSignatureFrom(ca)
		if err == nil {
			return nil
		}
		errs = append(errs, fmt.Errorf("%q: %w", ca.Subject.CommonName, err))
	}
	return fmt.Errorf("certificate %q is signed by no CA stored with it: %w", leaf.Subject.CommonName, errors.Join(errs...))
}

// parseCerts reads a PEM bundle of one or more certificates and nothing
// else.
func parseCerts(b []byte) ([]*x509.Certificate, error) {
	var out []*x509.Certificate
	rest := b
	for n := 1; ; n++ {
		var block *pem.Block
		block, rest = pem.Decode(rest)
		if block == nil {
			break
		}
		if block.Type != "CERTIFICATE" {
			return nil, fmt.Errorf("PEM block %d: type %q, want CERTIFICATE", n, block.Type)
		}
		c, err := x509.ParseCertificate(block.Bytes)
		if err != nil {
			return nil, fmt.Errorf("PEM block %d: %w", n, err)
		}
		out = append(out, c)
	}
	if len(bytes.TrimSpace(rest)) > 0 {
		return nil, fmt.Errorf("%d bytes after the last PEM block that are not one (cut short?)", len(bytes.TrimSpace(rest)))
	}
	if len(out) == 0 {
		return nil, errors.New("no CERTIFICATE block")
	}
	return out, nil
}

// save writes hub-ca.pem (when caChanged) and then identity.pem, each
// replaced atomically with mode 0600. identity.pem is the commit point: a
// failure before its rename leaves it as it was.
func save(dir string, fp framelog.Failpoint, file, hubCA []byte, caChanged bool) error {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("identity: state dir: %w", err)
	}
	if caChanged {
		if err := writeFile(filepath.Join(dir, HubCAFile), fp, hubCA); err != nil {
			return err
		}
	}
	return writeFile(filepath.Join(dir, FileName), fp, file)
}

// writeFile replaces path with b: framelog.WriteFile's temporary file
// (created 0600), fdatasync, rename and directory fsync. The bytes are
// PEM, not frames: see the package doc for why they need no checksum.
func writeFile(path string, fp framelog.Failpoint, b []byte) error {
	err := framelog.WriteFile(path, fp, func(w io.Writer) error {
		_, err := w.Write(b)
		return err
	})
	if err != nil {
		return fmt.Errorf("identity: write %s: %w", path, err)
	}
	return nil
}
