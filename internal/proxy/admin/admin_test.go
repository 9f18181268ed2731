package admin

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	proxyv1 "github.com/misaki-io/misaki/api/proxy/v1"
	"github.com/misaki-io/misaki/internal/clock"
	"github.com/misaki-io/misaki/internal/proxy/config"
	"github.com/misaki-io/misaki/internal/proxy/link"
)

var quiet = slog.New(slog.NewTextHandler(io.Discard, nil))

// newHandler is the admin API over a real link monitor (links driven by
// the API alone) and a spool that knows one queued and one finished
// request.
func newHandler(t testing.TB) http.Handler {
	t.Helper()
	links := link.NewMonitor([]config.Link{{Name: "wlan", Class: "wifi"}, {Name: "modem", Class: "cellular", Metered: true}},
		time.Hour, quiet, clock.Real{}, nil)
	return Handler(Options{
		Links:    links,
		Routes:   func() []proxyv1.Route { return []proxyv1.Route{{Name: "telemetry", Hosts: []string{"t.mesh"}}} },
		Ready:    func() error { return nil },
		Gatherer: prometheus.NewRegistry(),
		Log:      quiet,
		Spool:    testSpool{},
	})
}

// testSpool knows the requests "queued" and "done".
type testSpool struct{}

func (testSpool) Status() proxyv1.Spool {
	return proxyv1.Spool{Enabled: true, Routes: []proxyv1.SpoolRoute{}}
}

func (testSpool) Request(id string) (proxyv1.Request, error) {
	switch id {
	case "queued", "done":
		return proxyv1.Request{ID: id}, nil
	}
	return proxyv1.Request{}, fmt.Errorf("request %s: %w", id, ErrNotFound)
}

func (testSpool) Cancel(id string) error {
	switch id {
	case "queued":
		return nil
	case "done":
		return fmt.Errorf("already delivered: %w", ErrConflict)
	}
	return fmt.Errorf("request %s: %w", id, ErrNotFound)
}

func serve(h http.Handler, method, path string, body []byte) *httptest.ResponseRecorder {
	r := &http.Request{Method: method, URL: &url.URL{Path: path}, Header: http.Header{}, Host: "admin",
		Body: io.NopCloser(bytes.NewReader(body)), ContentLength: int64(len(body)), Proto: "HTTP/1.1", ProtoMajor: 1, ProtoMinor: 1}
	w := httptest.NewRecorder()
	h.ServeHTTP(w, r)
	return w
}

func TestPutLinkBody(t *testing.T) {
	h := newHandler(t)
	for _, tc := range []struct {
		name, body string
		want       int
		msg        string
	}{
		{"one object", `{"state":"down"}`, 200, ""},
		{"white space after", "{\"state\":\"up\",\"metered\":true}\n \t", 200, ""},
		{"trailing data", `{"state":"down"} x`, 400, "after the JSON object"},
		{"two objects", `{"state":"down"}{"state":"up"}`, 400, "trailing data"},
		{"trailing bracket", `{"state":"down"}]`, 400, "after the JSON object"},
		{"unknown field", `{"state":"down","speed":9}`, 400, "unknown field"},
		{"empty", ``, 400, "empty body"},
		{"not JSON", `state=down`, 400, "invalid character"},
		{"bad state", `{"state":"sideways"}`, 400, "sideways"},
		{"over the limit", `{"state":"down"}` + strings.Repeat(" ", MaxBodyBytes), 413, "larger than 4096 bytes"},
		{"over the limit inside the object", `{"state":"` + strings.Repeat("d", MaxBodyBytes) + `"}`, 413, "larger than 4096 bytes"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			w := serve(h, http.MethodPut, "/v1/links/wlan", []byte(tc.body))
			var got map[string]any
			if err := json.Unmarshal(w.Body.Bytes(), &got); err != nil {
				t.Fatalf("%d, body not JSON: %q", w.Code, w.Body)
			}
			if w.Code != tc.want || (tc.msg != "" && !strings.Contains(fmt.Sprint(got["error"]), tc.msg)) {
				t.Fatalf("%d %q, want %d with %q", w.Code, w.Body, tc.want, tc.msg)
			}
		})
	}
	if w := serve(h, http.MethodPut, "/v1/links/nope", []byte(`{"state":"down"}`)); w.Code != 404 {
		t.Fatalf("unknown link: %d %q", w.Code, w.Body)
	}
}

