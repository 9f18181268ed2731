package enrol

import (
	"crypto/x509"
	"net/url"
	"testing"
	"time"
)

// FuzzParseToken: whatever ParseToken accepts is exactly "<id>.<secret>"
// of the documented lengths and alphabet.
func FuzzParseToken(f *testing.F) {
	_, _, tok, err := NewToken()
	if err != nil {
		f.Fatal(err)
	}
	for _, s := range []string{tok, "", ".", "abcdef.", "abcdef.0123456789abcdeF", "abcdef.0123456789abcdef.x"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		id, secret, err := ParseToken(s)
		if err != nil {
			return
		}
		if id+"."+secret != s || len(id) != TokenIDLen || len(secret) != TokenSecretLen || !inAlphabet(id) || !inAlphabet(secret) {
			t.Fatalf("ParseToken(%q) accepted %q, %q", s, id, secret)
		}
	})
}

// FuzzIssueVehicle feeds arbitrary CSR bytes to IssueVehicle: it must not
// panic, and a certificate it issues names car-1 only.
func FuzzIssueVehicle(f *testing.F) {
	ca := newCA(f, t0)
	f.Add(csrFor(f, ecKey(f), nil))
	f.Add(ca.CertPEM())
	f.Add([]byte("-----BEGIN CERTIFICATE REQUEST-----\nMAA=\n-----END CERTIFICATE REQUEST-----\n"))
	f.Fuzz(func(t *testing.T, csr []byte) {
		certPEM, _, err := ca.IssueVehicle(csr, "car-1", t0, time.Hour)
		if err != nil {
			return
		}
		c := parseCert(t, certPEM)
		if id, err := VehicleID(c); err != nil || id != "car-1" || c.Subject.CommonName != "car-1" || len(c.URIs) != 1 {
			t.Fatalf("issued %v %v: %q, %v", c.Subject, c.URIs, id, err)
		}
	})
}

// FuzzVehicleID: an ID read from a URI SAN is valid and is the SAN.
func FuzzVehicleID(f *testing.F) {
	for _, s := range []string{"spiffe://misaki/vehicle/car-1", "spiffe://misaki/vehicle/car-1/x", "spiffe://misaki/vehicle/%63ar", "spiffe://misaki:1/vehicle/a"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		u, err := url.Parse(s)
		if err != nil {
			return
		}
		id, err := VehicleID(&x509.Certificate{URIs: []*url.URL{u}})
		if err != nil {
			return
		}
		if ValidVehicleID(id) != nil || u.String() != VehicleURI(id) {
			t.Fatalf("VehicleID(%q) = %q", s, id)
		}
	})
}
