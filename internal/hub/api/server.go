// Package api is the hub's HTTP API (/v1, JSON over HTTPS): chart sources
// and charts, vehicles and their enrolment, deployments, the digital twin
// (desired and reported state, and the long-poll vehicles sync from), the
// trust roots, keys and the audit log. docs/hub.md describes it for
// people; openapi.json (served at /v1/openapi.json) for machines, and a
// test keeps the two route tables equal.
//
// Operators authenticate with bearer tokens (scope read, admin, or
// cloud-agent: the agent that runs every vehicle's cloud half, which
// reaches only cloud halves and the change feed), vehicles with their
// client certificate (internal/hub/enrol); a vehicle reaches only its own
// state. Every write is in the audit log.
package api

import (
	"context"
	_ "embed"
	"log/slog"
	"net/http"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	hubv1 "github.com/misaki-io/misaki/api/hub/v1"
	"github.com/misaki-io/misaki/internal/clock"
	"github.com/misaki-io/misaki/internal/hub/catalog"
	"github.com/misaki-io/misaki/internal/hub/desired"
	"github.com/misaki-io/misaki/internal/hub/enrol"
	"github.com/misaki-io/misaki/internal/hub/store"
	"github.com/misaki-io/misaki/internal/hub/wake"
)

//go:embed openapi.json
var openAPI []byte

// Catalog reads chart sources; catalog.Catalog is the implementation.
type Catalog interface {
	Check(ctx context.Context, src hubv1.ChartSource) error
	List(ctx context.Context, src hubv1.ChartSource) ([]hubv1.Chart, error)
	Fetch(ctx context.Context, src hubv1.ChartSource, name, version string) (*catalog.Archive, error)
}

// Trust serves the trust roots and rotates keys; the hub wires it to
// internal/trust.
type Trust interface {
	Root() (version int64, rootJSON []byte)
	// Version is Root's version alone (each long-poll answer carries it).
	Version() int64
	RootVersion(n int64) ([]byte, error)
	Rotate(ctx context.Context, role string) (version int64, err error)
}

// Options tune the API. The zero value means the defaults.
type Options struct {
	// OnlineWindow: a vehicle seen within it is online. Default 90s (three
	// default long-polls).
	OnlineWindow time.Duration
	// CertTTL is the validity of vehicle certificates. Default 90 days;
	// the agent renews at two thirds.
	CertTTL time.Duration
	// TokenTTL is the default validity of bootstrap tokens. Default 24h.
	TokenTTL time.Duration
	// MaxWait caps a long-poll's wait. Default 5 minutes.
	MaxWait time.Duration
	// Ready reports whether the hub can serve (readyz); nil: the store's Ping.
	Ready func(ctx context.Context) error
	// Rollouts is kicked when a rollout may move; nil: the rollout runner
	// finds out at its next pass.
	Rollouts Kicker
	// Written, if set, is called after the API served a write (any method
	// but GET and HEAD) with a 2xx status: the web UI refreshes its pages.
	Written func()
}

func (o *Options) defaults() {
	if o.OnlineWindow <= 0 {
		o.OnlineWindow = 90 * time.Second
	}
	if o.CertTTL <= 0 {
		o.CertTTL = 90 * 24 * time.Hour
	}
	if o.TokenTTL <= 0 {
		o.TokenTTL = 24 * time.Hour
	}
	if o.MaxWait <= 0 {
		o.MaxWait = 5 * time.Minute
	}
}

// Server serves the API.
type Server struct {
	st      store.Store
	cat     Catalog
	ca      *enrol.CA
	trust   Trust
	issuer  *desired.Issuer
	waker   *wake.Waker
	clk     clock.Clock
	log     *slog.Logger
	opts    Options
	metrics *metrics
	mux     *http.ServeMux

	tokens tokenCache

	seenMu   sync.Mutex // guards lastSeen
	lastSeen map[string]time.Time
}

