// Package store is the hub's persistence port: one Store interface with two
// implementations, SQLite (internal/hub/store/sqlite, the embedded default:
// one file in the hub's data dir, modernc.org/sqlite, no cgo) and PostgreSQL
// (internal/hub/store/postgres, pgx, for a fleet that outgrows one machine
// or runs several hub replicas). internal/hub/store/storetest is the one
// suite both pass.
//
// Every write that changes a vehicle's desired state advances a global
// sequence. Changes(ctx) delivers the newest sequence number whenever it
// moves, on every hub process sharing the store (PostgreSQL: LISTEN/NOTIFY;
// SQLite: in-process), and DesiredSince lists what changed, so a replica
// wakes its long-polls with one query however many vehicles changed.
package store

import (
	"context"
	"errors"
	"time"

	hubv1 "github.com/misaki-io/misaki/api/hub/v1"
)

// Sentinel errors. Implementations wrap them; callers test with errors.Is.
var (
	// ErrNotFound: the named row does not exist.
	ErrNotFound = errors.New("not found")
	// ErrExists: a create found the name taken.
	ErrExists = errors.New("already exists")
	// ErrConflict: an update's expected version is not the stored one.
	ErrConflict = errors.New("changed since read")
	// ErrTokenInvalid: a bootstrap token is unknown, wrong, expired or
	// already used. One error for all four, so a caller learns nothing.
	ErrTokenInvalid = errors.New("bootstrap token invalid, expired or used")
	// ErrDigestMismatch: a chart version is pinned to other bytes.
	ErrDigestMismatch = errors.New("chart digest differs from the pinned one")
	// ErrStale: a desired revision is not above the stored one.
	ErrStale = errors.New("revision not above the stored one")
	// ErrBadCursor: Page.After is not a cursor the list gave.
	ErrBadCursor = errors.New("not a cursor this list gave")
)

