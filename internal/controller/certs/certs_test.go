package certs

import (
	"crypto/x509"
	"io"
	"log/slog"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/misaki-io/misaki/internal/controller/certsecret"
)

// verify checks that the Secret's certificate chains to its CA bundle for
// name at t.
func verify(t *testing.T, data map[string][]byte, name string, at time.Time) *x509.Certificate {
	t.Helper()
	roots := x509.NewCertPool()
	if !roots.AppendCertsFromPEM(data[KeyCA]) {
		t.Fatal("no CA in the bundle")
	}
	leaf := certsecret.DecodeCerts(data[KeyCert])[0]
	if _, err := leaf.Verify(x509.VerifyOptions{Roots: roots, DNSName: name, CurrentTime: at}); err != nil {
		t.Fatalf("certificate does not verify for %s at %v: %v", name, at, err)
	}
	return leaf
}

// TestRotateLifecycle walks a Secret through five years of checks with a
// fake clock: issue, keep, renew the certificate, follow a name change,
// renew the CA (bundle first, certificate at the next check).
func TestRotateLifecycle(t *testing.T) {
	now := time.Date(2026, 11, 24, 0, 0, 0, 0, time.UTC)
	r := &Rotator{
		DNSNames: []string{"misaki-controller.misaki-system.svc"}, IPs: []net.IP{net.ParseIP("127.0.0.1")},
		CALifetime: 3 * 365 * 24 * time.Hour, CertLifetime: 90 * 24 * time.Hour,
		Now: func() time.Time { return now }, Log: slog.New(slog.NewTextHandler(io.Discard, nil)),
	}
	name := r.DNSNames[0]
	data, why, err := r.Rotate(nil)
	if err != nil || why != "no CA" {
		t.Fatalf("first Rotate: %q %v", why, err)
	}
	leaf := verify(t, data, name, now)
	if !leaf.NotBefore.Before(now) {
		t.Errorf("NotBefore %v is not before now: a clock that runs behind would refuse it", leaf.NotBefore)
	}
	if same, why, _ := r.Rotate(data); why != "" || string(same[KeyCert]) != string(data[KeyCert]) {
		t.Fatalf("an unchanged Secret was rotated: %q", why)
	}

	// 61 days in (under a third of 90 left): a new certificate, same CA.
	now = now.Add(61 * 24 * time.Hour)
	next, why, err := r.Rotate(data)
	if err != nil || !strings.HasPrefix(why, "certificate expires") {
		t.Fatalf("at 61 days: %q %v", why, err)
	}
	if string(next[KeyCA]) != string(data[KeyCA]) {
		t.Error("the CA changed with the certificate")
	}
	verify(t, next, name, now)
	data = next

	// The Service is renamed: a certificate with the new name.
	r.DNSNames = []string{"misaki.misaki-system.svc"}
	if data, why, err = r.Rotate(data); err != nil || why != "certificate names changed" {
		t.Fatalf("after a rename: %q %v", why, err)
	}
	verify(t, data, "misaki.misaki-system.svc", now)
	name = "misaki.misaki-system.svc"

	// Two years and a bit in, the CA has under a third left: a new CA joins
	// the bundle, the old certificate is still served for one check ...
	for i := 0; i < 8; i++ { // keep the certificate fresh on the way (day 701)
		now = now.Add(80 * 24 * time.Hour)
		if data, _, err = r.Rotate(data); err != nil {
			t.Fatal(err)
		}
	}
	now = now.Add(30 * 24 * time.Hour)
	oldCert := string(data[KeyCert])
	data, why, err = r.Rotate(data)
	if err != nil || !strings.Contains(why, "new CA added to the bundle") {
		t.Fatalf("CA renewal: %q %v", why, err)
	}
	if string(data[KeyCert]) != oldCert {
		t.Error("the certificate changed in the same step as the CA")
	}
	if n := len(certsecret.DecodeCerts(data[KeyCA])); n != 2 {
		t.Errorf("bundle has %d CAs, want the new and the old", n)
	}
	verify(t, data, name, now) // the old certificate still verifies against the bundle
	// ... and at the next check the certificate comes from the new CA.
	data, why, err = r.Rotate(data)
	if err != nil || why != "no certificate from the current CA" {
		t.Fatalf("after the CA renewal: %q %v", why, err)
	}
	leaf = verify(t, data, name, now)
	if err := leaf.CheckSignatureFrom(certsecret.DecodeCerts(data[KeyCA])[0]); err != nil {
		t.Errorf("the new certificate is not from the new CA: %v", err)
	}
}

func TestRotateReplacesGarbage(t *testing.T) {
	r := &Rotator{DNSNames: []string{"x.svc"}, Log: slog.New(slog.NewTextHandler(io.Discard, nil))}
	for name, data := range map[string]map[string][]byte{
		"empty":          {},
		"not PEM":        {KeyCA: []byte("nope"), KeyCAKey: []byte("nope"), KeyCert: []byte("x"), KeyPrivate: []byte("y")},
		"key of another": nil, // filled below
	} {
		if name == "key of another" {
			a, _, _ := r.Rotate(nil)
			b, _, _ := r.Rotate(nil)
			data = map[string][]byte{KeyCA: a[KeyCA], KeyCAKey: b[KeyCAKey], KeyCert: a[KeyCert], KeyPrivate: a[KeyPrivate]}
		}
		out, why, err := r.Rotate(data)
		if err != nil || why == "" {
			t.Errorf("%s: %q %v, want a new Secret", name, why, err)
			continue
		}
		verify(t, out, "x.svc", time.Now())
	}
}
