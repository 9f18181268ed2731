// Package storemetrics times every store call: it wraps a store.Store and
// observes each method's duration in misaki_hub_store_seconds{op}, the
// "store latency" of the hub's metrics. It changes no behaviour.
package storemetrics

import (
	"context"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	hubv1 "github.com/misaki-io/misaki/api/hub/v1"
	"github.com/misaki-io/misaki/internal/hub/store"
)

// Store is a timed store.Store.
type Store struct {
	s store.Store
	h *prometheus.HistogramVec
}

var _ store.Store = (*Store)(nil)

// Wrap times s's calls, registering the histogram with reg.
func Wrap(s store.Store, reg prometheus.Registerer) *Store {
	h := prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name:    "misaki_hub_store_seconds",
		Help:    "Duration of store calls by operation.",
		Buckets: []float64{.0001, .0005, .001, .005, .01, .05, .1, .5, 1, 5},
	}, []string{"op"})
	if reg != nil {
		reg.MustRegister(h)
	}
	return &Store{s: s, h: h}
}

func (m *Store) observe(op string, start time.Time) {
	m.h.WithLabelValues(op).Observe(time.Since(start).Seconds())
}

func (m *Store) CreateSource(ctx context.Context, s hubv1.ChartSource) error {
	defer m.observe("CreateSource", time.Now())
	return m.s.CreateSource(ctx, s)
}

func (m *Store) GetSource(ctx context.Context, name string) (hubv1.ChartSource, error) {
	defer m.observe("GetSource", time.Now())
	return m.s.GetSource(ctx, name)
}

func (m *Store) ListSources(ctx context.Context) ([]hubv1.ChartSource, error) {
	defer m.observe("ListSources", time.Now())
	return m.s.ListSources(ctx)
}

func (m *Store) DeleteSource(ctx context.Context, name string) error {
	defer m.observe("DeleteSource", time.Now())
	return m.s.DeleteSource(ctx, name)
}

func (m *Store) PinChart(ctx context.Context, ref hubv1.ChartRef) error {
	defer m.observe("PinChart", time.Now())
	return m.s.PinChart(ctx, ref)
}

func (m *Store) GetPin(ctx context.Context, source, name, version string) (string, error) {
	defer m.observe("GetPin", time.Now())
	return m.s.GetPin(ctx, source, name, version)
}

func (m *Store) PutBlob(ctx context.Context, digest string, data []byte) error {
	defer m.observe("PutBlob", time.Now())
	return m.s.PutBlob(ctx, digest, data)
}

func (m *Store) GetBlob(ctx context.Context, digest string) ([]byte, error) {
	defer m.observe("GetBlob", time.Now())
	return m.s.GetBlob(ctx, digest)
}

func (m *Store) CreateVehicle(ctx context.Context, v hubv1.Vehicle) error {
	defer m.observe("CreateVehicle", time.Now())
	return m.s.CreateVehicle(ctx, v)
}

func (m *Store) GetVehicle(ctx context.Context, id string) (hubv1.Vehicle, error) {
	defer m.observe("GetVehicle", time.Now())
	return m.s.GetVehicle(ctx, id)
}

func (m *Store) ListVehicles(ctx context.Context, p store.Page, match func(labels map[string]string) bool) ([]hubv1.Vehicle, string, error) {
	defer m.observe("ListVehicles", time.Now())
	return m.s.ListVehicles(ctx, p, match)
}

func (m *Store) UpdateVehicle(ctx context.Context, v hubv1.Vehicle) (hubv1.Vehicle, error) {
	defer m.observe("UpdateVehicle", time.Now())
	return m.s.UpdateVehicle(ctx, v)
}

func (m *Store) DeleteVehicle(ctx context.Context, id string) error {
	defer m.observe("DeleteVehicle", time.Now())
	return m.s.DeleteVehicle(ctx, id)
}

