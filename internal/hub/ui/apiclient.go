package ui

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"

	hubv1 "github.com/misaki-io/misaki/api/hub/v1"
)

// apiClient calls the hub's API in process: a request to its handler, as
// if it had come over the network, with an operator token.
type apiClient struct {
	h http.Handler
	// written is called after a write the API accepted (the broker's
	// poke, so pages showing it refresh).
	written func()
}

// apiError is an API answer of 4xx or 5xx.
type apiError struct {
	Status int
	Body   hubv1.Error
}

func (e *apiError) Error() string {
	if e.Body.Field != "" {
		return fmt.Sprintf("%s (field %s)", e.Body.Message, e.Body.Field)
	}
	return e.Body.Message
}

// status is err's HTTP status: 200 for none, the API's, or 500.
func status(err error) int {
	var e *apiError
	switch {
	case err == nil:
		return http.StatusOK
	case errors.As(err, &e):
		return e.Status
	}
	return http.StatusInternalServerError
}

// call sends method path (with query q, body in as JSON) with token and
// decodes a 2xx answer into out (if not nil).
func (c apiClient) call(ctx context.Context, token, method, path string, q url.Values, in, out any) error {
	u := path
	if len(q) > 0 {
		u += "?" + q.Encode()
	}
	var body *bytes.Reader
	if in != nil {
		b, err := json.Marshal(in)
		if err != nil {
			return err
		}
		body = bytes.NewReader(b)
	} else {
		body = bytes.NewReader(nil)
	}
	req, err := http.NewRequestWithContext(ctx, method, u, body)
	if err != nil {
		return err
	}
	req.RemoteAddr = "ui"
	req.Header.Set("Authorization", "Bearer "+token)
	if in != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	rec := &recorder{header: http.Header{}}
	c.h.ServeHTTP(rec, req)
	if err := ctx.Err(); err != nil {
		return err
	}
	if rec.code == 0 {
		rec.code = http.StatusOK
	}
	if rec.code >= 300 {
		e := &apiError{Status: rec.code}
		if json.Unmarshal(rec.body.Bytes(), &e.Body) != nil || e.Body.Message == "" {
			e.Body.Message = fmt.Sprintf("%s %s: %d %s", method, path, rec.code, http.StatusText(rec.code))
		}
		return e
	}
	if method != http.MethodGet && c.written != nil {
		c.written()
	}
	if out != nil && rec.body.Len() > 0 {
		if err := json.Unmarshal(rec.body.Bytes(), out); err != nil {
			return fmt.Errorf("ui: %s %s: decode the answer: %w", method, path, err)
		}
	}
	return nil
}

// recorder is the http.ResponseWriter an in-process call writes to.
type recorder struct {
	header http.Header
	code   int
	body   bytes.Buffer
}

func (r *recorder) Header() http.Header { return r.header }

func (r *recorder) WriteHeader(code int) {
	if r.code == 0 {
		r.code = code
	}
}

func (r *recorder) Write(b []byte) (int, error) {
	if r.code == 0 {
		r.code = http.StatusOK
	}
	return r.body.Write(b)
}
