package config

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

const example = `
listen: 127.0.0.1:15001      # apps' mesh traffic (HTTP/1.1 and h2c)
admin: 127.0.0.1:15000       # /healthz /readyz /metrics /v1/links /v1/routes
links:
  - {name: wlan,  match: "wlan*", class: wifi}
  - {name: modem, match: "wwan*", class: cellular, metered: true}
routes:
  - name: telemetry
    hosts: [telemetry.cloud.misaki]
    upstream: http://127.0.0.1:9000
    offline: {hold: 30s, links: [wifi, cellular, ethernet]}
`

func TestIssueExampleParsesWithDefaults(t *testing.T) {
	c, err := Parse([]byte(example))
	if err != nil {
		t.Fatal(err)
	}
	r := c.Routes[0]
	want := Route{
		Name: "telemetry", Hosts: []string{"telemetry.cloud.misaki"}, Upstream: "http://127.0.0.1:9000",
		MaxBodyBytes: DefaultMaxBodyBytes, MaxUpstreamConnections: DefaultUpstreamConns,
		Timeouts: Timeouts{Connect: Duration(DefaultConnectTimeout), ResponseHeader: Duration(DefaultResponseHeader),
			Idle: Duration(DefaultUpstreamIdle)},
		Probe: Probe{Type: ProbeTCP, Path: "/", Interval: Duration(DefaultProbeInterval), Timeout: Duration(DefaultProbeTimeout),
			Backoff: Backoff{Initial: Duration(DefaultBackoffInitial), Max: Duration(DefaultProbeBackoffMax)}},
		Offline: Offline{Hold: Duration(30 * time.Second), Links: []string{"wifi", "cellular", "ethernet"},
			Metered: Allow, Roaming: Allow, RetryAfter: Duration(30 * time.Second),
			TTL: Duration(DefaultSpoolTTL), Eviction: EvictReject, GRPC: GRPCUnavailable},
	}
	if d := cmp.Diff(want, r); d != "" {
		t.Errorf("route (-want +got):\n%s", d)
	}
	if c.HTTP1Server != HTTP1Lean {
		t.Errorf("http1Server %q, want the default %q", c.HTTP1Server, HTTP1Lean)
	}
	if c.HTTP1Upstream != HTTP1Lean {
		t.Errorf("http1Upstream %q, want the default %q", c.HTTP1Upstream, HTTP1Lean)
	}
	if c.Limits.MaxConnections != DefaultMaxConnections || c.HoldLimit.Requests != DefaultHoldRequests {
		t.Errorf("defaults not set: %+v %+v", c.Limits, c.HoldLimit)
	}
	if !c.Links[1].Metered || c.Links[1].Class != ClassCellular {
		t.Errorf("links: %+v", c.Links)
	}
}

