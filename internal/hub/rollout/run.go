package rollout

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"reflect"
	"time"

	"k8s.io/apimachinery/pkg/labels"

	hubv1 "github.com/misaki-io/misaki/api/hub/v1"
	"github.com/misaki-io/misaki/internal/clock"
	"github.com/misaki-io/misaki/internal/hub/store"
)

// LeaseName is the store lease the replica that runs rollouts holds.
const LeaseName = "rollouts"

const leaseTTL = 15 * time.Second

// RunnerOptions tune the Runner. The zero value means the defaults.
type RunnerOptions struct {
	// Interval between passes when nothing kicks the runner. Default 5s.
	Interval time.Duration
	// OnlineWindow: a vehicle seen within it is online (the API's
	// setting). Default 90s.
	OnlineWindow time.Duration
	// MinGap is the least time between two passes that nudges start,
	// however often the runner is nudged (every report nudges it).
	// Default 1s. A kick (an operator's write) starts a pass at once.
	MinGap time.Duration
}

func (o *RunnerOptions) defaults() {
	if o.Interval <= 0 {
		o.Interval = 5 * time.Second
	}
	if o.OnlineWindow <= 0 {
		o.OnlineWindow = 90 * time.Second
	}
	if o.MinGap <= 0 {
		o.MinGap = time.Second
	}
}

// ReleaseFunc is told the vehicles a pass released: their desired state
// must be recomputed (the hub queues them for the issuer).
type ReleaseFunc func(ctx context.Context, vehicles []string) error

// Runner executes rollouts: each pass steps the newest rollout of every
// deployment that is still going, or completed with vehicles that have
// not answered yet.
type Runner struct {
	st      store.Store
	clk     clock.Clock
	opts    RunnerOptions
	release ReleaseFunc
	log     *slog.Logger
	kick    chan struct{}
	nudge   chan struct{}
}

// NewRunner returns a Runner. It does no I/O.
func NewRunner(st store.Store, clk clock.Clock, opts RunnerOptions, release ReleaseFunc, log *slog.Logger) *Runner {
	opts.defaults()
	return &Runner{st: st, clk: clk, opts: opts, release: release, log: log.With("component", "rollout"), kick: make(chan struct{}, 1), nudge: make(chan struct{}, 1)}
}

// Kick asks for a pass now: an operator changed a deployment, a vehicle
// or a rollout.
func (r *Runner) Kick() {
	select {
	case r.kick <- struct{}{}:
	default:
	}
}

// Nudge asks for a pass soon: a report arrived. Nudges are coalesced, at
// most one pass per MinGap, so a fleet reporting at once costs a pass a
// second, not one per report.
func (r *Runner) Nudge() {
	select {
	case r.nudge <- struct{}{}:
	default:
	}
}

// Run makes passes until ctx ends: every Interval while this replica
// holds the lease, at most a MinGap after a nudge (a report it served) if
// it holds the lease, and at once whenever it is kicked (an operator's
// write), lease or not. Two replicas stepping the same rollout
// at once are safe: the store's version check lets one write, the other's
// step is dropped (and it releases nothing), so a write on any replica
// moves rollouts at once, not at the leader's next pass.
func (r *Runner) Run(ctx context.Context, holder string) error {
	var (
		leader        bool
		renewed, last time.Time
	)
	t := r.clk.NewTimer(0)
	defer func() { t.Stop() }()
	for {
		kicked := false
		select {
		case <-ctx.Done():
			return nil
		case <-t.C():
		case <-r.kick:
			t.Stop()
			kicked = true
		case <-r.nudge:
			if !leader {
				// Reports reach every replica; only the lease holder's
				// passes follow them (it passes every Interval anyway),
				// so N replicas do not each re-read the fleet a second.
				continue
			}
			t.Stop()
			kicked = true
			if gap := r.opts.MinGap - r.clk.Now().Sub(last); gap > 0 {
				t = r.clk.NewTimer(gap) // coalesce a burst of nudges into one pass
				select {
				case <-ctx.Done():
					return nil
				case <-r.kick: // an operator's write does not wait
				case <-t.C():
				}
			}
		}
		now := r.clk.Now()
		if !leader || now.Sub(renewed) >= leaseTTL/3 {
			ok, err := r.st.TryLease(ctx, LeaseName, holder, now, leaseTTL)
			switch {
			case ctx.Err() != nil:
				return nil
			case err != nil:
				r.log.Warn("lease", "err", err)
			case ok && !leader:
				r.log.Info("running rollouts on this replica", "holder", holder)
			}
			leader, renewed = err == nil && ok, now
		}
		if leader || kicked {
			last = r.clk.Now()
			if err := r.Pass(ctx); err != nil && ctx.Err() == nil {
				r.log.Warn("rollout pass", "err", err)
			}
		}
		wait := r.opts.Interval
		if !leader {
			wait = leaseTTL / 3
		}
		t = r.clk.NewTimer(wait)
	}
}

