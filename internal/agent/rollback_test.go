package agent_test

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"slices"
	"sync"
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/interceptor"

	hubv1 "github.com/misaki-io/misaki/api/hub/v1"
)

// apiCPU is the gadget-api Deployment's CPU request.
func (e *env) apiCPU() string {
	e.t.Helper()
	d, err := e.get("apps/v1", "Deployment", "gadget", "gadget-api")
	if err != nil {
		e.t.Fatal(err)
	}
	cs, _, _ := unstructured.NestedSlice(d.Object, "spec", "template", "spec", "containers")
	cpu, _, _ := unstructured.NestedString(cs[0].(map[string]any), "resources", "requests", "cpu")
	return cpu
}

func failed(rev, rolledBackTo int64) func(hubv1.Reported) error {
	return func(r hubv1.Reported) error {
		if r.Phase != hubv1.PhaseFailed || r.Failure == nil || r.Failure.Revision != rev || r.Failure.RolledBackTo != rolledBackTo {
			return fmt.Errorf("phase %s, failure %+v; want revision %d failed, rolled back to %d", r.Phase, r.Failure, rev, rolledBackTo)
		}
		return nil
	}
}

// A revision whose Deployment never becomes ready (it asks for more CPU
// than the vehicle has) is Failed at its deadline, and the deployment goes
// back to its last healthy revision's objects. A refresh of the same
// objects is not applied again; without a rollback policy a failed
// revision stays as applied.
func TestFailedRevisionRollsBack(t *testing.T) {
	e := newEnv(t)
	policy := &hubv1.HealthPolicy{Deadline: "6s", Rollback: true}
	e.deploy(map[string]any{"message": "one"}, policy)
	rev1 := e.desiredRevision(0)
	a := e.start(agentOpts{})
	e.reported(90*time.Second, phase(rev1, hubv1.PhaseHealthy))

	d2 := e.deploy(map[string]any{"message": "one", "cpu": "64"}, policy)
	rev2 := e.desiredRevision(rev1)
	r := e.reported(60*time.Second, failed(rev2, rev1))
	if !slices.Equal(r.Failure.Deployments, []string{"gadget"}) {
		t.Errorf("failed deployments %v, want [gadget]", r.Failure.Deployments)
	}
	// The report names the failed revision's generations (a rollout
	// counts this vehicle as having failed generation 2).
	if len(r.Deployments) != 1 || r.Deployments[0].Generation != d2.Generation {
		t.Errorf("reported deployments %+v, want gadget generation %d", r.Deployments, d2.Generation)
	}
	t.Logf("failure: %s", r.Failure.Reason)
	if got := e.apiCPU(); got != "100m" {
		t.Errorf("api CPU request %q after the rollback, want 100m (revision %d's)", got, rev1)
	}
	e.cluster.Eventually(t, 60*time.Second, func() error {
		d, err := e.get("apps/v1", "Deployment", "gadget", "gadget-api")
		if err != nil {
			return err
		}
		n, _, _ := unstructured.NestedInt64(d.Object, "status", "availableReplicas")
		if n != 1 {
			return fmt.Errorf("%d available replicas after the rollback", n)
		}
		return nil
	})
	tw := e.twin()
	var sawFailed bool
	for _, d := range tw.Delta {
		sawFailed = sawFailed || d.Kind == "failed"
	}
	if !sawFailed {
		t.Errorf("twin delta %+v: no failed entry", tw.Delta)
	}

	if got := a.counter(t, "misaki_agent_revisions_total", map[string]string{"phase": "Failed"}); got != 1 {
		t.Errorf("misaki_agent_revisions_total{phase=Failed} = %v, want 1", got)
	}

	// A key rotation re-signs the same objects as a new revision: not
	// applied again.
	e.hub.Admin(t, http.StatusOK, "POST", "/v1/keys/rotate", hubv1.RotateRequest{Role: "targets"}, nil)
	rev3 := e.desiredRevision(rev2)
	e.reported(30*time.Second, failed(rev3, rev1))
	if got := e.apiCPU(); got != "100m" {
		t.Errorf("api CPU request %q after a refresh of the failed objects, want 100m", got)
	}

	// No rollback policy: Failed, and left as applied.
	e.deploy(map[string]any{"message": "one", "cpu": "32"}, &hubv1.HealthPolicy{Deadline: "3s"})
	rev4 := e.desiredRevision(rev3)
	e.reported(60*time.Second, failed(rev4, 0))
	if got := e.apiCPU(); got != "32" {
		t.Errorf("api CPU request %q, want 32: a failed revision without a rollback policy stays applied", got)
	}
}

// An apply that meets the API server unreachable (a vehicle's API server
// still starting after a reboot) is retried with backoff, not failed.
func TestTransientApplyErrorsRetried(t *testing.T) {
	e := newEnv(t)
	e.deploy(map[string]any{"message": "one"}, nil)
	rev1 := e.desiredRevision(0)
	var mu sync.Mutex
	refused := 0
	withWatch, err := client.NewWithWatch(e.cluster.Config, client.Options{})
	if err != nil {
		t.Fatal(err)
	}
	kube := interceptor.NewClient(withWatch, interceptor.Funcs{
		Patch: func(ctx context.Context, c client.WithWatch, obj client.Object, patch client.Patch, opts ...client.PatchOption) error {
			mu.Lock()
			defer mu.Unlock()
			if refused < 12 {
				refused++
				return &net.OpError{Op: "dial", Net: "tcp", Err: errors.New("connect: connection refused")}
			}
			return c.Patch(ctx, obj, patch, opts...)
		},
	})
	a := e.start(agentOpts{kube: kube})
	e.reported(90*time.Second, phase(rev1, hubv1.PhaseHealthy))
	if got := a.counter(t, "misaki_agent_applies_total", map[string]string{"result": "error"}); got < 1 {
		t.Errorf("misaki_agent_applies_total{result=error} = %v: the refused applies were not counted", got)
	}
	if got := a.counter(t, "misaki_agent_revisions_total", map[string]string{"phase": "Failed"}); got != 0 {
		t.Errorf("a revision failed on a transient error")
	}
}
