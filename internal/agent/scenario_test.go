package agent_test

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"

	hubv1 "github.com/misaki-io/misaki/api/hub/v1"
	"github.com/misaki-io/misaki/internal/agent"
)

// objUID reads an object's UID ("" if it does not exist).
func (e *env) objUID(apiVersion, kind, ns, name string) types.UID {
	e.t.Helper()
	u := &unstructured.Unstructured{}
	u.SetAPIVersion(apiVersion)
	u.SetKind(kind)
	err := e.kube.Get(context.Background(), types.NamespacedName{Namespace: ns, Name: name}, u)
	if apierrors.IsNotFound(err) {
		return ""
	}
	if err != nil {
		e.t.Fatalf("get %s %s/%s: %v", kind, ns, name, err)
	}
	return u.GetUID()
}

// get reads an object.
func (e *env) get(apiVersion, kind, ns, name string) (*unstructured.Unstructured, error) {
	u := &unstructured.Unstructured{}
	u.SetAPIVersion(apiVersion)
	u.SetKind(kind)
	err := e.kube.Get(context.Background(), types.NamespacedName{Namespace: ns, Name: name}, u)
	return u, err
}

type objID struct{ apiVersion, kind, ns, name string }

var gadgetObjects = []objID{
	{"apiextensions.k8s.io/v1", "CustomResourceDefinition", "", "gadgets.test.misaki.io"},
	{"test.misaki.io/v1", "Gadget", "gadget", "gadget"},
	{"v1", "ConfigMap", "gadget", "gadget-config"},
	{"apps/v1", "Deployment", "gadget", "gadget-api"},
	{"v1", "Namespace", "", "gadget-extra"},
	{"v1", "ConfigMap", "gadget-extra", "extra"},
}

// First install of a chart with a CRD and a custom resource; an upgrade;
// a revision that drops objects prunes exactly those the rules allow.
func TestInstallUpgradePrune(t *testing.T) {
	e := newEnv(t)
	e.deploy(map[string]any{"message": "one"}, nil)
	rev1 := e.desiredRevision(0)
	// Someone applied the ConfigMap first with another field manager: the
	// agent takes the field over and says so in its report.
	ctx := context.Background()
	ns := &unstructured.Unstructured{}
	ns.SetAPIVersion("v1")
	ns.SetKind("Namespace")
	ns.SetName("gadget")
	if err := e.kube.Create(ctx, ns); err != nil {
		t.Fatal(err)
	}
	mine := &unstructured.Unstructured{Object: map[string]any{"apiVersion": "v1", "kind": "ConfigMap",
		"metadata": map[string]any{"name": "gadget-config", "namespace": "gadget"}, "data": map[string]any{"message": "mine"}}}
	if err := e.kube.Apply(ctx, client.ApplyConfigurationFromUnstructured(mine), client.FieldOwner("by-hand")); err != nil {
		t.Fatal(err)
	}
	e.start(agentOpts{})
	r := e.reported(90*time.Second, phase(rev1, hubv1.PhaseHealthy))
	var conflict string
	for _, o := range r.Objects {
		if o.Name == "gadget-config" {
			conflict = o.Reason
		}
	}
	if !strings.Contains(conflict, "conflict") || !strings.Contains(conflict, "by-hand") {
		t.Errorf("gadget-config reported %q: want the conflict with the by-hand manager", conflict)
	}

	uids := map[objID]types.UID{}
	for _, o := range gadgetObjects {
		uid := e.objUID(o.apiVersion, o.kind, o.ns, o.name)
		if uid == "" {
			t.Fatalf("%s %s/%s not applied", o.kind, o.ns, o.name)
		}
		uids[o] = uid
	}
	g, _ := e.get("test.misaki.io/v1", "Gadget", "gadget", "gadget")
	if msg, _, _ := unstructured.NestedString(g.Object, "spec", "message"); msg != "one" {
		t.Errorf("gadget message %q, want one", msg)
	}
	if g.GetLabels()["agent.misaki.io/vehicle"] != vehicleID {
		t.Errorf("gadget labels %v: no ownership label", g.GetLabels())
	}
	// Field manager misaki-agent.
	managers := map[string]bool{}
	for _, mf := range g.GetManagedFields() {
		managers[mf.Manager] = true
	}
	if !managers["misaki-agent"] {
		t.Errorf("managed fields %v: no misaki-agent", managers)
	}

	// Upgrade.
	e.deploy(map[string]any{"message": "two"}, nil)
	rev2 := e.desiredRevision(rev1)
	e.reported(90*time.Second, phase(rev2, hubv1.PhaseHealthy))
	cm, err := e.get("v1", "ConfigMap", "gadget", "gadget-config")
	if err != nil {
		t.Fatal(err)
	}
	if msg, _, _ := unstructured.NestedString(cm.Object, "data", "message"); msg != "two" {
		t.Errorf("config message %q after the upgrade, want two", msg)
	}

	// Drop the extras: the ConfigMap goes, its Namespace stays (a
	// Namespace is pruned only when annotated to allow it), and nothing
	// else is touched.
	e.deploy(map[string]any{"message": "two", "extra": false}, nil)
	rev3 := e.desiredRevision(rev2)
	e.reported(90*time.Second, phase(rev3, hubv1.PhaseHealthy))
	for _, o := range gadgetObjects {
		uid := e.objUID(o.apiVersion, o.kind, o.ns, o.name)
		switch {
		case o.name == "extra":
			if uid != "" {
				t.Errorf("ConfigMap gadget-extra/extra still there after revision %d dropped it", rev3)
			}
		case uid != uids[o]:
			t.Errorf("%s %s/%s: uid %q, was %q: it should not have been touched", o.kind, o.ns, o.name, uid, uids[o])
		}
	}
	r = e.reported(10*time.Second, phase(rev3, hubv1.PhaseHealthy))
	for _, o := range r.Objects {
		if o.Name == "extra" || o.Name == "gadget-extra" {
			t.Errorf("report still lists %s/%s", o.Kind, o.Name)
		}
	}
}

