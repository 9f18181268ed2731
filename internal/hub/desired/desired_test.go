package desired_test

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"path/filepath"
	"slices"
	"testing"
	"time"

	hubv1 "github.com/misaki-io/misaki/api/hub/v1"
	"github.com/misaki-io/misaki/internal/clock"
	"github.com/misaki-io/misaki/internal/hub/desired"
	"github.com/misaki-io/misaki/internal/hub/render"
	"github.com/misaki-io/misaki/internal/hub/render/rendertest"
	"github.com/misaki-io/misaki/internal/hub/store"
	"github.com/misaki-io/misaki/internal/hub/store/sqlite"
	"github.com/misaki-io/misaki/internal/trust"
)

type fixture struct {
	st   store.Store
	clk  *clock.Fake
	is   *desired.Issuer
	keys *trust.Keys
	dep  hubv1.Deployment
}

func setup(t *testing.T) *fixture {
	t.Helper()
	ctx := context.Background()
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	st, err := sqlite.Open(ctx, filepath.Join(t.TempDir(), "hub.db"), log)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	clk := clock.NewFake(time.Date(2026, 12, 4, 12, 0, 0, 0, time.UTC))
	dir := t.TempDir()
	if err := trust.Init(dir, clk.Now(), trust.InitOptions{}); err != nil {
		t.Fatal(err)
	}
	keys, err := trust.LoadKeys(dir)
	if err != nil {
		t.Fatal(err)
	}
	data, digest := rendertest.ChartArchive(t, rendertest.ShuttleDir())
	if err := st.PutBlob(ctx, digest, data); err != nil {
		t.Fatal(err)
	}
	dep := hubv1.Deployment{
		Name: "shuttle", Selector: "fleet=eu", Generation: 1,
		Chart: hubv1.ChartRef{Source: "apps", Name: "shuttle", Version: "1.0.0", Digest: digest},
	}
	if err := st.CreateDeployment(ctx, dep); err != nil {
		t.Fatal(err)
	}
	complete(t, st, "shuttle", 1)
	for _, v := range []hubv1.Vehicle{
		{ID: "car-1", Labels: map[string]string{"fleet": "eu"}, Allocatable: hubv1.ResourceList{"cpu": "8", "memory": "32Gi"}},
		{ID: "car-2", Labels: map[string]string{"fleet": "us"}, Allocatable: hubv1.ResourceList{"cpu": "8", "memory": "32Gi"}},
	} {
		v.Created = clk.Now()
		if err := st.CreateVehicle(ctx, v); err != nil {
			t.Fatal(err)
		}
	}
	is := desired.New(st, keys, render.NewCache(0), clk, desired.Options{TTL: 48 * time.Hour}, log)
	return &fixture{st: st, clk: clk, is: is, keys: keys, dep: dep}
}