func (m *Store) SetEnrolled(ctx context.Context, id string, at, certExpires time.Time) error {
	defer m.observe("SetEnrolled", time.Now())
	return m.s.SetEnrolled(ctx, id, at, certExpires)
}

func (m *Store) Seen(ctx context.Context, id string, at time.Time) error {
	defer m.observe("Seen", time.Now())
	return m.s.Seen(ctx, id, at)
}

func (m *Store) PutReported(ctx context.Context, id string, r hubv1.Reported) (factsChanged bool, err error) {
	defer m.observe("PutReported", time.Now())
	return m.s.PutReported(ctx, id, r)
}

func (m *Store) GetReported(ctx context.Context, id string) ([]hubv1.Reported, error) {
	defer m.observe("GetReported", time.Now())
	return m.s.GetReported(ctx, id)
}

func (m *Store) CreateToken(ctx context.Context, t hubv1.BootstrapToken, secretHash []byte) error {
	defer m.observe("CreateToken", time.Now())
	return m.s.CreateToken(ctx, t, secretHash)
}

func (m *Store) UseToken(ctx context.Context, id string, secretHash []byte, now time.Time) (string, error) {
	defer m.observe("UseToken", time.Now())
	return m.s.UseToken(ctx, id, secretHash, now)
}

func (m *Store) ListTokens(ctx context.Context, vehicleID string) ([]hubv1.BootstrapToken, error) {
	defer m.observe("ListTokens", time.Now())
	return m.s.ListTokens(ctx, vehicleID)
}

func (m *Store) CreateOperatorToken(ctx context.Context, t store.OperatorToken) error {
	defer m.observe("CreateOperatorToken", time.Now())
	return m.s.CreateOperatorToken(ctx, t)
}

func (m *Store) OperatorTokenByHash(ctx context.Context, h []byte) (store.OperatorToken, error) {
	defer m.observe("OperatorTokenByHash", time.Now())
	return m.s.OperatorTokenByHash(ctx, h)
}

func (m *Store) ListOperatorTokens(ctx context.Context) ([]store.OperatorToken, error) {
	defer m.observe("ListOperatorTokens", time.Now())
	return m.s.ListOperatorTokens(ctx)
}

func (m *Store) DeleteOperatorToken(ctx context.Context, name string) error {
	defer m.observe("DeleteOperatorToken", time.Now())
	return m.s.DeleteOperatorToken(ctx, name)
}

func (m *Store) CreateDeployment(ctx context.Context, d hubv1.Deployment) error {
	defer m.observe("CreateDeployment", time.Now())
	return m.s.CreateDeployment(ctx, d)
}

func (m *Store) GetDeployment(ctx context.Context, name string) (hubv1.Deployment, error) {
	defer m.observe("GetDeployment", time.Now())
	return m.s.GetDeployment(ctx, name)
}

func (m *Store) ListDeployments(ctx context.Context, p store.Page) ([]hubv1.Deployment, string, error) {
	defer m.observe("ListDeployments", time.Now())
	return m.s.ListDeployments(ctx, p)
}

func (m *Store) UpdateDeployment(ctx context.Context, d hubv1.Deployment) (hubv1.Deployment, error) {
	defer m.observe("UpdateDeployment", time.Now())
	return m.s.UpdateDeployment(ctx, d)
}

func (m *Store) DeleteDeployment(ctx context.Context, name string) error {
	defer m.observe("DeleteDeployment", time.Now())
	return m.s.DeleteDeployment(ctx, name)
}

func (m *Store) ListReported(ctx context.Context, ids []string) (map[string][]hubv1.Reported, error) {
	defer m.observe("ListReported", time.Now())
	return m.s.ListReported(ctx, ids)
}

func (m *Store) GetDeploymentVersion(ctx context.Context, name string, generation int64) (hubv1.Deployment, error) {
	defer m.observe("GetDeploymentVersion", time.Now())
	return m.s.GetDeploymentVersion(ctx, name, generation)
}

