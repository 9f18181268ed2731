package placement

import (
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"

	hubv1 "github.com/misaki-io/misaki/api/hub/v1"
)

func TestPodArch(t *testing.T) {
	term := func(exprs ...corev1.NodeSelectorRequirement) corev1.NodeSelectorTerm {
		return corev1.NodeSelectorTerm{MatchExpressions: exprs}
	}
	expr := func(key string, op corev1.NodeSelectorOperator, values ...string) corev1.NodeSelectorRequirement {
		return corev1.NodeSelectorRequirement{Key: key, Operator: op, Values: values}
	}
	affinity := func(terms ...corev1.NodeSelectorTerm) *corev1.Affinity {
		return &corev1.Affinity{NodeAffinity: &corev1.NodeAffinity{
			RequiredDuringSchedulingIgnoredDuringExecution: &corev1.NodeSelector{NodeSelectorTerms: terms},
		}}
	}
	const arch = corev1.LabelArchStable
	tests := []struct {
		name string
		pod  corev1.PodSpec
		ok   bool
	}{
		{name: "nothing pinned", ok: true},
		{name: "node selector on the vehicle's arch", pod: corev1.PodSpec{NodeSelector: map[string]string{arch: "arm64"}}, ok: true},
		{name: "node selector on another arch", pod: corev1.PodSpec{NodeSelector: map[string]string{arch: "amd64"}}},
		{name: "beta label on another arch", pod: corev1.PodSpec{NodeSelector: map[string]string{"beta.kubernetes.io/arch": "amd64"}}},
		{name: "other node selector labels are not looked at", pod: corev1.PodSpec{NodeSelector: map[string]string{"disk": "ssd"}}, ok: true},
		{name: "In with the arch", pod: corev1.PodSpec{Affinity: affinity(term(expr(arch, corev1.NodeSelectorOpIn, "amd64", "arm64")))}, ok: true},
		{name: "In without the arch", pod: corev1.PodSpec{Affinity: affinity(term(expr(arch, corev1.NodeSelectorOpIn, "amd64")))}},
		{name: "NotIn the arch", pod: corev1.PodSpec{Affinity: affinity(term(expr(arch, corev1.NodeSelectorOpNotIn, "arm64")))}},
		{name: "NotIn another arch", pod: corev1.PodSpec{Affinity: affinity(term(expr(arch, corev1.NodeSelectorOpNotIn, "s390x")))}, ok: true},
		{name: "Exists", pod: corev1.PodSpec{Affinity: affinity(term(expr(arch, corev1.NodeSelectorOpExists)))}, ok: true},
		{name: "DoesNotExist", pod: corev1.PodSpec{Affinity: affinity(term(expr(arch, corev1.NodeSelectorOpDoesNotExist)))}},
		{
			name: "terms are ORed: one that allows the arch is enough",
			pod: corev1.PodSpec{Affinity: affinity(
				term(expr(arch, corev1.NodeSelectorOpIn, "amd64")),
				term(expr("disk", corev1.NodeSelectorOpIn, "ssd"), expr(arch, corev1.NodeSelectorOpIn, "arm64")),
			)},
			ok: true,
		},
		{
			name: "expressions in a term are ANDed",
			pod: corev1.PodSpec{Affinity: affinity(
				term(expr(arch, corev1.NodeSelectorOpIn, "arm64"), expr(arch, corev1.NodeSelectorOpNotIn, "arm64")),
			)},
		},
		{name: "a term without arch expressions allows any", pod: corev1.PodSpec{Affinity: affinity(term(expr("disk", corev1.NodeSelectorOpExists)))}, ok: true},
		{name: "preferred affinity is not a requirement", pod: corev1.PodSpec{Affinity: &corev1.Affinity{NodeAffinity: &corev1.NodeAffinity{
			PreferredDuringSchedulingIgnoredDuringExecution: []corev1.PreferredSchedulingTerm{{Weight: 1, Preference: term(expr(arch, corev1.NodeSelectorOpIn, "amd64"))}},
		}}}, ok: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			why := podArch(&tt.pod, "arm64")
			if (why == "") != tt.ok {
				t.Errorf("podArch = %q, want ok=%v", why, tt.ok)
			}
		})
	}
	t.Run("vehicle arch unknown", func(t *testing.T) {
		f := &fitter{}
		c := &component{pods: []*corev1.PodSpec{{NodeSelector: map[string]string{arch: "amd64"}}}, wrefs: []string{"Deployment/a/b"}}
		if why := f.archMismatch(c); why != "" {
			t.Errorf("archMismatch with no vehicle arch = %q, want none", why)
		}
	})
}