// New builds the API. It does no I/O.
func New(st store.Store, cat Catalog, ca *enrol.CA, tr Trust, is *desired.Issuer, wk *wake.Waker, clk clock.Clock, reg prometheus.Registerer, opts Options, log *slog.Logger) *Server {
	opts.defaults()
	s := &Server{
		st: st, cat: cat, ca: ca, trust: tr, issuer: is, waker: wk, clk: clk, opts: opts,
		log:      log.With("component", "api"),
		tokens:   tokenCache{m: map[string]cachedToken{}},
		lastSeen: map[string]time.Time{},
	}
	s.metrics = newMetrics(reg, wk)
	s.mux = http.NewServeMux()
	for _, rt := range s.routes() {
		s.mux.Handle(rt.pattern, s.metrics.instrument(rt.pattern, s.guard(rt.access, rt.h), opts.Written))
	}
	s.mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) { w.Write([]byte("ok\n")) })
	s.mux.HandleFunc("GET /readyz", s.readyz)
	return s
}

// Handler is the API's HTTP handler.
func (s *Server) Handler() http.Handler { return s.mux }

type route struct {
	pattern string
	access  access
	h       func(http.ResponseWriter, *http.Request) error
	// For the OpenAPI document: what it does, the request and response
	// body types (nil: none) and the query parameters ("name: what").
	doc     string
	in, out any
	query   []string
}