func TestValidation(t *testing.T) {
	route := func(extra string) string {
		return "routes:\n  - name: r\n    hosts: [a.mesh]\n    upstream: http://127.0.0.1:1\n" + extra
	}
	vs := func(section string) string {
		return "role: gateway\ngateway: {tls: {certFile: c, keyFile: k, clientCAFile: ca}, idempotency: {dir: /x}, vehicleServices: " + section + "}\n"
	}
	tests := []struct {
		name string
		yaml string
		want []string // substrings of the error; empty means valid
	}{
		{"minimal", route(""), nil},
		{"empty file", "", []string{"empty"}},
		{"not a mapping", "- a\n- b\n", []string{"top level must be a mapping"}},
		{"two documents", route("") + "---\nlisten: x\n", []string{"more than one YAML document"}},
		{"unknown top-level field", "lsiten: 1.2.3.4:5\n", []string{`lsiten: unknown field (line 1); did you mean "listen"?`}},
		{"unknown nested field", route("    offline: {hodl: 3s}\n"), []string{`routes[0].offline.hodl: unknown field`, `did you mean "hold"?`}},
		{"unknown far field", "zzzzzz: 1\n", []string{"known fields here: role, listen, http1Server, http1Upstream, admin"}},
		{"bad listen", "listen: nope\n", []string{"listen:", "not host:port"}},
		{"stdlib HTTP/1.1 server", "http1Server: stdlib\n", nil},
		{"bad HTTP/1.1 server", "http1Server: nginx\n", []string{`http1Server: "nginx" is not an HTTP/1.1 server; use lean or stdlib`}},
		{"stdlib HTTP/1.1 upstream client", "http1Upstream: stdlib\n", nil},
		{"bad HTTP/1.1 upstream client", "http1Upstream: curl\n", []string{`http1Upstream: "curl" is not an HTTP/1.1 client; use lean or stdlib`}},
		{"same listen and admin", "listen: 127.0.0.1:1\nadmin: 127.0.0.1:1\n", []string{"admin: must differ from listen"}},
		{"bad log level", "log: {level: loud}\n", []string{"log.level"}},
		{"duration without unit", route("    offline: {hold: 30}\n"), []string{`"30" has no unit; write it like 30s`}},
		{"bad duration", route("    offline: {hold: soon}\n"), []string{"not a duration"}},
		{"bad size", "limits: {maxBodyBytes: lots}\n", []string{"not a size"}},
		{"probe backoff over the cap", route("    probe: {backoff: {max: 1m}}\n"), []string{"routes[0].probe.backoff.max: 1m0s is above the cap of 30s"}},
		{"probe backoff initial above the default max", route("    probe: {backoff: {initial: 5s}}\n"), nil},
		{"sizes with units", "limits: {maxBodyBytes: 16MiB, maxHeaderBytes: 8KB}\n", nil},
		{"list where mapping", "limits: [1]\n", []string{"limits: want a mapping"}},
		{"mapping where list", "routes: {a: 1}\n", []string{"routes: want a list"}},
		{"bad link name", "links: [{name: WLAN, class: wifi}]\n", []string{"links[0].name"}},
		{"duplicate link", "links: [{name: a, class: wifi}, {name: a, class: wifi}]\n", []string{"links[1].name", "unique"}},
		{"bad link class", "links: [{name: a, class: Wi-Fi}]\n", []string{"links[0].class"}},
		{"bad glob", "links: [{name: a, class: wifi, match: \"[\"}]\n", []string{"links[0].match", "glob"}},
		{"custom class", "links: [{name: a, class: v2x}]\n", nil},
		{"no hosts", "routes: [{name: r, upstream: http://x:1}]\n", []string{"routes[0].hosts: is empty"}},
		{"host with port", "routes: [{name: r, hosts: [\"a:80\"], upstream: http://x:1}]\n", []string{"routes[0].hosts[0]", "not a host name"}},
		{"wildcard host", "routes: [{name: r, hosts: [\"*.a.mesh\"], upstream: http://x:1}]\n", nil},
		{"duplicate host", "routes: [{name: r, hosts: [a], upstream: http://x:1}, {name: s, hosts: [A], upstream: http://x:1}]\n",
			[]string{"routes[1].hosts[0]", `already served by route "r"`}},
		{"duplicate route", "routes: [{name: r, hosts: [a], upstream: http://x:1}, {name: r, hosts: [b], upstream: http://x:1}]\n", []string{"routes[1].name"}},
		{"no upstream", "routes: [{name: r, hosts: [a]}]\n", []string{"routes[0].upstream: is empty"}},
		{"bad scheme", "routes: [{name: r, hosts: [a], upstream: \"ftp://x\"}]\n", []string{"scheme \"ftp\""}},
		{"upstream path", "routes: [{name: r, hosts: [a], upstream: \"http://x/p\"}]\n", []string{"paths, queries"}},
		{"h2c upstream", "routes: [{name: r, hosts: [a], upstream: \"h2c://x:1\"}]\n", nil},
		{"bad role", "role: cloud\n", []string{"role:", "edge or gateway"}},
		{"gateway without tls", "role: gateway\ngateway: {idempotency: {dir: /x}}\n", []string{"gateway.tls", "mutual TLS"}},
		{"gateway", "role: gateway\ngateway: {tls: {certFile: c, keyFile: k, clientCAFile: ca}, idempotency: {dir: /x, window: 48h}}\n", nil},
		{"vehicle services", vs("{clusterDomain: fleet.internal, namespace: \"car-{vehicle}\", upstream: \"http://{service}.{namespace}.svc.cloud.local:{port}/\", protocol: h2c, maxUpstreams: 10}"), nil},
		{"vehicle services, bad cluster domain", vs("{clusterDomain: \"cluster.local.\"}"), []string{"gateway.vehicleServices.clusterDomain", "not a DNS name"}},
		{"vehicle services, wildcard cluster domain", vs("{clusterDomain: \"*.local\"}"), []string{"gateway.vehicleServices.clusterDomain"}},
		{"vehicle services, unknown placeholder", vs("{upstream: \"http://{svc}.{namespace}:{port}\"}"), []string{"gateway.vehicleServices.upstream", "{svc} is not a placeholder here; use {service}, {namespace}, {clusterDomain}, {port}"}},
		{"vehicle services, open brace", vs("{upstream: \"http://{service.{namespace}\"}"), []string{"gateway.vehicleServices.upstream", "not a placeholder"}},
		{"vehicle services, unclosed brace", vs("{upstream: \"http://{service}.{namespace}:{port\"}"), []string{"gateway.vehicleServices.upstream", "not closed"}},
		{"vehicle services, stray brace", vs("{upstream: \"http://{service}.{namespace}}\"}"), []string{"gateway.vehicleServices.upstream", "closes no placeholder"}},
		{"vehicle services, upstream without namespace", vs("{upstream: \"http://{service}.shared:{port}\"}"), []string{"gateway.vehicleServices.upstream", "has no {namespace}"}},
		{"vehicle services, upstream without service", vs("{upstream: \"http://ingress.{namespace}:80\"}"), []string{"gateway.vehicleServices.upstream", "has no {service}"}},
		{"vehicle services, h2c scheme", vs("{upstream: \"h2c://{service}.{namespace}:{port}\"}"), []string{"gateway.vehicleServices.upstream", "write it with http://; gateway.vehicleServices.protocol chooses"}},
		{"vehicle services, upstream path", vs("{upstream: \"http://{service}.{namespace}:{port}/api\"}"), []string{"gateway.vehicleServices.upstream", "paths, queries"}},
		{"vehicle services, vehicle in upstream", vs("{upstream: \"http://{service}.{namespace}.{vehicle}\"}"), []string{"{vehicle} is not a placeholder here"}},
		{"vehicle services, namespace without vehicle", vs("{namespace: cloud}"), []string{"gateway.vehicleServices.namespace", "has no {vehicle}"}},
		{"vehicle services, namespace not a name", vs("{namespace: \"V_{vehicle}\"}"), []string{"gateway.vehicleServices.namespace", "does not make a namespace name"}},
		{"vehicle services, namespace placeholder", vs("{namespace: \"{namespace}-{vehicle}\"}"), []string{"gateway.vehicleServices.namespace", "{namespace} is not a placeholder here; use {vehicle}"}},
		{"vehicle services, bad protocol", vs("{protocol: grpc}"), []string{"gateway.vehicleServices.protocol", "auto, http or h2c"}},
		{"vehicle services, negative bound", vs("{maxUpstreams: -1}"), []string{"gateway.vehicleServices.maxUpstreams", "negative"}},
		{"vehicle services, negative timeout", vs("{timeouts: {idle: -1s}}"), []string{"gateway.vehicleServices.timeouts.idle", "negative"}},
		{"vehicle services, unknown field", vs("{namespaces: x}"), []string{"gateway.vehicleServices.namespaces: unknown field", `did you mean "namespace"?`}},
		{"spool without dir", route("    offline: {spool: true}\n"), []string{"routes[0].offline.spool", "spool.dir is not set"}},
		{"spooling route", "spool: {dir: /var/lib/misaki/spool, sync: interval, syncInterval: 50ms}\n" +
			route("    offline: {hold: 5s, spool: true, ttl: 24h, priority: 5, quota: {bytes: 64MiB, requests: 1000}, eviction: drop-oldest, unsafeMethods: [delete]}\n"), nil},
		{"bad sync", "spool: {sync: sometimes}\n", []string{"spool.sync", "always or interval"}},
		{"bad eviction", route("    offline: {eviction: newest}\n"), []string{"routes[0].offline.eviction", "reject or drop-oldest"}},
		{"gc percent", "limits: {gcPercent: 400}\n", nil},
		{"gc off without memory", "limits: {gcPercent: -1}\n", []string{"limits.gcPercent", "limits.memory is not set"}},
		{"gc off with memory", "limits: {gcPercent: -1, memory: 64MiB}\n", nil},
		{"gc percent too large", "limits: {gcPercent: 100000}\n", []string{"limits.gcPercent", "between 1 and 10000"}},
		{"batch too large", route("    offline: {spool: true, batch: 1000}\n"), []string{"routes[0].offline.batch", "between 0 and 256"}},
		{"bad unsafe method", route("    offline: {unsafeMethods: [\"GE T\"]}\n"), []string{"routes[0].offline.unsafeMethods[0]"}},
		{"replay backoff", "spool: {replay: {backoff: {initial: 10s, max: 1s}}}\n", []string{"spool.replay.backoff.max"}},
		{"tls on http", route("    tls: {caFile: /x}\n"), []string{"routes[0].tls", "https://"}},
		{"cert without key", "routes: [{name: r, hosts: [a], upstream: \"https://x\", tls: {certFile: c}}]\n", []string{"certFile and keyFile go together"}},
		{"negative timeout", route("    timeouts: {connect: -1s}\n"), []string{"routes[0].timeouts.connect: must not be negative"}},
		{"bad probe", route("    probe: {type: icmp}\n"), []string{"routes[0].probe.type"}},
		{"probe path", route("    probe: {type: http, path: health}\n"), []string{"routes[0].probe.path"}},
		{"backoff order", route("    probe: {backoff: {initial: 5s, max: 1s}}\n"), []string{"backoff.max"}},
		{"bad offline class", route("    offline: {links: [Wifi]}\n"), []string{"routes[0].offline.links[0]"}},
		{"bad metered", route("    offline: {metered: maybe}\n"), []string{"routes[0].offline.metered", "allow or deny"}},
		{"negative hold limit", route("    offline: {holdLimit: {requests: -1}}\n"), []string{"routes[0].offline.holdLimit"}},
		{"dns", "dns: {listen: 127.0.0.1:53, upstreams: [10.96.0.10, \"[fd00::a]:5353\"], zones: {cluster.local: [10.96.0.10]}}\n", nil},
		{"dns bad listen", "dns: {listen: nope}\n", []string{"dns.listen", "not host:port"}},
		{"dns on 0.0.0.0 without addresses", "listen: 0.0.0.0:15001\ndns: {listen: 0.0.0.0:53}\n", []string{"dns.addresses[0]", "set dns.addresses"}},
		{"dns on 0.0.0.0 with addresses", "listen: 0.0.0.0:15001\ndns: {listen: 0.0.0.0:53, addresses: [10.1.2.3]}\n", nil},
		{"dns bad upstream", "dns: {listen: 127.0.0.1:53, upstreams: [resolver.example]}\n", []string{"dns.upstreams[0]", "not an IP address"}},
		{"dns upstream is itself", "dns: {listen: 127.0.0.1:53, upstreams: [127.0.0.1]}\n", []string{"dns.upstreams[0]", "would loop"}},
		{"dns upstream is itself by its pod address", "listen: 0.0.0.0:15001\ndns: {listen: 0.0.0.0:53, addresses: [10.1.2.3], upstreams: [10.1.2.3]}\n", []string{"dns.upstreams[0]", "would loop"}},
		{"dns zone without resolvers", "dns: {listen: 127.0.0.1:53, zones: {cluster.local: []}}\n", []string{"dns.zones.cluster.local", "no resolvers"}},
		{"dns ttl order", "dns: {listen: 127.0.0.1:53, minTTL: 2h, maxTTL: 1h}\n", []string{"dns.minTTL"}},
		{"dns udp size", "dns: {listen: 127.0.0.1:53, udpSize: 100}\n", []string{"dns.udpSize"}},
		{"dns unknown field", "dns: {listen: 127.0.0.1:53, upstream: [1.1.1.1]}\n", []string{"dns.upstream: unknown field", `did you mean "upstreams"?`}},
		{"all errors at once", "listen: x\nadmin: y\n", []string{"listen:", "admin:"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Parse([]byte(tt.yaml))
			if len(tt.want) == 0 {
				if err != nil {
					t.Fatalf("unexpected error: %v", err)
				}
				return
			}
			if err == nil {
				t.Fatalf("no error, want one containing %q", tt.want)
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not contain %q", err, w)
				}
			}
		})
	}
}

