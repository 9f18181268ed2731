// Package devpki writes a throwaway PKI for the demo and for tests: a fleet
// CA, a server certificate for 127.0.0.1 (the gateway's) and one vehicle's
// client certificate, as PEM files, valid for a day. Nothing here is fit for
// production keys.
package devpki

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

// Files are the paths Write wrote.
type Files struct {
	CA                    string // the fleet CA's certificate
	ServerCert, ServerKey string // for 127.0.0.1
	ClientCert, ClientKey string // the vehicle's
}

// VehicleURI is the identity Write puts in a vehicle's certificate (its
// URI SAN; the common name is the vehicle name).
func VehicleURI(vehicle string) string { return "spiffe://misaki/vehicle/" + vehicle }

// Write creates the PKI in dir.
func Write(dir, vehicle string) (Files, error) {
	var f Files
	write := func(name, typ string, der []byte) (string, error) {
		p := filepath.Join(dir, name)
		return p, os.WriteFile(p, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), 0o600)
	}
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return f, err
	}
	now := time.Now()
	caTmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "misaki dev fleet CA"},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(24 * time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		return f, err
	}
	ca, err := x509.ParseCertificate(caDER)
	if err != nil {
		return f, err
	}
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
		kb, err := x509.MarshalECPrivateKey(key)
		if err != nil {
			return "", "", err
		}
		c, err := write(certName, "CERTIFICATE", der)
		if err != nil {
			return "", "", err
		}
		k, err := write(keyName, "EC PRIVATE KEY", kb)
		return c, k, err
	}
	if f.CA, err = write("fleet-ca.pem", "CERTIFICATE", caDER); err != nil {
		return f, fmt.Errorf("devpki: %w", err)
	}
	if f.ServerCert, f.ServerKey, err = issue(2, &x509.Certificate{
		Subject: pkix.Name{CommonName: "gateway"}, IPAddresses: []net.IP{net.ParseIP("127.0.0.1")},
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}, "gateway.pem", "gateway-key.pem"); err != nil {
		return f, fmt.Errorf("devpki: %w", err)
	}
	uri, err := url.Parse(VehicleURI(vehicle))
	if err != nil {
		return f, fmt.Errorf("devpki: vehicle name %q: %w", vehicle, err)
	}
	if f.ClientCert, f.ClientKey, err = issue(3, &x509.Certificate{
		Subject: pkix.Name{CommonName: vehicle}, URIs: []*url.URL{uri},
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}, "vehicle.pem", "vehicle-key.pem"); err != nil {
		return f, fmt.Errorf("devpki: %w", err)
	}
	return f, nil
}

// GatewayYAML is a misaki-proxy --role gateway config on loopback, ports
// chosen by the kernel, serving with these files, its key store in idemDir,
// and one route (telemetry.cloud.misaki) to serviceURL.
func (f Files) GatewayYAML(idemDir, serviceURL string) string {
	return fmt.Sprintf(`
role: gateway
listen: 127.0.0.1:0
admin: 127.0.0.1:0
gateway:
  tls: {certFile: %s, keyFile: %s, clientCAFile: %s}
  idempotency: {dir: %s}
routes:
  - {name: telemetry, hosts: [telemetry.cloud.misaki], upstream: %s}
`, f.ServerCert, f.ServerKey, f.CA, idemDir, serviceURL)
}
