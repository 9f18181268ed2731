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
