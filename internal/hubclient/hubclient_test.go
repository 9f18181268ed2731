package hubclient_test

import (
	"context"
	"encoding/json"
	"errors"
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
	"github.com/misaki-io/misaki/internal/trust"
)

// The vehicle's calls against a real hub: enrol, poll, report, renew,
// roots, and the hub's refusals as typed errors.
func TestAgainstHub(t *testing.T) {
	ctx := context.Background()
	h := hubtest.Start(t, hub.Config{})
	for _, id := range []string{"car-1", "car-2"} {
		h.Admin(t, http.StatusCreated, "POST", "/v1/vehicles", hubv1.Vehicle{ID: id}, nil)
	}
	var tok hubv1.BootstrapToken
	h.Admin(t, http.StatusCreated, "POST", "/v1/vehicles/car-1/tokens", nil, &tok)

	anon := hubclient.New(h.URL, h.CA, nil)
	if _, _, _, err := anon.EnrolNew(ctx, "abcdef.0123456789abcdef"); !hubclient.IsStatus(err, http.StatusUnauthorized) {
		t.Fatalf("a wrong token: %v", err)
	}
	tc, cert, keyPEM, err := anon.EnrolNew(ctx, tok.Token)
	if err != nil || cert.Vehicle != "car-1" || len(keyPEM) == 0 {
		t.Fatalf("enrol: %+v %v", cert, err)
	}
	if _, _, _, err := anon.EnrolNew(ctx, tok.Token); !hubclient.IsStatus(err, http.StatusUnauthorized) {
		t.Fatalf("the token a second time: %v", err)
	}
	c := hubclient.New(h.URL, h.CA, &tc)
	d, err := c.Desired(ctx, "car-1", hubv1.HalfVehicle, 0, 0)
	if err != nil || d != nil {
		t.Fatalf("nothing desired yet: %+v %v", d, err)
	}
	if _, err := c.Desired(ctx, "car-2", hubv1.HalfVehicle, 0, 0); !hubclient.IsStatus(err, http.StatusForbidden) {
		t.Fatalf("another vehicle's state: %v", err)
	}
	if err := c.Report(ctx, "car-1", hubv1.Reported{Half: hubv1.HalfVehicle, AgentVersion: "test"}); err != nil {
		t.Fatal(err)
	}
	err = c.Report(ctx, "car-1", hubv1.Reported{Half: "roof"})
	var he *hubclient.Error
	if !hubclient.IsStatus(err, http.StatusBadRequest) || !errors.As(err, &he) || he.Body.Field != "half" {
		t.Fatalf("a bad report: %v", err)
	}
	key, _ := hubclient.NewKey()
	csr, _ := hubclient.NewCSR(key)
	if renewed, err := c.Renew(ctx, "car-1", csr); err != nil || renewed.Vehicle != "car-1" {
		t.Fatalf("renew: %+v %v", renewed, err)
	}
	root, err := c.Root(ctx, 1)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := trust.NewVerifier(root, time.Now()); err != nil {
		t.Fatalf("root 1: %v", err)
	}
	if _, err := c.Root(ctx, 9); !hubclient.IsStatus(err, http.StatusNotFound) {
		t.Fatalf("root 9: %v", err)
	}
}

// A report's statuses name each object by apiVersion, kind, namespace
// and name; an object that is not one is an error.
func TestStatuses(t *testing.T) {
	objs := []json.RawMessage{
		json.RawMessage(`{"apiVersion":"apps/v1","kind":"Deployment","metadata":{"name":"planner","namespace":"shuttle"},"spec":{}}`),
		json.RawMessage(`{"apiVersion":"v1","kind":"Namespace","metadata":{"name":"shuttle"}}`),
	}
	got, err := hubclient.Statuses(objs, hubv1.StateHealthy)
	want := []hubv1.ObjectStatus{
		{APIVersion: "apps/v1", Kind: "Deployment", Namespace: "shuttle", Name: "planner", State: hubv1.StateHealthy},
		{APIVersion: "v1", Kind: "Namespace", Name: "shuttle", State: hubv1.StateHealthy},
	}
	if err != nil || !slices.Equal(got, want) {
		t.Fatalf("got %+v, %v; want %+v", got, err, want)
	}
	if _, err := hubclient.Statuses(append(objs, json.RawMessage(`[1]`)), hubv1.StateHealthy); err == nil || !strings.Contains(err.Error(), "object 2") {
		t.Fatalf("an array among the objects: %v", err)
	}
}

