package gate

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/misaki-io/misaki/internal/clock"
	"github.com/misaki-io/misaki/internal/depstest"
)

var t0 = time.Date(2026, 12, 4, 21, 0, 0, 0, time.UTC)

func TestFile(t *testing.T) {
	for _, tc := range []struct {
		name    string
		content string
		mtime   time.Time
		maxAge  time.Duration
		want    map[string]any
		err     string
		stale   bool
	}{
		{name: "an object", content: `{"parked": true, "battery": 31, "gear": "P"}`, mtime: t0, maxAge: time.Minute,
			want: map[string]any{"parked": true, "battery": json.Number("31"), "gear": "P"}},
		{name: "updated, fresh", content: `{"parked": false, "updated": "2026-12-04T20:59:30Z"}`, mtime: t0.Add(-time.Hour), maxAge: time.Minute,
			want: map[string]any{"parked": false, "updated": "2026-12-04T20:59:30Z"}},
		{name: "updated, stale (the file is new)", content: `{"parked": true, "updated": "2026-12-04T20:55:00+00:00"}`, mtime: t0, maxAge: time.Minute,
			err: "vehicle state is stale (updated 2026-12-04T20:55:00Z, 5m0s ago; max age 1m0s)", stale: true},
		{name: "mtime, stale", content: `{"parked": true}`, mtime: t0.Add(-3 * time.Minute), maxAge: 2 * time.Minute,
			err: "vehicle state is stale (updated 2026-12-04T20:57:00Z, 3m0s ago; max age 2m0s)", stale: true},
		{name: "no max age", content: `{"parked": true}`, mtime: t0.Add(-300 * time.Hour),
			want: map[string]any{"parked": true}},
		{name: "empty file (a write in progress)", content: "", mtime: t0, err: "not JSON: EOF"},
		{name: "not JSON", content: `parked: true`, mtime: t0, err: "not JSON"},
		{name: "an array", content: `[{"parked": true}]`, mtime: t0, err: "not a JSON object but an array"},
		{name: "two objects", content: `{"parked": true} {"parked": false}`, mtime: t0, err: "not one JSON object"},
		{name: "bad updated", content: `{"parked": true, "updated": "yesterday"}`, mtime: t0, maxAge: time.Minute,
			err: "updated yesterday is not an RFC 3339 time"},
		{name: "updated not a string", content: `{"updated": 17}`, mtime: t0, err: "updated 17 is not an RFC 3339 time"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := filepath.Join(t.TempDir(), "state.json")
			if err := os.WriteFile(p, []byte(tc.content), 0o600); err != nil {
				t.Fatal(err)
			}
			if err := os.Chtimes(p, tc.mtime, tc.mtime); err != nil {
				t.Fatal(err)
			}
			f := &File{Path: p, MaxAge: tc.maxAge, Clock: clock.NewFake(t0)}
			st, err := f.Read(context.Background())
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("Read: %+v, %v; want an error saying %q", st, err, tc.err)
				}
				if errors.Is(err, ErrStale) != tc.stale {
					t.Errorf("errors.Is(%v, ErrStale) = %v", err, !tc.stale)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(tc.want, st.Values); diff != "" {
				t.Errorf("values (-want +got):\n%s", diff)
			}
		})
	}
	t.Run("missing", func(t *testing.T) {
		p := filepath.Join(t.TempDir(), "none.json")
		_, err := (&File{Path: p}).Read(context.Background())
		if !errors.Is(err, os.ErrNotExist) || !strings.Contains(err.Error(), p) {
			t.Errorf("Read of a missing file: %v; want it to name %s", err, p)
		}
	})
}

// stateServer serves a state document on 127.0.0.1 as the vehicle would.
func stateServer(t *testing.T, status int, body string) string {
	t.Helper()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodGet || r.URL.Path != "/state" {
			http.Error(w, "no", http.StatusNotFound)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(status)
		w.Write([]byte(body))
	}))
	t.Cleanup(srv.Close)
	return srv.URL + "/state"
}

