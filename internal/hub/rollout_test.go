package hub_test

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	hubv1 "github.com/misaki-io/misaki/api/hub/v1"
	"github.com/misaki-io/misaki/internal/hub"
	"github.com/misaki-io/misaki/internal/hub/catalog/catalogtest"
	"github.com/misaki-io/misaki/internal/hub/hubtest"
	"github.com/misaki-io/misaki/internal/hubclient"
)

// simCar is a simulated agent: it fetches its newest revision, and
// reports it Healthy (or Failed, when fail says so for the deployment's
// generation), with the deployments it carries.
type simCar struct {
	v     *hubtest.Vehicle
	rev   int64
	gens  map[string]int64 // deployment → generation applied
	fail  func(gen int64) bool
	quiet bool // offline: fetches and reports nothing
}

func (c *simCar) sync(t *testing.T, h *hubtest.Hub) {
	t.Helper()
	if c.quiet {
		return
	}
	code, d := h.Desired(t, c.v, hubv1.HalfVehicle, c.rev, 0)
	if code != http.StatusOK {
		return
	}
	state := verify(t, h, c.v.ID, d, c.rev)
	c.rev = d.Revision
	c.gens = map[string]int64{}
	rep := hubv1.Reported{Half: hubv1.HalfVehicle, AppliedRevision: d.Revision, Phase: hubv1.PhaseHealthy, Deployments: state.Deployments}
	for _, dr := range state.Deployments {
		c.gens[dr.Name] = dr.Generation
		if c.fail != nil && c.fail(dr.Generation) {
			rep.Phase = hubv1.PhaseFailed
			rep.Failure = &hubv1.Failure{Revision: d.Revision, Reason: dr.Name + " not ready by 5m", Deployments: []string{dr.Name}}
		}
	}
	if err := hubclient.New(h.URL, h.CA, &c.v.Cert).Report(context.Background(), c.v.ID, rep); err != nil {
		t.Fatalf("report %s: %v", c.v.ID, err)
	}
}

