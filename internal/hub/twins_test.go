package hub_test

import (
	"net/http"
	"testing"

	hubv1 "github.com/misaki-io/misaki/api/hub/v1"
	"github.com/misaki-io/misaki/internal/hub"
	"github.com/misaki-io/misaki/internal/hub/catalog/catalogtest"
	"github.com/misaki-io/misaki/internal/hub/hubtest"
)

// GET /v1/twins: a page of vehicles with where each half stands, filtered
// and paged as GET /v1/vehicles; GET /v1/whoami: the token's name and
// scope.
func TestTwinsAndWhoami(t *testing.T) {
	h := hubtest.Start(t, hub.Config{})
	repo := catalogtest.ServeRepo(t, catalogtest.ShuttleChart(t))
	h.Admin(t, http.StatusCreated, "POST", "/v1/sources", hubv1.ChartSource{Name: "apps", Type: hubv1.SourceHTTP, URL: repo}, nil)
	lo := &simCar{v: h.Enrol(t, "car-1", map[string]string{"fleet": "eu"}, small)}
	hi := &simCar{v: h.Enrol(t, "car-2", map[string]string{"fleet": "eu"}, big)}
	h.Enrol(t, "car-3", map[string]string{"fleet": "us"}, big)
	h.Admin(t, http.StatusCreated, "POST", "/v1/deployments", shuttle("fleet=eu"), nil)
	fleetUntil(t, h, []*simCar{lo, hi}, "/v1/deployments/shuttle/rollouts/1", "rollout", func(ro hubv1.Rollout) bool {
		return ro.Phase == hubv1.RolloutCompleted
	})

	var page1, page2 hubv1.List[hubv1.TwinSummary]
	h.Admin(t, http.StatusOK, "GET", "/v1/twins?selector=fleet%3Deu&limit=1", nil, &page1)
	if len(page1.Items) != 1 || page1.Next == "" {
		t.Fatalf("first page: %+v", page1)
	}
	h.Admin(t, http.StatusOK, "GET", "/v1/twins?selector=fleet%3Deu&limit=1&after="+page1.Next, nil, &page2)
	if len(page2.Items) != 1 || page2.Next != "" {
		t.Fatalf("second page: %+v", page2)
	}
	car1, car2 := page1.Items[0], page2.Items[0]
	if car1.Vehicle.ID != "car-1" || car2.Vehicle.ID != "car-2" || !car1.Vehicle.Online {
		t.Fatalf("rows %s (online %v), %s", car1.Vehicle.ID, car1.Vehicle.Online, car2.Vehicle.ID)
	}
	// car-2 runs everything; car-1 is small, so the planner goes to the
	// cloud, whose half nobody reports here.
	if car2.OnVehicle != 2 || car2.InCloud != 0 || len(car2.Halves) != 1 {
		t.Errorf("car-2: %+v", car2)
	}
	for _, row := range []hubv1.TwinSummary{car1, car2} {
		var twin hubv1.Twin
		h.Admin(t, http.StatusOK, "GET", "/v1/vehicles/"+row.Vehicle.ID, nil, &twin)
		if row.Deltas != len(twin.Delta) || row.Deltas == 0 { // the simulated cars report no objects: each is missing
			t.Errorf("%s: %d deltas, the twin lists %d", row.Vehicle.ID, row.Deltas, len(twin.Delta))
		}
	}
	if h := car2.Halves[0]; h.Half != hubv1.HalfVehicle || !h.Reported || h.Applied != h.Desired || h.Phase != hubv1.PhaseHealthy {
		t.Errorf("car-2's vehicle half: %+v", h)
	}
	if car1.InCloud != 1 || car1.OnVehicle != 1 || len(car1.Halves) != 2 || car1.Halves[1].Half != hubv1.HalfCloud || car1.Halves[1].Reported {
		t.Errorf("car-1: %+v", car1)
	}
	var offline hubv1.List[hubv1.TwinSummary]
	h.Admin(t, http.StatusOK, "GET", "/v1/twins?state=offline", nil, &offline)
	if len(offline.Items) != 1 || offline.Items[0].Vehicle.ID != "car-3" {
		t.Errorf("offline: %+v", offline.Items)
	}
	if code, _ := h.Do(t, h.Client(), h.Token, "GET", "/v1/twins?selector=a%20in", nil, nil); code != http.StatusBadRequest {
		t.Errorf("a selector that does not parse: %d", code)
	}

	// A cursor no list gave is the caller's mistake, named as such.
	for _, path := range []string{"/v1/rollouts?after=x", "/v1/audit?after=x"} {
		code, b := h.Do(t, h.Client(), h.Token, "GET", path, nil, nil)
		wantError(t, path, code, b, http.StatusBadRequest, "after", "not a cursor")
	}

	var me hubv1.OperatorToken
	h.Admin(t, http.StatusOK, "GET", "/v1/whoami", nil, &me)
	if me.Scope != "admin" || me.Name == "" || me.Token != "" {
		t.Errorf("whoami with the admin token: %+v", me)
	}
	var viewer hubv1.OperatorToken
	h.Admin(t, http.StatusCreated, "POST", "/v1/operator-tokens", hubv1.OperatorToken{Name: "viewer", Scope: "read"}, &viewer)
	if code, b := h.Do(t, h.Client(), viewer.Token, "GET", "/v1/whoami", nil, &me); code != http.StatusOK || me.Name != "viewer" || me.Scope != "read" {
		t.Errorf("whoami with a read token: %d %s", code, b)
	}
	if code, _ := h.Do(t, h.Client(), "", "GET", "/v1/whoami", nil, nil); code != http.StatusUnauthorized {
		t.Errorf("whoami without a token: %d", code)
	}
}