func TestLoadNamesTheFile(t *testing.T) {
	p := filepath.Join(t.TempDir(), "proxy.yaml")
	if err := os.WriteFile(p, []byte("listen: nope\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := Load(p); err == nil || !strings.Contains(err.Error(), p) {
		t.Fatalf("error %v does not name %s", err, p)
	}
	if _, err := Load(filepath.Join(t.TempDir(), "missing.yaml")); err == nil {
		t.Fatal("missing file accepted")
	}
}

func TestParseByteSize(t *testing.T) {
	for in, want := range map[string]ByteSize{"0": 0, "1024": 1024, "64KiB": 64 << 10, "16MiB": 16 << 20, "1GiB": 1 << 30, "10MB": 10e6, "5 KB": 5000, "7B": 7} {
		got, err := ParseByteSize(in)
		if err != nil || got != want {
			t.Errorf("ParseByteSize(%q) = %d, %v; want %d", in, got, err, want)
		}
	}
	for _, in := range []string{"", "-1", "1.5MiB", "10XB", "99999999999999999999GiB"} {
		if _, err := ParseByteSize(in); err == nil {
			t.Errorf("ParseByteSize(%q) accepted", in)
		}
	}
}

// FuzzParse checks that no input makes the loader panic, and that whatever
// it accepts is valid and survives its own defaults again unchanged.
func FuzzParse(f *testing.F) {
	f.Add(example)
	f.Add("routes: [{name: r, hosts: [\"*.a\"], upstream: \"h2c://x:1\", offline: {hold: 1s, holdLimit: {bytes: 1KiB}}}]\n")
	f.Add("limits: {maxBodyBytes: 1KiB}\nlinks: [{name: a, class: wifi, match: \"w*\"}]\n")
	f.Add("a: &x [*x]\n")
	f.Add("routes:\n  - {}\n  - null\n")
	f.Add("role: gateway\ngateway: {tls: {certFile: c, keyFile: k, clientCAFile: ca}, idempotency: {dir: /x}, vehicleServices: {namespace: \"v-{vehicle}\", upstream: \"http://{service}.{namespace}:{port}\"}}\n")
	f.Fuzz(func(t *testing.T, in string) {
		c, err := Parse([]byte(in))
		if err != nil {
			return
		}
		if err := c.Validate(); err != nil {
			t.Fatalf("accepted config fails Validate: %v", err)
		}
		before := *c
		c.SetDefaults()
		if d := cmp.Diff(before, *c); d != "" {
			t.Fatalf("SetDefaults is not idempotent:\n%s", d)
		}
	})
}

func TestDNSDefaults(t *testing.T) {
	c, err := Parse([]byte("spool: {dir: /var/lib/misaki/spool}\ndns: {listen: 127.0.0.1:53}\n"))
	if err != nil {
		t.Fatal(err)
	}
	d := c.DNS
	if d.CacheFile != "/var/lib/misaki/spool/dns-cache" || len(d.Addresses) != 1 || d.Addresses[0] != "127.0.0.1" ||
		d.ResolvConf != "/etc/resolv.conf" || d.StaleAfter.D() != 1800*time.Millisecond || d.MaxStale.D() != 72*time.Hour || d.UDPSize != 1232 {
		t.Fatalf("defaults: %+v", d)
	}
	if c, _ := Parse([]byte("listen: 127.0.0.1:15001\n")); c.DNS.CacheFile != "" || c.DNS.Addresses != nil {
		t.Fatalf("defaults without dns.listen: %+v", c.DNS)
	}
}

func TestXDSTakesTheRoutes(t *testing.T) {
	base := "spool: {dir: /tmp/x}\nxds: {server: \"127.0.0.1:1\", node: a/b}\n"
	if _, err := Parse([]byte(base)); err != nil {
		t.Fatalf("xds without routes: %v", err)
	}
	_, err := Parse([]byte(base + "routes: [{name: a, hosts: [a.mesh], upstream: \"http://127.0.0.1:1\"}]\n"))
	if err == nil || !strings.Contains(err.Error(), "come from the controller") {
		t.Fatalf("xds with routes: %v, want the conflict named", err)
	}
	c, _ := Parse([]byte(base))
	if _, err := c.WithRoutes([]Route{{Name: "a", Hosts: []string{"a.mesh"}, Upstream: "http://127.0.0.1:1"}}); err != nil {
		t.Fatalf("routes applied from the controller: %v", err)
	}
}

// gateway.vehicleServices is on when present, even with nothing under it,
// and then takes every documented default; absent, it is off.
func TestVehicleServicesDefaults(t *testing.T) {
	const gw = "role: gateway\nlimits: {maxBodyBytes: 1MiB}\ngateway:\n  tls: {certFile: c, keyFile: k, clientCAFile: ca}\n  idempotency: {dir: /x}\n"
	want := &VehicleServices{
		ClusterDomain: "cluster.local", Namespace: "misaki-v-{vehicle}",
		Upstream: "http://{service}.{namespace}.svc.{clusterDomain}:{port}", Protocol: VehicleProtocolAuto,
		MaxUpstreams: 4096, MaxBodyBytes: 1 << 20, MaxUpstreamConnections: DefaultUpstreamConns,
		Timeouts: Timeouts{Connect: Duration(DefaultConnectTimeout), ResponseHeader: Duration(DefaultResponseHeader), Idle: Duration(DefaultUpstreamIdle)},
	}
	for _, tc := range []struct {
		name, yaml string
		want       *VehicleServices
	}{
		{"absent", gw, nil},
		{"empty mapping", gw + "  vehicleServices: {}\n", want},
		{"key alone", gw + "  vehicleServices:\n", want},
		{"null", gw + "  vehicleServices: null\n", want},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, err := Parse([]byte(tc.yaml))
			if err != nil {
				t.Fatal(err)
			}
			if d := cmp.Diff(tc.want, c.Gateway.VehicleServices); d != "" {
				t.Errorf("gateway.vehicleServices (-want +got):\n%s", d)
			}
			if tc.want == nil {
				return
			}
			// A copy with other routes does not share the section.
			n, err := c.WithRoutes(nil)
			if err != nil {
				t.Fatal(err)
			}
			if n.Gateway.VehicleServices == c.Gateway.VehicleServices || *n.Gateway.VehicleServices != *c.Gateway.VehicleServices {
				t.Errorf("WithRoutes: %p %+v, from %p %+v", n.Gateway.VehicleServices, n.Gateway.VehicleServices, c.Gateway.VehicleServices, c.Gateway.VehicleServices)
			}
		})
	}
}

