package agent

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sort"
	"strings"
	"time"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/controller-runtime/pkg/client"

	hubv1 "github.com/misaki-io/misaki/api/hub/v1"
	"github.com/misaki-io/misaki/internal/agent/apply"
	"github.com/misaki-io/misaki/internal/agent/gate"
	"github.com/misaki-io/misaki/internal/agent/health"
	"github.com/misaki-io/misaki/internal/agent/ledger"
	"github.com/misaki-io/misaki/internal/agent/truststate"
	"github.com/misaki-io/misaki/internal/backoff"
	"github.com/misaki-io/misaki/internal/clock"
	"github.com/misaki-io/misaki/internal/trust"
)

// Hub is the part of the hub's API a half uses (internal/hubclient's
// Client).
type Hub interface {
	Desired(ctx context.Context, vehicle, half string, after int64, wait time.Duration) (*hubv1.Desired, error)
	Report(ctx context.Context, vehicle string, r hubv1.Reported) error
	Root(ctx context.Context, n int64) ([]byte, error)
}

// HalfConfig configures one half of one vehicle.
type HalfConfig struct {
	Vehicle string
	Half    string
	// Dir holds the half's trust state and ledger.
	Dir string
	// Pinned is the root to start a new trust state from.
	Pinned []byte
	Hub    Hub
	// Client writes to and reads from the cluster (no cache).
	Client client.Client
	// Namespace confines the half's objects (the cloud half).
	Namespace string
	Clock     clock.Clock
	// PollWait is the long-poll wait. Zero: the half does not poll by
	// itself and fetches only when Notify is called (the cloud agent's
	// halves, woken by the hub's change feed).
	PollWait time.Duration
	// DriftInterval is how often the applied manifests are re-applied
	// (default 5m).
	DriftInterval time.Duration
	// HealthDeadline is the readiness deadline of a deployment whose
	// policy names none (default 10m); HealthPoll how often readiness is
	// read while waiting (default 2s).
	HealthDeadline, HealthPoll time.Duration
	// Backoff is the retry policy for hub calls.
	Backoff backoff.Policy
	// Reports receives the half's reports.
	Reports *Reporter
	// Extra adds to every report (facts, capacity, agent version).
	Extra func(*hubv1.Reported)
	// Gates is how the half evaluates the vehicle-state gates of the
	// revisions it applies. The zero value evaluates them with no source
	// of the vehicle's state: every gate fails closed.
	Gates GateConfig
	// Metrics, if set, count applies, objects, refusals and phases.
	Metrics *Metrics
	Log     *slog.Logger
}

// GateConfig is how a half evaluates vehicle-state gates (issue 19,
// docs/agent.md "Vehicle-state gates"). A newly verified revision that
// changes, adds or drops a deployment with gates is applied only once
// every such gate holds; until then it waits (Phase Waiting) and the
// applied revision keeps running.
type GateConfig struct {
	// Ignore applies revisions without evaluating their gates: the cloud
	// half's, as gates describe the car.
	Ignore bool
	// Source reads the vehicle's state; nil: none, and every gate fails
	// with a reason saying so.
	Source gate.Source
	// Zone is the vehicle's time zone when its state names none (nil:
	// UTC).
	Zone *time.Location
	// Interval is how often the gates of a waiting revision are
	// evaluated again (default 15s).
	Interval time.Duration
}

// errNoSource is every gate's reason when the agent has no source of the
// vehicle's state.
var errNoSource = errors.New("no vehicle state source (--vehicle-state)")

// gateReadTimeout bounds one read of the vehicle's state: the run loop
// waits for it.
const gateReadTimeout = 10 * time.Second

func (c *HalfConfig) defaults() {
	if c.Clock == nil {
		c.Clock = clock.Real{}
	}
	if c.DriftInterval <= 0 {
		c.DriftInterval = 5 * time.Minute
	}
	if c.HealthDeadline <= 0 {
		c.HealthDeadline = 10 * time.Minute
	}
	if c.HealthPoll <= 0 {
		c.HealthPoll = 2 * time.Second
	}
	if c.Gates.Interval <= 0 {
		c.Gates.Interval = 15 * time.Second
	}
	if c.Log == nil {
		c.Log = slog.New(slog.DiscardHandler)
	}
}

