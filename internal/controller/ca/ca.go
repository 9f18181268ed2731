// Package ca is the controller's certificate authority for the mesh's
// proxies, as istiod's is for Istio's: it keeps a CA in a Secret, issues
// each proxy a short-lived client certificate naming its pod (a SPIFFE ID,
// Identity), and issues the controller the serving certificate of its xDS
// and certificate endpoints, which proxies check against the CA bundle.
//
// The Secret holds the bundle (the newest CA first, then older ones still
// valid) and every CA's key. Every replica reads it, and creates or
// rotates it with the API server's optimistic concurrency; each replica
// issues its own serving certificate, in memory. A CA is replaced when a
// third of its lifetime is left: the new one joins the bundle and signs
// proxies' certificates from then on, while the controller's serving
// certificate stays with the oldest CA that outlives it, so the bundle
// that proxies read from a ConfigMap (which the kubelet refreshes within a
// minute or so) holds the new CA long before any server presents it.
//
// Proxies' certificates are verified against the whole bundle, so those
// issued by the previous CA keep working until they expire.
package ca

import (
	"bytes"
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/url"
	"sync"
	"sync/atomic"
	"time"

	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/misaki-io/misaki/internal/backoff"
	"github.com/misaki-io/misaki/internal/clock"
	"github.com/misaki-io/misaki/internal/controller/certsecret"
)

// Keys of the Secret.
const (
	KeyCA    = "ca.crt" // the bundle: the newest CA first, then older ones still valid
	KeyCAKey = "ca.key" // the CAs' keys, one PEM block each, in the bundle's order
)

// The ConfigMap the controller keeps the bundle in, in each namespace
// whose pods may be injected, and its key: the injector mounts it into
// proxies as their xds.caFile.
const (
	RootCertConfigMap = "misaki-ca-root-cert"
	RootCertKey       = "root-cert.pem"
)

// Defaults of the Authority's zero fields.
const (
	DefaultTrustDomain     = "cluster.local"
	DefaultCALifetime      = 10 * 365 * 24 * time.Hour
	DefaultCertLifetime    = 24 * time.Hour
	DefaultServingLifetime = 7 * 24 * time.Hour
	DefaultInterval        = 30 * time.Second
)

// ErrNotReady: the Authority has not loaded its CA yet (Sync has not
// succeeded).
var ErrNotReady = errors.New("ca: no CA loaded yet")

// Authority keeps the CA Secret current and issues certificates from it.
// It is a controller-runtime Runnable that runs on every replica.
type Authority struct {
	// Client writes the Secret; Reader reads it uncached (the controller
	// does not watch Secrets).
	Client client.Client
	Reader client.Reader
	// Namespace and Secret name the Secret.
	Namespace, Secret string
	// TrustDomain is the SPIFFE trust domain of proxies' identities.
	// Default cluster.local.
	TrustDomain string
	// DNSNames and IPs the controller's serving certificate carries.
	DNSNames []string
	IPs      []net.IP
	// CALifetime, CertLifetime (proxies' certificates) and
	// ServingLifetime (the controller's): defaults 10 years, 24 hours and
	// 7 days.
	CALifetime, CertLifetime, ServingLifetime time.Duration
	// Interval between checks of the Secret. Default 30s.
	Interval time.Duration
	// Clock tells the time. Default the real one.
	Clock clock.Clock
	Log   *slog.Logger
	// OnBundle, if set, is called with the PEM bundle whenever a check
	// finds it changed (and after the first), so that it can be
	// published to proxies.
	OnBundle func(bundle []byte)

	once  sync.Once // sets the defaults, before any other use
	ready chan struct{}
	cur   atomic.Pointer[state]
}

// state is one loaded Secret and the serving certificate issued from it.
type state struct {
	cas     []*x509.Certificate // the newest first
	keys    []crypto.Signer     // cas[i]'s key
	bundle  []byte              // cas, PEM
	pool    *x509.CertPool      // cas
	serving *tls.Certificate
	leaf    *x509.Certificate // serving's
}

// NeedLeaderElection is false: every replica serves proxies.
func (a *Authority) NeedLeaderElection() bool { return false }

func (a *Authority) defaults() { a.once.Do(a.setDefaults) }

func (a *Authority) setDefaults() {
	if a.TrustDomain == "" {
		a.TrustDomain = DefaultTrustDomain
	}
	if a.CALifetime == 0 {
		a.CALifetime = DefaultCALifetime
	}
	if a.CertLifetime == 0 {
		a.CertLifetime = DefaultCertLifetime
	}
	if a.ServingLifetime == 0 {
		a.ServingLifetime = DefaultServingLifetime
	}
	if a.Interval == 0 {
		a.Interval = DefaultInterval
	}
	if a.Clock == nil {
		a.Clock = clock.Real{}
	}
	if a.Log == nil {
		a.Log = slog.New(slog.DiscardHandler)
	}
	a.ready = make(chan struct{})
}

