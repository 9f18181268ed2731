package server

import (
	"github.com/prometheus/client_golang/prometheus"
)

// Request outcomes, the "outcome" label of misaki_proxy_requests_total.
const (
	outcomeDirect        = "direct"         // forwarded at once
	outcomeHeld          = "held"           // forwarded after waiting for a link
	outcomeHoldExpired   = "hold_expired"   // 503: the hold window passed
	outcomeHoldFull      = "hold_full"      // 503: a hold limit was reached
	outcomeGaveUp        = "gave_up"        // 503: maxNotSentRetries attempts were not delivered
	outcomeUnavailable   = "unavailable"    // 503: no usable link and no hold window
	outcomeClientGone    = "client_gone"    // the client left while held; not forwarded
	outcomeUpstreamError = "upstream_error" // 502/504 from the proxy
	outcomeTooLarge      = "too_large"      // 413
	outcomeShutdown      = "shutdown"       // 503: the proxy was stopping
	outcomeNoRoute       = "no_route"       // 404: no route for the host
	outcomeSpooled       = "spooled"        // 202: written to the spool
	outcomeSpoolFull     = "spool_full"     // 507: a spool quota or the disk is full
	outcomeSpoolRefused  = "spool_refused"  // 400: a bad Misaki-Callback
	outcomeBadRequest    = "bad_request"    // 400: a malformed body (connection closed)
)

var allOutcomes = []string{outcomeDirect, outcomeHeld, outcomeHoldExpired, outcomeHoldFull, outcomeGaveUp,
	outcomeUnavailable, outcomeClientGone, outcomeUpstreamError, outcomeTooLarge, outcomeShutdown,
	outcomeSpooled, outcomeSpoolFull, outcomeSpoolRefused, outcomeBadRequest}

type metrics struct {
	spoolOutcomes *prometheus.CounterVec
	requests      *prometheus.CounterVec
	duration      *prometheus.HistogramVec
	holdWait      *prometheus.HistogramVec
	meteredBytes  *prometheus.CounterVec
}

func newMetrics(reg *prometheus.Registry, s *Server) *metrics {
	m := &metrics{
		spoolOutcomes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "misaki_proxy_spool_outcomes_total",
			Help: "Spooled requests by route and what became of them (delivered, failed, retried, expired, evicted, cancelled).",
		}, []string{"route", "outcome"}),
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "misaki_proxy_requests_total",
			Help: "Requests from apps by route and outcome.",
		}, []string{"route", "outcome"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "misaki_proxy_request_duration_seconds",
			Help:    "Time from request to response headers forwarded, hold included, by route and delivery (direct, held).",
			Buckets: []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60},
		}, []string{"route", "delivery"}),
		meteredBytes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "misaki_proxy_metered_bytes_total",
			Help: "Bytes routes carried over metered links (TCP payload both ways, as the kernel counts it), by route and link.",
		}, []string{"route", "link"}),
		holdWait: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "misaki_proxy_hold_wait_seconds",
			Help:    "Time requests spent held, by route and how the hold ended (released, expired, canceled, closed).",
			Buckets: []float64{.01, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60, 120, 300},
		}, []string{"route", "outcome"}),
	}
	// The prometheus package's own constructors: the collectors package
	// would link database/sql into the sidecar for its DB-stats collector.
	//lint:ignore SA1019 collectors.NewGoCollector and NewProcessCollector link database/sql (TestEdgeImportsNoHeavyDependencies)
	reg.MustRegister(m.requests, m.duration, m.holdWait, m.spoolOutcomes, m.meteredBytes, stateCollector{s}, prometheus.NewGoCollector(), prometheus.NewProcessCollector(prometheus.ProcessCollectorOpts{}))
	return m
}

// countSpoolOutcome counts what became of a spooled request.
func (m *metrics) countSpoolOutcome(route, outcome string) {
	m.spoolOutcomes.WithLabelValues(route, outcome).Inc()
}