// Half brings one half of one vehicle to its newest verified desired
// state and keeps it there. Run it once.
type Half struct {
	cfg     HalfConfig
	log     *slog.Logger
	gate    *truststate.Gate
	ledger  *ledger.Ledger
	applier *apply.Applier

	docs    chan *hubv1.Desired // newest fetched document (capacity 1, latest wins)
	notify  chan struct{}
	refresh chan struct{}

	// Owned by the run loop.
	rec      ledger.Record
	refused  *hubv1.Refusal
	statuses []health.Status
	// conflicts are the field-ownership conflicts the target's apply
	// overrode, by Ref.ID: reported with the objects' states.
	conflicts map[string]string
	lastErr   string
	// gateResults are the waiting target's gates as last evaluated (Phase
	// Waiting).
	gateResults []gate.Result
	// deadlines per deployment while Progressing.
	deadlines map[string]time.Time
	// retry backs off applies that failed for a transient reason (the
	// API server unreachable), which stay Applying.
	retry *backoff.Backoff
}

// NewHalf opens the half's trust state and ledger, finishing an
// acceptance a crash interrupted.
func NewHalf(cfg HalfConfig) (*Half, error) {
	cfg.defaults()
	now := cfg.Clock.Now()
	ts, err := truststate.Open(cfg.Dir, cfg.Vehicle, cfg.Pinned, now)
	if err != nil {
		return nil, err
	}
	l, rec, err := ledger.Open(cfg.Dir, cfg.Half)
	if err != nil {
		return nil, err
	}
	h := &Half{
		cfg: cfg, log: cfg.Log.With("vehicle", cfg.Vehicle, "half", cfg.Half),
		gate: ts, ledger: l, rec: rec,
		applier: apply.New(cfg.Client, apply.Options{Vehicle: cfg.Vehicle, Half: cfg.Half, Namespace: cfg.Namespace}),
		docs:    make(chan *hubv1.Desired, 1),
		notify:  make(chan struct{}, 1),
		refresh: make(chan struct{}, 1),
		retry:   backoff.New(cfg.Backoff, cfg.Clock),
	}
	switch h.rec.Phase {
	case hubv1.PhaseProgressing, hubv1.PhaseHealthy, hubv1.PhaseFailed:
		if h.rec.AppliedDeployments != nil || len(h.rec.Applied) == 0 || h.rec.Target == nil {
			break
		}
		// A record of an agent that did not keep them: the target's are
		// the applied revision's (or those of a refresh of it). An
		// interrupted apply (Applying) sets them when it is done; until
		// then every gated deployment counts as changed. Failed
		// deployments may have been rolled back.
		if st, err := h.payload(); err == nil {
			h.rec.AppliedDeployments = st.Deployments
			if f := h.rec.Failure; h.rec.Phase == hubv1.PhaseFailed && f != nil && f.RolledBackTo > 0 {
				h.rec.RolledBack = f.Deployments
			}
		}
	}
	if err := h.finishPending(now); err != nil {
		return nil, err
	}
	return h, nil
}

// finishPending completes an acceptance interrupted between the ledger
// write and the trust state write.
func (h *Half) finishPending(now time.Time) error {
	p := h.rec.Pending
	if p == nil {
		return nil
	}
	acc := h.gate.Accepted(h.cfg.Half)
	switch {
	case acc.Revision == p.Revision && acc.Digest == p.Digest:
		// Accepted before the crash.
	default:
		if _, err := h.gate.Accept(*p, h.cfg.Half, now); err != nil {
			h.log.Warn("a document left pending by a restart no longer verifies; dropped", "revision", p.Revision, "err", err)
			h.rec.Pending = nil
			return h.ledger.Save(h.rec)
		}
	}
	h.rec.Target, h.rec.Pending = p, nil
	h.rec.Failure = nil
	st, err := h.payload()
	if err != nil {
		h.rec.Phase = hubv1.PhaseApplying // the apply fails the revision, with the error
		return h.ledger.Save(h.rec)
	}
	// A new revision, as if it had just arrived: it may have to wait for
	// its gates.
	return h.admit(st)
}

// Notify asks the half to fetch its desired state now (the cloud agent
// calls it when the change feed names the vehicle).
func (h *Half) Notify() {
	select {
	case h.notify <- struct{}{}:
	default:
	}
}

// Refresh asks the half to report again (the facts that Extra adds
// changed).
func (h *Half) Refresh() {
	select {
	case h.refresh <- struct{}{}:
	default:
	}
}

// RootVersion is the newest trust root the half verified.
func (h *Half) RootVersion() int64 { return h.gate.RootVersion() }

// Accepted is the revision of the newest accepted document.
func (h *Half) Accepted() int64 { return h.gate.Accepted(h.cfg.Half).Revision }

