package translate

import (
	"bytes"
	"flag"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"github.com/google/go-cmp/cmp"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	"sigs.k8s.io/yaml"

	meshv1 "github.com/misaki-io/misaki/api/v1alpha1"
	"github.com/misaki-io/misaki/internal/proxy/config"
	"github.com/misaki-io/misaki/internal/proxy/xds"
)

var update = flag.Bool("update", false, "rewrite the golden files")

// readInput reads a multi-document YAML file of Routes, Services and
// EndpointSlices.
func readInput(t *testing.T, path string) Input {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	in := Input{Namespace: "apps"}
	for _, doc := range strings.Split(string(b), "\n---\n") {
		var meta struct{ Kind string }
		if err := yaml.Unmarshal([]byte(doc), &meta); err != nil {
			t.Fatal(err)
		}
		switch meta.Kind {
		case "Route":
			var r meshv1.Route
			must(t, yaml.UnmarshalStrict([]byte(doc), &r))
			in.Routes = append(in.Routes, r)
		case "Service":
			var s corev1.Service
			must(t, yaml.UnmarshalStrict([]byte(doc), &s))
			in.Services = append(in.Services, s)
		case "EndpointSlice":
			var s discoveryv1.EndpointSlice
			must(t, yaml.UnmarshalStrict([]byte(doc), &s))
			in.Slices = append(in.Slices, s)
		case "":
		default:
			t.Fatalf("%s: unexpected kind %q", path, meta.Kind)
		}
	}
	return in
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

// published is out's resources as the proxy receives them: each packed in
// an Any, by type URL.
func published(t *testing.T, out Output) map[string][]*anypb.Any {
	t.Helper()
	byType := map[string][]*anypb.Any{}
	for typ, rs := range out.Resources {
		for _, r := range rs {
			a, err := anypb.New(r.(proto.Message))
			must(t, err)
			byType[typ] = append(byType[typ], a)
		}
	}
	return byType
}

// checkGolden compares got with the golden file (rewritten with -update).
func checkGolden(t *testing.T, golden string, got []byte) {
	t.Helper()
	if *update {
		must(t, os.WriteFile(golden, got, 0o644))
	}
	want, err := os.ReadFile(golden)
	must(t, err)
	if d := cmp.Diff(string(want), string(got)); d != "" {
		t.Errorf("%s differs (-want +got; go test -update to accept):\n%s", golden, d)
	}
}

// render prints the output as stable JSON: resources by type, then results.
func render(t *testing.T, out Output) []byte {
	var buf bytes.Buffer
	for _, typ := range []resource.Type{resource.ListenerType, resource.RouteType, resource.ClusterType, resource.EndpointType} {
		buf.WriteString("# " + typ + "\n")
		for _, r := range out.Resources[typ] {
			b, err := protojson.MarshalOptions{Multiline: true, Indent: "  "}.Marshal(r)
			must(t, err)
			// protojson's spacing is deliberately unstable; normalise it.
			buf.Write(bytes.ReplaceAll(b, []byte(":  "), []byte(": ")))
			buf.WriteString("\n")
		}
	}
	buf.WriteString("# results\n")
	b, err := yaml.Marshal(out.Results)
	must(t, err)
	buf.Write(b)
	return buf.Bytes()
}

func TestGolden(t *testing.T) {
	files, _ := filepath.Glob("testdata/*.in.yaml")
	if len(files) == 0 {
		t.Fatal("no testdata")
	}
	for _, f := range files {
		name := strings.TrimSuffix(filepath.Base(f), ".in.yaml")
		t.Run(name, func(t *testing.T) {
			out := Namespace(readInput(t, f))
			checkGolden(t, strings.TrimSuffix(f, ".in.yaml")+".golden", render(t, out))
		})
	}
}

// TestProxyAcceptsWhatIsPublished decodes the published resources the way
// the proxy does (its own wire-compatible types, from the bytes) and checks
// the routes it would apply against the Routes.
func TestProxyAcceptsWhatIsPublished(t *testing.T) {
	out := Namespace(readInput(t, "testdata/routes.in.yaml"))
	routes, eps, err := xds.Decode(published(t, out))
	if err != nil {
		t.Fatalf("the proxy would NACK: %v", err)
	}
	byName := map[string]config.Route{}
	for _, r := range routes {
		byName[r.Name] = r
	}
	tel, ok := byName["telemetry"]
	if !ok {
		t.Fatalf("routes = %+v, want telemetry", routes)
	}
	want := config.Route{
		Name: "telemetry", Hosts: []string{"telemetry.mesh"}, Upstream: "http://telemetry.apps.svc:8080",
		Matches:  []config.Match{{PathPrefix: "/v1"}, {Path: "/health", Headers: []config.HeaderMatch{{Name: "x-probe", Value: "yes"}}}},
		Timeouts: config.Timeouts{Connect: config.Duration(2e9), ResponseHeader: config.Duration(30e9), Request: config.Duration(120e9)},
		Offline: config.Offline{Hold: config.Duration(30e9), Links: []string{"wifi", "ethernet"}, Metered: "deny", Spool: true,
			TTL: config.Duration(48 * 3600e9), Priority: 5, Eviction: "drop-oldest", Quota: config.SpoolQuota{Bytes: 64 << 20, Requests: 10000},
			UnsafeMethods: []string{"DELETE"}},
	}
	if diff := cmp.Diff(want, tel); diff != "" {
		t.Errorf("telemetry as the proxy reads it (-want +got):\n%s", diff)
	}
	if got := eps["telemetry"]; !cmp.Equal(got, []string{"10.1.0.5:9000", "10.1.0.6:9000", "10.1.1.9:9000"}) {
		t.Errorf("telemetry endpoints = %v, want the three ready ones of both slices", got)
	}
	if gw := byName["gateway"]; gw.Upstream != "https://gateway.example.com:8443" || gw.Offline.Batch != 64 {
		t.Errorf("gateway = %+v", gw)
	}
	if _, ok := byName["late"]; ok {
		t.Error("the Route with a taken host was published")
	}
	if r := out.Results["late"]; r.Reason != meshv1.ReasonHostConflict {
		t.Errorf("late: %+v, want HostConflict", r)
	}
}

// TestSameInputSameBytes: the controller versions a snapshot by hashing
// its resources' bytes, so the same input, in whatever order the cache
// lists it, must give the same bytes; otherwise every reconcile would push
// an unchanged config to every proxy.
func TestSameInputSameBytes(t *testing.T) {
	in := readInput(t, "testdata/routes.in.yaml")
	if len(in.Slices) < 2 {
		t.Fatal("the input needs two EndpointSlices or more")
	}
	marshal := func(out Output) []byte {
		var buf bytes.Buffer
		for _, typ := range []resource.Type{resource.ListenerType, resource.RouteType, resource.ClusterType, resource.EndpointType} {
			for _, r := range out.Resources[typ] {
				b, err := proto.MarshalOptions{Deterministic: true}.Marshal(r)
				must(t, err)
				buf.Write(b)
			}
		}
		return buf.Bytes()
	}
	want := marshal(Namespace(in))
	for i := range 20 {
		shuffled := in
		shuffled.Slices = slices.Clone(in.Slices)
		rand.Shuffle(len(shuffled.Slices), func(a, b int) { shuffled.Slices[a], shuffled.Slices[b] = shuffled.Slices[b], shuffled.Slices[a] })
		if got := marshal(Namespace(shuffled)); !bytes.Equal(got, want) {
			t.Fatalf("translation %d gave different bytes for the same input", i)
		}
	}
}

// A duration or size the API server lets through (its patterns do not
// bound them) but the proxy cannot hold makes the Route Invalid, naming
// the spec field.
func TestUnparsableValuesNameTheField(t *testing.T) {
	r := meshv1.Route{Spec: meshv1.RouteSpec{Hosts: []meshv1.Host{"a.mesh"}, Destination: meshv1.Destination{URL: "http://10.0.0.1:80"},
		Timeouts: &meshv1.Timeouts{Idle: "99999999999h"},
		Offline:  &meshv1.Offline{Quota: &meshv1.Limit{Bytes: "99999999999GiB"}}}}
	r.Name = "big"
	out := Namespace(Input{Namespace: "apps", Routes: []meshv1.Route{r}})
	res := out.Results["big"]
	for _, want := range []string{`spec.timeouts.idle: "99999999999h" is not a duration`, `spec.offline.quota.bytes: "99999999999GiB" is not a size`} {
		if res.Reason != meshv1.ReasonInvalid || !strings.Contains(res.Message, want) {
			t.Errorf("result %+v, want Invalid saying %q", res, want)
		}
	}
}
