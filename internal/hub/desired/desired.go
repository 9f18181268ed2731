// Package desired computes, signs and stores each vehicle's desired state:
// for a vehicle, every deployment whose selector matches it is rendered
// (through the render cache: alike vehicles share one render), placed
// (internal/hub/placement splits it into a vehicle half and a cloud half),
// and each half whose content changed gets the next revision, signed
// (internal/trust) and written with store.PutDesiredBatch, which wakes the
// long-polls on every replica.
//
// A new revision is issued only when what the vehicle runs changes (a
// content hash over objects, placement, and the deployments' generations
// and health policies, which each revision carries to the agent), when
// the stored one is within Options.Refresh of expiry, or when forced (after
// a key rotation). A vehicle for which any matching deployment fails to
// render keeps its current revision: dropping that deployment's objects
// would make the agent prune them.
//
// Issuer.Run is the loop one replica runs (it holds the store lease
// "desired"): it drains the store's dirty-vehicle queue, which API writes
// fill, and re-examines every vehicle at start and every Options.Resync,
// which also catches a queue entry lost to a crash between take and write.
package desired

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"time"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/labels"

	hubv1 "github.com/misaki-io/misaki/api/hub/v1"
	"github.com/misaki-io/misaki/internal/clock"
	"github.com/misaki-io/misaki/internal/hub/placement"
	"github.com/misaki-io/misaki/internal/hub/render"
	"github.com/misaki-io/misaki/internal/hub/store"
)

// Signer signs a desired state; trust.Keys is the implementation.
type Signer interface {
	Sign(ctx context.Context, s hubv1.DesiredState) (hubv1.Desired, error)
}

// Renderer renders a chart; render.Cache is the implementation.
type Renderer interface {
	Render(in render.Input) (*render.Output, error)
}

// Options tune the Issuer. The zero value means the defaults.
type Options struct {
	// TTL is how long a signed revision is valid. Default 14 days: a
	// vehicle offline longer keeps running what it has and applies
	// nothing new until it fetches a fresh revision.
	TTL time.Duration
	// Refresh re-issues a revision that has less than this left. Default
	// TTL/2.
	Refresh time.Duration
	// Resync re-examines every vehicle this often. Default 10 minutes.
	Resync time.Duration
	// Batch is how many vehicles one store write covers. Default 256.
	Batch int
	// Placement is passed to placement.Place.
	Placement placement.Options
}

func (o *Options) defaults() {
	if o.TTL <= 0 {
		o.TTL = 14 * 24 * time.Hour
	}
	if o.Refresh <= 0 {
		o.Refresh = o.TTL / 2
	}
	if o.Resync <= 0 {
		o.Resync = 10 * time.Minute
	}
	if o.Batch <= 0 {
		o.Batch = 256
	}
}

// Issuer turns deployments into signed desired revisions.
type Issuer struct {
	st     store.Store
	sign   Signer
	render Renderer
	clk    clock.Clock
	opts   Options
	log    *slog.Logger

	blobs sync.Map      // chart digest → []byte (archives are immutable by digest)
	kick  chan struct{} // Kick → Run

	mu     sync.Mutex // guards errs
	errs   map[string]string
	issued [2]uint64 // revisions issued: vehicle, cloud (under mu)
}

// New returns an Issuer. It does no I/O.
func New(st store.Store, sign Signer, r Renderer, clk clock.Clock, opts Options, log *slog.Logger) *Issuer {
	opts.defaults()
	return &Issuer{st: st, sign: sign, render: r, clk: clk, opts: opts, log: log.With("component", "desired"), errs: map[string]string{}, kick: make(chan struct{}, 1)}
}

// Deployments is a snapshot of every deployment with its selectors
// parsed, read once per pass. Read with LoadDeployments, each vehicle gets
// the generation its rollouts allow it; built with NewDeployments, every
// vehicle gets the generation given.
type Deployments struct {
	items []entry
}

// entry is one deployment: which generation each vehicle gets.
type entry struct {
	newest *deployment
	// rollouts: false gives newest to every vehicle.
	rollouts bool
	// complete is the newest generation whose rollout completed (every
	// vehicle gets at least it); 0: none.
	complete int64
	// live are the rollouts of newer generations, not aborted, newest
	// first, with the vehicles each released.
	live  []released
	byGen map[int64]*deployment
}