func (f *fixture) issue(t *testing.T, force bool, ids ...string) desired.Stats {
	t.Helper()
	ds, err := f.is.LoadDeployments(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	st, err := f.is.Issue(context.Background(), ids, force, ds)
	if err != nil {
		t.Fatal(err)
	}
	return st
}

func (f *fixture) revision(t *testing.T, vehicle, half string) int64 {
	t.Helper()
	d, err := f.st.GetDesired(context.Background(), vehicle, half)
	if errors.Is(err, store.ErrNotFound) {
		return 0
	}
	if err != nil {
		t.Fatal(err)
	}
	return d.Revision
}

func TestIssuesOnlyWhatChanged(t *testing.T) {
	f := setup(t)
	if st := f.issue(t, false, "car-1", "car-2", "gone"); st.Issued != 1 || st.Vehicles != 2 {
		t.Fatalf("first pass: %+v (want one revision: car-1's vehicle half; the planner fits)", st)
	}
	if got := f.revision(t, "car-2", hubv1.HalfVehicle); got != 0 {
		t.Fatalf("car-2 is not selected but has revision %d", got)
	}
	if st := f.issue(t, false, "car-1"); st.Issued != 0 {
		t.Fatalf("nothing changed, yet %d revisions", st.Issued)
	}
	// A new generation with other values: a new revision.
	f.dep.Values = map[string]any{"replicas": 3}
	f.update(t)
	if st := f.issue(t, false, "car-1"); st.Issued != 1 || f.revision(t, "car-1", hubv1.HalfVehicle) != 2 {
		t.Fatalf("after a change: %+v, revision %d", st, f.revision(t, "car-1", hubv1.HalfVehicle))
	}
	// Forced (a key rotation): a new revision with the same content.
	if st := f.issue(t, true, "car-1"); st.Issued != 1 {
		t.Fatalf("forced: %+v", st)
	}
	// Near expiry (TTL 48h, refresh at half): re-issued.
	f.clk.Advance(23 * time.Hour)
	if st := f.issue(t, false, "car-1"); st.Issued != 0 {
		t.Fatalf("23h into 48h: %+v", st)
	}
	f.clk.Advance(2 * time.Hour)
	if st := f.issue(t, false, "car-1"); st.Issued != 1 || f.revision(t, "car-1", hubv1.HalfVehicle) != 4 {
		t.Fatalf("25h into 48h: %+v", st)
	}
}

// A vehicle whose allocatable shrinks gets the planner moved to the cloud:
// a cloud half appears, and the vehicle half gets a Route instead.
func TestPlacementMovesWithResources(t *testing.T) {
	f := setup(t)
	ctx := context.Background()
	f.issue(t, false, "car-1")
	if f.revision(t, "car-1", hubv1.HalfCloud) != 0 {
		t.Fatal("a cloud half while everything fits")
	}
	v, _ := f.st.GetVehicle(ctx, "car-1")
	v.Allocatable = hubv1.ResourceList{"cpu": "2", "memory": "4Gi"}
	if _, err := f.st.UpdateVehicle(ctx, v); err != nil {
		t.Fatal(err)
	}
	if st := f.issue(t, false, "car-1"); st.Issued != 2 {
		t.Fatalf("after shrinking: %+v", st)
	}
	d, err := f.st.GetDesired(ctx, "car-1", hubv1.HalfCloud)
	if err != nil {
		t.Fatal(err)
	}
	places := map[string]string{}
	for _, p := range d.Placement {
		places[p.Component] = p.Place
	}
	if places["planner"] != hubv1.PlaceCloud || places["api"] != hubv1.PlaceVehicle {
		t.Fatalf("placement: %+v", d.Placement)
	}
}

// A deployment that fails to render leaves the vehicle at its revision
// (dropping the objects would make the agent delete them) and says why.
func TestRenderErrorKeepsRevision(t *testing.T) {
	f := setup(t)
	ctx := context.Background()
	f.issue(t, false, "car-1")
	before := f.revision(t, "car-1", hubv1.HalfVehicle)
	v, _ := f.st.GetVehicle(ctx, "car-1")
	v.Facts.KubernetesVersion = "not-a-version"
	if _, err := f.st.UpdateVehicle(ctx, v); err != nil {
		t.Fatal(err)
	}
	// UpdateVehicle may keep agent-owned facts; report them instead.
	if _, err := f.st.PutReported(ctx, "car-1", hubv1.Reported{Half: hubv1.HalfVehicle, Facts: &v.Facts}); err != nil {
		t.Fatal(err)
	}
	st := f.issue(t, false, "car-1")
	if st.Failed != 1 || st.Issued != 0 || f.revision(t, "car-1", hubv1.HalfVehicle) != before {
		t.Fatalf("render error: %+v, revision %d (was %d)", st, f.revision(t, "car-1", hubv1.HalfVehicle), before)
	}
	if f.is.Error("car-1") == "" {
		t.Fatal("no error recorded for the vehicle")
	}
}

// Run drains the dirty queue while it holds the lease.
func TestRunDrainsQueue(t *testing.T) {
	f := setup(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	ch, err := f.st.Changes(ctx)
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- f.is.Run(ctx, "replica-a") }()
	// The first pass examines every vehicle.
	select {
	case <-ch:
	case <-time.After(30 * time.Second):
		t.Fatal("no revision from the first pass")
	}
	f.dep.Values = map[string]any{"replicas": 2}
	f.update(t)
	if err := f.st.MarkDirty(ctx, []store.Dirty{{ID: "car-1"}}); err != nil {
		t.Fatal(err)
	}
	f.is.Kick()
	deadline := time.After(30 * time.Second)
	for f.revision(t, "car-1", hubv1.HalfVehicle) < 2 {
		select {
		case <-ch:
		case <-deadline:
			t.Fatalf("the queued vehicle was not re-issued (revision %d)", f.revision(t, "car-1", hubv1.HalfVehicle))
		}
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}

// A store that lost revisions (restored from a backup) still issues above
// what the vehicle reports it applied: the agent refuses anything else.
func TestIssuesAboveAppliedRevision(t *testing.T) {
	f := setup(t)
	ctx := context.Background()
	if _, err := f.st.PutReported(ctx, "car-1", hubv1.Reported{Half: hubv1.HalfVehicle, AppliedRevision: 41}); err != nil {
		t.Fatal(err)
	}
	f.issue(t, false, "car-1")
	if got := f.revision(t, "car-1", hubv1.HalfVehicle); got != 42 {
		t.Fatalf("revision %d, want 42 (one above the applied 41)", got)
	}
}

// A deployment's health policy rides in each revision's payload, and a
// new policy is a new revision.
func TestRevisionCarriesHealthPolicy(t *testing.T) {
	f := setup(t)
	ctx := context.Background()
	f.issue(t, false, "car-1")
	health := func() *hubv1.HealthPolicy {
		t.Helper()
		d, err := f.st.GetDesired(ctx, "car-1", hubv1.HalfVehicle)
		if err != nil {
			t.Fatal(err)
		}
		var s hubv1.DesiredState
		if err := json.Unmarshal(d.Envelope.Payload, &s); err != nil {
			t.Fatal(err)
		}
		if len(s.Deployments) != 1 {
			t.Fatalf("revision %d: deployments %+v", d.Revision, s.Deployments)
		}
		return s.Deployments[0].Health
	}
	if h := health(); h != nil {
		t.Fatalf("no policy, yet the revision says %+v", h)
	}
	f.dep.Health = &hubv1.HealthPolicy{Deadline: "5m", Rollback: true}
	f.update(t)
	if st := f.issue(t, false, "car-1"); st.Issued != 1 || f.revision(t, "car-1", hubv1.HalfVehicle) != 2 {
		t.Fatalf("after a new policy: %+v, revision %d", st, f.revision(t, "car-1", hubv1.HalfVehicle))
	}
	if h := health(); h == nil || *h != *f.dep.Health {
		t.Fatalf("revision 2 carries %+v, want %+v", h, f.dep.Health)
	}
}

// update writes f.dep as a new generation and completes its rollout, as
// the hub's rollout runner would once every vehicle answered.
func (f *fixture) update(t *testing.T) {
	t.Helper()
	got, err := f.st.UpdateDeployment(context.Background(), f.dep)
	if err != nil {
		t.Fatal(err)
	}
	f.dep.Generation = got.Generation
	complete(t, f.st, got.Name, got.Generation)
}

// complete marks a generation's rollout Completed: every vehicle gets it.
func complete(t *testing.T, st store.Store, name string, gen int64) {
	t.Helper()
	setPhase(t, st, name, gen, hubv1.RolloutCompleted, nil)
}

func setPhase(t *testing.T, st store.Store, name string, gen int64, phase string, vs []hubv1.RolloutVehicle) {
	t.Helper()
	ctx := context.Background()
	r, err := st.GetRollout(ctx, name, gen)
	if err != nil {
		t.Fatal(err)
	}
	r.Phase = phase
	if _, err := st.UpdateRollout(ctx, r, vs); err != nil {
		t.Fatal(err)
	}
}

// TestGenerationPerVehicle: a vehicle gets the newest generation a live
// rollout released to it, else the newest completed; an aborted rollout
// gives nothing.
func TestGenerationPerVehicle(t *testing.T) {
	f := setup(t)
	ctx := context.Background()
	gens := func() []int64 {
		t.Helper()
		d, err := f.st.GetDesired(ctx, "car-1", hubv1.HalfVehicle)
		if err != nil {
			t.Fatal(err)
		}
		var st hubv1.DesiredState
		if err := json.Unmarshal(d.Envelope.Payload, &st); err != nil {
			t.Fatal(err)
		}
		var out []int64
		for _, dr := range st.Deployments {
			out = append(out, dr.Generation)
		}
		return out
	}
	f.issue(t, false, "car-1")
	if g := gens(); !slices.Equal(g, []int64{1}) {
		t.Fatalf("generations %v, want [1]", g)
	}
	// Generation 2 starts a rollout that has not released car-1.
	f.dep.Values = map[string]any{"replicas": 3}
	got, err := f.st.UpdateDeployment(ctx, f.dep)
	if err != nil {
		t.Fatal(err)
	}
	if st := f.issue(t, false, "car-1"); st.Issued != 0 {
		t.Fatalf("unreleased generation 2 issued %+v", st)
	}
	// Released to car-1 (rollout still going): car-1 gets generation 2.
	setPhase(t, f.st, "shuttle", got.Generation, hubv1.RolloutProgressing, []hubv1.RolloutVehicle{{Vehicle: "car-1", Released: true, State: hubv1.VehicleApplying}})
	f.issue(t, false, "car-1")
	if g := gens(); !slices.Equal(g, []int64{2}) {
		t.Fatalf("released: generations %v, want [2]", g)
	}
	// Aborted: back to generation 1.
	setPhase(t, f.st, "shuttle", got.Generation, hubv1.RolloutAborted, nil)
	f.issue(t, false, "car-1")
	if g := gens(); !slices.Equal(g, []int64{1}) {
		t.Fatalf("aborted: generations %v, want [1]", g)
	}
}
