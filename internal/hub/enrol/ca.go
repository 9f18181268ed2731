// Package enrol is the fleet's certificate authority and its bootstrap
// tokens: how a vehicle gets the client certificate it uses from then on.
//
// It is the same PKI the gateway uses. A vehicle's identity is a client
// certificate whose URI SAN is spiffe://misaki/vehicle/<id> (VehicleURI;
// internal/devpki writes the same) and whose common name is <id>; the
// gateway trusts the CA through gateway.tls.clientCAFile, and the hub reads
// the vehicle ID from the peer certificate with VehicleID.
//
// An operator creates a one-time bootstrap token (NewToken; the hub keeps
// HashSecret of its secret); the agent sends it with a CSR; the hub checks
// the token and calls IssueVehicle with the token's vehicle ID. The
// identity in the certificate comes from the token, never from the CSR.
package enrol

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"github.com/misaki-io/misaki/internal/durable"
	"math/big"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"time"
)

// Sentinel errors; the hub answers them with 400 (they are the caller's
// fault), anything else with 500.
var (
	// ErrInvalidVehicleID: not a DNS label of at most 54 characters.
	ErrInvalidVehicleID = errors.New("enrol: invalid vehicle ID")
	// ErrInvalidCSR: not a PEM certificate request, or its signature
	// does not verify.
	ErrInvalidCSR = errors.New("enrol: invalid certificate request")
	// ErrKeyNotAllowed: the CSR's key is of a type or size the CA does not
	// sign (ECDSA P-256 or P-384, Ed25519, RSA of 2048 to 8192 bits are).
	ErrKeyNotAllowed = errors.New("enrol: key type or size not allowed")
	// ErrInvalidToken: not "<id>.<secret>" in the bootstrap token format.
	ErrInvalidToken = errors.New("enrol: invalid bootstrap token")
)

// Validity and clock skew.
const (
	// CAValidity is how long a CA made by LoadOrCreateCA is valid.
	CAValidity = 10 * 365 * 24 * time.Hour
	// Backdate is how far before now certificates start, for peers whose
	// clocks lag.
	Backdate = 5 * time.Minute
)

// File names LoadOrCreateCA uses in its directory.
const (
	CACertFile = "ca.crt"
	CAKeyFile  = "ca.key"
)

// CA is the fleet CA: a certificate and its private key.
type CA struct {
	cert    *x509.Certificate
	certPEM []byte
	key     crypto.Signer
}

// LoadOrCreateCA loads dir/ca.crt and dir/ca.key, or creates them: an ECDSA
// P-256 key (PKCS#8 PEM, mode 0600) and a self-signed CA certificate valid
// for CAValidity from now. If only the key exists (a crash between the two
// writes), the certificate is made again from it; if only the certificate
// exists, that is an error (the key is lost, and replacing the CA would
// strand every enrolled vehicle), as is any file that does not load.
func LoadOrCreateCA(dir string, now time.Time) (*CA, error) {
	certFile, keyFile := filepath.Join(dir, CACertFile), filepath.Join(dir, CAKeyFile)
	certOK, err := exists(certFile)
	if err != nil {
		return nil, fmt.Errorf("enrol: CA: %w", err)
	}
	keyOK, err := exists(keyFile)
	if err != nil {
		return nil, fmt.Errorf("enrol: CA: %w", err)
	}
	switch {
	case certOK && keyOK:
		return LoadCA(certFile, keyFile)
	case certOK:
		return nil, fmt.Errorf("enrol: CA: %s exists without %s; restore the key or move the certificate away", certFile, keyFile)
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("enrol: CA: %w", err)
	}
	var key crypto.Signer
	if keyOK {
		if key, err = loadKey(keyFile); err != nil {
			return nil, err
		}
	} else {
		k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			return nil, fmt.Errorf("enrol: CA key: %w", err)
		}
		keyPEM, err := encodeKey(k)
		if err != nil {
			return nil, err
		}
		if err := durable.WriteNew(keyFile, keyPEM, 0o600); err != nil {
			return nil, fmt.Errorf("enrol: CA key: %w", err)
		}
		key = k
	}
	serial, err := newSerial()
	if err != nil {
		return nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: "misaki fleet CA", Organization: []string{"misaki"}},
		NotBefore:             now.Add(-Backdate),
		NotAfter:              now.Add(CAValidity),
		IsCA:                  true,
		BasicConstraintsValid: true,
		MaxPathLenZero:        true, // it signs vehicles and servers, no intermediate CAs
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		return nil, fmt.Errorf("enrol: CA certificate: %w", err)
	}
	if err := durable.WriteNew(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o644); err != nil {
		if errors.Is(err, os.ErrExist) { // another process made it first: use theirs
			return LoadCA(certFile, keyFile)
		}
		return nil, fmt.Errorf("enrol: CA certificate: %w", err)
	}
	return LoadCA(certFile, keyFile)
}

