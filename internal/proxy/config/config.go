// Package config is the edge proxy's configuration model: the typed structs
// read from the YAML file (and, later, built from xDS), their documented
// defaults, and validation whose errors name the field and the fix.
//
// The zero value of every field means its documented default; SetDefaults is
// the one place that fills them in. Validate does no I/O.
package config

import (
	"errors"
	"fmt"
	"net"
	"net/url"
	"slices"
	"strings"
	"time"

	"golang.org/x/net/http/httpguts"
)

// Config is the whole proxy configuration.
type Config struct {
	// Role is edge (the sidecar next to an app; the default) or gateway
	// (the cloud side in front of cloud services: mTLS from vehicles and
	// de-duplication by Idempotency-Key). The --role flag overrides it.
	Role string `yaml:"role"`
	// Listen is the address apps send mesh traffic to (HTTP/1.1 and h2c);
	// for the gateway, the address vehicles connect to (TLS).
	Listen string `yaml:"listen"`
	// HTTP1Server is the HTTP/1.1 server on the edge's listen address:
	// lean (internal/proxy/h1, which hands what it does not take to
	// net/http; the default) or stdlib (net/http for every connection).
	// The gateway always uses net/http. The --http1-server flag overrides it.
	HTTP1Server string `yaml:"http1Server"`
	// Admin is the address of the admin API (/healthz, /readyz, /metrics, /v1/...).
	Admin string `yaml:"admin"`
	// Health, when set, serves only GET /healthz and /readyz, for probes
	// from outside the pod (the kubelet's); the admin API stays on
	// loopback. The injected sidecar sets it to 0.0.0.0:15021.
	Health string `yaml:"health"`
	// Log sets the log level and format.
	Log Log `yaml:"log"`
	// Limits protect the listener from oversized or slow clients.
	Limits Limits `yaml:"limits"`
	// HoldLimit bounds all held requests together, across routes.
	HoldLimit HoldLimit `yaml:"holdLimit"`
	// LinkScan tunes how links are watched.
	LinkScan LinkScan `yaml:"linkScan"`
	// Spool is the durable queue for requests that outlive their hold
	// window on routes with offline.spool set.
	Spool Spool `yaml:"spool"`
	// Gateway configures the gateway role.
	Gateway Gateway `yaml:"gateway"`
	// DNS is the proxy's DNS server for the app (docs/dns.md); off unless
	// dns.listen is set.
	DNS DNS `yaml:"dns"`
	// XDS makes the proxy take its routes from Misaki's controller over
	// ADS instead of from routes: below (docs/control-plane.md).
	XDS XDS `yaml:"xds"`
	// Links are the vehicle's network paths, matched to kernel interfaces.
	Links []Link `yaml:"links"`
	// LinkAgent makes the proxy take the node's links from the node link
	// agent (misaki-linkd, docs/links.md) beside its own links.
	LinkAgent LinkAgent `yaml:"linkAgent"`
	// Routes map mesh host names to upstreams with an offline policy.
	Routes []Route `yaml:"routes"`
}

// Log configures logging.
type Log struct {
	// Level is debug, info, warn or error. Default info.
	Level string `yaml:"level"`
}

