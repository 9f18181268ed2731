package hub_test

import (
	"encoding/json"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"

	hubv1 "github.com/misaki-io/misaki/api/hub/v1"
	"github.com/misaki-io/misaki/internal/hub"
	"github.com/misaki-io/misaki/internal/hub/catalog/catalogtest"
	"github.com/misaki-io/misaki/internal/hub/hubtest"
	"github.com/misaki-io/misaki/internal/trust"
)

// The path a user takes in the README: add a chart repository, enrol a
// vehicle, deploy to it, read the signed desired revision and the twin.
func TestEndToEnd(t *testing.T) {
	h := hubtest.Start(t, hub.Config{GatewayURL: "https://gateway.example.com:15443"})
	repo := catalogtest.ServeRepo(t, catalogtest.ShuttleChart(t))
	h.Admin(t, http.StatusCreated, "POST", "/v1/sources", hubv1.ChartSource{Name: "apps", Type: hubv1.SourceHTTP, URL: repo}, nil)

	var charts hubv1.List[hubv1.Chart]
	h.Admin(t, http.StatusOK, "GET", "/v1/charts", nil, &charts)
	if len(charts.Items) != 1 || charts.Items[0].Name != "shuttle" || charts.Items[0].Versions[0].Version != "1.0.0" {
		t.Fatalf("charts: %+v", charts.Items)
	}

	car := h.Enrol(t, "car-1", map[string]string{"fleet": "eu"}, hubv1.ResourceList{"cpu": "2", "memory": "4Gi"})
	other := h.Enrol(t, "car-2", map[string]string{"fleet": "us"}, hubv1.ResourceList{"cpu": "16", "memory": "64Gi"})

	var dep hubv1.Deployment
	h.Admin(t, http.StatusCreated, "POST", "/v1/deployments", hubv1.Deployment{
		Name:     "shuttle",
		Chart:    hubv1.ChartRef{Source: "apps", Name: "shuttle", Version: "1.0.0"},
		Values:   map[string]any{"replicas": 2},
		Selector: "fleet=eu",
	}, &dep)
	if !strings.HasPrefix(dep.Chart.Digest, "sha256:") || dep.Generation != 1 {
		t.Fatalf("deployment: %+v", dep)
	}

	code, d := h.Desired(t, car, hubv1.HalfVehicle, 0, 20*time.Second)
	if code != http.StatusOK || d.Revision != 1 {
		t.Fatalf("desired: %d %+v", code, d)
	}
	state := verify(t, h, car.ID, d, 0)
	// The planner asks for 4 CPUs: it does not fit in car-1's 2, so it is
	// placed in the cloud and the vehicle gets a Route to it instead.
	place := map[string]string{}
	for _, p := range state.Placement {
		place[p.Component] = p.Place
	}
	if place["api"] != hubv1.PlaceVehicle || place["planner"] != hubv1.PlaceCloud {
		t.Fatalf("placement: %+v", state.Placement)
	}
	kinds := objectNames(t, state.Objects)
	if !slices.Contains(kinds, "Deployment/default/shuttle-api") || !slices.Contains(kinds, "Route/default/misaki-cloud-shuttle-planner") {
		t.Fatalf("vehicle half objects: %v", kinds)
	}
	if slices.Contains(kinds, "Deployment/default/shuttle-planner") {
		t.Fatalf("the planner is on the vehicle too: %v", kinds)
	}
	code, cd := h.Desired(t, car, hubv1.HalfCloud, 0, 10*time.Second)
	if code != http.StatusOK {
		t.Fatalf("cloud half: %d", code)
	}
	cloud := verify(t, h, car.ID, cd, 0)
	if cloud.Namespace != "misaki-v-car-1" || !slices.Contains(objectNames(t, cloud.Objects), "Deployment/misaki-v-car-1/shuttle-planner") {
		t.Fatalf("cloud half: ns %q objects %v", cloud.Namespace, objectNames(t, cloud.Objects))
	}

	// car-2 is not selected: its long-poll waits and answers 304.
	if code, _ := h.Desired(t, other, hubv1.HalfVehicle, 0, 300*time.Millisecond); code != http.StatusNotModified {
		t.Fatalf("unselected vehicle: %d", code)
	}
	// A vehicle cannot read another's state.
	if code, b := h.Do(t, other.Client, "", "GET", "/v1/vehicles/car-1/desired?wait=0s", nil, nil); code != http.StatusForbidden {
		t.Fatalf("car-2 reading car-1: %d %s", code, b)
	}
	if code, b := h.Do(t, other.Client, "", "GET", "/v1/vehicles/car-1", nil, nil); code != http.StatusForbidden {
		t.Fatalf("car-2 reading car-1's twin: %d %s", code, b)
	}

	// The agent reports; the twin shows no delta for the vehicle half.
	var objs []hubv1.ObjectStatus
	for _, raw := range state.Objects {
		var u unstructured.Unstructured
		if err := json.Unmarshal(raw, &u.Object); err != nil {
			t.Fatal(err)
		}
		objs = append(objs, hubv1.ObjectStatus{APIVersion: u.GetAPIVersion(), Kind: u.GetKind(), Namespace: u.GetNamespace(), Name: u.GetName(), State: hubv1.StateHealthy})
	}
	rep := hubv1.Reported{Half: hubv1.HalfVehicle, AppliedRevision: 1, Objects: objs, AgentVersion: "test"}
	for range 2 { // idempotent
		if code, b := h.Do(t, car.Client, "", "PUT", "/v1/vehicles/car-1/reported", rep, nil); code != http.StatusNoContent {
			t.Fatalf("report: %d %s", code, b)
		}
	}
	var twin hubv1.Twin
	h.Admin(t, http.StatusOK, "GET", "/v1/vehicles/car-1", nil, &twin)
	for _, dl := range twin.Delta {
		if dl.Half == hubv1.HalfVehicle {
			t.Errorf("vehicle half delta after a full healthy report: %+v", dl)
		}
	}
	if !twin.Vehicle.Online || len(twin.Desired) != 2 || len(twin.Placement) == 0 {
		t.Fatalf("twin: %+v", twin)
	}

	// Changing the values wakes the long-poll with revision 2.
	got := make(chan *hubv1.Desired, 1)
	go func() {
		_, d := h.Desired(t, car, hubv1.HalfVehicle, 1, 30*time.Second)
		got <- d
	}()
	dep.Values = map[string]any{"replicas": 3}
	h.Admin(t, http.StatusOK, "PUT", "/v1/deployments/shuttle", dep, &dep)
	select {
	case d2 := <-got:
		if d2 == nil || d2.Revision != 2 {
			t.Fatalf("after the change: %+v", d2)
		}
		verify(t, h, car.ID, d2, 1)
	case <-time.After(30 * time.Second):
		t.Fatal("the long-poll did not wake")
	}
}

