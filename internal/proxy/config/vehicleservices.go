package config

import (
	"fmt"
	"net/url"
	"slices"
	"strings"
)

// VehicleServices routes a vehicle's calls to the cloud half of its own
// workloads (gateway.vehicleServices, docs/gateway.md). The hub runs the
// cloud half of vehicle <id> in the cloud namespace misaki-v-<id> and
// gives the vehicle a mesh Route per cloud Service, whose hosts are the
// Service's cluster DNS names and whose destination is the gateway. A
// request whose Host no route serves and that has the shape
// <service>.<ns>.svc.<clusterDomain>, <service>.<ns>.svc or
// <service>.<ns> (port from the Host, default 80) goes to the Upstream
// template with {namespace} the calling vehicle's namespace: the <ns> the
// vehicle named is passed on in a header, never dialled.
//
// Present (even empty: vehicleServices: {}) turns it on; absent, off.
type VehicleServices struct {
	// ClusterDomain is the suffix of the full names vehicles call
	// (<service>.<ns>.svc.<clusterDomain>) and what {clusterDomain}
	// stands for in Upstream. Default cluster.local.
	ClusterDomain string `yaml:"clusterDomain"`
	// Namespace is the template of a vehicle's cloud namespace; {vehicle}
	// is the vehicle ID from its client certificate (the part of the URI
	// SAN after spiffe://misaki/vehicle/). Default misaki-v-{vehicle}.
	Namespace string `yaml:"namespace"`
	// Upstream is the template of the URL the gateway dials, with
	// {service}, {namespace}, {clusterDomain} and {port}; http:// only
	// (Protocol chooses HTTP/1.1 or h2c over it). The request's Host
	// becomes this URL's host:port. Default
	// http://{service}.{namespace}.svc.{clusterDomain}:{port}.
	Upstream string `yaml:"upstream"`
	// Protocol is auto (h2c for gRPC calls, content type application/grpc
	// or application/grpc+..., HTTP/1.1 for the rest; the default), http
	// (HTTP/1.1 for every call) or h2c (HTTP/2 with prior knowledge for
	// every call).
	Protocol string `yaml:"protocol"`
	// MaxUpstreams bounds the upstreams kept, one per (service, namespace,
	// port, protocol), each with its connection pool: past it, the least
	// recently used is dropped. One unused for timeouts.idle is dropped
	// too. Default 4096.
	MaxUpstreams int `yaml:"maxUpstreams"`
	// Timeouts, MaxBodyBytes and MaxUpstreamConnections mean what they do
	// on a route, for each upstream, with the same defaults.
	Timeouts               Timeouts `yaml:"timeouts"`
	MaxBodyBytes           ByteSize `yaml:"maxBodyBytes"`
	MaxUpstreamConnections int      `yaml:"maxUpstreamConnections"`
}

// Protocols of gateway.vehicleServices.protocol.
const (
	VehicleProtocolAuto = "auto"
	VehicleProtocolHTTP = "http"
	VehicleProtocolH2C  = "h2c"
)

// Defaults of gateway.vehicleServices.
const (
	DefaultClusterDomain    = "cluster.local"
	DefaultVehicleNamespace = "misaki-v-{vehicle}"
	DefaultVehicleUpstream  = "http://{service}.{namespace}.svc.{clusterDomain}:{port}"
	DefaultVehicleUpstreams = 4096
)

// The placeholders of the vehicleServices templates.
const (
	PlaceholderVehicle       = "{vehicle}"
	PlaceholderService       = "{service}"
	PlaceholderNamespace     = "{namespace}"
	PlaceholderClusterDomain = "{clusterDomain}"
	PlaceholderPort          = "{port}"
)

func (v *VehicleServices) setDefaults(maxBodyBytes ByteSize) {
	setDefault(&v.ClusterDomain, DefaultClusterDomain)
	setDefault(&v.Namespace, DefaultVehicleNamespace)
	setDefault(&v.Upstream, DefaultVehicleUpstream)
	setDefault(&v.Protocol, VehicleProtocolAuto)
	setDefault(&v.MaxUpstreams, DefaultVehicleUpstreams)
	setDefault(&v.Timeouts.Connect, Duration(DefaultConnectTimeout))
	setDefault(&v.Timeouts.ResponseHeader, Duration(DefaultResponseHeader))
	setDefault(&v.Timeouts.Idle, Duration(DefaultUpstreamIdle))
	setDefault(&v.MaxBodyBytes, maxBodyBytes)
	setDefault(&v.MaxUpstreamConnections, DefaultUpstreamConns)
}