// Store is the hub's state. Methods are safe for concurrent use. Lists are
// ordered by their key and paged: Page.After is the last key of the
// previous page ("" for the first), Page.Limit caps the items (0: 100).
// Times come back in UTC, truncated to the microsecond.
type Store interface {
	// Chart sources.
	CreateSource(ctx context.Context, s hubv1.ChartSource) error
	GetSource(ctx context.Context, name string) (hubv1.ChartSource, error)
	ListSources(ctx context.Context) ([]hubv1.ChartSource, error)
	DeleteSource(ctx context.Context, name string) error

	// PinChart records that (source, name, version) is digest. Pinning the
	// same digest again is a no-op; a different digest returns an error
	// wrapping ErrDigestMismatch that names both digests, and changes
	// nothing.
	PinChart(ctx context.Context, ref hubv1.ChartRef) error
	// GetPin returns the pinned digest, or ErrNotFound.
	GetPin(ctx context.Context, source, name, version string) (string, error)
	// PutBlob stores chart archive bytes under their digest
	// ("sha256:<hex>"); storing a digest twice is a no-op.
	PutBlob(ctx context.Context, digest string, data []byte) error
	GetBlob(ctx context.Context, digest string) ([]byte, error)

	// Vehicles.
	CreateVehicle(ctx context.Context, v hubv1.Vehicle) error
	GetVehicle(ctx context.Context, id string) (hubv1.Vehicle, error)
	// ListVehicles pages vehicles by ID. A non-nil match filters on the
	// vehicle's labels; the page still holds up to Limit matches.
	ListVehicles(ctx context.Context, p Page, match func(labels map[string]string) bool) ([]hubv1.Vehicle, string, error)
	// UpdateVehicle replaces the operator-owned fields (labels, and
	// capacity/allocatable when set) if v.ResourceVersion is the stored
	// one (else ErrConflict) and returns the stored vehicle.
	UpdateVehicle(ctx context.Context, v hubv1.Vehicle) (hubv1.Vehicle, error)
	DeleteVehicle(ctx context.Context, id string) error
	// SetEnrolled records a certificate issued to the vehicle.
	SetEnrolled(ctx context.Context, id string, at, certExpires time.Time) error
	// Seen sets the vehicle's last-seen time (never moves it back).
	Seen(ctx context.Context, id string, at time.Time) error
	// PutReported stores one half's report, and the facts, capacity and
	// allocatable it carries into the vehicle. It reports whether any of
	// those three changed (the hub then re-renders the vehicle).
	PutReported(ctx context.Context, id string, r hubv1.Reported) (factsChanged bool, err error)
	// GetReported returns the vehicle's reports, one per half reported.
	GetReported(ctx context.Context, id string) ([]hubv1.Reported, error)
	// ListReported returns the reports of many vehicles at once, by
	// vehicle ID, each ordered by half; a vehicle with no report (or that
	// does not exist) is not in the map.
	ListReported(ctx context.Context, ids []string) (map[string][]hubv1.Reported, error)

	// Bootstrap tokens. The store keeps the secret's hash only.
	CreateToken(ctx context.Context, t hubv1.BootstrapToken, secretHash []byte) error
	// UseToken spends the token if secretHash matches, it has not expired
	// at now and was not used, and returns its vehicle ID; else
	// ErrTokenInvalid. Two concurrent calls: at most one succeeds.
	UseToken(ctx context.Context, id string, secretHash []byte, now time.Time) (string, error)
	ListTokens(ctx context.Context, vehicleID string) ([]hubv1.BootstrapToken, error)

	// Operator API tokens.
	CreateOperatorToken(ctx context.Context, t OperatorToken) error
	// OperatorTokenByHash returns the token whose secret hashes to h.
	OperatorTokenByHash(ctx context.Context, h []byte) (OperatorToken, error)
	ListOperatorTokens(ctx context.Context) ([]OperatorToken, error)
	DeleteOperatorToken(ctx context.Context, name string) error

	// Deployments.
	CreateDeployment(ctx context.Context, d hubv1.Deployment) error
	GetDeployment(ctx context.Context, name string) (hubv1.Deployment, error)
	ListDeployments(ctx context.Context, p Page) ([]hubv1.Deployment, string, error)
	// UpdateDeployment stores d if d.Generation is the stored generation
	// (else ErrConflict), with the generation incremented, and returns it.
	UpdateDeployment(ctx context.Context, d hubv1.Deployment) (hubv1.Deployment, error)
	DeleteDeployment(ctx context.Context, name string) error

	// Deployment versions and rollouts. CreateDeployment and
	// UpdateDeployment also keep the generation they write (its spec, as
	// GetDeploymentVersion returns it) and start its rollout (Progressing,
	// no waves yet, CreatedBy the deployment's), in the same transaction;
	// an update makes the older rollouts still Progressing or Paused
	// Superseded. DeleteDeployment deletes them all.
	//
	// GetDeploymentVersion returns one generation's spec, or ErrNotFound.
	GetDeploymentVersion(ctx context.Context, name string, generation int64) (hubv1.Deployment, error)
	// ListDeploymentVersions returns every kept generation, newest first.
	ListDeploymentVersions(ctx context.Context, name string) ([]hubv1.Deployment, error)
	// GetRollout returns the rollout of one generation, or ErrNotFound.
	GetRollout(ctx context.Context, name string, generation int64) (hubv1.Rollout, error)
	// ListRollouts pages rollouts newest first; Page.After is the cursor
	// of the previous page.
	ListRollouts(ctx context.Context, f RolloutFilter, p Page) ([]hubv1.Rollout, string, error)
	// UpdateRollout stores r (phase, reason, waves, counts, tolerated) if
	// r.ResourceVersion is the stored one (else ErrConflict), with the
	// version incremented and Updated set to r.Updated, and upserts the
	// vehicle records given, in one transaction. It returns the stored
	// rollout.
	UpdateRollout(ctx context.Context, r hubv1.Rollout, vehicles []hubv1.RolloutVehicle) (hubv1.Rollout, error)
	// ListRolloutVehicles pages a rollout's vehicle records by vehicle
	// ID; ErrNotFound when the rollout does not exist.
	ListRolloutVehicles(ctx context.Context, name string, generation int64, f RolloutVehicleFilter, p Page) ([]hubv1.RolloutVehicle, string, error)

	// Desired state.
	//
	// PutDesired stores a signed revision if d.Revision is above the
	// vehicle half's stored revision (else ErrStale), advances the change
	// sequence and, on PostgreSQL, notifies every listener on commit.
	PutDesired(ctx context.Context, d Desired) error
	// PutDesiredBatch stores several revisions in one transaction, all or
	// nothing: each entry obeys PutDesired's rules in order (a later
	// entry for the same vehicle half must be above an earlier one), each
	// gets its own sequence number, and listeners are woken once, with the
	// last. An error names the entry at fault; an empty batch is a no-op.
	PutDesiredBatch(ctx context.Context, ds []Desired) error
	// GetDesired returns a vehicle half's newest revision, or ErrNotFound.
	GetDesired(ctx context.Context, vehicle, half string) (Desired, error)
	// DesiredSince lists the (vehicle, half, revision) changed after seq,
	// in sequence order, at most limit, with the sequence of the last.
	DesiredSince(ctx context.Context, seq int64, limit int) ([]Change, error)
	// Sequence returns the newest change sequence.
	Sequence(ctx context.Context) (int64, error)
	// Changes delivers the newest sequence number each time it moves,
	// coalescing: a slow reader gets the latest, not every step. The
	// channel closes when ctx ends. Changes made by any process sharing
	// the store are delivered (within a second on PostgreSQL).
	Changes(ctx context.Context) (<-chan int64, error)

	// Audit log.
	AppendAudit(ctx context.Context, e hubv1.AuditEntry) error
	// ListAudit pages entries newest first; After is an entry ID.
	ListAudit(ctx context.Context, p Page) ([]hubv1.AuditEntry, string, error)

	// Leases elect the one replica that renders: TryLease takes or renews
	// name for holder until now+ttl if it is free, expired or already
	// holder's, and reports whether holder has it.
	TryLease(ctx context.Context, name, holder string, now time.Time, ttl time.Duration) (bool, error)

	// Dirty-vehicle queue: API writes mark the vehicles whose desired
	// state may change; the replica holding the "desired" lease takes
	// them. Marking a vehicle twice before it is taken keeps one entry
	// (Force if either asked for it). ID AllVehicles means every vehicle.
	MarkDirty(ctx context.Context, ds []Dirty) error
	// TakeDirty removes and returns up to limit entries (0: all), oldest
	// first.
	TakeDirty(ctx context.Context, limit int) ([]Dirty, error)

	// Counts returns the numbers /metrics reports.
	Counts(ctx context.Context, onlineSince time.Time) (Counts, error)

	// Ping checks the store answers (readiness).
	Ping(ctx context.Context) error
	Close() error
}

