package localdns

import (
	"sync"

	"github.com/miekg/dns"
	"github.com/prometheus/client_golang/prometheus"
)

// Metrics are the DNS server's Prometheus metrics.
type Metrics struct {
	queries          *prometheus.CounterVec
	upstreamSeconds  prometheus.Histogram
	upstreamFailures prometheus.Counter
	spoofed          prometheus.Counter

	mu       sync.Mutex
	counters map[observed]prometheus.Counter
}

// NewMetrics registers the metrics with reg, the cache's size read from
// s once it is set with Bind.
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		counters: map[observed]prometheus.Counter{},
		queries: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "misaki_dns_queries_total",
			Help: "DNS queries answered, by query type, response code and source (mesh, cache, stale, upstream, error).",
		}, []string{"type", "rcode", "source"}),
		upstreamSeconds: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "misaki_dns_upstream_seconds",
			Help:    "Time of queries to upstream resolvers, failed ones included.",
			Buckets: []float64{.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2, 5},
		}),
		upstreamFailures: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "misaki_dns_upstream_failures_total",
			Help: "Queries to upstream resolvers that got no usable answer (timeout, unreachable, SERVFAIL, REFUSED).",
		}),
		spoofed: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "misaki_dns_upstream_mismatched_total",
			Help: "Upstream replies ignored because their ID or question did not match the query (RFC 5452).",
		}),
	}
	reg.MustRegister(m.queries, m.upstreamSeconds, m.upstreamFailures, m.spoofed)
	return m
}

// Bind registers gauges of s's cache with reg.
func (s *Server) Bind(reg prometheus.Registerer) {
	reg.MustRegister(
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "misaki_dns_cache_entries", Help: "Answers in the DNS cache."},
			func() float64 { n, _ := s.cache.stats(); return float64(n) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "misaki_dns_cache_bytes", Help: "Bytes of the DNS cache (messages, keys and bookkeeping)."},
			func() float64 { _, b := s.cache.stats(); return float64(b) }),
	)
}

// observe counts one answer. The counters for each label set are kept
// once looked up: WithLabelValues hashes its labels on every call.
func (m *Metrics) observe(qtype uint16, rcode int, source string) {
	k := observed{qtype, rcode, source}
	m.mu.Lock()
	c := m.counters[k]
	m.mu.Unlock()
	if c == nil {
		rc := dns.RcodeToString[rcode]
		if rc == "" {
			rc = "OTHER"
		}
		c = m.queries.WithLabelValues(dns.Type(qtype).String(), rc, source)
		m.mu.Lock()
		m.counters[k] = c
		m.mu.Unlock()
	}
	c.Inc()
}

type observed struct {
	qtype  uint16
	rcode  int
	source string
}
