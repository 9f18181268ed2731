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
	"strings"
	"time"
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
		c.Routes[i].setDefaults(c.Limits.MaxBodyBytes)
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

	validateRoutes(c.Routes, c.Spool.Dir, bad)
	return errors.Join(errs...)
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
