// Package hubclient is the agent side of the hub's API (docs/hub.md):
// enrol with a bootstrap token and a CSR, long-poll the desired state,
// report, renew the certificate and fetch trust roots; and, for the agent
// that runs every vehicle's cloud half, authenticate with a cloud-agent
// operator token and follow the change feed. The agent, the simulated
// vehicle (hack/simvehicle), the hub's tests and its benchmark use it, so
// each speaks the API the same way.
package hubclient

import (
	"bytes"
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"time"

	hubv1 "github.com/misaki-io/misaki/api/hub/v1"
)

// Client calls one hub. Its HTTP client carries the vehicle's certificate
// once enrolled (none before).
type Client struct {
	URL  string // https://host:port
	HTTP *http.Client
	// Token, when set, is sent on every request as "Authorization: Bearer
	// <Token>": an operator token, such as the cloud agent's (scope
	// cloud-agent), in place of a vehicle's certificate.
	Token string
}

// New returns a client for the hub at url that trusts roots and presents
// cert (nil before enrolment). Each Client has its own connection pool.
func New(url string, roots *x509.CertPool, cert *tls.Certificate) *Client {
	tc := &tls.Config{RootCAs: roots, MinVersion: tls.VersionTLS12}
	if cert != nil {
		tc.Certificates = []tls.Certificate{*cert}
	}
	return &Client{URL: url, HTTP: &http.Client{Transport: &http.Transport{TLSClientConfig: tc, ForceAttemptHTTP2: true}}}
}

// Error is a 4xx or 5xx answer.
type Error struct {
	Status int
	Body   hubv1.Error
}

func (e *Error) Error() string {
	msg := fmt.Sprintf("hub: %d %s", e.Status, e.Body.Message)
	if e.Body.Field != "" {
		msg += " (field " + e.Body.Field + ")"
	}
	return msg
}

// NewKey makes a P-256 key for the vehicle's certificate.
func NewKey() (*ecdsa.PrivateKey, error) { return ecdsa.GenerateKey(elliptic.P256(), rand.Reader) }

// NewCSR makes a PEM certificate request for key. The hub takes the
// vehicle's identity from the bootstrap token, not from the request.
func NewCSR(key crypto.Signer) ([]byte, error) {
	der, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{Subject: pkix.Name{CommonName: "misaki-agent"}}, key)
	if err != nil {
		return nil, fmt.Errorf("hubclient: certificate request: %w", err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: der}), nil
}

// KeyPEM encodes key as PKCS#8 PEM.
func KeyPEM(key *ecdsa.PrivateKey) ([]byte, error) {
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, err
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), nil
}

// Enrol spends a bootstrap token for a certificate.
func (c *Client) Enrol(ctx context.Context, token string, csrPEM []byte) (hubv1.Certificate, error) {
	var cert hubv1.Certificate
	err := c.Do(ctx, "POST", "/v1/enrol", hubv1.EnrolRequest{Token: token, CSR: string(csrPEM)}, &cert)
	return cert, err
}

// EnrolNew makes a key and enrols with it, returning the TLS certificate
// to use from then on and the key as PEM (to keep).
func (c *Client) EnrolNew(ctx context.Context, token string) (tls.Certificate, hubv1.Certificate, []byte, error) {
	key, err := NewKey()
	if err != nil {
		return tls.Certificate{}, hubv1.Certificate{}, nil, err
	}
	csr, err := NewCSR(key)
	if err != nil {
		return tls.Certificate{}, hubv1.Certificate{}, nil, err
	}
	cert, err := c.Enrol(ctx, token, csr)
	if err != nil {
		return tls.Certificate{}, cert, nil, err
	}
	keyPEM, err := KeyPEM(key)
	if err != nil {
		return tls.Certificate{}, cert, nil, err
	}
	tc, err := tls.X509KeyPair([]byte(cert.Certificate), keyPEM)
	if err != nil {
		return tls.Certificate{}, cert, nil, fmt.Errorf("hubclient: the hub's certificate: %w", err)
	}
	return tc, cert, keyPEM, nil
}