// Ready is closed once the CA is loaded and a serving certificate issued.
func (a *Authority) Ready() <-chan struct{} {
	a.defaults()
	return a.ready
}

// Start checks now and every Interval until ctx ends; a failed check is
// retried sooner, from 1 s up to Interval.
func (a *Authority) Start(ctx context.Context) error {
	a.defaults()
	retry := backoff.New(backoff.Policy{Initial: time.Second, Max: a.Interval}, a.Clock)
	for {
		next := a.Interval
		if err := a.Sync(ctx); err != nil {
			a.Log.Error("proxy CA", "err", err)
			next = retry.Next()
		} else {
			retry.Reset()
		}
		if backoff.Sleep(ctx, a.Clock, next) != nil {
			return nil
		}
	}
}

// Sync makes the Secret current, loads it, and renews the serving
// certificate if it is due.
func (a *Authority) Sync(ctx context.Context) error {
	a.defaults()
	secret := certsecret.Secret{Client: a.Client, Reader: a.Reader, Namespace: a.Namespace, Name: a.Secret,
		Type: corev1.SecretTypeOpaque, Component: "ca", Issued: "proxy CA issued", Log: a.Log}
	sec, err := secret.Ensure(ctx, a.Rotate)
	if err != nil {
		return err
	}
	cas, keys := parseCAs(sec.Data, a.Clock.Now())
	if len(cas) == 0 {
		return fmt.Errorf("ca: secret %s/%s has no valid CA after rotation", a.Namespace, a.Secret)
	}
	old := a.cur.Load()
	st := &state{cas: cas, keys: keys, bundle: certsecret.EncodeCerts(cas), pool: x509.NewCertPool()}
	for _, c := range cas {
		st.pool.AddCert(c)
	}
	if err := a.serve(st, old); err != nil {
		return err
	}
	a.cur.Store(st)
	if old == nil || !bytes.Equal(old.bundle, st.bundle) {
		a.Log.Info("proxy CA loaded", "cas", len(cas), "current", cas[0].Subject.CommonName, "notAfter", cas[0].NotAfter.UTC())
		if a.OnBundle != nil {
			a.OnBundle(st.bundle)
		}
	}
	select {
	case <-a.ready:
	default:
		close(a.ready)
	}
	return nil
}

// serve gives st a serving certificate: old's if it is still good, else a
// new one.
func (a *Authority) serve(st, old *state) error {
	now := a.Clock.Now()
	i := servingCA(st.cas, now, a.ServingLifetime)
	if old != nil && old.leaf != nil && old.leaf.CheckSignatureFrom(st.cas[i]) == nil &&
		!certsecret.RenewDue(old.leaf, now) && certsecret.HasNames(old.leaf, a.DNSNames, a.IPs) {
		st.serving, st.leaf = old.serving, old.leaf
		return nil
	}
	key, err := certsecret.NewKey()
	if err != nil {
		return err
	}
	tmpl := &x509.Certificate{
		Subject:     pkix.Name{CommonName: "misaki-controller"},
		DNSNames:    a.DNSNames,
		IPAddresses: a.IPs,
		KeyUsage:    x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	if len(a.DNSNames) > 0 {
		tmpl.Subject.CommonName = a.DNSNames[0]
	}
	leaf, err := sign(tmpl, key.Public(), st.cas[i], st.keys[i], now, a.ServingLifetime)
	if err != nil {
		return err
	}
	st.leaf = leaf
	st.serving = &tls.Certificate{Certificate: [][]byte{leaf.Raw}, PrivateKey: key, Leaf: leaf}
	a.Log.Info("serving certificate issued", "serial", leaf.SerialNumber.Text(16), "ca", st.cas[i].Subject.CommonName,
		"notAfter", leaf.NotAfter.UTC(), "dnsNames", a.DNSNames, "ips", a.IPs)
	return nil
}

// servingCA picks the CA for the controller's serving certificate: the
// oldest one that outlives a certificate issued now, so that proxies have
// trusted it the longest; the newest if none does.
func servingCA(cas []*x509.Certificate, now time.Time, life time.Duration) int {
	for i := len(cas) - 1; i > 0; i-- {
		if cas[i].NotAfter.After(now.Add(life)) {
			return i
		}
	}
	return 0
}

// ServingCertificate is the controller's serving certificate
// (tls.Config.GetCertificate).
func (a *Authority) ServingCertificate(*tls.ClientHelloInfo) (*tls.Certificate, error) {
	if st := a.cur.Load(); st != nil {
		return st.serving, nil
	}
	return nil, ErrNotReady
}

// ClientCAs is the bundle as a pool, to verify proxies' certificates.
// Nil before the first Sync.
func (a *Authority) ClientCAs() *x509.CertPool {
	if st := a.cur.Load(); st != nil {
		return st.pool
	}
	return nil
}

// Bundle is the CA bundle, PEM, proxies trust; nil before the first Sync.
func (a *Authority) Bundle() []byte {
	if st := a.cur.Load(); st != nil {
		return st.bundle
	}
	return nil
}

// Issue signs a certificate for id's pod with the public key pub: its
// SPIFFE ID as the one URI SAN, the service account's user name as the
// subject, for client and server authentication, valid for CertLifetime
// (at most until the CA expires). It returns the certificate, PEM.
func (a *Authority) Issue(pub crypto.PublicKey, id Identity) ([]byte, *x509.Certificate, error) {
	a.defaults()
	st := a.cur.Load()
	if st == nil {
		return nil, nil, ErrNotReady
	}
	id.TrustDomain = a.TrustDomain
	if err := id.check(); err != nil {
		return nil, nil, err
	}
	tmpl := &x509.Certificate{
		Subject:     pkix.Name{CommonName: id.User()},
		URIs:        []*url.URL{id.URI()},
		KeyUsage:    x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth, x509.ExtKeyUsageServerAuth},
	}
	if _, ok := pub.(*ecdsa.PublicKey); !ok {
		tmpl.KeyUsage |= x509.KeyUsageKeyEncipherment // RSA key exchange
	}
	c, err := sign(tmpl, pub, st.cas[0], st.keys[0], a.Clock.Now(), a.CertLifetime)
	if err != nil {
		return nil, nil, err
	}
	return certsecret.EncodeCerts([]*x509.Certificate{c}), c, nil
}

