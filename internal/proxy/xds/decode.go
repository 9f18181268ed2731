package xds

import (
	"errors"
	"fmt"
	"net"
	"slices"
	"sort"
	"strconv"
	"strings"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"

	"github.com/misaki-io/misaki/internal/proxy/config"
	"github.com/misaki-io/misaki/internal/proxy/xds/xdspb"
)

// The resource types the proxy subscribes to, and the typed configs it reads.
const (
	TypeListener  = "type.googleapis.com/envoy.config.listener.v3.Listener"
	TypeRoute     = "type.googleapis.com/envoy.config.route.v3.RouteConfiguration"
	TypeCluster   = "type.googleapis.com/envoy.config.cluster.v3.Cluster"
	TypeEndpoints = "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment"

	typeHCM         = "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager"
	typeTypedStruct = "type.googleapis.com/xds.type.v3.TypedStruct"
	typeUDPAStruct  = "type.googleapis.com/udpa.type.v1.TypedStruct"

	// RouteOptionsKey is the typed_per_filter_config key of a virtual
	// host that carries the Misaki route fields Envoy has no field for
	// (the offline policy, probe, limits, upstream URL and TLS), as a
	// TypedStruct of RouteOptionsType whose value is shaped like an entry
	// of routes: in the proxy's file (routeoptions.go).
	RouteOptionsKey  = "misaki.io/route"
	RouteOptionsType = "type.misaki.io/misaki.route.v1alpha1.RouteOptions"
)

// Types lists the subscribed types in the order an ADS client should ask
// for them (clusters before endpoints, listeners before routes).
var Types = []string{TypeCluster, TypeEndpoints, TypeListener, TypeRoute}

// resources are the decoded resources of each type, by name.
type resources struct {
	listeners map[string]*xdspb.Listener
	routes    map[string]*xdspb.RouteConfiguration
	clusters  map[string]*xdspb.Cluster
	endpoints map[string]*xdspb.ClusterLoadAssignment
}

// kinds builds an empty message of each type and says how it is named.
var kinds = map[string]struct {
	new  func() proto.Message
	name func(proto.Message) string
}{
	TypeListener:  {func() proto.Message { return &xdspb.Listener{} }, func(m proto.Message) string { return m.(*xdspb.Listener).GetName() }},
	TypeRoute:     {func() proto.Message { return &xdspb.RouteConfiguration{} }, func(m proto.Message) string { return m.(*xdspb.RouteConfiguration).GetName() }},
	TypeCluster:   {func() proto.Message { return &xdspb.Cluster{} }, func(m proto.Message) string { return m.(*xdspb.Cluster).GetName() }},
	TypeEndpoints: {func() proto.Message { return &xdspb.ClusterLoadAssignment{} }, func(m proto.Message) string { return m.(*xdspb.ClusterLoadAssignment).GetClusterName() }},
}

// decodeType decodes one response's resources into a fresh map by name and
// checks what can be checked of one type alone.
func decodeType(typeURL string, anys []*anypb.Any) (map[string]proto.Message, error) {
	k, ok := kinds[typeURL]
	if !ok {
		return nil, fmt.Errorf("type %s is not one this proxy reads", typeURL)
	}
	out := make(map[string]proto.Message, len(anys))
	for i, a := range anys {
		if a.GetTypeUrl() != typeURL {
			return nil, fmt.Errorf("resource %d is a %s in a %s response", i, a.GetTypeUrl(), typeURL)
		}
		m := k.new()
		if err := proto.Unmarshal(a.GetValue(), m); err != nil {
			return nil, fmt.Errorf("%s %d: %w", ShortType(typeURL), i, err)
		}
		name := k.name(m)
		if name == "" {
			return nil, fmt.Errorf("resource %d of %s has no name", i, typeURL)
		}
		if _, dup := out[name]; dup {
			return nil, fmt.Errorf("%s %q is sent twice", typeURL, name)
		}
		out[name] = m
	}
	return out, nil
}

// resourcesOf types the decoded resources, by type URL.
func resourcesOf(raw map[string]map[string]proto.Message) resources {
	return resources{
		listeners: typed[*xdspb.Listener](raw[TypeListener]),
		routes:    typed[*xdspb.RouteConfiguration](raw[TypeRoute]),
		clusters:  typed[*xdspb.Cluster](raw[TypeCluster]),
		endpoints: typed[*xdspb.ClusterLoadAssignment](raw[TypeEndpoints]),
	}
}

