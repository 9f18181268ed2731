package agent_test

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"

	hubv1 "github.com/misaki-io/misaki/api/hub/v1"
	"github.com/misaki-io/misaki/internal/agent"
	"github.com/misaki-io/misaki/internal/backoff"
	"github.com/misaki-io/misaki/internal/clock"
	"github.com/misaki-io/misaki/internal/hubclient"
)

// The cloud agent: one process applies every vehicle's cloud half into
// its namespace, woken by the hub's change feed, with a cloud-agent token;
// after a restart with the hub unreachable it restores every half from
// disk. The deployment's vehicle-state gate does not hold it back: gates
// describe the car, and the cloud half does not evaluate them.
func TestCloudAgent(t *testing.T) {
	e := newEnv(t)
	e.hub.Enrol(t, "car-2", map[string]string{"fleet": "test"}, hubv1.ResourceList{"cpu": "4", "memory": "8Gi"})
	d := hubv1.Deployment{
		Name: "gadget", Namespace: "gadget",
		Chart:     hubv1.ChartRef{Source: "local", Name: "gadget", Version: "1.0.0"},
		Values:    map[string]any{"message": "cloud", "extra": false},
		Selector:  "fleet=test",
		Placement: map[string]string{"api": hubv1.PlaceCloud}, DefaultPlacement: hubv1.PlaceVehicle,
		Rollout: &hubv1.RolloutPolicy{Gates: []string{"parked"}},
	}
	e.hub.Admin(t, http.StatusCreated, "POST", "/v1/deployments", d, nil)
	var tok hubv1.OperatorToken
	e.hub.Admin(t, http.StatusCreated, "POST", "/v1/operator-tokens", hubv1.OperatorToken{Name: "cloud", Scope: "cloud-agent"}, &tok)

	dir := t.TempDir()
	start := func() (stop func()) {
		c := hubclient.New(e.link.URL(), e.hub.CA, nil)
		c.Token = tok.Token
		log := slog.New(slog.NewTextHandler(io.Discard, nil))
		if testing.Verbose() {
			log = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelInfo}))
		}
		pol := backoff.Policy{Initial: 100 * time.Millisecond, Max: time.Second}
		rep := agent.NewReporter(c, clock.Real{}, pol, log)
		f := agent.NewFleet(agent.FleetConfig{
			Dir: dir, Pinned: e.pinned, Hub: c, Client: e.kube, ChangesWait: 2 * time.Second,
			HealthPoll: 300 * time.Millisecond, Backoff: pol, Reports: rep, Log: log,
		})
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error, 2)
		go rep.Run(ctx)
		go func() { done <- f.Run(ctx) }()
		return func() {
			cancel()
			if err := <-done; err != nil && ctx.Err() == nil {
				t.Errorf("fleet: %v", err)
			}
		}
	}
	cloudReport := func(vehicle string, ok func(hubv1.Reported) error) {
		t.Helper()
		e.cluster.Eventually(t, 90*time.Second, func() error {
			var tw hubv1.Twin
			e.hub.Admin(t, http.StatusOK, "GET", "/v1/vehicles/"+vehicle, nil, &tw)
			for _, r := range tw.Reported {
				if r.Half == hubv1.HalfCloud {
					return ok(r)
				}
			}
			return fmt.Errorf("%s: no cloud report", vehicle)
		})
	}
	healthy := func(r hubv1.Reported) error {
		if r.Phase != hubv1.PhaseHealthy {
			return fmt.Errorf("cloud half %s at revision %d (failure %+v, refused %+v, gates %+v)", r.Phase, r.AppliedRevision, r.Failure, r.Refused, r.Gates)
		}
		if len(r.Deployments) != 1 || r.Deployments[0].Name != "gadget" || r.Deployments[0].Generation == 0 {
			return fmt.Errorf("cloud half reports deployments %+v, want gadget's generation", r.Deployments)
		}
		return nil
	}
	message := func(vehicle string) (string, error) {
		u, err := e.get("apps/v1", "Deployment", "misaki-v-"+vehicle, "gadget-api")
		if err != nil {
			return "", err
		}
		cs, _, _ := unstructured.NestedSlice(u.Object, "spec", "template", "spec", "containers")
		env, _, _ := unstructured.NestedSlice(cs[0].(map[string]any), "env")
		v, _, _ := unstructured.NestedString(env[0].(map[string]any), "value")
		return v, nil
	}

	stop := start()
	for _, v := range []string{"car-1", "car-2"} {
		cloudReport(v, healthy)
		if m, err := message(v); err != nil || m != "cloud" {
			t.Fatalf("%s's cloud api: message %q, %v", v, m, err)
		}
	}
	// The vehicle half has no api Deployment: it runs in the cloud.
	if _, err := e.get("apps/v1", "Deployment", "gadget", "gadget-api"); err == nil {
		t.Error("the api Deployment is in the vehicle's namespace too")
	}

	// Restarted with the hub unreachable, after someone deleted car-2's
	// cloud api: restored from the ledger alone.
	stop()
	e.link.Down()
	u, err := e.get("apps/v1", "Deployment", "misaki-v-car-2", "gadget-api")
	if err != nil {
		t.Fatal(err)
	}
	if err := e.kube.Delete(context.Background(), u); err != nil {
		t.Fatal(err)
	}
	stop = start()
	defer stop()
	e.cluster.Eventually(t, 60*time.Second, func() error {
		_, err := message("car-2")
		return err
	})

	// A change reaches every vehicle's cloud half through the feed.
	e.link.Up()
	var cur hubv1.Deployment
	e.hub.Admin(t, http.StatusOK, "GET", "/v1/deployments/gadget", nil, &cur)
	cur.Values = map[string]any{"message": "cloud-2", "extra": false}
	e.hub.Admin(t, http.StatusOK, "PUT", "/v1/deployments/gadget", cur, nil)
	for _, v := range []string{"car-1", "car-2"} {
		e.cluster.Eventually(t, 90*time.Second, func() error {
			m, err := message(v)
			if err == nil && m != "cloud-2" {
				err = fmt.Errorf("%s: message %q", v, m)
			}
			return err
		})
		cloudReport(v, healthy)
	}
}
