package hubclient_test

import (
	"context"
	"errors"
	"net/http"
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
