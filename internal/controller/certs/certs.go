// Package certs generates and rotates the injection webhook's serving
// certificate, and keeps the webhook configuration's caBundle in step.
//
// The CA and the serving certificate live in one Secret in the
// controller's namespace, so every replica serves a certificate the API
// server trusts; replicas race to create or rotate it with the API server's
// optimistic concurrency, and all of them read it back. A certificate is
// replaced when a third of its lifetime is left, or when it no longer names
// what it must. A new CA is added to the caBundle beside the old one, and
// the bundle is patched before any replica serves a certificate from the
// new CA, so rotation never breaks admission.
//
// Why not cert-manager or cert-controller: the first is one more operator
// on a vehicle's small cluster, and the second waits for the kubelet to
// project the Secret into the pod, which a restarted controller cannot
// serve without; this is the same scheme in under 300 lines, serving from
// memory.
package certs

import (
	"bytes"
	"context"
	"crypto"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"net"
	"sync"
	"sync/atomic"
	"time"

	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/misaki-io/misaki/internal/controller/certsecret"
)

// Keys of the Secret.
const (
	KeyCA      = "ca.crt" // the CA bundle: the current CA, then older ones still valid
	KeyCAKey   = "ca.key"
	KeyCert    = corev1.TLSCertKey
	KeyPrivate = corev1.TLSPrivateKeyKey
)

// Rotator keeps the Secret's certificates fresh, serves the current one,
// and patches the webhook configuration's caBundle. It is a
// controller-runtime Runnable that runs on every replica.
type Rotator struct {
	// Client writes the Secret and the webhook configuration; Reader reads
	// them uncached (the controller does not watch Secrets).
	Client client.Client
	Reader client.Reader
	// Namespace and Secret name the Secret.
	Namespace, Secret string
	// Webhook names the MutatingWebhookConfiguration whose webhooks get
	// the caBundle.
	Webhook string
	// DNSNames and IPs the serving certificate must carry.
	DNSNames []string
	IPs      []net.IP
	// CALifetime and CertLifetime: defaults 5 years and 90 days.
	CALifetime, CertLifetime time.Duration
	// Interval between checks. Default 30s.
	Interval time.Duration
	// Now is the clock. Default time.Now.
	Now func() time.Time
	Log *slog.Logger

	once    sync.Once // sets the defaults, before any other use
	current atomic.Pointer[tls.Certificate]
	ready   chan struct{} // closed once a certificate is served
}

// NeedLeaderElection is false: every replica serves the webhook.
func (r *Rotator) NeedLeaderElection() bool { return false }

func (r *Rotator) defaults() { r.once.Do(r.setDefaults) }

func (r *Rotator) setDefaults() {
	if r.CALifetime == 0 {
		r.CALifetime = 5 * 365 * 24 * time.Hour
	}
	if r.CertLifetime == 0 {
		r.CertLifetime = 90 * 24 * time.Hour
	}
	if r.Interval == 0 {
		r.Interval = 30 * time.Second
	}
	if r.Now == nil {
		r.Now = time.Now
	}
	r.ready = make(chan struct{})
}

// Ready is closed once a certificate is being served.
func (r *Rotator) Ready() <-chan struct{} {
	r.defaults()
	return r.ready
}

// GetCertificate serves the current certificate (tls.Config.GetCertificate).
func (r *Rotator) GetCertificate(*tls.ClientHelloInfo) (*tls.Certificate, error) {
	if c := r.current.Load(); c != nil {
		return c, nil
	}
	return nil, errors.New("certs: no serving certificate yet")
}

// Start checks now and every Interval until ctx ends; a failed check is
// retried sooner, from 1 s up to Interval.
func (r *Rotator) Start(ctx context.Context) error {
	r.defaults()
	wait := time.Second
	for {
		err := r.Sync(ctx)
		next := r.Interval
		if err != nil {
			r.Log.Error("webhook certificate", "err", err)
			next, wait = wait, min(2*wait, r.Interval)
		} else {
			wait = time.Second
		}
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(next):
		}
	}
}