// routes is the API's route table; openapi.json is generated from it
// (go test ./internal/hub/api -run TestOpenAPI -update).
func (s *Server) routes() []route {
	pageQ := []string{"limit: items per page, 1 to 1000 (default 100)", "after: the next cursor of the previous page"}
	return []route{
		{"GET /v1/openapi.json", public, s.openapi, "This document.", nil, nil, nil},
		{"GET /v1/trust/root", public, s.getRoot, "The newest trust root (TUF root.json).", nil, nil, nil},
		{"GET /v1/trust/root/{file}", public, s.getRootVersion, "Trust root version n, as {n}.json; agents walk from their pinned root one version at a time.", nil, nil, nil},
		{"POST /v1/keys/rotate", admin, s.rotateKeys, "Rotate the targets (signing) or root key; every vehicle gets a revision signed with the new key.", hubv1.RotateRequest{}, hubv1.RotateResult{}, nil},

		{"GET /v1/whoami", read, s.whoami, "The operator token the request carries: its name and scope (no secret).", nil, hubv1.OperatorToken{}, nil},

		{"GET /v1/sources", read, s.listSources, "Chart sources.", nil, hubv1.List[hubv1.ChartSource]{}, nil},
		{"POST /v1/sources", admin, s.createSource, "Add a chart source (it is reached before it is stored).", hubv1.ChartSource{}, hubv1.ChartSource{}, nil},
		{"GET /v1/sources/{name}", read, s.getSource, "One chart source.", nil, hubv1.ChartSource{}, nil},
		{"DELETE /v1/sources/{name}", admin, s.deleteSource, "Remove a chart source no deployment uses.", nil, nil, nil},
		{"GET /v1/charts", read, s.listCharts, "Charts and versions of every source (or ?source=), pinned versions marked.", nil, hubv1.List[hubv1.Chart]{}, []string{"source: only this source"}},
		{"GET /v1/sources/{name}/charts/{chart}/versions/{version}", read, s.getChartVersion, "One chart version: digest, pinning, values schema.", nil, hubv1.ChartVersion{}, nil},

		{"GET /v1/vehicles", read, s.listVehicles, "Vehicles, filtered by label selector and state.", nil, hubv1.List[hubv1.Vehicle]{}, append([]string{"selector: a label selector", "state: online or offline"}, pageQ...)},
		{"GET /v1/twins", read, s.listTwins, "A page of vehicles (filtered as GET /v1/vehicles) with where each half stands: desired and applied revision, phase, waiting revision, components by place and the number of differences; one call per fleet view.", nil, hubv1.List[hubv1.TwinSummary]{}, append([]string{"selector: a label selector", "state: online or offline"}, pageQ...)},
		{"POST /v1/vehicles", admin, s.createVehicle, "Register a vehicle (before its bootstrap token).", hubv1.Vehicle{}, hubv1.Vehicle{}, nil},
		{"GET /v1/vehicles/{id}", readOrVehicle, s.getTwin, "The digital twin: the vehicle, desired and reported state, their delta, and placement.", nil, hubv1.Twin{}, nil},
		{"PATCH /v1/vehicles/{id}", admin, s.patchVehicle, "Change a vehicle's labels, capacity or allocatable.", hubv1.VehiclePatch{}, hubv1.Vehicle{}, nil},
		{"DELETE /v1/vehicles/{id}", admin, s.deleteVehicle, "Forget a vehicle.", nil, nil, nil},
		{"GET /v1/vehicles/{id}/desired", agent, s.getDesired, "Long-poll: the newest signed revision above ?after= at once, else 304 after ?wait=. A cloud-agent token reads any vehicle's cloud half.", nil, hubv1.Desired{}, []string{"after: the revision the agent has (default 0)", "wait: how long to wait, such as 30s (default 30s, at most the hub's max wait)", "half: vehicle (default) or cloud"}},
		{"PUT /v1/vehicles/{id}/reported", agent, s.putReported, "The agent's report for one half (idempotent). A cloud-agent token reports any vehicle's cloud half (without facts or resources).", hubv1.Reported{}, nil, nil},
		{"GET /v1/changes", feed, s.getChanges, "Long-poll: the vehicles whose half got a new revision after change sequence ?after=, oldest first, at once; else an empty list after ?wait=. Seq is the ?after= of the next call.", nil, hubv1.Changes{}, []string{"half: vehicle or cloud (required)", "after: the seq of the previous answer (default 0: every vehicle's newest revision)", "wait: how long to wait, such as 30s (default 30s, at most the hub's max wait)", "limit: items at most, 1 to 5000 (default 500)"}},
		{"POST /v1/vehicles/{id}/certificate", vehicle, s.renewCertificate, "Renew the vehicle's certificate (mTLS with the current one).", hubv1.RenewRequest{}, hubv1.Certificate{}, nil},
		{"POST /v1/vehicles/{id}/tokens", admin, s.createToken, "A one-time bootstrap token for the vehicle; the secret is in this answer only.", hubv1.TokenRequest{}, hubv1.BootstrapToken{}, nil},
		{"GET /v1/vehicles/{id}/tokens", read, s.listTokens, "The vehicle's bootstrap tokens (without secrets).", nil, hubv1.List[hubv1.BootstrapToken]{}, nil},
		{"POST /v1/enrol", public, s.enrol, "Spend a bootstrap token: a CSR in, the vehicle's client certificate out.", hubv1.EnrolRequest{}, hubv1.Certificate{}, nil},

		{"GET /v1/deployments", read, s.listDeployments, "Deployments.", nil, hubv1.List[hubv1.Deployment]{}, pageQ},
		{"POST /v1/deployments", admin, s.createDeployment, "Create a deployment: the chart version is pinned by digest and the values checked against its schema.", hubv1.Deployment{}, hubv1.Deployment{}, nil},
		{"GET /v1/deployments/{name}", read, s.getDeployment, "One deployment.", nil, hubv1.Deployment{}, nil},
		{"PUT /v1/deployments/{name}", admin, s.putDeployment, "Replace a deployment's spec; generation must be the one read.", hubv1.Deployment{}, hubv1.Deployment{}, nil},
		{"DELETE /v1/deployments/{name}", admin, s.deleteDeployment, "Delete a deployment (its vehicles get revisions without it).", nil, nil, nil},
		{"GET /v1/deployments/{name}/versions", read, s.listVersions, "Every generation of the deployment's spec, newest first.", nil, hubv1.List[hubv1.Deployment]{}, nil},
		{"POST /v1/deployments/{name}/rollback", admin, s.rollback, "Roll back: a new generation with the spec of an earlier one (default: the one before the current), rolled out by that spec's policy.", hubv1.RollbackRequest{}, hubv1.Deployment{}, nil},
		{"GET /v1/deployments/{name}/rollouts", read, s.listDeploymentRollouts, "The deployment's rollouts, newest first.", nil, hubv1.List[hubv1.Rollout]{}, pageQ},
		{"GET /v1/deployments/{name}/rollouts/{generation}", read, s.getRollout, "One generation's rollout: phase, the reason for a pause, waves and counts per vehicle state.", nil, hubv1.Rollout{}, nil},
		{"GET /v1/deployments/{name}/rollouts/{generation}/vehicles", read, s.listRolloutVehicles, "The rollout's vehicles: wave, released, state and reason.", nil, hubv1.List[hubv1.RolloutVehicle]{}, append([]string{"state: pending, offline, applying, waiting, healthy, failed or superseded", "wave: a wave index from 0", "released: true for released vehicles only"}, pageQ...)},
		{"POST /v1/deployments/{name}/rollouts/{generation}/pause", admin, s.pauseRollout, "Pause a Progressing rollout: no more vehicles are released.", hubv1.RolloutAction{}, hubv1.Rollout{}, nil},
		{"POST /v1/deployments/{name}/rollouts/{generation}/resume", admin, s.resumeRollout, "Resume a Paused rollout: failures so far are tolerated, and a wave past its deadline without answers is closed.", hubv1.RolloutAction{}, hubv1.Rollout{}, nil},
		{"POST /v1/deployments/{name}/rollouts/{generation}/abort", admin, s.abortRollout, "Abort a rollout: the vehicles it released go back to the generation before.", hubv1.RolloutAction{}, hubv1.Rollout{}, nil},
		{"GET /v1/rollouts", read, s.listAllRollouts, "Rollouts of every deployment, newest first.", nil, hubv1.List[hubv1.Rollout]{}, append([]string{"active: true for Progressing and Paused rollouts only"}, pageQ...)},
		{"POST /v1/preview", read, s.preview, "Render and place a deployment (new or changed) for one vehicle, without storing anything.", hubv1.PreviewRequest{}, hubv1.Preview{}, nil},

		{"GET /v1/operator-tokens", admin, s.listOperatorTokens, "Operator API tokens (without secrets).", nil, hubv1.List[hubv1.OperatorToken]{}, nil},
		{"POST /v1/operator-tokens", admin, s.createOperatorToken, "A new operator token (scope read, admin or cloud-agent); the secret is in this answer only.", hubv1.OperatorToken{}, hubv1.OperatorToken{}, nil},
		{"DELETE /v1/operator-tokens/{name}", admin, s.deleteOperatorToken, "Revoke an operator token (within 10 s on every replica).", nil, nil, nil},
		{"GET /v1/audit", read, s.listAudit, "The audit log, newest first.", nil, hubv1.List[hubv1.AuditEntry]{}, pageQ},
	}
}