// Bad input gets a clear 4xx and changes nothing.
func TestBadInputChangesNothing(t *testing.T) {
	h := hubtest.Start(t, hub.Config{})
	repo := catalogtest.ServeRepo(t, catalogtest.ShuttleChart(t))
	h.Admin(t, http.StatusCreated, "POST", "/v1/sources", hubv1.ChartSource{Name: "apps", Type: hubv1.SourceHTTP, URL: repo}, nil)
	h.Enrol(t, "car-1", map[string]string{"fleet": "eu"}, nil)
	var before hubv1.List[hubv1.AuditEntry]
	h.Admin(t, http.StatusOK, "GET", "/v1/audit?limit=1000", nil, &before)

	good := hubv1.Deployment{Name: "shuttle", Chart: hubv1.ChartRef{Source: "apps", Name: "shuttle", Version: "1.0.0"}, Selector: "fleet=eu"}
	cases := []struct {
		name   string
		method string
		path   string
		body   any
		code   int
		says   string
	}{
		{"unknown chart", "POST", "/v1/deployments", with(good, func(d *hubv1.Deployment) { d.Chart.Name = "nope" }), 422, "nope"},
		{"unknown version", "POST", "/v1/deployments", with(good, func(d *hubv1.Deployment) { d.Chart.Version = "9.9.9" }), 422, "9.9.9"},
		{"unknown source", "POST", "/v1/deployments", with(good, func(d *hubv1.Deployment) { d.Chart.Source = "nope" }), 422, "no chart source"},
		{"values fail the schema", "POST", "/v1/deployments", with(good, func(d *hubv1.Deployment) { d.Values = map[string]any{"replicas": -1} }), 422, "replicas"},
		{"customization fails the schema", "POST", "/v1/deployments", with(good, func(d *hubv1.Deployment) {
			d.Customizations = []hubv1.Customization{{Name: "big", Selector: "fleet=eu", Values: map[string]any{"image": map[string]any{"tag": 7}}}}
		}), 422, "customizations[0]"},
		{"selector does not parse", "POST", "/v1/deployments", with(good, func(d *hubv1.Deployment) { d.Selector = "fleet in (eu" }), 400, "selector"},
		{"bad placement", "POST", "/v1/deployments", with(good, func(d *hubv1.Deployment) { d.Placement = map[string]string{"api": "moon"} }), 400, "moon"},
		{"bad name", "POST", "/v1/deployments", with(good, func(d *hubv1.Deployment) { d.Name = "Shuttle_1" }), 400, "name"},
		{"health deadline not a duration", "POST", "/v1/deployments", with(good, func(d *hubv1.Deployment) { d.Health = &hubv1.HealthPolicy{Deadline: "soon"} }), 400, "health.deadline"},
		{"health deadline zero", "POST", "/v1/deployments", with(good, func(d *hubv1.Deployment) { d.Health = &hubv1.HealthPolicy{Deadline: "0s", Rollback: true} }), 400, "health.deadline"},
		{"health deadline negative", "POST", "/v1/deployments", with(good, func(d *hubv1.Deployment) { d.Health = &hubv1.HealthPolicy{Deadline: "-5m"} }), 400, "health.deadline"},
		{"health deadline above a day", "POST", "/v1/deployments", with(good, func(d *hubv1.Deployment) { d.Health = &hubv1.HealthPolicy{Deadline: "24h1s"} }), 400, "health.deadline"},
		{"unknown field", "POST", "/v1/deployments", map[string]any{"name": "x", "chartt": 1}, 400, "chartt"},
		{"bad vehicle id", "POST", "/v1/vehicles", hubv1.Vehicle{ID: "Car 1"}, 400, "id"},
		{"bad quantity", "POST", "/v1/vehicles", hubv1.Vehicle{ID: "car-9", Allocatable: hubv1.ResourceList{"cpu": "lots"}}, 400, "allocatable.cpu"},
		{"bad list selector", "GET", "/v1/vehicles?selector=a%20in%20(", nil, 400, "selector"},
		{"unreachable source", "POST", "/v1/sources", hubv1.ChartSource{Name: "gone", Type: hubv1.SourceHTTP, URL: "http://127.0.0.1:1/charts"}, 422, "gone"},
		{"unknown source type", "POST", "/v1/sources", hubv1.ChartSource{Name: "odd", Type: "ftp", URL: "ftp://x"}, 422, "ftp"},
		{"token for unknown vehicle", "POST", "/v1/vehicles/car-404/tokens", nil, 404, "car-404"},
		{"bad enrol token", "POST", "/v1/enrol", hubv1.EnrolRequest{Token: "abcdef.0123456789abcdef", CSR: "x"}, 400, "csr"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			code, b := h.Do(t, h.Client(), h.Token, tc.method, tc.path, tc.body, nil)
			var e hubv1.Error
			json.Unmarshal(b, &e)
			if code != tc.code || !strings.Contains(e.Message+" "+e.Field, tc.says) {
				t.Fatalf("got %d %s; want %d mentioning %q", code, b, tc.code, tc.says)
			}
		})
	}
	var deps hubv1.List[hubv1.Deployment]
	h.Admin(t, http.StatusOK, "GET", "/v1/deployments", nil, &deps)
	if len(deps.Items) != 0 {
		t.Fatalf("deployments after bad input: %+v", deps.Items)
	}
	var after hubv1.List[hubv1.AuditEntry]
	h.Admin(t, http.StatusOK, "GET", "/v1/audit?limit=1000", nil, &after)
	if len(after.Items) != len(before.Items) {
		t.Fatalf("audit grew from %d to %d entries on bad input: %+v", len(before.Items), len(after.Items), after.Items[0])
	}
}