// Run converges until ctx ends. It returns only ctx's error, or an error
// that stops the agent (the state directory cannot be written).
func (h *Half) Run(ctx context.Context) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	go h.fetchLoop(ctx)

	// A restart re-applies what the ledger says, with no hub needed.
	if err := h.resume(ctx); err != nil {
		return err
	}
	drift := h.cfg.Clock.NewTimer(h.cfg.DriftInterval)
	defer func() { drift.Stop() }()
	var poll clock.Timer
	var pollC <-chan time.Time
	for {
		// One timer at a time: readiness polls while Progressing, apply
		// retries (backing off) while an apply met a transient error.
		if pollC == nil {
			switch h.rec.Phase {
			case hubv1.PhaseProgressing:
				poll = h.cfg.Clock.NewTimer(h.cfg.HealthPoll)
				pollC = poll.C()
			case hubv1.PhaseApplying:
				poll = h.cfg.Clock.NewTimer(h.retry.Next())
				pollC = poll.C()
			case hubv1.PhaseWaiting:
				poll = h.cfg.Clock.NewTimer(h.cfg.Gates.Interval)
				pollC = poll.C()
			}
		}
		select {
		case <-ctx.Done():
			if poll != nil {
				poll.Stop()
			}
			return ctx.Err()
		case d := <-h.docs:
			if poll != nil {
				poll.Stop()
				pollC = nil
			}
			h.retry.Reset()
			if err := h.take(ctx, d); err != nil {
				return err
			}
		case <-pollC:
			pollC = nil
			var err error
			switch h.rec.Phase {
			case hubv1.PhaseApplying:
				err = h.applyTarget(ctx)
			case hubv1.PhaseWaiting:
				err = h.evalGates(ctx)
			default:
				err = h.judge(ctx)
			}
			if err != nil {
				return err
			}
		case <-h.refresh:
			h.report()
		case <-drift.C():
			drift = h.cfg.Clock.NewTimer(h.cfg.DriftInterval)
			h.correctDrift(ctx)
		}
	}
}

// resume continues from the ledger after a start.
func (h *Half) resume(ctx context.Context) error {
	if h.rec.Target == nil {
		h.report()
		return nil
	}
	switch h.rec.Phase {
	case hubv1.PhaseApplying, "":
		h.log.Info("resuming an interrupted apply", "revision", h.rec.Target.Revision)
		return h.applyTarget(ctx)
	case hubv1.PhaseProgressing:
		// The deadline is counted again from now: how long the agent was
		// down is unknown, and a restart must not fail a revision.
		h.correctDrift(ctx)
		h.startDeadlines()
	case hubv1.PhaseWaiting:
		// Still waiting unless the gates hold now; meanwhile the applied
		// revision is put back as after any restart.
		h.log.Info("resuming the wait for vehicle-state gates", "revision", h.rec.Target.Revision, "applied", h.rec.AppliedRevision)
		if err := h.evalGates(ctx); err != nil {
			return err
		}
		if h.rec.Phase == hubv1.PhaseWaiting {
			h.correctDrift(ctx)
		}
	default:
		h.correctDrift(ctx)
	}
	return nil
}

// fetchLoop long-polls the hub (or fetches on Notify) and hands verified
// candidates to the run loop. Errors back off on the clock.
func (h *Half) fetchLoop(ctx context.Context) {
	b := backoff.New(h.cfg.Backoff, h.cfg.Clock)
	// handed is the newest revision given to the run loop: the next fetch
	// asks above it, not above the accepted one, which the run loop may
	// not have reached yet.
	var handed int64
	for ctx.Err() == nil {
		wait := h.cfg.PollWait
		if wait == 0 {
			select {
			case <-ctx.Done():
				return
			case <-h.notify:
			}
		}
		after := max(h.gate.Accepted(h.cfg.Half).Revision, handed)
		d, err := h.cfg.Hub.Desired(ctx, h.cfg.Vehicle, h.cfg.Half, after, wait)
		if err != nil {
			if ctx.Err() != nil {
				return
			}
			delay := b.Next()
			h.log.Info("hub unreachable; keeping the applied state", "err", err, "retry", delay.Round(time.Millisecond))
			if backoff.Sleep(ctx, h.cfg.Clock, delay) != nil {
				return
			}
			if wait == 0 {
				h.Notify()
			}
			continue
		}
		b.Reset()
		if d == nil {
			continue
		}
		if err := h.walkRoots(ctx, d.RootVersion); err != nil {
			h.log.Warn("trust root update failed", "err", err)
		}
		handed = d.Revision
		// Latest wins: replace an unread document.
		select {
		case <-h.docs:
		default:
		}
		h.docs <- d
		if wait == 0 {
			// Ask again: the hub may hold a newer one already.
			h.Notify()
		}
	}
}

// walkRoots fetches and verifies roots up to version want, one at a time.
func (h *Half) walkRoots(ctx context.Context, want int64) error {
	for v := h.gate.RootVersion(); v < want; v = h.gate.RootVersion() {
		next, err := h.cfg.Hub.Root(ctx, v+1)
		if err != nil {
			return fmt.Errorf("fetch root %d: %w", v+1, err)
		}
		if err := h.gate.UpdateRoot(next, h.cfg.Clock.Now()); err != nil {
			return fmt.Errorf("root %d: %w", v+1, err)
		}
		h.log.Info("trust root updated", "version", v+1)
	}
	return nil
}

