// Package batch is the wire format of batch delivery between an edge proxy
// and a Misaki gateway: many spooled requests in one exchange.
//
// The edge POSTs to Path a multipart/mixed body whose parts are each one
// HTTP/1.1 request message (Content-Type: application/http;
// msgtype=request, RFC 9112 §10.1), as in the batch APIs of OData and
// Google. The gateway answers 200 with a multipart/mixed body of as many
// parts, in the same order, each one HTTP/1.1 response message
// (msgtype=response). Each item is handled as if it had come alone: its
// route, its Idempotency-Key, its answer.
//
// Why: on the gateway, an item costs a parse and a forward; a request of
// its own also costs an HTTP/2 stream, TLS records and a commit group of
// its own. bench/spoolbench BenchmarkDrain measures the difference.
package batch

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"mime"
	"mime/multipart"
	"net/http"
	"net/textproto"
	"strconv"
)

// Path is where a gateway takes batches.
const Path = "/.misaki/v1/batch"

// MaxItems is the most requests one batch may carry.
const MaxItems = 256

const (
	typeRequest  = "application/http; msgtype=request"
	typeResponse = "application/http; msgtype=response"
)

// Item is one request of a batch, or one answer.
type Item struct {
	Method, Target, Host string // request only; Target in origin form
	Status               int    // response only
	Header               http.Header
	Body                 []byte
}

// Write writes items as a multipart/mixed body to w and returns the body's
// Content-Type. Requests are written when items carry a Method, else
// responses.
func Write(w io.Writer, items []Item) (string, error) {
	mw := multipart.NewWriter(w)
	for _, it := range items {
		ct := typeResponse
		if it.Method != "" {
			ct = typeRequest
		}
		pw, err := mw.CreatePart(textproto.MIMEHeader{"Content-Type": {ct}})
		if err != nil {
			return "", err
		}
		bw := bufio.NewWriter(pw)
		if it.Method != "" {
			fmt.Fprintf(bw, "%s %s HTTP/1.1\r\nHost: %s\r\n", it.Method, it.Target, it.Host)
		} else {
			fmt.Fprintf(bw, "HTTP/1.1 %03d %s\r\n", it.Status, http.StatusText(it.Status))
		}
		h := it.Header.Clone()
		if h == nil {
			h = http.Header{}
		}
		for _, k := range []string{"Host", "Content-Length", "Transfer-Encoding", "Connection"} {
			h.Del(k)
		}
		h.Set("Content-Length", strconv.Itoa(len(it.Body)))
		if err := h.Write(bw); err != nil {
			return "", err
		}
		bw.WriteString("\r\n")
		bw.Write(it.Body)
		if err := bw.Flush(); err != nil {
			return "", err
		}
	}
	if err := mw.Close(); err != nil {
		return "", err
	}
	return "multipart/mixed; boundary=" + mw.Boundary(), nil
}

// ErrFormat means a body is not a batch.
var ErrFormat = errors.New("batch: not a multipart/mixed batch of application/http messages")

// Read reads a batch body with Content-Type contentType: requests when
// requests is true, else responses. It reads at most maxBytes of it.
func Read(body io.Reader, contentType string, requests bool, maxBytes int64) ([]Item, error) {
	mt, params, err := mime.ParseMediaType(contentType)
	if err != nil || mt != "multipart/mixed" || params["boundary"] == "" {
		return nil, ErrFormat
	}
	lr := &io.LimitedReader{R: body, N: maxBytes + 1}
	mr := multipart.NewReader(lr, params["boundary"])
	// Whatever breaks once the limit is reached is the size's fault.
	fail := func(err error) ([]Item, error) {
		if lr.N <= 0 {
			return nil, fmt.Errorf("batch: larger than %d bytes", maxBytes)
		}
		return nil, err
	}
	var items []Item
	for {
		p, err := mr.NextPart()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return fail(fmt.Errorf("%w: %w", ErrFormat, err))
		}
		if len(items) == MaxItems {
			return nil, fmt.Errorf("batch: more than %d items", MaxItems)
		}
		want := typeResponse
		if requests {
			want = typeRequest
		}
		if pt, pp, err := mime.ParseMediaType(p.Header.Get("Content-Type")); err != nil || pt+"; msgtype="+pp["msgtype"] != want {
			return nil, fmt.Errorf("%w: part %d is %q, want %q", ErrFormat, len(items), p.Header.Get("Content-Type"), want)
		}
		br := bufio.NewReader(p)
		var it Item
		if requests {
			req, err := http.ReadRequest(br)
			if err != nil {
				return fail(fmt.Errorf("batch: item %d: %w", len(items), err))
			}
			it = Item{Method: req.Method, Target: req.RequestURI, Host: req.Host, Header: req.Header}
			it.Body, err = io.ReadAll(req.Body)
			if err != nil {
				return fail(fmt.Errorf("batch: item %d: %w", len(items), err))
			}
		} else {
			resp, err := http.ReadResponse(br, nil)
			if err != nil {
				return fail(fmt.Errorf("batch: item %d: %w", len(items), err))
			}
			it = Item{Status: resp.StatusCode, Header: resp.Header}
			it.Body, err = io.ReadAll(resp.Body)
			if err != nil {
				return fail(fmt.Errorf("batch: item %d: %w", len(items), err))
			}
		}
		items = append(items, it)
	}
	if lr.N <= 0 {
		return fail(nil)
	}
	return items, nil
}

// Request turns a request item into a request with body.
func (it Item) Request() *http.Request {
	r, _ := http.NewRequest(it.Method, "http://"+it.Host+it.Target, bytes.NewReader(it.Body))
	if r == nil {
		return nil
	}
	r.Header = it.Header
	r.Host = it.Host
	r.RequestURI = it.Target
	r.ContentLength = int64(len(it.Body))
	if len(it.Body) == 0 {
		r.Body = http.NoBody
	}
	return r
}
