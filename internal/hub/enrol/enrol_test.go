package enrol

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"encoding/pem"
	"errors"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/misaki-io/misaki/internal/devpki"
)

var t0 = time.Date(2026, 12, 1, 10, 0, 0, 0, time.UTC)

func newCA(t testing.TB, now time.Time) *CA {
	t.Helper()
	ca, err := LoadOrCreateCA(t.TempDir(), now)
	if err != nil {
		t.Fatal(err)
	}
	return ca
}

func ecKey(t testing.TB) *ecdsa.PrivateKey {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// rsaKeys are made once: RSA generation is slow.
var rsaKeys = sync.OnceValues(func() (map[int]*rsa.PrivateKey, error) {
	m := map[int]*rsa.PrivateKey{}
	for _, bits := range []int{1024, 2048} {
		k, err := rsa.GenerateKey(rand.Reader, bits)
		if err != nil {
			return nil, err
		}
		m[bits] = k
	}
	return m, nil
})

func rsaKey(t testing.TB, bits int) *rsa.PrivateKey {
	t.Helper()
	m, err := rsaKeys()
	if err != nil {
		t.Fatal(err)
	}
	return m[bits]
}

func csrFor(t testing.TB, key crypto.Signer, tmpl *x509.CertificateRequest) []byte {
	t.Helper()
	if tmpl == nil {
		tmpl = &x509.CertificateRequest{Subject: pkix.Name{CommonName: "whatever"}}
	}
	der, err := x509.CreateCertificateRequest(rand.Reader, tmpl, key)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: der})
}