// Overrides.Node is xds.node when the file names an xds.server and no
// node; Overrides.Role replaces role. Parse reads no environment.
func TestOverrides(t *testing.T) {
	const base = "spool: {dir: /tmp/x}\n"
	for _, tc := range []struct {
		name, yaml string
		o          Overrides
		node, role string
	}{
		{"node from outside", base + "xds: {server: \"127.0.0.1:1\"}\n", Overrides{Node: "apps/p1"}, "apps/p1", RoleEdge},
		{"node in the file wins", base + "xds: {server: \"127.0.0.1:1\", node: apps/p2}\n", Overrides{Node: "apps/p1"}, "apps/p2", RoleEdge},
		{"no xds.server, no node", base, Overrides{Node: "apps/p1"}, "", RoleEdge},
		{"role", base + "role: edge\ngateway: {tls: {certFile: c, keyFile: k, clientCAFile: ca}, idempotency: {dir: /x}}\n", Overrides{Role: RoleGateway}, "", RoleGateway},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, err := ParseWith([]byte(tc.yaml), tc.o)
			if err != nil {
				t.Fatal(err)
			}
			if c.XDS.Node != tc.node || c.Role != tc.role {
				t.Errorf("xds.node %q, role %q; want %q, %q", c.XDS.Node, c.Role, tc.node, tc.role)
			}
		})
	}
	t.Setenv("POD_NAME", "p")
	t.Setenv("POD_NAMESPACE", "apps")
	if _, err := Parse([]byte(base + "xds: {server: \"127.0.0.1:1\"}\n")); err == nil || !strings.Contains(err.Error(), "xds.node") {
		t.Errorf("Parse took xds.node from the environment: %v", err)
	}
}

