package storetest

import (
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	hubv1 "github.com/misaki-io/misaki/api/hub/v1"
	"github.com/misaki-io/misaki/internal/hub/store"
)

// testDeploymentVersions: each write keeps its generation and starts its
// rollout; an update supersedes the rollouts still going, not finished
// ones; a delete removes them all.
func testDeploymentVersions(t *testing.T, s store.Store) {
	ctx := t.Context()
	d := fullDeployment("shuttle")
	d.Rollout = &hubv1.RolloutPolicy{Canary: &hubv1.Wave{Size: "1"}, Waves: []hubv1.Wave{{Selector: "region=north"}}, BakeTime: "10m", FailureThreshold: "5%", Gates: []string{"parked"}}
	must(t, "create", s.CreateDeployment(ctx, d))

	r1, err := s.GetRollout(ctx, "shuttle", 1)
	must(t, "get rollout 1", err)
	want := hubv1.Rollout{Deployment: "shuttle", Generation: 1, Policy: *d.Rollout, Phase: hubv1.RolloutProgressing, Waves: []hubv1.WaveStatus{},
		Created: stored(d.Updated), Updated: stored(d.Updated), CreatedBy: d.CreatedBy, ResourceVersion: 1}
	if diff := cmp.Diff(want, r1); diff != "" {
		t.Fatalf("new rollout (-want +got):\n%s", diff)
	}

	// Generation 2 supersedes rollout 1; generation 2's rollout completes
	// before generation 3, so it stays Completed.
	u := fullDeployment("shuttle")
	u.Generation, u.Values, u.Updated, u.CreatedBy = 1, map[string]any{"replicas": float64(7)}, at(time.Minute), "ops"
	d2, err := s.UpdateDeployment(ctx, u)
	must(t, "update to 2", err)
	r1, err = s.GetRollout(ctx, "shuttle", 1)
	must(t, "get rollout 1", err)
	if r1.Phase != hubv1.RolloutSuperseded || r1.Reason == "" || r1.ResourceVersion != 2 || !r1.Updated.Equal(stored(at(time.Minute))) {
		t.Fatalf("rollout 1 after generation 2: %+v", r1)
	}
	r2, err := s.GetRollout(ctx, "shuttle", 2)
	must(t, "get rollout 2", err)
	if r2.From != 1 || r2.CreatedBy != "ops" || r2.Phase != hubv1.RolloutProgressing {
		t.Fatalf("rollout 2: %+v", r2)
	}
	r2.Phase, r2.Updated = hubv1.RolloutCompleted, at(2*time.Minute)
	_, err = s.UpdateRollout(ctx, r2, nil)
	must(t, "complete rollout 2", err)
	u.Generation, u.Values, u.Updated = 2, map[string]any{"replicas": float64(9)}, at(3*time.Minute)
	_, err = s.UpdateDeployment(ctx, u)
	must(t, "update to 3", err)
	r2, err = s.GetRollout(ctx, "shuttle", 2)
	must(t, "get rollout 2", err)
	if r2.Phase != hubv1.RolloutCompleted {
		t.Fatalf("completed rollout 2 became %s", r2.Phase)
	}

	v2, err := s.GetDeploymentVersion(ctx, "shuttle", 2)
	must(t, "get version 2", err)
	if diff := cmp.Diff(d2, v2); diff != "" {
		t.Errorf("version 2 is not what the update stored (-stored +version):\n%s", diff)
	}
	vs, err := s.ListDeploymentVersions(ctx, "shuttle")
	must(t, "list versions", err)
	var gens []int64
	for _, v := range vs {
		gens = append(gens, v.Generation)
	}
	if diff := cmp.Diff([]int64{3, 2, 1}, gens); diff != "" {
		t.Errorf("versions (-want +got):\n%s", diff)
	}
	if vs[2].Values["replicas"] != d.Values["replicas"] || vs[0].Values["replicas"] != float64(9) {
		t.Errorf("version values: 1 %v, 3 %v", vs[2].Values, vs[0].Values)
	}

	_, err = s.GetDeploymentVersion(ctx, "shuttle", 4)
	wantErr(t, "get version 4", err, store.ErrNotFound)
	_, err = s.GetRollout(ctx, "shuttle", 4)
	wantErr(t, "get rollout 4", err, store.ErrNotFound)
	_, err = s.ListDeploymentVersions(ctx, "nope")
	wantErr(t, "list versions of a missing deployment", err, store.ErrNotFound)

	must(t, "delete", s.DeleteDeployment(ctx, "shuttle"))
	_, err = s.GetRollout(ctx, "shuttle", 3)
	wantErr(t, "rollout after delete", err, store.ErrNotFound)
	_, err = s.GetDeploymentVersion(ctx, "shuttle", 3)
	wantErr(t, "version after delete", err, store.ErrNotFound)
	// A deployment of the same name starts again at generation 1.
	must(t, "create again", s.CreateDeployment(ctx, fullDeployment("shuttle")))
	rs, _, err := s.ListRollouts(ctx, store.RolloutFilter{Deployment: "shuttle"}, store.Page{})
	must(t, "list rollouts", err)
	if len(rs) != 1 || rs[0].Generation != 1 {
		t.Errorf("rollouts after re-create: %+v", rs)
	}
}