func parseCert(t testing.TB, certPEM []byte) *x509.Certificate {
	t.Helper()
	b, _ := pem.Decode(certPEM)
	if b == nil {
		t.Fatal("no PEM")
	}
	c, err := x509.ParseCertificate(b.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func TestIssueVehicle(t *testing.T) {
	ca := newCA(t, t0)
	now := t0.Add(time.Hour)
	certPEM, notAfter, err := ca.IssueVehicle(csrFor(t, ecKey(t), nil), "car-1", now, 30*24*time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	c := parseCert(t, certPEM)
	if _, err := c.Verify(x509.VerifyOptions{Roots: ca.Pool(), CurrentTime: now, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}); err != nil {
		t.Fatalf("client verify: %v", err)
	}
	if _, err := c.Verify(x509.VerifyOptions{Roots: ca.Pool(), CurrentTime: now, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}); err == nil {
		t.Error("a vehicle certificate verifies for server auth")
	}
	id, err := VehicleID(c)
	if err != nil || id != "car-1" {
		t.Fatalf("VehicleID = %q, %v", id, err)
	}
	type shape struct {
		CN                  string
		URIs                []string
		NotBefore, NotAfter time.Time
		IsCA                bool
		ExtKeyUsage         []x509.ExtKeyUsage
		KeyUsage            x509.KeyUsage
	}
	var uris []string
	for _, u := range c.URIs {
		uris = append(uris, u.String())
	}
	want := shape{"car-1", []string{devpki.VehicleURI("car-1")}, now.Add(-Backdate), now.Add(30 * 24 * time.Hour), false,
		[]x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}, x509.KeyUsageDigitalSignature}
	got := shape{c.Subject.CommonName, uris, c.NotBefore, c.NotAfter, c.IsCA, c.ExtKeyUsage, c.KeyUsage}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("certificate (-want +got):\n%s", diff)
	}
	if !notAfter.Equal(c.NotAfter) {
		t.Errorf("returned notAfter %s, certificate's %s", notAfter, c.NotAfter)
	}
	if c.SerialNumber.Sign() <= 0 || c.SerialNumber.BitLen() > 128 {
		t.Errorf("serial %s", c.SerialNumber)
	}
	again, _, err := ca.IssueVehicle(csrFor(t, ecKey(t), nil), "car-1", now, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	if parseCert(t, again).SerialNumber.Cmp(c.SerialNumber) == 0 {
		t.Error("two certificates with one serial")
	}

	t.Run("not past the CA", func(t *testing.T) {
		_, na, err := ca.IssueVehicle(csrFor(t, ecKey(t), nil), "car-1", now, 20*CAValidity)
		if err != nil {
			t.Fatal(err)
		}
		if !na.Equal(ca.Certificate().NotAfter) {
			t.Errorf("notAfter %s, CA's %s", na, ca.Certificate().NotAfter)
		}
		if _, _, err := ca.IssueVehicle(csrFor(t, ecKey(t), nil), "car-1", ca.Certificate().NotAfter.Add(time.Second), time.Hour); err == nil {
			t.Error("issued with an expired CA")
		}
		if _, _, err := ca.IssueVehicle(csrFor(t, ecKey(t), nil), "car-1", now, 0); err == nil {
			t.Error("issued with ttl 0")
		}
	})
}

// TestIssueVehicleIgnoresCSRIdentity: whatever identity the CSR claims,
// the certificate carries only the vehicle ID the hub passed (the token's).
func TestIssueVehicleIgnoresCSRIdentity(t *testing.T) {
	ca := newCA(t, t0)
	forged, _ := url.Parse(devpki.VehicleURI("car-2"))
	csr := csrFor(t, ecKey(t), &x509.CertificateRequest{
		Subject:        pkix.Name{CommonName: "car-2", Organization: []string{"evil"}},
		URIs:           []*url.URL{forged},
		DNSNames:       []string{"hub.example.com"},
		IPAddresses:    []net.IP{net.ParseIP("10.0.0.1")},
		EmailAddresses: []string{"a@example.com"},
		ExtraExtensions: []pkix.Extension{{ // basicConstraints CA:TRUE
			Id: asn1.ObjectIdentifier{2, 5, 29, 19}, Critical: true, Value: mustASN1(t, struct{ IsCA bool }{true}),
		}},
	})
	certPEM, _, err := ca.IssueVehicle(csr, "car-1", t0, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	c := parseCert(t, certPEM)
	if id, err := VehicleID(c); err != nil || id != "car-1" {
		t.Fatalf("VehicleID = %q, %v", id, err)
	}
	if c.Subject.CommonName != "car-1" || len(c.Subject.Organization) != 0 || len(c.URIs) != 1 ||
		len(c.DNSNames)+len(c.IPAddresses)+len(c.EmailAddresses) != 0 || c.IsCA {
		t.Errorf("certificate took identity from the CSR: subject %v, URIs %v, DNS %v, IPs %v, email %v, CA %v",
			c.Subject, c.URIs, c.DNSNames, c.IPAddresses, c.EmailAddresses, c.IsCA)
	}
}

func mustASN1(t testing.TB, v any) []byte {
	t.Helper()
	b, err := asn1.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestIssueVehicleRefuses(t *testing.T) {
	ca := newCA(t, t0)
	p521, _ := ecdsa.GenerateKey(elliptic.P521(), rand.Reader)
	_, edKey, _ := ed25519.GenerateKey(rand.Reader)
	for _, tc := range []struct {
		name    string
		csr     func(t *testing.T) []byte
		vehicle string
		want    error // nil: issued
	}{
		{"ecdsa p256", func(t *testing.T) []byte { return csrFor(t, ecKey(t), nil) }, "car-1", nil},
		{"ecdsa p384", func(t *testing.T) []byte {
			k, _ := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
			return csrFor(t, k, nil)
		}, "car-1", nil},
		{"ed25519", func(t *testing.T) []byte { return csrFor(t, edKey, nil) }, "car-1", nil},
		{"rsa 2048", func(t *testing.T) []byte { return csrFor(t, rsaKey(t, 2048), nil) }, "car-1", nil},
		{"weak rsa 1024", func(t *testing.T) []byte { return csrFor(t, rsaKey(t, 1024), nil) }, "car-1", ErrKeyNotAllowed},
		{"ecdsa p521", func(t *testing.T) []byte { return csrFor(t, p521, nil) }, "car-1", ErrKeyNotAllowed},
		{"bad signature", func(t *testing.T) []byte {
			b, _ := pem.Decode(csrFor(t, ecKey(t), nil))
			b.Bytes[len(b.Bytes)-3] ^= 0x40 // inside the signature, the last field
			return pem.EncodeToMemory(b)
		}, "car-1", ErrInvalidCSR},
		{"signed by another key", func(t *testing.T) []byte {
			// The CSR's contents signed by a key other than the one it
			// holds: the requester does not prove it has the key.
			b, _ := pem.Decode(csrFor(t, ecKey(t), nil))
			var c struct {
				TBS asn1.RawValue
				Alg pkix.AlgorithmIdentifier
				Sig asn1.BitString
			}
			if _, err := asn1.Unmarshal(b.Bytes, &c); err != nil {
				t.Fatal(err)
			}
			h := sha256.Sum256(c.TBS.FullBytes)
			sig, err := ecdsa.SignASN1(rand.Reader, ecKey(t), h[:])
			if err != nil {
				t.Fatal(err)
			}
			c.Sig = asn1.BitString{Bytes: sig, BitLength: 8 * len(sig)}
			der, err := asn1.Marshal(c)
			if err != nil {
				t.Fatal(err)
			}
			return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: der})
		}, "car-1", ErrInvalidCSR},
		{"not PEM", func(t *testing.T) []byte { return []byte("hello") }, "car-1", ErrInvalidCSR},
		{"a certificate, not a CSR", func(t *testing.T) []byte { return ca.CertPEM() }, "car-1", ErrInvalidCSR},
		{"garbage DER", func(t *testing.T) []byte {
			return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: []byte{0x30, 0x03, 1, 2, 3}})
		}, "car-1", ErrInvalidCSR},
		{"invalid vehicle ID", func(t *testing.T) []byte { return csrFor(t, ecKey(t), nil) }, "Car_1", ErrInvalidVehicleID},
	} {
		t.Run(tc.name, func(t *testing.T) {
			csr := tc.csr(t)
			wantCheck := tc.want
			if wantCheck == ErrInvalidVehicleID { // not the CSR's fault
				wantCheck = nil
			}
			if err := CheckCSR(csr); (err == nil) != (wantCheck == nil) || !errors.Is(err, wantCheck) {
				t.Errorf("CheckCSR = %v, want %v", err, wantCheck)
			}
			certPEM, _, err := ca.IssueVehicle(csr, tc.vehicle, t0, time.Hour)
			if tc.want == nil {
				if err != nil {
					t.Fatal(err)
				}
				if _, err := parseCert(t, certPEM).Verify(x509.VerifyOptions{Roots: ca.Pool(), CurrentTime: t0, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}); err != nil {
					t.Fatal(err)
				}
				return
			}
			if !errors.Is(err, tc.want) || certPEM != nil {
				t.Fatalf("error %v, want %v", err, tc.want)
			}
		})
	}
}