// Sync makes the Secret current, patches the caBundle, and serves the
// Secret's certificate, in that order.
func (r *Rotator) Sync(ctx context.Context) error {
	r.defaults()
	secret := certsecret.Secret{Client: r.Client, Reader: r.Reader, Namespace: r.Namespace, Name: r.Secret,
		Type: corev1.SecretTypeTLS, Component: "certs", Issued: "webhook certificate issued", Log: r.Log}
	sec, err := secret.Ensure(ctx, r.Rotate)
	if err != nil {
		return err
	}
	if err := r.patchBundle(ctx, sec.Data[KeyCA]); err != nil {
		return err
	}
	cert, err := tls.X509KeyPair(sec.Data[KeyCert], sec.Data[KeyPrivate])
	if err != nil {
		return fmt.Errorf("certs: secret %s/%s: %w", r.Namespace, r.Secret, err)
	}
	if old := r.current.Load(); old == nil || !bytes.Equal(old.Certificate[0], cert.Certificate[0]) {
		r.current.Store(&cert)
		leaf, _ := x509.ParseCertificate(cert.Certificate[0])
		r.Log.Info("serving webhook certificate", "serial", leaf.SerialNumber.Text(16), "notAfter", leaf.NotAfter.UTC())
	}
	select {
	case <-r.ready:
	default:
		close(r.ready)
	}
	return nil
}

// Rotate returns the Secret's data with a fresh CA and certificate where
// needed, and why ("" when nothing changed). It is pure but for the
// randomness of key generation.
func (r *Rotator) Rotate(data map[string][]byte) (map[string][]byte, string, error) {
	r.defaults()
	now := r.Now()
	ca, caKey, bundle := parseCA(data, now)
	var why string
	if ca == nil || certsecret.RenewDue(ca, now) {
		why = "no CA"
		if ca != nil {
			why = "CA expires " + ca.NotAfter.UTC().Format(time.RFC3339)
		}
		old := ca
		var err error
		if ca, caKey, err = r.issue(nil, nil, now, r.CALifetime); err != nil {
			return nil, "", err
		}
		bundle = append([]*x509.Certificate{ca}, bundle...)
		if leaf := parseLeaf(data, old); leaf != nil && !certsecret.RenewDue(leaf, now) && certsecret.HasNames(leaf, r.DNSNames, r.IPs) {
			// The new CA goes into the bundle first; its certificate
			// comes at the next check, when the API server trusts it.
			out := maps.Clone(data)
			out[KeyCA], out[KeyCAKey] = certsecret.EncodeCerts(bundle), certsecret.EncodeKey(caKey)
			return out, why + "; new CA added to the bundle", nil
		}
	}
	leaf := parseLeaf(data, ca)
	switch {
	case why != "":
	case leaf == nil:
		why = "no certificate from the current CA"
	case certsecret.RenewDue(leaf, now):
		why = "certificate expires " + leaf.NotAfter.UTC().Format(time.RFC3339)
	case !certsecret.HasNames(leaf, r.DNSNames, r.IPs):
		why = "certificate names changed"
	default:
		return data, "", nil
	}
	cert, key, err := r.issue(ca, caKey, now, r.CertLifetime)
	if err != nil {
		return nil, "", err
	}
	out := map[string][]byte{
		KeyCA:      certsecret.EncodeCerts(bundle),
		KeyCAKey:   certsecret.EncodeKey(caKey),
		KeyCert:    certsecret.EncodeCerts([]*x509.Certificate{cert}),
		KeyPrivate: certsecret.EncodeKey(key),
	}
	return out, why, nil
}