// Pass steps every rollout that needs it once.
func (r *Runner) Pass(ctx context.Context) error {
	var errs []error
	p := store.Page{Limit: 500}
	for {
		ds, next, err := r.st.ListDeployments(ctx, p)
		if err != nil {
			return fmt.Errorf("rollout: list deployments: %w", err)
		}
		for _, d := range ds {
			if err := r.deployment(ctx, d); err != nil {
				errs = append(errs, err)
			}
		}
		if next == "" {
			return errors.Join(errs...)
		}
		p.After = next
	}
}

// unsettled: vehicles a completed rollout still follows.
func unsettled(ro hubv1.Rollout) bool {
	return ro.Counts[hubv1.VehiclePending]+ro.Counts[hubv1.VehicleOffline]+ro.Counts[hubv1.VehicleApplying]+ro.Counts[hubv1.VehicleWaiting] > 0
}

func (r *Runner) deployment(ctx context.Context, d hubv1.Deployment) error {
	ro, err := r.st.GetRollout(ctx, d.Name, d.Generation)
	if errors.Is(err, store.ErrNotFound) {
		return nil // deleted since listed
	}
	if err != nil {
		return fmt.Errorf("rollout: %w", err)
	}
	switch ro.Phase {
	case hubv1.RolloutAborted, hubv1.RolloutSuperseded:
		return nil
	case hubv1.RolloutCompleted:
		if len(ro.Waves) == 0 || !unsettled(ro) {
			return nil
		}
	}
	if err := r.step(ctx, ro); err != nil {
		return fmt.Errorf("rollout %s/%d: %w", ro.Deployment, ro.Generation, err)
	}
	return nil
}

func (r *Runner) step(ctx context.Context, ro hubv1.Rollout) error {
	now := r.clk.Now().UTC()
	pol, err := ParsePolicy(&ro.Policy, nil)
	if err != nil {
		// The API checks policies; one that fails here was stored by an
		// older hub. Stop rather than guess.
		if ro.Phase == hubv1.RolloutProgressing {
			ro.Phase, ro.Reason, ro.Updated = hubv1.RolloutPaused, "policy: "+err.Error(), now
			_, err = r.st.UpdateRollout(ctx, ro, nil)
		}
		return err
	}
	target, err := r.selector(ctx, ro.Deployment, ro.Generation)
	if err != nil {
		return err
	}
	before := labels.Nothing()
	if ro.From > 0 {
		if before, err = r.selector(ctx, ro.Deployment, ro.From); err != nil && !errors.Is(err, store.ErrNotFound) {
			return err
		}
		if before == nil {
			before = labels.Nothing()
		}
	}
	vehicles, err := r.vehicles(ctx, func(l map[string]string) bool {
		return target.Matches(labels.Set(l)) || before.Matches(labels.Set(l))
	})
	if err != nil {
		return err
	}

	var vs, joined []hubv1.RolloutVehicle
	if len(ro.Waves) == 0 {
		targets := make([]Target, 0, len(vehicles))
		for _, v := range vehicles {
			targets = append(targets, Target{ID: v.ID, Labels: v.Labels})
		}
		ro.Waves, vs = Split(ro.Deployment, pol, targets)
		joined = vs
		r.log.Info("rollout split", "deployment", ro.Deployment, "generation", ro.Generation, "vehicles", len(vs), "waves", len(ro.Waves))
	} else {
		if vs, err = r.records(ctx, ro); err != nil {
			return err
		}
		have := make(map[string]bool, len(vs))
		for _, v := range vs {
			have[v.Vehicle] = true
		}
		for _, v := range vehicles {
			if have[v.ID] {
				continue
			}
			rv := Join(&ro, v.ID)
			if ro.Phase == hubv1.RolloutCompleted {
				rv.Released = true // every vehicle has it already
			}
			vs = append(vs, rv)
			joined = append(joined, rv)
		}
	}

	byID := make(map[string]hubv1.Vehicle, len(vehicles))
	for _, v := range vehicles {
		byID[v.ID] = v
	}
	var released []string
	for _, rv := range vs {
		if rv.Released {
			released = append(released, rv.Vehicle)
		}
	}
	reports, err := r.st.ListReported(ctx, released)
	if err != nil {
		return err
	}
	obs := make(map[string]Observation, len(vs))
	for _, rv := range vs {
		v, ok := byID[rv.Vehicle]
		if !ok {
			// No longer targeted (the generation removes the deployment
			// from it), or deleted.
			got, err := r.st.GetVehicle(ctx, rv.Vehicle)
			if errors.Is(err, store.ErrNotFound) {
				obs[rv.Vehicle] = Observation{hubv1.VehicleOffline, "vehicle deleted"}
				continue
			}
			if err != nil {
				return err
			}
			v = got
		}
		online := v.LastSeen != nil && now.Sub(*v.LastSeen) < r.opts.OnlineWindow
		if !rv.Released {
			// What Step needs of a vehicle it may release now: whether it
			// would be busy.
			if online {
				obs[rv.Vehicle] = Observation{hubv1.VehicleApplying, "released"}
			} else {
				obs[rv.Vehicle] = Observation{hubv1.VehicleOffline, "not seen within the online window"}
			}
			continue
		}
		obs[rv.Vehicle] = Observe(ro.Deployment, ro.Generation, target.Matches(labels.Set(v.Labels)), online, reports[rv.Vehicle])
	}

	res := Step(ro, pol, vs, obs, now)
	changed := mergeRecords(joined, res.Changed)
	if len(changed) == 0 && sameStatus(ro, res.Rollout) {
		return nil
	}
	next := res.Rollout
	next.Updated = now
	if _, err := r.st.UpdateRollout(ctx, next, changed); err != nil {
		if errors.Is(err, store.ErrConflict) {
			return nil // an operator acted meanwhile: the next pass sees it
		}
		return err
	}
	for _, e := range res.Events {
		r.log.Info("rollout", "deployment", ro.Deployment, "generation", ro.Generation, "event", e)
	}
	if next.Phase != ro.Phase && (next.Phase == hubv1.RolloutPaused || next.Phase == hubv1.RolloutCompleted) {
		action := "complete"
		if next.Phase == hubv1.RolloutPaused {
			action = "pause"
		}
		e := hubv1.AuditEntry{Time: now, Actor: "hub", Action: action, Object: fmt.Sprintf("deployments/%s/rollouts/%d", ro.Deployment, ro.Generation), Detail: next.Reason}
		if err := r.st.AppendAudit(ctx, e); err != nil {
			r.log.Error("audit", "entry", e, "err", err)
		}
	}
	if len(res.Released) > 0 && r.release != nil {
		if err := r.release(ctx, res.Released); err != nil {
			return fmt.Errorf("queue released vehicles: %w", err)
		}
	}
	return nil
}