func TestValidVehicleID(t *testing.T) {
	for _, tc := range []struct {
		id string
		ok bool
	}{
		{"a", true}, {"car-1", true}, {"0", true}, {"vin-1hgcm82633a004352", true},
		{strings.Repeat("a", 54), true},
		{strings.Repeat("a", 55), false},
		{"", false}, {"Car-1", false}, {"-car", false}, {"car-", false}, {"car_1", false},
		{"car.1", false}, {"car 1", false}, {"car/1", false}, {"ca\u00e9", false},
	} {
		t.Run(tc.id, func(t *testing.T) {
			err := ValidVehicleID(tc.id)
			if (err == nil) != tc.ok {
				t.Fatalf("ValidVehicleID(%q) = %v", tc.id, err)
			}
			if err != nil && (!errors.Is(err, ErrInvalidVehicleID) || !strings.Contains(err.Error(), "at most") && !strings.Contains(err.Error(), "54")) {
				t.Errorf("error does not state the rule: %v", err)
			}
		})
	}
}

func TestVehicleID(t *testing.T) {
	cert := func(uris ...string) *x509.Certificate {
		c := &x509.Certificate{Subject: pkix.Name{CommonName: "x"}}
		for _, s := range uris {
			u, err := url.Parse(s)
			if err != nil {
				t.Fatal(err)
			}
			c.URIs = append(c.URIs, u)
		}
		return c
	}
	for _, tc := range []struct {
		name string
		c    *x509.Certificate
		want string // "" means an error
	}{
		{"vehicle", cert("spiffe://misaki/vehicle/car-1"), "car-1"},
		{"devpki's form", cert(devpki.VehicleURI("car-9")), "car-9"},
		{"beside another URI", cert("https://example.com/x", "spiffe://misaki/vehicle/car-1"), "car-1"},
		{"no URI", cert(), ""},
		{"other trust domain", cert("spiffe://other/vehicle/car-1"), ""},
		{"other kind", cert("spiffe://misaki/operator/car-1"), ""},
		{"nested path", cert("spiffe://misaki/vehicle/car-1/x"), ""},
		{"invalid ID", cert("spiffe://misaki/vehicle/Car_1"), ""},
		{"empty ID", cert("spiffe://misaki/vehicle/"), ""},
		{"query", cert("spiffe://misaki/vehicle/car-1?x=1"), ""},
		{"user info", cert("spiffe://u@misaki/vehicle/car-1"), ""},
		{"two vehicles", cert("spiffe://misaki/vehicle/car-1", "spiffe://misaki/vehicle/car-2"), ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := VehicleID(tc.c)
			if tc.want == "" {
				if err == nil {
					t.Fatalf("accepted as %q", got)
				}
				return
			}
			if err != nil || got != tc.want {
				t.Fatalf("VehicleID = %q, %v; want %q", got, err, tc.want)
			}
		})
	}
	if VehicleURI("car-1") != devpki.VehicleURI("car-1") {
		t.Errorf("VehicleURI %q, devpki's %q", VehicleURI("car-1"), devpki.VehicleURI("car-1"))
	}
}

