package main

import (
	"crypto/tls"
	"crypto/x509"
	"io"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/misaki-io/misaki/bench/internal/harness"
	"github.com/misaki-io/misaki/internal/hubclient"
)

// The benchmark end to end with 200 vehicles: every configuration
// PostgreSQL allows here (all three in CI), every vehicle fetches,
// verifies and reports both rollouts, and the counters add up: one
// render for the changed values, a revision per vehicle half.
func TestSmoke(t *testing.T) {
	if testing.Short() {
		t.Skip("builds misaki-hub and runs it with a simulated fleet")
	}
	configs := []string{"sqlite"}
	if harness.HavePostgres(t) {
		configs = allConfigs
	}
	vehicles := 200
	if raceBuild() {
		// The hub is built with -race too (buildHub), and both run several
		// times slower: fewer vehicles, and the two-replica configuration
		// stands for PostgreSQL.
		vehicles = 50
		if len(configs) > 1 {
			configs = []string{"sqlite", "postgres-2"}
		}
	}
	rep := program.Test(t, []string{"-vehicles", strconv.Itoa(vehicles), "-configs", strings.Join(configs, ","), "-settle", "200ms", "-timeout", "2m"})
	rs := rep.results
	if len(rs) != len(configs) {
		t.Fatalf("%d results for %d configurations", len(rs), len(configs))
	}
	for _, r := range rs {
		var misses, issuedVeh, issuedCld float64
		issuers := 0
		for _, h := range r.hubs {
			misses += h.misses
			issuedVeh += h.issuedVeh
			issuedCld += h.issuedCld
			if h.issuer {
				issuers++
			}
		}
		switch {
		case len(r.wake) != vehicles || len(r.reported) != vehicles || r.verified < int64(vehicles):
			t.Errorf("%s: %d woken, %d reported, %d verified; want %d", r.name, len(r.wake), len(r.reported), r.verified, vehicles)
		case r.errors != 0:
			t.Errorf("%s: %d agent errors, the last: %v", r.name, r.errors, r.lastErr)
		case misses != 1:
			t.Errorf("%s: %v render cache misses for one change of values, want 1", r.name, misses)
		case issuedVeh != float64(vehicles) || issuedCld != float64(vehicles):
			t.Errorf("%s: %v + %v revisions issued, want %d + %d", r.name, issuedVeh, issuedCld, vehicles, vehicles)
		case issuers != 1:
			t.Errorf("%s: %d replicas issued revisions, want 1 (the lease holder)", r.name, issuers)
		case r.total <= 0 || r.total > time.Minute:
			t.Errorf("%s: total %v", r.name, r.total)
		}
	}
}

// The agents speak HTTP/1.1, each on a connection of its own, even to a
// server that offers HTTP/2 (hubclient.New's client takes it): the
// published figures were measured so.
func TestAgentClientHTTP1(t *testing.T) {
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, r.Proto)
	}))
	srv.EnableHTTP2 = true
	srv.StartTLS()
	defer srv.Close()
	roots := x509.NewCertPool()
	roots.AddCert(srv.Certificate())
	for _, tc := range []struct {
		name string
		c    *hubclient.Client
		want string
	}{
		{"agent", agentClient(srv.URL, roots, tls.Certificate{}), "HTTP/1.1"},
		{"hubclient.New", hubclient.New(srv.URL, roots, nil), "HTTP/2.0"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			defer tc.c.HTTP.CloseIdleConnections()
			resp, err := tc.c.HTTP.Get(srv.URL)
			if err != nil {
				t.Fatal(err)
			}
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if string(b) != tc.want {
				t.Errorf("%s, want %s", b, tc.want)
			}
		})
	}
}
