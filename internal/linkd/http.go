//go:build linux

package linkd

import (
	"encoding/json"
	"errors"
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	linkv1 "github.com/misaki-io/misaki/api/link/v1"
)

// Heartbeat is how often a watch stream without changes carries an empty
// line, so a client can tell a live agent from a dead connection.
const Heartbeat = 15 * time.Second

// Handler serves the agent's API:
//
//	GET /v1/links               the snapshot (linkv1.Snapshot)
//	GET /v1/links?watch=true    the snapshot now and after every change, one per line
//	PUT /v1/links/{name}        an override (linkv1.Override); answers the link
//	GET /healthz                200 once the first scan is published
//	GET /metrics                Prometheus metrics
func (a *Agent) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /v1/links", a.getLinks)
	mux.HandleFunc("PUT /v1/links/{name}", a.putLink)
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		if !a.Scanned() {
			http.Error(w, "links not scanned yet", http.StatusServiceUnavailable)
			return
		}
		w.Write([]byte("ok\n"))
	})
	mux.Handle("GET /metrics", promhttp.HandlerFor(a.m.reg, promhttp.HandlerOpts{}))
	return mux
}

func (a *Agent) getLinks(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "application/json")
	if r.URL.Query().Get("watch") != "true" {
		s, _ := a.Snapshot()
		json.NewEncoder(w).Encode(s)
		return
	}
	// A stream: the snapshot now, then the newest one after each change
	// (changes that come while one is being written are coalesced).
	w.Header().Set("Content-Type", "application/x-ndjson")
	w.Header().Set("Cache-Control", "no-store")
	rc := http.NewResponseController(w)
	a.m.watchers.Inc()
	defer a.m.watchers.Dec()
	enc := json.NewEncoder(w)
	sent := uint64(0)
	for {
		s, changed := a.Snapshot()
		if s.Version != sent {
			if err := enc.Encode(s); err != nil {
				return
			}
			sent = s.Version
		} else if _, err := w.Write([]byte("\n")); err != nil {
			return
		}
		if err := rc.Flush(); err != nil {
			return
		}
		t := a.o.Clock.NewTimer(a.heartbeat)
		select {
		case <-r.Context().Done():
			t.Stop()
			return
		case <-changed:
		case <-t.C():
		}
		t.Stop()
	}
}

func (a *Agent) putLink(w http.ResponseWriter, r *http.Request) {
	var o linkv1.Override
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, 4096))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&o); err != nil {
		writeError(w, http.StatusBadRequest, "body: "+err.Error())
		return
	}
	l, err := a.Set(r.PathValue("name"), o)
	switch {
	case errors.Is(err, ErrUnknownLink):
		writeError(w, http.StatusNotFound, err.Error())
		return
	case err != nil:
		writeError(w, http.StatusBadRequest, err.Error())
		return
	}
	a.log.Info("override", "link", l.Name, "state", o.State, "from", r.RemoteAddr)
	w.Header().Set("Content-Type", "application/json")
	json.NewEncoder(w).Encode(l)
}

func writeError(w http.ResponseWriter, code int, msg string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	json.NewEncoder(w).Encode(map[string]string{"error": msg})
}

type metrics struct {
	reg           *prometheus.Registry
	publications  prometheus.Counter
	scanErrors    prometheus.Counter
	routeErrors   prometheus.Counter
	watchers      prometheus.Gauge
	probeFailures *prometheus.CounterVec
	probeRTT      *prometheus.HistogramVec
}

func newMetrics(a *Agent) *metrics {
	m := &metrics{
		reg: prometheus.NewRegistry(),
		publications: prometheus.NewCounter(prometheus.CounterOpts{Name: "misaki_linkd_publications_total",
			Help: "Changes of the link view sent to the proxies."}),
		scanErrors: prometheus.NewCounter(prometheus.CounterOpts{Name: "misaki_linkd_scan_errors_total",
			Help: "Reads of the host's interfaces and routes that failed."}),
		routeErrors: prometheus.NewCounter(prometheus.CounterOpts{Name: "misaki_linkd_routing_errors_total",
			Help: "Installations of the policy routing that failed (see the log)."}),
		watchers: prometheus.NewGauge(prometheus.GaugeOpts{Name: "misaki_linkd_watchers",
			Help: "Proxies watching the link view."}),
		probeFailures: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "misaki_linkd_probe_failures_total",
			Help: "Probes of the gateway that failed, by link."}, []string{"link"}),
		probeRTT: prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "misaki_linkd_probe_rtt_seconds",
			Help: "Time to connect to the gateway over a link.", Buckets: prometheus.ExponentialBuckets(0.001, 2, 14)}, []string{"link"}),
	}
	up := prometheus.NewDesc("misaki_linkd_link_up", "Whether a link is up (1) or down (0).", []string{"link", "class", "metered", "roaming"}, nil)
	m.reg.MustRegister(m.publications, m.scanErrors, m.routeErrors, m.watchers, m.probeFailures, m.probeRTT,
		collectorFunc{desc: up, collect: func(ch chan<- prometheus.Metric) {
			s, _ := a.Snapshot()
			for _, l := range s.Links {
				v := 0.0
				if l.Up {
					v = 1
				}
				ch <- prometheus.MustNewConstMetric(up, prometheus.GaugeValue, v, l.Name, l.Class, boolString(l.Metered), boolString(l.Roaming))
			}
		}})
	return m
}

func boolString(b bool) string {
	if b {
		return "true"
	}
	return "false"
}

type collectorFunc struct {
	desc    *prometheus.Desc
	collect func(chan<- prometheus.Metric)
}

func (c collectorFunc) Describe(ch chan<- *prometheus.Desc) { ch <- c.desc }
func (c collectorFunc) Collect(ch chan<- prometheus.Metric) { c.collect(ch) }