// LoadCA loads a CA certificate and its private key (PEM; PKCS#8, SEC 1 EC
// or PKCS#1 RSA), for a CA made elsewhere. The certificate must be a CA
// and the key must be its key.
func LoadCA(certFile, keyFile string) (*CA, error) {
	certPEM, err := os.ReadFile(certFile)
	if err != nil {
		return nil, fmt.Errorf("enrol: CA: %w", err)
	}
	block, _ := pem.Decode(certPEM)
	if block == nil || block.Type != "CERTIFICATE" {
		return nil, fmt.Errorf("enrol: CA: %s has no PEM CERTIFICATE block", certFile)
	}
	cert, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		return nil, fmt.Errorf("enrol: CA: %s: %w", certFile, err)
	}
	if !cert.IsCA || !cert.BasicConstraintsValid {
		return nil, fmt.Errorf("enrol: CA: %s is not a CA certificate (basic constraints CA:TRUE)", certFile)
	}
	key, err := loadKey(keyFile)
	if err != nil {
		return nil, err
	}
	pub, ok := key.Public().(interface{ Equal(crypto.PublicKey) bool })
	if !ok || !pub.Equal(cert.PublicKey) {
		return nil, fmt.Errorf("enrol: CA: %s is not the key of %s", keyFile, certFile)
	}
	return &CA{cert: cert, certPEM: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: cert.Raw}), key: key}, nil
}

func loadKey(keyFile string) (crypto.Signer, error) {
	b, err := os.ReadFile(keyFile)
	if err != nil {
		return nil, fmt.Errorf("enrol: CA key: %w", err)
	}
	block, _ := pem.Decode(b)
	if block == nil {
		return nil, fmt.Errorf("enrol: CA key: %s has no PEM block", keyFile)
	}
	var k any
	switch block.Type {
	case "PRIVATE KEY":
		k, err = x509.ParsePKCS8PrivateKey(block.Bytes)
	case "EC PRIVATE KEY":
		k, err = x509.ParseECPrivateKey(block.Bytes)
	case "RSA PRIVATE KEY":
		k, err = x509.ParsePKCS1PrivateKey(block.Bytes)
	default:
		return nil, fmt.Errorf("enrol: CA key: %s: PEM block %q, want PRIVATE KEY", keyFile, block.Type)
	}
	if err != nil {
		return nil, fmt.Errorf("enrol: CA key: %s: %w", keyFile, err)
	}
	s, ok := k.(crypto.Signer)
	if !ok {
		return nil, fmt.Errorf("enrol: CA key: %s: %T cannot sign", keyFile, k)
	}
	return s, nil
}