func TestHTTP(t *testing.T) {
	for _, tc := range []struct {
		name   string
		status int
		body   string
		want   map[string]any
		err    string
		stale  bool
	}{
		{name: "an object", status: 200, body: `{"ignition": "off", "speed": 0}`, want: map[string]any{"ignition": "off", "speed": json.Number("0")}},
		{name: "updated, fresh", status: 200, body: `{"parked": true, "updated": "2026-12-04T20:58:30.5Z"}`,
			want: map[string]any{"parked": true, "updated": "2026-12-04T20:58:30.5Z"}},
		{name: "updated, stale", status: 200, body: `{"parked": true, "updated": "2026-12-04T22:10:00+02:00"}`,
			err: "vehicle state is stale (updated 2026-12-04T20:10:00Z, 50m0s ago; max age 2m0s)", stale: true},
		{name: "an error status", status: 503, body: `{"parked": true}`, err: "503 Service Unavailable"},
		{name: "not an object", status: 200, body: `"parked"`, err: "not a JSON object but string"},
		{name: "not JSON", status: 200, body: `<html>`, err: "not JSON"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			url := stateServer(t, tc.status, tc.body)
			src, err := Open(url, 2*time.Minute, clock.NewFake(t0))
			if err != nil {
				t.Fatal(err)
			}
			st, err := src.Read(context.Background())
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("Read: %+v, %v; want an error saying %q", st, err, tc.err)
				}
				if errors.Is(err, ErrStale) != tc.stale {
					t.Errorf("errors.Is(%v, ErrStale) = %v", err, !tc.stale)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(tc.want, st.Values); diff != "" {
				t.Errorf("values (-want +got):\n%s", diff)
			}
		})
	}
	t.Run("unreachable", func(t *testing.T) {
		url := stateServer(t, 200, `{}`)
		src, _ := Open(url, 0, nil)
		ctx, cancel := context.WithCancel(context.Background())
		cancel()
		if _, err := src.Read(ctx); err == nil || !strings.HasPrefix(err.Error(), "vehicle state: ") {
			t.Errorf("Read with the context ended: %v", err)
		}
	})
	t.Run("the gates on it", func(t *testing.T) {
		src, _ := Open(stateServer(t, 200, `{"ignition": "off", "battery": 22}`), 0, nil)
		st, err := src.Read(context.Background())
		rs := EvalAll([]string{"ignition=off", "battery>=30"}, st, err, t0)
		want := []Result{{Gate: "ignition=off", Holds: true, Reason: "ignition is off"}, {Gate: "battery>=30", Reason: "battery is 22, needs >=30"}}
		if diff := cmp.Diff(want, rs); diff != "" {
			t.Errorf("(-want +got):\n%s", diff)
		}
	})
}

func TestOpen(t *testing.T) {
	for _, tc := range []struct {
		name, spec string
		want       Source
		err        string
	}{
		{"none", "", nil, ""},
		{"file", "/run/vehicle/state.json", &File{Path: "/run/vehicle/state.json", MaxAge: time.Minute}, ""},
		{"relative file", "state.json", &File{Path: "state.json", MaxAge: time.Minute}, ""},
		{"http", "http://127.0.0.1:8080/state", &HTTP{URL: "http://127.0.0.1:8080/state", MaxAge: time.Minute}, ""},
		{"https", "https://vehicle.local/state", &HTTP{URL: "https://vehicle.local/state", MaxAge: time.Minute}, ""},
		{"other scheme", "ftp://vehicle/state", nil, "want an http:// or https:// URL, or a file path"},
		{"no host", "http:///state", nil, "has no host"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := Open(tc.spec, time.Minute, nil)
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("Open(%q) = %v, %v; want an error saying %q", tc.spec, got, err, tc.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(tc.want, got); diff != "" {
				t.Errorf("Open(%q) (-want +got):\n%s", tc.spec, diff)
			}
		})
	}
	if _, err := Open("state.json", -time.Second, nil); err == nil {
		t.Error("a negative max age was taken")
	}
}

// TestImports: the hub imports this package to check gates, and the
// package is the vehicle agent's too: no Kubernetes, Helm or SQL.
func TestImports(t *testing.T) {
	for _, p := range depstest.Of(t) {
		for _, banned := range []string{"k8s.io/", "sigs.k8s.io/", "helm.sh/", "database/sql", "github.com/misaki-io/misaki/internal/hub"} {
			if strings.HasPrefix(p, banned) {
				t.Errorf("imports %s", p)
			}
		}
	}
}
