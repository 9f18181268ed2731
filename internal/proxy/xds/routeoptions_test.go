package xds

import (
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
	"go.yaml.in/yaml/v3"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/misaki-io/misaki/internal/proxy/config"
)

// optionRoutes set every field the options carry, and some they do not.
var optionRoutes = []config.Route{
	{Name: "plain", Hosts: []string{"plain.mesh"}, Upstream: "http://10.0.0.1:80"},
	{
		Name: "telemetry", Hosts: []string{"telemetry.mesh"}, Upstream: "https://gw.example.com:8443",
		Matches:      []config.Match{{PathPrefix: "/v1"}},
		TLS:          config.UpstreamTLS{CAFile: "/ca.pem", ServerName: "gw", CertFile: "/tls.crt", KeyFile: "/tls.key"},
		Timeouts:     config.Timeouts{Connect: config.Duration(2 * time.Second), ResponseHeader: config.Duration(30 * time.Second), Request: config.Duration(2 * time.Minute), Idle: config.Duration(90 * time.Second)},
		MaxBodyBytes: 8 << 20, MaxUpstreamConnections: 64,
		Probe: config.Probe{Type: config.ProbeHTTP, Path: "/healthz", Interval: config.Duration(5 * time.Second), Timeout: config.Duration(time.Second),
			Backoff: config.Backoff{Initial: config.Duration(250 * time.Millisecond), Max: config.Duration(3 * time.Second)}},
		Offline: config.Offline{
			Hold: config.Duration(30 * time.Second), Links: []string{"wifi", "ethernet"}, Metered: config.Deny, Roaming: config.Allow,
			HoldLimit: config.HoldLimit{Requests: 200, Bytes: 4 << 20}, RetryAfter: config.Duration(15 * time.Second), Spool: true,
			UnsafeMethods: []string{"DELETE", "PATCH"}, TTL: config.Duration(48 * time.Hour), Priority: -100,
			Quota: config.SpoolQuota{Bytes: 10e6, Requests: 50000}, Eviction: config.EvictDropOldest, Batch: 64,
			Budget: config.Budget{Daily: 50 << 20, Monthly: 1 << 30}, GRPC: config.GRPCSpool,
		},
	},
}

// withoutEnvoyFields is r less what the options leave to Envoy's fields.
func withoutEnvoyFields(r config.Route) config.Route {
	r.Name, r.Hosts, r.Matches = "", nil, nil
	r.Timeouts.Connect, r.Timeouts.Request = 0, 0
	return r
}

// What RouteOptions writes, decodeRouteOptions reads back; and a proxy
// from before the options went through the YAML tree (which decoded the
// Struct's JSON as a route) reads the same.
func TestRouteOptionsRoundTrip(t *testing.T) {
	for _, r := range optionRoutes {
		t.Run(r.Name, func(t *testing.T) {
			s, err := RouteOptions(r)
			if err != nil {
				t.Fatal(err)
			}
			got, err := decodeRouteOptions(s)
			if err != nil {
				t.Fatal(err)
			}
			want := withoutEnvoyFields(r)
			if d := cmp.Diff(want, got); d != "" {
				t.Errorf("decoded (-want +got):\n%s", d)
			}
			js, err := json.Marshal(s.AsMap())
			if err != nil {
				t.Fatal(err)
			}
			var doc yaml.Node
			if err := yaml.Unmarshal(js, &doc); err != nil {
				t.Fatal(err)
			}
			old, err := config.DecodeRouteNode(&doc)
			if err != nil {
				t.Fatalf("a proxy of the JSON way refuses %s: %v", js, err)
			}
			if d := cmp.Diff(want, old); d != "" {
				t.Errorf("decoded the JSON way (-want +got):\n%s", d)
			}
		})
	}
}

// The options as written: only the fields the route sets, durations and
// sizes as strings, and the field names of the proxy's file.
func TestRouteOptionsWireForm(t *testing.T) {
	s, err := RouteOptions(optionRoutes[1])
	if err != nil {
		t.Fatal(err)
	}
	got, err := protojson.Marshal(s)
	if err != nil {
		t.Fatal(err)
	}
	const want = `{"maxBodyBytes":"8MiB","maxUpstreamConnections":64,` +
		`"offline":{"batch":64,"budget":{"daily":"50MiB","monthly":"1GiB"},"eviction":"drop-oldest","grpc":"spool","hold":"30s",` +
		`"holdLimit":{"bytes":"4MiB","requests":200},"links":["wifi","ethernet"],"metered":"deny","priority":-100,` +
		`"quota":{"bytes":"10000000","requests":50000},"retryAfter":"15s","roaming":"allow","spool":true,"ttl":"48h",` +
		`"unsafeMethods":["DELETE","PATCH"]},` +
		`"probe":{"backoff":{"initial":"250ms","max":"3s"},"interval":"5s","path":"/healthz","timeout":"1s","type":"http"},` +
		`"timeouts":{"idle":"1m30s","responseHeader":"30s"},` +
		`"tls":{"caFile":"/ca.pem","certFile":"/tls.crt","keyFile":"/tls.key","serverName":"gw"},` +
		`"upstream":"https://gw.example.com:8443"}`
	var a, b any
	if err := json.Unmarshal(got, &a); err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal([]byte(want), &b); err != nil {
		t.Fatal(err)
	}
	if d := cmp.Diff(b, a); d != "" {
		t.Errorf("options (-want +got):\n%s", d)
	}
}

