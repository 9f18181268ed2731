package render_test

import (
	"bytes"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"helm.sh/helm/v4/pkg/chart/common"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/yaml"

	hubv1 "github.com/misaki-io/misaki/api/hub/v1"
	"github.com/misaki-io/misaki/internal/hub/render"
	"github.com/misaki-io/misaki/internal/hub/render/rendertest"
)

var update = flag.Bool("update", false, "rewrite the golden files under testdata/golden")

const kube = "v1.37.2"

// shuttle returns an Input for the shuttle test chart as release "shuttle"
// in namespace "fleet" on a Kubernetes 1.37 vehicle.
func shuttle(t testing.TB) render.Input {
	t.Helper()
	data, digest := rendertest.ChartArchive(t, rendertest.ShuttleDir())
	return render.Input{
		Chart:     data,
		Digest:    digest,
		Release:   "shuttle",
		Namespace: "fleet",
		Facts:     hubv1.Facts{KubernetesVersion: kube},
	}
}

// TestGolden renders the shuttle chart per case and compares the objects,
// hooks and notes with testdata/golden/<case>.yaml (-update rewrites them).
// Every case has the CRD from the chart's crds/ first and the cluster-scoped
// RouteMap without a namespace.
func TestGolden(t *testing.T) {
	deployment := map[string]any{
		"image": map[string]any{"tag": "1.5.0"},
		"api": map[string]any{
			"replicas": 3,
			"config":   map[string]any{"logLevel": "debug"},
		},
		"planner": map[string]any{
			"storage": map[string]any{"size": "50Gi", "storageClassName": "fast-ssd"},
		},
		"migrations": map[string]any{"enabled": false},
	}
	tests := []struct {
		name   string
		layers []map[string]any
		facts  hubv1.Facts
	}{
		{name: "defaults", facts: hubv1.Facts{KubernetesVersion: kube}},
		{
			// The deployment's values: the image tag, replicas and storage
			// change, and the migrate hook is gone.
			name:   "values-override",
			layers: []map[string]any{deployment},
			facts:  hubv1.Facts{KubernetesVersion: kube},
		},
		{
			// A customization for low-spec cars over the deployment's
			// values: it wins where both set a key (api.replicas), maps
			// merge (api.config keeps the deployment's logLevel and takes
			// the customization's region), and a null deletes the chart's
			// reports.timeZone.
			name: "customization",
			layers: []map[string]any{deployment, {
				"api": map[string]any{
					"replicas": 1,
					"config":   map[string]any{"region": "eu-north"},
				},
				"planner": map[string]any{"placement": "cloud"},
				"reports": map[string]any{"timeZone": nil},
			}},
			facts: hubv1.Facts{KubernetesVersion: kube},
		},
		{
			// Kubernetes 1.26 has no CronJob time zones: the template's
			// semverCompare leaves timeZone out.
			name:  "kube-1.26",
			facts: hubv1.Facts{KubernetesVersion: "v1.26.15"},
		},
		{
			// A vehicle that serves monitoring.coreos.com/v1 gets the
			// ServiceMonitor.
			name: "monitoring-api",
			facts: hubv1.Facts{KubernetesVersion: kube, APIVersions: []string{
				"monitoring.coreos.com/v1", "monitoring.coreos.com/v1/ServiceMonitor",
			}},
		},
		{
			name:   "planner-disabled",
			layers: []map[string]any{{"planner": map[string]any{"enabled": false}}},
			facts:  hubv1.Facts{KubernetesVersion: kube},
		},
	}
	base := shuttle(t)
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			in := base
			in.Layers = tt.layers
			in.Facts = tt.facts
			out, err := render.Render(in)
			if err != nil {
				t.Fatalf("Render: %v", err)
			}
			got := goldenText(t, out)
			path := filepath.Join("testdata", "golden", tt.name+".yaml")
			if *update {
				if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
					t.Fatal(err)
				}
				if err := os.WriteFile(path, got, 0o644); err != nil {
					t.Fatal(err)
				}
			}
			want, err := os.ReadFile(path)
			if err != nil {
				t.Fatalf("%v (run with -update to create it)", err)
			}
			if diff := cmp.Diff(string(want), string(got)); diff != "" {
				t.Errorf("%s differs (-want +got):\n%s", path, diff)
			}
		})
	}
}

