package cli

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"strings"
	"time"

	hubv1 "github.com/misaki-io/misaki/api/hub/v1"
)

// client calls the hub's API as one operator.
type client struct {
	base  string // https://host:port
	token string
	hc    *http.Client
}

// apiError is a hub's error answer (a hubv1.Error body).
type apiError struct {
	status int
	body   hubv1.Error
}

func (e *apiError) Error() string {
	msg := e.body.Message
	if msg == "" {
		msg = fmt.Sprintf("the hub answered %d %s", e.status, http.StatusText(e.status))
	}
	switch f := flagForField(e.body.Field); {
	case f != "":
		msg += " (field: " + e.body.Field + ", flag " + f + ")"
	case e.body.Field != "":
		msg += " (field: " + e.body.Field + ")"
	}
	switch e.status {
	case http.StatusUnauthorized:
		msg += " (check --token, or the token in the config file)"
	}
	return msg
}

// describe is err as the user reads it: the hub's message for a refusal,
// with hints for the usual first-run mistakes.
func describe(err error) string {
	msg := err.Error()
	var ua x509.UnknownAuthorityError
	var cv *tls.CertificateVerificationError
	if errors.As(err, &ua) || errors.As(err, &cv) {
		msg += " (is --ca-file, or caFile in the config file, the hub's CA? The hub writes it to <data-dir>/ca.crt)"
	}
	return msg
}

// hub is a client for the configured hub.
func (e *env) hub() (*client, error) {
	c, err := e.resolve()
	if err != nil {
		return nil, err
	}
	tr := http.DefaultTransport.(*http.Transport).Clone()
	if c.CAFile != "" {
		pem, err := os.ReadFile(c.CAFile)
		if err != nil {
			return nil, fmt.Errorf("CA file: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("CA file %s: no PEM certificate in it", c.CAFile)
		}
		tr.TLSClientConfig = &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}
	}
	return &client{base: c.Hub, token: c.Token, hc: &http.Client{Transport: tr, Timeout: e.g.timeout}}, nil
}

// connect parses the command line with fs (between min and max
// arguments, as parse checks) and answers the arguments and a client for
// the configured hub.
func (e *env) connect(fs *flag.FlagSet, args []string, min, max int) ([]string, *client, error) {
	pos, err := e.parse(fs, args, min, max)
	if err != nil {
		return nil, nil, err
	}
	c, err := e.hub()
	if err != nil {
		return nil, nil, err
	}
	return pos, c, nil
}

// do sends one request: in (if not nil) as the JSON body, and the answer
// decoded into out (if not nil). A 4xx or 5xx answer is an *apiError.
func (c *client) do(ctx context.Context, method, path string, q url.Values, in, out any) error {
	u := c.base + path
	if len(q) > 0 {
		u += "?" + q.Encode()
	}
	var body io.Reader
	if in != nil {
		b, err := json.Marshal(in)
		if err != nil {
			return fmt.Errorf("encode request: %w", err)
		}
		body = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, u, body)
	if err != nil {
		return fmt.Errorf("%s %s: %w", method, u, err)
	}
	if in != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	req.Header.Set("Accept", "application/json")
	req.Header.Set("User-Agent", "misaki/"+version())
	if c.token != "" {
		req.Header.Set("Authorization", "Bearer "+c.token)
	}
	resp, err := c.hc.Do(req)
	if err != nil {
		return fmt.Errorf("hub %s: %w", c.base, unwrapURLError(err))
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 64<<20))
	if err != nil {
		return fmt.Errorf("%s %s: read answer: %w", method, path, err)
	}
	if resp.StatusCode >= 400 {
		ae := &apiError{status: resp.StatusCode}
		if json.Unmarshal(b, &ae.body) != nil || ae.body.Message == "" {
			ae.body = hubv1.Error{Code: resp.StatusCode, Message: fmt.Sprintf("%s %s: the hub answered %s: %s",
				method, path, resp.Status, firstLine(string(b)))}
		}
		return ae
	}
	if out == nil || resp.StatusCode == http.StatusNoContent {
		return nil
	}
	if err := json.Unmarshal(b, out); err != nil {
		return fmt.Errorf("%s %s: decode answer: %w", method, path, err)
	}
	return nil
}

// unwrapURLError drops url.Error's "Get \"https://...\":" prefix, which
// repeats what the caller says.
func unwrapURLError(err error) error {
	var ue *url.Error
	if errors.As(err, &ue) {
		if errors.Is(err, context.DeadlineExceeded) || ue.Timeout() {
			return fmt.Errorf("no answer in time (--request-timeout): %w", ue.Err)
		}
		return ue.Err
	}
	return err
}

func firstLine(s string) string {
	s = strings.TrimSpace(s)
	if i := strings.IndexByte(s, '\n'); i >= 0 {
		s = s[:i]
	}
	if len(s) > 200 {
		s = s[:200] + "…"
	}
	return s
}

func isStatus(err error, code int) bool {
	var ae *apiError
	return errors.As(err, &ae) && ae.status == code
}

func (c *client) get(ctx context.Context, path string, q url.Values, out any) error {
	return c.do(ctx, http.MethodGet, path, q, nil, out)
}

// vehicle reads vehicle id's digital twin (the vehicle and its halves).
func (c *client) vehicle(ctx context.Context, id string) (hubv1.Twin, error) {
	var tw hubv1.Twin
	err := c.get(ctx, "/v1/vehicles/"+pathEscape(id), nil, &tw)
	return tw, err
}

// deployment reads deployment name.
func (c *client) deployment(ctx context.Context, name string) (hubv1.Deployment, error) {
	var d hubv1.Deployment
	err := c.get(ctx, "/v1/deployments/"+pathEscape(name), nil, &d)
	return d, err
}

// retryOnConflict calls f, up to tries times in all, while it fails with
// 409 Conflict: f read an object and wrote it back naming the version it
// read, and someone changed the object in between; f reads it again.
func retryOnConflict(tries int, f func() error) error {
	for try := 1; ; try++ {
		err := f()
		if try < tries && isStatus(err, http.StatusConflict) {
			continue
		}
		return err
	}
}

// listAll follows a list's next cursors; limit bounds the items (0: all).
func listAll[T any](ctx context.Context, c *client, path string, q url.Values, pageSize, limit int) (hubv1.List[T], error) {
	all := hubv1.List[T]{Items: []T{}}
	if q == nil {
		q = url.Values{}
	}
	for {
		size := pageSize
		if limit > 0 {
			size = min(size, limit-len(all.Items))
		}
		q.Set("limit", fmt.Sprint(size))
		var page hubv1.List[T]
		if err := c.get(ctx, path, q, &page); err != nil {
			return all, err
		}
		all.Items = append(all.Items, page.Items...)
		all.Next = page.Next
		if page.Next == "" || (limit > 0 && len(all.Items) >= limit) {
			return all, nil
		}
		q.Set("after", page.Next)
	}
}

// pathEscape escapes one path segment.
func pathEscape(s string) string { return url.PathEscape(s) }

// since is how long ago t was, kubectl style ("5m", "3d"); "<unknown>"
// for the zero time.
func (e *env) since(t time.Time) string {
	if t.IsZero() {
		return "<unknown>"
	}
	return shortDuration(e.now().Sub(t))
}
