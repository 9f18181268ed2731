package health

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/http"
	"net/http/httptest"
	"sync/atomic"
	"testing"
	"time"

	"github.com/misaki-io/misaki/internal/clock"
	"github.com/misaki-io/misaki/internal/proxy/config"
	"github.com/misaki-io/misaki/internal/waitfor"
)

var quiet = slog.New(slog.NewTextHandler(io.Discard, nil))

// TestBackoffBounds: the n-th delay after a failed probe lies in [d/2, d]
// for d = min(Max, Initial·2^(n-1)), at the lowest and highest draws and
// at random ones.
func TestBackoffBounds(t *testing.T) {
	p := probeBackoff(config.Backoff{Initial: config.Duration(500 * time.Millisecond), Max: config.Duration(10 * time.Second)})
	for n := 1; n < 40; n++ {
		ceil := min(10*time.Second, 500*time.Millisecond<<min(n-1, 20))
		for _, rnd := range []float64{0, 0.25, 0.5, 0.999999, rand.Float64(), rand.Float64()} {
			d := p.Delay(n-1, rnd)
			if d < ceil/2 || d > ceil {
				t.Fatalf("delay %d (draw %v) = %v, want in [%v, %v]", n, rnd, d, ceil/2, ceil)
			}
		}
	}
}

func TestProbeFailureAndRecovery(t *testing.T) {
	clk := clock.NewFake(time.Unix(0, 0))
	var fail atomic.Bool
	var flips atomic.Int32
	probes := make(chan struct{}, 100)
	prober := ProberFunc(func(context.Context) error {
		defer func() { probes <- struct{}{} }()
		if fail.Load() {
			return errors.New("refused")
		}
		return nil
	})
	cfg := config.Probe{Interval: config.Duration(10 * time.Second), Timeout: config.Duration(time.Second),
		Backoff: config.Backoff{Initial: config.Duration(time.Second), Max: config.Duration(4 * time.Second)}}
	u := New("up", cfg, prober, clk, quiet, func() { flips.Add(1) })
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go u.Run(ctx)

	fail.Store(true)
	u.Kick()
	<-probes
	waitfor.True(t, "the upstream unreachable", func() bool { return !u.Reachable() })
	if s := u.Status(); s.LastError != "refused" || s.Source != "probe" {
		t.Fatalf("status %+v", s)
	}
	fail.Store(false)
	// The next probe comes within the first backoff step (≤ 1s), not the 10s interval.
	for clk.Timers() == 0 {
		time.Sleep(time.Millisecond)
	}
	clk.Advance(time.Second)
	<-probes
	waitfor.True(t, "two changes of reachability", func() bool { return flips.Load() == 2 })
	if !u.Reachable() {
		t.Fatal("not reachable after a successful probe")
	}
}

func TestPassiveFailureWithoutProber(t *testing.T) {
	clk := clock.NewFake(time.Unix(0, 0))
	cfg := config.Probe{Interval: config.Duration(10 * time.Second),
		Backoff: config.Backoff{Initial: config.Duration(time.Second), Max: config.Duration(4 * time.Second)}}
	u := New("up", cfg, nil, clk, quiet, nil)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go u.Run(ctx)
	u.Failed(&net.OpError{Op: "dial", Err: errors.New("refused")})
	if u.Reachable() {
		t.Fatal("a failed dial must mark the upstream unreachable at once")
	}
	// After the backoff step real requests may try again.
	waitfor.True(t, "the upstream reachable again after the backoff step", func() bool {
		clk.Advance(time.Second)
		return u.Reachable()
	})
}

func TestTCPProber(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	d := &net.Dialer{Timeout: time.Second}
	p := NewProber(config.Probe{Type: config.ProbeTCP}, addr, "", d.DialContext, nil)
	if err := p.Probe(context.Background()); err != nil {
		t.Fatalf("listening: %v", err)
	}
	ln.Close()
	var op *net.OpError
	if err := p.Probe(context.Background()); !errors.As(err, &op) || op.Op != "dial" {
		t.Fatalf("closed: %v, want a dial error", err)
	}
}

func TestHTTPProber(t *testing.T) {
	status := atomic.Int32{}
	status.Store(200)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/healthz" || r.Header.Get("User-Agent") != "misaki-probe" {
			w.WriteHeader(400)
			return
		}
		w.WriteHeader(int(status.Load()))
	}))
	defer srv.Close()
	p := NewProber(config.Probe{Type: config.ProbeHTTP, Path: "/healthz"}, "", srv.URL, nil, srv.Client())
	for code, ok := range map[int32]bool{200: true, 404: true, 503: false, 500: false} {
		status.Store(code)
		if err := p.Probe(context.Background()); (err == nil) != ok {
			t.Errorf("status %d: probe error %v, want reachable=%v", code, err, ok)
		}
	}
	srv.Close()
	if err := p.Probe(context.Background()); err == nil {
		t.Error("a closed server probed as reachable")
	}
	if NewProber(config.Probe{Type: config.ProbeNone}, "", "", nil, nil) != nil {
		t.Error("probe type none must have no prober")
	}
}
