package controller

import (
	"context"
	"log/slog"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	serverv3 "github.com/envoyproxy/go-control-plane/pkg/server/v3"
	"github.com/prometheus/client_golang/prometheus"
	crmetrics "sigs.k8s.io/controller-runtime/pkg/metrics"

	"github.com/misaki-io/misaki/internal/proxy/xds"
)

// metrics are the controller's own, on controller-runtime's registry,
// registered once per process (tests run the controller more than once).
type metrics struct {
	namespaces      prometheus.Gauge
	published       prometheus.Counter
	translateErrors prometheus.Counter
	streams         prometheus.Gauge
	pushes          *prometheus.CounterVec
	nacks           *prometheus.CounterVec
	injections      *prometheus.CounterVec
	xdsRefused      *prometheus.CounterVec
	certificates    *prometheus.CounterVec
}

var controllerMetrics = func() *metrics {
	m := &metrics{
		namespaces: prometheus.NewGauge(prometheus.GaugeOpts{Name: "misaki_controller_snapshots",
			Help: "Namespaces with a published xDS snapshot."}),
		published: prometheus.NewCounter(prometheus.CounterOpts{Name: "misaki_controller_snapshots_published_total",
			Help: "Snapshots published (a namespace's config changed)."}),
		translateErrors: prometheus.NewCounter(prometheus.CounterOpts{Name: "misaki_controller_inconsistent_snapshots_total",
			Help: "Translations refused before publishing because the snapshot was not consistent."}),
		streams: prometheus.NewGauge(prometheus.GaugeOpts{Name: "misaki_controller_xds_streams",
			Help: "Open ADS streams (connected proxies)."}),
		pushes: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "misaki_controller_xds_pushes_total",
			Help: "Responses sent to proxies, by type."}, []string{"type"}),
		nacks: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "misaki_controller_xds_nacks_total",
			Help: "Configs proxies refused, by type; the reason is logged."}, []string{"type"}),
		injections: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "misaki_controller_injections_total",
			Help: "Pods the injection webhook saw, by outcome: injected, skipped, refused or error."}, []string{"outcome"}),
		xdsRefused: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "misaki_controller_xds_refused_total",
			Help: "ADS streams refused with --xds-auth mtls, by reason: no_certificate, node_mismatch (a node id not the certificate's pod) or no_node; the proxy is logged."}, []string{"reason"}),
		certificates: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "misaki_controller_certificates_total",
			Help: "Requests at the certificate endpoint, by outcome: issued, unauthenticated, forbidden, bad_request or error; refusals are logged with the reason."}, []string{"outcome"}),
	}
	crmetrics.Registry.MustRegister(m.namespaces, m.published, m.translateErrors, m.streams, m.pushes, m.nacks, m.injections, m.xdsRefused, m.certificates)
	return m
}()

// callbacks count streams, pushes and NACKs, and log NACKs with the
// proxy's reason.
func (m *metrics) callbacks(log *slog.Logger) serverv3.Callbacks {
	return serverv3.CallbackFuncs{
		StreamOpenFunc: func(context.Context, int64, string) error {
			m.streams.Inc()
			return nil
		},
		StreamClosedFunc: func(int64, *corev3.Node) { m.streams.Dec() },
		StreamRequestFunc: func(_ int64, req *discoveryv3.DiscoveryRequest) error {
			if d := req.GetErrorDetail(); d != nil {
				m.nacks.WithLabelValues(xds.ShortType(req.GetTypeUrl())).Inc()
				log.Warn("proxy refused config (NACK)", "node", req.GetNode().GetId(), "type", xds.ShortType(req.GetTypeUrl()),
					"version", req.GetVersionInfo(), "nonce", req.GetResponseNonce(), "reason", d.GetMessage())
			}
			return nil
		},
		StreamResponseFunc: func(_ context.Context, _ int64, _ *discoveryv3.DiscoveryRequest, resp *discoveryv3.DiscoveryResponse) {
			m.pushes.WithLabelValues(xds.ShortType(resp.GetTypeUrl())).Inc()
		},
	}
}