// selector is the deployment selector of one generation.
func (r *Runner) selector(ctx context.Context, name string, gen int64) (labels.Selector, error) {
	d, err := r.st.GetDeploymentVersion(ctx, name, gen)
	if err != nil {
		return nil, err
	}
	if d.Selector == "" {
		return labels.Nothing(), nil
	}
	sel, err := labels.Parse(d.Selector)
	if err != nil {
		return nil, fmt.Errorf("generation %d: selector: %w", gen, err)
	}
	return sel, nil
}

func (r *Runner) vehicles(ctx context.Context, match func(map[string]string) bool) ([]hubv1.Vehicle, error) {
	var out []hubv1.Vehicle
	p := store.Page{Limit: 1000}
	for {
		vs, next, err := r.st.ListVehicles(ctx, p, match)
		if err != nil {
			return nil, fmt.Errorf("list vehicles: %w", err)
		}
		out = append(out, vs...)
		if next == "" {
			return out, nil
		}
		p.After = next
	}
}

func (r *Runner) records(ctx context.Context, ro hubv1.Rollout) ([]hubv1.RolloutVehicle, error) {
	var out []hubv1.RolloutVehicle
	p := store.Page{Limit: 1000}
	for {
		vs, next, err := r.st.ListRolloutVehicles(ctx, ro.Deployment, ro.Generation, store.RolloutVehicleFilter{}, p)
		if err != nil {
			return nil, fmt.Errorf("list vehicles: %w", err)
		}
		out = append(out, vs...)
		if next == "" {
			return out, nil
		}
		p.After = next
	}
}

// mergeRecords is joined and changed, the later record of a vehicle
// winning.
func mergeRecords(joined, changed []hubv1.RolloutVehicle) []hubv1.RolloutVehicle {
	if len(joined) == 0 {
		return changed
	}
	byID := map[string]int{}
	out := make([]hubv1.RolloutVehicle, 0, len(joined)+len(changed))
	for _, v := range append(joined, changed...) {
		if i, ok := byID[v.Vehicle]; ok {
			out[i] = v
			continue
		}
		byID[v.Vehicle] = len(out)
		out = append(out, v)
	}
	return out
}

func sameStatus(a, b hubv1.Rollout) bool {
	return a.Phase == b.Phase && a.Reason == b.Reason && a.Tolerated == b.Tolerated &&
		reflect.DeepEqual(a.Waves, b.Waves) && reflect.DeepEqual(a.Counts, b.Counts)
}