func (m *Store) ListDeploymentVersions(ctx context.Context, name string) ([]hubv1.Deployment, error) {
	defer m.observe("ListDeploymentVersions", time.Now())
	return m.s.ListDeploymentVersions(ctx, name)
}

func (m *Store) GetRollout(ctx context.Context, name string, generation int64) (hubv1.Rollout, error) {
	defer m.observe("GetRollout", time.Now())
	return m.s.GetRollout(ctx, name, generation)
}

func (m *Store) ListRollouts(ctx context.Context, f store.RolloutFilter, p store.Page) ([]hubv1.Rollout, string, error) {
	defer m.observe("ListRollouts", time.Now())
	return m.s.ListRollouts(ctx, f, p)
}

func (m *Store) UpdateRollout(ctx context.Context, r hubv1.Rollout, vehicles []hubv1.RolloutVehicle) (hubv1.Rollout, error) {
	defer m.observe("UpdateRollout", time.Now())
	return m.s.UpdateRollout(ctx, r, vehicles)
}

func (m *Store) ListRolloutVehicles(ctx context.Context, name string, generation int64, f store.RolloutVehicleFilter, p store.Page) ([]hubv1.RolloutVehicle, string, error) {
	defer m.observe("ListRolloutVehicles", time.Now())
	return m.s.ListRolloutVehicles(ctx, name, generation, f, p)
}

func (m *Store) PutDesired(ctx context.Context, d store.Desired) error {
	defer m.observe("PutDesired", time.Now())
	return m.s.PutDesired(ctx, d)
}

func (m *Store) PutDesiredBatch(ctx context.Context, ds []store.Desired) error {
	defer m.observe("PutDesiredBatch", time.Now())
	return m.s.PutDesiredBatch(ctx, ds)
}

func (m *Store) GetDesired(ctx context.Context, vehicle, half string) (store.Desired, error) {
	defer m.observe("GetDesired", time.Now())
	return m.s.GetDesired(ctx, vehicle, half)
}

func (m *Store) DesiredSince(ctx context.Context, seq int64, limit int) ([]store.Change, error) {
	defer m.observe("DesiredSince", time.Now())
	return m.s.DesiredSince(ctx, seq, limit)
}

func (m *Store) Sequence(ctx context.Context) (int64, error) {
	defer m.observe("Sequence", time.Now())
	return m.s.Sequence(ctx)
}

// Changes is the wrapped store's (not timed: it lives as long as ctx).
func (m *Store) Changes(ctx context.Context) (<-chan int64, error) { return m.s.Changes(ctx) }

func (m *Store) AppendAudit(ctx context.Context, e hubv1.AuditEntry) error {
	defer m.observe("AppendAudit", time.Now())
	return m.s.AppendAudit(ctx, e)
}

func (m *Store) ListAudit(ctx context.Context, p store.Page) ([]hubv1.AuditEntry, string, error) {
	defer m.observe("ListAudit", time.Now())
	return m.s.ListAudit(ctx, p)
}

func (m *Store) TryLease(ctx context.Context, name, holder string, now time.Time, ttl time.Duration) (bool, error) {
	defer m.observe("TryLease", time.Now())
	return m.s.TryLease(ctx, name, holder, now, ttl)
}

func (m *Store) MarkDirty(ctx context.Context, ds []store.Dirty) error {
	defer m.observe("MarkDirty", time.Now())
	return m.s.MarkDirty(ctx, ds)
}

func (m *Store) TakeDirty(ctx context.Context, limit int) ([]store.Dirty, error) {
	defer m.observe("TakeDirty", time.Now())
	return m.s.TakeDirty(ctx, limit)
}

func (m *Store) Counts(ctx context.Context, onlineSince time.Time) (store.Counts, error) {
	defer m.observe("Counts", time.Now())
	return m.s.Counts(ctx, onlineSince)
}

func (m *Store) Ping(ctx context.Context) error {
	defer m.observe("Ping", time.Now())
	return m.s.Ping(ctx)
}

// Close closes the wrapped store.
func (m *Store) Close() error { return m.s.Close() }