// Page selects one page of a list.
type Page struct {
	After string
	Limit int
}

// OperatorToken is an API bearer token for people and scripts.
type OperatorToken struct {
	Name    string
	Scope   string // ScopeRead, ScopeAdmin or ScopeCloudAgent
	Hash    []byte // SHA-256 of the secret
	Created time.Time
}

// Operator token scopes.
const (
	ScopeRead  = "read"  // every read an operator makes
	ScopeAdmin = "admin" // everything
	// ScopeCloudAgent is the agent that applies every vehicle's cloud
	// half in the cloud cluster: it reads any vehicle's cloud half and
	// its change feed, and reports on it; nothing else.
	ScopeCloudAgent = "cloud-agent"
)

// Desired is a stored signed revision of one half of one vehicle.
type Desired struct {
	hubv1.Desired
	// ContentHash identifies the content apart from revision and times
	// (objects, placement, deployment generations), so the hub issues a
	// new revision only when something the vehicle runs changes, or to
	// refresh one nearing expiry.
	ContentHash string
	// Placement is the placement decision, kept beside the envelope for
	// the API (it is also inside the signed payload).
	Placement []hubv1.ComponentPlacement
	// Objects are the kind/namespace/name of the objects, for the twin.
	Objects []string
	// Seq is the change sequence the write got (set by PutDesired).
	Seq int64
}

// Dirty is a vehicle whose desired state must be recomputed; Force
// issues a new revision even if the content did not change (after a key
// rotation).
type Dirty struct {
	ID    string
	Force bool
}

// AllVehicles as a Dirty ID stands for every vehicle.
const AllVehicles = "*"

// Counts are fleet-wide numbers for /metrics.
type Counts struct {
	Vehicles int64
	// Online: vehicles seen at or after onlineSince.
	Online int64
	// Pending: vehicle halves whose newest desired revision is above the
	// revision their last report says is applied (or with no report).
	Pending int64
}

// Change is one desired revision written, as DesiredSince lists it.
type Change struct {
	Seq      int64
	Vehicle  string
	Half     string
	Revision int64
}

// RolloutFilter selects rollouts; the zero value selects all.
type RolloutFilter struct {
	Deployment string // only this deployment's
	Active     bool   // only Progressing and Paused
}

// RolloutVehicleFilter selects a rollout's vehicles; the zero value
// selects all.
type RolloutVehicleFilter struct {
	State    string // only vehicles in this state
	Wave     *int   // only this wave's
	Released bool   // only released vehicles
}
