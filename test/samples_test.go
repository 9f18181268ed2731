package test

import (
	"context"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/yaml"

	meshv1 "github.com/misaki-io/misaki/api/v1alpha1"
	"github.com/misaki-io/misaki/internal/controller/translate"
)

// samplesDir holds a Route for each shape of offline policy.
var samplesDir = filepath.Join("..", "config", "samples")

// sampleFiles reads config/samples: the files its kustomization lists,
// which must be every YAML file there, each one Route (decoded strictly:
// a field the API does not have fails) that opens with a comment saying
// when to use it.
func sampleFiles(t *testing.T) map[string]meshv1.Route {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(samplesDir, "kustomization.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	var k struct {
		Resources []string `json:"resources"`
	}
	if err := yaml.Unmarshal(b, &k); err != nil {
		t.Fatalf("kustomization.yaml: %v", err)
	}
	files, err := filepath.Glob(filepath.Join(samplesDir, "*.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, f := range files {
		if n := filepath.Base(f); n != "kustomization.yaml" {
			names = append(names, n)
		}
	}
	if got, want := slices.Sorted(slices.Values(k.Resources)), names; !slices.Equal(got, want) {
		t.Errorf("kustomization.yaml lists %v; the directory has %v", got, want)
	}
	out := map[string]meshv1.Route{}
	for _, n := range names {
		b, err := os.ReadFile(filepath.Join(samplesDir, n))
		if err != nil {
			t.Fatal(err)
		}
		if !strings.HasPrefix(string(b), "# Shape: ") || !strings.Contains(string(b), "# Use it ") {
			t.Errorf("%s: does not open with a comment naming its shape (# Shape: ...) and when to use it (# Use it ...)", n)
		}
		var r meshv1.Route
		if err := yaml.UnmarshalStrict(b, &r); err != nil {
			t.Errorf("%s: %v", n, err)
			continue
		}
		if r.APIVersion != meshv1.GroupVersion.String() || r.Kind != "Route" {
			t.Errorf("%s: %s %s, want a %s Route", n, r.APIVersion, r.Kind, meshv1.GroupVersion)
		}
		out[n] = r
	}
	return out
}

// TestSamplesCoverEveryOfflineField keeps the samples whole: each field of
// the offline policy is set by some sample, and one sample has none (fail
// fast). A new field in api/ needs a sample, or a line in one.
func TestSamplesCoverEveryOfflineField(t *testing.T) {
	samples := sampleFiles(t)
	typ := reflect.TypeFor[meshv1.Offline]()
	used := map[string][]string{}
	without := 0
	for n, r := range samples {
		if r.Spec.Offline == nil {
			without++
			continue
		}
		v := reflect.ValueOf(*r.Spec.Offline)
		for i := range typ.NumField() {
			if !v.Field(i).IsZero() {
				name, _, _ := strings.Cut(typ.Field(i).Tag.Get("json"), ",")
				used[name] = append(used[name], n)
			}
		}
	}
	for i := range typ.NumField() {
		name, _, _ := strings.Cut(typ.Field(i).Tag.Get("json"), ",")
		if len(used[name]) == 0 {
			t.Errorf("no sample in config/samples sets offline.%s: add one (or a line to one) that says when to use it", name)
		}
	}
	if without == 0 {
		t.Error("no sample without an offline policy (the fail-fast shape)")
	}
}

// TestSamplesTranslate runs the controller's translation over the samples
// as one namespace: each is Accepted (the proxy's own validation passes it)
// and no two claim a host.
func TestSamplesTranslate(t *testing.T) {
	var routes []meshv1.Route
	for _, r := range sampleFiles(t) {
		r.Namespace = "samples"
		routes = append(routes, r)
	}
	checkTranslated(t, routes)
}

func checkTranslated(t *testing.T, routes []meshv1.Route) {
	t.Helper()
	out := translate.Namespace(translate.Input{Namespace: "samples", Routes: routes})
	for _, r := range routes {
		res, ok := out.Results[r.Name]
		if !ok || res.Accepted != metav1.ConditionTrue {
			t.Errorf("Route %s: Accepted=%s %s: %s", r.Name, res.Accepted, res.Reason, res.Message)
		}
	}
	if len(out.Results) != len(routes) {
		t.Errorf("%d results for %d Routes", len(out.Results), len(routes))
	}
}

// TestSamplesAcceptedByAPIServer applies config/samples as a user would
// (kubectl apply -k) to a real kube-apiserver with the CRD from config/crd,
// so its schema and CEL rules see every sample, and translates what the
// API server stored.
func TestSamplesAcceptedByAPIServer(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a kube-apiserver")
	}
	env, _, c := startEnv(t)
	ctx := context.Background()
	create(t, c, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "samples"}})
	kubectl := adminKubectl(t, env)
	if _, err := os.Stat(filepath.Join(env.BinaryAssetsDirectory, "kubectl")); err != nil {
		t.Skipf("no kubectl in %s; run hack/kube-tools.sh", env.BinaryAssetsDirectory)
	}
	out, errOut, err := kubectl("apply", "-n", "samples", "-k", samplesDir)
	if err != nil {
		t.Fatalf("kubectl apply -k config/samples: %v\n%s", err, readAll(errOut))
	}
	t.Logf("kubectl apply -n samples -k config/samples:\n%s", readAll(out))
	var list meshv1.RouteList
	if err := c.List(ctx, &list, client.InNamespace("samples")); err != nil {
		t.Fatal(err)
	}
	files := sampleFiles(t)
	if len(list.Items) != len(files) {
		t.Fatalf("the API server has %d Routes, config/samples %d", len(list.Items), len(files))
	}
	for n, r := range files {
		i := slices.IndexFunc(list.Items, func(s meshv1.Route) bool { return s.Name == r.Name })
		if i < 0 {
			t.Errorf("%s: Route %s not stored", n, r.Name)
			continue
		}
		if !reflect.DeepEqual(list.Items[i].Spec, r.Spec) {
			t.Errorf("%s: the API server stored a different spec (pruned or defaulted fields?):\n got %+v\nwant %+v", n, list.Items[i].Spec, r.Spec)
		}
	}
	checkTranslated(t, list.Items)
}
