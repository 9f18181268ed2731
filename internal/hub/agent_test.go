package hub_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	hubv1 "github.com/misaki-io/misaki/api/hub/v1"
	"github.com/misaki-io/misaki/internal/hub"
	"github.com/misaki-io/misaki/internal/hub/catalog/catalogtest"
	"github.com/misaki-io/misaki/internal/hub/hubtest"
	"github.com/misaki-io/misaki/internal/hubclient"
	"github.com/misaki-io/misaki/internal/pgtest"
)

// What the agent needs of the hub beyond the long-poll: a deployment's
// health policy in each revision, reports with a phase and a failure, the
// twin's failed delta, the cloud agent's token and the change feed.

var (
	small = hubv1.ResourceList{"cpu": "2", "memory": "4Gi"}   // the planner goes to the cloud
	big   = hubv1.ResourceList{"cpu": "16", "memory": "64Gi"} // everything fits on the vehicle
)

func shuttle(selector string) hubv1.Deployment {
	return hubv1.Deployment{Name: "shuttle", Chart: hubv1.ChartRef{Source: "apps", Name: "shuttle", Version: "1.0.0"}, Selector: selector}
}

// wantError fails t unless the answer is code with field (and, if given,
// a message holding says).
func wantError(t *testing.T, what string, code int, body []byte, wantCode int, field, says string) {
	t.Helper()
	var e hubv1.Error
	json.Unmarshal(body, &e)
	if code != wantCode || e.Field != field || !strings.Contains(e.Message, says) {
		t.Errorf("%s: %d %s; want %d with field %q saying %q", what, code, body, wantCode, field, says)
	}
}

// A deployment's health policy is checked, stored, and carried by every
// revision; an empty policy is none.
func TestHealthPolicy(t *testing.T) {
	h := hubtest.Start(t, hub.Config{})
	repo := catalogtest.ServeRepo(t, catalogtest.ShuttleChart(t))
	h.Admin(t, http.StatusCreated, "POST", "/v1/sources", hubv1.ChartSource{Name: "apps", Type: hubv1.SourceHTTP, URL: repo}, nil)
	car := h.Enrol(t, "car-1", map[string]string{"fleet": "eu"}, big)

	dep := shuttle("fleet=eu")
	dep.Health = &hubv1.HealthPolicy{Deadline: "10m", Rollback: true}
	h.Admin(t, http.StatusCreated, "POST", "/v1/deployments", dep, &dep)
	var got hubv1.Deployment
	h.Admin(t, http.StatusOK, "GET", "/v1/deployments/shuttle", nil, &got)
	if got.Health == nil || *got.Health != (hubv1.HealthPolicy{Deadline: "10m", Rollback: true}) {
		t.Fatalf("stored policy: %+v", got.Health)
	}
	_, d := h.Desired(t, car, hubv1.HalfVehicle, 0, 30*time.Second)
	state := verify(t, h, car.ID, d, 0)
	if len(state.Deployments) != 1 || state.Deployments[0].Health == nil || *state.Deployments[0].Health != *dep.Health {
		t.Fatalf("revision %d deployments: %+v", d.Revision, state.Deployments)
	}

	for _, bad := range []string{"soon", "0s", "-1m", "25h"} {
		change := dep
		change.Health = &hubv1.HealthPolicy{Deadline: bad}
		code, b := h.Do(t, h.Client(), h.Token, "PUT", "/v1/deployments/shuttle", change, nil)
		wantError(t, "PUT deadline "+bad, code, b, http.StatusBadRequest, "health.deadline", bad)
	}
	// The longest deadline; then {}, which is no policy: each a new
	// revision carrying it.
	dep.Health = &hubv1.HealthPolicy{Deadline: "24h"}
	h.Admin(t, http.StatusOK, "PUT", "/v1/deployments/shuttle", dep, &dep)
	_, d2 := h.Desired(t, car, hubv1.HalfVehicle, d.Revision, 30*time.Second)
	if s := verify(t, h, car.ID, d2, d.Revision); s.Deployments[0].Health == nil || s.Deployments[0].Health.Deadline != "24h" || s.Deployments[0].Health.Rollback {
		t.Fatalf("revision %d: %+v", d2.Revision, s.Deployments[0].Health)
	}
	dep.Health = &hubv1.HealthPolicy{}
	var none hubv1.Deployment
	h.Admin(t, http.StatusOK, "PUT", "/v1/deployments/shuttle", dep, &none)
	if none.Health != nil {
		t.Fatalf("an empty policy is stored as %+v", none.Health)
	}
	_, d3 := h.Desired(t, car, hubv1.HalfVehicle, d2.Revision, 30*time.Second)
	if s := verify(t, h, car.ID, d3, d2.Revision); s.Deployments[0].Health != nil {
		t.Fatalf("revision %d without a policy: %+v", d3.Revision, s.Deployments[0].Health)
	}
}