func encodeKey(k crypto.Signer) ([]byte, error) {
	der, err := x509.MarshalPKCS8PrivateKey(k)
	if err != nil {
		return nil, fmt.Errorf("enrol: encode key: %w", err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), nil
}

// CertPEM is the CA certificate, PEM: what vehicles trust for the hub and
// what gateway.tls.clientCAFile holds.
func (ca *CA) CertPEM() []byte { return bytes.Clone(ca.certPEM) }

// Certificate is the parsed CA certificate.
func (ca *CA) Certificate() *x509.Certificate { return ca.cert }

// Pool is a pool holding only the CA: tls.Config.ClientCAs on the hub and
// the gateway, RootCAs on an agent.
func (ca *CA) Pool() *x509.CertPool {
	p := x509.NewCertPool()
	p.AddCert(ca.cert)
	return p
}

// IssueVehicle signs a client certificate for vehicleID over the public key
// of csrPEM (PEM "CERTIFICATE REQUEST"). The CSR's signature must verify
// (the requester holds the key) and its key must be ECDSA P-256 or P-384,
// Ed25519, or RSA of 2048 to 8192 bits. Everything else the CSR asks for
// (subject, SANs, extensions) is ignored: the certificate's common name is
// vehicleID and its one SAN VehicleURI(vehicleID), for client
// authentication only, with a random 128-bit serial, valid from now-Backdate
// for ttl (never past the CA's own expiry).
func (ca *CA) IssueVehicle(csrPEM []byte, vehicleID string, now time.Time, ttl time.Duration) (certPEM []byte, notAfter time.Time, err error) {
	if err := ValidVehicleID(vehicleID); err != nil {
		return nil, time.Time{}, err
	}
	csr, err := parseCSR(csrPEM)
	if err != nil {
		return nil, time.Time{}, err
	}
	if err := allowedKey(csr.PublicKey); err != nil {
		return nil, time.Time{}, err
	}
	uri := vehicleURL(vehicleID)
	tmpl := &x509.Certificate{
		Subject:     pkix.Name{CommonName: vehicleID},
		URIs:        []*url.URL{uri},
		KeyUsage:    x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}
	der, notAfter, err := ca.sign(tmpl, csr.PublicKey, now, ttl)
	if err != nil {
		return nil, time.Time{}, fmt.Errorf("enrol: issue certificate for vehicle %s: %w", vehicleID, err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), notAfter, nil
}

// ServerCertificate makes a key (ECDSA P-256) and a server certificate for
// hosts (DNS names and IP addresses), for the hub's HTTPS listener, valid
// from now-Backdate for ttl. The key is PKCS#8 PEM.
func (ca *CA) ServerCertificate(hosts []string, now time.Time, ttl time.Duration) (certPEM, keyPEM []byte, err error) {
	if len(hosts) == 0 {
		return nil, nil, errors.New("enrol: server certificate: no hosts")
	}
	tmpl := &x509.Certificate{
		Subject:     pkix.Name{CommonName: hosts[0]},
		KeyUsage:    x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	for _, h := range hosts {
		if ip := net.ParseIP(h); ip != nil {
			tmpl.IPAddresses = append(tmpl.IPAddresses, ip)
			continue
		}
		if !validHostname(h) {
			return nil, nil, fmt.Errorf("enrol: server certificate: host %q is neither an IP address nor a DNS name", h)
		}
		tmpl.DNSNames = append(tmpl.DNSNames, h)
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, fmt.Errorf("enrol: server key: %w", err)
	}
	der, _, err := ca.sign(tmpl, key.Public(), now, ttl)
	if err != nil {
		return nil, nil, fmt.Errorf("enrol: server certificate for %v: %w", hosts, err)
	}
	keyPEM, err = encodeKey(key)
	if err != nil {
		return nil, nil, err
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), keyPEM, nil
}

// sign fills in the serial and validity and signs tmpl over pub.
func (ca *CA) sign(tmpl *x509.Certificate, pub crypto.PublicKey, now time.Time, ttl time.Duration) ([]byte, time.Time, error) {
	if ttl <= 0 {
		return nil, time.Time{}, fmt.Errorf("ttl %s: want > 0", ttl)
	}
	if now.After(ca.cert.NotAfter) {
		return nil, time.Time{}, fmt.Errorf("the CA expired at %s", ca.cert.NotAfter.UTC().Format(time.RFC3339))
	}
	serial, err := newSerial()
	if err != nil {
		return nil, time.Time{}, err
	}
	tmpl.SerialNumber = serial
	tmpl.NotBefore = now.Add(-Backdate)
	tmpl.NotAfter = now.Add(ttl)
	if tmpl.NotAfter.After(ca.cert.NotAfter) {
		tmpl.NotAfter = ca.cert.NotAfter
	}
	tmpl.BasicConstraintsValid = true // CA:FALSE, stated
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, pub, ca.key)
	if err != nil {
		return nil, time.Time{}, err
	}
	// x509 encodes times to the second.
	return der, tmpl.NotAfter.Truncate(time.Second), nil
}

// CheckCSR checks csrPEM as IssueVehicle would (PEM, signature, key type
// and size) without issuing anything: the hub calls it before it spends a
// one-time token on a request it would refuse. Errors wrap ErrInvalidCSR or
// ErrKeyNotAllowed.
func CheckCSR(csrPEM []byte) error {
	csr, err := parseCSR(csrPEM)
	if err != nil {
		return err
	}
	return allowedKey(csr.PublicKey)
}

func parseCSR(csrPEM []byte) (*x509.CertificateRequest, error) {
	block, _ := pem.Decode(csrPEM)
	if block == nil || (block.Type != "CERTIFICATE REQUEST" && block.Type != "NEW CERTIFICATE REQUEST") {
		return nil, fmt.Errorf("%w: no PEM CERTIFICATE REQUEST block", ErrInvalidCSR)
	}
	csr, err := x509.ParseCertificateRequest(block.Bytes)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrInvalidCSR, err)
	}
	if err := csr.CheckSignature(); err != nil {
		return nil, fmt.Errorf("%w: signature: %v", ErrInvalidCSR, err)
	}
	return csr, nil
}

func allowedKey(pub crypto.PublicKey) error {
	switch k := pub.(type) {
	case *ecdsa.PublicKey:
		if k.Curve == elliptic.P256() || k.Curve == elliptic.P384() {
			return nil
		}
		return fmt.Errorf("%w: ECDSA on %s; use P-256 or P-384", ErrKeyNotAllowed, k.Curve.Params().Name)
	case ed25519.PublicKey:
		return nil
	case *rsa.PublicKey:
		if n := k.N.BitLen(); n < 2048 || n > 8192 {
			return fmt.Errorf("%w: RSA key of %d bits; use 2048 to 8192", ErrKeyNotAllowed, n)
		}
		return nil
	}
	return fmt.Errorf("%w: %T; use ECDSA P-256 or P-384, Ed25519, or RSA >= 2048 bits", ErrKeyNotAllowed, pub)
}

// newSerial is a random positive 128-bit serial number (RFC 5280 allows up
// to 20 octets; CA/B Forum asks for at least 64 random bits).
func newSerial() (*big.Int, error) {
	for {
		n, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 128))
		if err != nil {
			return nil, fmt.Errorf("enrol: serial: %w", err)
		}
		if n.Sign() > 0 {
			return n, nil
		}
	}
}

func exists(path string) (bool, error) {
	_, err := os.Stat(path)
	if err == nil {
		return true, nil
	}
	if errors.Is(err, os.ErrNotExist) {
		return false, nil
	}
	return false, err
}
