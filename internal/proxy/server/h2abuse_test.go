package server

import (
	"context"
	"flag"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/misaki-io/misaki/internal/h2guard"
	"github.com/misaki-io/misaki/internal/h2guard/h2abuse"
	"github.com/misaki-io/misaki/internal/proxy/config"
)

var h2abuseMeasure = flag.Duration("h2abuse.measure", 0, "TestH2AbuseMeasure: run each HTTP/2 abuse for this long and log what reached the upstream")

// maxAbuseRequests bounds the requests one abusive connection may get to
// the upstream with the default limits: the resets burst (500), and
// streams the server has not reset yet (at most 4 x 250), with room.
const maxAbuseRequests = config.DefaultHTTP2MaxStreams*4 + 500

// attackMesh runs attack a on one h2c connection to a proxy started with
// extra config before its route, and checks that the connection was ended
// as a must be and that the upstream got at most maxAbuseRequests.
func attackMesh(t *testing.T, extra string, a h2abuse.Case) (*proxy, h2abuse.Result) {
	t.Helper()
	up := newUpstream(t, func(w http.ResponseWriter, r *http.Request) { w.Write([]byte("ok")) })
	p := startProxy(t, extra+simpleRoute(up.URL, ""), false)
	res, err := h2abuse.Run(context.Background(), h2abuse.Target{Addr: p.mesh, Authority: "svc.mesh", Path: "/x"},
		a.Attack, h2abuse.Options{Units: 20000, Duration: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	if !a.EndedBy(res) {
		t.Errorf("%s; want GOAWAY %v over limits.http2.%v", res, a.Code, a.Limits)
	}
	if n := up.total(); n > maxAbuseRequests {
		t.Errorf("%d requests reached the upstream, want at most %d", n, maxAbuseRequests)
	}
	return p, res
}

// TestH2Abuse sends each HTTP/2 attack on one h2c connection to the mesh
// listener: the proxy must end the connection with GOAWAY, count it in
// misaki_proxy_http2_limit_closes_total, keep the requests that reached
// the upstream bounded, and go on serving. Without limits.http2 none of
// them is ended (docs/proxy.md has the figures). It runs on the default
// HTTP/1.1 server, the lean one, which hands each h2c connection to
// net/http at its preface; TestH2AbuseStdlibServer runs three of the
// attacks with net/http alone (each attack takes up to 5 s).
func TestH2Abuse(t *testing.T) {
	for _, a := range h2abuse.Cases {
		t.Run(a.Name, func(t *testing.T) {
			p, res := attackMesh(t, "", a)
			if len(a.Limits) > 0 {
				want := fmt.Sprintf(`misaki_proxy_http2_limit_closes_total{limit=%q} 1`, res.Limit())
				if m := p.metrics(t); !strings.Contains(m, want) {
					t.Errorf("/metrics lacks %s", want)
				}
			}
			if r := p.send(context.Background(), "svc.mesh", "after", nil, nil); r.status != 200 {
				t.Errorf("a request after the attack: %d %v", r.status, r.err)
			}
		})
	}
}

// TestH2AbuseStdlibServer: with http1Server: stdlib, net/http takes the
// h2c connections itself, and the limits hold the same.
func TestH2AbuseStdlibServer(t *testing.T) {
	for _, a := range []h2abuse.Case{h2abuse.Cases[0], h2abuse.Cases[1], h2abuse.Cases[7]} {
		t.Run(a.Name, func(t *testing.T) {
			attackMesh(t, "http1Server: stdlib\n", a)
		})
	}
}

// TestH2AbuseMeasure logs what each attack gets through in a given time;
// docs/proxy.md has its figures. It measures the default HTTP/1.1 server.
func TestH2AbuseMeasure(t *testing.T) {
	if *h2abuseMeasure == 0 {
		t.Skip("-h2abuse.measure not set")
	}
	for _, a := range h2abuse.Cases {
		up := newUpstream(t, func(w http.ResponseWriter, r *http.Request) { w.Write([]byte("ok")) })
		p := startProxy(t, simpleRoute(up.URL, ""), false)
		res, err := h2abuse.Run(context.Background(), h2abuse.Target{Addr: p.mesh, Authority: "svc.mesh", Path: "/x"},
			a.Attack, h2abuse.Options{Units: 1 << 30, Duration: *h2abuseMeasure})
		if err != nil {
			t.Fatal(err)
		}
		p.stop()
		n := up.total()
		t.Logf("%-36s %s; upstream got %d (%.0f/s)", a.Name, res, n, float64(n)/res.Elapsed.Seconds())
	}
}

// TestH2LegitTraffic: what gRPC and Go clients do on one connection, with
// the default limits, never ends it: 600 watch streams cancelled after a
// second (more than the resets burst), 400 calls cancelled young (within
// it), and 1,000 calls, pings and settings included.
func TestH2LegitTraffic(t *testing.T) {
	onEachServer(t, func(t *testing.T, srv http1Server) {
		up := newGRPCUpstream(t, nil)
		p := srv.start(t, simpleRoute("h2c://"+up.addr, ""), true)
		conn := grpcClient(t, p, "svc.mesh")
		client := healthpb.NewHealthClient(conn)
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()

		for round := 0; round < 3; round++ {
			const streams = 200 // within limits.http2.maxConcurrentStreams
			cancels := make([]context.CancelFunc, streams)
			for i := range cancels {
				sctx, scancel := context.WithCancel(ctx)
				cancels[i] = scancel
				w, err := client.Watch(sctx, &healthpb.HealthCheckRequest{Service: "telemetry"})
				if err != nil {
					t.Fatal(err)
				}
				if _, err := w.Recv(); err != nil {
					t.Fatalf("round %d, watch %d: %v", round, i, err)
				}
			}
			p.clock.Advance(h2guard.PrematureReset)
			for _, c := range cancels {
				c()
			}
		}

		// Calls cancelled while the upstream has them: the watch's first
		// answer is back, the stream is young.
		for i := 0; i < 400; i++ {
			sctx, scancel := context.WithCancel(ctx)
			w, err := client.Watch(sctx, &healthpb.HealthCheckRequest{Service: "telemetry"})
			if err == nil {
				_, err = w.Recv()
			}
			scancel()
			if err != nil {
				t.Fatalf("young watch %d: %v", i, err)
			}
		}

		var wg sync.WaitGroup
		errs := make(chan error, 1000)
		for i := 0; i < 1000; i++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				if _, err := client.Check(ctx, &healthpb.HealthCheckRequest{Service: "telemetry"}); err != nil {
					errs <- err
				}
			}()
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			t.Fatalf("a call failed: %v", err)
		}

		// A Go client on h2c with prior knowledge: 1,000 requests at once.
		up2 := newUpstream(t, nil)
		p2 := srv.start(t, simpleRoute(up2.URL, ""), false)
		h2c := &http.Client{Transport: &http.Transport{Protocols: h2cOnly()}}
		for i := 0; i < 1000; i++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+p2.mesh+"/x", nil)
				req.Host = "svc.mesh"
				resp, err := h2c.Do(req)
				if err != nil {
					t.Errorf("h2c request: %v", err)
					return
				}
				io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				if resp.ProtoMajor != 2 {
					t.Errorf("h2c request answered over %s", resp.Proto)
				}
			}()
		}
		wg.Wait()

		for _, m := range []string{p.metrics(t), p2.metrics(t)} {
			for _, limit := range []string{"resets", "settings", "pings", "continuations", "streams"} {
				if want := fmt.Sprintf(`misaki_proxy_http2_limit_closes_total{limit=%q} 0`, limit); !strings.Contains(m, want) {
					t.Errorf("/metrics lacks %s", want)
				}
			}
		}
	})
}

func h2cOnly() *http.Protocols {
	var p http.Protocols
	p.SetUnencryptedHTTP2(true)
	return &p
}

// metrics is the admin API's /metrics.
func (p *proxy) metrics(t *testing.T) string {
	t.Helper()
	resp, err := http.Get("http://" + p.admin + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return string(b)
}