func typed[T proto.Message](m map[string]proto.Message) map[string]T {
	out := make(map[string]T, len(m))
	for k, v := range m {
		out[k] = v.(T)
	}
	return out
}

// errIncomplete says a resource names another that has not arrived yet:
// the client waits for it rather than refusing the config.
var errIncomplete = errors.New("incomplete")

// Snapshot is the proxy's view of an accepted config: what it applies and
// keeps in its cache file.
type Snapshot struct {
	// Versions are the accepted version of each type.
	Versions map[string]string `yaml:"versions"`
	// Routes are the routes, shaped as in the proxy's file.
	Routes []config.Route `yaml:"routes"`
	// Endpoints are the host:port addresses each route dials, by route
	// name; a route without any dials its upstream URL's host.
	Endpoints map[string][]string `yaml:"endpoints,omitempty"`
}

// assemble turns one consistent set of resources into routes. It returns
// errIncomplete (wrapped) when a name is referenced but not yet received,
// and another error when the set can never be applied.
func assemble(res resources) ([]config.Route, map[string][]string, error) {
	var rdsNames []string
	for _, name := range sortedKeys(res.listeners) {
		l := res.listeners[name]
		for _, fc := range l.GetFilterChains() {
			for _, f := range fc.GetFilters() {
				tc := f.GetTypedConfig()
				if tc.GetTypeUrl() != typeHCM {
					continue
				}
				hcm := &xdspb.HttpConnectionManager{}
				if err := proto.Unmarshal(tc.GetValue(), hcm); err != nil {
					return nil, nil, fmt.Errorf("listener %s: http connection manager: %w", name, err)
				}
				if n := hcm.GetRds().GetRouteConfigName(); n != "" && !slices.Contains(rdsNames, n) {
					rdsNames = append(rdsNames, n)
				}
			}
		}
	}
	var (
		routes    []config.Route
		endpoints = map[string][]string{}
	)
	for _, rn := range rdsNames {
		rc, ok := res.routes[rn]
		if !ok {
			return nil, nil, fmt.Errorf("%w: route configuration %s", errIncomplete, rn)
		}
		for _, vh := range rc.GetVirtualHosts() {
			r, eps, err := virtualHost(vh, res)
			if err != nil {
				return nil, nil, err
			}
			routes = append(routes, r)
			if len(eps) > 0 {
				endpoints[r.Name] = eps
			}
		}
	}
	return routes, endpoints, nil
}