// Limits bound what one client may send.
type Limits struct {
	// MaxHeaderBytes caps the request line plus headers; larger gets 431. Default 64KiB.
	MaxHeaderBytes ByteSize `yaml:"maxHeaderBytes"`
	// MaxBodyBytes caps a request body unless the route sets its own; larger gets 413.
	// Default 64MiB.
	MaxBodyBytes ByteSize `yaml:"maxBodyBytes"`
	// ReadHeaderTimeout cuts clients that do not finish their headers in time. Default 10s.
	ReadHeaderTimeout Duration `yaml:"readHeaderTimeout"`
	// IdleTimeout closes keep-alive connections idle this long. Default 120s.
	IdleTimeout Duration `yaml:"idleTimeout"`
	// MaxConnections caps concurrent client connections; more are answered 503
	// and closed. Default 4096.
	MaxConnections int `yaml:"maxConnections"`
	// Memory is a soft limit on the process's memory (Go's GOMEMLIMIT): the
	// garbage collector works harder as it is approached. Default 0: none
	// (or GOMEMLIMIT from the environment).
	Memory ByteSize `yaml:"memory"`
	// GCPercent is Go's GOGC: how far the heap may grow past what is live
	// before the collector runs. -1 turns the collector off until Memory
	// is reached (Memory must then be set). Default 0: GOGC from the
	// environment if set, else 100 for the edge and DefaultGatewayGCPercent
	// for the gateway, which trades memory for CPU.
	GCPercent int `yaml:"gcPercent"`
	// HTTP2 bounds what one HTTP/2 connection may make the server do
	// besides requests (http2.go).
	HTTP2 HTTP2Limits `yaml:"http2"`
}

// DefaultGatewayGCPercent is the gateway's GOGC unless set: a cloud
// process, where memory is cheaper than CPU. It took the batched drain
// from 6,845 to 8,728 requests a second (docs/benchmarks.md).
const DefaultGatewayGCPercent = 400

// HoldLimit bounds held requests in count and bytes (headers plus body).
type HoldLimit struct {
	// Requests is the maximum number held at once. Default 10000 globally,
	// unlimited (within the global limit) per route.
	Requests int `yaml:"requests"`
	// Bytes is the maximum memory held at once. Default 64MiB globally,
	// unlimited (within the global limit) per route.
	Bytes ByteSize `yaml:"bytes"`
}

// Roles.
const (
	RoleEdge    = "edge"
	RoleGateway = "gateway"
)

// HTTP/1.1 servers for the edge's listen address (http1Server).
const (
	HTTP1Lean   = "lean"
	HTTP1Stdlib = "stdlib"
)

// Route maps host names to one upstream.
type Route struct {
	// Name identifies the route in metrics, logs and the admin API.
	Name string `yaml:"name"`
	// Hosts are the mesh names apps call (exact, or *.suffix wildcards).
	Hosts []string `yaml:"hosts"`
	// Matches narrow the route to some requests of its hosts: a request
	// matches when any entry matches. Empty: every request. A request to
	// the route's hosts that no entry matches gets 404.
	Matches []Match `yaml:"matches"`
	// Upstream is http://, https:// (HTTP/2 or HTTP/1.1 by ALPN) or
	// h2c:// (HTTP/2 without TLS, prior knowledge), with host and port.
	Upstream string `yaml:"upstream"`
	// TLS configures https:// upstreams.
	TLS UpstreamTLS `yaml:"tls"`
	// Timeouts for the upstream exchange.
	Timeouts Timeouts `yaml:"timeouts"`
	// MaxBodyBytes caps request bodies on this route. Default limits.maxBodyBytes.
	MaxBodyBytes ByteSize `yaml:"maxBodyBytes"`
	// MaxUpstreamConnections caps concurrent connections to the upstream, as
	// Envoy's circuit breaker does; requests past it wait for a free one.
	// Default 1024.
	MaxUpstreamConnections int `yaml:"maxUpstreamConnections"`
	// Probe checks that the upstream is reachable.
	Probe Probe `yaml:"probe"`
	// Offline is what happens when the route has no usable link.
	Offline Offline `yaml:"offline"`
}

// Match selects requests by path and headers; all of its parts must match.
type Match struct {
	// Path matches the request path exactly.
	Path string `yaml:"path"`
	// PathPrefix matches paths that start with it at a segment boundary:
	// /api matches /api and /api/x, not /apix.
	PathPrefix string `yaml:"pathPrefix"`
	// Headers must all be present with these exact values.
	Headers []HeaderMatch `yaml:"headers"`
}

// HeaderMatch is one header that must have one value.
type HeaderMatch struct {
	Name  string `yaml:"name"`
	Value string `yaml:"value"`
}