// goldenText writes an Output as a YAML stream: NOTES.txt as a comment,
// then the objects, then the hooks, each headed by a comment line.
func goldenText(t *testing.T, out *render.Output) []byte {
	t.Helper()
	var b bytes.Buffer
	b.WriteString("# NOTES.txt:\n")
	for _, l := range strings.Split(strings.TrimRight(out.Notes, "\n"), "\n") {
		fmt.Fprintf(&b, "#   %s\n", l)
	}
	write := func(what string, objs []*unstructured.Unstructured) {
		for i, o := range objs {
			y, err := yaml.Marshal(o.Object)
			if err != nil {
				t.Fatal(err)
			}
			fmt.Fprintf(&b, "---\n# %s %d: %s %s\n%s", what, i, o.GetKind(), objectName(o), y)
		}
	}
	write("object", out.Objects)
	write("hook", out.Hooks)
	return b.Bytes()
}

func objectName(o *unstructured.Unstructured) string {
	if o.GetNamespace() == "" {
		return o.GetName()
	}
	return o.GetNamespace() + "/" + o.GetName()
}

func names(objs []*unstructured.Unstructured) []string {
	var s []string
	for _, o := range objs {
		s = append(s, o.GetKind()+" "+objectName(o))
	}
	return s
}

func TestRenderShape(t *testing.T) {
	in := shuttle(t)
	out, err := render.Render(in)
	if err != nil {
		t.Fatal(err)
	}
	t.Run("order", func(t *testing.T) {
		// CRDs from crds/ first, then Helm's InstallOrder; kinds Helm does
		// not know (RouteMap) last.
		want := []string{
			"CustomResourceDefinition routemaps.shuttle.misaki.io",
			"Secret fleet/shuttle-planner",
			"ConfigMap fleet/shuttle-api",
			"PersistentVolumeClaim fleet/shuttle-planner-maps",
			"Service fleet/shuttle-api",
			"Service fleet/shuttle-planner",
			"Deployment fleet/shuttle-api",
			"Deployment fleet/shuttle-planner",
			"CronJob fleet/shuttle-reports",
			"RouteMap shuttle-depots",
		}
		if diff := cmp.Diff(want, names(out.Objects)); diff != "" {
			t.Errorf("objects (-want +got):\n%s", diff)
		}
	})
	t.Run("hooks", func(t *testing.T) {
		// The pre-install Job is a hook; the test Pod is dropped.
		if diff := cmp.Diff([]string{"Job fleet/shuttle-migrate"}, names(out.Hooks)); diff != "" {
			t.Errorf("hooks (-want +got):\n%s", diff)
		}
	})
	t.Run("labels", func(t *testing.T) {
		for _, o := range append(out.Objects, out.Hooks...) {
			l := o.GetLabels()
			if l[render.LabelManagedBy] != "misaki" || l[render.LabelDeployment] != "shuttle" {
				t.Errorf("%s %s: labels %v", o.GetKind(), o.GetName(), l)
			}
		}
	})
	t.Run("annotations kept", func(t *testing.T) {
		for _, o := range out.Objects {
			if o.GetName() == "shuttle-planner" && o.GetKind() == "Deployment" {
				want := map[string]string{"misaki.io/placement": "auto", "misaki.io/component": "planner"}
				if diff := cmp.Diff(want, o.GetAnnotations()); diff != "" {
					t.Errorf("annotations (-want +got):\n%s", diff)
				}
				return
			}
		}
		t.Error("no planner Deployment")
	})
	t.Run("notes", func(t *testing.T) {
		want := "Shuttle 1.4.0 is installed as shuttle in fleet.\n" +
			"The API answers at http://shuttle-api.fleet.svc\n" +
			"The route planner runs with placement \"auto\".\n"
		if diff := cmp.Diff(want, out.Notes); diff != "" {
			t.Errorf("notes (-want +got):\n%s", diff)
		}
	})
	t.Run("values", func(t *testing.T) {
		api, _ := out.Values["api"].(map[string]any)
		// values.yaml numbers load as float64 (sigs.k8s.io/yaml).
		if diff := cmp.Diff(float64(2), api["replicas"]); diff != "" {
			t.Errorf("Values.api.replicas, the chart's default (-want +got):\n%s", diff)
		}
	})
	t.Run("deterministic", func(t *testing.T) {
		again, err := render.Render(in)
		if err != nil {
			t.Fatal(err)
		}
		if diff := cmp.Diff(out, again); diff != "" {
			t.Errorf("second render differs (-first +second):\n%s", diff)
		}
	})
	t.Run("default namespace", func(t *testing.T) {
		in := in
		in.Namespace = ""
		out, err := render.Render(in)
		if err != nil {
			t.Fatal(err)
		}
		for _, o := range out.Objects {
			if o.GetKind() == "Deployment" && o.GetNamespace() != render.DefaultNamespace {
				t.Errorf("%s namespace %q, want %q", o.GetName(), o.GetNamespace(), render.DefaultNamespace)
			}
		}
	})
}

