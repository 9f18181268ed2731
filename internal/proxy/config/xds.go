package config

import (
	"net"
	"path/filepath"
	"strings"
)

// XDS configures the proxy as an xDS client of the controller.
type XDS struct {
	// Server is the controller's ADS address, host:port (gRPC over h2c,
	// or TLS when caFile is set). Empty: routes come from this file.
	Server string `yaml:"server"`
	// Node is this proxy's id, namespace/pod. Default
	// $POD_NAMESPACE/$POD_NAME, as the injected sidecar sets them, which
	// misaki-proxy reads (Overrides.Node).
	Node string `yaml:"node"`
	// CAFile makes the connection TLS, trusting these roots.
	CAFile string `yaml:"caFile"`
	// Cache keeps the last accepted routes, so the proxy starts with them
	// while the controller is unreachable. Default xds-routes.yaml in
	// spool.dir.
	Cache string `yaml:"cache"`
	// Identity gets the proxy a certificate naming its pod from the
	// controller, presented on the ADS connection (mutual TLS). Off unless
	// identity.tokenFile is set; it needs caFile.
	Identity XDSIdentity `yaml:"identity"`
}

// XDSIdentity configures the proxy's certificate from the controller's CA
// (docs/control-plane.md, "Identity").
type XDSIdentity struct {
	// TokenFile is the pod's projected service-account token (audience
	// misaki), read again for each request. Empty: no certificate.
	TokenFile string `yaml:"tokenFile"`
	// Server is the controller's certificate endpoint, host:port (HTTPS,
	// verified against caFile). Default xds.server's host, port 15012.
	Server string `yaml:"server"`
}

// DefaultXDSIdentityPort is the controller's certificate endpoint's port
// when xds.identity.server is not set.
const DefaultXDSIdentityPort = "15012"

// setDefaults fills the xds block when xds.server is set: the cache
// defaults to xds-routes.yaml in the spool's directory, the identity
// server to xds.server's host on DefaultXDSIdentityPort.
func (x *XDS) setDefaults(spoolDir string) {
	if x.Server == "" {
		return
	}
	if x.Cache == "" && spoolDir != "" {
		x.Cache = filepath.Join(spoolDir, "xds-routes.yaml")
	}
	if id := &x.Identity; id.TokenFile != "" && id.Server == "" {
		if host, _, err := net.SplitHostPort(x.Server); err == nil {
			id.Server = net.JoinHostPort(host, DefaultXDSIdentityPort)
		}
	}
}

// validate checks the xds block; xds is for the edge role.
func (x XDS) validate(role string, bad report) {
	if x.Server == "" {
		if x.Identity != (XDSIdentity{}) {
			bad("xds.identity", "needs xds.server: set the controller's ADS address")
		}
		return
	}
	if _, _, err := net.SplitHostPort(x.Server); err != nil {
		bad("xds.server", "%q is not host:port: %v", x.Server, err)
	}
	if ns, pod, ok := strings.Cut(x.Node, "/"); !ok || ns == "" || pod == "" {
		bad("xds.node", "%q is not namespace/pod; set it, or POD_NAMESPACE and POD_NAME", x.Node)
	}
	if x.Cache == "" {
		bad("xds.cache", "is not set and there is no spool.dir to keep it in; set one of them")
	}
	if role != RoleEdge {
		bad("xds.server", "is for the edge role")
	}
	if id := x.Identity; id.TokenFile != "" {
		if x.CAFile == "" {
			bad("xds.caFile", "is required with xds.identity: the proxy sends its token only to a controller it can authenticate; set the controller's CA bundle")
		}
		if _, _, err := net.SplitHostPort(id.Server); err != nil {
			bad("xds.identity.server", "%q is not host:port: %v", id.Server, err)
		}
	} else if id.Server != "" {
		bad("xds.identity.tokenFile", "is required with xds.identity.server: set the pod's projected service-account token")
	}
}