type released struct {
	gen      int64
	vehicles map[string]bool
}

type deployment struct {
	d      hubv1.Deployment
	sel    labels.Selector
	custom []labels.Selector
}

// forVehicle is the generation of e that vehicle id gets, or nil: the
// newest generation a live rollout released to it, else the newest
// completed one.
func (e *entry) forVehicle(id string) *deployment {
	if !e.rollouts {
		return e.newest
	}
	for _, r := range e.live {
		if r.vehicles[id] {
			return e.byGen[r.gen]
		}
	}
	return e.byGen[e.complete]
}

// LoadDeployments reads every deployment and the rollouts that decide
// which generation each vehicle gets.
func (is *Issuer) LoadDeployments(ctx context.Context) (*Deployments, error) {
	var all []hubv1.Deployment
	p := store.Page{Limit: 500}
	for {
		ds, next, err := is.st.ListDeployments(ctx, p)
		if err != nil {
			return nil, fmt.Errorf("desired: list deployments: %w", err)
		}
		all = append(all, ds...)
		if next == "" {
			break
		}
		p.After = next
	}
	out, err := NewDeployments(all)
	if err != nil {
		return nil, err
	}
	for i := range out.items {
		if err := is.loadRollouts(ctx, &out.items[i]); err != nil {
			return nil, err
		}
	}
	return out, nil
}

// loadRollouts reads e's rollouts newest first, down to the newest that
// completed, and the generations they give out.
func (is *Issuer) loadRollouts(ctx context.Context, e *entry) error {
	name := e.newest.d.Name
	e.rollouts = true
	gens := map[int64]bool{}
	p := store.Page{Limit: 100}
	for done := false; !done; {
		rs, next, err := is.st.ListRollouts(ctx, store.RolloutFilter{Deployment: name}, p)
		if err != nil {
			return fmt.Errorf("desired: deployment %s: rollouts: %w", name, err)
		}
		for _, r := range rs {
			if r.Phase == hubv1.RolloutAborted {
				continue
			}
			if r.Phase == hubv1.RolloutCompleted {
				e.complete = r.Generation
				gens[r.Generation] = true
				done = true
				break
			}
			vs, err := is.releasedTo(ctx, name, r.Generation)
			if err != nil {
				return err
			}
			if len(vs) > 0 {
				e.live = append(e.live, released{gen: r.Generation, vehicles: vs})
				gens[r.Generation] = true
			}
		}
		if next == "" {
			break
		}
		p.After = next
	}
	e.byGen = map[int64]*deployment{}
	for g := range gens {
		d := e.newest
		if g != d.d.Generation {
			v, err := is.st.GetDeploymentVersion(ctx, name, g)
			if err != nil {
				return fmt.Errorf("desired: deployment %s: generation %d: %w", name, g, err)
			}
			if d, err = parse(v); err != nil {
				return err
			}
		}
		e.byGen[g] = d
	}
	return nil
}

func (is *Issuer) releasedTo(ctx context.Context, name string, gen int64) (map[string]bool, error) {
	out := map[string]bool{}
	p := store.Page{Limit: 1000}
	for {
		vs, next, err := is.st.ListRolloutVehicles(ctx, name, gen, store.RolloutVehicleFilter{Released: true}, p)
		if err != nil {
			return nil, fmt.Errorf("desired: deployment %s: rollout %d: %w", name, gen, err)
		}
		for _, v := range vs {
			out[v.Vehicle] = true
		}
		if next == "" {
			return out, nil
		}
		p.After = next
	}
}

// NewDeployments parses the deployments' selectors; each applies to every
// vehicle it selects at the generation given (no rollouts).
func NewDeployments(all []hubv1.Deployment) (*Deployments, error) {
	slices.SortFunc(all, func(a, b hubv1.Deployment) int { return strings.Compare(a.Name, b.Name) })
	out := &Deployments{}
	for _, d := range all {
		dep, err := parse(d)
		if err != nil {
			return nil, err
		}
		out.items = append(out.items, entry{newest: dep})
	}
	return out, nil
}

