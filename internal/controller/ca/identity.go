package ca

import (
	"crypto/x509"
	"errors"
	"fmt"
	"net/url"
	"slices"
	"strings"
)

// saPrefix begins a service account's Kubernetes user name, which a
// proxy's certificate carries as its subject's common name.
const saPrefix = "system:serviceaccount:"

// Identity is what a proxy's certificate says it is: a pod, in a
// namespace, running as a service account, in a trust domain.
type Identity struct {
	TrustDomain    string
	Namespace      string
	Pod            string
	ServiceAccount string
}

// URI is the identity's SPIFFE ID, the certificate's one URI SAN:
// spiffe://<trust domain>/ns/<namespace>/pod/<pod>.
func (id Identity) URI() *url.URL {
	return &url.URL{Scheme: "spiffe", Host: id.TrustDomain, Path: "/ns/" + id.Namespace + "/pod/" + id.Pod}
}

// String is the SPIFFE ID.
func (id Identity) String() string { return id.URI().String() }

// Node is the xDS node id a proxy with this identity must send:
// namespace/pod.
func (id Identity) Node() string { return id.Namespace + "/" + id.Pod }

// User is the service account's Kubernetes user name, the certificate's
// subject common name: system:serviceaccount:<namespace>:<name>.
func (id Identity) User() string { return saPrefix + id.Namespace + ":" + id.ServiceAccount }

// check reports what is missing or malformed.
func (id Identity) check() error {
	for _, f := range []struct{ name, v string }{
		{"trust domain", id.TrustDomain}, {"namespace", id.Namespace}, {"pod", id.Pod}, {"service account", id.ServiceAccount},
	} {
		if f.v == "" || strings.ContainsAny(f.v, "/:") {
			return fmt.Errorf("ca: identity: %s %q is empty or contains a slash or a colon", f.name, f.v)
		}
	}
	return nil
}

// ErrNoIdentity: a certificate does not carry an identity this CA issues.
var ErrNoIdentity = errors.New("ca: not a proxy certificate")

// FromCertificate reads the identity Issue wrote into c: its one SPIFFE
// URI SAN and the service account in its subject. It checks the form,
// not the signature: the TLS handshake verified that.
func FromCertificate(c *x509.Certificate) (Identity, error) {
	if len(c.URIs) != 1 {
		return Identity{}, fmt.Errorf("%w: %d URI SANs, want one SPIFFE ID", ErrNoIdentity, len(c.URIs))
	}
	u := c.URIs[0]
	parts := strings.Split(strings.TrimPrefix(u.Path, "/"), "/")
	if u.Scheme != "spiffe" || u.Host == "" || len(parts) != 4 || parts[0] != "ns" || parts[2] != "pod" {
		return Identity{}, fmt.Errorf("%w: %s is not spiffe://<trust domain>/ns/<namespace>/pod/<pod>", ErrNoIdentity, u)
	}
	id := Identity{TrustDomain: u.Host, Namespace: parts[1], Pod: parts[3]}
	ns, sa, ok := strings.Cut(strings.TrimPrefix(c.Subject.CommonName, saPrefix), ":")
	if !strings.HasPrefix(c.Subject.CommonName, saPrefix) || !ok || ns != id.Namespace {
		return Identity{}, fmt.Errorf("%w: subject %q is not a service account of namespace %s", ErrNoIdentity, c.Subject.CommonName, id.Namespace)
	}
	id.ServiceAccount = sa
	if err := id.check(); err != nil {
		return Identity{}, fmt.Errorf("%w: %v", ErrNoIdentity, err)
	}
	if !slices.Contains(c.ExtKeyUsage, x509.ExtKeyUsageClientAuth) {
		return Identity{}, fmt.Errorf("%w: not for client authentication", ErrNoIdentity)
	}
	return id, nil
}
