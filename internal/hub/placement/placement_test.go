package placement

import (
	"bytes"
	"crypto/sha256"
	"encoding/json"
	"flag"
	"os"
	"path/filepath"
	"testing"

	"github.com/google/go-cmp/cmp"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/yaml"

	hubv1 "github.com/misaki-io/misaki/api/hub/v1"
	"github.com/misaki-io/misaki/api/v1alpha1"
)

var update = flag.Bool("update", false, "rewrite the golden files")

// testGateway is the gateway URL of a case that does not set one.
const testGateway = "https://gateway.misaki.example:8443"

// input is testdata/<case>/input.yaml.
type input struct {
	Vehicle hubv1.Vehicle `json:"vehicle"`
	Options struct {
		// GatewayURL defaults to testGateway; "" means none.
		GatewayURL           *string               `json:"gatewayURL"`
		GatewayTLS           *v1alpha1.UpstreamTLS `json:"gatewayTLS"`
		RouteOffline         *v1alpha1.Offline     `json:"routeOffline"`
		CloudNamespacePrefix string                `json:"cloudNamespacePrefix"`
		ClusterDomain        string                `json:"clusterDomain"`
	} `json:"options"`
	Deployments []struct {
		Deployment hubv1.Deployment  `json:"deployment"`
		Objects    []json.RawMessage `json:"objects"`
	} `json:"deployments"`
}

// output is testdata/<case>/golden.yaml.
type output struct {
	Error          string                     `json:"error,omitempty"`
	CloudNamespace string                     `json:"cloudNamespace,omitempty"`
	Placement      []hubv1.ComponentPlacement `json:"placement,omitempty"`
	Vehicle        []map[string]any           `json:"vehicle,omitempty"`
	Cloud          []map[string]any           `json:"cloud,omitempty"`
}

// load reads a case's input.
func load(t testing.TB, dir string) (hubv1.Vehicle, []DeploymentObjects, Options) {
	t.Helper()
	raw, err := os.ReadFile(filepath.Join(dir, "input.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	js, err := yaml.YAMLToJSON(raw)
	if err != nil {
		t.Fatalf("%s: %v", dir, err)
	}
	var in input
	dec := json.NewDecoder(bytes.NewReader(js))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&in); err != nil {
		t.Fatalf("%s: %v", dir, err)
	}
	opts := Options{GatewayURL: testGateway, GatewayTLS: in.Options.GatewayTLS, RouteOffline: in.Options.RouteOffline, ClusterDomain: in.Options.ClusterDomain}
	if in.Options.GatewayURL != nil {
		opts.GatewayURL = *in.Options.GatewayURL
	}
	if p := in.Options.CloudNamespacePrefix; p != "" {
		opts.CloudNamespace = func(id string) string { return p + id }
	}
	var deps []DeploymentObjects
	for _, d := range in.Deployments {
		do := DeploymentObjects{Deployment: d.Deployment}
		for _, o := range d.Objects {
			u := &unstructured.Unstructured{}
			if err := u.UnmarshalJSON(o); err != nil {
				t.Fatalf("%s: deployment %s: %v", dir, d.Deployment.Name, err)
			}
			do.Objects = append(do.Objects, u)
		}
		deps = append(deps, do)
	}
	return in.Vehicle, deps, opts
}

func cases(t *testing.T) []string {
	t.Helper()
	dirs, err := filepath.Glob("testdata/*/input.yaml")
	if err != nil || len(dirs) == 0 {
		t.Fatalf("no cases in testdata: %v", err)
	}
	for i, d := range dirs {
		dirs[i] = filepath.Dir(d)
	}
	return dirs
}

// TestGolden runs Place on every testdata/<case>/input.yaml and compares
// the placement table and both halves with golden.yaml.
func TestGolden(t *testing.T) {
	for _, dir := range cases(t) {
		t.Run(filepath.Base(dir), func(t *testing.T) {
			v, deps, opts := load(t, dir)
			var out output
			res, err := Place(v, deps, opts)
			if err != nil {
				out.Error = err.Error()
			} else {
				out.CloudNamespace = res.CloudNamespace
				out.Placement = res.Placement
				for _, u := range res.Vehicle {
					out.Vehicle = append(out.Vehicle, u.Object)
				}
				for _, u := range res.Cloud {
					out.Cloud = append(out.Cloud, u.Object)
				}
			}
			got, err := yaml.Marshal(out)
			if err != nil {
				t.Fatal(err)
			}
			golden := filepath.Join(dir, "golden.yaml")
			if *update {
				if err := os.WriteFile(golden, got, 0o644); err != nil {
					t.Fatal(err)
				}
			}
			want, err := os.ReadFile(golden)
			if err != nil {
				t.Fatalf("%v (go test -update writes it)", err)
			}
			if diff := cmp.Diff(string(want), string(got)); diff != "" {
				t.Errorf("%s differs (-want +got; go test -update to accept):\n%s", golden, diff)
			}
		})
	}
}

func hashObjects(t *testing.T, deps []DeploymentObjects) [][32]byte {
	t.Helper()
	var out [][32]byte
	for _, d := range deps {
		for _, u := range d.Objects {
			b, err := json.Marshal(u.Object) // map keys sorted: stable
			if err != nil {
				t.Fatal(err)
			}
			out = append(out, sha256.Sum256(b))
		}
	}
	return out
}

// TestInputsNotMutated checks that Place leaves its input objects alone,
// and that what it returns shares nothing with them: changing every
// returned object deep inside leaves the input's hashes as they were.
func TestInputsNotMutated(t *testing.T) {
	for _, dir := range cases(t) {
		t.Run(filepath.Base(dir), func(t *testing.T) {
			v, deps, opts := load(t, dir)
			before := hashObjects(t, deps)
			res, err := Place(v, deps, opts)
			if diff := cmp.Diff(before, hashObjects(t, deps)); diff != "" {
				t.Fatalf("Place changed its input (-before +after):\n%s", diff)
			}
			if err != nil {
				return
			}
			for _, u := range append(res.Vehicle, res.Cloud...) {
				scribble(u.Object)
			}
			if diff := cmp.Diff(before, hashObjects(t, deps)); diff != "" {
				t.Fatalf("changing Place's output changed its input (-before +after):\n%s", diff)
			}
			for _, d := range deps {
				cs, err := Components(d.Objects, d.Deployment.Namespace)
				if err != nil {
					t.Fatal(err)
				}
				for _, c := range cs {
					for _, u := range append(c.Workloads, c.Objects...) {
						scribble(u.Object)
					}
				}
			}
			if diff := cmp.Diff(before, hashObjects(t, deps)); diff != "" {
				t.Fatalf("changing Components' output changed its input (-before +after):\n%s", diff)
			}
		})
	}
}

// scribble changes every map and slice under m.
func scribble(m map[string]any) {
	for k, v := range m {
		switch v := v.(type) {
		case map[string]any:
			scribble(v)
		case []any:
			for i, e := range v {
				if em, ok := e.(map[string]any); ok {
					scribble(em)
				} else {
					v[i] = "scribbled"
				}
			}
		default:
			m[k] = "scribbled"
		}
	}
	m["scribbled"] = true
}