func TestTokens(t *testing.T) {
	seen := map[string]bool{}
	for range 200 {
		id, secret, token, err := NewToken()
		if err != nil {
			t.Fatal(err)
		}
		pid, psecret, err := ParseToken(token)
		if err != nil || pid != id || psecret != secret || token != id+"."+secret {
			t.Fatalf("ParseToken(%q) = %q, %q, %v", token, pid, psecret, err)
		}
		if seen[secret] {
			t.Fatalf("secret %q twice", secret)
		}
		seen[secret] = true
		h := HashSecret(secret)
		if len(h) != 32 || !bytes.Equal(h, HashSecret(secret)) || !SecretMatches(h, secret) {
			t.Fatal("HashSecret is not a stable SHA-256")
		}
		if SecretMatches(h, secret[:15]+"x") && secret[15] != 'x' {
			t.Fatal("SecretMatches accepted another secret")
		}
	}
	for _, tc := range []struct{ name, token string }{
		{"empty", ""},
		{"no dot", "abcdef0123456789abcdef"},
		{"short id", "abcde.0123456789abcdef"},
		{"long id", "abcdefg.0123456789abcdef"},
		{"short secret", "abcdef.0123456789abcde"},
		{"long secret", "abcdef.0123456789abcdefg"},
		{"upper case", "ABCDEF.0123456789abcdef"},
		{"symbol in secret", "abcdef.0123456789abcde-"},
		{"two dots", "abcdef.01234567.9abcdef"},
		{"spaces", " abcdef.0123456789abcdef"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, _, err := ParseToken(tc.token)
			if !errors.Is(err, ErrInvalidToken) {
				t.Fatalf("ParseToken(%q) = %v", tc.token, err)
			}
			if tc.token != "" && strings.Contains(err.Error(), tc.token) {
				t.Errorf("error repeats the token: %v", err)
			}
		})
	}
}