func parse(d hubv1.Deployment) (*deployment, error) {
	sel, err := ParseSelector(d.Selector)
	if err != nil {
		return nil, fmt.Errorf("desired: deployment %s: selector: %w", d.Name, err)
	}
	dep := &deployment{d: d, sel: sel}
	for _, c := range d.Customizations {
		cs, err := ParseSelector(c.Selector)
		if err != nil {
			return nil, fmt.Errorf("desired: deployment %s: customization %s: selector: %w", d.Name, c.Name, err)
		}
		dep.custom = append(dep.custom, cs)
	}
	return dep, nil
}

// ParseSelector parses a Kubernetes label selector. The empty string
// selects nothing (not everything, as in Kubernetes): a deployment must
// say which vehicles it is for.
func ParseSelector(s string) (labels.Selector, error) {
	if s == "" {
		return labels.Nothing(), nil
	}
	return labels.Parse(s)
}

// Put replaces (or adds) the named deployment with d, which then applies
// to every vehicle, whatever its selector and rollouts (for previews).
func (ds *Deployments) Put(d hubv1.Deployment) error {
	dep, err := parse(d)
	if err != nil {
		return err
	}
	dep.sel = labels.Everything()
	for i := range ds.items {
		if ds.items[i].newest.d.Name == d.Name {
			ds.items[i] = entry{newest: dep}
			return nil
		}
	}
	ds.items = append(ds.items, entry{newest: dep})
	slices.SortFunc(ds.items, func(a, b entry) int { return strings.Compare(a.newest.d.Name, b.newest.d.Name) })
	return nil
}

// Matching returns the names of the deployments whose newest generation
// selects the labels.
func (ds *Deployments) Matching(l map[string]string) []string {
	var out []string
	for _, e := range ds.items {
		if e.newest.sel.Matches(labels.Set(l)) {
			out = append(out, e.newest.d.Name)
		}
	}
	return out
}

// Plan is one vehicle's computed (unsigned) desired state.
type Plan struct {
	Vehicle     hubv1.Vehicle
	Deployments []hubv1.DeploymentRevision
	Result      *placement.Result
	// Rendered is each deployment's render output, by name (for previews).
	Rendered map[string]*render.Output
}

// Compute renders and places every deployment in ds that selects v.
func (is *Issuer) Compute(ctx context.Context, v hubv1.Vehicle, ds *Deployments) (*Plan, error) {
	p := &Plan{Vehicle: v, Rendered: map[string]*render.Output{}}
	var objs []placement.DeploymentObjects
	for _, e := range ds.items {
		dep := e.forVehicle(v.ID)
		if dep == nil || !dep.sel.Matches(labels.Set(v.Labels)) {
			continue
		}
		out, err := is.renderFor(ctx, *dep, v)
		if err != nil {
			return nil, err
		}
		p.Rendered[dep.d.Name] = out
		rev := hubv1.DeploymentRevision{Name: dep.d.Name, Generation: dep.d.Generation, Chart: dep.d.Chart}
		if h := dep.d.Health; h != nil {
			hc := *h // the plan must not share the deployment's policy
			rev.Health = &hc
		}
		if r := dep.d.Rollout; r != nil && len(r.Gates) > 0 {
			rev.Gates = slices.Clone(r.Gates)
		}
		p.Deployments = append(p.Deployments, rev)
		objs = append(objs, placement.DeploymentObjects{Deployment: dep.d, Objects: out.Objects})
	}
	res, err := placement.Place(v, objs, is.opts.Placement)
	if err != nil {
		return nil, fmt.Errorf("desired: vehicle %s: %w", v.ID, err)
	}
	p.Result = res
	return p, nil
}

func (is *Issuer) renderFor(ctx context.Context, dep deployment, v hubv1.Vehicle) (*render.Output, error) {
	d := dep.d
	chart, err := is.blob(ctx, d.Chart.Digest)
	if err != nil {
		return nil, fmt.Errorf("desired: deployment %s: chart %s %s: %w", d.Name, d.Chart.Name, d.Chart.Version, err)
	}
	layers := []map[string]any{d.Values}
	for i, c := range d.Customizations {
		if dep.custom[i].Matches(labels.Set(v.Labels)) {
			layers = append(layers, c.Values)
		}
	}
	ns := d.Namespace
	if ns == "" {
		ns = "default"
	}
	out, err := is.render.Render(render.Input{
		Chart: chart, Digest: d.Chart.Digest, Release: d.Name, Namespace: ns,
		Layers: layers, Facts: v.Facts,
	})
	if err != nil {
		return nil, fmt.Errorf("desired: deployment %s for vehicle %s: %w", d.Name, v.ID, err)
	}
	return out, nil
}