var (
	heldDesc = prometheus.NewDesc("misaki_proxy_held_requests",
		"Requests held in memory now, by route.", []string{"route"}, nil)
	heldBytesDesc = prometheus.NewDesc("misaki_proxy_held_bytes",
		"Bytes (headers and bodies) held in memory now, by route.", []string{"route"}, nil)
	routeUsableDesc = prometheus.NewDesc("misaki_proxy_route_usable",
		"1 if the route has a usable link and a reachable upstream.", []string{"route"}, nil)
	upstreamDesc = prometheus.NewDesc("misaki_proxy_upstream_reachable",
		"1 if the route's upstream is reachable.", []string{"route", "upstream"}, nil)
	linkUpDesc = prometheus.NewDesc("misaki_link_up",
		"1 if the link is up.", []string{"link", "class", "source"}, nil)
	linkAgentDesc = prometheus.NewDesc("misaki_link_agent_connected",
		"1 while the stream from the node link agent is connected (present only with linkAgent.address).", []string{"address"}, nil)
	linkFlagDesc = prometheus.NewDesc("misaki_link_flag",
		"1 if the link carries the flag (metered, roaming).", []string{"link", "flag"}, nil)
	spoolDepthDesc = prometheus.NewDesc("misaki_proxy_spool_requests",
		"Requests in the spool now (queued and being delivered), by route.", []string{"route"}, nil)
	spoolBytesDesc = prometheus.NewDesc("misaki_proxy_spool_bytes",
		"Bytes the route's spooled requests take on disk.", []string{"route"}, nil)
	spoolAgeDesc = prometheus.NewDesc("misaki_proxy_spool_oldest_age_seconds",
		"Age of the route's oldest spooled request.", []string{"route"}, nil)
	spoolEventsDesc = prometheus.NewDesc("misaki_proxy_spool_events_total",
		"Spool events since start: enqueued, rejected (quota), damaged_spans and torn_bytes found at open, missing_bodies, fsyncs.", []string{"event"}, nil)
)

// stateCollector reads gauges from the live state at scrape time, so the
// request path does no gauge bookkeeping.
type stateCollector struct{ s *Server }

func (stateCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{heldDesc, heldBytesDesc, routeUsableDesc, upstreamDesc, linkUpDesc, linkFlagDesc, linkAgentDesc,
		spoolDepthDesc, spoolBytesDesc, spoolAgeDesc, spoolEventsDesc, budgetUsedDesc, budgetLimitDesc, budgetExceededDesc} {
		ch <- d
	}
}

func (c stateCollector) Collect(ch chan<- prometheus.Metric) {
	for _, rt := range c.s.set.Load().routes {
		n, b := rt.queue.Held()
		ch <- prometheus.MustNewConstMetric(heldDesc, prometheus.GaugeValue, float64(n), rt.cfg.Name)
		ch <- prometheus.MustNewConstMetric(heldBytesDesc, prometheus.GaugeValue, float64(b), rt.cfg.Name)
		ch <- prometheus.MustNewConstMetric(routeUsableDesc, prometheus.GaugeValue, oneIf(rt.usable.Load()), rt.cfg.Name)
		ch <- prometheus.MustNewConstMetric(upstreamDesc, prometheus.GaugeValue, oneIf(rt.health.Reachable()), rt.cfg.Name, rt.cfg.Upstream)
	}
	for _, l := range c.s.links.Snapshot() {
		ch <- prometheus.MustNewConstMetric(linkUpDesc, prometheus.GaugeValue, oneIf(l.Up), l.Name, l.Class, l.Source)
		ch <- prometheus.MustNewConstMetric(linkFlagDesc, prometheus.GaugeValue, oneIf(l.Metered), l.Name, "metered")
		ch <- prometheus.MustNewConstMetric(linkFlagDesc, prometheus.GaugeValue, oneIf(l.Roaming), l.Name, "roaming")
	}
	if addr, connected := c.s.links.AgentStatus(); addr != "" {
		ch <- prometheus.MustNewConstMetric(linkAgentDesc, prometheus.GaugeValue, oneIf(connected), addr)
	}
	c.s.collectBudgets(ch)
	if sp := c.s.spool; sp != nil {
		now := c.s.clock.Now()
		for _, rs := range sp.store.Routes() {
			ch <- prometheus.MustNewConstMetric(spoolDepthDesc, prometheus.GaugeValue, float64(rs.Records), rs.Route)
			ch <- prometheus.MustNewConstMetric(spoolBytesDesc, prometheus.GaugeValue, float64(rs.Bytes), rs.Route)
			age := 0.0
			if !rs.Oldest.IsZero() {
				age = max(0, now.Sub(rs.Oldest).Seconds())
			}
			ch <- prometheus.MustNewConstMetric(spoolAgeDesc, prometheus.GaugeValue, age, rs.Route)
		}
		st := sp.store.Stats()
		for _, e := range []struct {
			name string
			v    int64
		}{{"enqueued", st.Enqueued}, {"rejected", st.Rejected}, {"damaged_spans", st.DamagedSpans},
			{"torn_bytes", st.TornBytes}, {"missing_bodies", st.MissingBodies}, {"fsyncs", st.Fsyncs}} {
			ch <- prometheus.MustNewConstMetric(spoolEventsDesc, prometheus.CounterValue, float64(e.v), e.name)
		}
	}
}

// oneIf is a gauge's value for b: 1 if true, else 0.
func oneIf(b bool) float64 {
	if b {
		return 1
	}
	return 0
}