// fleetUntil syncs every car and reads the rollout until cond holds.
func fleetUntil(t *testing.T, h *hubtest.Hub, cars []*simCar, path, what string, cond func(hubv1.Rollout) bool) hubv1.Rollout {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	var ro hubv1.Rollout
	for {
		for _, c := range cars {
			c.sync(t, h)
		}
		ro = hubv1.Rollout{} // json.Unmarshal would merge into the old maps
		h.Admin(t, http.StatusOK, "GET", path, nil, &ro)
		if cond(ro) {
			return ro
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: rollout %s %q, waves %+v, counts %v", what, ro.Phase, ro.Reason, ro.Waves, ro.Counts)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func generations(cars []*simCar, dep string) map[string]int64 {
	out := map[string]int64{}
	for _, c := range cars {
		out[c.v.ID] = c.gens[dep]
	}
	return out
}

// TestRolloutWaves runs a rollout through the real hub with simulated
// vehicles: the canary first, a failure that pauses it by itself, a
// resume, completion; then a generation aborted halfway (its vehicles go
// back), a rollback, and a vehicle that was offline throughout getting
// the newest generation straight away.
func TestRolloutWaves(t *testing.T) {
	h := hubtest.Start(t, hub.Config{})
	repo := catalogtest.ServeRepo(t, catalogtest.ShuttleChart(t))
	h.Admin(t, http.StatusCreated, "POST", "/v1/sources", hubv1.ChartSource{Name: "apps", Type: hubv1.SourceHTTP, URL: repo}, nil)
	var cars []*simCar
	for i := range 6 {
		cars = append(cars, &simCar{v: h.Enrol(t, fmt.Sprintf("car-%d", i+1), map[string]string{"fleet": "eu"}, big)})
	}
	away := cars[5]
	away.quiet = true // never fetches until the end

	dep := shuttle("fleet=eu")
	dep.Rollout = &hubv1.RolloutPolicy{Canary: &hubv1.Wave{Size: "1"}, Waves: []hubv1.Wave{{Size: "50%"}}, FailureThreshold: "0"}
	h.Admin(t, http.StatusCreated, "POST", "/v1/deployments", dep, &dep)
	path := "/v1/deployments/shuttle/rollouts/1"

	// The split: the canary, wave 2 (up to 50%: two more vehicles) and the
	// rest. One vehicle of wave 2 will fail.
	ro := fleetUntil(t, h, nil, path, "split", func(ro hubv1.Rollout) bool { return len(ro.Waves) == 3 })
	if names := []string{ro.Waves[0].Name, ro.Waves[1].Name, ro.Waves[2].Name}; !slices.Equal(names, []string{"canary", "wave-2", "rest"}) || ro.Waves[0].Vehicles != 1 || ro.Waves[1].Vehicles != 2 || ro.Waves[2].Vehicles != 3 {
		t.Fatalf("waves %+v", ro.Waves)
	}
	var canary, wave2 hubv1.List[hubv1.RolloutVehicle]
	h.Admin(t, http.StatusOK, "GET", path+"/vehicles?wave=0", nil, &canary)
	h.Admin(t, http.StatusOK, "GET", path+"/vehicles?wave=1", nil, &wave2)
	if len(canary.Items) != 1 || len(wave2.Items) != 2 {
		t.Fatalf("canary %+v, wave 2 %+v", canary.Items, wave2.Items)
	}
	if canary.Items[0].Vehicle == away.v.ID || wave2.Items[0].Vehicle == away.v.ID {
		t.Fatalf("the offline car is %s: the scenario wants it elsewhere", away.v.ID) // the hash order is fixed: this does not flake
	}
	bad := wave2.Items[0].Vehicle
	for _, c := range cars {
		if c.v.ID == bad {
			c.fail = func(gen int64) bool { return gen == 1 }
		}
	}

	// The canary alone gets generation 1, and answers.
	fleetUntil(t, h, cars, path, "canary healthy", func(ro hubv1.Rollout) bool { return ro.Waves[0].Done != nil })
	h.Admin(t, http.StatusOK, "GET", path+"/vehicles?wave=0", nil, &canary)
	if canary.Items[0].State != hubv1.VehicleHealthy {
		t.Fatalf("canary: %+v", canary.Items)
	}

	// In wave 2 one fails, and the rollout pauses by itself, saying which
	// and why; the rest get nothing.
	ro = fleetUntil(t, h, cars, path, "auto-pause", func(ro hubv1.Rollout) bool { return ro.Phase == hubv1.RolloutPaused })
	if !strings.Contains(ro.Reason, bad) || !strings.Contains(ro.Reason, "not ready by 5m") || !strings.Contains(ro.Reason, "failure threshold 0") {
		t.Fatalf("pause reason %q does not name %s and why", ro.Reason, bad)
	}
	var rest hubv1.List[hubv1.RolloutVehicle]
	h.Admin(t, http.StatusOK, "GET", path+"/vehicles?wave=2", nil, &rest)
	for _, v := range rest.Items {
		if v.Released || v.State != hubv1.VehiclePending {
			t.Errorf("paused before the last wave, yet %+v", v)
		}
	}
	var audit hubv1.List[hubv1.AuditEntry]
	h.Admin(t, http.StatusOK, "GET", "/v1/audit", nil, &audit)
	if e := audit.Items[0]; e.Actor != "hub" || e.Action != "pause" || e.Object != "deployments/shuttle/rollouts/1" {
		t.Errorf("newest audit entry %+v, want the hub's pause", e)
	}

	// A read token cannot resume; an admin can, and the failure so far is
	// tolerated: the rollout completes, the failed vehicle staying failed.
	var readTok hubv1.OperatorToken
	h.Admin(t, http.StatusCreated, "POST", "/v1/operator-tokens", hubv1.OperatorToken{Name: "viewer", Scope: "read"}, &readTok)
	if code, b := h.Do(t, h.Client(), readTok.Token, "POST", path+"/resume", nil, nil); code != http.StatusForbidden {
		t.Fatalf("resume with a read token: %d %s", code, b)
	}
	h.Admin(t, http.StatusOK, "POST", path+"/resume", hubv1.RolloutAction{Reason: "known issue on " + bad}, &ro)
	if ro.Phase != hubv1.RolloutProgressing || ro.Tolerated != 1 {
		t.Fatalf("after resume: %s tolerated %d", ro.Phase, ro.Tolerated)
	}
	ro = fleetUntil(t, h, cars, path, "completed", func(ro hubv1.Rollout) bool { return ro.Phase == hubv1.RolloutCompleted })
	if ro.Counts[hubv1.VehicleHealthy] != 4 || ro.Counts[hubv1.VehicleFailed] != 1 || ro.Counts[hubv1.VehicleOffline] != 1 {
		t.Fatalf("completed with counts %v (want 4 healthy, 1 failed, the away car offline)", ro.Counts)
	}
	for _, c := range cars[:5] {
		if c.gens["shuttle"] != 1 {
			t.Fatalf("%s runs generation %d", c.v.ID, c.gens["shuttle"])
		}
	}

	// Generation 2, aborted after its canary: the canary goes back to 1.
	dep.Values = map[string]any{"api": map[string]any{"replicas": 2}}
	h.Admin(t, http.StatusOK, "PUT", "/v1/deployments/shuttle", dep, &dep)
	path2 := "/v1/deployments/shuttle/rollouts/2"
	fleetUntil(t, h, cars, path2, "generation 2 canary", func(ro hubv1.Rollout) bool { return len(ro.Waves) > 0 && ro.Waves[0].Done != nil })
	if g := generations(cars, "shuttle"); g[canary.Items[0].Vehicle] != 2 {
		t.Fatalf("canary of generation 2 runs %v", g)
	}
	var old hubv1.Rollout
	h.Admin(t, http.StatusOK, "GET", path, nil, &old)
	if old.Phase != hubv1.RolloutCompleted {
		t.Fatalf("rollout 1 became %s", old.Phase)
	}
	h.Admin(t, http.StatusOK, "POST", path2+"/abort", hubv1.RolloutAction{Reason: "wrong values"}, &ro)
	if ro.Phase != hubv1.RolloutAborted || !strings.Contains(ro.Reason, "wrong values") {
		t.Fatalf("abort: %s %q", ro.Phase, ro.Reason)
	}
	if code, _ := h.Do(t, h.Client(), h.Token, "POST", path2+"/resume", nil, nil); code != http.StatusConflict {
		t.Fatalf("resume of an aborted rollout: %d", code)
	}
	deadline := time.Now().Add(30 * time.Second)
	for generations(cars, "shuttle")[canary.Items[0].Vehicle] != 1 {
		if time.Now().After(deadline) {
			t.Fatalf("after abort the canary runs %v", generations(cars, "shuttle"))
		}
		for _, c := range cars {
			c.sync(t, h)
		}
		time.Sleep(100 * time.Millisecond)
	}

	// Roll back to generation 1's spec as generation 3; it rolls out by
	// that spec's policy (canary first). The vehicle that was away comes
	// back during it and takes generation 3 directly.
	var rb hubv1.Deployment
	h.Admin(t, http.StatusOK, "POST", "/v1/deployments/shuttle/rollback", hubv1.RollbackRequest{Generation: 1}, &rb)
	if rb.Generation != 3 || rb.Values != nil {
		t.Fatalf("rollback: generation %d values %v", rb.Generation, rb.Values)
	}
	var versions hubv1.List[hubv1.Deployment]
	h.Admin(t, http.StatusOK, "GET", "/v1/deployments/shuttle/versions", nil, &versions)
	if len(versions.Items) != 3 || versions.Items[0].Generation != 3 || versions.Items[1].Values == nil {
		t.Fatalf("versions: %+v", versions.Items)
	}
	for _, c := range cars {
		c.fail = nil
	}
	away.quiet = false // back, and it answers at once
	fleetUntil(t, h, cars, "/v1/deployments/shuttle/rollouts/3", "rollback completed", func(ro hubv1.Rollout) bool { return ro.Phase == hubv1.RolloutCompleted })
	if g := generations(cars, "shuttle"); g[away.v.ID] != 3 {
		t.Fatalf("the vehicle that was away runs %v, want generation 3 straight away", g)
	}

	// Bad policies are refused, naming the field.
	bad2 := dep
	bad2.Rollout = &hubv1.RolloutPolicy{Waves: []hubv1.Wave{{Size: "ten"}}, Gates: []string{"battery>>3"}}
	code, b := h.Do(t, h.Client(), h.Token, "PUT", "/v1/deployments/shuttle", bad2, nil)
	wantError(t, "bad size", code, b, http.StatusBadRequest, "rollout.waves[0].size", "ten")
	bad2.Rollout = &hubv1.RolloutPolicy{Gates: []string{"battery>>3"}}
	code, b = h.Do(t, h.Client(), h.Token, "PUT", "/v1/deployments/shuttle", bad2, nil)
	wantError(t, "bad gate", code, b, http.StatusBadRequest, "rollout.gates[0]", "battery")
}

// A vehicle whose agent waits for a gate: the report is accepted, the
// twin has a waiting delta naming the gate, and the rollout counts the
// vehicle as waiting, holding its wave up.
func TestWaitingForGate(t *testing.T) {
	h := hubtest.Start(t, hub.Config{})
	repo := catalogtest.ServeRepo(t, catalogtest.ShuttleChart(t))
	h.Admin(t, http.StatusCreated, "POST", "/v1/sources", hubv1.ChartSource{Name: "apps", Type: hubv1.SourceHTTP, URL: repo}, nil)
	car := h.Enrol(t, "car-1", map[string]string{"fleet": "eu"}, big)
	dep := shuttle("fleet=eu")
	dep.Rollout = &hubv1.RolloutPolicy{Gates: []string{"parked", "battery>=30"}}
	h.Admin(t, http.StatusCreated, "POST", "/v1/deployments", dep, nil)
	_, d := h.Desired(t, car, hubv1.HalfVehicle, 0, 30*time.Second)
	state := verify(t, h, car.ID, d, 0)
	if gates := state.Deployments[0].Gates; !slices.Equal(gates, []string{"parked", "battery>=30"}) {
		t.Fatalf("revision's gates %v", gates)
	}
	c := hubclient.New(h.URL, h.CA, &car.Cert)
	ctx := context.Background()
	err := c.Report(ctx, car.ID, hubv1.Reported{Half: hubv1.HalfVehicle, Phase: hubv1.PhaseWaiting, AppliedRevision: 3, Waiting: 2})
	var he *hubclient.Error
	if !errors.As(err, &he) || he.Body.Field != "waiting" {
		t.Fatalf("waiting below the applied revision: %v", err)
	}
	rep := hubv1.Reported{Half: hubv1.HalfVehicle, Phase: hubv1.PhaseWaiting, Waiting: d.Revision, Gates: []hubv1.GateState{
		{Name: "parked", Holds: false, Reason: "parked is false"}, {Name: "battery>=30", Holds: true},
	}}
	if err := c.Report(ctx, car.ID, rep); err != nil {
		t.Fatal(err)
	}
	var twin hubv1.Twin
	h.Admin(t, http.StatusOK, "GET", "/v1/vehicles/car-1", nil, &twin)
	found := false
	for _, dl := range twin.Delta {
		if dl.Kind == "waiting" {
			found = true
			if want := fmt.Sprintf("revision %d waits for parked (parked is false)", d.Revision); dl.Detail != want {
				t.Errorf("waiting delta %q, want %q", dl.Detail, want)
			}
		}
	}
	if !found {
		t.Fatalf("no waiting delta in %+v", twin.Delta)
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		var vs hubv1.List[hubv1.RolloutVehicle]
		h.Admin(t, http.StatusOK, "GET", "/v1/deployments/shuttle/rollouts/1/vehicles", nil, &vs)
		if len(vs.Items) == 1 && vs.Items[0].State == hubv1.VehicleWaiting {
			if !strings.Contains(vs.Items[0].Reason, "parked is false") {
				t.Errorf("reason %q", vs.Items[0].Reason)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("rollout vehicles %+v, want car-1 waiting", vs.Items)
		}
		time.Sleep(100 * time.Millisecond)
	}
}