// UpstreamTLS configures TLS to an https:// upstream.
type UpstreamTLS struct {
	// CAFile is a PEM bundle of roots to trust instead of the system's.
	CAFile string `yaml:"caFile"`
	// ServerName overrides the name checked in the upstream's certificate.
	ServerName string `yaml:"serverName"`
	// CertFile and KeyFile are the proxy's client certificate (mTLS).
	CertFile string `yaml:"certFile"`
	KeyFile  string `yaml:"keyFile"`
}

// Timeouts for one route's upstream exchanges.
type Timeouts struct {
	// Connect bounds dialing the upstream (TCP and TLS). Default 5s.
	Connect Duration `yaml:"connect"`
	// ResponseHeader bounds the wait for the upstream's response headers after
	// the request is sent. Default 60s.
	ResponseHeader Duration `yaml:"responseHeader"`
	// Request bounds the whole exchange, body streaming included, from the
	// moment the request is forwarded; time spent held does not count.
	// Default 0: no limit (streams and WebSockets may last).
	Request Duration `yaml:"request"`
	// Idle closes pooled upstream connections idle this long. Default 90s.
	Idle Duration `yaml:"idle"`
}

// Probe types.
const (
	ProbeTCP  = "tcp"
	ProbeHTTP = "http"
	ProbeNone = "none"
)

// Probe checks an upstream's reachability actively. Failures of real
// requests to connect mark it unreachable at once, probe or not.
type Probe struct {
	// Type is tcp (connect), http (GET Path, any status below 500) or none.
	// Default tcp.
	Type string `yaml:"type"`
	// Path is the URL path for http probes. Default /.
	Path string `yaml:"path"`
	// Interval between probes while the upstream is reachable. Default 10s.
	Interval Duration `yaml:"interval"`
	// Timeout of one probe. Default 2s.
	Timeout Duration `yaml:"timeout"`
	// Backoff between probes while the upstream is unreachable.
	Backoff Backoff `yaml:"backoff"`
}

// Backoff is exponential with full jitter between Initial and Max.
type Backoff struct {
	// Initial delay after the first failure. Default 500ms.
	Initial Duration `yaml:"initial"`
	// Max delay. Default 10s.
	Max Duration `yaml:"max"`
}

// Defaults, written once here and in docs/config.md.
const (
	DefaultListen            = "127.0.0.1:15001"
	DefaultAdmin             = "127.0.0.1:15000"
	DefaultMaxHeaderBytes    = 64 << 10
	DefaultMaxBodyBytes      = 64 << 20
	DefaultReadHeaderTimeout = 10 * time.Second
	DefaultIdleTimeout       = 120 * time.Second
	DefaultMaxConnections    = 4096
	DefaultHoldRequests      = 10000
	DefaultHoldBytes         = 64 << 20
	DefaultConnectTimeout    = 5 * time.Second
	DefaultResponseHeader    = 60 * time.Second
	DefaultUpstreamIdle      = 90 * time.Second
	DefaultUpstreamConns     = 1024
	DefaultProbeInterval     = 10 * time.Second
	DefaultProbeTimeout      = 2 * time.Second
	DefaultBackoffInitial    = 500 * time.Millisecond
	DefaultBackoffMax        = 10 * time.Second
	// DefaultProbeBackoffMax is the longest wait between probes of a down
	// upstream unless set: how late, at worst, a route notices the
	// upstream is back when no request or dial shows it first.
	DefaultProbeBackoffMax = 2 * time.Second
	// MaxProbeBackoff caps probe.backoff.max: a route must not sit held
	// for minutes after its upstream returned.
	MaxProbeBackoff = 30 * time.Second
)

