package ca

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"net"
	"net/url"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"

	"github.com/misaki-io/misaki/internal/clock"
	"github.com/misaki-io/misaki/internal/controller/certsecret"
)

func newAuthority(t *testing.T, c client.Client, clk clock.Clock) *Authority {
	t.Helper()
	return &Authority{
		Client: c, Reader: c, Namespace: "misaki-system", Secret: "misaki-ca",
		DNSNames: []string{"misaki-controller.misaki-system.svc"}, IPs: []net.IP{net.ParseIP("127.0.0.1")},
		CALifetime: 3 * 365 * 24 * time.Hour, Clock: clk,
	}
}

func fakeClient() client.Client {
	s := runtime.NewScheme()
	if err := corev1.AddToScheme(s); err != nil {
		panic(err)
	}
	return fake.NewClientBuilder().WithScheme(s).Build()
}

// proxyCert issues a certificate for pod in apps with a fresh key.
func proxyCert(t *testing.T, a *Authority, pod string) *x509.Certificate {
	t.Helper()
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	_, c, err := a.Issue(key.Public(), Identity{Namespace: "apps", Pod: pod, ServiceAccount: "telemetry"})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func verifyClient(a *Authority, c *x509.Certificate, at time.Time) error {
	_, err := c.Verify(x509.VerifyOptions{Roots: a.ClientCAs(), CurrentTime: at, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}})
	return err
}

// servingVerifies checks the serving certificate against the bundle, as a
// proxy that read the bundle would, for a DNS name and an IP.
func servingVerifies(t *testing.T, a *Authority, bundle []byte, at time.Time) *x509.Certificate {
	t.Helper()
	tc, err := a.ServingCertificate(nil)
	if err != nil {
		t.Fatal(err)
	}
	roots := x509.NewCertPool()
	roots.AppendCertsFromPEM(bundle)
	for _, name := range []string{"misaki-controller.misaki-system.svc", "127.0.0.1"} {
		if _, err := tc.Leaf.Verify(x509.VerifyOptions{Roots: roots, DNSName: name, CurrentTime: at}); err != nil {
			t.Fatalf("serving certificate for %s at %v: %v", name, at, err)
		}
	}
	return tc.Leaf
}