// take verifies d and, if it passes, makes it the target and applies it.
func (h *Half) take(ctx context.Context, d *hubv1.Desired) error {
	now := h.cfg.Clock.Now()
	st, err := h.gate.Check(*d, h.cfg.Half, now)
	if err != nil {
		return h.refuse(d, err)
	}
	h.rec.Pending = d
	if err := h.ledger.Save(h.rec); err != nil {
		return err
	}
	if _, err := h.gate.Accept(*d, h.cfg.Half, now); err != nil {
		h.rec.Pending = nil
		if serr := h.ledger.Save(h.rec); serr != nil {
			return serr
		}
		var re *trust.RefusalError
		if errors.As(err, &re) {
			return h.refuse(d, err)
		}
		return err // the trust state could not be written
	}
	h.refused = nil
	if h.rec.Phase == hubv1.PhaseWaiting && h.rec.Target != nil {
		h.log.Info("a newer revision replaces the one waiting for its gates", "waiting", h.rec.Target.Revision, "revision", d.Revision)
	}
	h.rec.Target, h.rec.Pending = d, nil
	h.rec.Failure = nil
	h.log.Info("revision accepted", "revision", d.Revision, "digest", d.Digest, "objects", len(st.Objects))
	if err := h.admit(st); err != nil {
		return err
	}
	switch h.rec.Phase {
	case hubv1.PhaseWaiting:
		return h.evalGates(ctx)
	case hubv1.PhaseApplying:
		return h.applyTarget(ctx)
	}
	h.report()
	return nil
}

// admit sets and records the phase of a target just accepted: Failed for
// the objects of a revision that failed here (a refresh of them is not
// applied again), Waiting when it changes a deployment that has
// vehicle-state gates, else Applying.
func (h *Half) admit(st *hubv1.DesiredState) error {
	h.gateResults = nil
	switch {
	case h.rec.FailedContent != "" && ledger.ContentHash(st.Objects) == h.rec.FailedContent:
		h.rec.Phase = hubv1.PhaseFailed
		h.rec.Failure = &hubv1.Failure{Revision: h.rec.Target.Revision, Reason: "the same objects as a revision that failed on this vehicle; not applied again until they change"}
		if h.rec.LastHealthy != nil {
			h.rec.Failure.RolledBackTo = h.rec.LastHealthy.Revision
		}
	case len(h.gatesFor(st)) > 0:
		h.rec.Phase = hubv1.PhaseWaiting
	default:
		h.rec.Phase = hubv1.PhaseApplying
	}
	return h.ledger.Save(h.rec)
}

// gatesFor is the gates st must pass before it is applied over the
// applied revision (none for a half that ignores gates).
func (h *Half) gatesFor(st *hubv1.DesiredState) []string {
	if h.cfg.Gates.Ignore {
		return nil
	}
	return gatesBetween(h.running(), st.Deployments)
}

// gatesBetween is the gates a revision with the deployments next must
// pass to replace one with applied: those of each deployment that is
// new or whose generation changed, and those each dropped deployment had.
// Each gate is listed once, in the order found.
func gatesBetween(applied, next []hubv1.DeploymentRevision) []string {
	was := make(map[string]hubv1.DeploymentRevision, len(applied))
	for _, d := range applied {
		was[d.Name] = d
	}
	var out []string
	seen := map[string]bool{}
	add := func(gates []string) {
		for _, g := range gates {
			if k := strings.TrimSpace(g); !seen[k] {
				seen[k] = true
				out = append(out, g)
			}
		}
	}
	kept := make(map[string]bool, len(next))
	for _, d := range next {
		kept[d.Name] = true
		if old, ok := was[d.Name]; !ok || old.Generation != d.Generation {
			add(d.Gates)
		}
	}
	for _, d := range applied {
		if !kept[d.Name] {
			add(d.Gates)
		}
	}
	return out
}

// evalGates reads the vehicle's state and evaluates the waiting target's
// gates: when every one holds the target is applied; otherwise it keeps
// waiting, and the report says which gates do not hold and why.
func (h *Half) evalGates(ctx context.Context) error {
	st, err := h.payload()
	if err != nil {
		return h.failApply(ctx, err, nil)
	}
	names := h.gatesFor(st)
	var results []gate.Result
	if len(names) > 0 {
		results = h.readGates(ctx, names)
	}
	if gate.All(results) {
		if len(results) > 0 {
			h.log.Info("vehicle-state gates hold; applying", "revision", h.rec.Target.Revision, "gates", summary(results))
		}
		h.gateResults = nil
		h.rec.Phase = hubv1.PhaseApplying
		if err := h.ledger.Save(h.rec); err != nil {
			return err
		}
		return h.applyTarget(ctx)
	}
	if slices.Equal(results, h.gateResults) {
		h.log.Debug("revision still waits for vehicle-state gates", "revision", h.rec.Target.Revision, "gates", summary(results))
	} else {
		h.log.Info("revision waits for vehicle-state gates", "revision", h.rec.Target.Revision, "applied", h.rec.AppliedRevision, "gates", summary(results))
	}
	h.gateResults = results
	h.report()
	return nil
}