func TestValidate(t *testing.T) {
	tests := []struct {
		name string
		opts Options
		err  string // substring; "" for none
	}{
		{name: "zero value"},
		{name: "https gateway with port", opts: Options{GatewayURL: "https://gw.example.com:8443"}},
		{name: "h2c gateway with trailing slash", opts: Options{GatewayURL: "h2c://gw:80/"}},
		{name: "gateway with a path", opts: Options{GatewayURL: "https://gw.example.com/v1"}, err: "Options.GatewayURL"},
		{name: "gateway without a scheme", opts: Options{GatewayURL: "gw.example.com:8443"}, err: "Options.GatewayURL"},
		{name: "gateway with user info", opts: Options{GatewayURL: "https://u@gw.example.com"}, err: "Options.GatewayURL"},
		{name: "cluster domain", opts: Options{ClusterDomain: "car.local"}},
		{name: "bad cluster domain", opts: Options{ClusterDomain: "Car_Local"}, err: "Options.ClusterDomain"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.opts.Validate()
			if tt.err == "" && err != nil || tt.err != "" && (err == nil || !strings.Contains(err.Error(), tt.err)) {
				t.Errorf("Validate() = %v, want %q", err, tt.err)
			}
		})
	}
}

func deployment(name string, extra map[string]any) *unstructured.Unstructured {
	spec := map[string]any{
		"selector": map[string]any{"matchLabels": map[string]any{"app": name}},
		"template": map[string]any{
			"metadata": map[string]any{"labels": map[string]any{"app": name}},
			"spec":     map[string]any{"containers": []any{map[string]any{"name": "c", "image": "x"}}},
		},
	}
	for k, v := range extra {
		spec[k] = v
	}
	return &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": "apps/v1", "kind": "Deployment",
		"metadata": map[string]any{"name": name, "namespace": "ns"},
		"spec":     spec,
	}}
}

// TestPlaceErrors covers the errors no golden case shows.
func TestPlaceErrors(t *testing.T) {
	good := []DeploymentObjects{{Deployment: hubv1.Deployment{Name: "d"}, Objects: []*unstructured.Unstructured{deployment("a", nil)}}}
	tests := []struct {
		name    string
		vehicle hubv1.Vehicle
		deps    []DeploymentObjects
		opts    Options
		err     string
	}{
		{name: "no vehicle ID", deps: good, err: "vehicle has no ID"},
		{name: "bad allocatable", vehicle: hubv1.Vehicle{ID: "car", Allocatable: hubv1.ResourceList{"cpu": "two"}}, deps: good, err: `vehicle car: allocatable cpu "two"`},
		{
			name: "cloud namespace not a DNS label", vehicle: hubv1.Vehicle{ID: "car"}, deps: good,
			opts: Options{CloudNamespace: func(id string) string { return "Fleet_" + id }}, err: `cloud namespace "Fleet_car"`,
		},
		{name: "bad options", vehicle: hubv1.Vehicle{ID: "car"}, deps: good, opts: Options{GatewayURL: "gw"}, err: "Options.GatewayURL"},
		{
			name: "malformed workload", vehicle: hubv1.Vehicle{ID: "car"},
			deps: []DeploymentObjects{{Deployment: hubv1.Deployment{Name: "d"}, Objects: []*unstructured.Unstructured{deployment("a", map[string]any{"replicas": "three"})}}},
			err:  "deployment d: Deployment/ns/a: decode",
		},
		{
			name: "bad default placement", vehicle: hubv1.Vehicle{ID: "car"},
			deps: []DeploymentObjects{{Deployment: hubv1.Deployment{Name: "d", DefaultPlacement: "anywhere"}, Objects: good[0].Objects}},
			err:  `deployment d: component a: invalid placement "anywhere" (deployment defaultPlacement)`,
		},
		{
			name: "bad placement for a component the chart does not have", vehicle: hubv1.Vehicle{ID: "car"},
			deps: []DeploymentObjects{{Deployment: hubv1.Deployment{Name: "d", Placement: map[string]string{"gone": "Cloud"}}, Objects: good[0].Objects}},
			err:  `deployment d: component gone: invalid placement "Cloud" (placement[gone])`,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Place(tt.vehicle, tt.deps, tt.opts)
			if err == nil || !strings.Contains(err.Error(), tt.err) {
				t.Fatalf("Place() = %v, want an error containing %q", err, tt.err)
			}
		})
	}
}

