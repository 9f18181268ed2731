package certtest

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"
)

func TestIssue(t *testing.T) {
	ca := New(t, "test CA")
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(ca.PEM()) {
		t.Fatal("PEM holds no certificate")
	}
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	a := ca.Issue(t, &x509.Certificate{ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}, key.Public())
	if _, err := a.Verify(x509.VerifyOptions{Roots: pool, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}); err != nil {
		t.Error(err)
	}
	if now := time.Now(); a.NotBefore.After(now.Add(-59*time.Minute)) || a.NotAfter.After(now.Add(time.Hour)) || a.NotAfter.Before(now.Add(59*time.Minute)) {
		t.Errorf("a template without validity got %v to %v, want an hour either side of now", a.NotBefore, a.NotAfter)
	}
	b := ca.Issue(t, &x509.Certificate{}, key.Public())
	if a.SerialNumber.Cmp(b.SerialNumber) == 0 {
		t.Error("two certificates with one serial")
	}
	later := time.Now().Add(48 * time.Hour).Truncate(time.Second)
	if c := ca.Issue(t, &x509.Certificate{NotAfter: later}, key.Public()); !c.NotAfter.Equal(later) {
		t.Errorf("the template's NotAfter %v became %v", later, c.NotAfter)
	}
}

func TestServing(t *testing.T) {
	ca := New(t, "test CA")
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(http.ResponseWriter, *http.Request) {}))
	srv.TLS = &tls.Config{Certificates: []tls.Certificate{ca.Serving(t)}}
	srv.StartTLS()
	defer srv.Close()
	pool := x509.NewCertPool()
	pool.AddCert(ca.Cert)
	c := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}}
	resp, err := c.Get(srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
}