func TestLoadOrCreateCA(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "ca")
	ca1, err := LoadOrCreateCA(dir, t0)
	if err != nil {
		t.Fatal(err)
	}
	c := ca1.Certificate()
	if !c.IsCA || !c.NotBefore.Equal(t0.Add(-Backdate)) || !c.NotAfter.Equal(t0.Add(CAValidity)) {
		t.Errorf("CA: IsCA %v, valid %s to %s", c.IsCA, c.NotBefore, c.NotAfter)
	}
	if _, ok := c.PublicKey.(*ecdsa.PublicKey); !ok {
		t.Errorf("CA key %T", c.PublicKey)
	}
	fi, err := os.Stat(filepath.Join(dir, CAKeyFile))
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("key file: %v, mode %v", err, fi.Mode())
	}
	if b, _ := os.ReadFile(filepath.Join(dir, CAKeyFile)); !bytes.HasPrefix(b, []byte("-----BEGIN PRIVATE KEY-----")) {
		t.Errorf("key is not PKCS#8 PEM: %.30q", b)
	}

	// A second call, later, loads the same CA: a certificate it issues
	// verifies against the first call's pool.
	ca2, err := LoadOrCreateCA(dir, t0.Add(24*time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(ca1.CertPEM(), ca2.CertPEM()) {
		t.Fatal("second LoadOrCreateCA made a new CA")
	}
	certPEM, _, err := ca2.IssueVehicle(csrFor(t, ecKey(t), nil), "car-1", t0, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := parseCert(t, certPEM).Verify(x509.VerifyOptions{Roots: ca1.Pool(), CurrentTime: t0, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}); err != nil {
		t.Fatal(err)
	}
	// LoadCA reads the same files.
	ca3, err := LoadCA(filepath.Join(dir, CACertFile), filepath.Join(dir, CAKeyFile))
	if err != nil || !bytes.Equal(ca3.CertPEM(), ca1.CertPEM()) {
		t.Fatalf("LoadCA: %v", err)
	}

	t.Run("key without certificate", func(t *testing.T) {
		d := t.TempDir()
		ca, err := LoadOrCreateCA(d, t0)
		if err != nil {
			t.Fatal(err)
		}
		os.Remove(filepath.Join(d, CACertFile))
		again, err := LoadOrCreateCA(d, t0)
		if err != nil {
			t.Fatal(err)
		}
		if !again.Certificate().PublicKey.(*ecdsa.PublicKey).Equal(ca.Certificate().PublicKey) {
			t.Error("certificate remade with another key")
		}
	})
	t.Run("certificate without key", func(t *testing.T) {
		d := t.TempDir()
		if _, err := LoadOrCreateCA(d, t0); err != nil {
			t.Fatal(err)
		}
		os.Remove(filepath.Join(d, CAKeyFile))
		if _, err := LoadOrCreateCA(d, t0); err == nil || !strings.Contains(err.Error(), "without") {
			t.Fatalf("error %v", err)
		}
	})
}

func TestLoadCARefuses(t *testing.T) {
	dir := t.TempDir()
	ca := newCA(t, t0)
	other := newCA(t, t0)
	write := func(name string, b []byte) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, b, 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	caCert := write("ca.crt", ca.CertPEM())
	otherKey, _ := encodeKey(other.key)
	leafPEM, leafKey, err := ca.ServerCertificate([]string{"hub"}, t0, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	sec1, _ := x509.MarshalECPrivateKey(ca.key.(*ecdsa.PrivateKey))
	for _, tc := range []struct {
		name, cert, key, want string
	}{
		{"key of another CA", caCert, write("other.key", otherKey), "is not the key of"},
		{"not a CA", write("leaf.crt", leafPEM), write("leaf.key", leafKey), "not a CA certificate"},
		{"no key file", caCert, filepath.Join(dir, "missing.key"), "no such file"},
		{"key not PEM", caCert, write("bad.key", []byte("x")), "no PEM block"},
		{"SEC 1 EC key loads", caCert, write("sec1.key", pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: sec1})), ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := LoadCA(tc.cert, tc.key)
			if tc.want == "" {
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %v, want one containing %q", err, tc.want)
			}
		})
	}
}