func TestComponents(t *testing.T) {
	t.Run("groups and sums", func(t *testing.T) {
		a := deployment("a", map[string]any{"replicas": int64(2)})
		a.SetAnnotations(map[string]string{AnnotationComponent: "shared", AnnotationPlacement: "cloud"})
		containers, _, _ := unstructured.NestedSlice(a.Object, "spec", "template", "spec", "containers")
		containers[0].(map[string]any)["resources"] = map[string]any{"requests": map[string]any{"cpu": "300m"}}
		unstructured.SetNestedSlice(a.Object, containers, "spec", "template", "spec", "containers")
		b := deployment("b", nil)
		b.SetAnnotations(map[string]string{AnnotationComponent: "shared"})
		svc := &unstructured.Unstructured{Object: map[string]any{
			"apiVersion": "v1", "kind": "Service", "metadata": map[string]any{"name": "b", "namespace": "ns"},
			"spec": map[string]any{"selector": map[string]any{"app": "b"}},
		}}
		other := &unstructured.Unstructured{Object: map[string]any{
			"apiVersion": "v1", "kind": "Service", "metadata": map[string]any{"name": "b", "namespace": "elsewhere"},
			"spec": map[string]any{"selector": map[string]any{"app": "b"}},
		}}
		cs, err := Components([]*unstructured.Unstructured{a, b, svc, other}, "ns")
		if err != nil {
			t.Fatal(err)
		}
		type summary struct {
			Name, Policy       string
			Workloads, Objects []string
			Requests           hubv1.ResourceList
		}
		var got []summary
		for _, c := range cs {
			s := summary{Name: c.Name, Policy: c.Policy, Requests: c.Requests}
			for _, u := range c.Workloads {
				s.Workloads = append(s.Workloads, ref(u, u.GetNamespace()))
			}
			for _, u := range c.Objects {
				s.Objects = append(s.Objects, ref(u, u.GetNamespace()))
			}
			got = append(got, s)
		}
		want := []summary{{
			Name: "shared", Policy: "cloud",
			Workloads: []string{"Deployment/ns/a", "Deployment/ns/b"},
			Objects:   []string{"Service/ns/b"}, // not the one in another namespace
			Requests:  hubv1.ResourceList{"cpu": "600m"},
		}}
		if diff := cmp.Diff(want, got); diff != "" {
			t.Errorf("Components (-want +got):\n%s", diff)
		}
	})
	t.Run("workloads of one component disagree on placement", func(t *testing.T) {
		a, b := deployment("a", nil), deployment("b", nil)
		a.SetAnnotations(map[string]string{AnnotationComponent: "x", AnnotationPlacement: "cloud"})
		b.SetAnnotations(map[string]string{AnnotationComponent: "x", AnnotationPlacement: "vehicle"})
		_, err := Components([]*unstructured.Unstructured{a, b}, "")
		if err == nil || !strings.Contains(err.Error(), `component x: workloads disagree on misaki.io/placement: "cloud" and "vehicle"`) {
			t.Fatalf("err = %v", err)
		}
	})
	t.Run("objects without a namespace are in the given one", func(t *testing.T) {
		a := deployment("a", nil)
		unstructured.RemoveNestedField(a.Object, "metadata", "namespace")
		cm := &unstructured.Unstructured{Object: map[string]any{
			"apiVersion": "v1", "kind": "ServiceAccount", "metadata": map[string]any{"name": "a", "namespace": "apps"},
		}}
		unstructured.SetNestedField(a.Object, "a", "spec", "template", "spec", "serviceAccountName")
		cs, err := Components([]*unstructured.Unstructured{a, cm}, "apps")
		if err != nil {
			t.Fatal(err)
		}
		if len(cs) != 1 || len(cs[0].Objects) != 1 {
			t.Fatalf("ServiceAccount apps/a did not join a (namespace unset, deployment namespace apps): %+v", cs)
		}
	})
}