// readGates reads the vehicle's state once and evaluates names in it.
func (h *Half) readGates(ctx context.Context, names []string) []gate.Result {
	var st gate.State
	err := errNoSource
	if src := h.cfg.Gates.Source; src != nil {
		rctx, cancel := context.WithTimeout(ctx, gateReadTimeout)
		st, err = src.Read(rctx)
		cancel()
	}
	st.Zone = h.cfg.Gates.Zone
	return gate.EvalAll(names, st, err, h.cfg.Clock.Now())
}

// summary is results for a log line: "parked: parked is false; ...".
func summary(results []gate.Result) string {
	parts := make([]string, len(results))
	for i, r := range results {
		parts[i] = r.Gate + ": " + r.Reason
	}
	return strings.Join(parts, "; ")
}

// refuse reports a refused document; nothing else changes.
func (h *Half) refuse(d *hubv1.Desired, err error) error {
	var re *trust.RefusalError
	if !errors.As(err, &re) {
		h.log.Warn("document not verified", "revision", d.Revision, "err", err)
	} else {
		h.log.Warn("document refused", "revision", d.Revision, "reason", err)
	}
	h.refused = &hubv1.Refusal{Revision: d.Revision, Reason: err.Error()}
	if m := h.cfg.Metrics; m != nil {
		m.refusals.WithLabelValues(h.cfg.Half, refusalReason(err)).Inc()
	}
	h.report()
	return nil
}

// payload is the target's signed content (its digest was checked when it
// was accepted).
func (h *Half) payload() (*hubv1.DesiredState, error) {
	var st hubv1.DesiredState
	if err := json.Unmarshal(h.rec.Target.Envelope.Payload, &st); err != nil {
		return nil, fmt.Errorf("revision %d: payload: %w", h.rec.Target.Revision, err)
	}
	return &st, nil
}

// applyTarget applies the target's objects, prunes what it dropped, and
// starts the health deadlines.
func (h *Half) applyTarget(ctx context.Context) error {
	st, err := h.payload()
	if err != nil {
		return h.failApply(ctx, err, nil)
	}
	if err := h.applySet(ctx, st.Objects, st.Deployments, nil); err != nil {
		switch {
		case isStateErr(err):
			return err
		case ctx.Err() != nil:
			return nil // stopping: the ledger says Applying, the next start resumes
		case apply.Transient(err):
			h.lastErr = "apply, to be retried: " + err.Error()
			h.log.Warn("apply failed; retrying", "revision", h.rec.Target.Revision, "err", err)
			h.report()
			return nil
		}
		return h.failApply(ctx, err, st)
	}
	h.retry.Reset()
	h.lastErr = ""
	h.rec.Phase = hubv1.PhaseProgressing
	if err := h.ledger.Save(h.rec); err != nil {
		return err
	}
	h.statuses = nil // the previous revision's; the report lists the new objects as applied
	h.startDeadlines()
	h.report()
	return nil
}

// stateErr marks an error writing the agent's own state: it stops the
// agent rather than failing a revision.
type stateErr struct{ error }

func (e stateErr) Unwrap() error { return e.error }

func isStateErr(err error) bool {
	var s stateErr
	return errors.As(err, &s)
}