func testUpdateRollout(t *testing.T, s store.Store) {
	ctx := t.Context()
	must(t, "create", s.CreateDeployment(ctx, fullDeployment("shuttle")))
	r, err := s.GetRollout(ctx, "shuttle", 1)
	must(t, "get", err)

	started, done, bake := at(time.Minute), at(2*time.Minute), at(12*time.Minute+time.Nanosecond)
	r.Waves = []hubv1.WaveStatus{
		{Name: "canary", Vehicles: 1, Started: &started, Done: &done, BakeUntil: &bake, Counts: map[string]int{"healthy": 1}},
		{Name: "rest", Vehicles: 3, Counts: map[string]int{"pending": 3}},
	}
	r.Counts = map[string]int{"healthy": 1, "pending": 3}
	r.Phase, r.Reason, r.Tolerated, r.Updated = hubv1.RolloutPaused, "by ops", 2, at(3*time.Minute)
	vehicles := []hubv1.RolloutVehicle{
		{Vehicle: "car-2", Wave: 1, State: hubv1.VehiclePending},
		{Vehicle: "car-1", Wave: 0, Released: true, State: hubv1.VehicleHealthy},
		{Vehicle: "car-3", Wave: 1, State: hubv1.VehiclePending},
		{Vehicle: "car-4", Wave: 1, State: hubv1.VehiclePending},
	}
	got, err := s.UpdateRollout(ctx, r, vehicles)
	must(t, "update", err)
	want := r
	want.ResourceVersion = 2
	want.Updated = stored(r.Updated)
	want.Waves = []hubv1.WaveStatus{r.Waves[0], r.Waves[1]}
	want.Waves[0].Started, want.Waves[0].Done, want.Waves[0].BakeUntil = storedPtr(&started), storedPtr(&done), storedPtr(&bake)
	if diff := cmp.Diff(want, got); diff != "" {
		t.Fatalf("stored rollout (-want +got):\n%s", diff)
	}
	again, err := s.GetRollout(ctx, "shuttle", 1)
	must(t, "get", err)
	if diff := cmp.Diff(got, again); diff != "" {
		t.Fatalf("read back (-update +get):\n%s", diff)
	}

	_, err = s.UpdateRollout(ctx, r, nil) // version 1 again
	wantErr(t, "stale update", err, store.ErrConflict)
	missing := r
	missing.Generation = 9
	_, err = s.UpdateRollout(ctx, missing, nil)
	wantErr(t, "update of a missing rollout", err, store.ErrNotFound)

	// Upsert: car-2 released, car-5 joins.
	got.Updated = at(4 * time.Minute)
	_, err = s.UpdateRollout(ctx, got, []hubv1.RolloutVehicle{
		{Vehicle: "car-2", Wave: 1, Released: true, State: hubv1.VehicleFailed, Reason: "web not ready by 5m"},
		{Vehicle: "car-5", Wave: 1, State: hubv1.VehiclePending},
	})
	must(t, "upsert", err)

	list := func(f store.RolloutVehicleFilter, p store.Page) ([]string, string) {
		t.Helper()
		vs, next, err := s.ListRolloutVehicles(ctx, "shuttle", 1, f, p)
		must(t, "list vehicles", err)
		var ids []string
		for _, v := range vs {
			ids = append(ids, v.Vehicle+"/"+v.State)
		}
		return ids, next
	}
	all, _ := list(store.RolloutVehicleFilter{}, store.Page{})
	if diff := cmp.Diff([]string{"car-1/healthy", "car-2/failed", "car-3/pending", "car-4/pending", "car-5/pending"}, all); diff != "" {
		t.Errorf("all vehicles (-want +got):\n%s", diff)
	}
	failed, _, err := s.ListRolloutVehicles(ctx, "shuttle", 1, store.RolloutVehicleFilter{State: hubv1.VehicleFailed}, store.Page{})
	must(t, "list failed", err)
	if diff := cmp.Diff([]hubv1.RolloutVehicle{{Vehicle: "car-2", Wave: 1, Released: true, State: hubv1.VehicleFailed, Reason: "web not ready by 5m"}}, failed); diff != "" {
		t.Errorf("failed vehicles (-want +got):\n%s", diff)
	}
	released, _ := list(store.RolloutVehicleFilter{Released: true}, store.Page{})
	if diff := cmp.Diff([]string{"car-1/healthy", "car-2/failed"}, released); diff != "" {
		t.Errorf("released vehicles (-want +got):\n%s", diff)
	}
	one := 1
	p1, next := list(store.RolloutVehicleFilter{Wave: &one}, store.Page{Limit: 2})
	p2, end := list(store.RolloutVehicleFilter{Wave: &one}, store.Page{Limit: 2, After: next})
	if diff := cmp.Diff([]string{"car-2/failed", "car-3/pending", "car-4/pending", "car-5/pending"}, append(p1, p2...)); diff != "" || end != "" {
		t.Errorf("wave 1 in pages of 2 (-want +got):\n%s (end cursor %q)", diff, end)
	}
	_, _, err = s.ListRolloutVehicles(ctx, "shuttle", 7, store.RolloutVehicleFilter{}, store.Page{})
	wantErr(t, "vehicles of a missing rollout", err, store.ErrNotFound)
}

