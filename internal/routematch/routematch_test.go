package routematch

import (
	"net/http"
	"testing"

	"github.com/misaki-io/misaki/internal/proxy/config"
)

func TestMatch(t *testing.T) {
	tb := NewTable([]config.Route{
		{Name: "a", Hosts: []string{"api.mesh", "*.svc.mesh"}},
		{Name: "b", Hosts: []string{"*.deep.svc.mesh", "x.svc.mesh"}},
	})
	for host, want := range map[string]int{
		"api.mesh": 0, "API.Mesh": 0, "api.mesh:8080": 0, "api.mesh.": 0,
		"foo.svc.mesh": 0, "x.svc.mesh": 1, "a.deep.svc.mesh": 1,
		"svc.mesh": -1, ".svc.mesh": -1, "other": -1, "": -1, "[::1]:80": -1,
	} {
		if got := tb.Match(host, "/", nil); got != want {
			t.Errorf("Match(%q) = %d, want %d", host, got, want)
		}
	}
}

func TestMatchPathAndHeaders(t *testing.T) {
	tb := NewTable([]config.Route{
		{Name: "api", Hosts: []string{"app.mesh"}, Matches: []config.Match{
			{PathPrefix: "/api"},
			{Path: "/health", Headers: []config.HeaderMatch{{Name: "X-Probe", Value: "yes"}}},
		}},
		{Name: "rest", Hosts: []string{"app.mesh"}},
		{Name: "wild", Hosts: []string{"*.mesh"}, Matches: []config.Match{{PathPrefix: "/w/"}}},
	})
	probe := http.Header{"X-Probe": {"no", "yes"}}
	for _, c := range []struct {
		host, path string
		h          http.Header
		want       int
	}{
		{"app.mesh", "/api", nil, 0},
		{"app.mesh", "/api/v1/x", nil, 0},
		{"app.mesh", "/api?q=1", nil, 0},
		{"app.mesh", "/apix", nil, 1},
		{"app.mesh", "/health", nil, 1},
		{"app.mesh", "/health", probe, 0},
		{"app.mesh", "/health/x", probe, 1},
		{"b.mesh", "/w/a", nil, 2},
		{"b.mesh", "/w", nil, 2},
		{"b.mesh", "/x", nil, -1},
	} {
		if got := tb.Match(c.host, c.path, c.h); got != c.want {
			t.Errorf("Match(%q, %q, %v) = %d, want %d", c.host, c.path, c.h, got, c.want)
		}
	}
}

func TestStripPort(t *testing.T) {
	for in, want := range map[string]string{
		"api.mesh": "api.mesh", "api.mesh:8080": "api.mesh", "api.mesh.:80": "api.mesh.",
		"[::1]": "[::1]", "[::1]:80": "::1", "10.0.0.1:443": "10.0.0.1",
		"a:b:c": "a:b:c", // not host:port: left for the lookup to miss
		"":      "",
	} {
		if got := stripPort(in); got != want {
			t.Errorf("stripPort(%q) = %q, want %q", in, got, want)
		}
	}
	if n := testing.AllocsPerRun(100, func() { stripPort("api.mesh") }); n != 0 {
		t.Errorf("stripPort without a port allocates %v times", n)
	}
}

// ServesHost is Match's host lookup without the path and headers: a host
// some route serves, however the request is cased, ported or dotted.
func TestServesHost(t *testing.T) {
	tb := NewTable([]config.Route{
		{Name: "a", Hosts: []string{"api.cloud.misaki", "*.svc.misaki"}, Matches: []config.Match{{PathPrefix: "/only"}}},
	})
	for host, want := range map[string]bool{
		"api.cloud.misaki": true, "API.Cloud.Misaki:443": true, "api.cloud.misaki.": true,
		"x.svc.misaki": true, "a.b.svc.misaki:80": true,
		"svc.misaki": false, "other.cloud.misaki": false, "api": false, "": false,
	} {
		if got := tb.ServesHost(host); got != want {
			t.Errorf("ServesHost(%q) = %v, want %v", host, got, want)
		}
	}
}