func (s *Server) openapi(w http.ResponseWriter, r *http.Request) error {
	w.Header().Set("Content-Type", "application/json")
	w.Write(openAPI)
	return nil
}

func (s *Server) readyz(w http.ResponseWriter, r *http.Request) {
	ready := s.opts.Ready
	if ready == nil {
		ready = s.st.Ping
	}
	ctx, cancel := context.WithTimeout(r.Context(), 2*time.Second)
	defer cancel()
	if err := ready(ctx); err != nil {
		http.Error(w, "not ready: "+err.Error(), http.StatusServiceUnavailable)
		return
	}
	w.Write([]byte("ok\n"))
}

// seenEvery throttles last-seen writes: one per vehicle per interval.
const seenEvery = 15 * time.Second

func (s *Server) seen(ctx context.Context, id string) {
	now := s.clk.Now()
	s.seenMu.Lock()
	last, ok := s.lastSeen[id]
	if ok && now.Sub(last) < seenEvery {
		s.seenMu.Unlock()
		return
	}
	s.lastSeen[id] = now
	s.seenMu.Unlock()
	if err := s.st.Seen(ctx, id, now.UTC()); err != nil && ctx.Err() == nil {
		s.log.Warn("record last seen", "vehicle", id, "err", err)
	}
}

// audit records a write. A failure to record is logged, not returned: the
// write already happened.
func (s *Server) audit(r *http.Request, action, object, detail string) {
	e := hubv1.AuditEntry{Time: s.clk.Now().UTC(), Actor: principal(r.Context()).Actor(), Action: action, Object: object, Detail: detail}
	if err := s.st.AppendAudit(r.Context(), e); err != nil {
		s.log.Error("audit", "entry", e, "err", err)
	}
}

// online fills v.Online from its last-seen time.
func (s *Server) online(v *hubv1.Vehicle) {
	v.Online = v.LastSeen != nil && s.clk.Now().Sub(*v.LastSeen) < s.opts.OnlineWindow
}

// markDirty queues vehicles for the issuer and kicks it.
func (s *Server) markDirty(ctx context.Context, ds ...store.Dirty) error {
	if len(ds) == 0 {
		return nil
	}
	if err := s.st.MarkDirty(ctx, ds); err != nil {
		return err
	}
	if s.issuer != nil {
		s.issuer.Kick()
	}
	s.nudgeRollouts() // a new or relabelled vehicle may join a rollout
	return nil
}