// TestLayers checks Helm's merge semantics for several value layers
// through Output.Values.
func TestLayers(t *testing.T) {
	base := shuttle(t)
	tests := []struct {
		name   string
		layers []map[string]any
		path   []string
		want   any // nil: the key is absent
	}{
		{name: "chart default", path: []string{"api", "config", "region"}, want: "eu-west"},
		{
			name:   "later layer wins",
			layers: []map[string]any{{"api": map[string]any{"port": 9000}}, {"api": map[string]any{"port": 9001}}},
			path:   []string{"api", "port"}, want: 9001,
		},
		{
			name: "maps merge key by key",
			layers: []map[string]any{
				{"api": map[string]any{"config": map[string]any{"region": "us-east"}}},
				{"api": map[string]any{"config": map[string]any{"logLevel": "warn"}}},
			},
			path: []string{"api", "config", "region"}, want: "us-east",
		},
		{
			name:   "null deletes a chart default",
			layers: []map[string]any{{"reports": map[string]any{"timeZone": nil}}},
			path:   []string{"reports", "timeZone"}, want: nil,
		},
		{
			name: "null in a later layer deletes an earlier layer's value",
			layers: []map[string]any{
				{"planner": map[string]any{"storage": map[string]any{"storageClassName": "fast"}}},
				{"planner": map[string]any{"storage": map[string]any{"storageClassName": nil}}},
			},
			path: []string{"planner", "storage", "storageClassName"}, want: nil,
		},
		{
			name: "a later layer sets back what an earlier one deleted",
			layers: []map[string]any{
				{"reports": map[string]any{"timeZone": nil}},
				{"reports": map[string]any{"timeZone": "Europe/Oslo"}},
			},
			path: []string{"reports", "timeZone"}, want: "Europe/Oslo",
		},
		{
			name:   "a list is replaced, not merged",
			layers: []map[string]any{{"extra": []any{"a", "b"}}, {"extra": []any{"c"}}},
			path:   []string{"extra"}, want: []any{"c"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			in := base
			in.Layers = tt.layers
			before := fmt.Sprint(tt.layers)
			out, err := render.Render(in)
			if err != nil {
				t.Fatal(err)
			}
			got, found, err := unstructured.NestedFieldNoCopy(out.Values, tt.path...)
			if err != nil {
				t.Fatal(err)
			}
			if tt.want == nil {
				if found {
					t.Errorf("%v = %#v, want no key", tt.path, got)
				}
			} else if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("%v (-want +got):\n%s", tt.path, diff)
			}
			if after := fmt.Sprint(tt.layers); after != before {
				t.Errorf("Render changed the layers: %s, was %s", after, before)
			}
		})
	}
}

// TestCapabilities checks what Facts do to .Capabilities.
func TestCapabilities(t *testing.T) {
	in := shuttle(t)
	has := func(t *testing.T, facts hubv1.Facts, kind string) bool {
		t.Helper()
		in := in
		in.Facts = facts
		out, err := render.Render(in)
		if err != nil {
			t.Fatal(err)
		}
		for _, o := range out.Objects {
			if o.GetKind() == kind {
				return true
			}
		}
		return false
	}
	timeZone := func(t *testing.T, facts hubv1.Facts) bool {
		t.Helper()
		in := in
		in.Facts = facts
		out, err := render.Render(in)
		if err != nil {
			t.Fatal(err)
		}
		for _, o := range out.Objects {
			if o.GetKind() == "CronJob" {
				_, found, _ := unstructured.NestedString(o.Object, "spec", "timeZone")
				return found
			}
		}
		t.Fatal("no CronJob")
		return false
	}
	t.Run("kube version flips semverCompare", func(t *testing.T) {
		for v, want := range map[string]bool{"v1.26.15": false, "v1.27.0": true, "1.37.2": true, "v1.37.2-k3s1": true} {
			if got := timeZone(t, hubv1.Facts{KubernetesVersion: v}); got != want {
				t.Errorf("%s: timeZone rendered %v, want %v", v, got, want)
			}
		}
	})
	t.Run("empty kube version is the SDK's default", func(t *testing.T) {
		def := common.DefaultCapabilities.KubeVersion.Version
		a, b := in, in
		a.Facts = hubv1.Facts{}
		b.Facts = hubv1.Facts{KubernetesVersion: def}
		outA, err := render.Render(a)
		if err != nil {
			t.Fatal(err)
		}
		outB, err := render.Render(b)
		if err != nil {
			t.Fatal(err)
		}
		if diff := cmp.Diff(outB, outA); diff != "" {
			t.Errorf("empty version differs from %s (-explicit +empty):\n%s", def, diff)
		}
	})
	t.Run("API versions add to the defaults", func(t *testing.T) {
		if has(t, hubv1.Facts{KubernetesVersion: kube}, "ServiceMonitor") {
			t.Error("ServiceMonitor without monitoring.coreos.com/v1")
		}
		if !has(t, hubv1.Facts{KubernetesVersion: kube, APIVersions: []string{"monitoring.coreos.com/v1"}}, "ServiceMonitor") {
			t.Error("no ServiceMonitor with monitoring.coreos.com/v1")
		}
	})
}