// SetDefaults fills every zero field with its documented default.
func (c *Config) SetDefaults() {
	setDefault(&c.Role, RoleEdge)
	setDefault(&c.Listen, DefaultListen)
	setDefault(&c.HTTP1Server, HTTP1Lean)
	setDefault(&c.Admin, DefaultAdmin)
	setDefault(&c.Log.Level, "info")
	setDefault(&c.Limits.MaxHeaderBytes, DefaultMaxHeaderBytes)
	setDefault(&c.Limits.MaxBodyBytes, DefaultMaxBodyBytes)
	setDefault(&c.Limits.ReadHeaderTimeout, Duration(DefaultReadHeaderTimeout))
	setDefault(&c.Limits.IdleTimeout, Duration(DefaultIdleTimeout))
	setDefault(&c.Limits.MaxConnections, DefaultMaxConnections)
	c.Limits.HTTP2.setDefaults()
	c.Gateway.setDefaults(c.Limits.MaxBodyBytes)
	setDefault(&c.HoldLimit.Requests, DefaultHoldRequests)
	setDefault(&c.HoldLimit.Bytes, DefaultHoldBytes)
	c.LinkScan.setDefaults()
	c.Spool.setDefaults()
	c.XDS.setDefaults(c.Spool.Dir)
	c.DNS.setDefaults(c.Listen, c.Spool.Dir)
	for i := range c.Routes {
		r := &c.Routes[i]
		setDefault(&r.MaxBodyBytes, c.Limits.MaxBodyBytes)
		setDefault(&r.MaxUpstreamConnections, DefaultUpstreamConns)
		setDefault(&r.Timeouts.Connect, Duration(DefaultConnectTimeout))
		setDefault(&r.Timeouts.ResponseHeader, Duration(DefaultResponseHeader))
		setDefault(&r.Timeouts.Idle, Duration(DefaultUpstreamIdle))
		setDefault(&r.Probe.Type, ProbeTCP)
		setDefault(&r.Probe.Path, "/")
		setDefault(&r.Probe.Interval, Duration(DefaultProbeInterval))
		setDefault(&r.Probe.Timeout, Duration(DefaultProbeTimeout))
		setDefault(&r.Probe.Backoff.Initial, Duration(DefaultBackoffInitial))
		setDefault(&r.Probe.Backoff.Max, max(Duration(DefaultProbeBackoffMax), r.Probe.Backoff.Initial))
		r.Offline.setDefaults()
	}
}

// report records a problem with a field, named by its YAML path; each
// section's validate takes one.
type report func(field, format string, args ...any)

func setDefault[T comparable](p *T, v T) {
	var zero T
	if *p == zero {
		*p = v
	}
}