// applySet applies objs, the objects of the deployments deps (with
// those named in rolledBack as in the last healthy revision), as the
// half's whole set: the inventory grows by them first, and shrinks to
// them after the prune. The target's own objects (no rollback) are
// probed for conflicts first.
func (h *Half) applySet(ctx context.Context, objs []json.RawMessage, deps []hubv1.DeploymentRevision, rolledBack []string) error {
	probe := rolledBack == nil
	us, err := decode(objs)
	if err != nil {
		return err
	}
	prepared, err := h.applier.Prepare(us)
	if err != nil {
		return err
	}
	refs := make([]apply.Ref, len(us))
	for i, u := range us {
		refs[i] = apply.RefOf(u)
	}
	h.rec.Inventory = ledger.Union(h.rec.Inventory, refs)
	if err := h.ledger.Save(h.rec); err != nil {
		return stateErr{err}
	}
	start := h.cfg.Clock.Now()
	res, err := h.applier.Apply(ctx, prepared, probe)
	h.count(res)
	if probe || h.conflicts == nil {
		h.conflicts = map[string]string{}
	}
	for _, e := range res.Entries {
		if e.Conflict != "" {
			h.conflicts[e.Ref.ID()] = e.Conflict
			h.log.Warn("took over fields another manager owned", "object", e.Ref.String(), "conflict", e.Conflict)
		}
	}
	if err != nil {
		h.countApply("error", start)
		return err
	}
	h.log.Info("applied", "objects", len(us), "result", res.Summary())
	// Manifests of every object the inventory may hold, for the prune
	// rules' annotations: the previous set, then this one.
	manifests := map[string]*unstructured.Unstructured{}
	if old, err := decode(h.rec.Applied); err == nil {
		for _, u := range old {
			manifests[apply.RefOf(u).ID()] = u
		}
	}
	for _, u := range us {
		manifests[apply.RefOf(u).ID()] = u
	}
	stale := ledger.Minus(h.rec.Inventory, refs)
	pr, perr := h.applier.Prune(ctx, stale, manifests)
	h.count(pr)
	if len(stale) > 0 {
		h.log.Info("pruned", "result", pr.Summary())
	}
	if perr != nil {
		h.countApply("error", start)
	} else {
		h.countApply("ok", start)
	}
	// Objects kept by the prune rules leave the inventory: the agent no
	// longer manages them. Failed deletions stay, to be tried again.
	inv := refs
	for _, e := range pr.Entries {
		if e.Action == apply.Failed {
			inv = append(inv, e.Ref)
		}
	}
	h.rec.Inventory = ledger.Set(inv)
	h.rec.Applied = objs
	h.rec.AppliedDeployments = deps
	h.rec.RolledBack = rolledBack
	if h.rec.Target != nil {
		h.rec.AppliedRevision = h.rec.Target.Revision
	}
	if err := h.ledger.Save(h.rec); err != nil {
		return stateErr{err}
	}
	return perr
}

func decode(objs []json.RawMessage) ([]*unstructured.Unstructured, error) {
	out := make([]*unstructured.Unstructured, 0, len(objs))
	for i, raw := range objs {
		u := &unstructured.Unstructured{}
		if err := u.UnmarshalJSON(raw); err != nil {
			return nil, fmt.Errorf("object %d: %w", i, err)
		}
		out = append(out, u)
	}
	return out, nil
}

// startDeadlines sets each deployment's readiness deadline from now.
func (h *Half) startDeadlines() {
	now := h.cfg.Clock.Now()
	h.deadlines = map[string]time.Time{}
	st, err := h.payload()
	if err != nil {
		return
	}
	for _, d := range st.Deployments {
		h.deadlines[d.Name] = now.Add(h.deadline(d))
	}
}

func (h *Half) deadline(d hubv1.DeploymentRevision) time.Duration {
	if d.Health != nil && d.Health.Deadline != "" {
		if v, err := time.ParseDuration(d.Health.Deadline); err == nil && v > 0 {
			return v
		}
	}
	return h.cfg.HealthDeadline
}

// judge reads readiness once while Progressing: all ready is Healthy; a
// deployment not ready by its deadline fails the revision.
func (h *Half) judge(ctx context.Context) error {
	objs, err := decode(h.rec.Applied)
	if err != nil {
		return h.failApply(ctx, err, nil)
	}
	h.statuses = health.Check(ctx, h.cfg.Client, objs)
	if health.Ready(h.statuses) {
		h.rec.Phase = hubv1.PhaseHealthy
		h.rec.LastHealthy = &ledger.Snapshot{Revision: h.rec.Target.Revision, Objects: h.rec.Applied, Deployments: h.running()}
		h.rec.FailedContent = ""
		if err := h.ledger.Save(h.rec); err != nil {
			return err
		}
		h.log.Info("revision healthy", "revision", h.rec.Target.Revision)
		h.countPhase(hubv1.PhaseHealthy)
		h.report()
		return nil
	}
	now := h.cfg.Clock.Now()
	late := map[string]bool{}
	for _, s := range h.statuses {
		if s.State == hubv1.StateHealthy {
			continue
		}
		dl, ok := h.deadlines[s.Deployment]
		if !ok {
			dl = h.earliestDeadline()
		}
		if !now.Before(dl) {
			late[s.Deployment] = true
		}
	}
	if len(late) == 0 {
		h.report()
		return nil
	}
	return h.fail(ctx, late)
}

func (h *Half) earliestDeadline() time.Time {
	var first time.Time
	for _, d := range h.deadlines {
		if first.IsZero() || d.Before(first) {
			first = d
		}
	}
	if first.IsZero() {
		first = h.cfg.Clock.Now()
	}
	return first
}