// The twin shows the report: desired beside reported, no delta.
func checkNoDelta(t *testing.T, e *env) {
	t.Helper()
	tw := e.twin()
	for _, d := range tw.Delta {
		if d.Half == hubv1.HalfVehicle {
			t.Errorf("delta: %+v", d)
		}
	}
}

// recorder is the agent's hub, recording the revisions it was answered.
type recorder struct {
	agent.Hub
	mu   sync.Mutex
	revs []int64
}

func (r *recorder) Desired(ctx context.Context, vehicle, half string, after int64, wait time.Duration) (*hubv1.Desired, error) {
	d, err := r.Hub.Desired(ctx, vehicle, half, after, wait)
	if d != nil {
		r.mu.Lock()
		r.revs = append(r.revs, d.Revision)
		r.mu.Unlock()
	}
	return d, err
}

func (r *recorder) seen() []int64 {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.revs)
}

// The hub goes away and the agent restarts: nothing is deleted, drift is
// corrected from the ledger alone, and when the hub returns the agent
// takes the newest of the revisions issued meanwhile, and only that one.
func TestOfflineRestartDriftAndNewest(t *testing.T) {
	e := newEnv(t)
	e.deploy(map[string]any{"message": "one"}, nil)
	rev1 := e.desiredRevision(0)
	a := e.start(agentOpts{})
	e.reported(90*time.Second, phase(rev1, hubv1.PhaseHealthy))

	e.link.Down()
	a.stop()
	ctx := context.Background()
	// Changed and deleted by hand while the agent was down.
	dep, err := e.get("apps/v1", "Deployment", "gadget", "gadget-api")
	if err != nil {
		t.Fatal(err)
	}
	if err := e.kube.Delete(ctx, dep); err != nil {
		t.Fatal(err)
	}
	cm, err := e.get("v1", "ConfigMap", "gadget", "gadget-config")
	if err != nil {
		t.Fatal(err)
	}
	unstructured.SetNestedField(cm.Object, "by hand", "data", "message")
	if err := e.kube.Update(ctx, cm); err != nil {
		t.Fatal(err)
	}

	// Restarted with the hub unreachable: the ledger is enough.
	rec := &recorder{Hub: e.hubClient()}
	e.start(agentOpts{hub: rec, drift: 2 * time.Second})
	e.cluster.Eventually(t, 60*time.Second, func() error {
		if _, err := e.get("apps/v1", "Deployment", "gadget", "gadget-api"); err != nil {
			return fmt.Errorf("deployment not restored: %w", err)
		}
		cm, err := e.get("v1", "ConfigMap", "gadget", "gadget-config")
		if err != nil {
			return err
		}
		if msg, _, _ := unstructured.NestedString(cm.Object, "data", "message"); msg != "one" {
			return fmt.Errorf("config message %q, want one", msg)
		}
		return nil
	})
	for _, o := range gadgetObjects {
		if e.objUID(o.apiVersion, o.kind, o.ns, o.name) == "" {
			t.Errorf("%s %s/%s missing while offline", o.kind, o.ns, o.name)
		}
	}
	// A drift pass (every 2s here) restores an object deleted while the
	// agent runs.
	gadget, err := e.get("test.misaki.io/v1", "Gadget", "gadget", "gadget")
	if err != nil {
		t.Fatal(err)
	}
	if err := e.kube.Delete(ctx, gadget); err != nil {
		t.Fatal(err)
	}
	e.cluster.Eventually(t, 30*time.Second, func() error {
		_, err := e.get("test.misaki.io/v1", "Gadget", "gadget", "gadget")
		return err
	})

	// Three revisions while the vehicle is offline.
	rev := rev1
	for _, m := range []string{"a", "b", "c"} {
		e.deploy(map[string]any{"message": m}, nil)
		rev = e.desiredRevision(rev)
	}
	if got := rec.seen(); len(got) != 0 {
		t.Fatalf("revisions %v reached the agent through a cut link", got)
	}
	e.link.Up()
	e.reported(90*time.Second, phase(rev, hubv1.PhaseHealthy))
	if got := rec.seen(); !slices.Equal(got, []int64{rev}) {
		t.Errorf("the agent was answered revisions %v; want only the newest, %d", got, rev)
	}
	cm, err = e.get("v1", "ConfigMap", "gadget", "gadget-config")
	if err != nil {
		t.Fatal(err)
	}
	if msg, _, _ := unstructured.NestedString(cm.Object, "data", "message"); msg != "c" {
		t.Errorf("config message %q, want c", msg)
	}
	checkNoDelta(t, e)
}