// TestLifecycle walks the CA through its lifetime on a fake clock: it is
// created, issues proxies' and the controller's certificates, is replaced
// with two thirds of its life gone (the new CA signs proxies' certificates
// at once; the serving certificate stays with the old CA, which proxies
// have trusted longest, until the old one is near its end), and leaves the
// bundle when it expires. A second replica converges on the same CA.
func TestLifecycle(t *testing.T) {
	ctx := context.Background()
	clk := clock.NewFake(time.Date(2026, 11, 24, 0, 0, 0, 0, time.UTC))
	c := fakeClient()
	a := newAuthority(t, c, clk)
	var published [][]byte
	a.OnBundle = func(b []byte) { published = append(published, b) }

	if _, _, err := a.Issue(nil, Identity{}); !errors.Is(err, ErrNotReady) {
		t.Fatalf("Issue before Sync: %v, want ErrNotReady", err)
	}
	if err := a.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	select {
	case <-a.Ready():
	default:
		t.Fatal("not ready after a Sync")
	}
	if len(published) != 1 || len(certsecret.DecodeCerts(published[0])) != 1 {
		t.Fatalf("published %d bundles, want one with one CA", len(published))
	}
	first := servingVerifies(t, a, a.Bundle(), clk.Now())

	// A proxy's certificate: the pod's SPIFFE ID, the service account,
	// for client authentication, for a day.
	pc := proxyCert(t, a, "telemetry-7d9f")
	if err := verifyClient(a, pc, clk.Now()); err != nil {
		t.Fatal(err)
	}
	id, err := a.Identify(pc)
	if err != nil {
		t.Fatal(err)
	}
	want := Identity{TrustDomain: "cluster.local", Namespace: "apps", Pod: "telemetry-7d9f", ServiceAccount: "telemetry"}
	if id != want || id.Node() != "apps/telemetry-7d9f" || pc.URIs[0].String() != "spiffe://cluster.local/ns/apps/pod/telemetry-7d9f" ||
		pc.Subject.CommonName != "system:serviceaccount:apps:telemetry" {
		t.Errorf("identity %+v, URI %s, subject %s", id, pc.URIs[0], pc.Subject.CommonName)
	}
	if got := pc.NotAfter.Sub(clk.Now()); got != 24*time.Hour {
		t.Errorf("a proxy certificate lasts %v, want 24h", got)
	}
	if !pc.NotBefore.Before(clk.Now()) {
		t.Error("a proxy certificate starts now: a vehicle clock that runs behind would refuse it")
	}

	// A second replica reads the same CA and writes nothing.
	b := newAuthority(t, c, clk)
	if err := b.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	if string(b.Bundle()) != string(a.Bundle()) {
		t.Fatal("two replicas hold different CAs")
	}
	if err := verifyClient(b, pc, clk.Now()); err != nil {
		t.Errorf("the other replica refuses a proxy certificate: %v", err)
	}

	// Checks in between keep everything.
	clk.Advance(24 * time.Hour)
	if err := a.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	if len(published) != 1 {
		t.Error("an unchanged CA was published again")
	}
	if got := servingVerifies(t, a, a.Bundle(), clk.Now()); got.SerialNumber.Cmp(first.SerialNumber) != 0 {
		t.Error("the serving certificate was replaced before a third of its life was left")
	}

	// Two years in, a third of the CA's life is left: a new CA.
	clk.Advance(2*365*24*time.Hour + 24*time.Hour)
	oldBundle := a.Bundle()
	old := proxyCert(t, a, "old") // by the old CA, a moment before
	if err := a.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	cas := certsecret.DecodeCerts(a.Bundle())
	if len(cas) != 2 || len(published) != 2 {
		t.Fatalf("after the CA's renewal: %d CAs, %d publications; want 2 and 2", len(cas), len(published))
	}
	nc := proxyCert(t, a, "new")
	if nc.CheckSignatureFrom(cas[0]) != nil {
		t.Error("a proxy certificate after the renewal is not from the new CA")
	}
	if err := verifyClient(a, old, clk.Now()); err != nil {
		t.Errorf("a certificate from the old CA no longer verifies: %v", err)
	}
	// The serving certificate is still the old CA's: a proxy that has
	// not read the new bundle yet still trusts it.
	servingVerifies(t, a, oldBundle, clk.Now())

	// Near the old CA's end, the serving certificate moves to the new CA.
	for clk.Now().Before(cas[1].NotAfter.Add(-5 * 24 * time.Hour)) {
		clk.Advance(5 * 24 * time.Hour)
		if err := a.Sync(ctx); err != nil {
			t.Fatal(err)
		}
		servingVerifies(t, a, a.Bundle(), clk.Now())
	}
	if tc, _ := a.ServingCertificate(nil); tc.Leaf.CheckSignatureFrom(cas[0]) != nil {
		t.Error("days before the old CA expires, the serving certificate is not the new CA's")
	}

	// The old CA expires and leaves the bundle.
	clk.Advance(6 * 24 * time.Hour)
	if err := a.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	if got := certsecret.DecodeCerts(a.Bundle()); len(got) != 1 || !got[0].Equal(cas[0]) {
		t.Errorf("after the old CA expired the bundle has %d CAs", len(got))
	}
	servingVerifies(t, a, a.Bundle(), clk.Now())
}