// Desired long-polls the newest revision of half above after, waiting up
// to wait. It returns nil, nil when the hub had nothing newer in time.
func (c *Client) Desired(ctx context.Context, vehicle, half string, after int64, wait time.Duration) (*hubv1.Desired, error) {
	q := url.Values{"half": {half}, "after": {strconv.FormatInt(after, 10)}, "wait": {wait.String()}}
	req, err := http.NewRequestWithContext(ctx, "GET", c.URL+"/v1/vehicles/"+url.PathEscape(vehicle)+"/desired?"+q.Encode(), nil)
	if err != nil {
		return nil, err
	}
	resp, err := c.send(req)
	if err != nil {
		return nil, fmt.Errorf("hubclient: desired: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode == http.StatusNotModified {
		return nil, nil
	}
	var d hubv1.Desired
	if err := answer(resp, &d); err != nil {
		return nil, err
	}
	return &d, nil
}

// Changes follows the change feed (GET /v1/changes): the vehicles whose
// half got a new revision after change sequence after, oldest first (up
// to the hub's default limit, 500), at once; else, waiting up to wait,
// the first that do, or none. The answer's Seq is the after of the next
// call; after 0 lists every vehicle's newest revision of half. It needs
// an admin or cloud-agent Token.
func (c *Client) Changes(ctx context.Context, half string, after int64, wait time.Duration) (hubv1.Changes, error) {
	q := url.Values{"half": {half}, "after": {strconv.FormatInt(after, 10)}, "wait": {wait.String()}}
	var ch hubv1.Changes
	err := c.Do(ctx, "GET", "/v1/changes?"+q.Encode(), nil, &ch)
	return ch, err
}

// Report puts one half's report (idempotent).
func (c *Client) Report(ctx context.Context, vehicle string, r hubv1.Reported) error {
	return c.Do(ctx, "PUT", "/v1/vehicles/"+url.PathEscape(vehicle)+"/reported", r, nil)
}

// Statuses are objects (a desired state's, as rendered) each with state:
// what a report says of objects the vehicle has applied. It fails on an
// object that is not a JSON object.
func Statuses(objects []json.RawMessage, state string) ([]hubv1.ObjectStatus, error) {
	out := make([]hubv1.ObjectStatus, 0, len(objects))
	for i, raw := range objects {
		var o struct {
			APIVersion string `json:"apiVersion"`
			Kind       string `json:"kind"`
			Metadata   struct {
				Name      string `json:"name"`
				Namespace string `json:"namespace"`
			} `json:"metadata"`
		}
		if err := json.Unmarshal(raw, &o); err != nil {
			return nil, fmt.Errorf("hubclient: object %d: %w", i, err)
		}
		out = append(out, hubv1.ObjectStatus{APIVersion: o.APIVersion, Kind: o.Kind, Namespace: o.Metadata.Namespace, Name: o.Metadata.Name, State: state})
	}
	return out, nil
}

// Renew asks for a new certificate over the current one.
func (c *Client) Renew(ctx context.Context, vehicle string, csrPEM []byte) (hubv1.Certificate, error) {
	var cert hubv1.Certificate
	err := c.Do(ctx, "POST", "/v1/vehicles/"+url.PathEscape(vehicle)+"/certificate", hubv1.RenewRequest{CSR: string(csrPEM)}, &cert)
	return cert, err
}

// Root fetches trust root version n (TUF root.json).
func (c *Client) Root(ctx context.Context, n int64) ([]byte, error) {
	req, err := http.NewRequestWithContext(ctx, "GET", fmt.Sprintf("%s/v1/trust/root/%d.json", c.URL, n), nil)
	if err != nil {
		return nil, err
	}
	resp, err := c.send(req)
	if err != nil {
		return nil, fmt.Errorf("hubclient: root %d: %w", n, err)
	}
	defer resp.Body.Close()
	var raw json.RawMessage
	if err := answer(resp, &raw); err != nil {
		return nil, err
	}
	return raw, nil
}

// Do calls the API: in, if not nil, is sent as the JSON body, and a 2xx
// answer is decoded into out (if not nil); a 4xx or 5xx is an *Error.
func (c *Client) Do(ctx context.Context, method, path string, in, out any) error {
	var body io.Reader
	if in != nil {
		b, err := json.Marshal(in)
		if err != nil {
			return err
		}
		body = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, c.URL+path, body)
	if err != nil {
		return err
	}
	if in != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := c.send(req)
	if err != nil {
		return fmt.Errorf("hubclient: %s %s: %w", method, path, err)
	}
	defer resp.Body.Close()
	return answer(resp, out)
}

// send sends req with the Token, if any.
func (c *Client) send(req *http.Request) (*http.Response, error) {
	if c.Token != "" {
		req.Header.Set("Authorization", "Bearer "+c.Token)
	}
	return c.HTTP.Do(req)
}

// answer decodes a 2xx body into out, or returns the hub's error.
func answer(resp *http.Response, out any) error {
	b, err := io.ReadAll(io.LimitReader(resp.Body, 64<<20))
	if err != nil {
		return fmt.Errorf("hubclient: read answer: %w", err)
	}
	if resp.StatusCode/100 != 2 {
		e := &Error{Status: resp.StatusCode}
		if json.Unmarshal(b, &e.Body) != nil || e.Body.Message == "" {
			e.Body.Message = string(bytes.TrimSpace(b))
		}
		return e
	}
	if out == nil || len(b) == 0 {
		return nil
	}
	if err := json.Unmarshal(b, out); err != nil {
		return fmt.Errorf("hubclient: decode answer: %w", err)
	}
	return nil
}

// IsStatus reports whether err is the hub answering status.
func IsStatus(err error, status int) bool {
	var e *Error
	return errors.As(err, &e) && e.Status == status
}