func testListRollouts(t *testing.T, s store.Store) {
	ctx := t.Context()
	for _, name := range []string{"a", "b"} {
		must(t, "create "+name, s.CreateDeployment(ctx, fullDeployment(name)))
	}
	u := fullDeployment("a")
	u.Generation, u.Selector = 1, "fleet=us"
	_, err := s.UpdateDeployment(ctx, u)
	must(t, "update a", err)
	rb, err := s.GetRollout(ctx, "b", 1)
	must(t, "get b", err)
	rb.Phase = hubv1.RolloutCompleted
	_, err = s.UpdateRollout(ctx, rb, nil)
	must(t, "complete b", err)

	names := func(f store.RolloutFilter, p store.Page) ([]string, string) {
		t.Helper()
		rs, next, err := s.ListRollouts(ctx, f, p)
		must(t, "list", err)
		var out []string
		for _, r := range rs {
			out = append(out, r.Deployment+"/"+r.Phase)
		}
		return out, next
	}
	for _, tc := range []struct {
		name string
		f    store.RolloutFilter
		want []string
	}{
		{"all, newest first", store.RolloutFilter{}, []string{"a/Progressing", "b/Completed", "a/Superseded"}},
		{"one deployment", store.RolloutFilter{Deployment: "a"}, []string{"a/Progressing", "a/Superseded"}},
		{"active", store.RolloutFilter{Active: true}, []string{"a/Progressing"}},
		{"active of b", store.RolloutFilter{Deployment: "b", Active: true}, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, _ := names(tc.f, store.Page{})
			if diff := cmp.Diff(tc.want, got); diff != "" {
				t.Errorf("(-want +got):\n%s", diff)
			}
		})
	}
	p1, next := names(store.RolloutFilter{}, store.Page{Limit: 2})
	p2, end := names(store.RolloutFilter{}, store.Page{Limit: 2, After: next})
	if diff := cmp.Diff([]string{"a/Progressing", "b/Completed", "a/Superseded"}, append(p1, p2...)); diff != "" || end != "" || next == "" {
		t.Errorf("pages of 2 (-want +got):\n%s (cursors %q, %q)", diff, next, end)
	}
	_, _, err = s.ListRollouts(ctx, store.RolloutFilter{}, store.Page{After: "x"})
	wantErr(t, "a malformed cursor", err, store.ErrBadCursor)
}
