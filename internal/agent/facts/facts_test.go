package facts

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	corev1 "k8s.io/api/core/v1"
	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	apiextensions "k8s.io/apiextensions-apiserver/pkg/client/clientset/clientset"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/dynamic"

	hubv1 "github.com/misaki-io/misaki/api/hub/v1"
	"github.com/misaki-io/misaki/internal/clustertest"
)

func list(kv ...string) corev1.ResourceList {
	l := corev1.ResourceList{}
	for i := 0; i < len(kv); i += 2 {
		l[corev1.ResourceName(kv[i])] = resource.MustParse(kv[i+1])
	}
	return l
}

// collect collects until check passes (discovery of a new CRD or
// APIService is asynchronous in the API server) and returns the Snapshot.
func collect(t *testing.T, c *clustertest.Cluster, col *Collector, check func(Snapshot) error) Snapshot {
	t.Helper()
	var s Snapshot
	c.Eventually(t, 60*time.Second, func() error {
		var err error
		if s, err = col.Collect(context.Background()); err != nil {
			return err
		}
		return check(s)
	})
	return s
}

// TestCollect collects from a whole cluster: two kwok nodes of different
// sizes, a CRD, then nodes created directly with their own architecture,
// one of them cordoned.
func TestCollect(t *testing.T) {
	c := clustertest.Start(t)
	ctx := context.Background()
	c.AddNode(t, "car-a", list("cpu", "2", "memory", "4Gi", "pods", "110"))
	c.AddNode(t, "car-b", list("cpu", "500m", "memory", "1Gi", "pods", "20", "nvidia.com/gpu", "1"))

	ext, err := apiextensions.NewForConfig(c.Config)
	if err != nil {
		t.Fatal(err)
	}
	crd := &apiextensionsv1.CustomResourceDefinition{
		ObjectMeta: metav1.ObjectMeta{Name: "widgets.example.misaki.io"},
		Spec: apiextensionsv1.CustomResourceDefinitionSpec{
			Group: "example.misaki.io",
			Names: apiextensionsv1.CustomResourceDefinitionNames{Plural: "widgets", Singular: "widget", Kind: "Widget", ListKind: "WidgetList"},
			Scope: apiextensionsv1.NamespaceScoped,
			Versions: []apiextensionsv1.CustomResourceDefinitionVersion{{
				Name: "v1", Served: true, Storage: true,
				Schema:       &apiextensionsv1.CustomResourceValidation{OpenAPIV3Schema: &apiextensionsv1.JSONSchemaProps{Type: "object", XPreserveUnknownFields: new(true)}},
				Subresources: &apiextensionsv1.CustomResourceSubresources{Status: &apiextensionsv1.CustomResourceSubresourceStatus{}},
			}},
		},
	}
	if _, err := ext.ApiextensionsV1().CustomResourceDefinitions().Create(ctx, crd, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}

	col, err := New(c.Config)
	if err != nil {
		t.Fatal(err)
	}
	s := collect(t, c, col, func(s Snapshot) error {
		if !slices.Contains(s.Facts.APIVersions, "example.misaki.io/v1/Widget") {
			return fmt.Errorf("the CRD's kind is not discovered yet")
		}
		return nil
	})

	if !strings.HasPrefix(s.Facts.KubernetesVersion, "v1.37.") {
		t.Errorf("KubernetesVersion %q, want v1.37.x", s.Facts.KubernetesVersion)
	}
	v := s.Facts.APIVersions
	for _, want := range []string{"v1", "v1/Pod", "v1/Node", "apps/v1", "apps/v1/Deployment", "batch/v1/CronJob",
		"apiextensions.k8s.io/v1/CustomResourceDefinition", "example.misaki.io/v1", "example.misaki.io/v1/Widget"} {
		if !slices.Contains(v, want) {
			t.Errorf("APIVersions lack %q", want)
		}
	}
	// Subresources are not kinds: deployments/scale would add apps/v1/Scale,
	// pods/eviction v1/Eviction, serviceaccounts/token v1/TokenRequest.
	for _, not := range []string{"apps/v1/Scale", "v1/Eviction", "v1/TokenRequest", "v1/Binding/status"} {
		if slices.Contains(v, not) {
			t.Errorf("APIVersions have subresource kind %q", not)
		}
	}
	if !slices.IsSorted(v) || len(slices.Compact(slices.Clone(v))) != len(v) {
		t.Errorf("APIVersions are not sorted and distinct: %q", v)
	}
	if s.Unavailable != nil {
		t.Errorf("Unavailable %q with every API served", s.Unavailable)
	}
	if want := []string{"widgets.example.misaki.io"}; !slices.Equal(s.Facts.CRDs, want) {
		t.Errorf("CRDs %q, want %q", s.Facts.CRDs, want)
	}
	// kwok reports amd64 for a node that does not set its architecture
	// (clustertest's nodes set only the kubernetes.io/arch label).
	if s.Facts.Arch != "amd64" {
		t.Errorf("Arch %q, want amd64 (what kwok reports)", s.Facts.Arch)
	}
	sums := hubv1.ResourceList{"cpu": "2500m", "memory": "5Gi", "pods": "130", "nvidia.com/gpu": "1"}
	if d := cmp.Diff(sums, s.Capacity); d != "" {
		t.Errorf("Capacity (-want +got):\n%s", d)
	}
	if d := cmp.Diff(sums, s.Allocatable); d != "" {
		t.Errorf("Allocatable (-want +got):\n%s", d)
	}
	again, err := col.Collect(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if d := cmp.Diff(s, again); d != "" {
		t.Errorf("a second collection differs (-first +second):\n%s", d)
	}

	// Nodes with their own architecture, made through the API (kwok
	// manages only nodes annotated for it, so these keep what they say).
	// Two arm64 nodes tie with the two amd64 ones: the sorted first wins.
	addNode := func(name, arch string, unschedulable bool, capacity, allocatable corev1.ResourceList) {
		t.Helper()
		n := &corev1.Node{
			ObjectMeta: metav1.ObjectMeta{Name: name},
			Spec:       corev1.NodeSpec{Unschedulable: unschedulable},
			Status: corev1.NodeStatus{
				Capacity: capacity, Allocatable: allocatable,
				NodeInfo: corev1.NodeSystemInfo{Architecture: arch, OperatingSystem: "linux"},
			},
		}
		if _, err := c.Client.CoreV1().Nodes().Create(ctx, n, metav1.CreateOptions{}); err != nil {
			t.Fatalf("create node %s: %v", name, err)
		}
	}
	addNode("arm-1", "arm64", false, list("cpu", "4", "memory", "8Gi", "pods", "110"), list("cpu", "3800m", "memory", "7Gi", "pods", "110"))
	// Cordoned: its architecture counts, its resources do not.
	addNode("arm-2", "arm64", true, list("cpu", "64", "memory", "256Gi", "pods", "110"), list("cpu", "64", "memory", "256Gi", "pods", "110"))
	s, err = col.Collect(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if s.Facts.Arch != "amd64" {
		t.Errorf("Arch %q with 2 amd64 and 2 arm64 nodes, want amd64 (ties: sorted first)", s.Facts.Arch)
	}
	wantCap := hubv1.ResourceList{"cpu": "6500m", "memory": "13Gi", "pods": "240", "nvidia.com/gpu": "1"}
	wantAlloc := hubv1.ResourceList{"cpu": "6300m", "memory": "12Gi", "pods": "240", "nvidia.com/gpu": "1"}
	if d := cmp.Diff(wantCap, s.Capacity); d != "" {
		t.Errorf("Capacity without the cordoned node (-want +got):\n%s", d)
	}
	if d := cmp.Diff(wantAlloc, s.Allocatable); d != "" {
		t.Errorf("Allocatable without the cordoned node (-want +got):\n%s", d)
	}
	addNode("arm-3", "arm64", false, list("cpu", "1"), list("cpu", "1"))
	if s, err = col.Collect(ctx); err != nil {
		t.Fatal(err)
	}
	if s.Facts.Arch != "arm64" {
		t.Errorf("Arch %q with 2 amd64 and 3 arm64 nodes, want arm64", s.Facts.Arch)
	}
}

// TestCollectUnavailableAPI: an aggregated API whose server is missing
// does not fail the collection; its group version is named, and the rest
// of discovery is used.
func TestCollectUnavailableAPI(t *testing.T) {
	c := clustertest.Start(t)
	ctx := context.Background()
	dyn, err := dynamic.NewForConfig(c.Config)
	if err != nil {
		t.Fatal(err)
	}
	svc := &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": "apiregistration.k8s.io/v1",
		"kind":       "APIService",
		"metadata":   map[string]any{"name": "v1beta1.metrics.example.misaki.io"},
		"spec": map[string]any{
			"group": "metrics.example.misaki.io", "version": "v1beta1",
			"groupPriorityMinimum": int64(100), "versionPriority": int64(100),
			"insecureSkipTLSVerify": true,
			"service":               map[string]any{"namespace": "default", "name": "no-such-server", "port": int64(443)},
		},
	}}
	gvr := schema.GroupVersionResource{Group: "apiregistration.k8s.io", Version: "v1", Resource: "apiservices"}
	if _, err := dyn.Resource(gvr).Create(ctx, svc, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	col, err := New(c.Config)
	if err != nil {
		t.Fatal(err)
	}
	s := collect(t, c, col, func(s Snapshot) error {
		if !slices.Contains(s.Unavailable, "metrics.example.misaki.io/v1beta1") {
			return fmt.Errorf("Unavailable %q, want metrics.example.misaki.io/v1beta1", s.Unavailable)
		}
		return nil
	})
	if !slices.Contains(s.Facts.APIVersions, "apps/v1/Deployment") || s.Facts.KubernetesVersion == "" {
		t.Errorf("with one API down, the rest is missing: %+v", s.Facts)
	}
	for _, v := range s.Facts.APIVersions {
		if strings.HasPrefix(v, "metrics.example.misaki.io/v1beta1/") {
			t.Errorf("APIVersions have %q from the API that is down", v)
		}
	}
}

// quantities is every node's resources as strings, by node name.
func quantities(nodes []nodeSummary) map[string]string {
	m := map[string]string{}
	for _, n := range nodes {
		for name, q := range n.capacity {
			m[n.name+" capacity "+string(name)] = q.String()
		}
		for name, q := range n.allocatable {
			m[n.name+" allocatable "+string(name)] = q.String()
		}
	}
	return m
}

// summarizeNodes' rules, on cases a cluster test cannot cheaply make.
func TestSummarizeNodes(t *testing.T) {
	for _, tc := range []struct {
		name        string
		nodes       []nodeSummary
		arch        string
		capacity    hubv1.ResourceList
		allocatable hubv1.ResourceList
	}{
		{name: "no nodes"},
		{
			name:  "all cordoned",
			nodes: []nodeSummary{{name: "a", arch: "arm64", capacity: list("cpu", "1")}},
			arch:  "arm64",
		},
		{
			name: "majority, unknown not counted",
			nodes: []nodeSummary{
				{name: "a", arch: "", schedulable: true}, {name: "b", schedulable: true}, {name: "c", schedulable: true},
				{name: "d", arch: "riscv64", schedulable: true},
			},
			arch: "riscv64",
		},
		{
			name: "tie",
			nodes: []nodeSummary{
				{name: "a", arch: "arm64", schedulable: true}, {name: "b", arch: "amd64", schedulable: true},
			},
			arch: "amd64",
		},
		{
			// The first node by name gives the format, in whatever order
			// the list came.
			name: "format of the first node by name",
			nodes: []nodeSummary{
				{name: "z", schedulable: true, capacity: list("memory", "1000Ki"), allocatable: list("memory", "1000Ki")},
				{name: "a", schedulable: true, capacity: list("memory", "1024k"), allocatable: list("memory", "1024k")},
			},
			// 2048000 bytes: "2000Ki" had z come first.
			capacity:    hubv1.ResourceList{"memory": "2048k"},
			allocatable: hubv1.ResourceList{"memory": "2048k"},
		},
		{
			name: "zero quantities are listed",
			nodes: []nodeSummary{
				{name: "a", schedulable: true, capacity: list("hugepages-2Mi", "0", "cpu", "1"), allocatable: list("hugepages-2Mi", "0", "cpu", "900m")},
				{name: "b", schedulable: true, capacity: list("cpu", "1"), allocatable: list("cpu", "1")},
			},
			capacity:    hubv1.ResourceList{"hugepages-2Mi": "0", "cpu": "2"},
			allocatable: hubv1.ResourceList{"hugepages-2Mi": "0", "cpu": "1900m"},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before := quantities(tc.nodes)
			arch, capacity, allocatable := summarizeNodes(tc.nodes)
			if arch != tc.arch {
				t.Errorf("arch %q, want %q", arch, tc.arch)
			}
			if d := cmp.Diff(tc.capacity, capacity); d != "" {
				t.Errorf("capacity (-want +got):\n%s", d)
			}
			if d := cmp.Diff(tc.allocatable, allocatable); d != "" {
				t.Errorf("allocatable (-want +got):\n%s", d)
			}
			// Summing never changes a node's own quantities.
			if d := cmp.Diff(before, quantities(tc.nodes)); d != "" {
				t.Errorf("summing changed the nodes (-before +after):\n%s", d)
			}
		})
	}
}