// virtualHost turns one virtual host into a route.
func virtualHost(vh *xdspb.VirtualHost, res resources) (config.Route, []string, error) {
	name := vh.GetName()
	var r config.Route
	if opts, ok := vh.GetTypedPerFilterConfig()[RouteOptionsKey]; ok {
		var err error
		if r, err = routeOptions(opts); err != nil {
			return r, nil, fmt.Errorf("virtual host %s: %s: %w", name, RouteOptionsKey, err)
		}
	}
	r.Name, r.Hosts, r.Matches = name, vh.GetDomains(), nil
	cluster := ""
	for i, rt := range vh.GetRoutes() {
		a := rt.GetRoute()
		if a.GetCluster() == "" {
			return r, nil, fmt.Errorf("virtual host %s: route %d has no cluster; the proxy forwards to one cluster per virtual host", name, i)
		}
		if cluster != "" && a.GetCluster() != cluster {
			return r, nil, fmt.Errorf("virtual host %s: routes to clusters %s and %s; a Misaki route has one destination", name, cluster, a.GetCluster())
		}
		cluster = a.GetCluster()
		if t := a.GetTimeout(); t != nil {
			r.Timeouts.Request = config.Duration(t.AsDuration())
		}
		m := rt.GetMatch()
		var cm config.Match
		switch {
		case m.GetPath() != "":
			cm.Path = m.GetPath()
		case m.GetPathSeparatedPrefix() != "":
			cm.PathPrefix = m.GetPathSeparatedPrefix()
		case m.GetPrefix() != "" && m.GetPrefix() != "/":
			return r, nil, fmt.Errorf("virtual host %s: route %d: a plain prefix other than / is not supported; use path_separated_prefix", name, i)
		}
		for _, h := range m.GetHeaders() {
			cm.Headers = append(cm.Headers, config.HeaderMatch{Name: h.GetName(), Value: h.GetStringMatch().GetExact()})
		}
		if cm.Path != "" || cm.PathPrefix != "" || len(cm.Headers) > 0 {
			r.Matches = append(r.Matches, cm)
		} else {
			r.Matches = nil // a catch-all entry: every request matches
			break
		}
	}
	if cluster == "" {
		return r, nil, fmt.Errorf("virtual host %s has no routes", name)
	}
	c, ok := res.clusters[cluster]
	if !ok {
		return r, nil, fmt.Errorf("%w: cluster %s", errIncomplete, cluster)
	}
	if t := c.GetConnectTimeout(); t != nil {
		r.Timeouts.Connect = config.Duration(t.AsDuration())
	}
	var cla *xdspb.ClusterLoadAssignment
	switch c.GetType() {
	case xdspb.Cluster_EDS:
		n := c.GetEdsClusterConfig().GetServiceName()
		if n == "" {
			n = c.GetName()
		}
		if cla, ok = res.endpoints[n]; !ok {
			return r, nil, fmt.Errorf("%w: endpoints %s", errIncomplete, n)
		}
	default:
		cla = c.GetLoadAssignment()
	}
	if r.Upstream == "" {
		// No options: the first endpoint, as plain HTTP/1.1.
		eps := addrs(cla)
		if len(eps) == 0 {
			return r, nil, fmt.Errorf("virtual host %s: cluster %s has no endpoints and the route no upstream", name, cluster)
		}
		r.Upstream = "http://" + eps[0]
	}
	var eps []string
	if c.GetType() == xdspb.Cluster_EDS {
		eps = addrs(cla)
	}
	return r, eps, nil
}

// routeOptions decodes the route fields carried in a TypedStruct.
func routeOptions(a *anypb.Any) (config.Route, error) {
	if a.GetTypeUrl() != typeTypedStruct && a.GetTypeUrl() != typeUDPAStruct {
		return config.Route{}, fmt.Errorf("is a %s, want a TypedStruct", a.GetTypeUrl())
	}
	ts := &xdspb.TypedStruct{}
	if err := proto.Unmarshal(a.GetValue(), ts); err != nil {
		return config.Route{}, err
	}
	if !strings.HasSuffix(ts.GetTypeUrl(), "/misaki.route.v1alpha1.RouteOptions") {
		return config.Route{}, fmt.Errorf("holds a %s, want %s", ts.GetTypeUrl(), RouteOptionsType)
	}
	return decodeRouteOptions(ts.GetValue())
}

// addrs lists a load assignment's endpoints that may take traffic
// (health unknown, healthy or degraded), as host:port.
func addrs(cla *xdspb.ClusterLoadAssignment) []string {
	var out []string
	for _, l := range cla.GetEndpoints() {
		for _, e := range l.GetLbEndpoints() {
			switch e.GetHealthStatus() {
			case 0, 1, 5: // UNKNOWN, HEALTHY, DEGRADED
			default:
				continue
			}
			sa := e.GetEndpoint().GetAddress().GetSocketAddress()
			if sa.GetAddress() == "" || sa.GetPortValue() == 0 {
				continue
			}
			out = append(out, net.JoinHostPort(sa.GetAddress(), strconv.Itoa(int(sa.GetPortValue()))))
		}
	}
	return out
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

// Decode turns whole responses, by type URL, into the config a proxy
// would apply: what the client does once every type has arrived. The
// controller's tests use it to check that what they publish is accepted.
func Decode(byType map[string][]*anypb.Any) ([]config.Route, map[string][]string, error) {
	raw := map[string]map[string]proto.Message{}
	for _, t := range Types {
		m, err := decodeType(t, byType[t])
		if err != nil {
			return nil, nil, err
		}
		raw[t] = m
	}
	return assemble(resourcesOf(raw))
}

// ShortType is a type URL's message name: "Cluster" for
// type.googleapis.com/envoy.config.cluster.v3.Cluster.
func ShortType(t string) string { return t[strings.LastIndexByte(t, '.')+1:] }
