package agent

import (
	"errors"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/misaki-io/misaki/internal/trust"
)

// Metrics are the agent's Prometheus metrics, labelled by half (vehicle or
// cloud), never by vehicle: a cloud agent serves thousands.
type Metrics struct {
	applies   *prometheus.CounterVec   // half, result
	applySecs *prometheus.HistogramVec // half
	objects   *prometheus.CounterVec   // half, action
	refusals  *prometheus.CounterVec   // half, reason
	phases    *prometheus.CounterVec   // half, phase
	drift     *prometheus.CounterVec   // half
	// gateWaiting is 1 while a revision waits for vehicle-state gates
	// (the vehicle half only: the cloud half ignores gates).
	gateWaiting *prometheus.GaugeVec // half
}

// NewMetrics registers the metrics with reg.
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		applies: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "misaki_agent_applies_total",
			Help: "Applies of a revision's objects (or of a rollback), by result: ok or error."}, []string{"half", "result"}),
		applySecs: prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "misaki_agent_apply_seconds",
			Help:    "Time to apply and prune a revision's objects.",
			Buckets: prometheus.ExponentialBuckets(0.05, 2, 12)}, []string{"half"}),
		objects: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "misaki_agent_objects_total",
			Help: "Objects written or deleted, by action: created, configured, deleted, kept (by the prune rules), failed."}, []string{"half", "action"}),
		refusals: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "misaki_agent_refusals_total",
			Help: "Desired-state documents refused, by reason (signature, digest, vehicle, rollback, expired, ...)."}, []string{"half", "reason"}),
		phases: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "misaki_agent_revisions_total",
			Help: "Revisions that reached a final phase: Healthy or Failed."}, []string{"half", "phase"}),
		drift: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "misaki_agent_drift_corrected_total",
			Help: "Objects a drift pass found changed or deleted and applied again."}, []string{"half"}),
		gateWaiting: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "misaki_agent_gate_waiting",
			Help: "1 while a verified revision waits for its vehicle-state gates, else 0."}, []string{"half"}),
	}
	reg.MustRegister(m.applies, m.applySecs, m.objects, m.refusals, m.phases, m.drift, m.gateWaiting)
	return m
}

// refusalReason is a refusal's reason word (vehicle, expired, ...), or
// "other" for an error that is not a *trust.RefusalError.
func refusalReason(err error) string {
	var re *trust.RefusalError
	if errors.As(err, &re) {
		return string(re.Reason)
	}
	return "other"
}
