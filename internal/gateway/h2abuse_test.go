package gateway

import (
	"context"
	"crypto/tls"
	"flag"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/misaki-io/misaki/internal/h2guard/h2abuse"
	"github.com/misaki-io/misaki/internal/proxy/config"
)

var h2abuseMeasure = flag.Duration("h2abuse.measure", 0, "TestH2AbuseMeasure: run each HTTP/2 abuse for this long and log what reached the service")

// vehicle is the TLS a vehicle's edge proxy connects with.
func (p *pki) vehicle() *tls.Config {
	return &tls.Config{RootCAs: p.pool, Certificates: []tls.Certificate{p.clientCert}, ServerName: "127.0.0.1"}
}

// TestH2Abuse: the gateway, on the internet, ends each HTTP/2 attack
// from a vehicle as the edge does (internal/proxy/server's TestH2Abuse).

func TestH2Abuse(t *testing.T) {
	for _, a := range h2abuse.Cases {
		t.Run(a.Name, func(t *testing.T) {
			var n atomic.Int64
			svc := newService(t, func(w http.ResponseWriter, r *http.Request) { n.Add(1); w.Write([]byte("ok")) })
			p := newPKI(t)
			g := startGateway(t, p, svc.URL, t.TempDir())
			res, err := h2abuse.Run(context.Background(), h2abuse.Target{Addr: g.Addr(), TLS: p.vehicle(), Authority: "telemetry.cloud.misaki", Path: "/x"},
				a.Attack, h2abuse.Options{Units: 20000, Duration: 5 * time.Second})
			if err != nil {
				t.Fatal(err)
			}
			if !a.EndedBy(res) {
				t.Errorf("%s; want GOAWAY %v over limits.http2.%v", res, a.Code, a.Limits)
			}
			if max := int64(config.DefaultHTTP2MaxStreams*4 + 500); n.Load() > max {
				t.Errorf("%d requests reached the service, want at most %d", n.Load(), max)
			}
			if len(a.Limits) > 0 {
				want := fmt.Sprintf(`misaki_gateway_http2_limit_closes_total{limit=%q} 1`, res.Limit())
				if m := g.metrics(t); !strings.Contains(m, want) {
					t.Errorf("/metrics lacks %s", want)
				}
			}
		})
	}
}

// TestH2AbuseMeasure logs what each attack gets through in a given time;
// docs/gateway.md has its figures.
func TestH2AbuseMeasure(t *testing.T) {
	if *h2abuseMeasure == 0 {
		t.Skip("-h2abuse.measure not set")
	}
	for _, a := range h2abuse.Cases {
		var n atomic.Int64
		svc := newService(t, func(w http.ResponseWriter, r *http.Request) { n.Add(1); w.Write([]byte("ok")) })
		p := newPKI(t)
		g := startGateway(t, p, svc.URL, t.TempDir())
		res, err := h2abuse.Run(context.Background(), h2abuse.Target{Addr: g.Addr(), TLS: p.vehicle(), Authority: "telemetry.cloud.misaki", Path: "/x"},
			a.Attack, h2abuse.Options{Units: 1 << 30, Duration: *h2abuseMeasure})
		if err != nil {
			t.Fatal(err)
		}
		g.stop()
		t.Logf("%-36s %s; service got %d (%.0f/s)", a.Name, res, n.Load(), float64(n.Load())/res.Elapsed.Seconds())
	}
}

// TestH2LegitTraffic: vehicles on h2 and on HTTP/1.1 are served as before
// the limits, with their identity, and a Go client's 1,000 requests at
// once, 400 of them cancelled while the service holds them, end no
// connection.
func TestH2LegitTraffic(t *testing.T) {
	const slow = 400
	arrived := make(chan struct{}, slow)
	svc := newService(t, func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/slow" {
			arrived <- struct{}{}
			<-r.Context().Done()
			return
		}
		fmt.Fprintf(w, "%s %s", r.Proto, r.Header.Get("Misaki-Vehicle-Id"))
	})
	p := newPKI(t)
	g := startGateway(t, p, svc.URL, t.TempDir())
	get := func(c *http.Client, ctx context.Context, path string) (string, error) {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "https://"+g.Addr()+path, nil)
		req.Host = "telemetry.cloud.misaki"
		resp, err := c.Do(req)
		if err != nil {
			return "", err
		}
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		return resp.Proto + " " + string(b), err
	}
	h2 := &http.Client{Transport: &http.Transport{TLSClientConfig: p.vehicle(), ForceAttemptHTTP2: true}}
	h1 := &http.Client{Transport: &http.Transport{TLSClientConfig: p.vehicle(), TLSNextProto: map[string]func(string, *tls.Conn) http.RoundTripper{}}}
	for _, c := range []struct {
		client *http.Client
		want   string
	}{{h2, "HTTP/2.0 HTTP/1.1 spiffe://misaki/vehicle/VIN123"}, {h1, "HTTP/1.1 HTTP/1.1 spiffe://misaki/vehicle/VIN123"}} {
		if got, err := get(c.client, context.Background(), "/x"); got != c.want || err != nil {
			t.Errorf("got %q, %v; want %q", got, err, c.want)
		}
	}

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var wg sync.WaitGroup
	slowCtx, cancelSlow := context.WithCancel(ctx)
	for range slow {
		wg.Add(1)
		go func() {
			defer wg.Done()
			get(h2, slowCtx, "/slow")
		}()
	}
	for range slow {
		select {
		case <-arrived:
		case <-ctx.Done():
			t.Fatal("the slow requests did not all reach the service")
		}
	}
	cancelSlow() // 400 streams reset by the client, young
	for range 1000 - slow {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if _, err := get(h2, ctx, "/x"); err != nil {
				t.Errorf("request: %v", err)
			}
		}()
	}
	wg.Wait()
	m := g.metrics(t)
	for _, limit := range []string{"resets", "settings", "pings", "continuations", "streams"} {
		if want := fmt.Sprintf(`misaki_gateway_http2_limit_closes_total{limit=%q} 0`, limit); !strings.Contains(m, want) {
			t.Errorf("/metrics lacks %s", want)
		}
	}
}

// metrics is the admin /metrics.
func (g *gw) metrics(t *testing.T) string {
	t.Helper()
	resp, err := http.Get("http://" + g.AdminAddr() + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return string(b)
}
