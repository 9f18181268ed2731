package enrol

import (
	"crypto/x509"
	"fmt"
	"net/url"
	"strings"
)

// MaxVehicleIDLen is the longest vehicle ID: the cloud half runs in the
// namespace "misaki-v-<id>", and a namespace is a DNS label of at most 63
// characters.
const MaxVehicleIDLen = 63 - len("misaki-v-")

// vehicleURIPrefix is the identity's form, as internal/devpki.VehicleURI
// writes it and the gateway reads it.
const vehicleURIPrefix = "spiffe://misaki/vehicle/"

// VehicleURI is the URI SAN of vehicle id's certificate.
func VehicleURI(id string) string { return vehicleURIPrefix + id }

func vehicleURL(id string) *url.URL {
	return &url.URL{Scheme: "spiffe", Host: "misaki", Path: "/vehicle/" + id}
}

// ValidVehicleID checks that id is a DNS label (RFC 1123: lower-case
// letters, digits and '-', starting and ending with a letter or digit) of
// at most MaxVehicleIDLen characters. The error wraps ErrInvalidVehicleID
// and states the rule.
func ValidVehicleID(id string) error {
	if len(id) == 0 || len(id) > MaxVehicleIDLen || !isLabel(id) {
		return fmt.Errorf("%w %q: want 1 to %d lower-case letters, digits and '-', starting and ending with a letter or digit (a DNS label, so misaki-v-<id> is a valid namespace)",
			ErrInvalidVehicleID, id, MaxVehicleIDLen)
	}
	return nil
}

// isLabel reports whether s is a non-empty RFC 1123 label of lower-case
// letters, digits and inner hyphens (length not checked).
func isLabel(s string) bool {
	if s == "" || s[0] == '-' || s[len(s)-1] == '-' {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !('a' <= c && c <= 'z' || '0' <= c && c <= '9' || c == '-') {
			return false
		}
	}
	return true
}

// validHostname accepts a DNS name of labels (a leading "*." wildcard
// allowed), letters in either case.
func validHostname(h string) bool {
	h = strings.TrimPrefix(strings.TrimSuffix(h, "."), "*.")
	if h == "" || len(h) > 253 {
		return false
	}
	for _, l := range strings.Split(h, ".") {
		if len(l) > 63 || !isLabel(strings.ToLower(l)) {
			return false
		}
	}
	return true
}

// VehicleID is the vehicle ID of a vehicle's certificate, from its URI SAN
// spiffe://misaki/vehicle/<id>. It is an error if the certificate has no
// such SAN, more than one, or an ID that is not valid. It does not verify
// the certificate: call it on a peer certificate TLS has verified.
func VehicleID(cert *x509.Certificate) (string, error) {
	var id string
	found := 0
	for _, u := range cert.URIs {
		if u.Scheme != "spiffe" || u.Host != "misaki" || !strings.HasPrefix(u.Path, "/vehicle/") {
			continue
		}
		found++
		if u.String() != VehicleURI(strings.TrimPrefix(u.Path, "/vehicle/")) {
			return "", fmt.Errorf("enrol: certificate %q: URI SAN %q is not %s<id>", cert.Subject.CommonName, u, vehicleURIPrefix)
		}
		id = strings.TrimPrefix(u.Path, "/vehicle/")
	}
	switch {
	case found == 0:
		return "", fmt.Errorf("enrol: certificate %q has no %s<id> URI SAN", cert.Subject.CommonName, vehicleURIPrefix)
	case found > 1:
		return "", fmt.Errorf("enrol: certificate %q has %d vehicle URI SANs, want one", cert.Subject.CommonName, found)
	}
	if err := ValidVehicleID(id); err != nil {
		return "", fmt.Errorf("enrol: certificate %q: %w", cert.Subject.CommonName, err)
	}
	return id, nil
}