// Reports carry a phase and a failure; a Failed half is one "failed"
// delta with the reason, and its objects that are not ready are failed,
// not also unhealthy.
func TestReportPhaseAndFailure(t *testing.T) {
	ctx := context.Background()
	h := hubtest.Start(t, hub.Config{})
	repo := catalogtest.ServeRepo(t, catalogtest.ShuttleChart(t))
	h.Admin(t, http.StatusCreated, "POST", "/v1/sources", hubv1.ChartSource{Name: "apps", Type: hubv1.SourceHTTP, URL: repo}, nil)
	car := h.Enrol(t, "car-1", map[string]string{"fleet": "eu"}, big)
	h.Admin(t, http.StatusCreated, "POST", "/v1/deployments", shuttle("fleet=eu"), nil)
	_, d := h.Desired(t, car, hubv1.HalfVehicle, 0, 30*time.Second)
	state := verify(t, h, car.ID, d, 0)
	c := hubclient.New(h.URL, h.CA, &car.Cert)

	for _, tc := range []struct {
		name  string
		rep   hubv1.Reported
		field string
	}{
		{"unknown phase", hubv1.Reported{Phase: "Broken"}, "phase"},
		{"phase in lower case", hubv1.Reported{Phase: "healthy"}, "phase"},
		{"failure without a revision", hubv1.Reported{Phase: hubv1.PhaseFailed, Failure: &hubv1.Failure{Reason: "x"}}, "failure.revision"},
		{"failure with a negative revision", hubv1.Reported{Phase: hubv1.PhaseFailed, Failure: &hubv1.Failure{Revision: -1}}, "failure.revision"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := c.Report(ctx, car.ID, tc.rep)
			var he *hubclient.Error
			if !errors.As(err, &he) || he.Status != http.StatusBadRequest || he.Body.Field != tc.field {
				t.Fatalf("got %v; want 400 with field %s", err, tc.field)
			}
		})
	}

	objs, err := hubclient.Statuses(state.Objects, hubv1.StateHealthy)
	if err != nil {
		t.Fatal(err)
	}
	const api = "Deployment/default/shuttle-api"
	for i, o := range objs {
		if o.Kind+"/"+o.Namespace+"/"+o.Name == api {
			objs[i].State, objs[i].Reason = hubv1.StateProgressing, "0 of 1 replicas ready"
		}
	}
	failure := &hubv1.Failure{Revision: d.Revision, Reason: "not ready within 10m", Deployments: []string{"shuttle"}}
	rep := hubv1.Reported{Half: hubv1.HalfVehicle, AppliedRevision: d.Revision, Phase: hubv1.PhaseFailed, Failure: failure, Objects: objs}
	if err := c.Report(ctx, car.ID, rep); err != nil {
		t.Fatal(err)
	}
	var tw hubv1.Twin
	h.Admin(t, http.StatusOK, "GET", "/v1/vehicles/car-1", nil, &tw)
	if len(tw.Reported) != 1 || tw.Reported[0].Phase != hubv1.PhaseFailed || tw.Reported[0].Failure == nil || tw.Reported[0].Failure.Reason != failure.Reason {
		t.Fatalf("reported: %+v", tw.Reported)
	}
	want := []hubv1.Delta{
		{Half: hubv1.HalfVehicle, Kind: "failed", Detail: fmt.Sprintf("revision %d failed: not ready within 10m; deployments shuttle; not rolled back", d.Revision)},
		{Half: hubv1.HalfVehicle, Kind: "failed", Object: api, Detail: "progressing: 0 of 1 replicas ready"},
	}
	if fmt.Sprint(tw.Delta) != fmt.Sprint(want) {
		t.Fatalf("delta:\n got %+v\nwant %+v", tw.Delta, want)
	}

	// Rolled back: said so.
	rep.Failure.RolledBackTo = 7
	if err := c.Report(ctx, car.ID, rep); err != nil {
		t.Fatal(err)
	}
	h.Admin(t, http.StatusOK, "GET", "/v1/vehicles/car-1", nil, &tw)
	if len(tw.Delta) == 0 || !strings.HasSuffix(tw.Delta[0].Detail, "; rolled back to revision 7") {
		t.Fatalf("delta after a rollback: %+v", tw.Delta)
	}
	// The same objects in a half that is only Progressing: unhealthy.
	rep.Phase, rep.Failure = hubv1.PhaseProgressing, nil
	if err := c.Report(ctx, car.ID, rep); err != nil {
		t.Fatal(err)
	}
	h.Admin(t, http.StatusOK, "GET", "/v1/vehicles/car-1", nil, &tw)
	if len(tw.Delta) != 1 || tw.Delta[0].Kind != "unhealthy" || tw.Delta[0].Object != api {
		t.Fatalf("delta while progressing: %+v", tw.Delta)
	}
}

