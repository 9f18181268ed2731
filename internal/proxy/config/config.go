// Package config is the proxy's configuration model: the typed structs
// read from the YAML file, their documented defaults, and validation whose
// errors name the field and the fix.
//
// The zero value of every field means its documented default; SetDefaults is
// the one place that fills them in, and Validate does no I/O. Each large
// section of the file has its own source file here, with its type, its
// defaults and its checks (listeners.go, limits.go, http2.go, links.go,
// routes.go, offline.go, spool.go, dns.go, xds.go, gateway.go,
// vehicleservices.go; log is in this file, load.go decodes); SetDefaults
// and Validate call them in turn. The package reads no environment: what comes from outside the
// file (flags, the pod's variables) is given as Overrides.
package config

import (
	"errors"
	"fmt"
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
	// HTTP1Upstream is the HTTP/1.1 client to http:// upstreams, in both
	// roles: lean (internal/forward's fast path for small requests of
	// known length, net/http's Transport for the rest; the default) or
	// stdlib (net/http's Transport for every request). The
	// --http1-upstream flag overrides it.
	HTTP1Upstream string `yaml:"http1Upstream"`
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

// Roles.
const (
	RoleEdge    = "edge"
	RoleGateway = "gateway"
)

// Log configures logging.
type Log struct {
	// Level is debug, info, warn or error. Default info.
	Level string `yaml:"level"`
}

func (l *Log) setDefaults() { setDefault(&l.Level, "info") }

func (l Log) validate(bad report) {
	switch l.Level {
	case "debug", "info", "warn", "error":
	default:
		bad("log.level", "%q is not a level; use debug, info, warn or error", l.Level)
	}
}

// SetDefaults fills every zero field with its documented default. Each
// section fills its own; some take another's value (a route's body limit
// defaults to limits.maxBodyBytes, the DNS cache file lives in
// spool.dir), which is set first.
func (c *Config) SetDefaults() {
	setDefault(&c.Role, RoleEdge)
	c.setListenerDefaults()
	c.Log.setDefaults()
	c.Limits.setDefaults()
	c.Gateway.setDefaults(c.Limits.MaxBodyBytes)
	c.HoldLimit.setGlobalDefaults()
	c.LinkScan.setDefaults()
	c.Spool.setDefaults()
	c.XDS.setDefaults(c.Spool.Dir)
	c.DNS.setDefaults(c.Listen, c.Spool.Dir)
	for i := range c.Routes {
		c.Routes[i].setDefaults(c.Limits.MaxBodyBytes)
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
	switch c.Role {
	case RoleEdge:
	case RoleGateway:
		c.Gateway.validate(bad)
	default:
		bad("role", "%q is not a role; use edge or gateway", c.Role)
	}
	c.validateListeners(bad)
	c.Log.validate(bad)
	c.Limits.validate(bad)
	c.HoldLimit.validate("holdLimit", bad)
	c.LinkScan.validate(bad)
	c.DNS.validate(bad)
	c.Spool.validate(bad)
	validateLinks(c.Links, bad)
	c.LinkAgent.validate(bad)
	c.XDS.validate(c.Role, bad)
	validateRoutes(c.Routes, c.Spool.Dir, bad)
	return errors.Join(errs...)
}

// report records a problem with a field, named by its YAML path; each
// section's validate takes one.
type report func(field, format string, args ...any)

// setDefault sets *p to v if *p is the zero value.
func setDefault[T comparable](p *T, v T) {
	var zero T
	if *p == zero {
		*p = v
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