// A proxy's certificate never outlives its CA.
func TestIssueCappedByCA(t *testing.T) {
	clk := clock.NewFake(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC))
	a := newAuthority(t, fakeClient(), clk)
	a.CALifetime, a.CertLifetime = 30*24*time.Hour, 365*24*time.Hour
	if err := a.Sync(context.Background()); err != nil {
		t.Fatal(err)
	}
	pc := proxyCert(t, a, "p")
	if ca := certsecret.DecodeCerts(a.Bundle())[0]; pc.NotAfter.After(ca.NotAfter) {
		t.Errorf("the certificate ends %v, after its CA (%v)", pc.NotAfter, ca.NotAfter)
	}
	// An RSA key is signed too (for key exchange as well).
	rk, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	if _, c, err := a.Issue(rk.Public(), Identity{Namespace: "apps", Pod: "p", ServiceAccount: "sa"}); err != nil || c.KeyUsage&x509.KeyUsageKeyEncipherment == 0 {
		t.Errorf("RSA: %v", err)
	}
	if _, _, err := a.Issue(rk.Public(), Identity{Namespace: "apps", Pod: "a/b", ServiceAccount: "sa"}); err == nil {
		t.Error("a pod name with a slash was issued")
	}
}

// FromCertificate refuses certificates that are not proxies'.
func TestFromCertificateRefusals(t *testing.T) {
	good := func() *x509.Certificate {
		return &x509.Certificate{
			Subject:     pkix.Name{CommonName: "system:serviceaccount:apps:sa"},
			URIs:        []*url.URL{{Scheme: "spiffe", Host: "cluster.local", Path: "/ns/apps/pod/p"}},
			ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
		}
	}
	if _, err := FromCertificate(good()); err != nil {
		t.Fatalf("a good certificate: %v", err)
	}
	for name, tc := range map[string]struct {
		change func(*x509.Certificate)
		want   string
	}{
		"no URI":           {func(c *x509.Certificate) { c.URIs = nil }, "0 URI SANs"},
		"two URIs":         {func(c *x509.Certificate) { c.URIs = append(c.URIs, c.URIs[0]) }, "2 URI SANs"},
		"not spiffe":       {func(c *x509.Certificate) { c.URIs[0].Scheme = "https" }, "is not spiffe://"},
		"service account":  {func(c *x509.Certificate) { c.URIs[0].Path = "/ns/apps/sa/p" }, "is not spiffe://"},
		"other namespace":  {func(c *x509.Certificate) { c.Subject.CommonName = "system:serviceaccount:other:sa" }, "not a service account of namespace apps"},
		"no subject":       {func(c *x509.Certificate) { c.Subject.CommonName = "" }, "not a service account"},
		"server-only cert": {func(c *x509.Certificate) { c.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth} }, "client authentication"},
	} {
		t.Run(name, func(t *testing.T) {
			c := good()
			tc.change(c)
			_, err := FromCertificate(c)
			if !errors.Is(err, ErrNoIdentity) || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("FromCertificate = %v, want ErrNoIdentity saying %q", err, tc.want)
			}
		})
	}
	a := &Authority{TrustDomain: "fleet.example"}
	if _, err := a.Identify(good()); err == nil || !strings.Contains(err.Error(), "trust domain cluster.local, want fleet.example") {
		t.Errorf("another trust domain: %v", err)
	}
}

// Unusable entries are dropped from the Secret, and a missing key means a
// new CA.
func TestRotateRepairs(t *testing.T) {
	clk := clock.NewFake(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC))
	a := newAuthority(t, nil, clk)
	data, why, err := a.Rotate(nil)
	if err != nil || why != "no CA" {
		t.Fatalf("Rotate(nil) = %q %v", why, err)
	}
	if same, why, _ := a.Rotate(data); why != "" || string(same[KeyCA]) != string(data[KeyCA]) {
		t.Errorf("an unchanged Secret was rotated: %q", why)
	}
	if _, why, _ := a.Rotate(map[string][]byte{KeyCA: data[KeyCA]}); why != "no CA" {
		t.Errorf("a CA without its key: %q, want a new CA", why)
	}
	// Garbage after the CA: dropped.
	junk := map[string][]byte{KeyCA: append(append([]byte{}, data[KeyCA]...), data[KeyCA]...), KeyCAKey: data[KeyCAKey]}
	out, why, err := a.Rotate(junk)
	if err != nil || why != "expired or unusable CAs dropped" || len(certsecret.DecodeCerts(out[KeyCA])) != 1 {
		t.Errorf("a CA without a key beside a good one: %q %v", why, err)
	}
}