// A cloud-agent token reads any vehicle's cloud half, reports on it and
// follows the change feed, and nothing else.
func TestCloudAgentToken(t *testing.T) {
	ctx := context.Background()
	h := hubtest.Start(t, hub.Config{})
	repo := catalogtest.ServeRepo(t, catalogtest.ShuttleChart(t))
	h.Admin(t, http.StatusCreated, "POST", "/v1/sources", hubv1.ChartSource{Name: "apps", Type: hubv1.SourceHTTP, URL: repo}, nil)
	car := h.Enrol(t, "car-1", map[string]string{"fleet": "eu"}, small)
	h.Admin(t, http.StatusCreated, "POST", "/v1/deployments", shuttle("fleet=eu"), nil)

	code, b := h.Do(t, h.Client(), h.Token, "POST", "/v1/operator-tokens", hubv1.OperatorToken{Name: "x", Scope: "cloud"}, nil)
	wantError(t, "scope cloud", code, b, http.StatusBadRequest, "scope", "cloud-agent")
	var tok, ro hubv1.OperatorToken
	h.Admin(t, http.StatusCreated, "POST", "/v1/operator-tokens", hubv1.OperatorToken{Name: "cloud", Scope: "cloud-agent"}, &tok)
	h.Admin(t, http.StatusCreated, "POST", "/v1/operator-tokens", hubv1.OperatorToken{Name: "viewer", Scope: "read"}, &ro)
	if tok.Scope != "cloud-agent" || !strings.HasPrefix(tok.Token, "mkh_") {
		t.Fatalf("token: %+v", tok)
	}
	ca := hubclient.New(h.URL, h.CA, nil)
	ca.Token = tok.Token

	d, err := ca.Desired(ctx, "car-1", hubv1.HalfCloud, 0, 30*time.Second)
	if err != nil || d == nil || d.Half != hubv1.HalfCloud {
		t.Fatalf("the cloud half: %+v %v", d, err)
	}
	verify(t, h, "car-1", d, 0)
	for _, half := range []string{hubv1.HalfVehicle, ""} {
		_, err := ca.Desired(ctx, "car-1", half, 0, 0)
		var he *hubclient.Error
		if !errors.As(err, &he) || he.Status != http.StatusForbidden || he.Body.Field != "half" || !strings.Contains(he.Body.Message, "cloud half") {
			t.Errorf("the vehicle half (half=%q): %v", half, err)
		}
	}
	// The report's facts and resources are the cloud's, not the vehicle's:
	// dropped. The cloud agent's calls do not make the vehicle seen.
	if err := ca.Report(ctx, "car-1", hubv1.Reported{Half: hubv1.HalfCloud, AppliedRevision: d.Revision, Phase: hubv1.PhaseHealthy,
		Facts: &hubv1.Facts{Arch: "s390x"}, Allocatable: hubv1.ResourceList{"cpu": "64"}, AgentVersion: "cloud"}); err != nil {
		t.Fatalf("cloud report: %v", err)
	}
	for _, half := range []string{hubv1.HalfVehicle, ""} {
		if err := ca.Report(ctx, "car-1", hubv1.Reported{Half: half}); !hubclient.IsStatus(err, http.StatusForbidden) {
			t.Errorf("a report on the vehicle half (half=%q): %v", half, err)
		}
	}
	var tw hubv1.Twin
	h.Admin(t, http.StatusOK, "GET", "/v1/vehicles/car-1", nil, &tw)
	if len(tw.Reported) != 1 || tw.Reported[0].Half != hubv1.HalfCloud || tw.Reported[0].AppliedRevision != d.Revision || tw.Reported[0].Facts != nil {
		t.Errorf("reported: %+v", tw.Reported)
	}
	if tw.Vehicle.Facts.Arch == "s390x" || tw.Vehicle.Allocatable["cpu"] != "2" || tw.Vehicle.LastSeen != nil {
		t.Errorf("the cloud agent's report changed the vehicle: facts %+v allocatable %v last seen %v", tw.Vehicle.Facts, tw.Vehicle.Allocatable, tw.Vehicle.LastSeen)
	}

	c := h.Client()
	for _, tc := range []struct {
		name, token, method, path string
		body                      any
		code                      int
	}{
		{"cloud agent follows the feed", tok.Token, "GET", "/v1/changes?half=cloud&wait=0s", nil, 200},
		{"cloud agent lists no vehicles", tok.Token, "GET", "/v1/vehicles", nil, 403},
		{"cloud agent reads no twin", tok.Token, "GET", "/v1/vehicles/car-1", nil, 403},
		{"cloud agent reads no deployments", tok.Token, "GET", "/v1/deployments", nil, 403},
		{"cloud agent previews nothing", tok.Token, "POST", "/v1/preview", hubv1.PreviewRequest{Deployment: shuttle("fleet=eu"), Vehicle: "car-1"}, 403},
		{"cloud agent creates no vehicle", tok.Token, "POST", "/v1/vehicles", hubv1.Vehicle{ID: "car-2"}, 403},
		{"cloud agent renews no certificate", tok.Token, "POST", "/v1/vehicles/car-1/certificate", hubv1.RenewRequest{CSR: "x"}, 403},
		{"cloud agent makes no tokens", tok.Token, "POST", "/v1/vehicles/car-1/tokens", nil, 403},
		{"cloud agent reads no audit", tok.Token, "GET", "/v1/audit", nil, 403},
		{"cloud agent reads no operator tokens", tok.Token, "GET", "/v1/operator-tokens", nil, 403},
		{"cloud agent reads no charts", tok.Token, "GET", "/v1/charts", nil, 403},
		{"cloud agent rotates no keys", tok.Token, "POST", "/v1/keys/rotate", nil, 403},
		{"read token may not follow the feed", ro.Token, "GET", "/v1/changes?half=cloud&wait=0s", nil, 403},
		{"read token reads no cloud half", ro.Token, "GET", "/v1/vehicles/car-1/desired?half=cloud&wait=0s", nil, 403},
		{"admin follows the feed", h.Token, "GET", "/v1/changes?half=vehicle&wait=0s", nil, 200},
		{"no token", "", "GET", "/v1/changes?half=cloud&wait=0s", nil, 401},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if code, b := h.Do(t, c, tc.token, tc.method, tc.path, tc.body, nil); code != tc.code {
				t.Fatalf("%s %s: %d %s, want %d", tc.method, tc.path, code, b, tc.code)
			}
		})
	}
	if code, b := h.Do(t, car.Client, "", "GET", "/v1/changes?half=vehicle&wait=0s", nil, nil); code != http.StatusForbidden {
		t.Errorf("a vehicle following the feed: %d %s", code, b)
	}
	var audit hubv1.List[hubv1.AuditEntry]
	h.Admin(t, http.StatusOK, "GET", "/v1/audit", nil, &audit)
	found := false
	for _, e := range audit.Items {
		found = found || e.Object == "operator-tokens/cloud" && e.Detail == "scope cloud-agent" && e.Actor == "operator/admin"
	}
	if !found {
		t.Errorf("no audit entry for the cloud-agent token: %+v", audit.Items)
	}
}