func TestScopes(t *testing.T) {
	dir := chartDir(t, map[string]string{
		"crds/widgets.yaml": crd("widgets", "Widget", "Namespaced") + "---\n" + crd("gizmos", "Gizmo", "Cluster"),
		"templates/objects.yaml": `
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata: {name: reader}
---
apiVersion: v1
kind: ConfigMap
metadata: {name: elsewhere, namespace: other}
---
apiVersion: example.misaki.io/v1
kind: Widget
metadata: {name: w}
---
apiVersion: example.misaki.io/v1
kind: Gizmo
metadata: {name: g}
---
apiVersion: unknown.example/v1
kind: Thing
metadata: {name: t}
---
# a document with only a comment is skipped
`,
	})
	data, digest := rendertest.ChartArchive(t, dir)
	out, err := render.Render(render.Input{Chart: data, Digest: digest, Release: "demo", Namespace: "fleet", Facts: hubv1.Facts{KubernetesVersion: kube}})
	if err != nil {
		t.Fatal(err)
	}
	want := []string{
		"CustomResourceDefinition widgets.example.misaki.io",
		"CustomResourceDefinition gizmos.example.misaki.io",
		"ConfigMap other/elsewhere",
		"ClusterRole reader",
		"Gizmo g",
		"Thing fleet/t",
		"Widget fleet/w",
	}
	if diff := cmp.Diff(want, names(out.Objects)); diff != "" {
		t.Errorf("objects (-want +got):\n%s", diff)
	}
}

// TestDependencies checks a subchart: its condition enables or disables it
// (with its crds/), its values come from the parent's key, and its own
// values.schema.json applies.
func TestDependencies(t *testing.T) {
	dir := chartDir(t, map[string]string{
		"Chart.yaml": `apiVersion: v2
name: demo
version: 0.1.0
dependencies:
  - name: telemetry
    version: 0.2.0
    condition: telemetry.enabled
`,
		"values.yaml":                         "telemetry:\n  enabled: false\n",
		"charts/telemetry/Chart.yaml":         "apiVersion: v2\nname: telemetry\nversion: 0.2.0\n",
		"charts/telemetry/values.yaml":        "sampleRate: 10\n",
		"charts/telemetry/values.schema.json": `{"properties": {"sampleRate": {"type": "integer", "maximum": 100}}}`,
		"charts/telemetry/crds/probes.yaml":   crd("probes", "Probe", "Namespaced"),
		"charts/telemetry/templates/cm.yaml": `apiVersion: v1
kind: ConfigMap
metadata:
  name: {{ .Release.Name }}-telemetry
data:
  sampleRate: {{ .Values.sampleRate | quote }}
`,
	})
	data, digest := rendertest.ChartArchive(t, dir)
	base := render.Input{Chart: data, Digest: digest, Release: "demo", Facts: hubv1.Facts{KubernetesVersion: kube}}
	tests := []struct {
		name    string
		layers  []map[string]any
		want    []string
		wantErr string
	}{
		{name: "disabled by default"},
		{
			name:   "enabled by a layer",
			layers: []map[string]any{{"telemetry": map[string]any{"enabled": true, "sampleRate": 50}}},
			want:   []string{"CustomResourceDefinition probes.example.misaki.io", "ConfigMap default/demo-telemetry"},
		},
		{
			name:    "subchart schema",
			layers:  []map[string]any{{"telemetry": map[string]any{"enabled": true, "sampleRate": 500}}},
			wantErr: "/sampleRate",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			in := base
			in.Layers = tt.layers
			out, err := render.Render(in)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) || !strings.Contains(err.Error(), "telemetry") {
					t.Fatalf("error %v, want one naming telemetry and %s", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(tt.want, names(out.Objects)); diff != "" {
				t.Errorf("objects (-want +got):\n%s", diff)
			}
		})
	}
	t.Run("sampleRate from the parent's key", func(t *testing.T) {
		in := base
		in.Layers = []map[string]any{{"telemetry": map[string]any{"enabled": true, "sampleRate": 50}}}
		out, err := render.Render(in)
		if err != nil {
			t.Fatal(err)
		}
		got, _, _ := unstructured.NestedString(out.Objects[1].Object, "data", "sampleRate")
		if got != "50" {
			t.Errorf("sampleRate %q, want 50", got)
		}
	})
}

