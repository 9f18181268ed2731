// Package certsecret keeps certificates in a Secret that every controller
// replica shares, for the proxies' CA (internal/controller/ca) and the
// webhook's serving certificate (internal/controller/certs): Ensure reads
// the Secret and writes it back rotated, racing the other replicas with
// the API server's optimistic concurrency; the rest issues certificates,
// says when they are due for renewal, and reads and writes the PEM the
// Secret holds.
package certsecret

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"fmt"
	"log/slog"
	"math/big"
	"net"
	"slices"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

// Secret names a Secret and says how to create it.
type Secret struct {
	// Client writes the Secret; Reader reads it uncached (the controller
	// does not watch Secrets).
	Client client.Client
	Reader client.Reader
	// Namespace and Name name the Secret.
	Namespace, Name string
	// Type of a Secret that Ensure creates.
	Type corev1.SecretType
	// Component begins the errors Ensure makes ("ca" gives "ca: get
	// secret ns/name: ..."); it returns rotate's as they are.
	Component string
	// Issued is the message Ensure logs to Log, with the Secret's name
	// and why, when it writes the Secret. Log nil logs nothing.
	Issued string
	Log    *slog.Logger
}

// RotateFunc returns a Secret's data with what is due replaced, and why
// ("" when nothing changed, and then the data need not be new).
type RotateFunc func(data map[string][]byte) (map[string][]byte, string, error)

// Ensure reads the Secret (none is empty data), passes its data to rotate
// and, when rotate says why, writes the result: Create when there was no
// Secret, Update otherwise, so a replica that read an old version loses to
// one that wrote since. When another replica wrote first it reads theirs
// and tries again, four times at most. It returns the Secret as it now
// stands.
func (s Secret) Ensure(ctx context.Context, rotate RotateFunc) (*corev1.Secret, error) {
	for attempt := 0; ; attempt++ {
		sec, why, err := s.ensure(ctx, rotate)
		if err == nil && why != "" && s.Log != nil {
			s.Log.Info(s.Issued, "secret", s.Namespace+"/"+s.Name, "why", why)
		}
		if err == nil || attempt == 3 || !(apierrors.IsConflict(err) || apierrors.IsAlreadyExists(err)) {
			return sec, err
		}
		// Another replica wrote it first: read theirs.
	}
}

// ensure is one attempt of Ensure's; it returns why it wrote.
func (s Secret) ensure(ctx context.Context, rotate RotateFunc) (*corev1.Secret, string, error) {
	sec := &corev1.Secret{}
	err := s.Reader.Get(ctx, client.ObjectKey{Namespace: s.Namespace, Name: s.Name}, sec)
	switch {
	case apierrors.IsNotFound(err):
		sec = &corev1.Secret{
			ObjectMeta: metav1.ObjectMeta{Namespace: s.Namespace, Name: s.Name,
				Labels: map[string]string{"app.kubernetes.io/managed-by": "misaki-controller"}},
			Type: s.Type,
		}
	case err != nil:
		return nil, "", fmt.Errorf("%s: get secret %s/%s: %w", s.Component, s.Namespace, s.Name, err)
	}
	data, why, err := rotate(sec.Data)
	if err != nil {
		return sec, "", err
	}
	if why == "" {
		return sec, "", nil
	}
	sec.Data = data
	if sec.ResourceVersion == "" {
		err = s.Client.Create(ctx, sec)
	} else {
		err = s.Client.Update(ctx, sec)
	}
	if err != nil {
		return nil, "", fmt.Errorf("%s: write secret %s/%s: %w", s.Component, s.Namespace, s.Name, err)
	}
	return sec, why, nil
}

// Backdate is how long before its issue a certificate starts: a
// vehicle's clock may run behind.
const Backdate = time.Hour

// NewKey makes a P-256 ECDSA key.
func NewKey() (*ecdsa.PrivateKey, error) { return ecdsa.GenerateKey(elliptic.P256(), rand.Reader) }

// Sign makes a certificate from tmpl for pub, signed by parent (tmpl
// itself when nil), with a random 120-bit serial, valid from Backdate ago
// for life. It sets tmpl's SerialNumber, NotBefore and NotAfter.
func Sign(tmpl *x509.Certificate, pub crypto.PublicKey, parent *x509.Certificate, parentKey crypto.Signer, now time.Time, life time.Duration) (*x509.Certificate, error) {
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 120))
	if err != nil {
		return nil, err
	}
	tmpl.SerialNumber = serial
	tmpl.NotBefore = now.Add(-Backdate)
	tmpl.NotAfter = now.Add(life)
	if parent == nil {
		parent = tmpl
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, parent, pub, parentKey)
	if err != nil {
		return nil, err
	}
	return x509.ParseCertificate(der)
}

// RenewDue reports whether a third of c's lifetime or less is left at now.
func RenewDue(c *x509.Certificate, now time.Time) bool {
	life := c.NotAfter.Sub(c.NotBefore)
	return now.After(c.NotAfter.Add(-life / 3))
}

// HasNames reports whether c carries every one of dnsNames and ips.
func HasNames(c *x509.Certificate, dnsNames []string, ips []net.IP) bool {
	for _, n := range dnsNames {
		if !slices.Contains(c.DNSNames, n) {
			return false
		}
	}
	for _, ip := range ips {
		if !slices.ContainsFunc(c.IPAddresses, ip.Equal) {
			return false
		}
	}
	return true
}

// PublicKeyMatches reports whether key (which may be nil) is c's.
func PublicKeyMatches(c *x509.Certificate, key crypto.Signer) bool {
	pub, ok := c.PublicKey.(interface{ Equal(crypto.PublicKey) bool })
	return ok && key != nil && pub.Equal(key.Public())
}