func (is *Issuer) blob(ctx context.Context, digest string) ([]byte, error) {
	if b, ok := is.blobs.Load(digest); ok {
		return b.([]byte), nil
	}
	b, err := is.st.GetBlob(ctx, digest)
	if err != nil {
		return nil, err
	}
	is.blobs.Store(digest, b)
	return b, nil
}

// Stats counts what one Issue call did.
type Stats struct {
	Vehicles int // examined
	Issued   int // revisions written (both halves)
	Failed   int // vehicles left at their revision because of an error
}

// Issue examines the vehicles and writes a new revision for each half
// whose content changed, is near expiry, or (force) always. A vehicle
// that no longer exists is skipped.
func (is *Issuer) Issue(ctx context.Context, ids []string, force bool, ds *Deployments) (Stats, error) {
	var st Stats
	var batch []store.Desired
	flush := func() error {
		if len(batch) == 0 {
			return nil
		}
		if err := is.putBatch(ctx, batch); err != nil {
			return err
		}
		st.Issued += len(batch)
		batch = batch[:0]
		return nil
	}
	for _, id := range ids {
		if err := ctx.Err(); err != nil {
			return st, err
		}
		v, err := is.st.GetVehicle(ctx, id)
		if errors.Is(err, store.ErrNotFound) {
			continue
		}
		if err != nil {
			return st, fmt.Errorf("desired: vehicle %s: %w", id, err)
		}
		st.Vehicles++
		ds2, err := is.vehicle(ctx, v, ds, force)
		if err != nil {
			st.Failed++
			is.setError(id, err.Error())
			is.log.Warn("vehicle keeps its revision", "vehicle", id, "err", err)
			continue
		}
		is.setError(id, "")
		batch = append(batch, ds2...)
		if len(batch) >= is.opts.Batch {
			if err := flush(); err != nil {
				return st, err
			}
		}
	}
	return st, flush()
}

// putBatch writes the batch; a revision another writer got to first
// (ErrStale) is dropped and its vehicle re-queued.
func (is *Issuer) putBatch(ctx context.Context, batch []store.Desired) error {
	err := is.st.PutDesiredBatch(ctx, batch)
	if err == nil {
		is.count(batch)
		return nil
	}
	if !errors.Is(err, store.ErrStale) {
		return fmt.Errorf("desired: store revisions: %w", err)
	}
	for _, d := range batch {
		if err := is.st.PutDesired(ctx, d); err != nil && !errors.Is(err, store.ErrStale) {
			return fmt.Errorf("desired: store revision %s/%s %d: %w", d.Vehicle, d.Half, d.Revision, err)
		}
		is.count([]store.Desired{d})
	}
	return nil
}

func (is *Issuer) count(batch []store.Desired) {
	is.mu.Lock()
	for _, d := range batch {
		if d.Half == hubv1.HalfCloud {
			is.issued[1]++
		} else {
			is.issued[0]++
		}
	}
	is.mu.Unlock()
}

// Issued returns how many revisions this Issuer wrote, per half.
func (is *Issuer) Issued() (vehicle, cloud uint64) {
	is.mu.Lock()
	defer is.mu.Unlock()
	return is.issued[0], is.issued[1]
}

// Error returns the last error computing the vehicle's desired state on
// this replica, or "".
func (is *Issuer) Error(vehicle string) string {
	is.mu.Lock()
	defer is.mu.Unlock()
	return is.errs[vehicle]
}

func (is *Issuer) setError(vehicle, msg string) {
	is.mu.Lock()
	defer is.mu.Unlock()
	if msg == "" {
		delete(is.errs, vehicle)
	} else {
		is.errs[vehicle] = msg
	}
}

