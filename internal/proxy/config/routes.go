package config

import (
	"fmt"
	"net/url"
	"slices"
	"strings"
	"time"

	"golang.org/x/net/http/httpguts"
)

// Route maps host names to one upstream. It is the one model of a route,
// whatever its source: routes: in the file, a Route object that the
// controller sends over xDS, or the xDS client's cache. A zero field means
// its default, so a route is written with the fields it sets only.
type Route struct {
	// Name identifies the route in metrics, logs and the admin API.
	Name string `yaml:"name,omitempty"`
	// Hosts are the mesh names apps call (exact, or *.suffix wildcards).
	Hosts []string `yaml:"hosts,omitempty"`
	// Matches narrow the route to some requests of its hosts: a request
	// matches when any entry matches. Empty: every request. A request to
	// the route's hosts that no entry matches gets 404.
	Matches []Match `yaml:"matches,omitempty"`
	// Upstream is http://, https:// (HTTP/2 or HTTP/1.1 by ALPN) or
	// h2c:// (HTTP/2 without TLS, prior knowledge), with host and port.
	Upstream string `yaml:"upstream,omitempty"`
	// TLS configures https:// upstreams.
	TLS UpstreamTLS `yaml:"tls,omitempty"`
	// Timeouts for the upstream exchange.
	Timeouts Timeouts `yaml:"timeouts,omitempty"`
	// MaxBodyBytes caps request bodies on this route. Default limits.maxBodyBytes.
	MaxBodyBytes ByteSize `yaml:"maxBodyBytes,omitempty"`
	// MaxUpstreamConnections caps concurrent connections to the upstream, as
	// Envoy's circuit breaker does; requests past it wait for a free one.
	// Default 1024.
	MaxUpstreamConnections int `yaml:"maxUpstreamConnections,omitempty"`
	// Probe checks that the upstream is reachable.
	Probe Probe `yaml:"probe,omitempty"`
	// Offline is what happens when the route has no usable link.
	Offline Offline `yaml:"offline,omitempty"`
}

// Match selects requests by path and headers; all of its parts must match.
type Match struct {
	// Path matches the request path exactly.
	Path string `yaml:"path,omitempty"`
	// PathPrefix matches paths that start with it at a segment boundary:
	// /api matches /api and /api/x, not /apix.
	PathPrefix string `yaml:"pathPrefix,omitempty"`
	// Headers must all be present with these exact values. Names are
	// case-insensitive; SetDefaults writes them in lower case, as HTTP/2
	// and xDS do.
	Headers []HeaderMatch `yaml:"headers,omitempty"`
}

// HeaderMatch is one header that must have one value.
type HeaderMatch struct {
	Name  string `yaml:"name,omitempty"`
	Value string `yaml:"value,omitempty"`
}

// UpstreamTLS configures TLS to an https:// upstream.
type UpstreamTLS struct {
	// CAFile is a PEM bundle of roots to trust instead of the system's.
	CAFile string `yaml:"caFile,omitempty"`
	// ServerName overrides the name checked in the upstream's certificate.
	ServerName string `yaml:"serverName,omitempty"`
	// CertFile and KeyFile are the proxy's client certificate (mTLS).
	CertFile string `yaml:"certFile,omitempty"`
	KeyFile  string `yaml:"keyFile,omitempty"`
}

