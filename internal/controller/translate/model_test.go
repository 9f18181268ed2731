package translate

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	yamlv3 "go.yaml.in/yaml/v3"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/yaml"

	meshv1 "github.com/misaki-io/misaki/api/v1alpha1"
	"github.com/misaki-io/misaki/internal/proxy/config"
	"github.com/misaki-io/misaki/internal/proxy/xds"
)

// TestOneRouteModel: a route has one model whatever its source. For each
// accepted Route of an input (config/samples, one per shape of offline
// policy; testdata/routes.in.yaml, with matches, probe and TLS), the route
// of the proxy's file written by hand (testdata/<input>.proxy.yaml), the
// Route converted by proxyRoute, and the Route published over xDS and
// decoded as the proxy decodes it are deep-equal once the proxy's
// defaults are set. testdata/<input>.model.golden pins that model
// (go test -update rewrites it).
func TestOneRouteModel(t *testing.T) {
	for _, tc := range []struct {
		name string
		in   func(t *testing.T) Input
	}{
		{"samples", func(t *testing.T) Input { return Input{Namespace: "apps", Routes: readSamples(t)} }},
		{"routes", func(t *testing.T) Input { return readInput(t, "testdata/routes.in.yaml") }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			in := tc.in(t)
			b, err := os.ReadFile("testdata/" + tc.name + ".proxy.yaml")
			must(t, err)
			file, err := config.Parse(b)
			must(t, err)
			out := Namespace(in)
			byCRD := map[string]config.Route{}
			for _, r := range in.Routes {
				if out.Results[r.Name].Accepted != metav1.ConditionTrue {
					continue
				}
				pr, err := proxyRoute(in, r)
				must(t, err)
				c, err := validator.WithRoutes([]config.Route{pr})
				must(t, err)
				byCRD[r.Name] = c.Routes[0]
			}
			byXDS := decodeAsProxy(t, out)
			if len(file.Routes) != len(byCRD) || len(byXDS) != len(byCRD) {
				t.Fatalf("%d routes in the file, %d accepted Routes, %d over xDS", len(file.Routes), len(byCRD), len(byXDS))
			}
			for _, want := range file.Routes {
				if d := cmp.Diff(want, byCRD[want.Name]); d != "" {
					t.Errorf("%s: the Route's model (-file +Route):\n%s", want.Name, d)
				}
				if d := cmp.Diff(want, byXDS[want.Name]); d != "" {
					t.Errorf("%s: the model over xDS (-file +xDS):\n%s", want.Name, d)
				}
			}

			routes := slices.Clone(file.Routes)
			slices.SortFunc(routes, func(a, b config.Route) int { return strings.Compare(a.Name, b.Name) })
			got, err := yamlv3.Marshal(map[string][]config.Route{"routes": routes})
			must(t, err)
			checkGolden(t, "testdata/"+tc.name+".model.golden", got)
		})
	}
}

// decodeAsProxy decodes the published resources as the proxy does, from
// their bytes, and sets the defaults a proxy with the injected config
// sets; the routes by name.
func decodeAsProxy(t *testing.T, out Output) map[string]config.Route {
	t.Helper()
	decoded, _, err := xds.Decode(published(t, out))
	if err != nil {
		t.Fatalf("the proxy would NACK: %v", err)
	}
	c, err := validator.WithRoutes(decoded)
	must(t, err)
	byName := map[string]config.Route{}
	for _, r := range c.Routes {
		byName[r.Name] = r
	}
	return byName
}

// readSamples reads the Routes of config/samples.
func readSamples(t *testing.T) []meshv1.Route {
	t.Helper()
	files, err := filepath.Glob("../../../config/samples/*.yaml")
	must(t, err)
	var routes []meshv1.Route
	for _, f := range files {
		if filepath.Base(f) == "kustomization.yaml" {
			continue
		}
		b, err := os.ReadFile(f)
		must(t, err)
		var r meshv1.Route
		if err := yaml.UnmarshalStrict(b, &r); err != nil {
			t.Fatalf("%s: %v", f, err)
		}
		routes = append(routes, r)
	}
	if len(routes) < 11 {
		t.Fatalf("%d samples, want the 11 shapes", len(routes))
	}
	return routes
}