// A size is written with the largest binary unit that divides it and
// read back exactly.
func TestByteSizeRoundTrip(t *testing.T) {
	for in, want := range map[ByteSize]string{0: "0", 1000: "1000", 1024: "1KiB", 1536: "1536", 1536 << 10: "1536KiB", 64 << 20: "64MiB", 3 << 30: "3GiB", 1 << 62: "4294967296GiB", 10e6: "10000000"} {
		v, err := in.MarshalYAML()
		if err != nil || v != want {
			t.Errorf("%d written as %v, %v; want %q", in, v, err, want)
			continue
		}
		got, err := ParseByteSize(v.(string))
		if err != nil || got != in {
			t.Errorf("%d written as %q, read back as %d, %v", in, v, got, err)
		}
	}
}

// A duration is written in its shortest form and read back exactly.
func TestDurationRoundTrip(t *testing.T) {
	for in, want := range map[time.Duration]string{0: "0s", 500 * time.Millisecond: "500ms", 30 * time.Second: "30s", 90 * time.Second: "1m30s",
		2 * time.Minute: "2m", 48 * time.Hour: "48h", 90 * time.Minute: "1h30m", time.Hour + 5*time.Second: "1h0m5s", 1500 * time.Microsecond: "1.5ms"} {
		v, err := Duration(in).MarshalYAML()
		if err != nil || v != want {
			t.Errorf("%v written as %v, %v; want %q", in, v, err, want)
			continue
		}
		got, err := ParseDuration(v.(string))
		if err != nil || got != Duration(in) {
			t.Errorf("%v written as %q, read back as %v, %v", in, v, got, err)
		}
	}
}

