package xds_test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/misaki-io/misaki/internal/proxy/config"
	"github.com/misaki-io/misaki/internal/proxy/xds"
)

// The kept config reads back as it was saved.
func TestCacheRoundTrip(t *testing.T) {
	path := filepath.Join(t.TempDir(), "xds-routes.yaml")
	want := &xds.Snapshot{
		Versions: map[string]string{xds.TypeRoute: "v2", xds.TypeCluster: "v1"},
		Routes: []config.Route{{
			Name: "telemetry", Hosts: []string{"telemetry.mesh", "*.telemetry.mesh"}, Upstream: "https://gw.example.com:8443",
			Matches:      []config.Match{{PathPrefix: "/v1"}, {Path: "/health", Headers: []config.HeaderMatch{{Name: "x-probe", Value: "yes"}}}},
			TLS:          config.UpstreamTLS{CAFile: "/ca.pem"},
			Timeouts:     config.Timeouts{Connect: config.Duration(2 * time.Second), Request: config.Duration(90 * time.Second)},
			MaxBodyBytes: 1536, MaxUpstreamConnections: 8,
			Probe: config.Probe{Type: config.ProbeHTTP, Path: "/healthz"},
			Offline: config.Offline{Hold: config.Duration(30 * time.Second), Links: []string{"wifi"}, Metered: config.Deny, Spool: true,
				Priority: -5, Quota: config.SpoolQuota{Bytes: 64 << 20, Requests: 10}, Budget: config.Budget{Daily: 50 << 20},
				UnsafeMethods: []string{"DELETE"}, Batch: 16},
		}, {Name: "plain", Hosts: []string{"plain.mesh"}, Upstream: "http://10.0.0.1:80"}},
		Endpoints: map[string][]string{"telemetry": {"10.1.0.5:9000", "10.1.0.6:9000"}},
	}
	if err := xds.SaveCache(path, want); err != nil {
		t.Fatal(err)
	}
	got, err := xds.LoadCache(path)
	if err != nil {
		t.Fatal(err)
	}
	if d := cmp.Diff(want, got); d != "" {
		t.Errorf("LoadCache (-saved +read):\n%s", d)
	}
}

// A cache written before routes were written with their set fields only
// (every field, zeros too) reads as it did.
func TestCacheWithEveryField(t *testing.T) {
	got, err := xds.LoadCache("testdata/cache-full-fields.yaml")
	if err != nil {
		t.Fatal(err)
	}
	want := &xds.Snapshot{
		Versions: map[string]string{"Cluster": "v1"},
		Routes: []config.Route{{
			Name: "telemetry", Hosts: []string{"telemetry.mesh"}, Upstream: "http://telemetry.apps.svc:8080",
			Matches:  []config.Match{{PathPrefix: "/v1", Headers: []config.HeaderMatch{}}},
			Timeouts: config.Timeouts{Connect: config.Duration(2 * time.Second)},
			Offline: config.Offline{Hold: config.Duration(30 * time.Second), Links: []string{}, Spool: true,
				Quota: config.SpoolQuota{Bytes: 64 << 20}, UnsafeMethods: []string{"DELETE"}},
		}},
		Endpoints: map[string][]string{"telemetry": {"10.1.0.5:9000"}},
	}
	if d := cmp.Diff(want, got); d != "" {
		t.Errorf("LoadCache (-want +got):\n%s", d)
	}
}

// A cached route is decoded as strictly as the proxy's file; a missing
// file is no cache.
func TestCacheRefusesUnknownFields(t *testing.T) {
	path := filepath.Join(t.TempDir(), "xds-routes.yaml")
	if err := os.WriteFile(path, []byte("routes:\n  - {name: a, hosts: [a.mesh], upstream: \"http://x:1\", offline: {hodl: 3s}}\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := xds.LoadCache(path); err == nil || !strings.Contains(err.Error(), `routes[0]: offline.hodl: unknown field`) {
		t.Errorf("LoadCache = %v, want the unknown field named", err)
	}
	if s, err := xds.LoadCache(filepath.Join(t.TempDir(), "none.yaml")); s != nil || err != nil {
		t.Errorf("missing file: %v, %v", s, err)
	}
}
