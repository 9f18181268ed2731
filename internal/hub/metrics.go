package hub

import (
	"context"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/misaki-io/misaki/internal/hub/desired"
	"github.com/misaki-io/misaki/internal/hub/render"
	"github.com/misaki-io/misaki/internal/hub/store"
)

// countsEvery bounds how often a scrape queries the store for fleet counts.
const countsEvery = 15 * time.Second

// registerMetrics adds the hub's fleet, render and issuing metrics.
func registerMetrics(reg *prometheus.Registry, st store.Store, cache *render.Cache, is *desired.Issuer, c Config) {
	var (
		mu     sync.Mutex
		counts store.Counts
		at     time.Time
	)
	window := c.API.OnlineWindow
	if window <= 0 {
		window = 90 * time.Second
	}
	get := func() store.Counts {
		mu.Lock()
		defer mu.Unlock()
		if time.Since(at) < countsEvery {
			return counts
		}
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if n, err := st.Counts(ctx, c.Clock.Now().Add(-window).UTC()); err == nil {
			counts, at = n, time.Now()
		}
		return counts
	}
	reg.MustRegister(
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "misaki_hub_vehicles", Help: "Vehicles known to the hub."},
			func() float64 { return float64(get().Vehicles) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "misaki_hub_vehicles_online", Help: "Vehicles seen within the online window."},
			func() float64 { return float64(get().Online) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "misaki_hub_revisions_pending", Help: "Vehicle halves whose newest desired revision is not reported applied."},
			func() float64 { return float64(get().Pending) }),
		prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "misaki_hub_render_cache_hits_total", Help: "Renders answered from the render cache."},
			func() float64 { h, _ := cache.Stats(); return float64(h) }),
		prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "misaki_hub_render_cache_misses_total", Help: "Renders the Helm engine ran."},
			func() float64 { _, m := cache.Stats(); return float64(m) }),
		prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "misaki_hub_revisions_issued_total", Help: "Signed desired revisions this replica wrote.", ConstLabels: prometheus.Labels{"half": "vehicle"}},
			func() float64 { v, _ := is.Issued(); return float64(v) }),
		prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "misaki_hub_revisions_issued_total", Help: "Signed desired revisions this replica wrote.", ConstLabels: prometheus.Labels{"half": "cloud"}},
			func() float64 { _, cl := is.Issued(); return float64(cl) }),
	)
}