// The change feed on both stores: every vehicle's newest cloud revision
// from after=0, pages by limit, a long-poll woken by a new revision, a
// change of the other half passed over, bad input, and a client ahead of
// the store.
func TestChangeFeed(t *testing.T) {
	t.Run("sqlite", func(t *testing.T) { testChangeFeed(t, hub.Config{}) })
	t.Run("postgres", func(t *testing.T) { testChangeFeed(t, hub.Config{Database: pgtest.Start(t)}) })
}

func testChangeFeed(t *testing.T, cfg hub.Config) {
	ctx := context.Background()
	h := hubtest.Start(t, cfg)
	repo := catalogtest.ServeRepo(t, catalogtest.ShuttleChart(t))
	h.Admin(t, http.StatusCreated, "POST", "/v1/sources", hubv1.ChartSource{Name: "apps", Type: hubv1.SourceHTTP, URL: repo}, nil)
	for id, alloc := range map[string]hubv1.ResourceList{"car-1": small, "car-2": small, "car-3": big} {
		h.Admin(t, http.StatusCreated, "POST", "/v1/vehicles", hubv1.Vehicle{ID: id, Labels: map[string]string{"fleet": "eu"}, Allocatable: alloc}, nil)
	}
	var tok hubv1.OperatorToken
	h.Admin(t, http.StatusCreated, "POST", "/v1/operator-tokens", hubv1.OperatorToken{Name: "cloud", Scope: "cloud-agent"}, &tok)
	ca := hubclient.New(h.URL, h.CA, nil)
	ca.Token = tok.Token
	admin := hubclient.New(h.URL, h.CA, nil)
	admin.Token = h.Token

	if ch, err := ca.Changes(ctx, hubv1.HalfCloud, 0, 0); err != nil || len(ch.Items) != 0 {
		t.Fatalf("before any deployment: %+v %v", ch, err)
	}
	var dep hubv1.Deployment
	h.Admin(t, http.StatusCreated, "POST", "/v1/deployments", shuttle("fleet=eu"), &dep)

	// follow reads the feed from after until every vehicle in want is at
	// its revision, checking the order and the half, and returns the
	// revisions seen and the seq to go on from.
	follow := func(c *hubclient.Client, half string, after int64, want map[string]int64) (map[string]int64, int64) {
		t.Helper()
		got := map[string]int64{}
		deadline := time.Now().Add(60 * time.Second)
		for !reached(got, want) {
			if time.Now().After(deadline) {
				t.Fatalf("%s half after %d: got %v in 60s, want %v", half, after, got, want)
			}
			ch, err := c.Changes(ctx, half, after, 10*time.Second)
			if err != nil {
				t.Fatal(err)
			}
			for _, it := range ch.Items {
				if it.Half != half || it.Seq <= after {
					t.Fatalf("%s half after %d: item %+v", half, after, it)
				}
				after = it.Seq
				got[it.Vehicle] = it.Revision
			}
			if ch.Seq < after {
				t.Fatalf("answer seq %d below its last item's %d", ch.Seq, after)
			}
			after = ch.Seq
		}
		return got, after
	}
	got, seq := follow(ca, hubv1.HalfCloud, 0, map[string]int64{"car-1": 1, "car-2": 1})
	if _, ok := got["car-3"]; ok {
		t.Fatalf("car-3 runs everything on the vehicle, yet the cloud feed lists it: %v", got)
	}

	// after=0 pages by limit through every vehicle's newest cloud revision.
	var listed []string
	for after := int64(0); ; {
		var ch hubv1.Changes
		h.Do(t, h.Client(), tok.Token, "GET", fmt.Sprintf("/v1/changes?half=cloud&after=%d&limit=1&wait=0s", after), nil, &ch)
		if len(ch.Items) == 0 {
			if ch.Seq < seq {
				t.Errorf("the empty answer's seq %d is below %d", ch.Seq, seq)
			}
			break
		}
		if len(ch.Items) != 1 || ch.Seq != ch.Items[0].Seq {
			t.Fatalf("limit 1: %+v", ch)
		}
		listed = append(listed, ch.Items[0].Vehicle)
		after = ch.Seq
	}
	if len(listed) != 2 || listed[0] == listed[1] {
		t.Errorf("after=0, a page of one at a time: %v", listed)
	}

	// A long-poll is woken by a new revision.
	type answer struct {
		ch  hubv1.Changes
		err error
		at  time.Time
	}
	woke := make(chan answer, 1)
	go func() {
		ch, err := ca.Changes(ctx, hubv1.HalfCloud, seq, 30*time.Second)
		woke <- answer{ch, err, time.Now()}
	}()
	waitForWaiter(t, h)
	dep.Values = map[string]any{"replicas": 2}
	h.Admin(t, http.StatusOK, "PUT", "/v1/deployments/shuttle", dep, &dep)
	changed := time.Now()
	select {
	case a := <-woke:
		if a.err != nil || len(a.ch.Items) == 0 || a.ch.Items[0].Revision != 2 {
			t.Fatalf("the woken poll: %+v %v", a.ch, a.err)
		}
		t.Logf("woke %v after the write", a.at.Sub(changed))
	case <-time.After(30 * time.Second):
		t.Fatal("the long-poll was not woken by the new revisions")
	}
	_, seq = follow(ca, hubv1.HalfCloud, seq, map[string]int64{"car-1": 2, "car-2": 2})

	// A change of the vehicle half alone (a second release for car-3, which
	// fits on it) wakes no cloud poll; the cloud feed's seq passes it.
	h.Admin(t, http.StatusOK, "PATCH", "/v1/vehicles/car-3", hubv1.VehiclePatch{Labels: map[string]string{"fleet": "eu", "solo": "yes"}}, nil)
	solo := shuttle("solo=yes")
	solo.Name = "solo"
	h.Admin(t, http.StatusCreated, "POST", "/v1/deployments", solo, nil)
	vgot, vseq := follow(admin, hubv1.HalfVehicle, seq, map[string]int64{"car-3": 3})
	if vgot["car-1"] > 2 || vgot["car-2"] > 2 {
		t.Fatalf("vehicle halves changed by the second release: %v", vgot)
	}
	start := time.Now()
	ch, err := ca.Changes(ctx, hubv1.HalfCloud, seq, 300*time.Millisecond)
	if err != nil || len(ch.Items) != 0 || ch.Seq < vseq {
		t.Fatalf("the cloud feed after a vehicle half change: %+v %v; want nothing, seq at least %d", ch, err, vseq)
	}
	if waited := time.Since(start); waited < 300*time.Millisecond {
		t.Errorf("answered after %v, before its wait", waited)
	}

	// A client ahead of the store is answered at once with the store's seq.
	start = time.Now()
	ch, err = ca.Changes(ctx, hubv1.HalfCloud, 1<<40, 30*time.Second)
	if err != nil || len(ch.Items) != 0 || ch.Seq != vseq || time.Since(start) > 10*time.Second {
		t.Fatalf("after beyond the store: %+v %v after %v; want seq %d at once", ch, err, time.Since(start), vseq)
	}

	for _, tc := range []struct{ query, field string }{
		{"", "half"},
		{"half=roof", "half"},
		{"half=cloud&after=-1", "after"},
		{"half=cloud&after=x", "after"},
		{"half=cloud&limit=0", "limit"},
		{"half=cloud&limit=5001", "limit"},
		{"half=cloud&wait=forever", "wait"},
	} {
		code, b := h.Do(t, h.Client(), tok.Token, "GET", "/v1/changes?"+tc.query, nil, nil)
		wantError(t, tc.query, code, b, http.StatusBadRequest, tc.field, "")
	}
	code, b := h.Do(t, h.Client(), tok.Token, "GET", "/v1/changes?half=vehicle", nil, nil)
	wantError(t, "cloud agent, vehicle half", code, b, http.StatusForbidden, "half", "cloud-agent")
}

func reached(got, want map[string]int64) bool {
	for v, rev := range want {
		if got[v] < rev {
			return false
		}
	}
	return true
}