// issue makes a CA (parent nil) or a serving certificate signed by parent.
// Certificates start certsecret.Backdate back: a vehicle's clock may run
// behind.
func (r *Rotator) issue(parent *x509.Certificate, parentKey crypto.Signer, now time.Time, life time.Duration) (*x509.Certificate, crypto.Signer, error) {
	key, err := certsecret.NewKey()
	if err != nil {
		return nil, nil, err
	}
	tmpl := &x509.Certificate{}
	if parent == nil {
		tmpl.Subject = pkix.Name{CommonName: "misaki-webhook-ca " + now.UTC().Format("2006-01-02T15:04:05Z")}
		tmpl.IsCA, tmpl.BasicConstraintsValid = true, true
		tmpl.KeyUsage = x509.KeyUsageCertSign | x509.KeyUsageCRLSign
		parentKey = key
	} else {
		name := "misaki-webhook"
		if len(r.DNSNames) > 0 {
			name = r.DNSNames[0]
		}
		tmpl.Subject = pkix.Name{CommonName: name}
		tmpl.DNSNames, tmpl.IPAddresses = r.DNSNames, r.IPs
		tmpl.KeyUsage = x509.KeyUsageDigitalSignature
		tmpl.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}
	}
	c, err := certsecret.Sign(tmpl, key.Public(), parent, parentKey, now, life)
	if err != nil {
		return nil, nil, fmt.Errorf("certs: issue: %w", err)
	}
	return c, key, nil
}

// patchBundle sets every webhook's caBundle in the configuration. A
// configuration that does not exist yet (installed after the controller)
// is not an error: the next check patches it.
func (r *Rotator) patchBundle(ctx context.Context, bundle []byte) error {
	var mwc admissionregistrationv1.MutatingWebhookConfiguration
	if err := r.Reader.Get(ctx, client.ObjectKey{Name: r.Webhook}, &mwc); err != nil {
		if apierrors.IsNotFound(err) {
			r.Log.Warn("no webhook configuration to patch yet", "name", r.Webhook)
			return nil
		}
		return fmt.Errorf("certs: get webhook configuration %s: %w", r.Webhook, err)
	}
	changed := false
	for i := range mwc.Webhooks {
		if !bytes.Equal(mwc.Webhooks[i].ClientConfig.CABundle, bundle) {
			mwc.Webhooks[i].ClientConfig.CABundle = bundle
			changed = true
		}
	}
	if !changed {
		return nil
	}
	if err := r.Client.Update(ctx, &mwc); err != nil {
		return fmt.Errorf("certs: patch caBundle of %s: %w", r.Webhook, err)
	}
	r.Log.Info("webhook caBundle patched", "name", r.Webhook, "webhooks", len(mwc.Webhooks))
	return nil
}

// parseCA returns the current CA and its key, and the bundle of CAs still
// valid (the current one first). Anything unparsable counts as absent.
func parseCA(data map[string][]byte, now time.Time) (*x509.Certificate, crypto.Signer, []*x509.Certificate) {
	var bundle []*x509.Certificate
	for _, c := range certsecret.DecodeCerts(data[KeyCA]) {
		if now.Before(c.NotAfter) {
			bundle = append(bundle, c)
		}
	}
	key := certsecret.DecodeKey(data[KeyCAKey])
	if len(bundle) == 0 || key == nil || !certsecret.PublicKeyMatches(bundle[0], key) {
		return nil, nil, bundle
	}
	return bundle[0], key, bundle
}

// parseLeaf returns the serving certificate if ca signed it and its key
// matches.
func parseLeaf(data map[string][]byte, ca *x509.Certificate) *x509.Certificate {
	if ca == nil {
		return nil
	}
	certs := certsecret.DecodeCerts(data[KeyCert])
	key := certsecret.DecodeKey(data[KeyPrivate])
	if len(certs) == 0 || key == nil || !certsecret.PublicKeyMatches(certs[0], key) || certs[0].CheckSignatureFrom(ca) != nil {
		return nil
	}
	return certs[0]
}