func TestServerCertificate(t *testing.T) {
	ca := newCA(t, t0)
	certPEM, keyPEM, err := ca.ServerCertificate([]string{"hub.example.com", "127.0.0.1", "::1", "localhost"}, t0, 24*time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	c := parseCert(t, certPEM)
	for _, h := range []string{"hub.example.com", "127.0.0.1", "::1", "localhost"} {
		if err := c.VerifyHostname(h); err != nil {
			t.Errorf("%s: %v", h, err)
		}
	}
	if _, err := c.Verify(x509.VerifyOptions{Roots: ca.Pool(), CurrentTime: t0, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}); err != nil {
		t.Error(err)
	}
	if _, err := VehicleID(c); err == nil {
		t.Error("a server certificate has a vehicle identity")
	}
	if _, err := tls.X509KeyPair(certPEM, keyPEM); err != nil {
		t.Errorf("key pair: %v", err)
	}
	for _, hosts := range [][]string{nil, {"bad host"}, {"a..b"}} {
		if _, _, err := ca.ServerCertificate(hosts, t0, time.Hour); err == nil {
			t.Errorf("hosts %q accepted", hosts)
		}
	}
}

// TestTLSHandshake: the hub's server certificate and an issued vehicle
// certificate meet over TLS on loopback; the server reads the vehicle ID
// from the verified peer certificate. Real time: TLS checks validity
// against the wall clock.
func TestTLSHandshake(t *testing.T) {
	now := time.Now()
	ca := newCA(t, now)
	srvCert, srvKey, err := ca.ServerCertificate([]string{"127.0.0.1", "localhost"}, now, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	srvPair, err := tls.X509KeyPair(srvCert, srvKey)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := tls.Listen("tcp", "127.0.0.1:0", &tls.Config{
		Certificates: []tls.Certificate{srvPair},
		ClientAuth:   tls.RequireAndVerifyClientCert,
		ClientCAs:    ca.Pool(),
		MinVersion:   tls.VersionTLS13,
	})
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	type result struct {
		id  string
		err error
	}
	results := make(chan result, 8)
	go func() {
		for {
			conn, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer conn.Close()
				tc := conn.(*tls.Conn)
				if err := tc.Handshake(); err != nil {
					results <- result{err: err}
					return
				}
				id, err := VehicleID(tc.ConnectionState().PeerCertificates[0])
				results <- result{id, err}
				tc.Write([]byte(id + "\n"))
			}()
		}
	}()

	issue := func(ca *CA, id string) tls.Certificate {
		key := ecKey(t)
		certPEM, _, err := ca.IssueVehicle(csrFor(t, key, nil), id, now, time.Hour)
		if err != nil {
			t.Fatal(err)
		}
		keyPEM, _ := encodeKey(key)
		pair, err := tls.X509KeyPair(certPEM, keyPEM)
		if err != nil {
			t.Fatal(err)
		}
		return pair
	}
	dial := func(serverName string, certs ...tls.Certificate) (string, error) {
		conn, err := tls.Dial("tcp", ln.Addr().String(), &tls.Config{RootCAs: ca.Pool(), ServerName: serverName, Certificates: certs})
		if err != nil {
			return "", err
		}
		defer conn.Close()
		buf := make([]byte, 64)
		n, err := conn.Read(buf)
		return strings.TrimSpace(string(buf[:n])), err
	}

	for _, name := range []string{"127.0.0.1", "localhost"} {
		t.Run("vehicle via "+name, func(t *testing.T) {
			got, err := dial(name, issue(ca, "car-7"))
			if err != nil {
				t.Fatal(err)
			}
			r := <-results
			if r.err != nil || r.id != "car-7" || got != "car-7" {
				t.Fatalf("server read %q (%v), client got %q", r.id, r.err, got)
			}
		})
	}
	t.Run("no client certificate", func(t *testing.T) {
		if _, err := dial("127.0.0.1"); err == nil {
			t.Fatal("handshake without a client certificate succeeded")
		}
		if r := <-results; r.err == nil {
			t.Fatalf("server accepted a client without a certificate as %q", r.id)
		}
	})
	t.Run("certificate from another CA", func(t *testing.T) {
		if _, err := dial("127.0.0.1", issue(newCA(t, now), "car-7")); err == nil {
			t.Fatal("handshake with a foreign certificate succeeded")
		}
		if r := <-results; r.err == nil {
			t.Fatalf("server accepted a foreign certificate as %q", r.id)
		}
	})
}