// fail marks the target Failed because the deployments in late were not
// ready by their deadlines, and rolls back those whose policy asks.
func (h *Half) fail(ctx context.Context, late map[string]bool) error {
	var reasons []string
	for _, s := range h.statuses {
		if late[s.Deployment] && s.State != hubv1.StateHealthy {
			reasons = append(reasons, fmt.Sprintf("%s: %s", s.Ref, orDefault(s.Reason, s.State)))
		}
	}
	deps := make([]string, 0, len(late))
	for d := range late {
		deps = append(deps, d)
	}
	sort.Strings(deps)
	f := &hubv1.Failure{Revision: h.rec.Target.Revision, Deployments: deps,
		Reason: "not ready by the deadline: " + strings.Join(reasons, "; ")}
	h.log.Warn("revision failed", "revision", f.Revision, "deployments", deps, "reason", f.Reason)
	return h.failWith(ctx, f, late)
}

// failApply marks the target Failed because it could not be applied.
func (h *Half) failApply(ctx context.Context, err error, st *hubv1.DesiredState) error {
	f := &hubv1.Failure{Revision: h.rec.Target.Revision, Reason: "apply: " + err.Error()}
	late := map[string]bool{}
	if st != nil {
		// An apply stops at the first object at fault; its deployment
		// failed, and with one object's error no deployment can be called
		// applied: every deployment of the revision is failed.
		for _, d := range st.Deployments {
			late[d.Name] = true
			f.Deployments = append(f.Deployments, d.Name)
		}
	}
	h.log.Warn("revision failed to apply", "revision", f.Revision, "err", err)
	return h.failWith(ctx, f, late)
}

// failWith records f and rolls back the failed deployments whose policy
// says so, to their objects in the last healthy revision.
func (h *Half) failWith(ctx context.Context, f *hubv1.Failure, failed map[string]bool) error {
	st, perr := h.payload()
	rollback := map[string]bool{}
	if perr == nil {
		for _, d := range st.Deployments {
			if failed[d.Name] && d.Health != nil && d.Health.Rollback {
				rollback[d.Name] = true
			}
		}
		h.rec.FailedContent = ledger.ContentHash(st.Objects)
	}
	h.rec.Phase = hubv1.PhaseFailed
	h.rec.Failure = f
	if err := h.ledger.Save(h.rec); err != nil {
		return err
	}
	h.countPhase(hubv1.PhaseFailed)
	if len(rollback) > 0 {
		// Even a rollback that fails half-way may have put back some of
		// these deployments' older objects: a new revision counts them
		// as changed.
		h.rec.RolledBack = keys(rollback)
		set, err := h.rollbackSet(st, rollback)
		if err == nil {
			err = h.applySet(ctx, set, st.Deployments, keys(rollback))
		}
		switch {
		case isStateErr(err):
			return err
		case err != nil:
			f.Reason += "; rollback failed: " + err.Error()
			h.log.Warn("rollback failed", "err", err)
		default:
			if h.rec.LastHealthy != nil {
				f.RolledBackTo = h.rec.LastHealthy.Revision
			}
			h.log.Info("rolled back", "deployments", keys(rollback), "to", f.RolledBackTo)
		}
		h.rec.Failure = f
		if err := h.ledger.Save(h.rec); err != nil {
			return err
		}
	}
	h.report()
	return nil
}

// rollbackSet is the target's objects with those of the rollback
// deployments replaced by their objects in the last healthy revision
// (none if they had none).
func (h *Half) rollbackSet(st *hubv1.DesiredState, rollback map[string]bool) ([]json.RawMessage, error) {
	var out []json.RawMessage
	add := func(objs []json.RawMessage, want bool) error {
		us, err := decode(objs)
		if err != nil {
			return err
		}
		for i, u := range us {
			if rollback[u.GetLabels()[health.LabelDeployment]] == want {
				out = append(out, objs[i])
			}
		}
		return nil
	}
	if err := add(st.Objects, false); err != nil {
		return nil, err
	}
	if h.rec.LastHealthy != nil {
		if err := add(h.rec.LastHealthy.Objects, true); err != nil {
			return nil, err
		}
	}
	return out, nil
}

// running is the deployment generations the cluster runs: the applied
// revision's, with each rolled-back deployment as in the last healthy
// revision (left out if it was not there, or that revision's list was
// not kept: a new revision then counts it as changed).
func (h *Half) running() []hubv1.DeploymentRevision {
	if len(h.rec.RolledBack) == 0 {
		return h.rec.AppliedDeployments
	}
	old := map[string]hubv1.DeploymentRevision{}
	if h.rec.LastHealthy != nil {
		for _, d := range h.rec.LastHealthy.Deployments {
			old[d.Name] = d
		}
	}
	var out []hubv1.DeploymentRevision
	for _, d := range h.rec.AppliedDeployments {
		if !slices.Contains(h.rec.RolledBack, d.Name) {
			out = append(out, d)
		} else if o, ok := old[d.Name]; ok {
			out = append(out, o)
		}
	}
	return out
}

