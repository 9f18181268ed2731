package agent_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"

	hubv1 "github.com/misaki-io/misaki/api/hub/v1"
	"github.com/misaki-io/misaki/internal/agent"
	"github.com/misaki-io/misaki/internal/agent/gate"
)

// writeState replaces the vehicle's state file as an integrator should:
// a temporary file renamed over it.
func writeState(t *testing.T, path, js string) {
	t.Helper()
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, []byte(js), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, path); err != nil {
		t.Fatal(err)
	}
}

// waitingFor is a reported() check: revision rev waits for its gates,
// with applied still running, and the gates reported as want.
func waitingFor(rev, applied int64, want []hubv1.GateState) func(hubv1.Reported) error {
	return func(r hubv1.Reported) error {
		if r.Phase != hubv1.PhaseWaiting || r.Waiting != rev || r.AppliedRevision != applied {
			return fmt.Errorf("reported %s, waiting %d, applied %d (want Waiting, waiting %d, applied %d); gates %+v, failure %+v, message %q",
				r.Phase, r.Waiting, r.AppliedRevision, rev, applied, r.Gates, r.Failure, r.Message)
		}
		if diff := cmp.Diff(want, r.Gates); diff != "" {
			return fmt.Errorf("gates (-want +got):\n%s", diff)
		}
		return nil
	}
}

// tap is the agent's hub, keeping the newest report the agent sent and
// the hub's answer to it.
type tap struct {
	agent.Hub
	mu   sync.Mutex // guards the fields below
	sent []hubv1.Reported
	errs []error
}

func (p *tap) Report(ctx context.Context, vehicle string, r hubv1.Reported) error {
	err := p.Hub.Report(ctx, vehicle, r)
	if ctx.Err() != nil {
		// The agent gave this report up (a newer one replaced it, or it
		// stopped): not a report the hub refused.
		return err
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	p.sent = append(p.sent, r)
	p.errs = append(p.errs, err)
	return err
}

// sent waits until the newest report the agent sent since the last
// reset satisfies ok; the hub must have taken it, and the twin must show
// it.
func (e *env) sent(p *tap, timeout time.Duration, ok func(hubv1.Reported) error) hubv1.Reported {
	e.t.Helper()
	var (
		last    hubv1.Reported
		hubSaid error
	)
	e.cluster.Eventually(e.t, timeout, func() error {
		p.mu.Lock()
		defer p.mu.Unlock()
		if len(p.sent) == 0 {
			return errors.New("no report sent yet")
		}
		last, hubSaid = p.sent[len(p.sent)-1], p.errs[len(p.errs)-1]
		return ok(last)
	})
	if hubSaid != nil {
		e.t.Fatalf("the hub refused the report %+v: %v", last, hubSaid)
	}
	return e.reported(10*time.Second, ok)
}

func (p *tap) reset() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.sent, p.errs = nil, nil
}

// configMessage is the gadget-config ConfigMap's message ("" if it does
// not exist).
func (e *env) configMessage() string {
	e.t.Helper()
	cm, err := e.get("v1", "ConfigMap", "gadget", "gadget-config")
	if err != nil {
		return ""
	}
	msg, _, _ := unstructured.NestedString(cm.Object, "data", "message")
	return msg
}