// Operators need a token; read-only tokens cannot write.
func TestAuthorization(t *testing.T) {
	h := hubtest.Start(t, hub.Config{})
	var ro struct {
		Token string `json:"token"`
	}
	h.Admin(t, http.StatusCreated, "POST", "/v1/operator-tokens", map[string]string{"name": "viewer", "scope": "read"}, &ro)
	c := h.Client()
	for _, tc := range []struct {
		name, token, method, path string
		body                      any
		code                      int
	}{
		{"no token", "", "GET", "/v1/vehicles", nil, 401},
		{"wrong token", "mkh_nope", "GET", "/v1/vehicles", nil, 401},
		{"read token reads", ro.Token, "GET", "/v1/vehicles", nil, 200},
		{"read token cannot write", ro.Token, "POST", "/v1/vehicles", hubv1.Vehicle{ID: "car-1"}, 403},
		{"read token cannot rotate", ro.Token, "POST", "/v1/keys/rotate", nil, 403},
		{"public root", "", "GET", "/v1/trust/root/1.json", nil, 200},
		{"public openapi", "", "GET", "/v1/openapi.json", nil, 200},
		{"desired needs a vehicle", ro.Token, "GET", "/v1/vehicles/car-1/desired", nil, 403},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if code, b := h.Do(t, c, tc.token, tc.method, tc.path, tc.body, nil); code != tc.code {
				t.Fatalf("%s %s: %d %s, want %d", tc.method, tc.path, code, b, tc.code)
			}
		})
	}
}