// Validate checks the configuration after SetDefaults. Every error names the
// field by its YAML path and says how to fix it; all problems are reported
// together.
func (c *Config) Validate() error {
	var errs []error
	bad := func(field, format string, args ...any) {
		errs = append(errs, fmt.Errorf("%s: %s", field, fmt.Sprintf(format, args...)))
	}
	checkAddr := func(field, addr string) {
		if _, _, err := net.SplitHostPort(addr); err != nil {
			bad(field, "%q is not host:port; write it like 127.0.0.1:15001", addr)
		}
	}
	switch c.Role {
	case RoleEdge:
	case RoleGateway:
		c.Gateway.validate(bad)
	default:
		bad("role", "%q is not a role; use edge or gateway", c.Role)
	}
	checkAddr("listen", c.Listen)
	if c.HTTP1Server != HTTP1Lean && c.HTTP1Server != HTTP1Stdlib {
		bad("http1Server", "%q is not an HTTP/1.1 server; use lean or stdlib", c.HTTP1Server)
	}
	checkAddr("admin", c.Admin)
	if c.Listen == c.Admin && !strings.HasSuffix(c.Listen, ":0") {
		bad("admin", "must differ from listen (%s); pick another port", c.Listen)
	}
	if c.Health != "" {
		checkAddr("health", c.Health)
		if (c.Health == c.Listen || c.Health == c.Admin) && !strings.HasSuffix(c.Health, ":0") {
			bad("health", "must differ from listen and admin (%s); pick another port", c.Health)
		}
	}
	switch c.Log.Level {
	case "debug", "info", "warn", "error":
	default:
		bad("log.level", "%q is not a level; use debug, info, warn or error", c.Log.Level)
	}
	if c.Limits.MaxConnections < 0 {
		bad("limits.maxConnections", "must not be negative")
	}
	if g := c.Limits.GCPercent; g < -1 || g > 10000 {
		bad("limits.gcPercent", "%d must be between 1 and 10000, or -1 (collect only at limits.memory), or 0 for the default", g)
	} else if g == -1 && c.Limits.Memory == 0 {
		bad("limits.gcPercent", "-1 turns the collector off until limits.memory is reached, and limits.memory is not set")
	}
	if c.Limits.Memory < 0 || (c.Limits.Memory > 0 && c.Limits.Memory < 16<<20) {
		bad("limits.memory", "%d bytes is too little to run in; set 16MiB or more, or 0 for no limit", c.Limits.Memory)
	}
	c.Limits.HTTP2.validate(bad)
	if c.HoldLimit.Requests < 0 || c.HoldLimit.Bytes < 0 {
		bad("holdLimit", "requests and bytes must not be negative")
	}
	for _, d := range []struct {
		field string
		v     Duration
	}{
		{"limits.readHeaderTimeout", c.Limits.ReadHeaderTimeout},
		{"limits.idleTimeout", c.Limits.IdleTimeout},
	} {
		if d.v < 0 {
			bad(d.field, "must not be negative")
		}
	}
	c.LinkScan.validate(bad)

	c.DNS.validate(bad)

	c.Spool.validate(bad)

	validateLinks(c.Links, bad)
	c.LinkAgent.validate(bad)

	c.XDS.validate(c.Role, bad)

	routeNames := map[string]bool{}
	hostOwner := map[string]Route{}
	for i, r := range c.Routes {
		f := fmt.Sprintf("routes[%d]", i)
		if !validName(r.Name) {
			bad(f+".name", "%q is not a valid name; use lower-case letters, digits and '-' (at most 63)", r.Name)
		} else if routeNames[r.Name] {
			bad(f+".name", "%q is used by another route; names must be unique", r.Name)
		}
		routeNames[r.Name] = true
		if len(r.Hosts) == 0 {
			bad(f+".hosts", "is empty; list the mesh names apps call, like [telemetry.cloud.misaki]")
		}
		for j, h := range r.Hosts {
			hf := fmt.Sprintf("%s.hosts[%d]", f, j)
			h = strings.ToLower(h)
			if !validHost(h) {
				bad(hf, "%q is not a host name; write a DNS name without port or scheme, or *.suffix", r.Hosts[j])
				continue
			}
			if other, ok := hostOwner[h]; ok && len(other.Matches) == 0 {
				bad(hf, "%q is already served by route %q, which has no matches and so takes every request for it; give that route matches or the host to one route", h, other.Name)
			}
			hostOwner[h] = r
		}
		for j, m := range r.Matches {
			mf := fmt.Sprintf("%s.matches[%d]", f, j)
			switch {
			case m.Path != "" && m.PathPrefix != "":
				bad(mf, "set path or pathPrefix, not both")
			case m.Path != "" && !strings.HasPrefix(m.Path, "/"):
				bad(mf+".path", "%q must start with /", m.Path)
			case m.PathPrefix != "" && !strings.HasPrefix(m.PathPrefix, "/"):
				bad(mf+".pathPrefix", "%q must start with /", m.PathPrefix)
			}
			for k, h := range m.Headers {
				if !httpguts.ValidHeaderFieldName(h.Name) {
					bad(fmt.Sprintf("%s.headers[%d].name", mf, k), "%q is not a header name", h.Name)
				}
			}
		}
		validateUpstream(f, r, bad)
		if r.MaxBodyBytes < 0 {
			bad(f+".maxBodyBytes", "must not be negative")
		}
		if r.MaxUpstreamConnections < 0 {
			bad(f+".maxUpstreamConnections", "must not be negative")
		}
		notNegative(f, bad, append(r.Timeouts.fields(),
			durationField{"probe.interval", r.Probe.Interval},
			durationField{"probe.timeout", r.Probe.Timeout},
			durationField{"probe.backoff.initial", r.Probe.Backoff.Initial},
			durationField{"probe.backoff.max", r.Probe.Backoff.Max},
		)...)
		switch r.Probe.Type {
		case ProbeTCP, ProbeNone:
		case ProbeHTTP:
			if !strings.HasPrefix(r.Probe.Path, "/") {
				bad(f+".probe.path", "%q must start with /", r.Probe.Path)
			}
		default:
			bad(f+".probe.type", "%q is not a probe type; use tcp, http or none", r.Probe.Type)
		}
		if r.Probe.Backoff.Max < r.Probe.Backoff.Initial {
			bad(f+".probe.backoff.max", "%v is below backoff.initial %v; raise it", r.Probe.Backoff.Max, r.Probe.Backoff.Initial)
		}
		if r.Probe.Backoff.Max.D() > MaxProbeBackoff {
			bad(f+".probe.backoff.max", "%v is above the cap of %v; a down upstream is probed at least that often", r.Probe.Backoff.Max, MaxProbeBackoff)
		}
		r.Offline.validate(f+".offline", c.Spool.Dir, bad)
	}
	return errors.Join(errs...)
}