func TestErrors(t *testing.T) {
	good := shuttle(t)
	chartWith := func(t *testing.T, file, content string) render.Input {
		data, digest := rendertest.ChartArchive(t, chartDir(t, map[string]string{file: content}))
		return render.Input{Chart: data, Digest: digest, Release: "demo", Facts: hubv1.Facts{KubernetesVersion: kube}}
	}
	tests := []struct {
		name string
		in   func(t *testing.T) render.Input
		want []string // substrings of the error
	}{
		{
			name: "schema: wrong type",
			in: func(t *testing.T) render.Input {
				in := good
				in.Layers = []map[string]any{{"api": map[string]any{"replicas": "three"}}}
				return in
			},
			want: []string{"schema", "shuttle", "/api/replicas"},
		},
		{
			name: "schema: not in enum, in a later layer",
			in: func(t *testing.T) render.Input {
				in := good
				in.Layers = []map[string]any{{}, {"planner": map[string]any{"placement": "moon"}}}
				return in
			},
			want: []string{"/planner/placement"},
		},
		{
			name: "schema: a null deletes a required key",
			in: func(t *testing.T) render.Input {
				in := good
				in.Layers = []map[string]any{{"reports": map[string]any{"schedule": nil}}}
				return in
			},
			want: []string{"/reports", "schedule"},
		},
		{
			name: "schema: remote $ref is not fetched",
			in: func(t *testing.T) render.Input {
				return chartWith(t, "values.schema.json", `{"$ref": "https://schemas.example.invalid/values.json"}`)
			},
			want: []string{"https://schemas.example.invalid/values.json", "does not fetch"},
		},
		{
			name: "schema: file $ref is not read",
			in: func(t *testing.T) render.Input {
				return chartWith(t, "values.schema.json", `{"properties": {"a": {"$ref": "file:///etc/hostname"}}}`)
			},
			want: []string{"file:///etc/hostname", "does not fetch"},
		},
		{
			name: "template fails",
			in: func(t *testing.T) render.Input {
				return chartWith(t, "templates/broken.yaml", `{{ fail "the planner needs a maps token" }}`)
			},
			want: []string{"templates/broken.yaml", "the planner needs a maps token"},
		},
		{
			name: "template does not parse",
			in: func(t *testing.T) render.Input {
				return chartWith(t, "templates/broken.yaml", "kind: ConfigMap\n{{ if }}\n")
			},
			want: []string{"templates/broken.yaml"},
		},
		{
			name: "required value missing",
			in: func(t *testing.T) render.Input {
				return chartWith(t, "templates/cm.yaml", "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {{ required \"name is required\" .Values.name }}\n")
			},
			want: []string{"templates/cm.yaml", "name is required"},
		},
		{
			name: "YAML does not parse",
			in: func(t *testing.T) render.Input {
				return chartWith(t, "templates/cm.yaml", "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: x\ndata: [unclosed\n")
			},
			want: []string{"templates/cm.yaml", "YAML"},
		},
		{
			name: "document is not a mapping",
			in: func(t *testing.T) render.Input {
				return chartWith(t, "templates/cm.yaml", "- apiVersion: v1\n  kind: ConfigMap\n")
			},
			want: []string{"templates/cm.yaml"},
		},
		{
			name: "no apiVersion",
			in: func(t *testing.T) render.Input {
				return chartWith(t, "templates/cm.yaml", "kind: ConfigMap\nmetadata:\n  name: x\n")
			},
			want: []string{"templates/cm.yaml", `ConfigMap "x"`, "apiVersion"},
		},
		{
			name: "no kind",
			in: func(t *testing.T) render.Input {
				return chartWith(t, "templates/cm.yaml", "apiVersion: v1\nmetadata:\n  name: x\n")
			},
			want: []string{"templates/cm.yaml", "kind"},
		},
		{
			name: "no metadata.name",
			in: func(t *testing.T) render.Input {
				return chartWith(t, "templates/cm.yaml", "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  labels: {a: b}\n")
			},
			want: []string{"templates/cm.yaml", "a ConfigMap", "metadata.name"},
		},
		{
			name: "CRD without a name",
			in: func(t *testing.T) render.Input {
				return chartWith(t, "crds/bad.yaml", "apiVersion: apiextensions.k8s.io/v1\nkind: CustomResourceDefinition\n")
			},
			want: []string{"crds/bad.yaml", "metadata.name"},
		},
		{
			name: "two objects with one name",
			in: func(t *testing.T) render.Input {
				cm := "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: x\n"
				return chartWith(t, "templates/cm.yaml", cm+"---\n"+cm)
			},
			want: []string{"two objects", "ConfigMap", "/x"},
		},
		{
			name: "bad kube version",
			in: func(t *testing.T) render.Input {
				in := good
				in.Facts.KubernetesVersion = "one.thirty-seven"
				return in
			},
			want: []string{"Facts.KubernetesVersion", "one.thirty-seven"},
		},
		{
			name: "kube version below the chart's kubeVersion",
			in: func(t *testing.T) render.Input {
				in := good
				in.Facts.KubernetesVersion = "v1.19.16"
				return in
			},
			want: []string{"kubeVersion", ">=1.20.0-0", "v1.19.16"},
		},
		{
			name: "bad release name",
			in: func(t *testing.T) render.Input {
				in := good
				in.Release = "Shuttle_1"
				return in
			},
			want: []string{"Input.Release", "Shuttle_1"},
		},
		{
			name: "bad namespace",
			in: func(t *testing.T) render.Input {
				in := good
				in.Namespace = "Fleet"
				return in
			},
			want: []string{"Input.Namespace", "Fleet"},
		},
		{
			name: "digest does not match",
			in: func(t *testing.T) render.Input {
				in := good
				in.Digest = render.Digest([]byte("other bytes"))
				return in
			},
			want: []string{"Input.Digest", good.Digest},
		},
		{
			name: "library chart",
			in: func(t *testing.T) render.Input {
				return chartWith(t, "Chart.yaml", "apiVersion: v2\nname: demo\nversion: 0.1.0\ntype: library\n")
			},
			want: []string{"library chart"},
		},
		{
			name: "dependency missing from charts/",
			in: func(t *testing.T) render.Input {
				return chartWith(t, "Chart.yaml", "apiVersion: v2\nname: demo\nversion: 0.1.0\ndependencies:\n  - name: redis\n    version: 1.0.0\n")
			},
			want: []string{"redis", "missing from charts/"},
		},
		{
			name: "not a chart archive",
			in: func(t *testing.T) render.Input {
				in := good
				in.Chart, in.Digest = []byte("not a tgz"), ""
				return in
			},
			want: []string{"load chart archive"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			out, err := render.Render(tt.in(t))
			if err == nil {
				t.Fatalf("Render succeeded with %d objects, want an error", len(out.Objects))
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not contain %q", err, w)
				}
			}
		})
	}
}

// chartDir writes a minimal chart ("demo") with files added or replaced,
// and returns its directory.
func chartDir(t *testing.T, files map[string]string) string {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "demo")
	all := map[string]string{
		"Chart.yaml":  "apiVersion: v2\nname: demo\nversion: 0.1.0\n",
		"values.yaml": "name: \"\"\n",
	}
	for k, v := range files {
		all[k] = v
	}
	for name, content := range all {
		p := filepath.Join(dir, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

func crd(plural, kind, scope string) string {
	return fmt.Sprintf(`apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata:
  name: %[1]s.example.misaki.io
spec:
  group: example.misaki.io
  names: {kind: %[2]s, plural: %[1]s}
  scope: %[3]s
  versions:
    - name: v1
      served: true
      storage: true
      schema: {openAPIV3Schema: {type: object, x-kubernetes-preserve-unknown-fields: true}}
`, plural, kind, scope)
}

func BenchmarkRender(b *testing.B) {
	in := shuttle(b)
	in.Layers = []map[string]any{{"api": map[string]any{"replicas": 3}}}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := render.Render(in); err != nil {
			b.Fatal(err)
		}
	}
}