// checkAnswer holds for every answer of the admin API: a known status, and
// a JSON body unless it is a redirect, 204, 405 or a probe/metrics answer.
func checkAnswer(t *testing.T, w *httptest.ResponseRecorder, path string, allowed ...int) {
	t.Helper()
	ok := false
	for _, c := range allowed {
		ok = ok || w.Code == c
	}
	if !ok {
		t.Fatalf("%s: status %d %q", path, w.Code, w.Body)
	}
	if w.Code >= 500 {
		t.Fatalf("%s: status %d %q", path, w.Code, w.Body)
	}
	if strings.HasPrefix(w.Header().Get("Content-Type"), "application/json") && !json.Valid(w.Body.Bytes()) {
		t.Fatalf("%s: invalid JSON %q", path, w.Body)
	}
}

func FuzzPutLink(f *testing.F) {
	for _, s := range []string{`{"state":"down"}`, `{"state":"auto","roaming":false}`, `{"state":"down"} x`, `{}`, `[]`, `null`, `{"state":"up"}{}`, "\x00", `{"metered":"yes"}`} {
		f.Add("wlan", []byte(s))
	}
	f.Add("modem", []byte(`{"state":"up","metered":false}`))
	f.Add("../x", []byte(`{"state":"up"}`))
	h := newHandler(f)
	f.Fuzz(func(t *testing.T, name string, body []byte) {
		path := "/v1/links/" + name
		w := serve(h, http.MethodPut, path, body)
		checkAnswer(t, w, path, 200, 301, 307, 400, 404, 405, 413)
		if w.Code == 200 {
			// Only one JSON object with known fields, and nothing after it.
			var ov link.Override
			dec := json.NewDecoder(bytes.NewReader(body))
			dec.DisallowUnknownFields()
			if err := dec.Decode(&ov); err != nil || dec.More() || len(body) > MaxBodyBytes {
				t.Fatalf("accepted %q (%v)", body, err)
			}
			if _, err := dec.Token(); !errors.Is(err, io.EOF) {
				t.Fatalf("accepted %q with trailing data", body)
			}
		}
	})
}

func FuzzRequests(f *testing.F) {
	for _, id := range []string{"queued", "done", "nope", "", "a/b", "%00", strings.Repeat("x", 300)} {
		f.Add(http.MethodGet, id)
		f.Add(http.MethodDelete, id)
	}
	f.Add(http.MethodPost, "queued")
	h := newHandler(f)
	f.Fuzz(func(t *testing.T, method, id string) {
		if method == "" || strings.ContainsAny(method, " \t\r\n") {
			return // not a method a server would parse
		}
		path := "/v1/requests/" + id
		w := serve(h, method, path, nil)
		checkAnswer(t, w, path, 200, 204, 301, 307, 404, 405, 409)
	})
}

func FuzzGet(f *testing.F) {
	for _, p := range []string{"/healthz", "/readyz", "/metrics", "/v1/links", "/v1/routes", "/v1/spool", "/v1/requests/queued", "/v1", "/", "//v1/links", "/v1/links/../routes"} {
		f.Add(p)
	}
	h := newHandler(f)
	f.Fuzz(func(t *testing.T, path string) {
		if !strings.HasPrefix(path, "/") {
			path = "/" + path
		}
		w := serve(h, http.MethodGet, path, nil)
		checkAnswer(t, w, path, 200, 301, 307, 404, 405)
	})
}