// durationField is a duration and its field name, for notNegative.
type durationField struct {
	name string
	v    Duration
}

// notNegative reports each duration below zero as prefix.name.
func notNegative(prefix string, bad func(field, format string, args ...any), ds ...durationField) {
	for _, d := range ds {
		if d.v < 0 {
			bad(prefix+"."+d.name, "must not be negative")
		}
	}
}

// fields are the timeouts as notNegative takes them.
func (t Timeouts) fields() []durationField {
	return []durationField{
		{"timeouts.connect", t.Connect},
		{"timeouts.responseHeader", t.ResponseHeader},
		{"timeouts.request", t.Request},
		{"timeouts.idle", t.Idle},
	}
}

func validateUpstream(f string, r Route, bad func(field, format string, args ...any)) {
	u, err := url.Parse(r.Upstream)
	switch {
	case r.Upstream == "":
		bad(f+".upstream", "is empty; write the upstream URL, like http://127.0.0.1:9000")
		return
	case err != nil:
		bad(f+".upstream", "%q is not a URL: %v", r.Upstream, err)
		return
	}
	switch u.Scheme {
	case "http", "https", "h2c":
	default:
		bad(f+".upstream", "scheme %q is not supported; use http://, https:// or h2c://", u.Scheme)
		return
	}
	if u.Hostname() == "" {
		bad(f+".upstream", "%q has no host; write it like http://127.0.0.1:9000", r.Upstream)
	}
	if u.Path != "" && u.Path != "/" || u.RawQuery != "" || u.User != nil {
		bad(f+".upstream", "%q must be scheme://host[:port] only; paths, queries and user info are not supported", r.Upstream)
	}
	tlsSet := r.TLS != (UpstreamTLS{})
	if tlsSet && u.Scheme != "https" {
		bad(f+".tls", "is set but the upstream is %s://; use an https:// upstream or remove tls", u.Scheme)
	}
	if (r.TLS.CertFile == "") != (r.TLS.KeyFile == "") {
		bad(f+".tls", "certFile and keyFile go together; set both or neither")
	}
}

// validName reports whether s is a DNS-label-like name (RFC 1123).
func validName(s string) bool {
	if s == "" || len(s) > 63 || s[0] == '-' || s[len(s)-1] == '-' {
		return false
	}
	for _, c := range s {
		if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-') {
			return false
		}
	}
	return true
}

// validHost reports whether s is a lower-case DNS name, optionally with a
// leading "*." wildcard.
func validHost(s string) bool {
	s = strings.TrimPrefix(s, "*.")
	if s == "" || len(s) > 253 {
		return false
	}
	return !slices.ContainsFunc(strings.Split(s, "."), func(l string) bool {
		if l == "" || len(l) > 63 || l[0] == '-' || l[len(l)-1] == '-' {
			return true
		}
		for _, c := range l {
			if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-' || c == '_') {
				return true
			}
		}
		return false
	})
}
