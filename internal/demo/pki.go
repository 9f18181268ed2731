package demo

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"time"
)

// writePKI writes a throwaway fleet CA, the gateway's server certificate
// for 127.0.0.1 and the demo car's client certificate into dir, and sets
// their paths in a.
func writePKI(dir string, a *Addrs) error {
	write := func(name, typ string, der []byte) (string, error) {
		p := filepath.Join(dir, name)
		return p, os.WriteFile(p, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), 0o600)
	}
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return err
	}
	now := time.Now()
	caTmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "misaki demo fleet CA"},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(24 * time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		return err
	}
	ca, _ := x509.ParseCertificate(caDER)
	issue := func(serial int64, tmpl *x509.Certificate, certName, keyName string) (string, string, error) {
		key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			return "", "", err
		}
		tmpl.SerialNumber = big.NewInt(serial)
		tmpl.NotBefore, tmpl.NotAfter = now.Add(-time.Hour), now.Add(24*time.Hour)
		tmpl.KeyUsage = x509.KeyUsageDigitalSignature
		der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &key.PublicKey, caKey)
		if err != nil {
			return "", "", err
		}
		kb, _ := x509.MarshalECPrivateKey(key)
		c, err := write(certName, "CERTIFICATE", der)
		if err != nil {
			return "", "", err
		}
		k, err := write(keyName, "EC PRIVATE KEY", kb)
		return c, k, err
	}
	if a.CA, err = write("fleet-ca.pem", "CERTIFICATE", caDER); err != nil {
		return fmt.Errorf("demo: certificates: %w", err)
	}
	if a.GatewayCert, a.GatewayKey, err = issue(2, &x509.Certificate{
		Subject: pkix.Name{CommonName: "gateway"}, IPAddresses: []net.IP{net.ParseIP("127.0.0.1")},
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}, "gateway.pem", "gateway-key.pem"); err != nil {
		return fmt.Errorf("demo: certificates: %w", err)
	}
	car, _ := url.Parse("spiffe://misaki-demo/vehicle/demo-car-1")
	if a.VehicleCert, a.VehicleKey, err = issue(3, &x509.Certificate{
		Subject: pkix.Name{CommonName: "demo-car-1"}, URIs: []*url.URL{car},
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}, "vehicle.pem", "vehicle-key.pem"); err != nil {
		return fmt.Errorf("demo: certificates: %w", err)
	}
	return nil
}
