package devpki

import (
	"crypto/tls"
	"crypto/x509"
	"os"
	"testing"
)

func TestCertificatesChainToTheCA(t *testing.T) {
	f, err := Write(t.TempDir(), "VIN1")
	if err != nil {
		t.Fatal(err)
	}
	pem, _ := os.ReadFile(f.CA)
	roots := x509.NewCertPool()
	if !roots.AppendCertsFromPEM(pem) {
		t.Fatal("no CA certificate")
	}
	for _, c := range []struct {
		cert, key string
		usage     x509.ExtKeyUsage
	}{{f.ServerCert, f.ServerKey, x509.ExtKeyUsageServerAuth}, {f.ClientCert, f.ClientKey, x509.ExtKeyUsageClientAuth}} {
		pair, err := tls.LoadX509KeyPair(c.cert, c.key)
		if err != nil {
			t.Fatal(err)
		}
		leaf, _ := x509.ParseCertificate(pair.Certificate[0])
		if _, err := leaf.Verify(x509.VerifyOptions{Roots: roots, KeyUsages: []x509.ExtKeyUsage{c.usage}}); err != nil {
			t.Errorf("%s: %v", c.cert, err)
		}
		if c.usage == x509.ExtKeyUsageClientAuth && (len(leaf.URIs) != 1 || leaf.URIs[0].String() != VehicleURI("VIN1")) {
			t.Errorf("client identity %v", leaf.URIs)
		}
		if c.usage == x509.ExtKeyUsageServerAuth && leaf.VerifyHostname("127.0.0.1") != nil {
			t.Error("server certificate is not for 127.0.0.1")
		}
	}
}