func with(d hubv1.Deployment, f func(*hubv1.Deployment)) hubv1.Deployment {
	f(&d)
	return d
}

// verify checks d the way an agent does, from root version 1.
func verify(t *testing.T, h *hubtest.Hub, vehicle string, d *hubv1.Desired, after int64) *hubv1.DesiredState {
	t.Helper()
	code, root := h.Do(t, h.Client(), "", "GET", "/v1/trust/root/1.json", nil, nil)
	if code != http.StatusOK {
		t.Fatalf("root: %d", code)
	}
	v, err := trust.NewVerifier(root, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	for n := int64(2); n <= d.RootVersion; n++ {
		_, next := h.Do(t, h.Client(), "", "GET", fmt.Sprintf("/v1/trust/root/%d.json", n), nil, nil)
		if err := v.UpdateRoot(next, time.Now()); err != nil {
			t.Fatal(err)
		}
	}
	s, err := v.Verify(*d, trust.Expect{Vehicle: vehicle, Half: d.Half, After: after}, time.Now())
	if err != nil {
		t.Fatalf("verify: %v", err)
	}
	return s
}

func objectNames(t *testing.T, objs []json.RawMessage) []string {
	t.Helper()
	var out []string
	for _, raw := range objs {
		var u unstructured.Unstructured
		if err := json.Unmarshal(raw, &u.Object); err != nil {
			t.Fatal(err)
		}
		name := u.GetKind() + "/"
		if ns := u.GetNamespace(); ns != "" {
			name += ns + "/"
		}
		out = append(out, name+u.GetName())
	}
	return out
}