// Timeouts for one route's upstream exchanges.
type Timeouts struct {
	// Connect bounds dialing the upstream (TCP and TLS). Default 5s.
	Connect Duration `yaml:"connect,omitempty"`
	// ResponseHeader bounds the wait for the upstream's response headers after
	// the request is sent. Default 60s.
	ResponseHeader Duration `yaml:"responseHeader,omitempty"`
	// Request bounds the whole exchange, body streaming included, from the
	// moment the request is forwarded; time spent held does not count.
	// Default 0: no limit (streams and WebSockets may last).
	Request Duration `yaml:"request,omitempty"`
	// Idle closes pooled upstream connections idle this long. Default 90s.
	Idle Duration `yaml:"idle,omitempty"`
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
	Type string `yaml:"type,omitempty"`
	// Path is the URL path for http probes. Default /.
	Path string `yaml:"path,omitempty"`
	// Interval between probes while the upstream is reachable. Default 10s.
	Interval Duration `yaml:"interval,omitempty"`
	// Timeout of one probe. Default 2s.
	Timeout Duration `yaml:"timeout,omitempty"`
	// Backoff between probes while the upstream is unreachable.
	Backoff Backoff `yaml:"backoff,omitempty"`
}

// Backoff is exponential with full jitter between Initial and Max.
type Backoff struct {
	// Initial delay after the first failure. Default 500ms.
	Initial Duration `yaml:"initial,omitempty"`
	// Max delay. Default 10s.
	Max Duration `yaml:"max,omitempty"`
}

// Defaults and bounds of a route.
const (
	DefaultConnectTimeout = 5 * time.Second
	DefaultResponseHeader = 60 * time.Second
	DefaultUpstreamIdle   = 90 * time.Second
	DefaultUpstreamConns  = 1024
	DefaultProbeInterval  = 10 * time.Second
	DefaultProbeTimeout   = 2 * time.Second
	DefaultBackoffInitial = 500 * time.Millisecond
	DefaultBackoffMax     = 10 * time.Second
	// DefaultProbeBackoffMax is the longest wait between probes of a down
	// upstream unless set: how late, at worst, a route notices the
	// upstream is back when no request or dial shows it first.
	DefaultProbeBackoffMax = 2 * time.Second
	// MaxProbeBackoff caps probe.backoff.max: a route must not sit held
	// for minutes after its upstream returned.
	MaxProbeBackoff = 30 * time.Second
)

// setDefaults fills one route; its body limit defaults to
// limits.maxBodyBytes.
func (r *Route) setDefaults(maxBodyBytes ByteSize) {
	setDefault(&r.MaxBodyBytes, maxBodyBytes)
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
	for i := range r.Matches {
		for j := range r.Matches[i].Headers {
			h := &r.Matches[i].Headers[j]
			h.Name = strings.ToLower(h.Name)
		}
	}
	r.Offline.setDefaults()
}

// clone is r with its own copies of what setDefaults writes in place.
func (r Route) clone() Route {
	r.Matches = slices.Clone(r.Matches)
	for i := range r.Matches {
		r.Matches[i].Headers = slices.Clone(r.Matches[i].Headers)
	}
	r.Offline.UnsafeMethods = slices.Clone(r.Offline.UnsafeMethods)
	return r
}

// validateRoutes checks the routes: unique names, hosts that are names
// and belong to one route unless the routes split them by matches, and
// each route; spooling needs spoolDir.
func validateRoutes(routes []Route, spoolDir string, bad report) {
	names := map[string]bool{}
	hostOwner := map[string]Route{}
	for i, r := range routes {
		f := fmt.Sprintf("routes[%d]", i)
		if !validName(r.Name) {
			bad(f+".name", "%q is not a valid name; use lower-case letters, digits and '-' (at most 63)", r.Name)
		} else if names[r.Name] {
			bad(f+".name", "%q is used by another route; names must be unique", r.Name)
		}
		names[r.Name] = true
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
		r.validate(f, spoolDir, bad)
	}
}

// validate checks one route, whose YAML path is f.
func (r Route) validate(f, spoolDir string, bad report) {
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
	r.Offline.validate(f+".offline", spoolDir, bad)
}

// durationField is a duration and its field name, for notNegative.
type durationField struct {
	name string
	v    Duration
}

// notNegative reports each duration below zero as prefix.name.
func notNegative(prefix string, bad report, ds ...durationField) {
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

// validateUpstream checks a route's upstream URL and its tls block.
func validateUpstream(f string, r Route, bad report) {
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