// The cloud agent's calls: a client with a cloud-agent Token follows the
// change feed and reads and reports a vehicle's cloud half; the feed
// long-polls; a wrong token or none is refused.
func TestCloudAgent(t *testing.T) {
	ctx := context.Background()
	h := hubtest.Start(t, hub.Config{})
	repo := catalogtest.ServeRepo(t, catalogtest.ShuttleChart(t))
	h.Admin(t, http.StatusCreated, "POST", "/v1/sources", hubv1.ChartSource{Name: "apps", Type: hubv1.SourceHTTP, URL: repo}, nil)
	// The planner needs 4 CPUs: on this vehicle it goes to the cloud half.
	h.Admin(t, http.StatusCreated, "POST", "/v1/vehicles", hubv1.Vehicle{ID: "car-1", Labels: map[string]string{"fleet": "eu"}, Allocatable: hubv1.ResourceList{"cpu": "2", "memory": "4Gi"}}, nil)
	var tok hubv1.OperatorToken
	h.Admin(t, http.StatusCreated, "POST", "/v1/operator-tokens", hubv1.OperatorToken{Name: "cloud", Scope: "cloud-agent"}, &tok)

	c := hubclient.New(h.URL, h.CA, nil)
	c.Token = tok.Token
	start := time.Now()
	ch, err := c.Changes(ctx, hubv1.HalfCloud, 0, 300*time.Millisecond)
	if err != nil || len(ch.Items) != 0 || ch.Seq != 0 {
		t.Fatalf("before any deployment: %+v %v", ch, err)
	}
	if waited := time.Since(start); waited < 300*time.Millisecond {
		t.Fatalf("an empty feed answered after %v, before its wait", waited)
	}
	h.Admin(t, http.StatusCreated, "POST", "/v1/deployments", hubv1.Deployment{
		Name: "shuttle", Chart: hubv1.ChartRef{Source: "apps", Name: "shuttle", Version: "1.0.0"}, Selector: "fleet=eu",
	}, nil)
	ch, err = c.Changes(ctx, hubv1.HalfCloud, 0, 30*time.Second)
	if err != nil || len(ch.Items) != 1 || ch.Seq != ch.Items[0].Seq {
		t.Fatalf("the feed after the deployment: %+v %v", ch, err)
	}
	want := hubv1.Change{Vehicle: "car-1", Half: hubv1.HalfCloud, Revision: 1, Seq: ch.Seq}
	if ch.Items[0] != want {
		t.Fatalf("change %+v, want %+v", ch.Items[0], want)
	}
	d, err := c.Desired(ctx, "car-1", hubv1.HalfCloud, 0, 0)
	if err != nil || d == nil || d.Revision != 1 {
		t.Fatalf("car-1's cloud half: %+v %v", d, err)
	}
	if err := c.Report(ctx, "car-1", hubv1.Reported{Half: hubv1.HalfCloud, AppliedRevision: 1, Phase: hubv1.PhaseHealthy}); err != nil {
		t.Fatalf("report: %v", err)
	}
	if _, err := c.Desired(ctx, "car-1", hubv1.HalfVehicle, 0, 0); !hubclient.IsStatus(err, http.StatusForbidden) {
		t.Fatalf("the vehicle half with a cloud-agent token: %v", err)
	}
	for name, token := range map[string]string{"no token": "", "a wrong token": "mkh_wrong"} {
		other := hubclient.New(h.URL, h.CA, nil)
		other.Token = token
		if _, err := other.Changes(ctx, hubv1.HalfCloud, 0, 0); !hubclient.IsStatus(err, http.StatusUnauthorized) {
			t.Errorf("%s: %v", name, err)
		}
	}
}