// A deployment whose rollout has the gate "parked": the agent does not
// apply it while the vehicle's state says it is not parked, reports the
// revision Waiting with the gate's reason, and keeps waiting across a
// restart; once the state says parked it applies. An upgrade waits the
// same way while the applied revision keeps running (and drift on it is
// corrected), and a newer revision replaces the waiting one.
func TestVehicleStateGates(t *testing.T) {
	e := newEnv(t)
	statePath := filepath.Join(t.TempDir(), "vehicle-state.json")
	writeState(t, statePath, `{"parked": false}`)
	gates := agent.GateConfig{Source: &gate.File{Path: statePath, MaxAge: 10 * time.Minute}, Interval: 200 * time.Millisecond}
	rollout := &hubv1.RolloutPolicy{Gates: []string{"parked"}}
	notParked := []hubv1.GateState{{Name: "parked", Holds: false, Reason: "parked is false"}}

	hub := &tap{Hub: e.hubClient()}
	dep := e.deployRollout(map[string]any{"message": "one"}, nil, rollout)
	rev1 := e.desiredRevision(0)
	a := e.start(agentOpts{hub: hub, gates: gates})
	e.sent(hub, 60*time.Second, waitingFor(rev1, 0, notParked))
	nothingApplied := func() {
		t.Helper()
		for _, o := range gadgetObjects {
			_, err := e.get(o.apiVersion, o.kind, o.ns, o.name)
			switch {
			case err == nil:
				t.Errorf("%s %s/%s exists while revision %d waits for its gates", o.kind, o.ns, o.name, rev1)
			case !apierrors.IsNotFound(err) && !meta.IsNoMatchError(err):
				t.Fatalf("get %s %s/%s: %v", o.kind, o.ns, o.name, err)
			}
		}
	}
	nothingApplied()
	if v := a.counter(t, "misaki_agent_gate_waiting", map[string]string{"half": hubv1.HalfVehicle}); v != 1 {
		t.Errorf("misaki_agent_gate_waiting %v while waiting, want 1", v)
	}

	// A restart while waiting: still waiting, nothing applied.
	a.stop()
	hub.reset()
	a = e.start(agentOpts{hub: hub, gates: gates, drift: 2 * time.Second})
	e.sent(hub, 30*time.Second, waitingFor(rev1, 0, notParked))
	nothingApplied()

	// Parked: applied, and healthy.
	writeState(t, statePath, `{"parked": true}`)
	r := e.reported(90*time.Second, phase(rev1, hubv1.PhaseHealthy))
	if r.Waiting != 0 || len(r.Gates) != 0 {
		t.Errorf("healthy revision %d reported waiting %d, gates %+v", rev1, r.Waiting, r.Gates)
	}
	want := []hubv1.DeploymentRevision{{Name: "gadget", Generation: dep.Generation, Chart: dep.Chart, Gates: []string{"parked"}}}
	if diff := cmp.Diff(want, r.Deployments); diff != "" {
		t.Errorf("reported deployments (-want +got):\n%s", diff)
	}
	if msg := e.configMessage(); msg != "one" {
		t.Errorf("config message %q, want one", msg)
	}
	if v := a.counter(t, "misaki_agent_gate_waiting", map[string]string{"half": hubv1.HalfVehicle}); v != 0 {
		t.Errorf("misaki_agent_gate_waiting %v once applied, want 0", v)
	}

	// An upgrade while the vehicle drives: it waits, revision 1 keeps
	// running, and a drift pass still puts back what was deleted.
	writeState(t, statePath, `{"parked": false}`)
	e.deployRollout(map[string]any{"message": "two"}, nil, rollout)
	rev2 := e.desiredRevision(rev1)
	r = e.sent(hub, 60*time.Second, waitingFor(rev2, rev1, notParked))
	if len(r.Deployments) != 1 || r.Deployments[0].Generation != dep.Generation {
		t.Errorf("reported deployments %+v while waiting, want generation %d's", r.Deployments, dep.Generation)
	}
	cm, err := e.get("v1", "ConfigMap", "gadget", "gadget-config")
	if err != nil {
		t.Fatal(err)
	}
	if err := e.kube.Delete(context.Background(), cm); err != nil {
		t.Fatal(err)
	}
	e.cluster.Eventually(t, 30*time.Second, func() error {
		if msg := e.configMessage(); msg != "one" {
			return fmt.Errorf("config message %q while revision %d waits, want revision %d's, one", msg, rev2, rev1)
		}
		return nil
	})

	// A newer revision replaces the waiting one; the state goes stale
	// meanwhile, which fails the gate too.
	writeState(t, statePath, `{"parked": true, "updated": "2020-01-01T00:00:00Z"}`)
	e.deployRollout(map[string]any{"message": "three"}, nil, rollout)
	rev3 := e.desiredRevision(rev2)
	r = e.sent(hub, 60*time.Second, func(r hubv1.Reported) error {
		if r.Phase != hubv1.PhaseWaiting || r.Waiting != rev3 || len(r.Gates) != 1 || r.Gates[0].Holds {
			return fmt.Errorf("reported %s, waiting %d, gates %+v; want revision %d waiting", r.Phase, r.Waiting, r.Gates, rev3)
		}
		return nil
	})
	t.Logf("stale state: %s", r.Gates[0].Reason)
	if msg := e.configMessage(); msg != "one" {
		t.Errorf("config message %q while revision %d waits, want one", msg, rev3)
	}

	writeState(t, statePath, `{"parked": true}`)
	e.reported(90*time.Second, phase(rev3, hubv1.PhaseHealthy))
	if msg := e.configMessage(); msg != "three" {
		t.Errorf("config message %q, want three", msg)
	}
	checkNoDelta(t, e)
}
