package config

import (
	"net"
	"strings"
)

// HTTP/1.1 servers for the edge's listen address (http1Server), and
// clients to http:// upstreams (http1Upstream).
const (
	HTTP1Lean   = "lean"
	HTTP1Stdlib = "stdlib"
)

// The default addresses of the mesh listener and the admin API.
const (
	DefaultListen = "127.0.0.1:15001"
	DefaultAdmin  = "127.0.0.1:15000"
)

// NoFastPath reports whether requests to http:// upstreams all go through
// net/http's Transport (http1Upstream: stdlib), for forward.Options.
func (c *Config) NoFastPath() bool { return c.HTTP1Upstream == HTTP1Stdlib }

// setListenerDefaults fills the addresses the proxy listens on (listen,
// admin; health has none), the HTTP/1.1 server of listen and the HTTP/1.1
// client to upstreams.
func (c *Config) setListenerDefaults() {
	setDefault(&c.Listen, DefaultListen)
	setDefault(&c.HTTP1Server, HTTP1Lean)
	setDefault(&c.HTTP1Upstream, HTTP1Lean)
	setDefault(&c.Admin, DefaultAdmin)
}

// validateListeners checks listen, http1Server, http1Upstream, admin and
// health: each address a host:port, none on another's port (unless both ask
// for any port, :0).
func (c *Config) validateListeners(bad report) {
	checkAddr := func(field, addr string) {
		if _, _, err := net.SplitHostPort(addr); err != nil {
			bad(field, "%q is not host:port; write it like 127.0.0.1:15001", addr)
		}
	}
	checkAddr("listen", c.Listen)
	if c.HTTP1Server != HTTP1Lean && c.HTTP1Server != HTTP1Stdlib {
		bad("http1Server", "%q is not an HTTP/1.1 server; use lean or stdlib", c.HTTP1Server)
	}
	if c.HTTP1Upstream != HTTP1Lean && c.HTTP1Upstream != HTTP1Stdlib {
		bad("http1Upstream", "%q is not an HTTP/1.1 client; use lean or stdlib", c.HTTP1Upstream)
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
}