// Header names in matches are case-insensitive and kept in lower case,
// as xDS carries them; WithRoutes leaves the routes it is given as they
// were.
func TestHeaderNamesLowerCase(t *testing.T) {
	c, err := Parse([]byte("routes: [{name: r, hosts: [a.mesh], upstream: \"http://x:1\", matches: [{headers: [{name: X-Probe, value: Yes}]}], offline: {unsafeMethods: [delete]}}]\n"))
	if err != nil {
		t.Fatal(err)
	}
	if h := c.Routes[0].Matches[0].Headers[0]; h != (HeaderMatch{Name: "x-probe", Value: "Yes"}) {
		t.Errorf("header match %+v, want the name in lower case and the value as written", h)
	}
	given := []Route{{Name: "r", Hosts: []string{"a.mesh"}, Upstream: "http://x:1",
		Matches: []Match{{Headers: []HeaderMatch{{Name: "X-Probe", Value: "yes"}}}}, Offline: Offline{UnsafeMethods: []string{"delete"}}}}
	n, err := c.WithRoutes(given)
	if err != nil {
		t.Fatal(err)
	}
	if given[0].Matches[0].Headers[0].Name != "X-Probe" || given[0].Offline.UnsafeMethods[0] != "delete" {
		t.Errorf("WithRoutes changed the routes it was given: %+v", given[0])
	}
	if r := n.Routes[0]; r.Matches[0].Headers[0].Name != "x-probe" || r.Offline.UnsafeMethods[0] != "DELETE" {
		t.Errorf("WithRoutes: %+v", r)
	}
}