// vehicle computes v's halves and returns the signed revisions to write.
func (is *Issuer) vehicle(ctx context.Context, v hubv1.Vehicle, ds *Deployments, force bool) ([]store.Desired, error) {
	p, err := is.Compute(ctx, v, ds)
	if err != nil {
		return nil, err
	}
	now := is.clk.Now().UTC().Truncate(time.Second) // the store keeps microseconds; the envelope and payload must agree
	var (
		out  []store.Desired
		reps []hubv1.Reported // read once, when a half is issued
	)
	halves := []struct {
		half, ns string
		objs     []*unstructured.Unstructured
	}{
		{hubv1.HalfVehicle, "", p.Result.Vehicle},
		{hubv1.HalfCloud, p.Result.CloudNamespace, p.Result.Cloud},
	}
	for _, h := range halves {
		prev, err := is.st.GetDesired(ctx, v.ID, h.half)
		hasPrev := err == nil
		if err != nil && !errors.Is(err, store.ErrNotFound) {
			return nil, fmt.Errorf("read revision: %w", err)
		}
		if !hasPrev && len(h.objs) == 0 && (h.half == hubv1.HalfCloud || len(p.Deployments) == 0) {
			continue // nothing to say yet
		}
		raw := make([]json.RawMessage, 0, len(h.objs))
		names := make([]string, 0, len(h.objs))
		for _, o := range h.objs {
			b, err := o.MarshalJSON()
			if err != nil {
				return nil, fmt.Errorf("encode %s: %w", ObjectName(o), err)
			}
			raw = append(raw, b)
			names = append(names, ObjectName(o))
		}
		hash, err := contentHash(h.ns, p.Deployments, p.Result.Placement, raw)
		if err != nil {
			return nil, err
		}
		if hasPrev && !force && prev.ContentHash == hash && prev.Expires.Sub(now) > is.opts.Refresh {
			continue
		}
		rev := int64(1)
		if hasPrev {
			rev = prev.Revision + 1
		}
		// Never below what the vehicle says it applied: a store restored
		// from a backup, or SQLite after a power loss, may have lost
		// revisions the vehicle has, and the agent refuses anything not
		// above its own.
		if reps == nil {
			if reps, err = is.st.GetReported(ctx, v.ID); err != nil {
				return nil, fmt.Errorf("read reports: %w", err)
			}
		}
		for _, r := range reps {
			if r.Half == h.half && r.AppliedRevision >= rev {
				rev = r.AppliedRevision + 1
			}
		}
		state := hubv1.DesiredState{
			Vehicle: v.ID, Half: h.half, Revision: rev,
			IssuedAt: now, Expires: now.Add(is.opts.TTL),
			Namespace:   h.ns,
			Deployments: orEmpty(p.Deployments),
			Placement:   orEmpty(p.Result.Placement),
			Objects:     raw,
		}
		signed, err := is.sign.Sign(ctx, state)
		if err != nil {
			return nil, fmt.Errorf("sign %s revision %d: %w", h.half, rev, err)
		}
		out = append(out, store.Desired{Desired: signed, ContentHash: hash, Placement: state.Placement, Objects: names})
	}
	return out, nil
}

func orEmpty[T any](s []T) []T {
	if s == nil {
		return []T{}
	}
	return s
}

// contentHash identifies what a half makes the vehicle run, and how the
// agent judges it: deps carry each deployment's health policy, so a new
// policy is a new revision. (A policy absent is absent from the JSON, so
// hashes written before policies existed are unchanged.)
func contentHash(ns string, deps []hubv1.DeploymentRevision, pl []hubv1.ComponentPlacement, objs []json.RawMessage) (string, error) {
	b, err := json.Marshal(struct {
		Namespace   string                     `json:"namespace"`
		Deployments []hubv1.DeploymentRevision `json:"deployments"`
		Placement   []hubv1.ComponentPlacement `json:"placement"`
		Objects     []json.RawMessage          `json:"objects"`
	}{ns, deps, pl, objs})
	if err != nil {
		return "", fmt.Errorf("hash content: %w", err)
	}
	sum := sha256.Sum256(b)
	return "sha256:" + hex.EncodeToString(sum[:]), nil
}

// ObjectName is "Kind/namespace/name" ("Kind/name" when cluster-scoped).
func ObjectName(o *unstructured.Unstructured) string {
	if ns := o.GetNamespace(); ns != "" {
		return o.GetKind() + "/" + ns + "/" + o.GetName()
	}
	return o.GetKind() + "/" + o.GetName()
}