// correctDrift re-applies the applied manifests (server-side apply writes
// only what drifted) and reads readiness for the report. It never prunes.
func (h *Half) correctDrift(ctx context.Context) {
	if len(h.rec.Applied) == 0 {
		h.report()
		return
	}
	objs, err := decode(h.rec.Applied)
	if err == nil {
		var prepared []*unstructured.Unstructured
		if prepared, err = h.applier.Prepare(objs); err == nil {
			var res apply.Result
			res, err = h.applier.Apply(ctx, prepared, false)
			if n := res.Changed(); n > 0 {
				h.log.Info("drift corrected", "objects", n, "result", res.Summary())
				if m := h.cfg.Metrics; m != nil {
					m.drift.WithLabelValues(h.cfg.Half).Add(float64(n))
				}
			}
		}
	}
	h.lastErr = ""
	if err != nil {
		h.lastErr = "drift pass: " + err.Error()
		h.log.Warn("drift pass failed", "err", err)
	}
	h.statuses = health.Check(ctx, h.cfg.Client, objs)
	h.report()
}

// report queues the half's current report.
func (h *Half) report() {
	if h.cfg.Reports == nil {
		return
	}
	r := hubv1.Reported{
		Half:            h.cfg.Half,
		AppliedRevision: h.rec.AppliedRevision,
		Phase:           h.rec.Phase,
		Failure:         h.rec.Failure,
		Refused:         h.refused,
		Message:         h.lastErr,
		Deployments:     h.rec.AppliedDeployments,
	}
	waiting := h.rec.Phase == hubv1.PhaseWaiting && h.rec.Target != nil
	if waiting {
		r.Waiting = h.rec.Target.Revision
		for _, g := range h.gateResults {
			r.Gates = append(r.Gates, hubv1.GateState{Name: g.Gate, Holds: g.Holds, Reason: g.Reason})
		}
	}
	if m := h.cfg.Metrics; m != nil && !h.cfg.Gates.Ignore {
		v := 0.0
		if waiting {
			v = 1
		}
		m.gateWaiting.WithLabelValues(h.cfg.Half).Set(v)
	}
	if h.rec.Target != nil && h.rec.Target.Revision > r.AppliedRevision && h.rec.Phase == hubv1.PhaseFailed {
		// A refresh of failed objects: the cluster holds the older
		// revision's objects, the revision on record is the newest.
		r.AppliedRevision = h.rec.Target.Revision
	}
	for _, s := range h.statuses {
		reason := s.Reason
		if c := h.conflicts[s.Ref.ID()]; c != "" {
			reason = strings.TrimPrefix(reason+"; ", "; ") + "applied over a conflict: " + c
		}
		r.Objects = append(r.Objects, hubv1.ObjectStatus{APIVersion: s.Ref.APIVersion, Kind: s.Ref.Kind, Namespace: s.Ref.Namespace, Name: s.Ref.Name, State: s.State, Reason: reason})
	}
	if len(h.statuses) == 0 && len(h.rec.Applied) > 0 {
		if objs, err := decode(h.rec.Applied); err == nil {
			for _, u := range objs {
				ref := apply.RefOf(u)
				r.Objects = append(r.Objects, hubv1.ObjectStatus{APIVersion: ref.APIVersion, Kind: ref.Kind, Namespace: ref.Namespace, Name: ref.Name, State: hubv1.StateApplied})
			}
		}
	}
	if h.cfg.Extra != nil {
		h.cfg.Extra(&r)
	}
	h.cfg.Reports.Set(h.cfg.Vehicle, r)
}

// count adds a result's objects to the metrics.
func (h *Half) count(r apply.Result) {
	m := h.cfg.Metrics
	if m == nil {
		return
	}
	for _, e := range r.Entries {
		if e.Action != apply.Unchanged {
			m.objects.WithLabelValues(h.cfg.Half, string(e.Action)).Inc()
		}
	}
}

func (h *Half) countApply(result string, start time.Time) {
	if m := h.cfg.Metrics; m != nil {
		m.applies.WithLabelValues(h.cfg.Half, result).Inc()
		m.applySecs.WithLabelValues(h.cfg.Half).Observe(h.cfg.Clock.Now().Sub(start).Seconds())
	}
}

func (h *Half) countPhase(p string) {
	if m := h.cfg.Metrics; m != nil {
		m.phases.WithLabelValues(h.cfg.Half, p).Inc()
	}
}

func keys(m map[string]bool) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	slices.Sort(out)
	return out
}

func orDefault(s, d string) string {
	if s == "" {
		return d
	}
	return s
}