func (v *VehicleServices) validate(bad report) {
	const f = "gateway.vehicleServices"
	if strings.HasPrefix(v.ClusterDomain, "*.") || strings.HasSuffix(v.ClusterDomain, ".") || !validHost(v.ClusterDomain) {
		bad(f+".clusterDomain", "%q is not a DNS name; write it like cluster.local", v.ClusterDomain)
	}
	if err := checkTemplate(v.Namespace, PlaceholderVehicle); err != nil {
		bad(f+".namespace", "%v", err)
	} else if !strings.Contains(v.Namespace, PlaceholderVehicle) {
		bad(f+".namespace", "%q has no {vehicle}: every vehicle would share one namespace; write it like %s", v.Namespace, DefaultVehicleNamespace)
	} else if ns := strings.ReplaceAll(v.Namespace, PlaceholderVehicle, "v"); !validName(ns) {
		bad(f+".namespace", "%q does not make a namespace name (%q for vehicle v); use lower-case letters, digits and '-' around {vehicle}", v.Namespace, ns)
	}
	v.validateUpstream(bad)
	switch v.Protocol {
	case VehicleProtocolAuto, VehicleProtocolHTTP, VehicleProtocolH2C:
	default:
		bad(f+".protocol", "%q is not a protocol; use auto, http or h2c", v.Protocol)
	}
	if v.MaxUpstreams < 0 {
		bad(f+".maxUpstreams", "must not be negative")
	}
	if v.MaxBodyBytes < 0 {
		bad(f+".maxBodyBytes", "must not be negative")
	}
	if v.MaxUpstreamConnections < 0 {
		bad(f+".maxUpstreamConnections", "must not be negative")
	}
	notNegative(f, bad, v.Timeouts.fields()...)
}

func (v *VehicleServices) validateUpstream(bad func(field, format string, args ...any)) {
	const f = "gateway.vehicleServices.upstream"
	if err := checkTemplate(v.Upstream, PlaceholderService, PlaceholderNamespace, PlaceholderClusterDomain, PlaceholderPort); err != nil {
		bad(f, "%v", err)
		return
	}
	for _, p := range []string{PlaceholderService, PlaceholderNamespace} {
		if !strings.Contains(v.Upstream, p) {
			bad(f, "%q has no %s: a vehicle must reach the Service it named, in its own namespace; write it like %s", v.Upstream, p, DefaultVehicleUpstream)
			return
		}
	}
	// Checked as the gateway will dial it, with names of the kind it puts in.
	sample := strings.NewReplacer(PlaceholderService, "svc", PlaceholderNamespace, "ns",
		PlaceholderClusterDomain, "cluster.local", PlaceholderPort, "80").Replace(v.Upstream)
	u, err := url.Parse(sample)
	switch {
	case err != nil:
		bad(f, "%q is not a URL template: %v", v.Upstream, err)
	case u.Scheme == "h2c" || u.Scheme == "https":
		bad(f, "%q: write it with http://; gateway.vehicleServices.protocol chooses HTTP/1.1 or h2c over it (TLS to the services is not supported)", v.Upstream)
	case u.Scheme != "http":
		bad(f, "%q must start with http://", v.Upstream)
	case u.Hostname() == "":
		bad(f, "%q has no host; write it like %s", v.Upstream, DefaultVehicleUpstream)
	case u.Path != "" && u.Path != "/" || u.RawQuery != "" || u.User != nil || u.Fragment != "":
		bad(f, "%q must be http://host[:port] only; paths, queries and user info are not supported", v.Upstream)
	}
}

// checkTemplate reports a placeholder in s that is not one of known, or a
// brace that opens none.
func checkTemplate(s string, known ...string) error {
	for rest := s; ; {
		i := strings.IndexAny(rest, "{}")
		if i < 0 {
			return nil
		}
		if rest[i] == '}' {
			return fmt.Errorf("%q has a '}' that closes no placeholder", s)
		}
		j := strings.IndexByte(rest[i:], '}')
		if j < 0 {
			return fmt.Errorf("%q has a '{' that is not closed", s)
		}
		if p := rest[i : i+j+1]; !slices.Contains(known, p) {
			return fmt.Errorf("%q: %s is not a placeholder here; use %s", s, p, strings.Join(known, ", "))
		}
		rest = rest[i+j+1:]
	}
}
