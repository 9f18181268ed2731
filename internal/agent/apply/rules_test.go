package apply

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strings"
	"testing"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
)

func manifest(apiVersion, kind, ns, name string, ann map[string]string) *unstructured.Unstructured {
	u := &unstructured.Unstructured{}
	u.SetAPIVersion(apiVersion)
	u.SetKind(kind)
	u.SetNamespace(ns)
	u.SetName(name)
	u.SetAnnotations(ann)
	return u
}

func TestKeepRule(t *testing.T) {
	allow := map[string]string{AnnotationPrune: "true"}
	never := map[string]string{AnnotationPrune: "false"}
	for _, tc := range []struct {
		name      string
		m         *unstructured.Unstructured
		keep      bool
		reasonHas string
	}{
		{"configmap", manifest("v1", "ConfigMap", "a", "b", nil), false, ""},
		{"configmap marked never", manifest("v1", "ConfigMap", "a", "b", never), true, `"false"`},
		{"crd", manifest("apiextensions.k8s.io/v1", "CustomResourceDefinition", "", "x.y", nil), true, "CustomResourceDefinition"},
		{"crd allowed", manifest("apiextensions.k8s.io/v1", "CustomResourceDefinition", "", "x.y", allow), false, ""},
		{"namespace", manifest("v1", "Namespace", "", "a", nil), true, "Namespace"},
		{"namespace allowed", manifest("v1", "Namespace", "", "a", allow), false, ""},
		{"pvc", manifest("v1", "PersistentVolumeClaim", "a", "data", nil), true, "PersistentVolumeClaim"},
		{"pvc allowed", manifest("v1", "PersistentVolumeClaim", "a", "data", allow), false, ""},
		{"a custom Namespace kind is not the core one", manifest("example.com/v1", "Namespace", "", "a", nil), false, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			keep, why := keepRule(RefOf(tc.m), tc.m)
			if keep != tc.keep || !strings.Contains(why, tc.reasonHas) {
				t.Errorf("keep %v (%q), want %v with %q", keep, why, tc.keep, tc.reasonHas)
			}
		})
	}
	// With no manifest (an inventory from before), the default rules.
	if keep, _ := keepRule(Ref{APIVersion: "v1", Kind: "Namespace", Name: "a"}, nil); !keep {
		t.Error("a Namespace with no manifest was not kept")
	}
}

func TestConfine(t *testing.T) {
	a := &Applier{opts: Options{Vehicle: "car-1", Half: "cloud", Namespace: "misaki-v-car-1"}}
	for _, tc := range []struct {
		m  *unstructured.Unstructured
		ok bool
	}{
		{manifest("v1", "Namespace", "", "misaki-v-car-1", nil), true},
		{manifest("apps/v1", "Deployment", "misaki-v-car-1", "api", nil), true},
		{manifest("v1", "Namespace", "", "kube-system", nil), false},
		{manifest("apps/v1", "Deployment", "misaki-v-car-2", "api", nil), false},
		{manifest("rbac.authorization.k8s.io/v1", "ClusterRole", "", "admin-2", nil), false},
	} {
		_, err := a.Prepare([]*unstructured.Unstructured{tc.m})
		if (err == nil) != tc.ok {
			t.Errorf("%s %s/%s: err %v, want ok=%v", tc.m.GetKind(), tc.m.GetNamespace(), tc.m.GetName(), err, tc.ok)
		}
	}
	out, err := a.Prepare([]*unstructured.Unstructured{manifest("v1", "ConfigMap", "misaki-v-car-1", "c", nil)})
	if err != nil {
		t.Fatal(err)
	}
	if l := out[0].GetLabels(); l[LabelVehicle] != "car-1" || l[LabelHalf] != "cloud" {
		t.Errorf("labels %v", l)
	}
}

func TestTransient(t *testing.T) {
	gr := schema.GroupResource{Group: "apps", Resource: "deployments"}
	for _, tc := range []struct {
		name string
		err  error
		want bool
	}{
		{"connection refused", &net.OpError{Op: "dial", Err: errors.New("connection refused")}, true},
		{"timeout", apierrors.NewTimeoutError("slow", 1), true},
		{"too many requests", apierrors.NewTooManyRequests("busy", 1), true},
		{"unavailable", apierrors.NewServiceUnavailable("starting"), true},
		{"invalid", apierrors.NewInvalid(schema.GroupKind{Group: "apps", Kind: "Deployment"}, "a", nil), false},
		{"forbidden", apierrors.NewForbidden(gr, "a", errors.New("no")), false},
		{"no such kind", &meta.NoKindMatchError{GroupKind: schema.GroupKind{Group: "monitoring.coreos.com", Kind: "ServiceMonitor"}}, false},
		{"wrapped unavailable", &Error{Ref: Ref{Kind: "ConfigMap", Name: "a"}, Err: fmt.Errorf("apply failed: %w", apierrors.NewServiceUnavailable("x"))}, true},
		{"cancelled", context.Canceled, false},
	} {
		if got := Transient(tc.err); got != tc.want {
			t.Errorf("%s: Transient = %v, want %v", tc.name, got, tc.want)
		}
	}
}