// The options as controllers wrote them before they went through the
// route model: the Route object's own strings ("2m", "64MiB") and JSON
// numbers.
func TestRouteOptionsFromEarlierControllers(t *testing.T) {
	s := &structpb.Struct{}
	const earlier = `{"upstream":"https://gateway.example.com:8443","maxBodyBytes":"8MiB","maxUpstreamConnections":64,` +
		`"tls":{"caFile":"/etc/misaki/ca.pem"},"probe":{"type":"http","path":"/healthz","interval":"5s"},` +
		`"timeouts":{"responseHeader":"30s"},` +
		`"offline":{"hold":"5s","spool":true,"batch":64,"ttl":"48h","priority":5,"budget":{"daily":"50MiB","monthly":"1GiB"},` +
		`"quota":{"bytes":"64MiB","requests":10000},"links":["wifi","ethernet"],"unsafeMethods":["DELETE"]}}`
	if err := protojson.Unmarshal([]byte(earlier), s); err != nil {
		t.Fatal(err)
	}
	got, err := decodeRouteOptions(s)
	if err != nil {
		t.Fatal(err)
	}
	want := config.Route{
		Upstream: "https://gateway.example.com:8443", MaxBodyBytes: 8 << 20, MaxUpstreamConnections: 64,
		TLS:      config.UpstreamTLS{CAFile: "/etc/misaki/ca.pem"},
		Probe:    config.Probe{Type: config.ProbeHTTP, Path: "/healthz", Interval: config.Duration(5 * time.Second)},
		Timeouts: config.Timeouts{ResponseHeader: config.Duration(30 * time.Second)},
		Offline: config.Offline{Hold: config.Duration(5 * time.Second), Spool: true, Batch: 64, TTL: config.Duration(48 * time.Hour), Priority: 5,
			Budget: config.Budget{Daily: 50 << 20, Monthly: 1 << 30}, Quota: config.SpoolQuota{Bytes: 64 << 20, Requests: 10000},
			Links: []string{"wifi", "ethernet"}, UnsafeMethods: []string{"DELETE"}},
	}
	if d := cmp.Diff(want, got); d != "" {
		t.Errorf("decoded (-want +got):\n%s", d)
	}
}

// Options are read as strictly as the proxy's file.
func TestRouteOptionsStrict(t *testing.T) {
	for _, tc := range []struct{ json, want string }{
		{`{"upstream":"http://x:1","offline":{"hodl":"3s"}}`, `offline.hodl: unknown field`},
		{`{"upstream":"http://x:1","offline":{"priority":"5"}}`, "cannot unmarshal !!str `5` into int"},
		{`{"upstream":"http://x:1","offline":{"hold":30}}`, `"30" has no unit`},
		{`{"upstream":"http://x:1","offline":{"links":"wifi"}}`, "offline.links: want a list"},
	} {
		s := &structpb.Struct{}
		if err := protojson.Unmarshal([]byte(tc.json), s); err != nil {
			t.Fatal(err)
		}
		if _, err := decodeRouteOptions(s); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: %v, want %q", tc.json, err, tc.want)
		}
	}
}

// FuzzRouteOptions: no options make the decoder panic, and what it
// accepts is written back and read again unchanged.
func FuzzRouteOptions(f *testing.F) {
	for _, r := range optionRoutes {
		s, err := RouteOptions(r)
		if err != nil {
			f.Fatal(err)
		}
		b, err := protojson.Marshal(s)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Add([]byte(`{"upstream":"http://x:1","offline":{"priority":1e300,"links":[null,true]}}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		s := &structpb.Struct{}
		if protojson.Unmarshal(b, s) != nil {
			return
		}
		r, err := decodeRouteOptions(s)
		if err != nil {
			return
		}
		r = withoutEnvoyFields(r)
		again, err := RouteOptions(r)
		if err != nil {
			t.Fatalf("decoded %s as %+v, which cannot be written: %v", b, r, err)
		}
		back, err := decodeRouteOptions(again)
		if err != nil {
			t.Fatalf("decoded %s as %+v, whose options are refused: %v", b, r, err)
		}
		if d := cmp.Diff(r, back, cmpopts.EquateEmpty()); d != "" {
			t.Fatalf("%s: written and read again (-first +again):\n%s", b, d)
		}
	})
}
