package api

import (
	"net/http"
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/misaki-io/misaki/internal/hub/wake"
)

type metrics struct {
	requests *prometheus.CounterVec
	duration *prometheus.HistogramVec
	waiting  prometheus.Gauge
}

func newMetrics(reg prometheus.Registerer, wk *wake.Waker) *metrics {
	m := &metrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "misaki_hub_requests_total",
			Help: "API requests by route and status code.",
		}, []string{"route", "code"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "misaki_hub_request_duration_seconds",
			Help:    "API request duration by route (long-polls include their wait).",
			Buckets: []float64{.001, .005, .025, .1, .5, 2.5, 10, 60, 300},
		}, []string{"route"}),
		waiting: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "misaki_hub_longpoll_waiters",
			Help: "Long-polls waiting on this replica (for a desired revision, or on the change feed).",
		}),
	}
	if reg != nil {
		reg.MustRegister(m.requests, m.duration, m.waiting)
	}
	return m
}

type statusWriter struct {
	http.ResponseWriter
	code int
}

func (w *statusWriter) WriteHeader(code int) {
	if w.code == 0 {
		w.code = code
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *statusWriter) Write(b []byte) (int, error) {
	if w.code == 0 {
		w.code = http.StatusOK
	}
	return w.ResponseWriter.Write(b)
}

func (w *statusWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// instrument counts and times route's requests, and calls written (if
// set) after each write it served with a 2xx status.
func (m *metrics) instrument(route string, h http.Handler, written func()) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		sw := &statusWriter{ResponseWriter: w}
		h.ServeHTTP(sw, r)
		if sw.code == 0 {
			sw.code = http.StatusOK
		}
		m.requests.WithLabelValues(route, strconv.Itoa(sw.code)).Inc()
		m.duration.WithLabelValues(route).Observe(time.Since(start).Seconds())
		if written != nil && r.Method != http.MethodGet && r.Method != http.MethodHead && sw.code < 300 {
			written()
		}
	})
}