// Identify returns the identity of a proxy's verified certificate, if it
// is of this trust domain.
func (a *Authority) Identify(c *x509.Certificate) (Identity, error) {
	a.defaults()
	id, err := FromCertificate(c)
	if err != nil {
		return id, err
	}
	if id.TrustDomain != a.TrustDomain {
		return Identity{}, fmt.Errorf("%w: trust domain %s, want %s", ErrNoIdentity, id.TrustDomain, a.TrustDomain)
	}
	return id, nil
}

// Rotate returns the Secret's data with a new CA where one is needed, and
// why ("" when nothing changed). It is pure but for the clock and the
// randomness of key generation. Expired CAs leave the bundle.
func (a *Authority) Rotate(data map[string][]byte) (map[string][]byte, string, error) {
	a.defaults()
	now := a.Clock.Now()
	cas, keys := parseCAs(data, now)
	var why string
	switch {
	case len(cas) == 0:
		why = "no CA"
	case certsecret.RenewDue(cas[0], now):
		why = "CA expires " + cas[0].NotAfter.UTC().Format(time.RFC3339)
	}
	if why == "" {
		if len(cas) == len(certsecret.DecodeCerts(data[KeyCA])) {
			return data, "", nil
		}
		why = "expired or unusable CAs dropped"
	} else {
		key, err := certsecret.NewKey()
		if err != nil {
			return nil, "", err
		}
		tmpl := &x509.Certificate{
			Subject:               pkix.Name{Organization: []string{"misaki"}, CommonName: "misaki-proxy-ca " + now.UTC().Format("2006-01-02T15:04:05Z")},
			IsCA:                  true,
			BasicConstraintsValid: true,
			MaxPathLenZero:        true,
			KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
		}
		ca, err := sign(tmpl, key.Public(), nil, key, now, a.CALifetime)
		if err != nil {
			return nil, "", err
		}
		cas, keys = append([]*x509.Certificate{ca}, cas...), append([]crypto.Signer{key}, keys...)
	}
	out := map[string][]byte{KeyCA: certsecret.EncodeCerts(cas), KeyCAKey: certsecret.EncodeKeys(keys)}
	return out, why, nil
}

// sign makes a certificate from tmpl for pub, signed by parent (tmpl
// itself when nil), valid from certsecret.Backdate ago for life, but never
// past parent's end.
func sign(tmpl *x509.Certificate, pub crypto.PublicKey, parent *x509.Certificate, parentKey crypto.Signer, now time.Time, life time.Duration) (*x509.Certificate, error) {
	if parent != nil && now.Add(life).After(parent.NotAfter) {
		life = parent.NotAfter.Sub(now)
	}
	c, err := certsecret.Sign(tmpl, pub, parent, parentKey, now, life)
	if err != nil {
		return nil, fmt.Errorf("ca: sign: %w", err)
	}
	return c, nil
}

// parseCAs returns the Secret's CAs that are valid at now and have their
// key, in the bundle's order. Anything unparsable counts as absent.
func parseCAs(data map[string][]byte, now time.Time) ([]*x509.Certificate, []crypto.Signer) {
	certs := certsecret.DecodeCerts(data[KeyCA])
	keys := certsecret.DecodeKeys(data[KeyCAKey])
	var cas []*x509.Certificate
	var signers []crypto.Signer
	for i, c := range certs {
		if i >= len(keys) || !c.IsCA || !now.Before(c.NotAfter) || !certsecret.PublicKeyMatches(c, keys[i]) {
			continue
		}
		cas, signers = append(cas, c), append(signers, keys[i])
	}
	return cas, signers
}
